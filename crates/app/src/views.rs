//! The JSON views of stored executions, shared by the CLI (`history --json`, `show --json`,
//! `run --json`, `logs --json`) and the HTTP API, so both print the same stable fields (listed in the README).

use flowrun_events::{NodeStatus, Part};
use flowrun_store::{Execution, NodeRow, Store, StoreError};
use serde_json::{Value, json};

/// How much recorded log text one read of `flowrun logs` or one page of
/// `GET /api/executions/{id}/logs` holds (one line at least).
pub const LOG_PAGE_BYTES: usize = 256 << 10;

/// A stored `log` event as `flowrun logs --json` prints it and the logs API gives it: its
/// `seq` and execution id, then the event's own fields.
pub fn log_json(execution_id: &str, ev: &flowrun_store::StoredEvent) -> Value {
    let mut v = json!({"seq": ev.seq, "execution_id": execution_id});
    if let (Some(o), Some(d)) = (v.as_object_mut(), ev.data.as_object()) {
        o.extend(d.clone());
    }
    v
}

/// The JSON form of an execution summary (`history --json`, `GET /api/executions`).
pub fn summary_json(e: &Execution) -> Value {
    json!({
        "id": e.id,
        "workflow_id": e.workflow_id,
        "workflow_name": e.workflow_name,
        "status": e.status,
        "mode": e.mode,
        "started_at": e.started_at,
        "finished_at": e.finished_at,
        "duration_ms": e.duration_ms,
        "error": e.error,
        "parent_id": e.parent_id,
        "relation": e.relation,
        "input_tokens": e.usage.input_tokens,
        "output_tokens": e.usage.output_tokens,
        "cost_usd": e.usage.cost_usd,
    })
}

/// The JSON form of an execution with its nodes (`show --json`, `run --json`,
/// `GET /api/executions/{id}`). The rows of a `for_each` node's items and a `repeat` node's
/// iterations are listed under the node, as `items` (each with its `index`) and `iterations`
/// (each with its `iteration`).
///
/// `plan` lists the nodes of the definition it ran, in execution order (`{id, type, name}`);
/// while the execution is queued or running, `nodes` has every planned node, those that have
/// not started yet as `{"node_id", "status": "pending"}`.
pub fn record_json(store: &Store, id: &str) -> Result<Value, StoreError> {
    let e = store.execution(id)?;
    let rows = store.nodes(id)?;
    let plan = plan_json(store, &e);
    let mut v = serde_json::to_value(&e).expect("execution serializes");
    let mut nodes = nodes_json(rows);
    if let (false, Some(plan)) = (e.status.is_final(), &plan) {
        nodes = with_pending(nodes, plan);
    }
    attach_earlier_attempts(&mut nodes, &earlier_attempts(store, id)?);
    v["nodes"] = nodes;
    v["plan"] = plan.unwrap_or(Value::Null);
    crate::subflow::link_json(store, id, &mut v)?;
    v["later_runs"] = later_runs_json(store, id)?;
    Ok(v)
}

/// The re-runs and resumes of an execution, oldest first, as [`summary_json`]s (`id`,
/// `relation`, `status`, `started_at`, `duration_ms`, …). A paused execution stays `paused`
/// once resumed (the resume is another execution); this says where it went on.
pub fn later_runs_json(store: &Store, id: &str) -> Result<Value, StoreError> {
    Ok(store.later_runs(id)?.iter().map(summary_json).collect())
}

/// Attempts before the last, by node and part (`None`: the node's own row).
pub type Attempts = std::collections::HashMap<(String, Option<Part>), Vec<Value>>;

/// The attempts of every node (item, iteration) that were to be retried, from their `node_end`
/// events (`retrying: true`): `{attempt, status, duration_ms, error}` each. A row keeps only its
/// last attempt; why the earlier ones failed is often the story (a timeout, then a 429, then
/// the error left). A retry withdrawn (the run ended during the backoff) makes its attempt the
/// row's own: [`before`] leaves it out.
pub fn earlier_attempts(store: &Store, id: &str) -> Result<Attempts, StoreError> {
    let mut out = Attempts::new();
    for ev in store.retried_attempts(id)? {
        let d = &ev.data;
        let Some(node) = d["node"].as_str() else {
            continue;
        };
        let number = |k: &str| d[k].as_u64().map(|n| n as u32);
        let part = Part::from_fields(number("item"), number("iteration"));
        out.entry((node.to_string(), part))
            .or_default()
            .push(json!({
                "attempt": d["attempt"],
                "status": d["status"],
                "duration_ms": d["duration_ms"],
                "error": d["error"],
            }));
    }
    Ok(out)
}

/// Of `list` (of [`earlier_attempts`]), the attempts before a row's own `attempt`.
pub fn before(list: Option<&Vec<Value>>, attempt: u64) -> Vec<&Value> {
    list.into_iter()
        .flatten()
        .filter(|a| a["attempt"].as_u64().is_some_and(|n| n < attempt))
        .collect()
}

/// Puts each retried row's earlier attempts on it, as `earlier_attempts` (see
/// [`earlier_attempts`]), in the nested form of [`nodes_json`].
fn attach_earlier_attempts(nodes: &mut Value, earlier: &Attempts) {
    if earlier.is_empty() {
        return;
    }
    let put = |row: &mut Value, key: (String, Option<Part>)| {
        let list = before(earlier.get(&key), row["attempt"].as_u64().unwrap_or(0));
        if !list.is_empty() {
            row["earlier_attempts"] = json!(list);
        }
    };
    for node in nodes.as_array_mut().into_iter().flatten() {
        let id = node["node_id"].as_str().unwrap_or_default().to_string();
        put(node, (id.clone(), None));
        for (list, index, part) in [
            ("items", "index", Part::Item as fn(u32) -> Part),
            ("iterations", "iteration", Part::Iteration),
        ] {
            for row in node[list].as_array_mut().into_iter().flatten() {
                let Some(n) = row[index].as_u64() else {
                    continue;
                };
                put(row, (id.clone(), Some(part(n as u32))));
            }
        }
    }
}

