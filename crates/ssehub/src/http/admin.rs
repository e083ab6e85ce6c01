//! `/v1/...`: stats and per-client channels, for the backend.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::publish::read_publish;
use super::{ApiError, AppState};
use crate::hub::client_topic;

/// `GET /v1/stats`.
pub async fn stats(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.require_admin(&headers)?;
    let stats = app.hub.stats();
    let mut body = serde_json::to_value(stats).expect("plain struct");
    // Tokio tasks alive: connection tasks and the hub's own; back to the
    // baseline when clients are gone (I6).
    body["tasks"] = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
        .into();
    Ok(Json(body).into_response())
}

/// `GET /v1/clients`.
pub async fn list_clients(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require_admin(&headers)?;
    let clients = app.hub.clients();
    Ok(Json(serde_json::json!({ "count": clients.len(), "clients": clients })).into_response())
}

/// `POST /v1/clients/{client_id}/events`: an event for one client's channel.
/// It is stored like any event, so a client that is reconnecting gets it too.
pub async fn push_to_client(
    State(app): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.require_admin(&headers)?;
    let mut publish = read_publish_without_topic(&headers, body, app.config.max_body).await?;
    publish.topics = vec![client_topic(&client_id)];
    publish.private = true;
    let event = app.hub.publish(publish).await?;
    Ok(Json(serde_json::json!({
        "id": event.id,
        "connected": app.hub.is_connected(&client_id),
    }))
    .into_response())
}

async fn read_publish_without_topic(
    headers: &HeaderMap,
    body: Body,
    max_body: usize,
) -> Result<crate::hub::Publish, ApiError> {
    let publish = read_publish(headers, body, max_body).await?;
    if !publish.topics.is_empty() {
        return Err(ApiError::bad_request(
            "unknown_field",
            "topic is implied by the client id in the path; leave it out",
        ));
    }
    Ok(publish)
}

/// `DELETE /v1/clients/{client_id}`: ends the client's stream.
pub async fn disconnect_client(
    State(app): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require_admin(&headers)?;
    if app.hub.disconnect(&client_id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else if app.hub.is_node() {
        // Not here; the other nodes of the cluster are told, and end it
        // wherever it is.
        Ok((
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({
                "status": "not connected to this node; every node of the cluster is told",
            })),
        )
            .into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "client_not_found",
            format!("no client with id {client_id:?} is connected"),
        ))
    }
}
