//! The Durable Streams surface beyond what the official conformance suite
//! checks (that suite runs in the test command too, see
//! tests/durable-streams): producers' exactly-once through `kill -9`,
//! streams through restarts, tokens, limits, and bad input.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{ChildHub, TestHub, create_stream as create, spawn_hub, start};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

const PUBLISHER_SECRET: &str = "publisher-secret-for-tests-only";
const SUBSCRIBER_SECRET: &str = "subscriber-secret-for-tests-only";

fn stream_url(base: &str, name: &str) -> String {
    format!("{base}/v1/stream/{name}")
}

async fn durable_hub(dir: &std::path::Path) -> ChildHub {
    spawn_hub(&["--store", "durable", "--data-dir", dir.to_str().unwrap()]).await
}

/// One producer append; the status.
async fn produce(http: &reqwest::Client, url: &str, epoch: u64, seq: u64, body: &str) -> u16 {
    http.post(url)
        .header("content-type", "text/plain")
        .header("producer-id", "writer-1")
        .header("producer-epoch", epoch.to_string())
        .header("producer-seq", seq.to_string())
        .body(body.to_owned())
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn read_all(http: &reqwest::Client, url: &str) -> (u16, String) {
    let response = http.get(format!("{url}?offset=-1")).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// §5.2.1: the producer state and the data are committed together, so a
/// producer that retries after the hub was killed mid-batch (not knowing
/// whether its last append landed) never gets it appended twice, and an
/// append that was acknowledged is there.
#[tokio::test]
async fn producers_retry_after_kill_9_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut hub = durable_hub(dir.path()).await;
    let url = stream_url(&hub.url, "answer");
    create(&http, &url, "text/plain").await;
    // Appends as fast as they are acknowledged; the hub is killed while
    // they go on, so the last one may or may not have landed.
    let writer = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let mut acknowledged = 0u64;
            for seq in 0..100_000u64 {
                if produce(&http, &url, 0, seq, &format!("{seq};")).await != 200 {
                    return acknowledged;
                }
                acknowledged = seq + 1;
            }
            acknowledged
        })
    };
    common::wait_until("some appends acknowledged", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let response = http.head(&url).send().await.ok()?;
            let tail = response
                .headers()
                .get("stream-next-offset")?
                .to_str()
                .ok()?;
            (tail != "0000000000000000_0000000000000000"
                && tail > "0000000000000000_0000000000000100")
                .then_some(())
        }
    })
    .await;
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    let acknowledged = writer.await.unwrap();
    assert!(acknowledged > 0);

    let hub = durable_hub(dir.path()).await;
    let url = stream_url(&hub.url, "answer");
    // The producer resends from its last acknowledged append on: that one
    // is a duplicate, the one after it either (it landed before the kill)
    // or new.
    assert_eq!(
        produce(&http, &url, 0, acknowledged - 1, "x").await,
        204,
        "an acknowledged append retried"
    );
    let mut seq = acknowledged;
    loop {
        match produce(&http, &url, 0, seq, &format!("{seq};")).await {
            204 => seq += 1, // landed before the kill, unacknowledged
            200 => break,
            other => panic!("seq {seq}: {other}"),
        }
    }
    assert!(seq <= acknowledged + 1, "at most one append was in flight");
    let (status, text) = read_all(&http, &url).await;
    assert_eq!(status, 200);
    let expected: String = (0..=seq).map(|s| format!("{s};")).collect();
    assert_eq!(text, expected, "every append once, in order");
}

