//! Subscriptions served directly on the socket.
//!
//! hyper keeps an 8 KiB write buffer and an 8 KiB read buffer for every
//! connection for as long as a response streams, which made an idle
//! subscriber cost ~15 KiB (docs/BENCHMARKS.md). An event stream needs
//! neither: the request head is read once, then the hub's already-encoded
//! bytes are written as HTTP/1.1 chunks. So a new connection's head is read
//! here with a short-lived buffer; a `GET /.well-known/mercure` is answered
//! here, and any other request goes to hyper with the bytes already read put
//! back in front of the socket.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use bytes::{Buf, Bytes};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::stream::{self, EventStream};
use super::{ApiError, AppState, ConnectionInfo, cors, subscribe};

/// The most of a stream's first bytes written with its answer's head.
const MERGED_WITH_HEAD: usize = 2 * 1024;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
const SUBSCRIBE_PATH: &str = "/.well-known/mercure";

/// What to do with a new connection.
// Returned once per connection and moved straight into a task: boxing the
// large variant would only add an allocation that lives as long as the stream.
#[allow(clippy::large_enum_variant)]
pub enum Route {
    /// Handled here; the connection is done.
    Done,
    /// A subscription whose head is answered: spawn it as a task of its own,
    /// so the (large) state of reading the request is not kept for the life
    /// of the stream.
    Stream(Streaming),
    /// Not a subscription: serve it with hyper, reading `head` first.
    Hyper(Prefixed),
}

/// An open stream: the socket and what to write on it. It is the stream's
/// task, as a hand-written future: the `async fn` it replaces kept its
/// arguments and the locals of every await point, 1.3 KiB per connection
/// against about 220 bytes for this struct (docs/BENCHMARKS.md).
pub struct Streaming {
    socket: TcpStream,
    stream: EventStream,
    /// The chunk being written.
    chunk: Option<Chunk>,
    /// The stream has ended: once `chunk` (the last, empty one) is written,
    /// close.
    ending: bool,
    /// The connection's place in the limits.
    place: Option<super::limits::Connection>,
}

impl Streaming {
    /// Keeps the connection's place in the limits for as long as it streams.
    pub(super) fn holding(mut self, place: super::limits::Connection) -> Streaming {
        self.place = Some(place);
        self
    }
}

/// Reads the first request head and serves it if it is a subscription.
pub async fn serve(mut socket: TcpStream, app: &AppState, conn: &ConnectionInfo) -> Route {
    let mut head = Vec::with_capacity(1024);
    let parsed = tokio::time::timeout(
        app.config.header_read_timeout,
        read_head(&mut socket, &mut head, app.config.h2c),
    )
    .await;
    let request = match parsed {
        Ok(Ok(Read::Head(request))) => request,
        Ok(Ok(Read::H2c)) => return Route::Hyper(Prefixed::new(head, socket)),
        // Too large or not HTTP: answered here, in JSON like every other
        // error (hyper's own answers have no body).
        Ok(Ok(Read::Refused(error))) => {
            app.rejections
                .note(&error, Some(conn.remote.ip()), "-", "-");
            let _ = write_error(&mut socket, error, HeaderMap::new()).await;
            return Route::Done;
        }
        // Too slow, or gone: close.
        Ok(Ok(Read::Closed)) | Ok(Err(_)) | Err(_) => return Route::Done,
    };
    if let Err(error) = request.check_framing() {
        app.rejections.note(
            &error,
            Some(conn.remote.ip()),
            request.method.as_str(),
            &request.path,
        );
        let _ = write_error(&mut socket, error, HeaderMap::new()).await;
        return Route::Done;
    }
    if request.more || !request.is_subscription() {
        return Route::Hyper(Prefixed::new(head, socket));
    }
    drop(head);
    let origin = request.headers.get("origin").and_then(|o| o.to_str().ok());
    let extra = cors::answer_headers(&app.cors, origin);
    let (stream, more) = match subscribe::open(app, conn, &request.headers, &request.query).await {
        Ok(opened) => opened,
        Err(error) => {
            let client = app.client(conn, &request.headers).ip;
            app.rejections
                .note(&error, Some(client), request.method.as_str(), &request.path);
            let _ = write_error(&mut socket, error, extra).await;
            return Route::Done;
        }
    };
    // Nothing of the request is needed from here on; free it before the
    // (long) life of the stream.
    drop(request);
    let mut extra = stream::head(extra);
    extra.extend(more);
    extra.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    // The stream is the whole exchange: a client reconnects on a new one.
    extra.insert("connection", HeaderValue::from_static("close"));
    // The head and, when they are ready (the retry hint and the position,
    // without a replay from the store), the stream's first bytes as its
    // first chunk: one write, one packet for the client to wait for.
    let mut answer = head_bytes(200, "OK", &extra);
    drop(extra);
    let mut stream = stream;
    let mut chunk = None;
    if let Some(Some(Ok(first))) =
        futures_util::FutureExt::now_or_never(futures_util::StreamExt::next(&mut stream))
    {
        // Only what surely fits in the socket goes with the head: this
        // write has no deadline and no kill to watch (the stream's task,
        // which has both, writes a larger first piece of a replay).
        if first.len() <= MERGED_WITH_HEAD {
            let mut size = [0u8; 18];
            answer.extend_from_slice(chunk_size_line(first.len(), &mut size));
            answer.extend_from_slice(&first);
            answer.extend_from_slice(b"\r\n");
        } else {
            chunk = Some(Chunk::new(first));
        }
    }
    let written = socket.write_all(&answer).await;
    drop(answer);
    if written.is_err() {
        return Route::Done;
    }
    Route::Stream(Streaming {
        socket,
        stream,
        chunk,
        ending: false,
        place: None,
    })
}

