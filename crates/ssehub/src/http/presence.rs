//! Active subscriptions (the current Mercure draft's "subscription events"
//! and "subscription API"): who is subscribed to what, as events on topics
//! in the hub's own namespace and as JSON documents. On with
//! `--subscriptions`; off, nothing of this exists and a stream costs
//! nothing more.
//!
//! Each matcher of a stream is one subscription (identical ones once). When
//! the stream opens, the hub sends, for each, a private event of type
//! `mercure` on `{hub path}/subscriptions/{match_type}/{match}/{subscriber}`
//! (both percent-encoded once) whose data is the subscription's document
//! with `active: true`; when it ends, the same with `active: false`. The
//! subscriber is a random `urn:uuid:` per connection, never taken from the
//! client. Like any private update, these reach only subscribers whose
//! token grants `subscribe` on their topic; the API answers only them.
//! They are live only ([`Hub::announce`]): anyone can open connections, and
//! stored, their events would fill the store and evict everyone's history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::auth::{Credentials, Grants};
use super::{ApiError, AppState};
use crate::hub::{Hub, MERCURE_TYPE};

/// Everything but RFC 3986's unreserved characters is encoded: RFC 6570's
/// simple expansion, once.
const VARIABLE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Most subscriptions one answer of the API lists.
const MAX_LISTED: usize = 10_000;

/// One matcher of a stream, as the subscriber gave it.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// `exact`, `urlpattern`, or `template` (0.x's `topic=` URI templates).
    pub match_type: &'static str,
    /// The matcher's value.
    pub value: String,
}

/// The open streams' subscriptions, by subscriber, for the API.
#[derive(Default)]
pub struct Registry {
    streams: Mutex<BTreeMap<String, Vec<serde_json::Value>>>,
}

/// Held by a stream while it is open: announces its subscriptions' end and
/// leaves the registry when dropped.
pub struct Presence {
    hub: Arc<Hub>,
    registry: Arc<Registry>,
    subscriber: String,
    /// Each subscription's topic and document (active).
    subscriptions: Vec<(String, serde_json::Value)>,
}

impl Presence {
    /// Registers the stream's subscriptions and announces their start.
    pub fn start(app: &AppState, matchers: &[Matcher], grants: &Grants) -> Presence {
        let subscriber = format!("urn:uuid:{}", uuid::Uuid::new_v4());
        let base = app.hub_url.path().trim_end_matches('/').to_owned();
        let subscriptions: Vec<(String, serde_json::Value)> = matchers
            .iter()
            .map(|m| {
                let topic = format!(
                    "{base}/subscriptions/{}/{}/{}",
                    m.match_type,
                    utf8_percent_encode(&m.value, VARIABLE),
                    utf8_percent_encode(&subscriber, VARIABLE)
                );
                let mut document = serde_json::json!({
                    "id": topic,
                    "type": "subscription",
                    "match_type": m.match_type,
                    "match": m.value,
                    "subscriber": subscriber,
                    "active": true,
                });
                if let Some(payload) = grants.payload_for(&m.value) {
                    document["payload"] = payload.clone();
                }
                (topic, document)
            })
            .collect();
        let documents: Vec<serde_json::Value> =
            subscriptions.iter().map(|(_, d)| d.clone()).collect();
        if let Some(log) = app.hub.shared_log() {
            // The other nodes list it too.
            let json = serde_json::Value::from(documents.clone()).to_string();
            log.present(subscriber.clone(), Some(json));
        }
        app.presence
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(subscriber.clone(), documents);
        for (topic, document) in &subscriptions {
            app.hub
                .announce(topic.clone(), MERCURE_TYPE, &document.to_string());
        }
        Presence {
            hub: app.hub.clone(),
            registry: app.presence.clone(),
            subscriber,
            subscriptions,
        }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.registry
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.subscriber);
        if let Some(log) = self.hub.shared_log() {
            log.present(std::mem::take(&mut self.subscriber), None);
        }
        for (topic, mut document) in std::mem::take(&mut self.subscriptions) {
            document["active"] = false.into();
            self.hub
                .announce(topic, MERCURE_TYPE, &document.to_string());
        }
    }
}

/// `GET {hub path}/subscriptions[/{match_type}[/{match}[/{subscriber}]]]`:
/// the active subscriptions, for a token granted `subscribe` on the
/// request's path (as a topic).
pub async fn list(
    State(app): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !app.config.subscriptions {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "active subscriptions are off (--subscriptions)",
        ));
    }
    // The path as the client names it: under the hub URL's path (which a
    // proxy may put under a prefix), as the events' topics are.
    let rest = uri
        .path()
        .strip_prefix("/.well-known/mercure/subscriptions")
        .unwrap_or_default();
    let base = format!("{}/subscriptions", app.hub_url.path().trim_end_matches('/'));
    let path = format!("{base}{rest}");
    let path = path.as_str();
    let credentials = Credentials {
        headers: &headers,
        query: &[],
    };
    let grants = app
        .auth
        .subscriber(&credentials, app.config.anonymous_subscribers)?;
    let allowed = match &grants {
        Some(grants) => grants.subscribe.iter().any(|s| s.matches(path)),
        None if app.config.dev => true,
        None => {
            return Err(app
                .auth
                .unauthorized("reading active subscriptions needs a token"));
        }
    };
    if !allowed {
        return Err(app.auth.insufficient_scope(format!(
            "the token may not subscribe to {path:?}, so it may not read it"
        )));
    }
    // The path's segments, still percent-encoded as the topics have them.
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let wanted = |document: &serde_json::Value| {
        let id = document["id"].as_str().unwrap_or("");
        id == path || id.starts_with(&format!("{path}/"))
    };
    // In a cluster, the other nodes' streams too (as far as Redis can be
    // reached: a node without it lists its own).
    let others = match app.hub.shared_log() {
        Some(log) => log.others_present(MAX_LISTED).await.unwrap_or_else(|err| {
            tracing::debug!(%err, "the other nodes' subscriptions cannot be read");
            Vec::new()
        }),
        None => Vec::new(),
    };
    let others: Vec<serde_json::Value> = others
        .iter()
        .filter_map(|json| serde_json::from_str::<Vec<serde_json::Value>>(json).ok())
        .flatten()
        .collect();
    let streams = app
        .presence
        .streams
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // A collection is cut at a bound (the draft lets hubs truncate): an
    // answer's cost stays bounded however many streams are open.
    let mut documents: Vec<serde_json::Value> = streams
        .values()
        .flatten()
        .chain(&others)
        .filter(|d| wanted(d))
        .take(MAX_LISTED)
        .cloned()
        .collect();
    drop(streams);
    let body = match segments.len() {
        0..=2 if segments.first() != Some(&"") => serde_json::json!({
            "id": path,
            "type": "subscriptions",
            "subscriptions": documents,
        }),
        3 => match documents.pop() {
            Some(document) => document,
            None => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "subscription_not_found",
                    "no active subscription at this URL",
                ));
            }
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
            ));
        }
    };
    let cursor = app
        .hub
        .last_event_id()
        .unwrap_or_else(|| "earliest".to_owned());
    let link = format!(
        "<{}>; rel=\"mercure\"; last-event-id=\"{}\"; type=\"mercure\"; content-type=\"application/json\"",
        app.hub_url, cursor
    );
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    if let Ok(link) = HeaderValue::from_str(&link) {
        headers.insert(header::LINK, link);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
