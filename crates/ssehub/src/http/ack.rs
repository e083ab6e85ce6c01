//! `POST /v1/ack`: a client acknowledges the last event it has shown, and
//! `GET /v1/clients/{client_id}/ack`: the backend reads that position.
//!
//! The fields (`client_id`, `last_event_id`) come as a form body (what
//! `navigator.sendBeacon` and `fetch` with `URLSearchParams` send, with no
//! CORS preflight) or in the query string. Acknowledging for a client id
//! needs what opening its channel needs: the token's subject is that id
//! (or `--dev`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::auth::Credentials;
use super::{ApiError, AppState, form, subscribe};
use crate::hub::{RESERVED_ID_PREFIX, check_client_id};

/// Largest body: two short fields.
const MAX_ACK_BODY: usize = 4096;
/// Longest event id acknowledged: with `--max-acks` positions, what they
/// can hold in all is bounded (about 400 bytes each at most).
const MAX_ID_LENGTH: usize = 256;

/// `POST /v1/ack`: `204` once the position is recorded.
pub async fn acknowledge(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_small(body).await?;
    if !body.is_empty() && !is_form(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            "an acknowledgement is a form: application/x-www-form-urlencoded \
             (client_id=...&last_event_id=...)",
        ));
    }
    let invalid = |e: form::FormError| ApiError::bad_request("invalid_utf8", e.to_string());
    let mut fields = form::parse(query.as_deref().unwrap_or("").as_bytes()).map_err(invalid)?;
    fields.extend(form::parse(&body).map_err(invalid)?);
    let field = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| ApiError::bad_request("missing_field", format!("{name} is required")))
    };
    let (client_id, last_event_id) = (field("client_id")?, field("last_event_id")?);
    check_client_id(&client_id)?;
    if last_event_id.is_empty()
        || last_event_id.len() > MAX_ID_LENGTH
        || last_event_id.contains(['\n', '\r', '\0'])
        || last_event_id.starts_with(RESERVED_ID_PREFIX)
    {
        return Err(ApiError::bad_request(
            "invalid_last_event_id",
            format!(
                "last_event_id must be an event id: 1 to {MAX_ID_LENGTH} bytes, no line breaks, \
                 not starting with {RESERVED_ID_PREFIX:?}"
            ),
        ));
    }
    let credentials = Credentials {
        headers: &headers,
        query: &fields,
    };
    let grants = app
        .auth
        .subscriber(&credentials, app.config.anonymous_subscribers)?
        .unwrap_or_default();
    if grants.by_cookie {
        super::cors::from_a_trusted_page(&app, &headers)?;
    }
    subscribe::may_be(&app, &grants, &client_id)?;
    app.hub.acknowledge(&client_id, &last_event_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/clients/{client_id}/ack` (admin): the client's acknowledged
/// position.
pub async fn position(
    State(app): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require_admin(&headers)?;
    let Some(ack) = app.hub.acknowledged(&client_id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ack_not_found",
            format!("client {client_id:?} has acknowledged nothing (or it was forgotten)"),
        ));
    };
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ack.at_ms);
    Ok(Json(serde_json::json!({
        "client_id": client_id,
        "last_event_id": ack.last_event_id,
        "acknowledged_at": humantime::format_rfc3339_millis(at).to_string(),
    }))
    .into_response())
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

async fn read_small(body: Body) -> Result<Vec<u8>, ApiError> {
    let mut frames = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = frames.next().await {
        let chunk = chunk.map_err(|e| ApiError::unreadable_body(&e))?;
        if bytes.len() + chunk.len() > MAX_ACK_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("an acknowledgement is at most {MAX_ACK_BODY} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
