//! The JSON views of stored executions, shared by the CLI (`history --json`, `show --json`,
//! `run --json`) and the HTTP API, so both print the same stable fields (listed in the README).

use flowrun_store::{Execution, Store, StoreError};
use serde_json::{Value, json};

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
/// `GET /api/executions/{id}`).
pub fn record_json(store: &Store, id: &str) -> Result<Value, StoreError> {
    let e = store.execution(id)?;
    let nodes = store.nodes(id)?;
    let mut v = serde_json::to_value(&e).expect("execution serializes");
    v["nodes"] = serde_json::to_value(&nodes).expect("nodes serialize");
    Ok(v)
}
