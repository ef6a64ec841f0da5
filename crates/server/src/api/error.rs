//! Errors as the API answers them: `{"error": CODE, "message": TEXT, ...}` with the status and
//! the details an editor can show (validation diagnostics with file, line, node and field;
//! unbound connections; …). The only place that maps flowrun's typed errors to HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowrun_app::queue::SubmitError;
use flowrun_app::runner::{AgainError, RunError};
use flowrun_codegen::Diagnostics;
use flowrun_store::StoreError;
use serde_json::{Value, json};

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

    pub(crate) fn with(mut self, key: &str, value: Value) -> ApiError {
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
        RunError::Input(flowrun_app::inputs::InputError::Invalid(lines)) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
                .with("diagnostics", input_diagnostics(&lines))
        }
        RunError::Input(flowrun_app::inputs::InputError::Schema(m)) => ApiError::new(
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

pub(crate) fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ),
        SubmitError::Run(e) => run_error(e),
    }
}

pub(crate) fn again_error(e: AgainError) -> ApiError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
