//! Re-run and resume (CLI and HTTP API alike): which execution, which definition, which trigger
//! data, and for a resume which outputs to reuse and why the others run again.

use crate::resume::{Rerun, SinceThen, plan_resume};
use crate::runner::RunOptions;
use flowrun_codegen::{Diagnostics, Source};
use flowrun_events::{ExecStatus, Relation};
use flowrun_store::Store;
use serde_json::Value;
use std::path::Path;

/// Where a re-run or resume takes its definition from.
#[derive(Debug, Clone)]
pub enum AgainSource<'a> {
    /// The definition the earlier execution ran (its snapshot in the store).
    Snapshot,
    /// A workflow file (`--file`).
    File(&'a Path),
    /// A definition sent as data (the HTTP API's `workflow`), read where the file the earlier
    /// execution ran was; when it had none, the caller places it ([`AgainPlan::place_unsaved`]).
    Definition(Box<Source>),
}

/// A re-run or resume, worked out and ready for [`crate::runner::prepare`].
#[derive(Debug)]
pub struct AgainPlan {
    /// The earlier execution (full id).
    pub previous_id: String,
    pub source: Source,
    pub trigger: Value,
    /// The caller's options plus the reused outputs (resume) and the parent link.
    pub options: RunOptions,
    /// What `resume` tells the user: which nodes run again and why, which are reused.
    pub notes: Vec<String>,
}

impl AgainPlan {
    /// A definition without a file — an editor's, sent now or run before — is read as if it
    /// were in the directory `dir()` gives (`Source::placed_in`), unless the earlier execution's
    /// file placed it: the caller's rule (the server's workflows directory; the CLI, where the
    /// earlier run ran), asked only when needed.
    pub fn place_unsaved(&mut self, dir: impl FnOnce() -> Option<std::path::PathBuf>) {
        if self.source.file.starts_with('<') && self.source.dir.is_none() {
            self.source.dir = dir();
        }
    }
}

/// Why a re-run or resume cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgainError {
    #[error(transparent)]
    Store(#[from] flowrun_store::StoreError),
    #[error("execution {id} is still {status}; wait for it or stop it first")]
    NotFinished { id: String, status: ExecStatus },
    #[error("the definition execution {0} ran is missing from the store")]
    MissingSnapshot(String),
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error(
        "the trigger data of execution {id} ({bytes} bytes) was over the storage limit and was not stored in full; give the trigger data again"
    )]
    TriggerTruncated { id: String, bytes: u64 },
    /// A rerun's or resume's new definition is of another workflow: a resume could reuse none
    /// of its outputs, and a rerun would be recorded as one of a workflow it is not.
    #[error(
        "execution {id} ran workflow '{ran}', but {file} is workflow '{given}'; a rerun or resume runs the same workflow again, perhaps changed (run the other one with `run`)"
    )]
    OtherWorkflow {
        id: String,
        ran: String,
        given: String,
        file: String,
    },
    /// A case of a workflow test ran with mocks, which are not stored: run again or resumed
    /// without them it would make the calls they stood for, and reuse mocked outputs as real.
    #[error(
        "execution {0} was a case of a workflow test, run with mocks that are not stored: it cannot be run again or resumed on its own; run its test again"
    )]
    TestCase(String),
}

