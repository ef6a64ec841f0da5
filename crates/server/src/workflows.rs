//! Saved workflows: every `.json`, `.yaml` and `.yml` file directly in `--workflows DIR`,
//! read again on every request (an editor saves them while the server runs).

use flowrun_codegen::{Diagnostic, Diagnostics, Plan, Source};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One workflow file and what became of it.
pub struct Entry {
    /// The workflow's `id`, or the file name without extension when the file does not parse.
    pub id: String,
    pub file: PathBuf,
    pub source: Option<Source>,
    pub plan: Option<Plan>,
    /// Everything `flowrun validate` would report; empty when valid.
    pub errors: Vec<Diagnostic>,
}

impl Entry {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty() && self.plan.is_some()
    }

    pub fn diagnostics(&self) -> Diagnostics {
        Diagnostics(self.errors.clone())
    }
}

fn is_workflow_file(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "json" | "yaml" | "yml"))
        && !p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
}

/// Loads and checks one file the way `flowrun validate` does.
pub fn load(path: &Path) -> Entry {
    match flowrun_codegen::load_file(path) {
        Ok(source) => check(path, source),
        Err(d) => unparsed(path, d),
    }
}

/// A file (or request) whose definition does not even parse: listed under its file name.
pub fn unparsed(path: &Path, d: Diagnostics) -> Entry {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Entry {
        id: stem,
        file: path.to_path_buf(),
        source: None,
        plan: None,
        errors: d.0,
    }
}

/// Checks a parsed definition the way `flowrun validate` does: plan and input schema.
pub fn check(path: &Path, source: Source) -> Entry {
    let mut errors = Vec::new();
    let plan = match flowrun_codegen::compile(&source) {
        Ok(plan) => Some(plan),
        Err(d) => {
            errors = d.0;
            None
        }
    };
    if let Some(schema) = plan.as_ref().and_then(|p| p.workflow.inputs.as_ref()) {
        if let Err(e) = flowrun_app::inputs::check_schema(schema) {
            let mut d = Diagnostic::new(e.to_string());
            d.file = Some(source.file.clone());
            errors.push(d);
        }
    }
    Entry {
        id: source.workflow.id.clone(),
        file: path.to_path_buf(),
        source: Some(source),
        plan,
        errors,
    }
}

/// Every workflow file of `dir`, by file name. A second file with an id already taken is
/// reported invalid.
pub fn scan(dir: Option<&Path>) -> std::io::Result<Vec<Entry>> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_workflow_file(p))
        .collect();
    files.sort();
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let mut first_file: Vec<(String, PathBuf)> = Vec::new();
    for f in files {
        let mut e = load(&f);
        if !seen.insert(e.id.clone()) {
            let other = first_file
                .iter()
                .find(|(id, _)| *id == e.id)
                .map(|(_, p)| p.display().to_string())
                .unwrap_or_default();
            let mut d = Diagnostic::new(format!(
                "workflow id '{}' is already used by {other}; ids must be unique in the directory",
                e.id
            ));
            d.file = Some(f.display().to_string());
            d.field = Some("id".into());
            e.errors.push(d);
        } else {
            first_file.push((e.id.clone(), f.clone()));
        }
        out.push(e);
    }
    Ok(out)
}

/// The entry for workflow `id` (the first file that has it).
pub fn find(dir: Option<&Path>, id: &str) -> std::io::Result<Option<Entry>> {
    Ok(scan(dir)?.into_iter().find(|e| e.id == id))
}

/// Is `var` set (not empty) in the server's environment?
pub fn bound_here(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty())
}

/// The JSON an editor needs to show a workflow and build its run form.
pub fn describe(e: &Entry, detail: bool) -> Value {
    describe_with(e, detail, &bound_here)
}

/// [`describe`], with `bound` telling which variables bind a connection.
pub fn describe_with(e: &Entry, detail: bool, bound: &dyn Fn(&str) -> bool) -> Value {
    let wf = e.source.as_ref().map(|s| &s.workflow);
    let mut connections = Vec::new();
    if let Some(wf) = wf {
        for (name, conn) in &wf.connections {
            let nodes: Vec<&str> = wf
                .nodes
                .iter()
                .filter(|n| n.kind.connections().iter().any(|(c, _)| c == name))
                .map(|n| n.id.as_str())
                .collect();
            let required = wf
                .nodes
                .iter()
                .any(|n| n.pinned.is_none() && n.kind.connections().iter().any(|(c, _)| c == name));
            connections.push(json!({
                "name": name,
                "env": conn.env,
                "required": required,
                "bound": bound(&conn.env),
                "nodes": nodes,
            }));
        }
    }
    let inputs = wf.and_then(|w| w.inputs.clone());
    let defaults = inputs.as_ref().map(|schema| {
        let mut data = Value::Object(Default::default());
        flowrun_app::inputs::apply_defaults(schema, &mut data);
        data
    });
    let missing: Vec<&str> = connections
        .iter()
        .filter(|c| c["required"] == true && c["bound"] == false)
        .filter_map(|c| c["name"].as_str())
        .collect();
    let mut v = json!({
        "id": e.id,
        "name": wf.map(|w| w.display_name().to_string()).unwrap_or_else(|| e.id.clone()),
        "description": wf.and_then(|w| w.description.clone()),
        "file": e.file.display().to_string(),
        "valid": e.is_valid(),
        "errors": e.errors,
        "inputs": inputs,
        "defaults": defaults,
        "timeout_ms": wf.and_then(|w| w.timeout_ms),
        "connections": connections,
        "ready": e.is_valid() && missing.is_empty(),
    });
    // The steps in run order, in the list too: the page offers them as breakpoints.
    {
        let order: Vec<Value> = match (&e.plan, wf) {
            (Some(plan), _) => plan
                .ordered_nodes()
                .map(|n| json!({"id": n.id, "type": n.kind.type_name(), "name": n.name}))
                .collect(),
            (None, Some(wf)) => wf
                .nodes
                .iter()
                .map(|n| json!({"id": n.id, "type": n.kind.type_name(), "name": n.name}))
                .collect(),
            _ => Vec::new(),
        };
        v["nodes"] = Value::Array(order);
    }
    if detail {
        v["definition"] = e
            .source
            .as_ref()
            .map(|s| s.definition.clone())
            .unwrap_or(Value::Null);
    }
    v
}
