//! Saved workflows: the files of `--workflows DIR`.

use super::error::{ApiError, blocking};
use crate::AppState;
use crate::workflows;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

/// `GET /api/workflows`.
pub async fn list(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
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

pub(crate) async fn find_workflow(app: &AppState, id: &str) -> Result<workflows::Entry, ApiError> {
    let dir = app.workflows_dir.clone();
    let id = id.to_string();
    blocking(move || {
        if dir.is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no workflow '{id}': the server has no workflows directory (it was started without one)"),
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
pub async fn get(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = find_workflow(&app, &id).await?;
    Ok(Json(workflows::describe(&entry, true)))
}
