//! Compiling a workflow's code nodes without running it, for `flowrun validate` and
//! `POST /api/validate`.
//!
//! A run already refuses to start a workflow with a code node that does not compile (the
//! runtime's start check: "its source does not compile, so no node ran"); validation only read
//! the definition, so it called such a workflow valid. Only the interpreter that will run the
//! code can say whether it compiles (a `match` statement is fine in 3.10, an error in 3.9), so
//! this runs the workflow's own generated script with `--check`: the same start check, the same
//! compile (sub-workflows' code nodes included, whatever their size), every problem listed, no
//! node run. Compiling defines each node's function and runs nothing of its body; the script
//! reads nothing, and gets no environment, so no secret. It is bounded: [`TIMEOUT`], an answer
//! of [`MAX_ANSWER`], [`MAX_AT_ONCE`] compiles in a process.
//!
//! Without an interpreter nothing is compiled, and the caller says so ([`CodeCheck::Skipped`]):
//! a check that cannot be made is never reported as passed.

use crate::python;
use flowrun_codegen::Diagnostic;
use flowrun_codegen::NodeProblem;
use flowrun_codegen::Plan;
use flowrun_codegen::RenderOptions;
use flowrun_codegen::model::NodeKind;
use flowrun_codegen::source::Source;
use flowrun_executor::helper::{HelperError, run_bounded};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long compiling may take (a few milliseconds a node, seconds for a megabyte of source),
/// and, before it, how long a check waits for a place to run.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The most of the checker's answer read: a problem is a few hundred bytes (no traceback).
const MAX_ANSWER: usize = 4 << 20;

/// Why the code nodes of a workflow that is not valid (`definition`, as written) were not
/// compiled: they are compiled once the rest is (a plan is needed to render the script that
/// compiles them). `None` when it has none (no `code` or `workflow` node), so nothing is left.
pub fn skipped_for_errors(definition: &serde_json::Value) -> Option<String> {
    let nodes = definition.get("nodes")?.as_array()?;
    nodes
        .iter()
        .any(|n| {
            matches!(
                n.get("type").and_then(|t| t.as_str()),
                Some("code" | "workflow")
            )
        })
        .then(|| {
            "the workflow has other errors: code nodes (its own and its sub-workflows') are compiled once they are fixed".into()
        })
}

/// What compiling a workflow's code nodes found.
#[derive(Debug)]
pub enum CodeCheck {
    /// Compiled with the interpreter a run would use: the sources that do not compile, each
    /// at its node's `code` field (in the sub-workflow's own file for one of a child's).
    /// Empty also when there is no code node to compile, and then no interpreter was started.
    Done(Vec<Diagnostic>),
    /// Not compiled, and why: no interpreter; it failed, said too much or took too long; the
    /// other checks kept it waiting.
    Skipped(String),
}

