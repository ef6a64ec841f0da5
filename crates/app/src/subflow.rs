//! Sub-workflows, the runner's side: what the script of a workflow with `workflow` nodes needs
//! in its environment to start child executions, and how a child execution is linked to the
//! node that started it.
//!
//! A `workflow` node's handler (`runtime/nodes/workflow.py`) starts `flowrun __sub` (the CLI's
//! `sub` module), which runs the child through [`crate::runner`] like `flowrun run` does, as
//! an execution with `parent_id`, `relation: sub` and the [`SubCall`] recorded.

use crate::runner::Prepared;
use flowrun_executor::RunSpec;
use std::path::Path;

pub use flowrun_codegen::subflow::MAX_DEPTH;

/// How a child execution was called: by which node (and `for_each` item) of its parent, and how
/// deep it is (the parent's depth + 1; a top-level execution is at depth 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubCall {
    pub parent_node: String,
    pub item: Option<u64>,
    pub depth: u32,
}

/// Does the workflow start child executions?
pub(crate) fn has_sub_workflows(wf: &flowrun_codegen::Workflow) -> bool {
    wf.nodes
        .iter()
        .any(|n| matches!(n.kind, flowrun_codegen::model::NodeKind::Workflow(_)))
}

/// The child execution that node `node` (its item `item`) of execution `id` started last.
pub fn latest_child(
    store: &flowrun_store::Store,
    id: &str,
    node: &str,
    item: Option<u64>,
) -> Option<flowrun_store::Execution> {
    store
        .children(id)
        .ok()?
        .into_iter()
        .filter(|(_, link)| link.parent_node == node && link.item == item)
        .max_by_key(|(c, _)| c.started_at)
        .map(|(c, _)| c)
}

/// Adds what the `workflow` handler needs to the child's environment: this flowrun executable,
/// the database, this execution's depth, half the kill grace (so a child
/// stopped with its parent ends, and is recorded, before the parent's grace runs out), the
/// timeout and whether the run is offline (`flowrun test --offline`); and the cache and
/// `FLOWRUN_EARLY_START`, as this runner has them.
pub(crate) fn add_env(spec: &mut RunSpec, p: &Prepared, db: &Path) {
    if !has_sub_workflows(&p.plan.workflow) {
        return;
    }
    let depth = p.options.sub.as_ref().map_or(0, |s| s.depth);
    let env = &mut spec.launch.env;
    env.retain(|(k, _)| !k.starts_with("FLOWRUN_SUB_"));
    env.push((
        "FLOWRUN_SUB_EXE".into(),
        crate::runner::flowrun_executable().display().to_string(),
    ));
    let db = std::path::absolute(db).unwrap_or_else(|_| db.to_path_buf());
    env.push(("FLOWRUN_SUB_DB".into(), db.display().to_string()));
    env.push(("FLOWRUN_SUB_DEPTH".into(), depth.to_string()));
    env.push((
        "FLOWRUN_SUB_KILL_GRACE_MS".into(),
        (p.options.kill_grace_ms / 2).to_string(),
    ));
    // A child without a `timeout_ms` of its own gets its parent's: the parent's deadline bounds
    // it anyway, and the runner's 60 s default must not cut a child of a longer parent short.
    env.push((
        "FLOWRUN_SUB_TIMEOUT_MS".into(),
        spec.timeout.as_millis().to_string(),
    ));
    if p.options.offline {
        env.push(("FLOWRUN_SUB_OFFLINE".into(), "1".into()));
    }
    // This runner's settings its children's runners (which inherit the interpreter's
    // environment) share: the cache, and early starts on or off.
    for key in ["FLOWRUN_CACHE_DIR", "FLOWRUN_EARLY_START"] {
        if let Some(value) = std::env::var(key).ok().filter(|v| !v.is_empty()) {
            env.retain(|(k, _)| k != key);
            env.push((key.into(), value));
        }
    }
    let pass = secrets_to_pass(p, env);
    if !pass.is_empty() {
        env.push((SECRETS_VAR.into(), pass));
    }
}

