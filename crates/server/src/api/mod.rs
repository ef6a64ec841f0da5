//! The JSON endpoints (see `docs/api.md`): [`executions`] starts, lists, stops and re-runs
//! executions, [`workflows`] lists the saved ones; [`error`] is how every failure is answered.
//!
//! Handlers do their blocking work (store, files, Python discovery) through [`blocking`].

pub mod error;
pub mod executions;
pub mod logs;
pub mod request;
pub mod validate;
pub mod workflows;

use crate::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use error::ApiError;
use flowrun_events::ExecStatus;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;

pub use error::blocking;

/// The one segment a route names (`{id}`): as `Path<String>`, but refused as every API error
/// is, in JSON (a segment that is not UTF-8 got axum's plain-text 400).
pub(crate) struct Segment(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(s)| Segment(s))
            .map_err(|e| ApiError::bad_request(format!("the path: {}", e.body_text())))
    }
}

/// A JSON body; an empty one is `T::default()`.
pub(crate) fn parse_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    max: usize,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(max)
        } else {
            ApiError::bad_request(format!("cannot read the request body: {r}"))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not valid: {}",
            flowrun_codegen::in_json_terms(&e.to_string())
        ))
    })
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| {
        let text = e.body_text();
        let why = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        ApiError::bad_request(format!("the query string is not valid: {why}"))
    })
}

/// The extractor of an endpoint that takes no query: anything in one is refused (400), as the
/// endpoints that take some refuse what they do not take — `DELETE …?dry_run=true` deletes
/// nothing.
pub struct NoQuery;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        query(Query::<NoFields>::from_request_parts(parts, state).await).map(|_| NoQuery)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    #[serde(default)]
    wait: Option<String>,
}

impl WaitQuery {
    fn wait(&self) -> Result<bool, ApiError> {
        flag("wait", self.wait.as_deref())
    }
}

/// A query flag: absent, `false` or `0` is false; `true`, `1` or present without a value
/// (`?wait`) is true.
pub(crate) fn flag(name: &str, v: Option<&str>) -> Result<bool, ApiError> {
    match v {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}={other}: expected true or false"
        ))),
    }
}

/// Waits for an execution to end (at most `max`), then returns whether it ended.
pub(crate) async fn wait_final(
    app: &AppState,
    id: &str,
    max: Option<Duration>,
) -> Result<bool, ApiError> {
    let deadline = max.map(|m| tokio::time::Instant::now() + m);
    if let Some(live) = app.executions.live(id) {
        let fut = flowrun_app::queue::wait_done(live.done());
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
        let status = blocking(move || Ok(store.lock().execution(&idc)?.status)).await?;
        if status.is_final() {
            return Ok(true);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An editor's definition from a request body, whose `id` must be the one in the URL: read as
/// that workflow's file would be (`workflows::placed`).
pub(crate) fn definition_for(
    app: &AppState,
    def: Value,
    id: &str,
) -> Result<flowrun_codegen::Source, ApiError> {
    let source = unsaved(app, def)?;
    if source.workflow.id != id {
        return Err(ApiError::bad_request(format!(
            "the definition in the body has id '{}', the URL names '{id}'",
            source.workflow.id
        )));
    }
    Ok(source)
}

/// An editor's definition from a request body, read as if saved (`workflows::placed`).
pub(crate) fn unsaved(app: &AppState, def: Value) -> Result<flowrun_codegen::Source, ApiError> {
    let source =
        flowrun_codegen::source::from_value(def, "<request>").map_err(|d| ApiError::invalid(&d))?;
    Ok(crate::workflows::placed(
        app.workflows_dir.as_deref(),
        source,
    ))
}

pub(crate) async fn record(app: &AppState, id: &str) -> Result<Value, ApiError> {
    let store = app.store.clone();
    let id = id.to_string();
    blocking(move || {
        let store = store.lock();
        let id = store.resolve_id(&id)?;
        Ok(flowrun_app::views::record_json(&store, &id)?)
    })
    .await
}

pub(crate) async fn resolve(app: &AppState, id: &str) -> Result<String, ApiError> {
    let store = app.store.clone();
    let id = id.to_string();
    blocking(move || Ok(store.lock().resolve_id(&id)?)).await
}

/// 202 with where to look, or with `?wait=true` 200 and the finished record.
pub(crate) async fn started(
    app: &AppState,
    id: String,
    status: ExecStatus,
    wait: bool,
    extra: Option<Value>,
) -> Result<Response, ApiError> {
    if wait {
        // Made by the execution's task as it ends; the store is read only when it was too late
        // to ask.
        let live = app.executions.live(&id);
        let mut done = match live {
            Some(live) => live.final_record().await,
            None => None,
        };
        if done.is_none() {
            wait_final(app, &id, None).await?;
            done = Some(record(app, &id).await?);
        }
        let mut done = done.unwrap_or_default();
        // What a rerun or resume says besides (`notes`), as its 202 answer would.
        if let (Some(Value::Object(extra)), Value::Object(record)) = (extra, &mut done) {
            for (k, v) in extra {
                record.entry(k).or_insert(v);
            }
        }
        return Ok(Json(done).into_response());
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

/// `GET /api`: who is here.
pub async fn info(State(app): State<AppState>, _: NoQuery) -> Json<Value> {
    let (running, queued) = app.executions.counts();
    Json(json!({
        "name": "flowrun",
        "version": env!("CARGO_PKG_VERSION"),
        "workflows_dir": app.workflows_dir.as_ref().map(|d| d.display().to_string()),
        "max_concurrent": app.executions.max_concurrent(),
        "running": running,
        "queued": queued,
        // What this server supports, so an editor can show only what works.
        "features": {
            "validate": true,
            "save_workflows": app.workflows_dir.is_some(),
            "delete_executions": true,
            "server_events": true,
            "stream": true,
            "env": true,
            "secrets": true,
            "cwd": true,
            "max_parallel": true,
            "pause": true,
            "break_before": true,
            "max_cost_usd": true,
            "agents": true,
            "logs": true,
        },
    }))
}

/// The OpenAPI description of this API (`docs/api.md` is its prose).
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /api/openapi.json`.
pub async fn openapi(_: NoQuery) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI.replace("__VERSION__", env!("CARGO_PKG_VERSION")),
    )
        .into_response()
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
