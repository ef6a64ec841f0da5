//! The JSON endpoints (see `docs/api.md`).
//!
//! Errors are JSON too: `{"error": CODE, "message": TEXT, ...}` with the details an editor can
//! show (validation diagnostics with file, line, node and field; unbound connections; …).

use super::AppState;
use super::queue::{Stopped, SubmitError};
use super::workflows;
use crate::events::ExecStatus;
use crate::runner::{self, AgainError, AgainSource, RunError};
use crate::store::{HistoryFilter, StoreError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowrun_codegen::{Diagnostics, Source};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;

/// An error answer: status and JSON body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({"error": code, "message": message.into()}),
        }
    }

    fn with(mut self, key: &str, value: Value) -> ApiError {
        self.body[key] = value;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// `422` with `flowrun validate`'s messages, each also as structured fields.
    pub fn invalid(d: &Diagnostics) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_workflow",
            d.to_string(),
        )
        .with("diagnostics", json!(d.0))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            StoreError::Ambiguous { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "ambiguous_id", e.to_string())
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
        }
    }
}

/// Input errors as structured diagnostics: `  field 'a.b': message` → field `a.b`.
fn input_diagnostics(lines: &[String]) -> Value {
    let list: Vec<Value> = lines
        .iter()
        .map(|l| {
            let l = l.trim();
            match l
                .strip_prefix("field '")
                .and_then(|rest| rest.split_once("': "))
            {
                Some((field, msg)) => json!({"field": field, "message": msg}),
                None => json!({"field": null, "message": l.strip_prefix("input: ").unwrap_or(l)}),
            }
        })
        .collect();
    Value::Array(list)
}

/// Maps why a run could not start to a status: 422 invalid, 409 unbound, 503/500 environment.
pub fn run_error(e: RunError) -> ApiError {
    let message = e.to_string();
    match e {
        RunError::Invalid(d) => ApiError::invalid(&d),
        RunError::Input(crate::inputs::InputError::Invalid(lines)) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
                .with("diagnostics", input_diagnostics(&lines))
        }
        RunError::Input(crate::inputs::InputError::Schema(m)) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_workflow",
            message,
        )
        .with(
            "diagnostics",
            json!([{"field": "inputs", "message": format!("not a valid JSON Schema: {m}")}]),
        ),
        RunError::Usage(_) => ApiError::bad_request(message),
        RunError::Unbound(list) => {
            let unbound: Vec<Value> = list
                .iter()
                .map(|u| json!({"connection": u.connection, "env": u.env, "nodes": u.nodes}))
                .collect();
            ApiError::new(StatusCode::CONFLICT, "unbound_connections", message)
                .with("unbound", Value::Array(unbound))
        }
        RunError::Python(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "python_unavailable",
            message,
        ),
        RunError::MissingPackages(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "missing_packages", message)
        }
        other => match other.exit_code() {
            2 => ApiError::bad_request(message),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "environment", message),
        },
    }
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ),
        SubmitError::Run(e) => run_error(e),
    }
}

fn again_error(e: AgainError) -> ApiError {
    let message = e.to_string();
    match e {
        AgainError::Store(s) => s.into(),
        AgainError::NotFinished { status, .. } => {
            ApiError::new(StatusCode::CONFLICT, "not_finished", message)
                .with("status", json!(status))
        }
        AgainError::MissingSnapshot(_) => ApiError::internal(message),
        AgainError::Invalid(d) => ApiError::invalid(&d),
        AgainError::TriggerTruncated { .. } => ApiError::bad_request(message),
    }
}

/// Runs blocking work (store, files, Python discovery) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("internal task failed: {e}")))?
}

/// A JSON body; an empty one is `T::default()`.
fn parse_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    max: usize,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {max} bytes (--max-body-bytes)"),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {r}"))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid: {e}")))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    #[serde(default)]
    wait: Option<String>,
}

impl WaitQuery {
    fn wait(&self) -> Result<bool, ApiError> {
        match self.wait.as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "wait={other}: expected true or false"
            ))),
        }
    }
}

/// `POST …/executions` body.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The whole definition (an editor's unsaved state).
    #[serde(default)]
    workflow: Option<Value>,
    /// Trigger data (default `{}`); the workflow's input schema applies.
    #[serde(default)]
    trigger: Option<Value>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    mode: Option<String>,
}

/// `POST …/rerun` and `…/resume` body.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct AgainBody {
    /// A changed definition to run instead of the one the execution ran.
    #[serde(default)]
    workflow: Option<Value>,
    /// Trigger data instead of the execution's.
    #[serde(default)]
    trigger: Option<Value>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn mode(m: Option<String>) -> Result<String, ApiError> {
    match m.as_deref() {
        None | Some("test") => Ok("test".into()),
        Some(other) => Err(ApiError::bad_request(format!(
            "mode '{other}' is not supported; flowrun runs test executions (mode \"test\")"
        ))),
    }
}

