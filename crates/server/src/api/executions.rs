//! Executions: start one (saved or unsaved definition), list, get, stop, re-run and resume.

use super::Segment;
use super::error::{ApiError, again_error, blocking, run_error, submit_error};
use super::request::RunBody;
use super::{WaitQuery, parse_body, query, record, resolve, started, wait_final};
use crate::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowrun_app::again::{self, AgainSource};
use flowrun_app::queue::{Paused, Stopped};
use flowrun_app::runner;
use flowrun_codegen::Source;
use flowrun_events::{ExecStatus, Relation};
use flowrun_store::HistoryFilter;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Prepares and submits one execution of `source`.
async fn start(
    app: &AppState,
    source: Source,
    body: RunBody,
    wait: bool,
) -> Result<Response, ApiError> {
    let app2 = app.clone();
    let (id, status) = blocking(move || submit(&app2, source, body)).await?;
    started(app, id, status, wait, None).await
}

/// [`start`]'s part on a blocking thread: prepares (files, the script) and submits (the row).
fn submit(app: &AppState, source: Source, body: RunBody) -> Result<(String, ExecStatus), ApiError> {
    let options = body.options(&app.options, &source.workflow)?;
    let trigger = body.trigger.unwrap_or_else(|| json!({}));
    let prepared = runner::prepare(&source, trigger, options).map_err(run_error)?;
    app.executions.submit(prepared).map_err(submit_error)
}

/// `POST /api/workflows/{id}/executions`.
pub async fn start_saved(
    State(app): State<AppState>,
    Segment(id): Segment,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let wait = query(q)?.wait()?;
    let mut body: RunBody = parse_body(body, app.security.max_body_bytes)?;
    // Found, prepared and submitted on one blocking thread: each hand-over between threads is a
    // wake-up on the way of the answer.
    let app2 = app.clone();
    let (id, status) = blocking(move || {
        let entry = super::workflows::find_workflow_now(app2.workflows_dir.as_deref(), &id)?;
        let source = match body.workflow.take() {
            Some(def) => super::definition_for(&app2, def, &id)?,
            None => {
                if !entry.is_valid() {
                    return Err(ApiError::invalid(&entry.diagnostics()));
                }
                entry.source.expect("a valid entry has its source")
            }
        };
        submit(&app2, source, body)
    })
    .await?;
    started(&app, id, status, wait, None).await
}

/// `POST /api/executions`: runs the definition in the body.
pub async fn start_unsaved(
    State(app): State<AppState>,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let wait = query(q)?.wait()?;
    let mut body: RunBody = parse_body(body, app.security.max_body_bytes)?;
    let Some(def) = body.workflow.take() else {
        return Err(ApiError::bad_request(
            "the body needs \"workflow\": the definition to run (for a saved workflow use POST /api/workflows/{id}/executions)",
        ));
    };
    let source = super::unsaved(&app, def)?;
    start(&app, source, body, wait).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    workflow: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    /// Only ids starting with this (hex digits).
    id: Option<String>,
    /// Started at or after / before (ms since the epoch).
    since: Option<String>,
    until: Option<String>,
    /// `true`: leave out sub-workflow executions (they are in their parent's record).
    top_level: Option<String>,
    /// `true`: the executions of `flowrun test` suites too (left out, as `flowrun history` leaves
    /// them out without `--all`: a CI run's cases would bury an editor's runs).
    test_suites: Option<String>,
}

fn ms_param(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse::<i64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "{name}={s}: expected milliseconds since the Unix epoch"
            ))
        }),
    }
}

