//! Discovery: the hub's OAuth protected resource metadata (RFC 9728), at
//! `/.well-known/oauth-protected-resource` followed by the hub URL's path.
//! A client of the current Mercure draft reads there what to put in a
//! token's `aud` (`resource`), how to present the token, and which grants
//! and matcher types the hub understands. Refusals point to it from their
//! `WWW-Authenticate` challenge (`resource_metadata`).

use axum::Json;
use axum::extract::State;

use super::AppState;

/// The metadata document.
pub async fn metadata(State(app): State<AppState>) -> Json<serde_json::Value> {
    let mut document = app.auth.metadata_document().clone();
    if app.config.subscriptions {
        document["mercure_subscriptions"] = true.into();
    }
    Json(document)
}
