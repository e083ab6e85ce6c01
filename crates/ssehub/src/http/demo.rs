//! `/demo/...`: the endpoints the demo pages call, standing in for a team's
//! own backend (see `crate::demo`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::demo::{chat, upload};

/// Most files in one upload.
const MAX_FILES: usize = 20;
/// Largest upload body; larger ones get 413 from the body limit layer.
pub const MAX_UPLOAD: usize = 8 << 20;
/// Longest question, in characters.
const MAX_QUESTION: usize = 2000;

/// `POST /demo/upload` (multipart, field `files`): starts a task and answers
/// `202 {"code", "topic"}` at once; progress arrives on the topic.
pub async fn upload(
    State(app): State<AppState>,
    mut form: Multipart,
) -> Result<Response, ApiError> {
    let demo = app.demo.clone().ok_or_else(demos_off)?;
    let mut files = Vec::new();
    while let Some(mut field) = form.next_field().await.map_err(bad_upload)? {
        if files.len() == MAX_FILES {
            return Err(ApiError::bad_request(
                "too_many_files",
                format!("at most {MAX_FILES} files per upload"),
            ));
        }
        let name = field
            .file_name()
            .unwrap_or("unnamed")
            .chars()
            .take(200)
            .collect();
        let mut bytes = BytesMut::new();
        while let Some(chunk) = field.chunk().await.map_err(bad_upload)? {
            bytes.extend_from_slice(&chunk);
        }
        files.push(upload::UploadedFile {
            name,
            bytes: bytes.freeze(),
        });
    }
    if files.is_empty() {
        return Err(ApiError::bad_request(
            "no_files",
            "choose at least one file",
        ));
    }
    let place = task_place(&demo)?;
    let code = upload::start(app.hub.clone(), files, demo.pace, place)
        .await
        .map_err(unavailable)?;
    let topic = upload::topic(&code);
    Ok(accepted(
        serde_json::json!({ "code": code, "topic": topic }),
    ))
}

/// A place for one more demo task, or `429 demo_busy`.
fn task_place(demo: &crate::demo::DemoSettings) -> Result<crate::demo::TaskPlace, ApiError> {
    demo.tasks.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "demo_busy",
            format!(
                "the demo runs at most {} tasks at once; try again shortly",
                crate::demo::MAX_TASKS
            ),
        )
        .with_header(axum::http::header::RETRY_AFTER, "5")
    })
}

/// The demo's first publish failed: nothing was started.
fn unavailable(reason: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", reason)
}

/// `202` with what the page needs to follow the work.
fn accepted(body: serde_json::Value) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

fn bad_upload(err: axum::extract::multipart::MultipartError) -> ApiError {
    if super::deadline::is_timeout(&err) {
        return ApiError::unreadable_body(&err);
    }
    ApiError::new(err.status(), "invalid_upload", err.body_text())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    question: String,
}

/// `POST /demo/chat` `{"question": ...}`: answers `202 {"id", "topic"}`; the
/// answer streams on the topic.
pub async fn ask(State(app): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let demo = app.demo.clone().ok_or_else(demos_off)?;
    let bytes = Limited::new(body, MAX_QUESTION * 4 + 1024)
        .collect()
        .await
        .map_err(|err| match err.downcast_ref::<LengthLimitError>() {
            Some(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "a question is at most 2000 characters",
            ),
            None => ApiError::unreadable_body(err.as_ref()),
        })?
        .to_bytes();
    let body: Question = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    let question = body.question.trim().to_owned();
    if question.is_empty() || question.chars().count() > MAX_QUESTION {
        return Err(ApiError::bad_request(
            "invalid_question",
            format!("ask a question of 1 to {MAX_QUESTION} characters"),
        ));
    }
    let place = task_place(&demo)?;
    let id = chat::ask(app.hub.clone(), demo, question, app.closing.clone(), place)
        .await
        .map_err(unavailable)?;
    let topic = chat::topic(&id);
    Ok(accepted(serde_json::json!({ "id": id, "topic": topic })))
}

/// `POST /demo/chat/{id}/stop`: stops an answer being written (`204`); the
/// answer ends with `end` (data `stopped`). `404 answer_not_running` if it
/// is not being written.
pub async fn stop(
    State(app): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let demo = app.demo.clone().ok_or_else(demos_off)?;
    if demo.stop(&id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "answer_not_running",
            "no answer with this id is being written (it ended, or never was)",
        ))
    }
}

fn demos_off() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "the demos are off (--demos false)",
    )
}
