//! Which nodes a resumed execution may reuse from an earlier one.
//!
//! A node is reused (its recorded output pinned, status `reused`) when it produced an output in
//! the earlier execution, its definition is unchanged, and nothing upstream of it runs again.
//! Everything else runs: the failed, timed-out or cancelled node, nodes that never ran, nodes
//! whose definition changed (with `--file`), and everything downstream of those.

use crate::store::NodeRow;
use flowrun_codegen::{Pin, Plan};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Why a node runs again (for the message `resume` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerun {
    NoOutput(String),
    Changed,
    New,
    Upstream(String),
}

/// Pins for the reusable nodes, and the reason each other node runs.
pub struct ResumePlan {
    pub pins: BTreeMap<String, Pin>,
    pub reruns: Vec<(String, Rerun)>,
}

/// The definition of node `id` in a workflow definition, as JSON.
fn node_definition<'a>(definition: &'a Value, id: &str) -> Option<&'a Value> {
    definition
        .get("nodes")?
        .as_array()?
        .iter()
        .find(|n| n.get("id").and_then(Value::as_str) == Some(id))
}

fn is_truncated(v: &Value) -> bool {
    v.get("$flowrun_truncated") == Some(&Value::Bool(true))
}

/// Works out a resume of `previous` (id, its node rows and the definition it ran) under `plan`
/// (built from `definition`: the same snapshot, or a changed file).
pub fn plan_resume(
    previous_id: &str,
    previous_rows: &[NodeRow],
    previous_definition: &Value,
    plan: &Plan,
    definition: &Value,
) -> ResumePlan {
    let rows: HashMap<&str, &NodeRow> = previous_rows
        .iter()
        .map(|r| (r.node_id.as_str(), r))
        .collect();
    let wf = &plan.workflow;
    let mut runs: HashSet<usize> = HashSet::new();
    let mut reruns = Vec::new();
    for &i in &plan.order {
        let node = &wf.nodes[i];
        let id = node.id.as_str();
        if node.pinned.is_some() {
            // Pinned in the definition: it stays pinned, neither reused nor run.
            continue;
        }
        let reason = match (
            node_definition(definition, id),
            node_definition(previous_definition, id),
        ) {
            (_, None) => Some(Rerun::New),
            (Some(a), Some(b)) if a != b => Some(Rerun::Changed),
            _ => match rows.get(id) {
                Some(r)
                    if r.status.has_output()
                        && r.output.as_ref().is_none_or(|o| !is_truncated(o)) =>
                {
                    plan.deps[i]
                        .iter()
                        .find(|d| runs.contains(d))
                        .map(|&d| Rerun::Upstream(wf.nodes[d].id.clone()))
                }
                Some(r) => Some(Rerun::NoOutput(r.status.to_string())),
                None => Some(Rerun::NoOutput("did not run".into())),
            },
        };
        // Guards count as upstream too: a node behind a condition that runs again runs again.
        let reason = reason.or_else(|| {
            plan.guards[i]
                .iter()
                .find(|(c, _)| runs.contains(c))
                .map(|&(c, _)| Rerun::Upstream(wf.nodes[c].id.clone()))
        });
        if let Some(r) = reason {
            runs.insert(i);
            reruns.push((id.to_string(), r));
        }
    }
    let mut pins = BTreeMap::new();
    for &i in &plan.order {
        if runs.contains(&i) || wf.nodes[i].pinned.is_some() {
            continue;
        }
        let id = &wf.nodes[i].id;
        let row = rows[id.as_str()];
        pins.insert(
            id.clone(),
            Pin {
                output: row.output.clone().unwrap_or(Value::Null),
                status: "reused",
                // A node reused before points at the execution that really produced it.
                from_execution: Some(
                    row.from_execution
                        .clone()
                        .unwrap_or_else(|| previous_id.to_string()),
                ),
            },
        );
    }
    ResumePlan { pins, reruns }
}