/// A closed stream, its type, data and producers survive a restart; the
/// offsets handed out before it still read the same data.
#[tokio::test]
async fn streams_survive_a_restart_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut hub = durable_hub(dir.path()).await;
    let url = stream_url(&hub.url, "events/json");
    let created = http
        .put(&url)
        .header("content-type", "application/json")
        .header("stream-ttl", "3600")
        .body(r#"[{"n":1},{"n":2}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let middle = created.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_owned();
    let closed = http
        .post(&url)
        .header("content-type", "application/json")
        .header("stream-closed", "true")
        .body(r#"{"n":3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 204);
    assert!(hub.terminate());

    let hub = durable_hub(dir.path()).await;
    let url = stream_url(&hub.url, "events/json");
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["stream-closed"], "true");
    assert_eq!(head.headers()["stream-ttl"], "3600");
    assert_eq!(head.headers()["content-type"], "application/json");
    let (status, text) = read_all(&http, &url).await;
    assert_eq!(status, 200);
    let all: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(all, json!([{"n":1},{"n":2},{"n":3}]));
    let rest = http
        .get(format!("{url}?offset={middle}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.headers()["stream-closed"], "true");
    assert_eq!(rest.text().await.unwrap(), r#"[{"n":3}]"#);
    let refused = http
        .post(&url)
        .header("content-type", "application/json")
        .body("4")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409, "closed for good");
    let deleted = http.delete(&url).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    drop(hub);
    let hub = durable_hub(dir.path()).await;
    let (status, _) = read_all(&http, &stream_url(&hub.url, "events/json")).await;
    assert_eq!(status, 404, "a deletion is durable too");
}

fn token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn exp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600
}

/// Writes need a publisher token for the stream's URL, reads a subscriber
/// token for it; without `--dev` nobody goes without one.
#[tokio::test]
async fn tokens_decide_who_writes_and_who_reads() {
    let hub = start(|c| {
        c.dev = false;
        c.publisher_jwt_key = Some(PUBLISHER_SECRET.into());
        c.subscriber_jwt_key = Some(SUBSCRIBER_SECRET.into());
    })
    .await;
    let url = stream_url(&hub.url, "private/1");
    let topic = url.clone();
    let writer = token(
        PUBLISHER_SECRET,
        json!({"exp": exp(), "mercure": {"publish": [topic]}}),
    );
    let other_writer = token(
        PUBLISHER_SECRET,
        json!({"exp": exp(), "mercure": {"publish": [stream_url(&hub.url, "other")]}}),
    );
    let reader = token(
        SUBSCRIBER_SECRET,
        json!({"exp": exp(), "mercure": {"subscribe": [format!("{}/v1/stream/private/{{id}}", hub.url)]}}),
    );
    let other_reader = token(
        SUBSCRIBER_SECRET,
        json!({"exp": exp(), "mercure": {"subscribe": ["https://elsewhere.example/x"]}}),
    );
    let put = |auth: Option<String>| {
        let mut request = hub.http.put(&url).header("content-type", "text/plain");
        if let Some(auth) = auth {
            request = request.bearer_auth(auth);
        }
        request.send()
    };
    let refused = put(None).await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(put(Some(other_writer.clone())).await.unwrap().status(), 403);
    assert_eq!(put(Some(writer.clone())).await.unwrap().status(), 201);
    let appended = hub
        .http
        .post(&url)
        .bearer_auth(&writer)
        .header("content-type", "text/plain")
        .body("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 204);

    let get = |auth: Option<&str>| {
        let mut request = hub.http.get(format!("{url}?offset=-1"));
        if let Some(auth) = auth {
            request = request.bearer_auth(auth);
        }
        request.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some(&other_reader)).await.unwrap().status(), 403);
    assert_eq!(
        get(Some(&writer)).await.unwrap().status(),
        401,
        "a publisher key is not a subscriber key"
    );
    let read = get(Some(&reader)).await.unwrap();
    assert_eq!(read.status(), 200);
    assert!(
        read.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private"),
        "an answer for one reader is not for shared caches"
    );
    assert_eq!(read.text().await.unwrap(), "secret");
    let deleted = hub
        .http
        .delete(&url)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 401, "a reader cannot delete");

    // A fork copies its source: the token must cover the source too.
    let other = hub
        .http
        .put(stream_url(&hub.url, "other"))
        .bearer_auth(&other_writer)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 201);
    let forker = token(
        PUBLISHER_SECRET,
        json!({"exp": exp(), "mercure": {"publish": [format!("{}/v1/stream/private/{{id}}", hub.url)]}}),
    );
    let fork = |source: &'static str| {
        hub.http
            .put(stream_url(&hub.url, "private/copy"))
            .bearer_auth(&forker)
            .header("stream-forked-from", source)
            .send()
    };
    let refused = fork("/v1/stream/other").await.unwrap();
    assert_eq!(
        error_code(refused).await,
        (403, "insufficient_scope".into())
    );
    let forked = fork("/v1/stream/private/1").await.unwrap();
    assert_eq!(forked.status(), 201);
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "status {status}"
    );
    let body: Value = response.json().await.unwrap();
    (status, body["error"].as_str().unwrap_or("").to_owned())
}