/// Waits for an execution to end (at most `max`), then returns whether it ended.
async fn wait_final(app: &AppState, id: &str, max: Option<Duration>) -> Result<bool, ApiError> {
    let deadline = max.map(|m| tokio::time::Instant::now() + m);
    if let Some(live) = app.executions.live(id) {
        let fut = super::sse::wait_done(live.done());
        match deadline {
            Some(d) => return Ok(tokio::time::timeout_at(d, fut).await.is_ok()),
            None => {
                let _ = fut.await;
                return Ok(true);
            }
        }
    }
    loop {
        let store = app.store.clone();
        let idc = id.to_string();
        let status =
            blocking(move || Ok(store.lock().expect("store lock").execution(&idc)?.status)).await?;
        if status.is_final() {
            return Ok(true);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn record(app: &AppState, id: &str) -> Result<Value, ApiError> {
    let store = app.store.clone();
    let id = id.to_string();
    blocking(move || {
        let store = store.lock().expect("store lock");
        let id = store.resolve_id(&id)?;
        crate::cli::inspect::record_json(&store, &id).map_err(|e| ApiError::internal(e.message))
    })
    .await
}

async fn resolve(app: &AppState, id: &str) -> Result<String, ApiError> {
    let store = app.store.clone();
    let id = id.to_string();
    blocking(move || Ok(store.lock().expect("store lock").resolve_id(&id)?)).await
}

/// 202 with where to look, or with `?wait=true` 200 and the finished record.
async fn started(
    app: &AppState,
    id: String,
    status: ExecStatus,
    wait: bool,
    extra: Option<Value>,
) -> Result<Response, ApiError> {
    if wait {
        wait_final(app, &id, None).await?;
        return Ok(Json(record(app, &id).await?).into_response());
    }
    let mut body = json!({
        "id": id,
        "status": status,
        "url": format!("/api/executions/{id}"),
        "events_url": format!("/api/executions/{id}/events"),
    });
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            body[k.as_str()] = v;
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/executions/{id}"))],
        Json(body),
    )
        .into_response())
}

/// Prepares and submits one execution of `source`.
async fn start(
    app: &AppState,
    source: Source,
    body: StartBody,
    wait: bool,
) -> Result<Response, ApiError> {
    let mut options = app.options.clone();
    options.timeout_ms = body.timeout_ms;
    options.mode = mode(body.mode)?;
    let trigger = body.trigger.unwrap_or_else(|| json!({}));
    let executions = app.executions.clone();
    let (id, status) = blocking(move || {
        let prepared = runner::prepare(&source, trigger, options).map_err(run_error)?;
        executions.submit(prepared).map_err(submit_error)
    })
    .await?;
    started(app, id, status, wait, None).await
}

/// `GET /api`: who is here.
pub async fn info(State(app): State<AppState>) -> Json<Value> {
    let (running, queued) = app.executions.counts();
    Json(json!({
        "name": "flowrun",
        "version": env!("CARGO_PKG_VERSION"),
        "workflows_dir": app.workflows_dir.as_ref().map(|d| d.display().to_string()),
        "max_concurrent": app.executions.max_concurrent(),
        "running": running,
        "queued": queued,
    }))
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// A known path with another method: JSON like every other error.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method (see docs/api.md)",
    )
}

/// `GET /api/workflows`.
pub async fn list_workflows(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let dir = app.workflows_dir.clone();
    blocking(move || {
        let entries = workflows::scan(dir.as_deref()).map_err(|e| {
            ApiError::internal(format!(
                "cannot read {}: {e}",
                dir.as_deref().unwrap_or(std::path::Path::new("")).display()
            ))
        })?;
        let list: Vec<Value> = entries
            .iter()
            .map(|e| workflows::describe(e, false))
            .collect();
        Ok(Json(json!({
            "directory": dir.as_ref().map(|d| d.display().to_string()),
            "workflows": list,
        })))
    })
    .await
}

async fn find_workflow(app: &AppState, id: &str) -> Result<workflows::Entry, ApiError> {
    let dir = app.workflows_dir.clone();
    let id = id.to_string();
    blocking(move || {
        if dir.is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no workflow '{id}': the server was started without --workflows DIR"),
            ));
        }
        workflows::find(dir.as_deref(), &id)
            .map_err(|e| ApiError::internal(format!("cannot read the workflows directory: {e}")))?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no workflow '{id}' in the workflows directory"),
                )
            })
    })
    .await
}

/// `GET /api/workflows/{id}`.
pub async fn get_workflow(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = find_workflow(&app, &id).await?;
    Ok(Json(workflows::describe(&entry, true)))
}