/// What this execution redacts that its children's runners get (`flowrun __sub` reads it into
/// `RunOptions::parent_secrets`): a secret a node passes to a child in its inputs would be
/// stored there in clear. The variable is in the interpreter's environment, where the
/// workflow's code can read it, so it holds only what that code has already: the values of its
/// environment (bound connections, `--env` values; not one flowrun found only in its own), and
/// of its parent's secrets those its trigger holds (a parent's secret is not handed to a child
/// that was never given it, nor to that child's children). As JSON; what would make it longer
/// than an exec takes (32 pages) is left out, the longest values first, and said so.
fn secrets_to_pass(p: &Prepared, env: &[(String, String)]) -> String {
    let trigger = String::from_utf8_lossy(&p.trigger_json);
    let given = |kv: &(String, String)| {
        let probe = flowrun_executor::redact::Redactor::new(std::slice::from_ref(kv));
        probe.text(trigger.to_string()) != trigger
    };
    let mut held: Vec<&(String, String)> = p
        .redacted
        .iter()
        .filter(|kv| env.contains(kv) || (p.options.parent_secrets.contains(kv) && given(kv)))
        .collect();
    held.sort_by_key(|(_, v)| v.len());
    // `NAME=[` … `]` and a NUL, then each pair and its comma.
    let mut len = SECRETS_VAR.len() + 4;
    let mut pass: Vec<&(String, String)> = Vec::new();
    for kv in held {
        let one = serde_json::to_string(kv).map_or(usize::MAX, |t| t.len()) + 1;
        if len.saturating_add(one) > 32 * 4096 {
            tracing::warn!(
                "{} is too long to pass to this execution's sub-workflows: a child given its value stores it unredacted",
                kv.0
            );
            continue;
        }
        len += one;
        pass.push(kv);
    }
    if pass.is_empty() {
        return String::new();
    }
    serde_json::to_string(&pass).expect("strings serialize")
}

/// The variable that carries a parent's secrets, `[[VAR, value], …]` in JSON, to the runner of
/// a child execution.
pub const SECRETS_VAR: &str = "FLOWRUN_SUB_SECRETS";

/// The parent's secrets a child's runner was given ([`SECRETS_VAR`] in its environment); none
/// when it is unset or unreadable.
pub fn parent_secrets() -> Vec<(String, String)> {
    std::env::var(SECRETS_VAR)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Adds the sub-workflow links to an execution's record (`show --json`, the API): its own
/// `parent_node` and `parent_item` when a `workflow` node started it, `children` (the records
/// of the child executions its `workflow` nodes started, nested the same way), and on each
/// `workflow` node row (or `for_each` item row) the `child_executions` it started (one per
/// attempt).
pub(crate) fn link_json(
    store: &flowrun_store::Store,
    id: &str,
    record: &mut serde_json::Value,
) -> Result<(), flowrun_store::StoreError> {
    use serde_json::{Value, json};
    let link = store.sub_link(id)?;
    record["parent_node"] = json!(link.as_ref().map(|l| &l.parent_node));
    record["parent_item"] = json!(link.as_ref().and_then(|l| l.item));
    let children = store.children(id)?;
    if children.is_empty() {
        record["children"] = json!([]);
        return Ok(());
    }
    let mut list = Vec::new();
    for (child, link) in &children {
        add_child_id(&mut record["nodes"], link, &child.id);
        // A child is younger than its parent, so this recursion ends (at most MAX_DEPTH deep
        // unless the store was written by hand).
        list.push(crate::views::record_json(store, &child.id)?);
    }
    record["children"] = Value::Array(list);
    Ok(())
}

/// Lists `child` under the node row (or the item row) that started it.
fn add_child_id(nodes: &mut serde_json::Value, link: &flowrun_store::SubLink, child: &str) {
    let Some(node) = nodes
        .as_array_mut()
        .and_then(|a| a.iter_mut().find(|n| n["node_id"] == *link.parent_node))
    else {
        return;
    };
    let row = match link.item {
        Some(i) => match node["items"]
            .as_array_mut()
            .and_then(|a| a.iter_mut().find(|r| r["index"] == i))
        {
            Some(r) => r,
            None => return,
        },
        None => node,
    };
    match row["child_executions"].as_array_mut() {
        Some(a) => a.push(child.into()),
        None => row["child_executions"] = serde_json::json!([child]),
    }
}

/// After a parent's run, whose end leaves nothing of its process tree: records the end of the
/// child executions (and theirs) still `running`. Their sub runners were in the tree — killed
/// when the parent's interpreter went first (a stop or timeout reaches every process of the
/// tree at once), before they could record the end themselves. They end as the parent did
/// (`timeout`, else `cancelled`), their running nodes `cancelled`.
pub(crate) fn end_left_children(
    store: &crate::SharedStore,
    parent_id: &str,
    parent_status: flowrun_events::ExecStatus,
) {
    use flowrun_events::{ErrorInfo, ErrorKind, ExecStatus};
    let (status, kind) = match parent_status {
        ExecStatus::Timeout => (ExecStatus::Timeout, ErrorKind::Timeout),
        _ => (ExecStatus::Cancelled, ErrorKind::Cancelled),
    };
    let mut pending = vec![parent_id.to_string()];
    while let Some(parent) = pending.pop() {
        let children = match store.lock().children(&parent) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("reading the children of execution {parent}: {e}");
                continue;
            }
        };
        for (child, _) in children {
            if !child.status.is_final() {
                let error = ErrorInfo::of(
                    kind,
                    format!("ended with its parent execution {parent} ({parent_status})"),
                );
                if let Err(e) =
                    crate::control::abandon(&mut store.lock(), &child.id, status, &error)
                {
                    tracing::warn!("ending child execution {}: {e}", child.id);
                }
            }
            pending.push(child.id);
        }
    }
}

