//! Saved workflows: the files of `--workflows DIR`.

use super::Segment;
use super::error::{ApiError, blocking};
use crate::AppState;
use crate::workflows;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

/// `GET /api/workflows`.
pub async fn list(State(app): State<AppState>, _: super::NoQuery) -> Result<Json<Value>, ApiError> {
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
    blocking(move || find_workflow_now(dir.as_deref(), &id)).await
}

/// [`find_workflow`] on this thread (it reads files): for a caller on a blocking thread already.
pub(crate) fn find_workflow_now(
    dir: Option<&std::path::Path>,
    id: &str,
) -> Result<workflows::Entry, ApiError> {
    if dir.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no workflow '{id}': the server has no workflows directory (it was started without one)"
            ),
        ));
    }
    workflows::find(dir, id)
        .map_err(|e| ApiError::internal(format!("cannot read the workflows directory: {e}")))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no workflow '{id}' in the workflows directory"),
            )
        })
}

/// `GET /api/workflows/{id}`.
pub async fn get(
    State(app): State<AppState>,
    Segment(id): Segment,
    _: super::NoQuery,
) -> Result<Json<Value>, ApiError> {
    let entry = find_workflow(&app, &id).await?;
    Ok(Json(workflows::describe(&entry, true)))
}

/// `PUT /api/workflows/{id}` body: the definition to save.
#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    #[serde(default)]
    workflow: Option<Value>,
}

/// The entry, unless its file holds data that is not a workflow (found by the file's name: a
/// `package.json` is `package`): `409`, and the file is left alone.
fn not_other_data(entry: workflows::Entry) -> Result<workflows::Entry, ApiError> {
    if entry.source.is_some() || flowrun_codegen::may_be_workflow(&entry.file) {
        return Ok(entry);
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "not_a_workflow",
        format!(
            "{} holds data that is not a workflow (it has no `nodes`): flowrun neither replaces nor deletes it",
            entry.file.display()
        ),
    ))
}

/// `PUT /api/workflows/{id}`: validates the definition and writes it into the workflows
/// directory (the file that has this id, else `{id}.json`), atomically. `201` when new, `200`
/// when it replaced a file; the body is the workflow as `GET` gives it.
pub async fn put(
    State(app): State<AppState>,
    Segment(id): Segment,
    _: super::NoQuery,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let body: PutBody = super::parse_body(body, app.security.max_body_bytes)?;
    let Some(def) = body.workflow else {
        return Err(ApiError::bad_request(
            "the body needs \"workflow\": the definition to save",
        ));
    };
    let Some(dir) = app.workflows_dir.clone() else {
        return Err(ApiError::no_workflows_dir());
    };
    blocking(move || {
        let source = super::definition_for(&app, def, &id)?;
        let checked = workflows::check(std::path::Path::new("<request>"), source);
        if !checked.is_valid() {
            return Err(ApiError::invalid(&checked.diagnostics()));
        }
        let existing = workflows::find(Some(&dir), &id)
            .map_err(|e| ApiError::internal(format!("cannot read the workflows directory: {e}")))?;
        let (file, created) = match existing {
            Some(e) => (not_other_data(e)?.file, false),
            None => (dir.join(format!("{id}.json")), true),
        };
        if created && std::fs::symlink_metadata(&file).is_ok() {
            // `{id}.json` is there but holds another workflow's id (or is not a file): a save
            // under this id must not replace it.
            let other = workflows::load(&file).id;
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "file_exists",
                format!(
                    "{} exists and holds the workflow '{other}': save this one under its own id's file, or rename that one",
                    file.display()
                ),
            ));
        }
        let definition = &checked.source.as_ref().expect("valid").definition;
        let mut text = serde_json::to_string_pretty(definition).expect("JSON serializes");
        text.push('\n');
        flowrun_app::files::write_atomically(&file, &text)
            .map_err(|e| ApiError::internal(format!("cannot write {}: {e}", file.display())))?;
        let saved = workflows::load(&file);
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, Json(workflows::describe(&saved, true))).into_response())
    })
    .await
}

/// `DELETE /api/workflows/{id}`: removes the workflow's file.
pub async fn delete(
    State(app): State<AppState>,
    Segment(id): Segment,
    _: super::NoQuery,
) -> Result<Json<Value>, ApiError> {
    let entry = find_workflow(&app, &id).await?;
    let file = entry.file.clone();
    blocking(move || {
        let entry = not_other_data(entry)?;
        std::fs::remove_file(&file)
            .map_err(|e| ApiError::internal(format!("cannot remove {}: {e}", file.display())))?;
        Ok(Json(
            json!({"id": entry.id, "file": file.display().to_string(), "deleted": true}),
        ))
    })
    .await
}
