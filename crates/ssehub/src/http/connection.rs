//! One accepted connection, served to its end: over TLS (HTTP/2 or
//! HTTP/1.1, as ALPN chose), or in cleartext, where subscriptions take the
//! lean direct path ([`super::direct`]) and everything else, cleartext
//! HTTP/2 (h2c, with `--h2c`) included, goes to hyper.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::limits::Connection as Place;
use super::{AppState, ConnectionInfo, deadline, direct, stream};

/// Most streams one HTTP/2 connection may carry at once: a page's
/// `EventSource`s and its other requests, with room to spare. Each counts
/// against the stream limits like a connection of its own.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// What serves the connections of one listener.
pub(super) struct Serving {
    app: Router,
    state: AppState,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    tls: Option<Arc<super::tls::Tls>>,
    shutdown: CancellationToken,
    /// The direct path's streams, which outlive the connection's first task.
    streams: TaskTracker,
}

impl Serving {
    pub(super) fn new(
        state: AppState,
        app: Router,
        shutdown: CancellationToken,
        streams: TaskTracker,
    ) -> Serving {
        let config = &state.config;
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .keep_alive(true)
            // Small buffers: an idle subscriber should cost little memory.
            // Events are already coalesced into one buffer per write.
            .max_buf_size(16 * 1024);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            // As the direct path's head limit.
            .max_header_list_size(16 * 1024)
            // What one stream may hold unsent (hyper's default is 400 KiB):
            // as the direct path's socket limit, so an idle or slow HTTP/2
            // stream costs what an HTTP/1.1 one does.
            .max_send_buf_size(super::UNSENT_LIMIT as usize)
            // A peer that vanished is found by a ping it does not answer.
            .keep_alive_interval(config.heartbeat)
            .keep_alive_timeout(Duration::from_secs(20));
        Serving {
            app,
            tls: state.tls.clone(),
            state,
            http1,
            http2,
            shutdown,
            streams,
        }
    }

    /// Serves `socket` until it closes, holding its `place` in the limits.
    pub(super) async fn serve(
        &self,
        socket: TcpStream,
        remote: std::net::SocketAddr,
        place: Place,
    ) {
        match &self.tls {
            Some(tls) => self.serve_tls(socket, remote, tls).await,
            None => self.serve_plain(socket, remote, place).await,
        }
    }

    async fn serve_plain(&self, socket: TcpStream, remote: std::net::SocketAddr, place: Place) {
        let direct = ConnectionInfo {
            remote,
            kill_watch: None,
            multiplexed: false,
        };
        let socket = match direct::serve(socket, &self.state, &direct).await {
            direct::Route::Done => return,
            direct::Route::Stream(streaming) => {
                self.streams.spawn(streaming.holding(place));
                return;
            }
            direct::Route::Hyper(socket) => socket,
        };
        let fd = socket.as_raw_fd();
        let h2 = socket.is_h2();
        self.serve_hyper(socket, fd, remote, h2).await;
        drop(place);
    }

    async fn serve_tls(
        &self,
        socket: TcpStream,
        remote: std::net::SocketAddr,
        tls: &super::tls::Tls,
    ) {
        let fd = socket.as_raw_fd();
        // The handshake, like a request head, must come in time.
        let handshake = tokio::time::timeout(
            self.state.config.header_read_timeout,
            tls.acceptor().accept(socket),
        )
        .await;
        let socket = match handshake {
            Ok(Ok(socket)) => socket,
            Ok(Err(err)) => {
                tracing::debug!(%err, %remote, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let h2 = socket.get_ref().1.alpn_protocol() == Some(b"h2");
        self.serve_hyper(socket, fd, remote, h2).await;
    }

    /// Serves a connection with hyper, in HTTP/2 or HTTP/1.1.
    async fn serve_hyper<I>(&self, io: I, fd: RawFd, remote: std::net::SocketAddr, h2: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // One stream at a time on HTTP/1.1: its kill closes the connection.
        // On HTTP/2 a killed stream ends by itself, and the others go on.
        let kill_watch = (!h2).then(stream::KillWatch::default);
        let conn = ConnectionInfo {
            remote,
            kill_watch: kill_watch.clone(),
            multiplexed: h2,
        };
        let body_limit = self.state.config.body_read_timeout;
        let app = self.app.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(conn.clone());
                // Every body must arrive within its deadline (see `deadline`),
                // whichever handler reads it.
                let request = request.map(|body| {
                    axum::body::Body::new(deadline::DeadlineBody::new(body, body_limit))
                });
                app.clone().oneshot(request)
            });
        let grace = self.state.config.shutdown_timeout;
        if h2 {
            let mut connection = Box::pin(self.http2.serve_connection(TokioIo::new(io), service));
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = self.shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(grace, connection).await;
                }
            }
            return;
        }
        let kill_watch = kill_watch.expect("HTTP/1.1 watches its stream");
        // Boxed: only connections that need hyper pay for its state.
        let mut connection = Box::pin(self.http1.serve_connection(TokioIo::new(io), service));
        tokio::select! {
            _ = connection.as_mut() => {}
            // The hub dropped a reader too slow to be told anything:
            // dropping the connection closes the socket at once, with a
            // reset (see `direct::Streaming::abort`).
            _ = std::future::poll_fn(|cx| kill_watch.poll_killed(cx)) => {
                // SAFETY: `fd` is the socket `connection` owns, and
                // `connection` is alive until the end of this block.
                let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
            }
            _ = self.shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(grace, connection).await;
            }
        }
    }
}
