//! The two transports of a subscription stream keep one contract
//! (`src/http/stream.rs`): the direct path, which serves a subscription that
//! is the first request of its connection, and hyper's, which serves one that
//! follows another request on a kept-alive connection. Each test says which
//! path it takes and checks the path's own fingerprint on the answer (the
//! direct path closes the connection after the stream and sends no `date`;
//! hyper sends a `date` and keeps the connection), so it cannot silently
//! test the other one.

mod common;

use std::net::SocketAddr;

use common::{PATIENCE, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Hyper,
}

/// Two tests of one check, one per path, each named for its path.
macro_rules! on_each_path {
    ($check:ident: $direct:ident, $hyper:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $direct() {
            $check(Path::Direct).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $hyper() {
            $check(Path::Hyper).await;
        }
    };
}

/// A raw HTTP/1.1 client connection, reading exactly what the hub sends.
struct Raw {
    socket: TcpStream,
    buffered: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr, receive_buffer: Option<u32>) -> Raw {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        Raw {
            socket: socket.connect(addr).await.unwrap(),
            buffered: Vec::new(),
        }
    }

    /// Opens a connection that will carry a subscription on `path`: for
    /// hyper's, a first request (a health check) goes before it.
    async fn for_path(addr: SocketAddr, path: Path, receive_buffer: Option<u32>) -> Raw {
        let mut raw = Raw::connect(addr, receive_buffer).await;
        if path == Path::Hyper {
            raw.send("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n").await;
            let (status, headers) = raw.head().await;
            assert_eq!(status, 200);
            let length: usize = header(&headers, "content-length").unwrap().parse().unwrap();
            raw.bytes(length).await;
        }
        raw
    }

    async fn send(&mut self, request: &str) {
        self.socket.write_all(request.as_bytes()).await.unwrap();
    }

    async fn subscribe(&mut self, query: &str) -> (u16, Vec<(String, String)>) {
        self.send(&format!(
            "GET /.well-known/mercure?{query} HTTP/1.1\r\nHost: hub\r\n\r\n"
        ))
        .await;
        self.head().await
    }

    /// Reads more from the socket; false at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, self.socket.read(&mut buf))
            .await
            .expect("the hub answered in time")
            .unwrap_or(0);
        self.buffered.extend_from_slice(&buf[..n]);
        n > 0
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buffered.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buffered.drain(..end + 2).take(end).collect();
                return String::from_utf8(line).unwrap();
            }
            assert!(self.fill().await, "the connection closed mid-line");
        }
    }

    async fn bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buffered.len() < n {
            assert!(self.fill().await, "the connection closed mid-body");
        }
        self.buffered.drain(..n).collect()
    }

    async fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let status_line = self.line().await;
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                return (status, headers);
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }

    /// The next chunk of a chunked body; empty for the last one.
    async fn chunk(&mut self) -> String {
        let size = usize::from_str_radix(&self.line().await, 16).unwrap();
        let data = self.bytes(size + 2).await;
        assert!(data.ends_with(b"\r\n"));
        String::from_utf8(data[..size].to_vec()).unwrap()
    }

    /// Chunks until the body holds `wanted`.
    async fn body_until(&mut self, wanted: &str) -> String {
        let mut body = String::new();
        while !body.contains(wanted) {
            let chunk = self.chunk().await;
            assert!(
                !chunk.is_empty(),
                "the stream ended before {wanted:?}: {body:?}"
            );
            body.push_str(&chunk);
        }
        body
    }

    /// Whether the hub closes the connection, draining what it sent first.
    async fn is_closed(&mut self) -> bool {
        let mut sink = vec![0u8; 64 * 1024];
        tokio::time::timeout(PATIENCE, async {
            loop {
                match self.socket.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Asserts the headers the contract promises, and the fingerprint of `path`.
fn assert_stream_head(path: Path, headers: &[(String, String)]) {
    assert_eq!(header(headers, "content-type"), Some("text/event-stream"));
    assert_eq!(header(headers, "cache-control"), Some("no-cache"));
    assert_eq!(header(headers, "x-accel-buffering"), Some("no"));
    assert_eq!(header(headers, "transfer-encoding"), Some("chunked"));
    assert_fingerprint(path, headers);
}

fn assert_fingerprint(path: Path, headers: &[(String, String)]) {
    match path {
        Path::Direct => {
            assert_eq!(header(headers, "connection"), Some("close"), "{headers:?}");
            assert_eq!(header(headers, "date"), None, "{headers:?}");
        }
        Path::Hyper => {
            assert_eq!(header(headers, "connection"), None, "{headers:?}");
            assert!(header(headers, "date").is_some(), "{headers:?}");
        }
    }
}

/// The same stream on either path: the head, the opening bytes, live
/// events, and the clean end the hub gives a stream whose topic finished.
async fn a_stream_carries_the_same_bytes(path: Path) {
    let hub = start(|c| c.retry = std::time::Duration::from_millis(1500)).await;
    hub.publish("elsewhere", "unrelated").await;
    let mut raw = Raw::for_path(hub.server.addr, path, None).await;
    let (status, headers) = raw.subscribe("match=job").await;
    assert_eq!(status, 200);
    assert_stream_head(path, &headers);
    // The opening bytes: the retry hint, then the position marker.
    assert_eq!(raw.body_until("\n\n").await, "retry: 1500\nid: #1\n\n");
    hub.wait_for_stat("connections", 1).await;
    hub.publish("job", "working").await;
    assert_eq!(raw.body_until("\n\n").await, "id: #2\ndata: working\n\n");
    let mut done = ssehub_client::Publish::new("job", "done");
    done.is_final = true;
    hub.publish_with(done).await;
    let rest = raw.body_until("event: complete").await;
    assert_eq!(rest, "id: #3\ndata: done\n\nevent: complete\ndata: job\n\n");
    // The hub ended the stream: the last chunk, then the connection's fate
    // is the path's own.
    assert_eq!(raw.chunk().await, "");
    match path {
        Path::Direct => assert!(raw.is_closed().await),
        Path::Hyper => {
            raw.send("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n").await;
            assert_eq!(raw.head().await.0, 200, "the connection is still usable");
        }
    }
    hub.wait_for_stat("connections", 0).await;
}

on_each_path!(a_stream_carries_the_same_bytes:
    direct_path_carries_the_stream_and_ends_it_cleanly,
    hyper_path_carries_the_stream_and_ends_it_cleanly);

/// A refused subscription gets the same status, JSON body and CORS headers
/// on either path.
async fn a_refusal_is_the_same_json(path: Path) -> (u16, Vec<(String, String)>, String) {
    let hub = start(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let mut raw = Raw::for_path(hub.server.addr, path, None).await;
    raw.send("GET /.well-known/mercure?match=a&topic=%7Bunclosed HTTP/1.1\r\nHost: hub\r\nOrigin: https://app.example\r\n\r\n")
        .await;
    let (status, headers) = raw.head().await;
    let length: usize = header(&headers, "content-length").unwrap().parse().unwrap();
    let body = String::from_utf8(raw.bytes(length).await).unwrap();
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        header(&headers, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(header(&headers, "vary"), Some("origin"));
    if path == Path::Direct {
        assert_eq!(header(&headers, "connection"), Some("close"));
    } else {
        assert!(header(&headers, "date").is_some());
    }
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_hyper_paths_refuse_a_bad_subscription_with_the_same_json() {
    let (direct_status, _, direct_body) = a_refusal_is_the_same_json(Path::Direct).await;
    let (hyper_status, _, hyper_body) = a_refusal_is_the_same_json(Path::Hyper).await;
    assert_eq!((direct_status, &direct_body), (hyper_status, &hyper_body));
    assert_eq!(direct_status, 400);
    let json: serde_json::Value = serde_json::from_str(&direct_body).unwrap();
    assert_eq!(json["error"], "invalid_selector", "{json}");
}

/// A reader too slow to read anything more is dropped by the hub, and its
/// connection is closed, whichever path carries it: on hyper's the body is
/// not even polled while the socket does not drain.
async fn a_stalled_reader_is_dropped_and_closed(path: Path) {
    let hub = start(|c| {
        c.queue_size = 8;
        c.history_size = 10;
    })
    .await;
    let mut stalled = open_stalled(&hub, path, 4096, "match=stall").await;
    let payload = "x".repeat(16 * 1024);
    for i in 0..200 {
        hub.publish("stall", &format!("{i}:{payload}")).await;
        if hub.stats().await["dropped_slow"] == 1 {
            break;
        }
    }
    assert_dropped_and_closed(&hub, path, &mut stalled, 1).await;
}

/// A subscription on `path` from a socket with a small receive buffer, that
/// will never be read from.
async fn open_stalled(hub: &common::TestHub, path: Path, buffer: u32, query: &str) -> Raw {
    let mut stalled = Raw::for_path(hub.server.addr, path, Some(buffer)).await;
    let (status, headers) = stalled.subscribe(query).await;
    assert_eq!(status, 200);
    assert_fingerprint(path, &headers);
    hub.wait_for_stat("connections", 1).await;
    stalled
}

/// The hub dropped the `nth` slow reader, and let its stream go while the
/// reader still reads nothing: the socket was dropped (what it held is
/// still in flight, then the end).
async fn assert_dropped_and_closed(hub: &common::TestHub, path: Path, stalled: &mut Raw, nth: u64) {
    hub.wait_for_stat("dropped_slow", nth).await;
    hub.wait_for_stat("connections", 0).await;
    assert!(
        stalled.is_closed().await,
        "stalled reader {nth}: its connection on the {path:?} path was not closed"
    );
}

on_each_path!(a_stalled_reader_is_dropped_and_closed:
    direct_path_closes_a_stalled_reader_the_hub_dropped,
    hyper_path_closes_a_stalled_reader_the_hub_dropped);

/// The same when the stream's very first bytes (a replay of a large
/// history) do not fit in the socket: hyper then never polls the stream
/// again, and only its connection task can see the kill. Several rounds, as
/// the order in which that task first looks is not fixed.
async fn a_stalled_replay_is_dropped_and_closed(path: Path) {
    let hub = start(|c| {
        c.queue_size = 8;
        c.history_size = 100;
    })
    .await;
    let payload = "r".repeat(100 * 1024);
    for i in 0..40 {
        hub.publish("replay", &format!("{i}:{payload}")).await;
    }
    for round in 1..=6u64 {
        let query = "match=replay&lastEventID=earliest";
        let mut stalled = open_stalled(&hub, path, 1024, query).await;
        for i in 0..12 {
            hub.publish("replay", &format!("live {round}.{i}")).await;
        }
        assert_dropped_and_closed(&hub, path, &mut stalled, round).await;
    }
}

on_each_path!(a_stalled_replay_is_dropped_and_closed:
    direct_path_closes_a_reader_stalled_by_its_replay,
    hyper_path_closes_a_reader_stalled_by_its_replay);