/// The opaque cursor: `started_at:id` as hex.
fn encode_cursor(started_at: i64, id: &str) -> String {
    format!("{started_at}:{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    if c.len() % 2 != 0 || c.len() > 256 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..c.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(c.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (t, id) = text.split_once(':')?;
    Some((t.parse().ok()?, id.to_string()))
}

/// `GET /api/executions?workflow=&status=&limit=&cursor=`.
pub async fn list(
    State(app): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(ExecStatus::parse(s).ok_or_else(|| {
            let all: Vec<&str> = ExecStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!("unknown status '{s}'; one of: {}", all.join(", ")))
        })?),
        None => None,
    };
    let limit = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit={l}: expected 1 to 500")))?,
        None => 50,
    };
    let before = match q.cursor.as_deref().filter(|s| !s.is_empty()) {
        Some(c) => Some(
            decode_cursor(c)
                .ok_or_else(|| ApiError::bad_request("cursor: not a cursor this server gave"))?,
        ),
        None => None,
    };
    let id_prefix = q.id.filter(|s| !s.is_empty());
    if let Some(p) = &id_prefix {
        if p.len() > 16 || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request(format!(
                "id={p}: execution ids are up to 16 hex digits"
            )));
        }
    }
    let filter = HistoryFilter {
        workflow: q.workflow.filter(|w| !w.is_empty()),
        status,
        before,
        since: ms_param("since", q.since.as_deref())?,
        until: ms_param("until", q.until.as_deref())?,
        id_prefix: id_prefix.map(|p| p.to_ascii_lowercase()),
        limit: limit + 1,
        exclude_modes: if super::flag("test_suites", q.test_suites.as_deref())? {
            Vec::new()
        } else {
            vec![flowrun_app::testing::MODE.to_string()]
        },
        top_level: super::flag("top_level", q.top_level.as_deref())?,
    };
    let store = app.store.clone();
    blocking(move || {
        let store = store.lock();
        let total = store.history_count(&filter)?;
        let mut rows = store.history(&filter)?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more {
            rows.last().map(|e| encode_cursor(e.started_at, &e.id))
        } else {
            None
        };
        let list: Vec<Value> = rows.iter().map(flowrun_app::views::summary_json).collect();
        Ok(Json(
            json!({"executions": list, "next_cursor": next, "total": total}),
        ))
    })
    .await
}

/// `GET /api/executions/{id}`: the record `flowrun show --json` prints.
pub async fn get(
    State(app): State<AppState>,
    Segment(id): Segment,
    _: super::NoQuery,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(record(&app, &id).await?))
}

/// `POST /api/executions/{id}/stop[?wait=true]`. A body (an editor may send `{}`) means nothing
/// (read all the same, as every request's is: `security::read_body_first`).
pub async fn stop(
    State(app): State<AppState>,
    Segment(id): Segment,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let wait = query(q)?.wait()?;
    let id = resolve(&app, &id).await?;
    let executions = app.executions.clone();
    let idc = id.clone();
    let stopped = blocking(move || Ok(executions.stop(&idc)?)).await?;
    match stopped {
        Stopped::AlreadyEnded(status) => Err(ApiError::in_state(
            "already_ended",
            format!("execution {id} already ended: {status}"),
            status,
        )),
        Stopped::Dequeued => Ok(Json(record(&app, &id).await?).into_response()),
        Stopped::Stopping | Stopped::Requested => {
            // The runner takes at most its kill grace period after it sees the request.
            let max = Duration::from_millis(app.options.kill_grace_ms) + Duration::from_secs(10);
            asked(&app, id, wait, Some(max), "stopping").await
        }
    }
}

async fn again(
    app: AppState,
    id: String,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
    resume: bool,
) -> Result<Response, ApiError> {
    let wait = query(q)?.wait()?;
    let mut body: RunBody = parse_body(body, app.security.max_body_bytes)?;
    let base = app.options.clone();
    let store = app.store.clone();
    let executions = app.executions.clone();
    let app2 = app.clone();
    let (id, status, parent, notes) = blocking(move || {
        let source = match body.workflow.take() {
            Some(v) => AgainSource::Definition(Box::new(
                flowrun_codegen::source::from_value(v, "<request>")
                    .map_err(|d| ApiError::invalid(&d))?,
            )),
            None => AgainSource::Snapshot,
        };
        let trigger = body.trigger.take();
        let mut options = base.clone();
        options.timeout_ms = body.timeout_ms;
        let mut plan = {
            let store = store.lock();
            again::plan_again(&store, &id, source, trigger, options, resume).map_err(again_error)?
        };
        // Read as the first run was: an unsaved definition as if saved (`workflows::placed`).
        let (dir, id) = (
            app2.workflows_dir.as_deref(),
            plan.source.workflow.id.clone(),
        );
        plan.place_unsaved(|| crate::workflows::placement(dir, &id));
        // The request's fields on top of what the plan set (pins of a resume, the parent).
        let mut options = body.options(&plan.options, &plan.source.workflow)?;
        options.timeout_ms = body.timeout_ms.or(plan.options.timeout_ms);
        let prepared = runner::prepare(&plan.source, plan.trigger, options).map_err(run_error)?;
        let (id, status) = executions.submit(prepared).map_err(submit_error)?;
        Ok((id, status, plan.previous_id, plan.notes))
    })
    .await?;
    let extra = json!({
        "parent_id": parent,
        "relation": if resume { Relation::Resume } else { Relation::Rerun },
        "notes": notes,
    });
    started(&app, id, status, wait, Some(extra)).await
}

