//! `/admin/`: a status page for an operator without Prometheus, drawn from
//! the hub's own event stream (`/admin/events`: one `status` event a
//! second, as `EventSource` reads it). Both need the admin credential;
//! the page also takes it as HTTP Basic, so a browser can ask for it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::{ApiError, AppState};

/// How often the stream tells the figures.
const EVERY: Duration = Duration::from_secs(1);

/// Status streams open at once: each reads the hub's figures every second.
pub const MAX_WATCHERS: usize = 8;

/// `GET /admin/`.
pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.auth.admin_in_browser(&headers, app.config.dev)?;
    let mut response = include_str!("../../../../web/admin.html").into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /admin/events`: a `status` event now and every second.
pub async fn events(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.auth.admin_in_browser(&headers, app.config.dev)?;
    let Ok(permit) = app.status_watchers.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_watchers",
            format!("at most {MAX_WATCHERS} status streams may be open at once"),
        )
        .with_header(header::RETRY_AFTER, "5"));
    };
    let closing = app.closing.clone();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (app, tick, permit, closing, 0u64);
    let stream =
        futures_util::stream::unfold(state, |(app, mut tick, permit, closing, n)| async move {
            tokio::select! {
                _ = tick.tick() => {}
                _ = closing.cancelled() => return None,
            }
            let bytes = event(&app, n);
            Some((
                Ok::<_, Infallible>(bytes),
                (app, tick, permit, closing, n + 1),
            ))
        });
    let headers = super::stream::head(HeaderMap::new());
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// One `status` event: the hub's figures now, as JSON.
fn event(app: &AppState, n: u64) -> Bytes {
    let stats = app.hub.stats();
    let figures = serde_json::json!({
        "time_ms": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        "version": env!("CARGO_PKG_VERSION"),
        "ready": app.hub.store_failure().is_none(),
        "connections": app.limits.open_sockets(),
        "streams": stats.connections,
        "topics": stats.topics,
        "subscriptions": stats.subscriptions,
        "published": stats.published,
        "delivered": stats.delivered,
        "dropped_slow": stats.dropped_slow,
        "replayed": stats.replayed,
        "rejected": app.rejections.total.load(Relaxed),
        "history_events": stats.stored_events,
        "history_bytes": stats.stored_bytes,
    });
    let retry = if n == 0 { "retry: 2000\n" } else { "" };
    Bytes::from(format!("{retry}event: status\ndata: {figures}\n\n"))
}

/// The watchers' places.
pub fn watchers() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(MAX_WATCHERS))
}
