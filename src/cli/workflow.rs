//! `flowrun validate` and `flowrun codegen`.

use super::Exit;
use flowrun_app::code_check::CodeCheck;
use flowrun_app::testing::Problem;
use flowrun_codegen::{Diagnostic, Diagnostics, Plan, RenderOptions, Source};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Reads and parses a workflow file (`flowrun_codegen::load_file`); a test file given where a
/// workflow is expected (`run x.test.yaml`) is said to be one, with the command that runs it,
/// instead of its `workflow` and `cases` being unknown fields of a workflow.
pub(crate) fn load(file: &Path) -> Result<Source, Diagnostics> {
    flowrun_codegen::load_file(file).map_err(|d| {
        let data = flowrun_codegen::source::written_data(file);
        let Some(Value::Object(top)) = data else {
            return d;
        };
        if !top.contains_key("cases") || top.contains_key("nodes") {
            return d;
        }
        let mut d = Diagnostic::new(format!(
            "this is a test file (`workflow` and `cases`), not a workflow: run it with `flowrun test {}`",
            shell_word(&file.display().to_string())
        ));
        d.file = Some(file.display().to_string());
        d.into()
    })
}

/// `s` as one shell word: as it is when nothing in it is special to a shell, else quoted.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:=@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Loads and checks a workflow file, including its input schema: the plan, or every problem.
fn check(file: &Path) -> Result<(Source, Plan), Diagnostics> {
    let source = load(file)?;
    let plan = flowrun_app::inputs::compile(&source)?;
    Ok((source, plan))
}

/// [`check`], then compiles its code nodes with the interpreter a run would use
/// (`flowrun_app::code_check`): a source that does not compile makes the file invalid. The
/// second part says why nothing was compiled, when it could not be.
fn check_and_compile(
    file: &Path,
    python: Option<&Path>,
) -> (Result<(Source, Plan), Diagnostics>, Option<String>) {
    let (source, plan) = match check(file) {
        Ok(sp) => sp,
        Err(d) => {
            let skipped = flowrun_codegen::source::written_data(file)
                .and_then(|data| flowrun_app::code_check::skipped_for_errors(&data));
            return (Err(d), skipped);
        }
    };
    match flowrun_app::code_check::check(&source, &plan, python) {
        CodeCheck::Done(problems) if problems.is_empty() => (Ok((source, plan)), None),
        CodeCheck::Done(problems) => (Err(Diagnostics(problems)), None),
        CodeCheck::Skipped(why) => (Ok((source, plan)), Some(why)),
    }
}

/// A test file (`*.test.yaml`, …) given to `validate`: checked as `flowrun test` checks it
/// before running anything (its cases, mocks, expectations, snapshot file and the workflow it
/// names) — not read as a workflow it is not. Its workflow's code is not compiled here: a case
/// may mock a node, or expect the run to fail; `validate` of the workflow file compiles it. The
/// number of its cases when it is valid.
fn check_test_file(file: &Path) -> (Result<(Source, Plan), Diagnostics>, usize) {
    let suite = match flowrun_app::testing::load_suite(&[file.to_path_buf()], false) {
        Ok(suite) => suite,
        Err(problems) => {
            let diags = problems.into_iter().flat_map(Problem::into_diagnostics);
            return (Err(Diagnostics(diags.collect())), 0);
        }
    };
    let test = suite
        .files
        .first()
        .expect("a test file loaded is in the suite");
    (check(Path::new(&test.source.file)), test.cases.len())
}

/// Loads and checks a workflow file; exit 2 with every problem when it is invalid.
pub(crate) fn load_plan(file: &Path) -> Result<(Source, Plan), Exit> {
    check(file).map_err(|d| Exit::new(2, d.to_string()))
}

/// `ok: FILE — workflow 'id' (Name), N nodes: a → b`
fn summary(source: &Source, plan: &Plan) -> String {
    let wf = &plan.workflow;
    let order: Vec<&str> = plan.ordered_nodes().map(|n| n.id.as_str()).collect();
    format!(
        "ok: {} — workflow '{}'{}, {} node{}: {}",
        source.file,
        wf.id,
        wf.name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        order.len(),
        if order.len() == 1 { "" } else { "s" },
        order.join(" → ")
    )
}

/// One file's entry in `validate --json` (the fields are documented in the README).
fn json_entry(
    file: &Path,
    result: &Result<(Source, Plan), Diagnostics>,
    skipped: Option<&str>,
) -> Value {
    let mut entry = match result {
        // The file given: for a test file, not the workflow it names.
        Ok((_, plan)) => json!({
            "file": file.display().to_string(),
            "valid": true,
            "workflow_id": plan.workflow.id,
            "name": plan.workflow.name,
            "order": plan.ordered_nodes().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            "diagnostics": [],
        }),
        Err(d) => json!({
            "file": file.display().to_string(),
            "valid": false,
            "workflow_id": null,
            "name": null,
            "order": null,
            "diagnostics": d.0,
        }),
    };
    entry["compile_skipped"] = json!(skipped);
    entry
}

/// Checks each file: a one-line summary per valid file on stdout and every problem of the
/// invalid ones on stderr, or with `json` one JSON document on stdout. Exit 2 if any is invalid.
pub fn validate(files: &[PathBuf], json: bool, python: Option<&Path>) -> Result<i32, Exit> {
    let mut entries = Vec::with_capacity(files.len());
    let mut all_valid = true;
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let (result, skipped, cases) = match name {
            Some(n) if flowrun_app::testing::is_test_file(&n) => {
                let (result, cases) = check_test_file(file);
                (result, None, cases)
            }
            _ => {
                let (result, skipped) = check_and_compile(file, python);
                (result, skipped, 0)
            }
        };
        all_valid &= result.is_ok();
        if json {
            entries.push(json_entry(file, &result, skipped.as_deref()));
            continue;
        }
        match result {
            Ok((source, plan)) if cases > 0 => {
                let line = format!(
                    "ok: {} — {cases} case{} of {}",
                    file.display(),
                    if cases == 1 { "" } else { "s" },
                    summary(&source, &plan).trim_start_matches("ok: ")
                );
                out!("{}", super::text::clean_line(&line));
            }
            Ok((source, plan)) => out!("{}", super::text::clean_line(&summary(&source, &plan))),
            Err(d) => flowrun_app::say!("error: {}", super::text::clean(&d.to_string())),
        }
        if let Some(why) = skipped {
            let line = format!("{}: code nodes not compiled: {why}", file.display());
            flowrun_app::say!("warning: {}", super::text::clean(&line));
        }
    }
    if json {
        let doc = json!({"valid": all_valid, "files": entries});
        out!("{}", super::text::json_pretty(&doc));
    }
    Ok(if all_valid { 0 } else { super::exit::USAGE })
}

pub fn codegen(file: &Path, output: Option<&Path>) -> Result<i32, Exit> {
    let (_, plan) = load_plan(file)?;
    let script = flowrun_codegen::render(&plan, &RenderOptions::default());
    match output {
        Some(out) => {
            std::fs::write(out, &script.text)
                .map_err(|e| Exit::new(3, format!("cannot write {}: {e}", out.display())))?;
            flowrun_app::say!(
                "wrote {} ({} bytes, sha256 {})",
                out.display(),
                script.text.len(),
                &script.sha256[..12]
            );
        }
        None => {
            use std::io::Write as _;
            super::stdout_written(std::io::stdout().write_all(script.text.as_bytes()));
        }
    }
    Ok(0)
}