/// The parts of a request head this path needs.
pub(super) struct Head {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: String,
    pub(super) headers: HeaderMap,
    /// HTTP/1.1 (a 1.0 client gets hyper, which answers it in 1.0 terms).
    pub(super) http11: bool,
    /// Bytes came after the head (a body, or a pipelined request): hyper
    /// reads them.
    more: bool,
}

impl Head {
    fn is_subscription(&self) -> bool {
        self.method == Method::GET
            && self.path == SUBSCRIBE_PATH
            && self.http11
            && !self.headers.contains_key("upgrade")
            && !self.headers.contains_key("content-length")
            && !self.headers.contains_key("transfer-encoding")
    }

    /// Refuses a head whose body framing is ambiguous (what request
    /// smuggling relies on), as hyper would, but with a JSON body:
    /// `Content-Length` given twice with different values or not a number,
    /// or `Transfer-Encoding` with `Content-Length` or not ending in
    /// `chunked`.
    fn check_framing(&self) -> Result<(), ApiError> {
        let bad = |message: &str| ApiError::bad_request("bad_request", message);
        let lengths: Vec<&[u8]> = self
            .headers
            .get_all("content-length")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        // (A number too large for 64 bits, or near that, which hyper uses as
        // markers of its own, would be refused by hyper with no body:
        // refuse it here, in JSON. No real body comes near 2^62 bytes.)
        let number = |l: &[u8]| {
            std::str::from_utf8(l).is_ok_and(|l| l.parse::<u64>().is_ok_and(|n| n < 1 << 62))
        };
        if lengths
            .iter()
            .any(|l| !l.iter().all(u8::is_ascii_digit) || !number(l))
            || lengths.windows(2).any(|w| w[0] != w[1])
        {
            return Err(bad("Content-Length must be one whole number"));
        }
        if let Some(coding) = self.headers.get_all("transfer-encoding").iter().next_back() {
            if !lengths.is_empty() {
                return Err(bad(
                    "Transfer-Encoding and Content-Length cannot both be given",
                ));
            }
            let last = coding
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default();
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(bad("a request's Transfer-Encoding must end with chunked"));
            }
        }
        Ok(())
    }
}

/// What reading a connection's first head came to.
enum Read {
    Head(Head),
    /// Not a request this hub can read: the answer to send before closing.
    Refused(ApiError),
    /// The client went away before sending a head.
    Closed,
    /// The client speaks cleartext HTTP/2 (`--h2c`): hyper serves it.
    H2c,
}

/// What a client speaking HTTP/2 with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until a whole head is in `buf` (or, with `h2c`, the HTTP/2
/// preface).
async fn read_head(socket: &mut TcpStream, buf: &mut Vec<u8>, h2c: bool) -> std::io::Result<Read> {
    loop {
        let seen = buf.len().min(H2_PREFACE.len());
        let preface_so_far = h2c && seen > 0 && buf[..seen] == H2_PREFACE[..seen];
        if preface_so_far && seen == H2_PREFACE.len() {
            return Ok(Read::H2c);
        }
        match parse_head(buf) {
            // (Still the start of a preface: not an HTTP/1 head, yet.)
            _ if preface_so_far => {}
            Parsed::Head(head) => return Ok(Read::Head(head)),
            Parsed::Invalid(why) => return Ok(Read::Refused(malformed(why))),
            Parsed::TooLarge => return Ok(Read::Refused(too_large())),
            Parsed::Partial if buf.len() >= MAX_HEAD => return Ok(Read::Refused(too_large())),
            Parsed::Partial => {}
        }
        let start = buf.len();
        buf.resize((start + 1024).min(MAX_HEAD), 0);
        let n = socket.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            return Ok(if start == 0 {
                Read::Closed
            } else {
                Read::Refused(malformed("the request head ended early"))
            });
        }
    }
}

