//! `workflow` nodes: finding, loading and checking the child workflow files at compile time.
//!
//! A `workflow:` path is relative to the file that names it. Compiling a workflow loads every
//! child file it names (and theirs, recursively) and reports, as validation errors of the file
//! whose node names the child: a child file that cannot be read or is invalid, a cycle of files
//! (naming every file of it), nesting deeper than [`MAX_DEPTH`], and static `inputs` that the
//! child's `inputs` schema rejects. The plan's params get the child's absolute path, which is
//! what the runtime hands to the sub-workflow runner (`flowrun __sub`).

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{NodeKind, WorkflowNode};
use crate::plan::{Plan, SubCode};
use crate::pyliteral::Data;
use crate::source::Source;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How deep sub-workflows nest: a top-level execution is at depth 0, its children at 1, … at
/// most `MAX_DEPTH`.
pub const MAX_DEPTH: u32 = 8;

/// Checks the child files of `source`'s `workflow` nodes and writes their absolute paths into
/// the plan's params. Errors are located in the files they are about.
pub(crate) fn resolve(source: &Source, plan: &mut Plan) -> Result<(), Diagnostics> {
    if !source
        .workflow
        .nodes
        .iter()
        .any(|n| matches!(n.kind, NodeKind::Workflow(_)))
    {
        return Ok(());
    }
    let mut checker = Checker::default();
    let start = std::path::absolute(&source.file).unwrap_or_else(|_| PathBuf::from(&source.file));
    let start = std::fs::canonicalize(&start).unwrap_or(start);
    let mut stack = vec![start];
    let (diags, paths) = checker.children(source, &mut stack);
    if !diags.is_empty() {
        return Err(Diagnostics(diags));
    }
    for (index, path) in paths {
        plan.sub_code[index] = checker.code.get(&path).cloned().unwrap_or_default();
        if let Data::Dict(entries) = &mut plan.params[index] {
            for (k, v) in entries.iter_mut() {
                if k == "workflow" {
                    *v = Data::Str(path.display().to_string());
                }
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct Checker {
    /// Files checked completely, with how many levels of sub-workflows they have below them.
    height: HashMap<PathBuf, u32>,
    /// The code nodes of each file checked completely and of the files below it (not those
    /// pinned in their file: they never run).
    code: HashMap<PathBuf, Vec<SubCode>>,
}

impl Checker {
    /// Checks the children of `source` (whose file is the last of `stack`); returns the
    /// problems found (located) and each `workflow` node's child path by node index.
    fn children(
        &mut self,
        source: &Source,
        stack: &mut Vec<PathBuf>,
    ) -> (Vec<Diagnostic>, Vec<(usize, PathBuf)>) {
        let base = source.base_dir();
        let mut diags = Vec::new();
        let mut paths = Vec::new();
        for (index, node) in source.workflow.nodes.iter().enumerate() {
            let NodeKind::Workflow(wn) = &node.kind else {
                continue;
            };
            let here = |msg: String| {
                Diagnostic::new(msg)
                    .node_at(index, node.id.clone())
                    .field("workflow")
            };
            if wn.workflow.contains("{{") {
                diags.push(here(
                    "the child workflow's file is a path, not a template".into(),
                ));
                continue;
            }
            let given = base.join(&wn.workflow);
            let path = match std::fs::canonicalize(&given) {
                Ok(p) => p,
                Err(e) => {
                    diags.push(here(format!(
                        "cannot read the child workflow {}: {e}",
                        given.display()
                    )));
                    continue;
                }
            };
            if let Some(at) = stack.iter().position(|p| *p == path) {
                let chain: Vec<String> = stack[at..]
                    .iter()
                    .chain(std::iter::once(&path))
                    .map(|p| p.display().to_string())
                    .collect();
                diags.push(here(format!(
                    "a cycle of workflow files: {}",
                    chain.join(" → ")
                )));
                continue;
            }
            match self.check_file(&path, stack) {
                Ok(height) => {
                    // `stack` holds this file and its ancestors: the child is at depth
                    // `stack.len()`, and its own children further below.
                    if stack.len() as u32 + height > MAX_DEPTH {
                        diags.push(here(format!(
                            "sub-workflows nest deeper than {MAX_DEPTH} levels through {}",
                            path.display()
                        )));
                    }
                }
                Err(mut child) => diags.append(&mut child),
            }
            if let Some(msg) = self.inputs_problem(&path, wn) {
                diags.push(
                    Diagnostic::new(msg)
                        .node_at(index, node.id.clone())
                        .field("inputs"),
                );
            }
            paths.push((index, path));
        }
        let located = source.locate(Diagnostics(diags));
        (located.0, paths)
    }

    /// Loads, compiles and checks a child file and its own children; its height.
    fn check_file(
        &mut self,
        path: &Path,
        stack: &mut Vec<PathBuf>,
    ) -> Result<u32, Vec<Diagnostic>> {
        if let Some(&h) = self.height.get(path) {
            return Ok(h);
        }
        let child = crate::source::load_file(path).map_err(|d| d.0)?;
        crate::plan::plan(&child.workflow).map_err(|d| child.locate(d).0)?;
        stack.push(path.to_path_buf());
        let (diags, paths) = self.children(&child, stack);
        stack.pop();
        if !diags.is_empty() {
            return Err(diags);
        }
        let height = paths
            .iter()
            .map(|(_, p)| self.height.get(p).copied().unwrap_or(0) + 1)
            .max()
            .unwrap_or(0);
        self.height.insert(path.to_path_buf(), height);
        let file = path.display().to_string();
        let mut code: Vec<SubCode> = child
            .workflow
            .nodes
            .iter()
            .filter(|n| n.pinned.is_none())
            .filter_map(|n| match &n.kind {
                NodeKind::Code(c) => Some(SubCode {
                    file: file.clone(),
                    node: n.id.clone(),
                    code: c.code.clone(),
                }),
                _ => None,
            })
            .collect();
        // A `workflow` node pinned in its file never runs its child: nothing below it runs.
        let runs = |i: &usize| child.workflow.nodes[*i].pinned.is_none();
        for (_, p) in paths.iter().filter(|(i, _)| runs(i)) {
            for c in self.code.get(p).into_iter().flatten() {
                if !code.iter().any(|k| k.file == c.file && k.node == c.node) {
                    code.push(c.clone());
                }
            }
        }
        self.code.insert(path.to_path_buf(), code);
        Ok(height)
    }

    /// What the child's `inputs` schema says against the node's static `inputs`, if anything.
    fn inputs_problem(&self, path: &Path, wn: &WorkflowNode) -> Option<String> {
        let child = crate::source::load_file(path).ok()?;
        let schema = child.workflow.inputs.as_ref()?;
        let Value::Object(given) = &wn.inputs else {
            // One template yielding the whole object: nothing is known before the run.
            return None;
        };
        let name = path.display();
        if !has_template(&wn.inputs) {
            let mut data = wn.inputs.clone();
            crate::apply_defaults(schema, &mut data);
            let validator = jsonschema::validator_for(schema).ok()?;
            let problems: Vec<String> = validator
                .iter_errors(&data)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    if at.is_empty() {
                        e.to_string()
                    } else {
                        format!("{}: {e}", at.trim_start_matches('/').replace('/', "."))
                    }
                })
                .collect();
            return (!problems.is_empty())
                .then(|| format!("not valid for {name}'s inputs: {}", problems.join("; ")));
        }
        // Some values are templates: only what is certain, the required fields given at all.
        let missing: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|k| !given.contains_key(*k))
            .filter(|k| schema["properties"][*k].get("default").is_none())
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "{name} requires the input{} {}",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            )
        })
    }
}

fn has_template(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("{{"),
        Value::Array(a) => a.iter().any(has_template),
        Value::Object(m) => m.values().any(has_template),
        _ => false,
    }
}