/// The shared part of `rerun` and `resume` (CLI and HTTP API): finds the earlier execution
/// (`id` or a unique prefix), checks it has ended, takes its definition (or `source`) and its
/// trigger data (unless `trigger` is given), and for a resume pins the outputs it can reuse.
/// Reads the store only; [`crate::runner::prepare`] comes next.
pub fn plan_again(
    store: &Store,
    id: &str,
    source: AgainSource<'_>,
    trigger: Option<Value>,
    mut options: RunOptions,
    resume: bool,
) -> Result<AgainPlan, AgainError> {
    let id = store.resolve_id(id)?;
    let previous = store.execution(&id)?;
    if !previous.status.is_final() {
        return Err(AgainError::NotFinished {
            id,
            status: previous.status,
        });
    }
    if previous.mode == crate::testing::run::MODE {
        return Err(AgainError::TestCase(id));
    }
    let previous_definition = store
        .snapshot(&previous.snapshot_hash)?
        .ok_or_else(|| AgainError::MissingSnapshot(id.clone()))?;
    let from_snapshot = matches!(source, AgainSource::Snapshot);
    let source = match source {
        AgainSource::File(f) => flowrun_codegen::load_file(f).map_err(AgainError::Invalid)?,
        // Named by the file it came from, so what it names relative to that file (a
        // sub-workflow) is found again, whatever directory this runs in.
        AgainSource::Snapshot => flowrun_codegen::source::from_value(
            previous_definition.clone(),
            &previous
                .source_file
                .clone()
                .unwrap_or_else(|| format!("<execution {id}>")),
        )
        .map_err(AgainError::Invalid)?,
        // An editor's changed version: read where the file it ran was, so that its relative
        // paths (a sub-workflow, its nodes' directory) mean what they meant.
        AgainSource::Definition(s) => {
            let file_dir = previous
                .source_file
                .as_deref()
                .map(Path::new)
                .and_then(Path::parent);
            match file_dir {
                Some(dir) if s.dir.is_none() => s.placed_in(dir.to_path_buf()),
                _ => *s,
            }
        }
    };
    if !from_snapshot {
        let given = source
            .definition
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("");
        if given != previous.workflow_id {
            return Err(AgainError::OtherWorkflow {
                ran: previous.workflow_id.clone(),
                given: given.to_string(),
                file: source.file.clone(),
                id,
            });
        }
    }
    let trigger = match trigger {
        Some(t) => t,
        // What was stored is a truncation marker, not the data: never run with it.
        None if flowrun_events::truncated::is_marker(&previous.trigger) => {
            return Err(AgainError::TriggerTruncated {
                bytes: flowrun_events::truncated::original_bytes(&previous.trigger).unwrap_or(0),
                id,
            });
        }
        None => previous.trigger.clone(),
    };
    // The same definition runs where it ran, unless told otherwise.
    if from_snapshot && options.cwd.is_none() {
        options.cwd = previous.cwd.as_ref().map(std::path::PathBuf::from);
    }
    let mut notes = Vec::new();
    if from_snapshot {
        // The file may have been fixed since: say so rather than silently run the old version.
        if let Some(file) = previous.source_file.as_deref() {
            let changed = flowrun_codegen::load_file(Path::new(file))
                .map(|now| {
                    flowrun_codegen::render::definition_hash(&now.definition)
                        != previous.snapshot_hash
                })
                .unwrap_or(false);
            if changed {
                notes.push(format!(
                    "note: {file} has changed since execution {id} ran; this runs the definition it ran (add --file {file} for the new one)"
                ));
            }
        }
    }
    if resume && previous.status == ExecStatus::Success {
        notes.push(format!(
            "note: execution {id} succeeded, so every node is reused; `flowrun rerun {id}` runs them all again"
        ));
    }
    if resume {
        // Resuming again is allowed (after a fix, say) but rarely meant: a paused execution
        // stays `paused` once resumed, and its record or page still offers to resume it.
        let before: Vec<String> = store
            .later_runs(&id)?
            .iter()
            .filter(|e| e.relation == Some(flowrun_events::Relation::Resume))
            .map(|e| format!("{} ({})", e.id, e.status.as_str()))
            .collect();
        if !before.is_empty() {
            notes.push(format!(
                "note: execution {id} was resumed before, as {}; this resumes it again",
                before.join(", ")
            ));
        }
        let plan = flowrun_codegen::compile(&source).map_err(AgainError::Invalid)?;
        let rows = store.nodes(&id)?;
        let r = plan_resume(
            &id,
            &rows,
            &previous_definition,
            &plan,
            &source.definition,
            &options.pins,
            &SinceThen {
                trigger: trigger != previous.trigger,
                children: changed_children(store, &id, &plan, &rows)?,
            },
        );
        for (node, why) in &r.reruns {
            let why = match why {
                Rerun::NoOutput(s) if s == "did not run" => {
                    format!("it did not run in {id}")
                }
                Rerun::NoOutput(s) => format!("it ended {s} in {id}"),
                Rerun::Changed => "its definition changed".into(),
                Rerun::New => "it is new".into(),
                Rerun::Upstream(u) => format!("'{u}' runs again"),
                Rerun::Repinned(u) => format!("'{u}' is pinned to a new output"),
                Rerun::TriggerChanged => "it reads the trigger data, which changed".into(),
                Rerun::Truncated => {
                    format!("its output in {id} was too large to store whole")
                }
                Rerun::ChildChanged => {
                    format!("its child workflow's file changed since {id} ran it")
                }
            };
            notes.push(format!("resume: '{node}' runs ({why})"));
        }
        if !r.pins.is_empty() {
            // Each output from the execution that produced it, as `show` says: one the resumed
            // execution had reused itself comes from further back.
            let mut by_origin: Vec<(&str, Vec<&str>)> = Vec::new();
            for (node, pin) in &r.pins {
                let from = pin.from_execution.as_deref().unwrap_or(id.as_str());
                match by_origin.iter_mut().find(|(f, _)| *f == from) {
                    Some((_, nodes)) => nodes.push(node),
                    None => by_origin.push((from, vec![node])),
                }
            }
            let parts: Vec<String> = by_origin
                .iter()
                .map(|(from, nodes)| {
                    let via = if *from == id {
                        String::new()
                    } else {
                        format!(" (reused by {id})")
                    };
                    format!("{} from {from}{via}", nodes.join(", "))
                })
                .collect();
            notes.push(format!("resume: reusing {}", parts.join("; ")));
        }
        for (node, items) in &r.items {
            let reused: Vec<String> = items.keys().map(usize::to_string).collect();
            let which = if reused.len() == 1 { "item" } else { "items" };
            notes.push(format!(
                "resume: '{node}' reuses its {which} {} and runs the others",
                reused.join(", ")
            ));
        }
        let r = with_childrens_spending(store, &plan, &id, r);
        for (node, pin) in r.pins {
            options.pins.entry(node).or_insert(pin);
        }
        options.reused_items = r.items;
    }
    options.parent = Some((
        id.clone(),
        if resume {
            Relation::Resume
        } else {
            Relation::Rerun
        },
    ));
    Ok(AgainPlan {
        previous_id: id,
        source,
        trigger,
        options,
        notes,
    })
}