/// What execution `id` and every execution under it (sub-workflows, at any depth) spent, as
/// each recorded its own calls; None when none of them says.
pub fn family_cost(store: &flowrun_store::Store, id: &str) -> Option<f64> {
    let mut total = store.execution(id).ok()?.usage.cost_usd;
    for (child, _) in store.children(id).unwrap_or_default() {
        if let Some(c) = family_cost(store, &child.id) {
            total = Some(total.unwrap_or(0.0) + c);
        }
    }
    total
}

/// What the children that node `node` of execution `id` started (those of its item `item`
/// only, when given) spent, with their own children: what a resume reusing that node's output
/// (or that item's) counts toward its cost limit. None when none of them says.
pub(crate) fn spent_by_node(
    store: &flowrun_store::Store,
    id: &str,
    node: &str,
    item: Option<u64>,
) -> Option<f64> {
    store
        .children(id)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, link)| link.parent_node == node && (item.is_none() || link.item == item))
        .filter_map(|(child, _)| family_cost(store, &child.id))
        .reduce(|a, b| a + b)
}

/// A child that continues an earlier one ([`resume_of_earlier_child`]).
pub struct ChildResume {
    pub plan: crate::again::AgainPlan,
    /// The earlier one was this parent's own previous attempt at the node (a retry), whose
    /// spending, reused outputs included, the parent has counted already.
    pub retry: bool,
}

/// What a child runs with when its parent is a resume: the resume of the child that the
/// parent's earlier run left unfinished at the same node (and item) — paused with it, failed,
/// stopped — so that what that child finished is reused, not run and paid for again. `None`
/// when the parent is not a resume, the earlier run started no such child or it succeeded, or
/// it cannot be resumed (its definition gone, its trigger not stored whole): then the child
/// starts afresh. One level: a resumed child's own children start afresh.
pub fn resume_of_earlier_child(
    store: &flowrun_store::Store,
    call: &SubCall,
    parent: &str,
    file: &Path,
    trigger: &[u8],
    options: crate::runner::RunOptions,
) -> Option<ChildResume> {
    let this = store.execution(parent).ok()?;
    let (Some(earlier), Some(flowrun_events::Relation::Resume)) = (this.parent_id, this.relation)
    else {
        return None;
    };
    let latest_at = |execution: &str| latest_child(store, execution, &call.parent_node, call.item);
    // A retry in this resume continues the attempt before it (itself a continuation), not the
    // earlier run's child again: what that attempt finished would be run and paid once more.
    let (child, retry) = match latest_at(parent) {
        Some(c) => (c, true),
        None => (latest_at(&earlier)?, false),
    };
    if child.status == flowrun_events::ExecStatus::Success {
        return None;
    }
    let trigger = serde_json::from_slice(trigger).ok()?;
    let source = crate::again::AgainSource::File(file);
    let plan = crate::again::plan_again(store, &child.id, source, Some(trigger), options, true);
    match plan {
        Ok(mut plan) => {
            // Linked to this parent as its child, as any sub-workflow; what it reuses points at
            // the child it continues (`from_execution`).
            plan.options.parent = Some((parent.to_string(), flowrun_events::Relation::Sub));
            Some(ChildResume { plan, retry })
        }
        Err(e) => {
            tracing::debug!("child {} not resumed, started afresh: {e}", child.id);
            None
        }
    }
}

/// What the outputs a resumed child reuses cost when they were made: its parent counts it
/// toward its own limit, as it would count the same calls made by nodes of its own.
pub fn reused_spending(plan: &crate::again::AgainPlan) -> f64 {
    use flowrun_codegen::model::NodeKind;
    let metered = |node: &str| {
        plan.source.workflow.node(node).is_some_and(|n| {
            matches!(
                n.kind,
                NodeKind::Llm(_) | NodeKind::Agent(_) | NodeKind::Workflow(_)
            )
        })
    };
    let cost = |pin: &flowrun_codegen::Pin| -> f64 {
        if pin.status != flowrun_codegen::PinStatus::Reused {
            return 0.0;
        }
        if let Some(spent) = pin.spent_usd {
            return spent;
        }
        let of = |v: &serde_json::Value| v.get("cost_usd").and_then(serde_json::Value::as_f64);
        match &pin.output {
            serde_json::Value::Array(items) => items.iter().filter_map(of).sum(),
            one => of(one).unwrap_or(0.0),
        }
    };
    let nodes: f64 = plan
        .options
        .pins
        .iter()
        .filter(|(n, _)| metered(n))
        .map(|(_, p)| cost(p))
        .sum();
    let items: f64 = plan
        .options
        .reused_items
        .iter()
        .filter(|(n, _)| metered(n))
        .flat_map(|(_, items)| items.values().map(cost))
        .sum();
    nodes + items
}