/// `POST /api/workflows/{id}/executions`.
pub async fn start_saved(
    State(app): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let wait = query(q)?.wait()?;
    let body: StartBody = parse_body(body, app.security.max_body_bytes)?;
    let entry = find_workflow(&app, &id).await?;
    let source = match body.workflow.clone() {
        Some(def) => {
            let source = flowrun_codegen::source::from_value(def, "<request>")
                .map_err(|d| ApiError::invalid(&d))?;
            if source.workflow.id != id {
                return Err(ApiError::bad_request(format!(
                    "the definition in the body has id '{}', the URL names '{id}'",
                    source.workflow.id
                )));
            }
            source
        }
        None => {
            if !entry.is_valid() {
                return Err(ApiError::invalid(&entry.diagnostics()));
            }
            entry.source.expect("a valid entry has its source")
        }
    };
    start(&app, source, body, wait).await
}

/// `POST /api/executions`: runs the definition in the body.
pub async fn start_unsaved(
    State(app): State<AppState>,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let wait = query(q)?.wait()?;
    let mut body: StartBody = parse_body(body, app.security.max_body_bytes)?;
    let Some(def) = body.workflow.take() else {
        return Err(ApiError::bad_request(
            "the body needs \"workflow\": the definition to run (for a saved workflow use POST /api/workflows/{id}/executions)",
        ));
    };
    let source =
        flowrun_codegen::source::from_value(def, "<request>").map_err(|d| ApiError::invalid(&d))?;
    start(&app, source, body, wait).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    workflow: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
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
pub async fn list_executions(
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
    let filter = HistoryFilter {
        workflow: q.workflow.filter(|w| !w.is_empty()),
        status,
        before,
        limit: limit + 1,
        ..HistoryFilter::default()
    };
    let store = app.store.clone();
    blocking(move || {
        let mut rows = store.lock().expect("store lock").history(&filter)?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more {
            rows.last().map(|e| encode_cursor(e.started_at, &e.id))
        } else {
            None
        };
        let list: Vec<Value> = rows.iter().map(crate::cli::inspect::summary_json).collect();
        Ok(Json(json!({"executions": list, "next_cursor": next})))
    })
    .await
}

/// `GET /api/executions/{id}`: the record `flowrun show --json` prints.
pub async fn get_execution(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(record(&app, &id).await?))
}

/// `POST /api/executions/{id}/stop[?wait=true]`.
pub async fn stop(
    State(app): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let wait = query(q)?.wait()?;
    let id = resolve(&app, &id).await?;
    let executions = app.executions.clone();
    let idc = id.clone();
    let stopped = blocking(move || Ok(executions.stop(&idc)?)).await?;
    match stopped {
        Stopped::AlreadyEnded(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_ended",
            format!("execution {id} already ended: {status}"),
        )
        .with("status", json!(status))),
        Stopped::Dequeued => Ok(Json(record(&app, &id).await?).into_response()),
        Stopped::Stopping | Stopped::Requested => {
            // The runner takes at most its kill grace period after it sees the request.
            let max = Duration::from_millis(app.options.kill_grace_ms) + Duration::from_secs(10);
            if wait && wait_final(&app, &id, Some(max)).await? {
                return Ok(Json(record(&app, &id).await?).into_response());
            }
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"id": id, "status": "stopping"})),
            )
                .into_response())
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
    let body: AgainBody = parse_body(body, app.security.max_body_bytes)?;
    let mut options = app.options.clone();
    options.timeout_ms = body.timeout_ms;
    let store = app.store.clone();
    let executions = app.executions.clone();
    let (id, status, parent, notes) = blocking(move || {
        let source = match body.workflow {
            Some(v) => AgainSource::Definition(v),
            None => AgainSource::Snapshot,
        };
        let plan = {
            let store = store.lock().expect("store lock");
            runner::plan_again(&store, &id, source, body.trigger, options, resume)
                .map_err(again_error)?
        };
        let prepared =
            runner::prepare(&plan.source, plan.trigger, plan.options).map_err(run_error)?;
        let (id, status) = executions.submit(prepared).map_err(submit_error)?;
        Ok((id, status, plan.previous_id, plan.notes))
    })
    .await?;
    let extra = json!({
        "parent_id": parent,
        "relation": if resume { "resume" } else { "rerun" },
        "notes": notes,
    });
    started(&app, id, status, wait, Some(extra)).await
}

/// `POST /api/executions/{id}/rerun`: the same definition and trigger data again.
pub async fn rerun(
    State(app): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    again(app, id, q, body, false).await
}

/// `POST /api/executions/{id}/resume`: again from the failed node, reusing earlier outputs.
pub async fn resume(
    State(app): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    again(app, id, q, body, true).await
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

    #[test]
    fn input_errors_are_structured() {
        let v = input_diagnostics(&[
            "  field 'query': 5 is not of type \"string\"".into(),
            "  input: \"query\" is a required property".into(),
        ]);
        assert_eq!(v[0]["field"], "query");
        assert_eq!(v[1]["field"], Value::Null);
        assert_eq!(v[1]["message"], "\"query\" is a required property");
    }
}