#[derive(Deserialize)]
struct Answer {
    problems: Vec<Problem>,
    /// More problems than were listed (the checker stops at 100).
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct Problem {
    error: ErrorPart,
    #[serde(rename = "where")]
    place: Where,
}

#[derive(Deserialize)]
struct ErrorPart {
    node: String,
    message: String,
}

#[derive(Deserialize)]
struct Where {
    error: String,
    line: Option<u64>,
    column: Option<u64>,
    /// For a sub-workflow's code node: its file and id.
    file: Option<String>,
    node: Option<String>,
}

impl Where {
    /// Line and column (when known, and past 0) in the node's source.
    fn within(&self) -> Option<(usize, Option<usize>)> {
        let line = usize::try_from(self.line?).ok()?;
        let column = self
            .column
            .and_then(|c| usize::try_from(c).ok())
            .filter(|&c| c > 0);
        Some((line, column))
    }
}

/// Does the plan have a code node a run would compile (not pinned), here or in a sub-workflow?
fn has_code(plan: &Plan) -> bool {
    let nodes = &plan.workflow.nodes;
    nodes
        .iter()
        .any(|n| matches!(n.kind, NodeKind::Code(_)) && n.pinned.is_none())
        || nodes
            .iter()
            .zip(&plan.sub_code)
            .any(|(n, code)| n.pinned.is_none() && !code.is_empty())
}

/// Compiles the code nodes of `plan` (made from `source`) with the interpreter a run would use
/// (`python`: an explicit one, else as `flowrun run` finds it).
pub fn check(source: &Source, plan: &Plan, python: Option<&Path>) -> CodeCheck {
    if !has_code(plan) {
        return CodeCheck::Done(Vec::new());
    }
    // The place first: finding the interpreter may ask it what it is (up to 10 s of its own).
    let Some(_place) = Place::take(Instant::now() + TIMEOUT) else {
        return CodeCheck::Skipped(format!(
            "{MAX_AT_ONCE} other checks kept this one waiting {} s",
            TIMEOUT.as_secs()
        ));
    };
    let interpreter = match python::discover(python, &crate::paths::cache_dir()) {
        Ok(i) => i,
        Err(e) => return CodeCheck::Skipped(format!("no Python to compile them with: {e}")),
    };
    let script = flowrun_codegen::render(plan, &RenderOptions::default());
    match ask(&interpreter.executable, script.text.as_bytes()) {
        Ok(answer) => {
            let mut found = diagnostics(source, answer.problems);
            if answer.more {
                found.push(source.diagnostic(
                    "nodes",
                    format!(
                        "more code nodes do not compile: only the first {} are listed",
                        found.len()
                    ),
                ));
            }
            CodeCheck::Done(found)
        }
        Err(why) => CodeCheck::Skipped(why),
    }
}

/// "'(' was never closed (line 1, column 5 of its code)".
fn what(place: &Where) -> String {
    match (place.line, place.column) {
        (Some(l), Some(c)) if c > 0 => {
            format!("{} (line {l}, column {c} of its code)", place.error)
        }
        (Some(l), _) => format!("{} (line {l} of its code)", place.error),
        _ => place.error.clone(),
    }
}

/// Each problem at its node's `code` field: this workflow's in its file, a sub-workflow's in
/// that one's (saying which node of this workflow runs it). Each file is read and scanned once.
fn diagnostics(source: &Source, problems: Vec<Problem>) -> Vec<Diagnostic> {
    let mut here = Vec::new();
    let mut children: BTreeMap<String, Vec<Problem>> = BTreeMap::new();
    for p in problems {
        match &p.place.file {
            Some(file) if p.place.node.is_some() => {
                children.entry(file.clone()).or_default().push(p)
            }
            _ => here.push(NodeProblem {
                message: format!("does not compile: {}", what(&p.place)),
                within: p.place.within(),
                node: p.error.node,
                field: "code".into(),
            }),
        }
    }
    let mut out = source.node_diagnostics(here).0;
    for (file, problems) in children {
        match flowrun_codegen::source::load_file(Path::new(&file)) {
            Ok(child) => {
                let at = problems.into_iter().map(|p| NodeProblem {
                    message: format!(
                        "does not compile: {}; run by node '{}' of {}",
                        what(&p.place),
                        p.error.node,
                        source.file
                    ),
                    within: p.place.within(),
                    node: p.place.node.unwrap_or_default(),
                    field: "code".into(),
                });
                out.extend(child.node_diagnostics(at.collect()).0);
            }
            // Changed since the plan read it: said at this workflow's node, as a run would say it.
            Err(_) => {
                let at = problems.into_iter().map(|p| NodeProblem {
                    node: p.error.node,
                    field: "workflow".into(),
                    message: p.error.message,
                    within: None,
                });
                out.extend(source.node_diagnostics(at.collect()).0);
            }
        }
    }
    out
}

/// Compiles run at once by this process: each takes an interpreter's memory for up to
/// [`TIMEOUT`], and a server gets them from every editor that validates.
const MAX_AT_ONCE: usize = 2;
static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// One of the [`MAX_AT_ONCE`] places, given back when dropped.
struct Place;

impl Place {
    /// Waits for a place until `deadline`.
    fn take(deadline: Instant) -> Option<Place> {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= MAX_AT_ONCE {
            let left = deadline.checked_duration_since(Instant::now())?;
            running = FREED
                .wait_timeout(running, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *running += 1;
        Some(Place)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        FREED.notify_one();
    }
}

/// Runs `python -I -S - --check` (the script on stdin, no environment) and reads its answer,
/// bounded by [`flowrun_executor::helper::run_bounded`]: killed at [`TIMEOUT`] however it
/// stalls, or past [`MAX_ANSWER`]. The caller holds one of the [`MAX_AT_ONCE`] places.
fn ask(python: &Path, script: &[u8]) -> Result<Answer, String> {
    let stdin = flowrun_executor::helper::stdin_of(script)
        .map_err(|e| format!("cannot write the script: {e}"))?;
    let mut cmd = Command::new(python);
    cmd.args(["-I", "-S", "-", "--check"])
        .env_clear()
        .stdin(stdin);
    let done = run_bounded(&mut cmd, TIMEOUT, MAX_ANSWER).map_err(|e| match e {
        HelperError::TimedOut(_) => format!("compiling took longer than {} s", TIMEOUT.as_secs()),
        HelperError::TooLong(_) => "its answer was too long".into(),
        HelperError::Spawn(e) => format!("cannot start {}: {e}", python.display()),
        e => format!("the interpreter: {e}"),
    })?;
    if !done.status.success() {
        // Its last words: a traceback's last line says why (a Python too old for the runtime).
        let last = done
            .stderr_tail
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty());
        return Err(format!(
            "the interpreter ended with {}{}",
            done.status,
            last.map(|l| format!(": {l}")).unwrap_or_default()
        ));
    }
    serde_json::from_slice(&done.stdout).map_err(|e| format!("its answer was not understood: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_position_is_said_as_far_as_it_is_known() {
        let place = |line, column| Where {
            error: "'(' was never closed".into(),
            line,
            column,
            file: None,
            node: None,
        };
        assert_eq!(
            what(&place(Some(2), Some(5))),
            "'(' was never closed (line 2, column 5 of its code)"
        );
        assert_eq!(
            what(&place(Some(2), None)),
            "'(' was never closed (line 2 of its code)"
        );
        assert_eq!(what(&place(None, None)), "'(' was never closed");
    }
}