fn malformed(why: &str) -> ApiError {
    ApiError::bad_request("bad_request", format!("malformed request: {why}"))
}

fn too_large() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        format!(
            "the request head is larger than {MAX_HEAD} bytes or has more than {MAX_HEADERS} headers"
        ),
    )
}

pub(super) enum Parsed {
    Head(Head),
    Partial,
    TooLarge,
    Invalid(&'static str),
}

/// Parsing is kept out of the async function on purpose: httparse's header
/// array (2 KiB) would otherwise be held across an `.await`, and so live in
/// every connection's task for as long as its stream lasts.
pub(super) fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => head_of(&request, len < buf.len())
            .map_or(Parsed::Invalid("a header that is not valid"), Parsed::Head),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::TooLarge,
        Err(httparse::Error::HeaderName) => Parsed::Invalid("an invalid header name"),
        Err(httparse::Error::HeaderValue) => Parsed::Invalid("an invalid header value"),
        Err(httparse::Error::Version) => Parsed::Invalid("not HTTP/1.0 or HTTP/1.1"),
        Err(_) => Parsed::Invalid("not an HTTP request line"),
    }
}

fn head_of(request: &httparse::Request<'_, '_>, more: bool) -> Option<Head> {
    let method = Method::from_bytes(request.method?.as_bytes()).ok()?;
    let target = request.path?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        headers.append(name, value);
    }
    Some(Head {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        http11: request.version == Some(1),
        more,
    })
}

/// A response head with these headers.
fn head_bytes(status: u16, reason: &str, headers: &HeaderMap) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The whole answer to a refused request: head and JSON body, then the
/// connection closes.
pub(super) fn error_answer(error: &ApiError, mut headers: HeaderMap) -> Vec<u8> {
    let body = error.body();
    for (name, value) in &error.headers {
        headers.append(name, value.clone());
    }
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", HeaderValue::from(body.len()));
    headers.insert("connection", HeaderValue::from_static("close"));
    let reason = error.status.canonical_reason().unwrap_or("");
    let mut answer = head_bytes(error.status.as_u16(), reason, &headers);
    answer.extend_from_slice(body.as_bytes());
    answer
}

/// Connections refused at accept that may wait for their request at once.
pub(super) const REFUSING_AT_ONCE: usize = 64;

