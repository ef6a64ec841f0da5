//! `flowrun test` on GitHub Actions (`GITHUB_ACTIONS=true`): each failure, and each flaky
//! case, is also printed as a workflow command, an annotation on the test file's line.

use super::text::{clean, clean_line};
use flowrun_app::testing::{CaseResult, Failure, Suite, Verdict, report};
use std::io::Write;
use std::path::PathBuf;

/// Running on GitHub Actions: failures are also printed as workflow commands (annotations).
pub(super) fn github() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// `%`, CR, LF escaped as GitHub's workflow commands need; in properties `:` and `,` too.
fn gh_escape(s: &str, property: bool) -> String {
    let mut o = s
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    if property {
        o = o.replace(':', "%3A").replace(',', "%2C");
    }
    o
}

/// A test file's path as GitHub places an annotation: relative to the repository's root
/// (`GITHUB_WORKSPACE`, else the working directory), however it was given (`./t.test.yaml`,
/// an absolute path); a file outside it keeps its path, without `./`.
pub(super) fn gh_path(file: &str) -> String {
    // Both resolved (links, `..`): a workspace reached through a link is still the root.
    let here = std::env::current_dir().unwrap_or_default();
    let abs = std::fs::canonicalize(here.join(file)).unwrap_or_else(|_| here.join(file));
    let root = std::env::var_os("GITHUB_WORKSPACE")
        .map(PathBuf::from)
        .filter(|r| r.is_absolute())
        .unwrap_or(here);
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    match abs.strip_prefix(&root) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => file.strip_prefix("./").unwrap_or(file).to_string(),
    }
}

/// One workflow command. Its parts come from test files and executions: controls are shown as
/// escapes (`clean`), and no newline reaches the log raw, so no part can start a command of its
/// own. On stderr when stdout holds the `--json` document (the runner reads both streams).
pub(super) fn annotate(
    json: bool,
    level: &str,
    file: &str,
    line: Option<usize>,
    title: &str,
    message: &str,
) {
    let file = gh_path(file);
    let (file, title, message) = (clean_line(&file), clean_line(title), clean(message));
    let line = line.map(|l| format!(",line={l}")).unwrap_or_default();
    let text = format!(
        "::{level} file={}{line},title={}::{}",
        gh_escape(&file, true),
        gh_escape(&title, true),
        gh_escape(&message, false)
    );
    // A reader that went away (`| head`) is not an error of the tests.
    let _ = if json {
        writeln!(std::io::stderr(), "{text}")
    } else {
        writeln!(std::io::stdout(), "{text}")
    };
}

/// The annotations of a suite's results: its failures and flaky cases.
pub(super) fn annotations(suite: &Suite, results: &[CaseResult], json: bool) {
    for r in results {
        let file = &suite.files[r.at.file].file;
        let title = format!("flowrun test › {}", r.name);
        match r.verdict {
            Verdict::Failed => {
                let Some(a) = r.last() else { continue };
                for f in &a.failures {
                    let line = match f {
                        Failure::Assertion { line, .. } => line.or(r.line),
                        _ => r.line,
                    };
                    let mut text = report::describe_at_line(f);
                    if let Some(id) = &a.execution_id {
                        text.push_str(&format!("\ndetails: flowrun show {id}"));
                    }
                    annotate(json, "error", file, line, &title, &text);
                }
            }
            Verdict::Flaky => annotate(
                json,
                "warning",
                file,
                r.line,
                &title,
                &format!("flaky: passed on attempt {}", r.attempts.len()),
            ),
            _ => {}
        }
    }
}