/// Every bad request gets a 4xx with a JSON error, and changes nothing.
#[tokio::test]
async fn bad_input_gets_a_json_error_and_stores_nothing() {
    let hub = start(|c| c.stream_max_append = 1024).await;
    let http = &hub.http;
    let url = stream_url(&hub.url, "s");
    create(http, &url, "application/json").await;
    let post = |headers: &[(&str, &str)], body: Vec<u8>| {
        let mut request = http.post(&url).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let json = ("content-type", "application/json");
    // Headers, body, and the answer: status and code.
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![json], b"{\"a\":".to_vec(), 400, "invalid_json"),
        (vec![json], b"[]".to_vec(), 400, "empty_json_array"),
        (vec![json], vec![0xff, 0xfe], 400, "invalid_json"),
        (vec![json], Vec::new(), 400, "empty_body"),
        (vec![], b"1".to_vec(), 400, "missing_content_type"),
        (
            vec![("content-type", "text/plain")],
            b"1".to_vec(),
            409,
            "content_type_mismatch",
        ),
        (
            vec![json, ("producer-id", "p")],
            b"1".to_vec(),
            400,
            "incomplete_producer",
        ),
        (
            vec![
                json,
                ("producer-id", "p"),
                ("producer-epoch", "-1"),
                ("producer-seq", "0"),
            ],
            b"1".to_vec(),
            400,
            "invalid_producer",
        ),
        (
            vec![
                json,
                ("producer-id", "p"),
                ("producer-epoch", "9007199254740992"),
                ("producer-seq", "0"),
            ],
            b"1".to_vec(),
            400,
            "invalid_producer",
        ),
        (
            vec![
                json,
                ("producer-id", "p"),
                ("producer-epoch", "0"),
                ("producer-seq", "3"),
            ],
            b"1".to_vec(),
            409,
            "producer_seq_gap",
        ),
        (vec![json], vec![b'1'; 2048], 413, "body_too_large"),
    ];
    for (headers, body, status, code) in cases {
        let response = post(&headers, body).await.unwrap();
        assert_eq!(
            error_code(response).await,
            (status, code.to_owned()),
            "{headers:?}"
        );
    }
    for (query, code) in [
        ("offset=12", "invalid_offset"),
        (
            "offset=0000000000000000_0000000000000099",
            "offset_beyond_tail",
        ),
        ("offset=-1&live=websocket", "invalid_live"),
        ("live=sse", "missing_offset"),
    ] {
        let response = http.get(format!("{url}?{query}")).send().await.unwrap();
        assert_eq!(
            error_code(response).await,
            (400, code.to_owned()),
            "{query}"
        );
    }
    for (name, value, code) in [
        ("stream-ttl", "+60", "invalid_ttl"),
        ("stream-ttl", "1.5", "invalid_ttl"),
        ("stream-expires-at", "tomorrow", "invalid_expires_at"),
        (
            "stream-fork-offset",
            "0000000000000000_0000000000000000",
            "fork_offset_without_source",
        ),
    ] {
        let response = http
            .put(stream_url(&hub.url, "t"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(response).await, (400, code.to_owned()), "{name}");
    }
    let reserved = http
        .get(stream_url(&hub.url, "__ds/subscriptions/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(reserved).await, (501, "not_implemented".into()));
    let long_name = stream_url(&hub.url, &"n".repeat(2000));
    let response = http.put(long_name).send().await.unwrap();
    assert_eq!(
        error_code(response).await,
        (400, "stream_name_too_long".into())
    );
    // Nothing of that was stored, nor created.
    let (status, text) = read_all(http, &url).await;
    assert_eq!((status, text.as_str()), (200, "[]"));
    let head = http.head(stream_url(&hub.url, "t")).send().await.unwrap();
    assert_eq!(head.status(), 404);
}

/// `--max-streams` and `--streams-max-bytes` bound what anyone can make
/// the hub hold: 507, with nothing half-made.
#[tokio::test]
async fn limits_bound_the_streams_held() {
    let hub: TestHub = start(|c| {
        c.max_streams = 2;
        c.streams_max_bytes = 100;
    })
    .await;
    let http = &hub.http;
    for name in ["a", "b"] {
        let created = http.put(stream_url(&hub.url, name)).send().await.unwrap();
        assert_eq!(created.status(), 201);
    }
    let third = http.put(stream_url(&hub.url, "c")).send().await.unwrap();
    assert_eq!(error_code(third).await, (507, "streams_full".into()));
    let append = |n: usize| {
        http.post(stream_url(&hub.url, "a"))
            .header("content-type", "application/octet-stream")
            .body(vec![7u8; n])
            .send()
    };
    assert_eq!(append(60).await.unwrap().status(), 204);
    let over = append(60).await.unwrap();
    assert_eq!(error_code(over).await, (507, "streams_full".into()));
    // The room a deletion frees is there again.
    let deleted = http.delete(stream_url(&hub.url, "a")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let created = http.put(stream_url(&hub.url, "c")).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let appended = http
        .post(stream_url(&hub.url, "c"))
        .header("content-type", "application/octet-stream")
        .body(vec![1u8; 90])
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 204);
}

/// /metrics counts the streams, their data and the appends.
#[tokio::test]
async fn metrics_count_streams_data_and_appends() {
    let hub = start(|_| {}).await;
    let http = &hub.http;
    let url = stream_url(&hub.url, "measured");
    assert_eq!(http.put(&url).send().await.unwrap().status(), 201);
    for body in ["abc", "defg"] {
        let appended = http
            .post(&url)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(appended.status(), 204);
    }
    let text = http
        .get(format!("{}/metrics", hub.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for wanted in [
        "ssehub_durable_streams 1",
        "ssehub_durable_streams_data_bytes 7",
        "ssehub_durable_streams_appends_total 2",
    ] {
        assert!(lines.contains(&wanted), "{wanted} in\n{text}");
    }
}

/// What the attack on the streams found, each a regression test: a trailing
/// CR in SSE, reads of one large append, producers' state, and headers
/// that mean nothing or two things.
#[tokio::test]
async fn sse_frames_every_cr_and_large_appends_are_read_in_pieces() {
    let hub = start(|_| {}).await;
    let http = &hub.http;
    let url = stream_url(&hub.url, "progress");
    create(http, &url, "text/plain").await;
    for (body, close) in [("progress 10%\r", false), ("\r", false), ("done\r\n", true)] {
        let mut request = http.post(&url).header("content-type", "text/plain");
        if close {
            request = request.header("stream-closed", "true");
        }
        assert_eq!(request.body(body).send().await.unwrap().status(), 204);
    }
    let sse = sse_from_start(http, &url).await;
    // One event of all three appends: every line break (CR, LF or CRLF) is
    // a `data:` line of its own, so an EventSource rebuilds each as LF.
    assert!(
        sse.contains("event: data\ndata:progress 10%\ndata:\ndata:done\ndata:\n\n"),
        "{sse:?}"
    );

    // A CRLF where a 32 KiB piece would end is not cut in two (which SSE
    // would make two line breaks).
    let crlf = stream_url(&hub.url, "crlf");
    create(http, &crlf, "text/plain").await;
    let mut text = "a".repeat((32 << 10) - 1);
    text.push_str("\r\nb");
    let appended = http
        .post(&crlf)
        .header("content-type", "text/plain")
        .header("stream-closed", "true")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 204);
    let sse = sse_from_start(http, &crlf).await;
    let rebuilt: Vec<String> = sse
        .split("\n\n")
        .filter(|e| e.starts_with("event: data"))
        .map(|e| {
            let lines: Vec<&str> = e.lines().filter_map(|l| l.strip_prefix("data:")).collect();
            lines.join("\n")
        })
        .collect();
    assert_eq!(rebuilt.len(), 2, "in two pieces");
    assert_eq!(
        rebuilt.concat(),
        format!("{}\nb", "a".repeat((32 << 10) - 1))
    );

    // A 2.5 MiB append: catch-up reads of at most 1 MiB, SSE data events
    // of at most 32 KiB, and the pieces are the append.
    let big = stream_url(&hub.url, "big");
    create(http, &big, "application/octet-stream").await;
    let data: Vec<u8> = (0..(5usize << 19)).map(|i| (i % 251) as u8).collect();
    let appended = http
        .post(&big)
        .header("content-type", "application/octet-stream")
        .header("stream-closed", "true")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 204);
    let (mut read, mut offset, mut answers) = (Vec::new(), "-1".to_owned(), 0);
    loop {
        let response = http
            .get(format!("{big}?offset={offset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let closed = response.headers().get("stream-closed").is_some();
        offset = response.headers()["stream-next-offset"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.bytes().await.unwrap();
        assert!(body.len() <= 1 << 20, "{}", body.len());
        read.extend_from_slice(&body);
        answers += 1;
        if closed {
            break;
        }
        assert!(answers < 10, "the reads move on");
    }
    assert_eq!(answers, 3);
    assert!(read == data, "catch-up pieces are the append");
    let sse = sse_from_start(http, &big).await;
    use base64::Engine;
    let mut decoded = Vec::new();
    for event in sse.split("\n\n").filter(|e| e.starts_with("event: data")) {
        let text: String = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .collect();
        assert!(text.len() <= (32 << 10) * 4 / 3 + 4, "{}", text.len());
        decoded.extend(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
        );
    }
    assert!(decoded == data, "SSE pieces are the append");
}

/// A closed stream read in SSE mode from its start, to its end.
async fn sse_from_start(http: &reqwest::Client, url: &str) -> String {
    let response = http
        .get(format!("{url}?offset=-1&live=sse"))
        .send()
        .await
        .unwrap();
    response.text().await.unwrap()
}

/// The hub's memory once it stops growing: within 1 MiB for half a second
/// (25 samples, 20 ms apart).
async fn settled_rss(hub: &ChildHub) -> u64 {
    let mut samples = std::collections::VecDeque::new();
    common::wait_until("the hub's memory to settle", || {
        samples.push_back(hub.rss_bytes());
        if samples.len() > 25 {
            samples.pop_front();
        }
        let spread = samples.iter().max().unwrap() - samples.iter().min().unwrap();
        let rss = *samples.back().unwrap();
        let done = samples.len() == 25 && spread < 1 << 20;
        async move { done.then_some(rss) }
    })
    .await
}

/// SSE readers that never read hold a bounded share of the hub's memory,
/// however large the appends they are behind.
#[tokio::test]
async fn stalled_sse_readers_hold_little_memory() {
    use tokio::io::AsyncWriteExt;
    let hub = spawn_hub(&["--max-connections-per-address", "0"]).await;
    let http = reqwest::Client::new();
    let url = stream_url(&hub.url, "s");
    create(&http, &url, "application/octet-stream").await;
    for _ in 0..8 {
        let appended = http
            .post(&url)
            .header("content-type", "application/octet-stream")
            .body(vec![9u8; 1 << 20])
            .send()
            .await
            .unwrap();
        assert_eq!(appended.status(), 204);
    }
    let before = settled_rss(&hub).await;
    const READERS: usize = 100;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(hub.addr).await.unwrap();
        let request = "GET /v1/stream/s?offset=-1&live=sse HTTP/1.1\r\nHost: hub\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        readers.push(stream);
    }
    // Each reader's writer takes what it can, then waits on its socket.
    let grown = settled_rss(&hub).await.saturating_sub(before);
    // 8 MiB behind each; before the fix, each reader held about 5 MiB (an
    // append, base64 and framed, several times over).
    assert!(
        grown < (READERS as u64) * (512 << 10),
        "{READERS} stalled readers grew the hub by {} KiB",
        grown >> 10
    );
    drop(readers);
}

#[tokio::test]
async fn producers_and_headers_are_bounded() {
    let hub = start(|c| {
        c.stream_max_producers = 3;
        c.streams_max_bytes = 1000;
    })
    .await;
    let http = &hub.http;
    let url = stream_url(&hub.url, "p");
    create(http, &url, "text/plain").await;
    let produce = |id: String| {
        http.post(&url)
            .header("content-type", "text/plain")
            .header("producer-id", id)
            .header("producer-epoch", "0")
            .header("producer-seq", "0")
            .body("x")
            .send()
    };
    let long = produce("p".repeat(257)).await.unwrap();
    assert_eq!(error_code(long).await, (400, "invalid_producer".into()));
    for n in 0..3 {
        assert_eq!(produce(format!("writer-{n}")).await.unwrap().status(), 200);
    }
    let fourth = produce("writer-3".into()).await.unwrap();
    assert_eq!(error_code(fourth).await, (507, "too_many_producers".into()));
    // A producer's state counts against --streams-max-bytes, as data does.
    let other = stream_url(&hub.url, "q");
    let created = http.put(&other).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let mut refused = None;
    for n in 0..10 {
        let response = http
            .post(&other)
            .header("content-type", "application/octet-stream")
            .header("producer-id", format!("{n:0>200}"))
            .header("producer-epoch", "0")
            .header("producer-seq", "0")
            .body("x")
            .send()
            .await
            .unwrap();
        if response.status() != 200 {
            refused = Some((n, error_code(response).await));
            break;
        }
    }
    let (n, code) = refused.expect("refused before ten 200-byte producers");
    assert_eq!(code, (507, "streams_full".into()));
    assert!(n >= 2, "room for some: {n}");

    let duplicate = http
        .post(&url)
        .header("content-type", "text/plain")
        .header("stream-seq", "1")
        .header("Stream-Seq", "2")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(duplicate).await,
        (400, "duplicate_header".into())
    );
    let two_closes = http
        .post(&url)
        .header("stream-closed", "true")
        .header("stream-closed", "false")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(two_closes).await,
        (400, "duplicate_header".into())
    );
    for bad in [
        "   ",
        "text",
        "a/b/c",
        "/plain",
        "text/",
        &format!("text/{}", "x".repeat(300)),
    ] {
        let response = http
            .put(stream_url(&hub.url, "typed"))
            .header("content-type", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(response).await,
            (400, "invalid_content_type".into()),
            "{bad:?}"
        );
    }
    for far in [u64::MAX.to_string(), "99999999999999999999".to_owned()] {
        let far = http
            .get(format!("{url}?offset=now&live=long-poll&cursor={far}"))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(far).await, (400, "invalid_cursor".into()));
    }
}
