//! `flowrun validate` and `flowrun codegen`.

use super::Exit;
use flowrun_codegen::{Diagnostics, Plan, RenderOptions};
use std::path::Path;

/// Loads and checks a workflow file, including its input schema.
pub(crate) fn load_plan(file: &Path) -> Result<(flowrun_codegen::Source, Plan), Exit> {
    let invalid = |d: Diagnostics| Exit::new(2, d.to_string());
    let source = flowrun_codegen::load_file(file).map_err(invalid)?;
    let plan = flowrun_codegen::compile(&source).map_err(invalid)?;
    if let Some(schema) = &plan.workflow.inputs {
        flowrun_app::inputs::check_schema(schema)
            .map_err(|e| Exit::new(2, format!("{}: {e}", source.file)))?;
    }
    Ok((source, plan))
}

pub fn validate(file: &Path) -> Result<i32, Exit> {
    let (source, plan) = load_plan(file)?;
    let wf = &plan.workflow;
    let order: Vec<&str> = plan.ordered_nodes().map(|n| n.id.as_str()).collect();
    println!(
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
    );
    Ok(0)
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