/// Answers a connection refused at accept (over a limit) and closes it,
/// without reading its request: cheap, whatever the flood. A client that
/// sends its request only after connecting (as HTTP libraries do) would
/// take an answer that came first for a broken exchange, so, while few are
/// waiting, the answer waits up to a second for the request to arrive; the
/// bytes the client sent are then dropped unread, so that the close is not
/// a reset that destroys the answer. Past [`REFUSING_AT_ONCE`] the answer
/// goes out at once.
pub(super) fn refuse(
    socket: TcpStream,
    error: &ApiError,
    waiting: &std::sync::Arc<tokio::sync::Semaphore>,
) {
    let answer = error_answer(error, HeaderMap::new());
    let drain = |socket: &TcpStream| {
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            if !matches!(socket.try_read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
    };
    let Ok(permit) = waiting.clone().try_acquire_owned() else {
        let _ = socket.try_write(&answer);
        drain(&socket);
        return;
    };
    tokio::spawn(async move {
        let mut socket = socket;
        // (A new socket may report itself readable before any byte has
        // come: wait for one.)
        let _ = tokio::time::timeout(LINGER_TIME, socket.peek(&mut [0u8; 1])).await;
        drain(&socket);
        let _ = tokio::time::timeout(LINGER_TIME, socket.write_all(&answer)).await;
        drop(permit);
    });
}

async fn write_error(
    socket: &mut TcpStream,
    error: ApiError,
    headers: HeaderMap,
) -> std::io::Result<()> {
    socket.write_all(&error_answer(&error, headers)).await?;
    socket.shutdown().await?;
    linger(socket).await;
    Ok(())
}

/// Most bytes, and longest time, spent reading what a refused client still
/// sends before closing.
const LINGER_BYTES: usize = 256 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and discards what the client still sends, for a bounded time and
/// amount: closing a socket with unread data sends a reset, which can
/// destroy the answer before the client reads it ("lingering close", as
/// nginx does).
async fn linger(socket: &mut TcpStream) {
    // On the heap: an array here would be part of the state of every
    // connection's first task (it may await this), 4 KiB each, and idle
    // streams were measured 200 bytes larger for the heap it fragmented.
    let mut sink = vec![0u8; 4096];
    let mut read = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while read < LINGER_BYTES {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

impl Future for Streaming {
    type Output = ();

    /// Writes the stream as chunks until it ends, the client goes away, or
    /// the hub closes the connection (a subscriber too slow to be told).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if this.stream.is_killed() {
                return this.abort();
            }
            // The client sends nothing more; a read returning 0 means it is
            // gone. (No system call unless the socket reported readable.)
            let mut probe = [0u8; 16];
            let mut probe = ReadBuf::new(&mut probe);
            match Pin::new(&mut this.socket).poll_read(cx, &mut probe) {
                Poll::Ready(Ok(())) if probe.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => continue,
                Poll::Pending => {}
            }
            if let Some(chunk) = &mut this.chunk {
                match chunk.poll_write(&mut this.socket, cx) {
                    Poll::Ready(Ok(())) => this.chunk = None,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    // A socket that does not drain: wait for it, or for the hub
                    // to give up on this reader.
                    Poll::Pending => {
                        ready!(this.stream.poll_killed(cx));
                        return this.abort();
                    }
                }
            }
            if this.ending {
                return Pin::new(&mut this.socket).poll_shutdown(cx).map(|_| ());
            }
            match Pin::new(&mut this.stream).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.chunk = Some(Chunk::new(bytes)),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => {
                    // The empty chunk that ends the response.
                    this.chunk = Some(Chunk::new(Bytes::new()));
                    this.ending = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Streaming {
    /// Closes a killed stream's connection with a reset: the kernel drops
    /// what is still queued for a reader that reads nothing at once, instead
    /// of keeping full send buffers (hundreds of KiB each) until it gives up.
    fn abort(&mut self) -> Poll<()> {
        let _ = self.socket.set_zero_linger();
        Poll::Ready(())
    }
}

/// One HTTP/1.1 chunk being written, without copying the shared event bytes:
/// the size line, the bytes, and the closing CRLF, each as far as written.
struct Chunk {
    size: [u8; 18],
    size_at: u8,
    size_len: u8,
    bytes: Bytes,
    tail_at: u8,
}

impl Chunk {
    fn new(bytes: Bytes) -> Chunk {
        let mut size = [0u8; 18];
        let size_len = chunk_size_line(bytes.len(), &mut size).len() as u8;
        Chunk {
            size,
            size_at: 0,
            size_len,
            bytes,
            tail_at: 0,
        }
    }

    fn poll_write(
        &mut self,
        socket: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let size = &self.size[self.size_at as usize..self.size_len as usize];
            let tail = &b"\r\n"[self.tail_at as usize..];
            if size.is_empty() && self.bytes.is_empty() && tail.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let slices = [
                IoSlice::new(size),
                IoSlice::new(&self.bytes),
                IoSlice::new(tail),
            ];
            let mut n = ready!(Pin::new(&mut *socket).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            let from_size = n.min(size.len());
            self.size_at += from_size as u8;
            n -= from_size;
            let from_bytes = n.min(self.bytes.len());
            self.bytes.advance(from_bytes);
            n -= from_bytes;
            self.tail_at += n.min(tail.len()) as u8;
        }
    }
}

/// `{len:x}\r\n` in `buf`, without allocating (it is written per event).
fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        buf[digits - 1 - i] = b"0123456789abcdef"[(len >> (4 * i)) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

/// A socket with bytes already read from it put back in front.
pub struct Prefixed {
    prefix: Bytes,
    socket: TcpStream,
}

impl Prefixed {
    fn new(prefix: Vec<u8>, socket: TcpStream) -> Prefixed {
        Prefixed {
            prefix: Bytes::from(prefix),
            socket,
        }
    }
}

impl Prefixed {
    /// Whether the client opened with the HTTP/2 preface.
    pub(super) fn is_h2(&self) -> bool {
        self.prefix.starts_with(H2_PREFACE)
    }
}

impl std::os::fd::AsRawFd for Prefixed {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_open_stream_stays_small() {
        // Every idle subscriber holds one of these for the life of its
        // connection; the async fn it replaced was 1,280 bytes. tokio rounds
        // a task up to whole 128-byte lines: up to 256 bytes here the task is
        // 384 bytes (measured with tokio 1.54), a few more and it is 512.
        let size = std::mem::size_of::<super::Streaming>();
        assert!(size <= 256, "Streaming is {size} bytes");
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        let mut buf = [0u8; 18];
        for len in [0usize, 1, 15, 16, 255, 4096, 65_535, usize::MAX] {
            assert_eq!(
                super::chunk_size_line(len, &mut buf),
                format!("{len:x}\r\n").as_bytes()
            );
        }
    }
}
