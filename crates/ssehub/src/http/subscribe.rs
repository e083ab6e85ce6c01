//! `GET /.well-known/mercure`: a subscriber's event stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::auth::Credentials;
use super::limits::Admission;
use super::{ApiError, AppState, ConnectionInfo, form};
use crate::hub::{Selector, Subscribe, Subscription, client_topic};

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
    let expires = grants.expires_at.map(|at| {
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
    });
    Ok(EventStream::new(subscription, app, admission, expires))
}

/// The body of one stream: the first bytes, then live events coalesced into
/// as few writes as possible, heartbeats when idle, and a clean end at the
/// maximum lifetime, at token expiry or at shutdown (the hub's queue says
/// so). One timer serves the heartbeat and both deadlines, to keep an idle
/// stream small.
pub(super) struct EventStream {
    first: Option<Bytes>,
    events: Option<crate::hub::queue::Receiver>,
    timer: Pin<Box<Sleep>>,
    heartbeat_every: Duration,
    next_heartbeat: Instant,
    /// The maximum lifetime.
    ends_at: Option<Instant>,
    /// When the subscriber's token expires.
    expires_at: Option<Instant>,
    retry_hint: Bytes,
    ended: bool,
    /// Unregisters the subscriber when the stream is dropped.
    _subscription: Subscription,
    /// Releases the stream's place in the connection limits.
    _admission: Admission,
}

impl EventStream {
    fn new(
        mut subscription: Subscription,
        app: &AppState,
        admission: Admission,
        token_expiry: Option<Duration>,
    ) -> EventStream {
        let mut first = BytesMut::from(&app.retry_hint[..]);
        first.extend_from_slice(&std::mem::take(&mut subscription.initial));
        let now = Instant::now();
        let heartbeat_every = app.config.heartbeat;
        let mut stream = EventStream {
            first: Some(first.freeze()),
            events: subscription.events.take(),
            timer: Box::pin(tokio::time::sleep_until(now + heartbeat_every)),
            heartbeat_every,
            next_heartbeat: now + heartbeat_every,
            ends_at: app.config.max_lifetime.map(|d| now + d),
            expires_at: token_expiry.map(|d| now + d),
            retry_hint: app.retry_hint.clone(),
            ended: false,
            _subscription: subscription,
            _admission: admission,
        };
        stream.arm();
        stream
    }

    /// Sets the timer to the earliest of heartbeat, lifetime and expiry.
    fn arm(&mut self) {
        let at = [Some(self.next_heartbeat), self.ends_at, self.expires_at]
            .into_iter()
            .flatten()
            .min()
            .expect("the heartbeat is always set");
        self.timer.as_mut().reset(at);
    }

    fn wrote(&mut self) {
        self.next_heartbeat = Instant::now() + self.heartbeat_every;
        self.arm();
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

    /// The last bytes of a stream the hub ends: a comment saying why.
    fn end_with(&mut self, why: &'static str) -> Poll<Option<Result<Bytes, Infallible>>> {
        self.ended = true;
        let mut last = BytesMut::from(&self.retry_hint[..]);
        last.extend_from_slice(why.as_bytes());
        Poll::Ready(Some(Ok(last.freeze())))
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            this.wrote();
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
                this.wrote();
                return Poll::Ready(Some(Ok(bytes)));
            }
            Poll::Ready(None) if events.is_shutting_down() => {
                return this.end_with(": the hub is shutting down; reconnect to resume\n");
            }
            // The hub ended this stream: finished, replaced or disconnected.
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        ready!(this.timer.as_mut().poll(cx));
        let now = Instant::now();
        if this.expires_at.is_some_and(|at| at <= now) {
            return this.end_with(": the token has expired; reconnect with a fresh one\n");
        }
        if this.ends_at.is_some_and(|at| at <= now) {
            return this.end_with(": maximum connection lifetime reached; reconnect to resume\n");
        }
        this.wrote();
        Poll::Ready(Some(Ok(Bytes::from_static(b":\n"))))
    }
}
