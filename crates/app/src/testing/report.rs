//! Reports of a suite run: a failure in words, JUnit XML (one `testsuite` per test file, one
//! `testcase` per case) and JSON.

use super::load::Problem;
use super::model::*;
use super::run::{Suite, SuiteOutcome};
use serde_json::{Value, json};
use std::fmt::Write;

/// A failure in words: the path (and the line of the test file it is written on), the operator,
/// expected and actual (or the snapshot's diff).
pub fn describe(f: &Failure) -> String {
    words(f, true)
}

/// [`describe`] for a report placed at the assertion's line already (a GitHub annotation):
/// without the line.
pub fn describe_at_line(f: &Failure) -> String {
    words(f, false)
}

fn words(f: &Failure, with_line: bool) -> String {
    match f {
        Failure::Assertion {
            path,
            line,
            mismatch,
        } => format!(
            "{path}{}: {}\n  expected: {}\n  actual:   {}",
            match line {
                Some(l) if with_line => format!(" (line {l})"),
                _ => String::new(),
            },
            mismatch.operator,
            mismatch.expected,
            mismatch.actual
        ),
        Failure::Snapshot { message, diff } if diff.is_empty() => format!("snapshot: {message}"),
        Failure::Snapshot { message, diff } => format!("snapshot: {message}\n{}", diff.trim_end()),
        Failure::Setup { message } => format!("the case could not run: {message}"),
    }
}

/// The first line of a failure (a JUnit `message`, an annotation's title).
pub fn headline(f: &Failure) -> String {
    match f {
        Failure::Assertion { path, mismatch, .. } => format!(
            "{path}: {} {} (actual: {})",
            mismatch.operator, mismatch.expected, mismatch.actual
        ),
        Failure::Snapshot { message, .. } => format!("snapshot: {message}"),
        Failure::Setup { message } => format!("could not run: {}", one_line(message)),
    }
}