/// `POST /api/executions/{id}/rerun`: the same definition and trigger data again.
pub async fn rerun(
    State(app): State<AppState>,
    Segment(id): Segment,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    again(app, id, q, body, false).await
}

/// `POST /api/executions/{id}/resume`: again from the failed node, reusing earlier outputs.
pub async fn resume(
    State(app): State<AppState>,
    Segment(id): Segment,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    again(app, id, q, body, true).await
}

/// `DELETE /api/executions/{id}`: the execution, its nodes and events (not while it is queued
/// or running).
pub async fn delete(
    State(app): State<AppState>,
    Segment(id): Segment,
    _: super::NoQuery,
) -> Result<Json<Value>, ApiError> {
    let store = app.store.clone();
    let id = blocking(move || {
        let mut store = store.lock();
        let id = store.resolve_id(&id)?;
        let e = store.execution(&id)?;
        if !e.status.is_final() {
            return Err(ApiError::not_finished(&id, e.status));
        }
        if let Some((parent, status)) = store.unfinished_ancestor(&id)? {
            return Err(ApiError::part_of_unfinished(&id, &parent, status));
        }
        store.delete(std::slice::from_ref(&id))?;
        Ok(id)
    })
    .await?;
    app.feed.deleted(&id);
    Ok(Json(json!({"id": id, "deleted": true})))
}

/// `POST /api/executions/{id}/pause[?wait=true]`: the nodes running now finish, no new one
/// starts, and the execution ends `paused` (`…/resume` continues it). 202 `{"status":
/// "pausing"}`, or with `wait=true` the record once it has ended; 409 when it is not running.
pub async fn pause(
    State(app): State<AppState>,
    Segment(id): Segment,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let wait = query(q)?.wait()?;
    let id = resolve(&app, &id).await?;
    let executions = app.executions.clone();
    let idc = id.clone();
    let paused = blocking(move || Ok(executions.pause(&idc)?)).await?;
    match paused {
        Paused::NotRunning(status) => Err(ApiError::in_state(
            "not_running",
            format!("execution {id} is {status}, not running: there is nothing to pause"),
            status,
        )),
        Paused::Queued => Err(ApiError::in_state(
            "not_running",
            format!("execution {id} is still queued: nothing of it runs yet (stop it instead)"),
            ExecStatus::Queued,
        )),
        // Running nodes finish first: as long as the execution's own timeout at most.
        Paused::Pausing | Paused::Requested => asked(&app, id, wait, None, "pausing").await,
    }
}

/// The answer to a stop or pause that was passed on: with `wait`, the record once the
/// execution has ended (within `max`); else `202` `{"id", "status": <doing>}`.
async fn asked(
    app: &AppState,
    id: String,
    wait: bool,
    max: Option<Duration>,
    doing: &str,
) -> Result<Response, ApiError> {
    if wait && wait_final(app, &id, max).await? {
        return Ok(Json(record(app, &id).await?).into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": doing})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let c = encode_cursor(1_764_085_731_000, "5f0c9e2a4b7d1c38");
        assert_eq!(
            decode_cursor(&c),
            Some((1_764_085_731_000, "5f0c9e2a4b7d1c38".to_string()))
        );
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
    }
}
