//! Which nodes a resumed execution may reuse from an earlier one.
//!
//! A node is reused (its recorded output pinned, status `reused`) when it produced an output in
//! the earlier execution, its definition is unchanged, and nothing upstream of it runs again.
//! Everything else runs: the failed, timed-out or cancelled node, nodes that never ran, nodes
//! whose definition changed (with `--file`), and everything downstream of those.

use flowrun_codegen::{Pin, Plan};
use flowrun_store::NodeRow;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Why a node runs again (for the message `resume` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerun {
    NoOutput(String),
    Changed,
    New,
    Upstream(String),
    /// A node it reads is pinned (by the caller or in the definition) to an output other than
    /// the one it read before.
    Repinned(String),
    /// It reads the trigger data, which is not the same as before.
    TriggerChanged,
    /// Its output was too large to store whole, so it cannot be reused.
    Truncated,
    /// A `workflow` node whose child file is not the one its children ran.
    ChildChanged,
}

/// What changed since the earlier execution besides its definition.
#[derive(Debug, Default)]
pub struct SinceThen {
    /// The trigger data is not the same.
    pub trigger: bool,
    /// The `workflow` nodes whose child file changed since their children ran.
    pub children: BTreeSet<String>,
}

/// Can node `i` see the trigger data? Trigger nodes, templates that reference `trigger`, and
/// code that mentions `trigger` (code is not parsed; mentioning the name is enough to count).
fn reads_trigger(plan: &Plan, i: usize) -> bool {
    use flowrun_codegen::model::NodeKind;
    use flowrun_codegen::pyliteral::Data;
    use flowrun_codegen::template::{Part, Segment};
    fn walk(d: &Data) -> bool {
        match d {
            Data::Template(t) => t.parts.iter().any(|p| {
                matches!(p, Part::Ref(r) if matches!(r.path.first(), Some(Segment::Key(k)) if k == "trigger"))
            }),
            Data::List(items) => items.iter().any(walk),
            Data::Dict(entries) => entries.iter().any(|(_, v)| walk(v)),
            _ => false,
        }
    }
    match &plan.workflow.nodes[i].kind {
        NodeKind::Trigger(_) => true,
        NodeKind::Code(c) => c.code.contains("trigger"),
        _ => walk(&plan.params[i]),
    }
}

/// Pins for the reusable nodes, and the reason each other node runs.
pub struct ResumePlan {
    pub pins: BTreeMap<String, Pin>,
    pub reruns: Vec<(String, Rerun)>,
    /// For a `for_each` node that runs again because some of its items failed: the items that
    /// succeeded, reused (only the others run).
    pub items: BTreeMap<String, BTreeMap<usize, Pin>>,
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
    flowrun_events::truncated::is_marker(v)
}

/// Works out a resume of `previous` (id, its node rows and the definition it ran) under `plan`
/// (built from `definition`: the same snapshot, or a changed file), with the caller's `pins`
/// (`--pin`), which win over reuse.
pub fn plan_resume(
    previous_id: &str,
    previous_rows: &[NodeRow],
    previous_definition: &Value,
    plan: &Plan,
    definition: &Value,
    pins: &BTreeMap<String, Pin>,
    since: &SinceThen,
) -> ResumePlan {
    let trigger_changed = since.trigger;
    let rows: HashMap<&str, &NodeRow> = previous_rows
        .iter()
        .filter(|r| r.part.is_none())
        .map(|r| (r.node_id.as_str(), r))
        .collect();
    let wf = &plan.workflow;
    let mut runs: HashSet<usize> = HashSet::new();
    // Pinned nodes whose output is not the one recorded in `previous`.
    let mut repinned: HashSet<usize> = HashSet::new();
    let mut reruns = Vec::new();
    let upstream = |d: usize, runs: &HashSet<usize>, repinned: &HashSet<usize>| {
        if runs.contains(&d) {
            Some(Rerun::Upstream(wf.nodes[d].id.clone()))
        } else if repinned.contains(&d) {
            Some(Rerun::Repinned(wf.nodes[d].id.clone()))
        } else {
            None
        }
    };
    for &i in &plan.order {
        let node = &wf.nodes[i];
        let id = node.id.as_str();
        if let Some(out) = pins.get(id).map(|p| &p.output).or(node.pinned.as_ref()) {
            // Pinned (`--pin` or in the definition): it stays pinned, neither reused nor run.
            // What reads it runs again unless it read this same output before.
            let same = rows
                .get(id)
                .is_some_and(|r| r.status.has_output() && r.output.as_ref() == Some(out));
            if !same {
                repinned.insert(i);
            }
            continue;
        }
        let reason = match (
            node_definition(definition, id),
            node_definition(previous_definition, id),
        ) {
            (_, None) => Some(Rerun::New),
            (Some(a), Some(b)) if a != b => Some(Rerun::Changed),
            _ if since.children.contains(id) => Some(Rerun::ChildChanged),
            _ if trigger_changed && reads_trigger(plan, i) => Some(Rerun::TriggerChanged),
            _ => match rows.get(id) {
                Some(r)
                    if r.status.has_output()
                        && r.output.as_ref().is_none_or(|o| !is_truncated(o)) =>
                {
                    plan.deps[i]
                        .iter()
                        .find_map(|&d| upstream(d, &runs, &repinned))
                }
                Some(r) if r.status.has_output() => Some(Rerun::Truncated),
                Some(r) => Some(Rerun::NoOutput(r.status.to_string())),
                None => Some(Rerun::NoOutput("did not run".into())),
            },
        };
        // Guards count as upstream too: a node behind a condition that runs again runs again.
        let reason = reason.or_else(|| {
            plan.guards[i]
                .iter()
                .find_map(|&(c, _)| upstream(c, &runs, &repinned))
        });
        if let Some(r) = reason {
            runs.insert(i);
            reruns.push((id.to_string(), r));
        }
    }
    // A for_each node that failed only in some items, with nothing else changed, keeps the
    // items that succeeded: the list they came from is the same (its upstream is reused). When
    // a node it reads runs again or is pinned anew, or it reads a trigger that changed, the list
    // may differ (items are matched by index): every item runs again.
    let mut items: BTreeMap<String, BTreeMap<usize, Pin>> = BTreeMap::new();
    for (id, why) in &reruns {
        let Rerun::NoOutput(_) = why else { continue };
        let Some(i) = wf.nodes.iter().position(|n| n.id == *id) else {
            continue;
        };
        let moved = |d: &usize| runs.contains(d) || repinned.contains(d);
        if wf.nodes[i].for_each.is_none()
            || plan.deps[i].iter().any(moved)
            || plan.guards[i].iter().any(|(c, _)| moved(c))
            || (trigger_changed && reads_trigger(plan, i))
        {
            continue;
        }
        let ok: BTreeMap<usize, Pin> = previous_rows
            .iter()
            .filter(|r| r.node_id == *id && r.status.has_output())
            .filter_map(|r| match r.part {
                Some(flowrun_events::Part::Item(i))
                    if r.output.as_ref().is_none_or(|o| !is_truncated(o)) =>
                {
                    Some((
                        i as usize,
                        Pin::reused(
                            r.output.clone().unwrap_or(Value::Null),
                            Some(
                                r.from_execution
                                    .clone()
                                    .unwrap_or_else(|| previous_id.to_string()),
                            ),
                        ),
                    ))
                }
                _ => None,
            })
            .collect();
        if !ok.is_empty() {
            items.insert(id.clone(), ok);
        }
    }
    let mut reuse = BTreeMap::new();
    for &i in &plan.order {
        let id = &wf.nodes[i].id;
        if runs.contains(&i) || wf.nodes[i].pinned.is_some() || pins.contains_key(id) {
            continue;
        }
        let row = rows[id.as_str()];
        reuse.insert(
            id.clone(),
            Pin::reused(
                row.output.clone().unwrap_or(Value::Null),
                // A node reused before points at the execution that really produced it.
                Some(
                    row.from_execution
                        .clone()
                        .unwrap_or_else(|| previous_id.to_string()),
                ),
            ),
        );
    }
    ResumePlan {
        pins: reuse,
        reruns,
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowrun_events::NodeStatus;
    use serde_json::json;

    /// trigger → a (reads the trigger) → b → c, then d reading a alone.
    fn definition() -> Value {
        json!({"id": "r", "nodes": [
            {"id": "t", "type": "trigger"},
            {"id": "a", "type": "set", "fields": {"x": "{{ trigger.x }}"}},
            {"id": "b", "type": "set", "fields": {"y": "{{ nodes.a.output.x }}"}},
            {"id": "c", "type": "set", "fields": {"z": "{{ nodes.b.output.y }}"}},
            {"id": "d", "type": "set", "fields": {"w": "{{ nodes.a.output.x }}"}}
        ]})
    }

    fn plan_of(def: &Value) -> Plan {
        let source = flowrun_codegen::source::from_value(def.clone(), "<test>").unwrap();
        flowrun_codegen::compile(&source).unwrap()
    }

    /// A resume of execution e1, recorded as `rows` of `old`, with `new` and `pins`, nothing
    /// else changed.
    fn resumed(
        rows: &[NodeRow],
        old: &Value,
        new: &Value,
        pins: &BTreeMap<String, Pin>,
    ) -> ResumePlan {
        plan_resume(
            "e1",
            rows,
            old,
            &plan_of(new),
            new,
            pins,
            &SinceThen::default(),
        )
    }

    fn row(id: &str, status: NodeStatus, output: Option<Value>) -> NodeRow {
        NodeRow {
            node_id: id.into(),
            part: None,
            reason: None,
            position: 0,
            status,
            attempt: 1,
            started_at: Some(1),
            finished_at: Some(2),
            duration_ms: Some(1.0),
            input: None,
            output,
            error: None,
            from_execution: None,
        }
    }

    fn ok(id: &str) -> NodeRow {
        row(id, NodeStatus::Success, Some(json!({"id": id})))
    }

    fn reasons(p: &ResumePlan) -> Vec<(&str, &Rerun)> {
        p.reruns.iter().map(|(n, r)| (n.as_str(), r)).collect()
    }

    #[test]
    fn reuses_what_succeeded_and_reruns_the_failed_node_and_what_follows_it() {
        let def = definition();
        let rows = [ok("t"), ok("a"), row("b", NodeStatus::Error, None), ok("d")];
        let p = resumed(&rows, &def, &def, &BTreeMap::new());
        assert_eq!(
            reasons(&p),
            [
                ("b", &Rerun::NoOutput("error".into())),
                ("c", &Rerun::NoOutput("did not run".into())),
            ]
        );
        let reused: Vec<&str> = p.pins.keys().map(String::as_str).collect();
        assert_eq!(reused, ["a", "d", "t"]);
        assert_eq!(p.pins["a"].output, json!({"id": "a"}));
        assert_eq!(p.pins["a"].from_execution.as_deref(), Some("e1"));
    }

    #[test]
    fn a_changed_node_reruns_with_its_dependants_only() {
        let old = definition();
        let mut new = definition();
        new["nodes"][2]["fields"]["y2"] = json!("extra");
        let rows = [ok("t"), ok("a"), ok("b"), ok("c"), ok("d")];
        let p = resumed(&rows, &old, &new, &BTreeMap::new());
        assert_eq!(
            reasons(&p),
            [("b", &Rerun::Changed), ("c", &Rerun::Upstream("b".into()))]
        );
    }

    #[test]
    fn a_changed_trigger_reruns_the_nodes_that_read_it() {
        let def = definition();
        let rows = [ok("t"), ok("a"), ok("b"), ok("c"), ok("d")];
        let p = plan_resume(
            "e1",
            &rows,
            &def,
            &plan_of(&def),
            &def,
            &BTreeMap::new(),
            &SinceThen {
                trigger: true,
                ..SinceThen::default()
            },
        );
        let names: Vec<&str> = p.reruns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["t", "a", "b", "c", "d"]);
        assert_eq!(p.reruns[1].1, Rerun::TriggerChanged);
    }

    #[test]
    fn truncated_outputs_and_new_pins_are_not_reused() {
        let def = definition();
        let cut = flowrun_events::truncated::marker(2_000_000, "{");
        let rows = [
            ok("t"),
            ok("a"),
            row("b", NodeStatus::Success, Some(cut)),
            ok("c"),
            ok("d"),
        ];
        let pins = BTreeMap::from([("d".to_string(), Pin::pinned(json!({"new": true})))]);
        let p = resumed(&rows, &def, &def, &pins);
        assert_eq!(
            reasons(&p),
            [
                ("b", &Rerun::Truncated),
                ("c", &Rerun::Upstream("b".into()))
            ]
        );
        // The caller's pin stays a pin: not in the reuse list.
        assert!(!p.pins.contains_key("d"));
    }

    /// mk → each (for_each over mk's output), whose item 1 failed.
    fn items_case() -> (Value, Vec<NodeRow>) {
        let def = json!({"id": "r", "nodes": [
            {"id": "mk", "type": "code", "code": "return [1, 2, 3]"},
            {"id": "each", "type": "set", "for_each": "{{ nodes.mk.output }}",
             "fields": {"v": "{{ item }}"}}
        ]});
        let item = |i: u32, status| NodeRow {
            part: Some(flowrun_events::Part::Item(i)),
            ..row("each", status, Some(json!({"v": i})))
        };
        let rows = vec![
            ok("mk"),
            row("each", NodeStatus::Error, None),
            item(0, NodeStatus::Success),
            item(1, NodeStatus::Error),
            item(2, NodeStatus::Success),
        ];
        (def, rows)
    }

    #[test]
    fn a_for_each_keeps_its_good_items_only_while_its_list_cannot_have_changed() {
        let (def, rows) = items_case();
        let none = BTreeMap::new();
        let p = resumed(&rows, &def, &def, &none);
        let kept: Vec<usize> = p.items["each"].keys().copied().collect();
        assert_eq!(kept, [0, 2]);
        // The node that makes the list changed: items are matched by index, so none is kept.
        let mut new = def.clone();
        new["nodes"][0]["code"] = json!("return ['x', 'y', 'z']");
        let p = resumed(&rows, &def, &new, &none);
        assert!(p.items.is_empty(), "{:?}", p.items);
        // Pinned to another list: the same.
        let pins = BTreeMap::from([("mk".to_string(), Pin::pinned(json!(["x", "y", "z"])))]);
        let p = resumed(&rows, &def, &def, &pins);
        assert!(p.items.is_empty(), "{:?}", p.items);
    }
}
