//! `GET /api/executions/{id}/logs`: an execution's log lines, of one node (or one item or
//! iteration of it) when asked, a page at a time — what `flowrun logs ID [--node NODE] --json`
//! prints, for an editor's "logs of this step" without replaying the whole event stream.

use super::Segment;
use super::error::{ApiError, blocking};
use super::query;
use crate::AppState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    node: Option<String>,
    item: Option<u32>,
    iteration: Option<u32>,
    /// The `seq` after which to start: the `next` of the page before.
    #[serde(default)]
    after: u64,
}

/// `{execution_id, status, logs: [{seq, execution_id, event: "log", node, stream, level, line,
/// ts, item?, iteration?}], next, more}`. 404 for a node the execution's workflow does not have,
/// or an item or iteration the node did not run.
pub async fn logs(
    State(app): State<AppState>,
    Segment(id): Segment,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    if q.node.is_none() && (q.item.is_some() || q.iteration.is_some()) {
        return Err(ApiError::bad_request(
            "item and iteration are those of a node: give node too",
        ));
    }
    if q.item.is_some() && q.iteration.is_some() {
        return Err(ApiError::bad_request(
            "a node has items (for_each) or iterations (repeat): give one of them",
        ));
    }
    if q.node.as_deref() == Some("") {
        return Err(ApiError::bad_request("node: empty (give a node id)"));
    }
    let store = app.store.clone();
    blocking(move || {
        let store = store.lock();
        let id = store.resolve_id(&id)?;
        let e = store.execution(&id)?;
        if let Some(node) = q.node.as_deref() {
            let planned = flowrun_app::views::plan_json(&store, &e)
                .is_none_or(|plan| flowrun_app::views::plan_node_ids(&plan).contains(&node));
            if !planned {
                return Err(ApiError::unknown_node(node, &id));
            }
            if let Some(part) = flowrun_events::Part::from_fields(q.item, q.iteration) {
                if let Some(not_run) = flowrun_app::views::part_not_run(&store, &id, node, part)? {
                    return Err(ApiError::unknown_part(not_run));
                }
            }
        }
        let (page, more) = store.log_page(
            &id,
            q.after,
            q.node.as_deref(),
            (q.item, q.iteration),
            flowrun_app::views::LOG_PAGE_BYTES,
        )?;
        let next = page.last().map_or(q.after, |ev| ev.seq);
        let lines: Vec<Value> = page
            .iter()
            .map(|ev| flowrun_app::views::log_json(&id, ev))
            .collect();
        Ok(Json(json!({
            "execution_id": id,
            "status": e.status,
            "logs": lines,
            "next": next,
            "more": more,
        })))
    })
    .await
}