/// The nodes of the definition an execution ran, in execution order: `[{id, type, name}]`;
/// `None` when its snapshot is gone or no longer compiles.
///
/// A snapshot never changes (its hash is its content's), so the plan is kept per hash for the
/// process (`serve` answers every `?wait=true` with a record: compiling the definition again
/// each time was a tenth of its work per execution).
pub fn plan_json(store: &Store, e: &Execution) -> Option<Value> {
    static PLANS: crate::shared::Memo<Value> = crate::shared::Memo::new(256);
    PLANS
        .get_or(&e.snapshot_hash, || {
            let definition = store.snapshot(&e.snapshot_hash).ok().flatten().ok_or(())?;
            let source =
                flowrun_codegen::source::from_value(definition, "<snapshot>").map_err(|_| ())?;
            let plan = flowrun_codegen::compile_shallow(&source).map_err(|_| ())?;
            Ok::<Value, ()>(
                plan.ordered_nodes()
                    .map(|n| json!({"id": n.id, "type": n.kind.type_name(), "name": n.name}))
                    .collect(),
            )
        })
        .ok()
}

/// The node ids of a plan ([`plan_json`]), in its order.
pub fn plan_node_ids(plan: &Value) -> Vec<&str> {
    plan.as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["id"].as_str())
        .collect()
}

/// `nodes` in plan order, with a `pending` entry for each planned node without a row.
fn with_pending(nodes: Value, plan: &Value) -> Value {
    let mut rows: Vec<Value> = match nodes {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for id in plan
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["id"].as_str())
    {
        match rows.iter().position(|r| r["node_id"] == id) {
            Some(i) => out.push(rows.remove(i)),
            None => out.push(json!({"node_id": id, "status": NodeStatus::Pending})),
        }
    }
    out.extend(rows);
    Value::Array(out)
}

/// Node rows as JSON: each node's own row, with its parts nested under it.
pub fn nodes_json(rows: Vec<NodeRow>) -> Value {
    let mut nodes: Vec<Value> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = Default::default();
    let (own, parts): (Vec<NodeRow>, Vec<NodeRow>) =
        rows.into_iter().partition(|r| r.part.is_none());
    for r in own {
        at.insert(r.node_id.clone(), nodes.len());
        nodes.push(serde_json::to_value(&r).expect("a node row serializes"));
    }
    for r in parts {
        let Some(part) = r.part else { continue };
        let (list, key) = match part {
            Part::Item(_) => ("items", "index"),
            Part::Iteration(_) => ("iterations", "iteration"),
        };
        let mut row = serde_json::to_value(&r).expect("a node row serializes");
        row[key] = json!(part.number());
        let node = match at.get(&r.node_id) {
            Some(&i) => &mut nodes[i],
            // An item whose node has no row yet (it is still running).
            None => {
                at.insert(r.node_id.clone(), nodes.len());
                nodes.push(json!({"node_id": r.node_id, "status": "running"}));
                nodes.last_mut().expect("just pushed")
            }
        };
        match node[list].as_array_mut() {
            Some(a) => a.push(row),
            None => node[list] = json!([row]),
        }
    }
    Value::Array(nodes)
}

/// Whether `node` of execution `id` ran the item or iteration `part`, as far as it is known:
/// `None` when it did, or may yet (a node still running may start more iterations; its items
/// are known as it starts); otherwise the error to give, saying what it did run (`node 'each'
/// of execution … has no item 7: it ran 3 items (each[0] to each[2])`), rather than an empty
/// answer that reads as a part without output.
pub fn part_not_run(
    store: &Store,
    id: &str,
    node: &str,
    part: Part,
) -> Result<Option<String>, StoreError> {
    let rows: Vec<NodeRow> = store
        .nodes(id)?
        .into_iter()
        .filter(|n| n.node_id == node)
        .collect();
    let items = store
        .item_counts(id)?
        .into_iter()
        .find(|(n, _)| n == node)
        .map(|(_, k)| k);
    let mut iterations: Vec<u32> = rows
        .iter()
        .filter_map(|n| match n.part {
            Some(Part::Iteration(k)) => Some(k),
            _ => None,
        })
        .collect();
    iterations.sort_unstable();
    let ended = store.execution(id)?.status.is_final()
        || rows
            .iter()
            .any(|n| n.part.is_none() && n.status != NodeStatus::Running);
    let ran_it = match part {
        Part::Item(i) => items.map_or(!ended, |k| u64::from(i) < k),
        Part::Iteration(k) => k > 0 && (iterations.contains(&k) || !ended),
    };
    if ran_it {
        return Ok(None);
    }
    let ran = match (items, iterations.as_slice()) {
        (Some(1), _) => format!("ran 1 item ({node}[0])"),
        (Some(k), _) if k > 0 => format!("ran {k} items ({node}[0] to {node}[{}])", k - 1),
        (_, [k]) => format!("ran 1 iteration ({node}#{k})"),
        (_, [first, .., last]) => format!(
            "ran {} iterations ({node}#{first} to {node}#{last})",
            iterations.len()
        ),
        _ if rows.is_empty() => "did not run".to_string(),
        _ => "ran no items or iterations".to_string(),
    };
    let asked = format!("{} {}", part.kind(), part.number());
    Ok(Some(format!(
        "node '{node}' of execution {id} has no {asked}: it {ran}"
    )))
}
