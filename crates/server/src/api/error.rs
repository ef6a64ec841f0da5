//! Errors as the API answers them: `{"error": CODE, "message": TEXT, ...}` with the status and
//! the details an editor can show (validation diagnostics with file, line, node and field;
//! unbound connections; …). The only place that maps flowrun's typed errors to HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowrun_app::again::AgainError;
use flowrun_app::inputs::{InputError, InputProblem};
use flowrun_app::queue::SubmitError;
use flowrun_app::runner::{RunError, pip_install_command};
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

    /// `413`: the body is over the server's limit.
    pub fn too_large(max: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the server's limit of {max} bytes"),
        )
        .with("max_body_bytes", json!(max))
    }

    /// `409`: the execution is queued or running.
    pub fn not_finished(id: &str, status: flowrun_events::ExecStatus) -> ApiError {
        ApiError::in_state(
            "not_finished",
            format!("execution {id} is {status}; stop it first"),
            status,
        )
    }

    /// `409`: the execution is a sub-workflow's, part of the record of `parent`, which is
    /// queued or running.
    pub fn part_of_unfinished(
        id: &str,
        parent: &str,
        status: flowrun_events::ExecStatus,
    ) -> ApiError {
        ApiError::in_state(
            "not_finished",
            format!(
                "execution {id} is part of execution {parent}, which is {status}: it can be deleted once that has ended (with it, or on its own)"
            ),
            status,
        )
        .with("parent", json!(parent))
    }

    /// `409`: the execution's status (`status` in the body) does not allow what was asked.
    pub fn in_state(
        error: &'static str,
        message: String,
        status: flowrun_events::ExecStatus,
    ) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, error, message).with("status", json!(status))
    }

    /// `409`: the server has no workflows directory to write to.
    pub fn no_workflows_dir() -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_workflows_dir",
            "the server has no workflows directory (it was started without one)",
        )
    }

    /// `404`: a node the execution's workflow does not have.
    pub fn unknown_node(node: &str, id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_node",
            format!("execution {id}'s workflow has no node '{node}'"),
        )
    }

    /// `404`: an item or iteration the node did not run (`views::part_not_run`'s message).
    pub fn unknown_part(message: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_part", message)
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

/// Input errors as structured diagnostics: `{field, message}` each.
fn input_diagnostics(list: &[InputProblem]) -> Value {
    list.iter()
        .map(|p| json!({"field": p.field, "message": p.message}))
        .collect()
}

/// Maps why a run could not start to a status: 422 invalid, 409 unbound, 503/500 environment.
/// Messages say what an API client can do about it.
pub fn run_error(e: RunError) -> ApiError {
    let message = e.to_string();
    match e {
        RunError::Invalid(d) => ApiError::invalid(&d),
        RunError::Input(InputError::Invalid(list)) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
                .with("diagnostics", input_diagnostics(&list))
        }
        RunError::Input(InputError::Schema(m)) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_workflow",
            message,
        )
        .with(
            "diagnostics",
            json!([{"field": "inputs", "message": format!("not a valid JSON Schema: {m}")}]),
        ),
        RunError::UnknownPin { .. } | RunError::UnknownBreakpoint { .. } => {
            ApiError::bad_request(message)
        }
        RunError::Unbound(list) => {
            let unbound: Vec<Value> = list
                .iter()
                .map(|u| json!({"connection": u.connection, "env": u.env, "nodes": u.nodes}))
                .collect();
            let message = format!(
                "{message}\ngive {} for this run in the request's `secrets` ({{\"VAR\": \"value\"}}), or set {} in the environment that `flowrun serve` runs in and restart it",
                if list.len() == 1 {
                    "its value"
                } else {
                    "their values"
                },
                if list.len() == 1 { "it" } else { "them" }
            );
            ApiError::new(StatusCode::CONFLICT, "unbound_connections", message)
                .with("unbound", Value::Array(unbound))
        }
        RunError::Python(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "python_unavailable",
            message,
        ),
        RunError::MissingPackages(list) => {
            let message = format!(
                "{message}\ninstall {} on the server's machine: `flowrun doctor --fix FILE` (a managed environment) or `{}`",
                if list.len() == 1 { "it" } else { "them" },
                pip_install_command(&list)
            );
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "missing_packages", message)
        }
        RunError::MissingAgents(list) => {
            let missing: Vec<Value> = list
                .iter()
                .map(|m| {
                    json!({"agent": m.agent, "command": m.command, "nodes": m.nodes,
                           "npm_package": m.npm_package})
                })
                .collect();
            let message = format!(
                "{message}\ninstall {} on the server's machine, on the PATH that `flowrun serve` runs with (a running server keeps the PATH it started with)",
                if list.len() == 1 { "it" } else { "them" }
            );
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "agent_cli_missing",
                message,
            )
            .with("missing", Value::Array(missing))
        }
        RunError::Environment(_) | RunError::Store(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "environment", message)
        }
    }
}

pub(crate) fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ),
        SubmitError::QueueFull { waiting, bytes } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            format!(
                "{waiting} executions wait to start already, holding an estimated {} MiB: try again once some have run (at most {} wait, holding at most {} MiB)",
                bytes >> 20,
                flowrun_app::queue::MAX_QUEUED,
                flowrun_app::queue::MAX_QUEUED_BYTES >> 20
            ),
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
        AgainError::TriggerTruncated { .. } | AgainError::OtherWorkflow { .. } => {
            ApiError::bad_request(message)
        }
        AgainError::TestCase(_) => ApiError::new(StatusCode::CONFLICT, "test_case", message),
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
            InputProblem {
                field: Some("query".into()),
                message: "5 is not of type \"string\"".into(),
            },
            InputProblem {
                field: None,
                message: "\"query\" is a required property".into(),
            },
        ]);
        assert_eq!(v[0]["field"], "query");
        assert_eq!(v[1]["field"], Value::Null);
        assert_eq!(v[1]["message"], "\"query\" is a required property");
    }

    #[test]
    fn every_run_error_has_a_status() {
        let unbound = run_error(RunError::Unbound(vec![flowrun_app::runner::Unbound {
            connection: "groq".into(),
            env: "GROQ_API_KEY".into(),
            nodes: vec!["ask".into()],
        }]));
        assert_eq!(unbound.status, StatusCode::CONFLICT);
        let text = unbound.body["message"].as_str().unwrap();
        assert!(
            text.contains("GROQ_API_KEY") && !text.contains("--env"),
            "{text}"
        );
        let pin = run_error(RunError::UnknownPin {
            node: "x".into(),
            nodes: vec!["a".into()],
        });
        assert_eq!(pin.status, StatusCode::BAD_REQUEST);
        let agents = run_error(RunError::MissingAgents(vec![
            flowrun_app::agents::NeededAgent {
                agent: "codex".into(),
                name: "Codex CLI".into(),
                command: "codex".into(),
                npm_package: "@openai/codex".into(),
                nodes: vec!["fix".into()],
                path: None,
            },
        ]));
        assert_eq!(agents.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(agents.body["error"], "agent_cli_missing");
        assert_eq!(agents.body["missing"][0]["npm_package"], "@openai/codex");
        let text = agents.body["message"].as_str().unwrap();
        assert!(
            text.contains("codex")
                && text.contains("npm install -g @openai/codex")
                && !text.contains("--env"),
            "{text}"
        );
        let env = run_error(RunError::Environment("disk full".into()));
        assert_eq!(env.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
