//! `flowrun validate` and `flowrun codegen`.

use super::Exit;
use flowrun_codegen::{Diagnostics, Plan, RenderOptions, Source};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Loads and checks a workflow file, including its input schema: the plan, or every problem.
fn check(file: &Path) -> Result<(Source, Plan), Diagnostics> {
    let source = flowrun_codegen::load_file(file)?;
    let plan = flowrun_app::inputs::compile(&source)?;
    Ok((source, plan))
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
fn json_entry(file: &Path, result: &Result<(Source, Plan), Diagnostics>) -> Value {
    match result {
        Ok((source, plan)) => json!({
            "file": source.file,
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
    }
}

/// Checks each file: a one-line summary per valid file on stdout and every problem of the
/// invalid ones on stderr, or with `json` one JSON document on stdout. Exit 2 if any is invalid.
pub fn validate(files: &[PathBuf], json: bool) -> Result<i32, Exit> {
    let mut entries = Vec::with_capacity(files.len());
    let mut all_valid = true;
    for file in files {
        let result = check(file);
        all_valid &= result.is_ok();
        if json {
            entries.push(json_entry(file, &result));
            continue;
        }
        match result {
            Ok((source, plan)) => println!("{}", super::text::clean_line(&summary(&source, &plan))),
            Err(d) => eprintln!("error: {}", super::text::clean(&d.to_string())),
        }
    }
    if json {
        let doc = json!({"valid": all_valid, "files": entries});
        println!("{}", super::text::json_pretty(&doc));
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
            eprintln!(
                "wrote {} ({} bytes, sha256 {})",
                out.display(),
                script.text.len(),
                &script.sha256[..12]
            );
        }
        None => print!("{}", script.text),
    }
    Ok(0)
}