/// The reused outputs of `workflow` nodes, each with what its children spent: their outputs do
/// not say, and a resume spends from the same cost limit as the run it continues.
fn with_childrens_spending(
    store: &Store,
    plan: &flowrun_codegen::Plan,
    id: &str,
    mut r: crate::resume::ResumePlan,
) -> crate::resume::ResumePlan {
    use flowrun_codegen::model::NodeKind;
    let spawns = |node: &str| {
        plan.workflow
            .node(node)
            .is_some_and(|n| matches!(n.kind, NodeKind::Workflow(_)))
    };
    let made_by = |pin: &flowrun_codegen::Pin| pin.from_execution.clone().unwrap_or(id.into());
    let looping = |node: &str| {
        plan.workflow
            .node(node)
            .is_some_and(|n| n.for_each.is_some())
    };
    for (node, pin) in r.pins.iter_mut().filter(|(n, _)| spawns(n)) {
        let ran = made_by(pin);
        pin.spent_usd = if looping(node) {
            // Item by item, each where it ran: the execution that ran the node may have reused
            // some of its items from an earlier one (a resume of a resume).
            let items = store.nodes(&ran).unwrap_or_default();
            items
                .iter()
                .filter(|row| row.node_id == *node)
                .filter_map(|row| match row.part {
                    Some(flowrun_events::Part::Item(i)) => {
                        let at = row.from_execution.as_deref().unwrap_or(&ran);
                        crate::subflow::spent_by_node(store, at, node, Some(u64::from(i)))
                    }
                    _ => None,
                })
                .reduce(|a, b| a + b)
        } else {
            crate::subflow::spent_by_node(store, &ran, node, None)
        };
    }
    for (node, items) in r.items.iter_mut().filter(|(n, _)| spawns(n)) {
        for (i, pin) in items.iter_mut() {
            let at = Some(*i as u64);
            pin.spent_usd = crate::subflow::spent_by_node(store, &made_by(pin), node, at);
        }
    }
    r
}

/// The `workflow` nodes of `plan` whose children ran a file (theirs, or one of their own
/// children's, at any depth) that has changed since, or is gone: reusing their outputs or items
/// would mix versions. Their children are those of execution `id`, and of the executions its
/// rows (`rows`) reused the node's outputs from.
fn changed_children(
    store: &Store,
    id: &str,
    plan: &flowrun_codegen::Plan,
    rows: &[flowrun_store::NodeRow],
) -> Result<std::collections::BTreeSet<String>, AgainError> {
    use flowrun_codegen::model::NodeKind;
    let mut changed = std::collections::BTreeSet::new();
    for node in &plan.workflow.nodes {
        if !matches!(node.kind, NodeKind::Workflow(_)) {
            continue;
        }
        let mut ran_in = std::collections::BTreeSet::from([id.to_string()]);
        ran_in.extend(
            rows.iter()
                .filter(|r| r.node_id == node.id)
                .filter_map(|r| r.from_execution.clone()),
        );
        'node: for run in &ran_in {
            for (child, link) in store.children(run)? {
                if link.parent_node == node.id && family_changed(store, &child, 0)? {
                    changed.insert(node.id.clone());
                    break 'node;
                }
            }
        }
    }
    Ok(changed)
}

/// Whether execution `e`, or one of its children at any depth, ran a file whose definition is
/// not the one it ran now (changed, or gone).
fn family_changed(
    store: &Store,
    e: &flowrun_store::Execution,
    depth: u32,
) -> Result<bool, AgainError> {
    if let Some(file) = &e.source_file {
        let now = flowrun_codegen::load_file(Path::new(file))
            .map(|s| flowrun_codegen::render::definition_hash(&s.definition))
            .ok();
        if now.as_deref() != Some(e.snapshot_hash.as_str()) {
            return Ok(true);
        }
    }
    if depth >= crate::subflow::MAX_DEPTH {
        return Ok(false);
    }
    for (child, _) in store.children(&e.id)? {
        if family_changed(store, &child, depth + 1)? {
            return Ok(true);
        }
    }
    Ok(false)
}
