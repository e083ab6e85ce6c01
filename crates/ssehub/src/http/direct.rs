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

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{ApiError, AppState, ConnectionInfo, cors, subscribe};

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
    /// A subscription whose head is answered: run [`pump`] in a task of its
    /// own, so the (large) state of reading the request is not kept for the
    /// life of the stream.
    Stream(Streaming),
    /// Not a subscription: serve it with hyper, reading `head` first.
    Hyper(Prefixed),
}

/// An open stream: the socket and what to write on it.
pub struct Streaming {
    socket: TcpStream,
    stream: subscribe::EventStream,
}

/// Reads the first request head and serves it if it is a subscription.
pub async fn serve(mut socket: TcpStream, app: &AppState, conn: &ConnectionInfo) -> Route {
    let mut head = Vec::with_capacity(1024);
    let parsed = tokio::time::timeout(
        app.config.header_read_timeout,
        read_head(&mut socket, &mut head),
    )
    .await;
    let request = match parsed {
        Ok(Ok(Some(request))) => request,
        // Too large or not HTTP: hyper answers those properly (400, 431).
        Ok(Ok(None)) => return Route::Hyper(Prefixed::new(head, socket)),
        // Too slow, or gone: close.
        Ok(Err(_)) | Err(_) => return Route::Done,
    };
    if !request.is_subscription() {
        return Route::Hyper(Prefixed::new(head, socket));
    }
    drop(head);
    let origin = request.headers.get("origin").and_then(|o| o.to_str().ok());
    let mut extra = cors::answer_headers(&app.cors, origin);
    let stream = match subscribe::open(app, conn, &request.headers, &request.query) {
        Ok(stream) => stream,
        Err(error) => {
            let _ = write_error(&mut socket, error, extra).await;
            return Route::Done;
        }
    };
    // Nothing of the request is needed from here on; free it before the
    // (long) life of the stream.
    drop(request);
    extra.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    extra.insert("cache-control", HeaderValue::from_static("no-cache"));
    extra.insert("x-accel-buffering", HeaderValue::from_static("no"));
    extra.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    // The stream is the whole exchange: a client reconnects on a new one.
    extra.insert("connection", HeaderValue::from_static("close"));
    let written = write_head(&mut socket, 200, "OK", &extra).await;
    drop(extra);
    if written.is_err() {
        return Route::Done;
    }
    Route::Stream(Streaming { socket, stream })
}

/// The parts of a request head this path needs.
struct Head {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    /// HTTP/1.1 (a 1.0 client gets hyper, which answers it in 1.0 terms).
    http11: bool,
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
}

/// Reads until a whole head is in `buf`. `Ok(None)` when it is not a valid
/// or complete head (the caller lets hyper answer).
async fn read_head(socket: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Head>> {
    loop {
        match parse_head(buf) {
            Parsed::Head(head) => return Ok(Some(head)),
            Parsed::Invalid => return Ok(None),
            Parsed::Partial if buf.len() >= MAX_HEAD => return Ok(None),
            Parsed::Partial => {}
        }
        let start = buf.len();
        buf.resize((start + 1024).min(MAX_HEAD), 0);
        let n = socket.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            return Ok(None);
        }
    }
}

enum Parsed {
    Head(Head),
    Partial,
    Invalid,
}

/// Parsing is kept out of the async function on purpose: httparse's header
/// array (2 KiB) would otherwise be held across an `.await`, and so live in
/// every connection's task for as long as its stream lasts.
fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        // Bytes after the head (a pipelined request) are left to hyper.
        Ok(httparse::Status::Complete(len)) if len == buf.len() => {
            head_of(&request).map_or(Parsed::Invalid, Parsed::Head)
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        _ => Parsed::Invalid,
    }
}

fn head_of(request: &httparse::Request<'_, '_>) -> Option<Head> {
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
    })
}

async fn write_head(
    socket: &mut TcpStream,
    status: u16,
    reason: &str,
    headers: &HeaderMap,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    socket.write_all(&head).await
}

async fn write_error(
    socket: &mut TcpStream,
    error: ApiError,
    mut headers: HeaderMap,
) -> std::io::Result<()> {
    let body = serde_json::json!({ "error": error.code, "message": error.message }).to_string();
    for (name, value) in error.headers {
        headers.append(name, value);
    }
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", HeaderValue::from(body.len()));
    headers.insert("connection", HeaderValue::from_static("close"));
    let reason = error.status.canonical_reason().unwrap_or("");
    write_head(socket, error.status.as_u16(), reason, &headers).await?;
    socket.write_all(body.as_bytes()).await?;
    socket.shutdown().await
}

/// Writes the stream as chunks until it ends, the client goes away, or the
/// hub closes the connection (`kill`, for a subscriber too slow to be told).
pub async fn pump(streaming: Streaming, kill: tokio_util::sync::CancellationToken) {
    tokio::select! {
        _ = write_stream(streaming) => {}
        _ = kill.cancelled() => {}
    }
}

async fn write_stream(
    Streaming {
        mut socket,
        mut stream,
    }: Streaming,
) -> std::io::Result<()> {
    // The client sends nothing more; a read returning 0 means it is gone.
    let mut probe = [0u8; 16];
    loop {
        let bytes = tokio::select! {
            next = stream.next() => match next {
                Some(Ok(bytes)) => bytes,
                Some(Err(never)) => match never {},
                None => break,
            },
            read = socket.read(&mut probe) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
        };
        write_chunk(&mut socket, bytes).await?;
    }
    socket.write_all(b"0\r\n\r\n").await?;
    socket.shutdown().await
}

/// One HTTP/1.1 chunk, written without copying the shared event bytes.
async fn write_chunk(socket: &mut TcpStream, mut bytes: Bytes) -> std::io::Result<()> {
    let mut line = [0u8; 18];
    let mut size = chunk_size_line(bytes.len(), &mut line);
    let mut tail: &[u8] = b"\r\n";
    while !size.is_empty() || bytes.has_remaining() || !tail.is_empty() {
        let slices = [IoSlice::new(size), IoSlice::new(&bytes), IoSlice::new(tail)];
        let mut n = socket.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_size = n.min(size.len());
        size = &size[from_size..];
        n -= from_size;
        let from_bytes = n.min(bytes.len());
        bytes.advance(from_bytes);
        n -= from_bytes;
        tail = &tail[n.min(tail.len())..];
    }
    Ok(())
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