/// A message of several lines as one (`invalid input:` and the fields under it), cut to
/// [`HEADLINE_MAX`] characters: its first line alone often ends before it says anything.
fn one_line(message: &str) -> String {
    let joined = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match joined.char_indices().nth(HEADLINE_MAX) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// The most characters of a failure's message a headline keeps.
const HEADLINE_MAX: usize = 300;

/// Every failure of an attempt, with its execution.
pub fn attempt_text(a: &Attempt) -> String {
    let mut s: Vec<String> = a.failures.iter().map(describe).collect();
    if let Some(e) = a.unexpected_error() {
        s.push(format!("the execution failed: {e}"));
        s.extend(why_it_failed(a));
    }
    if let Some(id) = &a.execution_id {
        s.push(format!(
            "execution {id} ({}): inspect it with `flowrun show {id}`",
            a.status.as_deref().unwrap_or("?")
        ));
    }
    s.join("\n")
}

/// What a report shows under a failed execution's error: its traceback's last lines and the last
/// lines its failing node printed (each block headed, lines as they are).
pub fn why_it_failed(a: &Attempt) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = &a.traceback {
        out.push(format!("traceback:\n{}", indent(t)));
    }
    if !a.last_logs.is_empty() {
        out.push(format!(
            "the failing node printed (last lines):\n{}",
            indent(&a.last_logs.join("\n"))
        ));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Text fit for XML 1.0, escaped; characters XML cannot hold (most control characters) become
/// U+FFFD. In attributes, line breaks and tabs are kept as character references.
fn xml(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' if attribute => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: f64) -> String {
    // An empty sum of f64 is -0.0, which would print as "-0.000".
    format!("{:.3}", if ms > 0.0 { ms / 1000.0 } else { 0.0 })
}

/// JUnit XML of a run: `testsuites` → a `testsuite` per test file (with results) → a `testcase`
/// per case, `failure` (assertions, snapshots) or `error` (a case that could not run) holding
/// the expected and actual values, `error` of type `interrupted` (a case the run's interruption
/// stopped), `skipped`, and for a flaky case a `flakyFailure` per failed
/// attempt (Maven Surefire's form).
pub fn junit(suite: &Suite, results: &[CaseResult]) -> String {
    let totals = Totals::of(results);
    let all_ms: f64 = results.iter().map(CaseResult::duration_ms).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"flowrun test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\">",
        results.len(),
        count(results, |f| !matches!(f, Failure::Setup { .. })),
        count(results, |f| matches!(f, Failure::Setup { .. })) + totals.interrupted,
        totals.skipped,
        secs(all_ms)
    );
    for (fi, file) in suite.files.iter().enumerate() {
        let mine: Vec<&CaseResult> = results.iter().filter(|r| r.at.file == fi).collect();
        if mine.is_empty() {
            continue;
        }
        let owned: Vec<CaseResult> = mine.iter().map(|r| (*r).clone()).collect();
        let t = Totals::of(&owned);
        let name = xml(&file.file, true);
        let _ = writeln!(
            x,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\" file=\"{name}\">",
            owned.len(),
            count(&owned, |f| !matches!(f, Failure::Setup { .. })),
            count(&owned, |f| matches!(f, Failure::Setup { .. })) + t.interrupted,
            t.skipped,
            secs(owned.iter().map(CaseResult::duration_ms).sum())
        );
        for r in mine {
            testcase(&mut x, &name, r);
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// Failed cases whose deciding failure is of this kind.
fn count(results: &[CaseResult], kind: impl Fn(&Failure) -> bool) -> usize {
    results
        .iter()
        .filter(|r| r.verdict == Verdict::Failed)
        .filter(|r| r.last().and_then(|a| a.failures.first()).is_some_and(&kind))
        .count()
}

/// `<tag message="first failure" type="ty">every failure, the execution</tag>`.
fn failure_element(body: &mut String, tag: &str, ty: &str, a: &Attempt) {
    let head = a.failures.first().map(headline).unwrap_or_default();
    let _ = writeln!(
        body,
        "      <{tag} message=\"{}\" type=\"{ty}\">{}</{tag}>",
        xml(&head, true),
        xml(&attempt_text(a), false)
    );
}

fn testcase(x: &mut String, file: &str, r: &CaseResult) {
    let line = r.line.map(|l| format!(" line=\"{l}\"")).unwrap_or_default();
    let _ = write!(
        x,
        "    <testcase name=\"{}\" classname=\"{file}\" file=\"{file}\"{line} time=\"{}\"",
        xml(&r.name, true),
        secs(r.duration_ms())
    );
    let mut body = String::new();
    match r.verdict {
        Verdict::Passed => {}
        Verdict::Skipped => {
            let reason = r.skip_reason.as_deref().unwrap_or("");
            let _ = writeln!(body, "      <skipped message=\"{}\"/>", xml(reason, true));
        }
        Verdict::Interrupted => {
            // Neither a failure nor a skip: it ran, and the run was stopped while it did.
            let _ = writeln!(
                body,
                "      <error message=\"interrupted: the run was stopped while this case ran\" type=\"interrupted\"/>"
            );
        }
        Verdict::Failed => {
            if let Some(a) = r.last() {
                let setup = matches!(a.failures.first(), Some(Failure::Setup { .. }));
                let (tag, ty) = if setup {
                    ("error", "SetupError")
                } else {
                    ("failure", "AssertionError")
                };
                failure_element(&mut body, tag, ty, a);
            }
        }
        Verdict::Flaky => {
            for a in &r.attempts[..r.attempts.len() - 1] {
                failure_element(&mut body, "flakyFailure", "AssertionError", a);
            }
        }
    }
    let ids: Vec<&str> = r
        .attempts
        .iter()
        .filter_map(|a| a.execution_id.as_deref())
        .collect();
    if !ids.is_empty() {
        let _ = writeln!(
            body,
            "      <system-out>{}</system-out>",
            xml(&format!("executions: {}", ids.join(", ")), false)
        );
    }
    if body.is_empty() {
        x.push_str("/>\n");
    } else {
        x.push_str(">\n");
        x.push_str(&body);
        x.push_str("    </testcase>\n");
    }
}

/// The run as one JSON document: the totals, the summary line, per file its cases, and what
/// could not be done to snapshot files.
pub fn json(suite: &Suite, outcome: &SuiteOutcome) -> Value {
    let results = &outcome.results;
    let totals = Totals::of(results);
    let files: Vec<Value> = suite
        .files
        .iter()
        .enumerate()
        .filter_map(|(fi, f)| {
            let cases: Vec<Value> = results
                .iter()
                .filter(|r| r.at.file == fi)
                .map(|r| serde_json::to_value(r).expect("serializes"))
                .collect();
            (!cases.is_empty())
                .then(|| json!({"file": f.file, "workflow": f.source.file, "cases": cases}))
        })
        .collect();
    let interrupted = outcome.interrupted.map(|r| r.signal().unwrap_or("SIGINT"));
    json!({"totals": totals, "summary": outcome.summary(), "interrupted": interrupted,
           "files": files, "snapshot_errors": outcome.snapshot_errors})
}

/// The test files that `problems` are about, each once, in order.
fn invalid_files(problems: &[Problem]) -> Vec<&str> {
    let mut files: Vec<&str> = Vec::new();
    for p in problems {
        if !files.contains(&p.file.as_str()) {
            files.push(&p.file);
        }
    }
    files
}

/// The line a run with invalid test files ends with: nothing of it ran.
pub fn invalid_line(problems: &[Problem]) -> String {
    format!(
        "{} invalid test file(s); nothing was run",
        invalid_files(problems).len()
    )
}

/// JUnit XML when test files are invalid and nothing ran: per invalid file a `testsuite` with
/// one `testcase` whose `error` lists the file's problems, so that a CI job which publishes the
/// report whatever happened shows why the suite did not run rather than nothing.
pub fn junit_invalid(problems: &[Problem]) -> String {
    let files = invalid_files(problems);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"flowrun test\" tests=\"{n}\" failures=\"0\" errors=\"{n}\" skipped=\"0\" time=\"0.000\">",
        n = files.len()
    );
    for file in files {
        let mine: Vec<&Problem> = problems.iter().filter(|p| p.file == file).collect();
        let first = one_line(mine.first().map(|p| p.message.as_str()).unwrap_or(""));
        let body: Vec<String> = mine.iter().map(|p| p.to_string()).collect();
        let line = mine.iter().find_map(|p| p.line);
        error_suite(
            &mut x,
            file,
            Some(file),
            line,
            "invalid test file",
            &first,
            &body.join("\n"),
        );
    }
    x.push_str("</testsuites>\n");
    x
}

/// A `testsuite` named `name` of one `testcase` that errored with `kind`: what JUnit shows
/// when there were no results to report.
fn error_suite(
    x: &mut String,
    name: &str,
    file: Option<&str>,
    line: Option<usize>,
    kind: &str,
    first: &str,
    body: &str,
) {
    let name = xml(name, true);
    let file = file
        .map(|f| format!(" file=\"{}\"", xml(f, true)))
        .unwrap_or_default();
    let line = line.map(|l| format!(" line=\"{l}\"")).unwrap_or_default();
    let _ = writeln!(
        x,
        "  <testsuite name=\"{name}\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"0.000\"{file}>\n    <testcase name=\"{kind}\" classname=\"{name}\"{file}{line} time=\"0.000\">\n      <error type=\"{kind}\" message=\"{}\">{}</error>\n    </testcase>\n  </testsuite>",
        xml(first, true),
        xml(body, false),
    );
}

/// `--json` when test files are invalid and nothing ran: no totals counted, no files run, and
/// `errors`, each problem with its `file`, `line`, `case`, `path` and `message`.
pub fn json_invalid(problems: &[Problem]) -> Value {
    let errors: Vec<Value> = problems
        .iter()
        .map(|p| {
            json!({"file": p.file, "line": p.line, "case": p.case, "path": p.path,
                   "message": p.message})
        })
        .collect();
    json!({"totals": Totals::default(), "summary": invalid_line(problems), "files": [],
           "errors": errors})
}

/// JUnit XML when the suite could not run at all (no test files, a `--filter` no case matches,
/// a store or an interpreter that cannot be had): one `testcase` whose `error` says why, so
/// that a CI job which publishes the report whatever happened shows that rather than an empty
/// file it cannot parse.
pub fn junit_not_run(message: &str) -> String {
    junit_one_error("nothing was run", message)
}

/// JUnit XML for a run still going: what the `--junit` file holds until the report replaces
/// it, so that a run killed before it ends (SIGKILL, a CI job's hard timeout) leaves a report
/// saying so — not an empty file, nor an earlier run's results.
pub fn junit_unfinished() -> String {
    junit_one_error(
        "did not finish",
        "flowrun test did not finish: it ended (killed?) before it wrote this report",
    )
}

fn junit_one_error(kind: &str, message: &str) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<testsuites name=\"flowrun test\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"0.000\">\n");
    let first = one_line(message);
    error_suite(&mut x, "flowrun test", None, None, kind, &first, message);
    x.push_str("</testsuites>\n");
    x
}

/// `--json` when the suite could not run at all: as [`json_invalid`], with one error that
/// names no file.
pub fn json_not_run(message: &str) -> Value {
    json!({"totals": Totals::default(), "summary": message, "files": [],
           "errors": [{"file": null, "line": null, "case": null, "path": null,
                       "message": message}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setup_headline_says_what_follows_its_first_line_and_stays_short() {
        let f = Failure::Setup {
            message: "invalid input:\n  field 'topic': 5 is not of type \"string\"\n".into(),
        };
        assert_eq!(
            headline(&f),
            "could not run: invalid input: field 'topic': 5 is not of type \"string\""
        );
        let long = Failure::Setup {
            message: "é".repeat(1000),
        };
        let h = headline(&long);
        assert_eq!(
            h.chars().count(),
            "could not run: ".len() + HEADLINE_MAX + 1
        );
        assert!(h.ends_with('…'));
    }

    #[test]
    fn xml_escapes_and_drops_what_xml_cannot_hold() {
        assert_eq!(xml("a<b>&\"'", false), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(xml("a\nb\u{1}", true), "a&#10;b\u{FFFD}");
        assert_eq!(xml("a\nb\tc", false), "a\nb\tc");
    }
}
