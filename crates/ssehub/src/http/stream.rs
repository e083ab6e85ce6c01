//! The contract every transport of a subscription stream keeps, so a
//! subscriber gets the same answer whichever one carries it. There are two
//! today: most streams are written straight to the socket
//! ([`super::direct`], the lean path), the others are served by hyper (a
//! subscription that is not the first request of its connection, HTTP/1.0,
//! a request with a body). Both:
//!
//! * answer `200` with [`head`]'s headers (and the CORS headers for the
//!   request's origin), or an error with [`super::ApiError`]'s JSON body;
//! * write [`EventStream`]'s bytes as they come: the hub's opening bytes,
//!   then live events, several pending ones in one write;
//! * end the response cleanly when the stream ends: the hub ended it
//!   (replaced, disconnected, finished, lifetime, token expiry, shutdown;
//!   its last words are the last bytes) or the client went away;
//! * close the connection at once, writing nothing more, when the hub kills
//!   the stream (a reader too slow to read anything more). The direct path
//!   watches [`EventStream::poll_killed`] while its socket does not drain;
//!   hyper does not poll a body then, so its connection task watches the
//!   stream's kill through a [`KillWatch`].
//!
//! The hub knows none of this: it ends and kills streams through their
//! queue ([`crate::hub::queue`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use axum::http::{HeaderMap, HeaderValue, header};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::limits::Admission;
use super::presence::Presence;
use crate::hub::queue::{KillSignal, Receiver};
use crate::hub::{Piece, Registration, Replay, Subscription};

/// At most this much is coalesced into one write.
const MAX_WRITE: usize = 64 * 1024;

/// The headers of a stream's answer, added to `headers` (which may already
/// hold the CORS headers): an event stream, never cached, never buffered by
/// a proxy (`X-Accel-Buffering` is nginx's switch).
pub(super) fn head(mut headers: HeaderMap) -> HeaderMap {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers
}

/// The body of one stream: its replay, piece by piece as the socket
/// drains, then live events coalesced into as few writes as possible.
/// Heartbeats, and the last words of a stream the hub ends, come from the
/// hub through the queue: an idle stream holds no timer of its own.
pub(super) struct EventStream {
    replay: Option<Box<Replay>>,
    events: Receiver,
    /// Unregisters the subscriber when the stream is dropped.
    _registration: Registration,
    /// Releases the stream's place in the connection limits.
    _admission: Admission,
    /// Its active subscriptions (with `--subscriptions`), which end with it.
    _presence: Option<Box<Presence>>,
}

impl EventStream {
    /// The stream of `subscription`, and the headers of its answer beyond
    /// [`head`]'s.
    pub(super) fn new(
        subscription: Subscription,
        admission: Admission,
        presence: Option<Box<Presence>>,
    ) -> (EventStream, HeaderMap) {
        let mut headers = HeaderMap::new();
        if let Some(after) = &subscription.resumed_after {
            let value = HeaderValue::from_str(after)
                .unwrap_or_else(|_| HeaderValue::from_static("earliest"));
            headers.insert("mercure-last-event-id", value);
        }
        let stream = EventStream {
            replay: subscription.replay,
            events: subscription.events,
            _registration: subscription.registration,
            _admission: admission,
            _presence: presence,
        };
        (stream, headers)
    }

    /// Whether the hub asked for the connection to be closed without a word.
    pub(super) fn is_killed(&self) -> bool {
        self.events.is_killed()
    }

    /// Ready once the hub asks for the connection to be closed; for a writer
    /// blocked on a full socket.
    pub(super) fn poll_killed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.events.poll_killed(cx)
    }

    /// A handle on the kill for a writer's connection task.
    pub(super) fn kill_signal(&self) -> KillSignal {
        self.events.kill_signal()
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(replay) = &mut this.replay {
            let Poll::Ready(piece) = replay.poll_piece(cx) else {
                return Poll::Pending;
            };
            match piece {
                Piece::Bytes(piece) => return Poll::Ready(Some(Ok(piece))),
                Piece::Done => this.replay = None,
                Piece::Dropped => {
                    // The hub reset the stream (it is killed): the
                    // transport closes the connection when polled again.
                    this.replay = None;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        let events = &mut this.events;
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

/// Per connection served by hyper: the kill signal of the stream it carries
/// (one at a time on HTTP/1.1), watched by the connection's task, which is
/// also the task that polls the stream.
#[derive(Clone, Default)]
pub struct KillWatch(Arc<Mutex<Watched>>);

#[derive(Default)]
struct Watched {
    signal: Option<KillSignal>,
    /// The connection task, while it waits with no stream to watch.
    waiting: Option<Waker>,
}

impl KillWatch {
    /// Watches this stream from now on.
    pub(super) fn watch(&self, signal: KillSignal) {
        let waiting = {
            let mut watched = self.0.lock().unwrap_or_else(|e| e.into_inner());
            watched.signal = Some(signal);
            watched.waiting.take()
        };
        // The connection task must poll the new signal once, so that the
        // queue knows whom to wake: hyper may never poll the stream again if
        // its first bytes do not fit in the socket.
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    /// Ready once the hub kills the stream watched.
    pub(super) fn poll_killed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut watched = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &watched.signal {
            Some(signal) => signal.poll_killed(cx),
            None => {
                watched.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
