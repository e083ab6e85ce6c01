//! `GET /.well-known/mercure`: a subscriber's event stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::auth::Credentials;
use super::limits::Admission;
use super::{ApiError, AppState, ConnectionInfo, form};
use crate::hub::{Registration, Selector, Subscribe, Subscription, client_topic};

/// At most this much is coalesced into one write.
const MAX_WRITE: usize = 64 * 1024;

/// Opens a stream for the topics in the query string (the hyper path; most
/// subscriptions are served by [`super::direct`], which shares [`open`]).
pub async fn subscribe(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnectionInfo>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let stream = open(&app, &conn, &headers, query.as_deref().unwrap_or(""))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Checks credentials and limits, registers the subscriber, and returns its
/// stream; or the error to answer.
pub(super) fn open(
    app: &AppState,
    conn: &ConnectionInfo,
    headers: &HeaderMap,
    query: &str,
) -> Result<EventStream, ApiError> {
    let fields = form::parse(query.as_bytes())
        .map_err(|e| ApiError::bad_request("invalid_utf8", e.to_string()))?;
    let credentials = Credentials {
        headers,
        query: &fields,
    };
    let grants = app
        .auth
        .subscriber(&credentials, app.config.anonymous_subscribers)?
        .unwrap_or_default();
    let mut request = Subscribe {
        remote: Some(conn.remote),
        kill: conn.kill.clone(),
        private: grants.subscribe.clone(),
        expires_at: grants.expires_at,
        ..Subscribe::default()
    };
    for (name, value) in fields {
        match name.as_str() {
            "match" | "topic" => request.selectors.push(Selector::parse(&value)?),
            // Mercure spells it lastEventID; both are accepted.
            "last_event_id" | "lastEventID" => request.last_event_id = Some(value),
            "client_id" => request.client_id = Some(value),
            // Other parameters (cache busters, tokens of later versions) are ignored.
            _ => {}
        }
    }
    if let Some(value) = headers.get("last-event-id") {
        // The header wins over the query: it is what EventSource sends on
        // reconnect, and it is newer than the URL the page was opened with.
        let value = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            ApiError::bad_request("invalid_last_event_id", "Last-Event-ID is not valid UTF-8")
        })?;
        request.last_event_id = Some(value.to_owned());
    }
    if let Some(client_id) = &request.client_id
        && !app.config.dev
    {
        // A client channel is private: only its owner may open it.
        let own = client_topic(client_id);
        let owner = grants.subject.as_deref() == Some(client_id.as_str())
            || grants.subscribe.iter().any(|s| s.matches(&own));
        if !owner {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "client_id_not_allowed",
                "client_id must be the token's subject (sub), or a topic the token may subscribe to",
            ));
        }
    }
    let admission = app
        .limits
        .admit(conn.remote.ip(), grants.subject.as_deref())?;
    let subscription = app.hub.subscribe(request)?;
    Ok(EventStream::new(subscription, admission))
}

/// The body of one stream: the first bytes, then live events coalesced into
/// as few writes as possible. Heartbeats, and the last words of a stream the
/// hub ends (maximum lifetime, token expiry, shutdown), come from the hub
/// through the queue ([`crate::hub::Hub::tick_streams`]): an idle stream
/// holds no timer of its own.
pub(super) struct EventStream {
    first: Option<Bytes>,
    events: Option<crate::hub::queue::Receiver>,
    /// Unregisters the subscriber when the stream is dropped.
    _registration: Registration,
    /// Releases the stream's place in the connection limits.
    _admission: Admission,
}

impl EventStream {
    fn new(subscription: Subscription, admission: Admission) -> EventStream {
        EventStream {
            first: Some(subscription.initial),
            events: subscription.events,
            _registration: subscription.registration,
            _admission: admission,
        }
    }

    /// Whether the hub asked for the connection to be closed without a word
    /// (its reader is too slow).
    pub(super) fn is_killed(&self) -> bool {
        self.events.as_ref().is_some_and(|e| e.is_killed())
    }

    /// Ready once the hub asks for the connection to be closed; for a writer
    /// blocked on a full socket.
    pub(super) fn poll_killed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.events.as_mut() {
            Some(events) => events.poll_killed(cx),
            None => Poll::Pending,
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        let Some(events) = this.events.as_mut() else {
            // Every topic was already finished: `initial` said it all.
            return Poll::Ready(None);
        };
        match events.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => {
                // Coalesce whatever else is already queued into this write.
                let bytes = match events.try_recv() {
                    Err(_) => bytes,
                    Ok(next) => {
                        let mut buf = BytesMut::with_capacity(bytes.len() + next.len());
                        buf.extend_from_slice(&bytes);
                        buf.extend_from_slice(&next);
                        while buf.len() < MAX_WRITE {
                            match events.try_recv() {
                                Ok(more) => buf.extend_from_slice(&more),
                                Err(_) => break,
                            }
                        }
                        buf.freeze()
                    }
                };
                Poll::Ready(Some(Ok(bytes)))
            }
            // Finished, replaced, disconnected or ended by the hub (after
            // its last words, which were the last item queued).
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
