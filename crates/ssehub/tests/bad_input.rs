//! I7: bad input gets a clear 4xx with a JSON error body, and nothing is stored.

mod common;

use common::start;

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// Sends a publish that must be refused with `status` and `code`, and checks
/// that nothing was published or stored.
async fn refused(
    hub: &common::TestHub,
    content_type: &str,
    body: impl Into<reqwest::Body>,
    status: u16,
    code: &str,
) {
    let before = hub.stats().await;
    let (got_status, text) = hub.post("/.well-known/mercure", content_type, body).await;
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text:?}"));
    assert_eq!(
        (got_status, json["error"].as_str()),
        (status, Some(code)),
        "{json}"
    );
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {json}"
    );
    let after = hub.stats().await;
    assert_eq!(
        after["published"], before["published"],
        "something was published"
    );
    assert_eq!(
        after["history_events"], before["history_events"],
        "something was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i7_every_bad_publish_is_refused_with_a_json_error_and_nothing_is_stored() {
    let hub = start(|c| {
        c.max_body = 1024;
        c.max_topics = 3;
        c.max_topic_length = 64;
    })
    .await;
    hub.publish("ok", "one good event").await;

    // Missing topic.
    refused(&hub, FORM, "data=x", 400, "missing_topic").await;
    refused(&hub, JSON, r#"{"data":"x"}"#, 400, "missing_topic").await;
    // Invalid topic.
    refused(&hub, FORM, "topic=&data=x", 400, "invalid_topic").await;
    refused(
        &hub,
        FORM,
        format!("topic={}&data=x", "t".repeat(65)),
        413,
        "topic_too_long",
    )
    .await;
    refused(&hub, FORM, "topic=a%0Ab&data=x", 400, "invalid_topic").await;
    // Too many topics.
    refused(
        &hub,
        FORM,
        "topic=a&topic=b&topic=c&topic=d",
        413,
        "too_many_topics",
    )
    .await;
    // CR, LF or NUL in the id; CR or LF in the type.
    for bad in ["a%0Ab", "a%0Db", "a%00b"] {
        refused(&hub, FORM, format!("topic=t&id={bad}"), 400, "invalid_id").await;
    }
    refused(
        &hub,
        JSON,
        r#"{"topic":"t","id":"x\ny"}"#,
        400,
        "invalid_id",
    )
    .await;
    for bad in ["a%0Ab", "a%0Db"] {
        refused(
            &hub,
            FORM,
            format!("topic=t&type={bad}"),
            400,
            "invalid_type",
        )
        .await;
    }
    refused(
        &hub,
        JSON,
        r#"{"topic":"t","type":"x\r\ndata: injected"}"#,
        400,
        "invalid_type",
    )
    .await;
    // Ids made of digits are the hub's, `earliest` means all history, and
    // `urn:ssehub:` ids are the hub's own words (a `replaced` stream's id).
    refused(&hub, FORM, "topic=t&id=42", 400, "invalid_id").await;
    refused(&hub, FORM, "topic=t&id=earliest", 400, "invalid_id").await;
    refused(
        &hub,
        FORM,
        "topic=t&id=urn:ssehub:replaced",
        400,
        "invalid_id",
    )
    .await;
    refused(
        &hub,
        FORM,
        "topic=t&id=urn%3Assehub%3Aother",
        400,
        "invalid_id",
    )
    .await;
    // The hub's own control events cannot be imitated, nor the browser's
    // own events (EventSource would call onerror/onopen).
    for control in ["complete", "reset", "replaced", "error", "open"] {
        let body = format!("topic=t&type={control}");
        refused(&hub, FORM, body, 400, "invalid_type").await;
    }
    // Invalid UTF-8 in a field.
    refused(&hub, FORM, "topic=t&data=%FF%FE", 400, "invalid_utf8").await;
    refused(
        &hub,
        JSON,
        b"{\"topic\":\"t\",\"data\":\"\xff\"}".to_vec(),
        400,
        "invalid_json",
    )
    .await;
    // Oversized body (the limit is 1 KiB here), declared or not.
    refused(
        &hub,
        FORM,
        format!("topic=t&data={}", "x".repeat(2000)),
        413,
        "body_too_large",
    )
    .await;
    // Unknown fields: a form's are ignored (Mercure), JSON's refused.
    refused(
        &hub,
        JSON,
        r#"{"topic":"t","colour":"red"}"#,
        400,
        "unknown_field",
    )
    .await;
    // Malformed values.
    refused(&hub, FORM, "topic=t&retain=maybe", 400, "invalid_boolean").await;
    refused(&hub, FORM, "topic=t&retry=soon", 400, "invalid_retry").await;
    refused(&hub, FORM, "topic=t&data=1&data=2", 400, "duplicate_field").await;
    refused(&hub, JSON, "{not json", 400, "invalid_json").await;
    // Unknown or missing content type.
    refused(
        &hub,
        "text/plain",
        "topic=t",
        415,
        "unsupported_content_type",
    )
    .await;
    refused(&hub, "", "topic=t", 415, "unsupported_content_type").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i7_an_oversized_chunked_body_is_refused_without_content_length() {
    let hub = start(|c| c.max_body = 1024).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10)
        .map(|_| {
            Ok(b"topic=t&data="
                .iter()
                .chain(&[b'x'; 300])
                .copied()
                .collect())
        })
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    refused(&hub, FORM, body, 413, "body_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i7_bad_subscriptions_are_refused_with_json_errors() {
    let hub = start(|c| c.max_topics = 2).await;
    for (query, status, code) in [
        ("", 400, "missing_topic"),
        ("topic=a{b", 400, "invalid_selector"),
        ("topic=a}", 400, "invalid_selector"),
        ("topic={a}{b}", 400, "invalid_selector"),
        ("match=a&match=b&match=c", 400, "too_many_topics"),
        ("match=urn:ssehub:client:someone", 403, "reserved_topic"),
        ("match=a&client_id=has%20space", 400, "invalid_client_id"),
        ("match=%FF", 400, "invalid_utf8"),
    ] {
        let (got, json) = hub.get_json(&format!("/.well-known/mercure?{query}")).await;
        assert_eq!(
            (got, json["error"].as_str()),
            (status, Some(code)),
            "{query}: {json}"
        );
    }
    assert_eq!(hub.stats().await["connections"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_attempts_never_add_a_field_on_the_wire() {
    // Data may contain anything; it must arrive as data, never as fields.
    let hub = start(|_| {}).await;
    let mut stream = hub.connect(&["inj"], None).await;
    let evil = "x\nid: 999\nevent: admin\r\ndata: y\r\rretry: 1\n\nz";
    hub.publish("inj", evil).await;
    let event = common::next_event(&mut stream).await;
    assert_eq!(event.data, sse_codec::normalize_line_breaks(evil));
    assert_eq!(event.event_type, "message");
    assert_ne!(event.last_event_id, "999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_get_json_errors() {
    let hub = start(|_| {}).await;
    let (status, json) = hub.get_json("/nope").await;
    assert_eq!((status, json["error"].as_str()), (404, Some("not_found")));
    let response = hub.http.put(hub.endpoint()).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["error"], "method_not_allowed");
}

/// What the HTTP layer itself refuses on a connection's first request gets
/// a JSON error too: a head too large, too many headers, a malformed line or
/// header, and ambiguous body framing (what request smuggling relies on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = start(|_| {}).await;
    let many_headers: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        (
            format!("GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(17_000)),
            431,
            "headers_too_large",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\n{many_headers}\r\n"),
            431,
            "headers_too_large",
        ),
        ("HELLO\r\n\r\n".to_owned(), 400, "bad_request"),
        ("GET /healthz HTTP/1.1\r\nX-Nul: a\0b\r\n\r\n".to_owned(), 400, "bad_request"),
        (
            "POST /.well-known/mercure HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
        (
            "POST /.well-known/mercure HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
        (
            "POST /.well-known/mercure HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
        (
            "POST /.well-known/mercure HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
        (
            "POST /.well-known/mercure HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
        (
            "GET /healthz HTTP/1.1\r\nContent-Length: 18446744073709551614\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
    ];
    for (request, status, code) in cases {
        let mut socket = tokio::net::TcpStream::connect(hub.server.addr)
            .await
            .unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(common::PATIENCE, socket.read_to_end(&mut answer))
            .await
            .expect("an answer and the end of the connection")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        let what = &request[..request.len().min(60)];
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what:?}: {answer}"
        );
        assert!(
            answer.contains("content-type: application/json"),
            "{what:?}: {answer}"
        );
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(json["error"], code, "{what:?}: {json}");
    }
    assert_eq!(hub.stats().await["published"], 0);
}

/// A client that sends its whole (too large) body before reading, as many
/// HTTP libraries do, reads its 413: the hub reads and throws away a
/// refused body of up to 8 MiB before answering, instead of closing with it
/// unread (which resets the connection, answer and all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_sent_whole_still_gets_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = start(|c| c.max_body = 1024).await;
    // Far more than the sockets hold: the write ends only if the hub reads.
    let body = format!("topic=t&data={}", "x".repeat(4 << 20));
    for framing in ["content-length", "chunked"] {
        let mut socket = tokio::net::TcpStream::connect(hub.server.addr)
            .await
            .unwrap();
        let mut request = "POST /.well-known/mercure HTTP/1.1\r\nHost: hub\r\n\
            Content-Type: application/x-www-form-urlencoded\r\n"
            .to_owned();
        let mut payload = body.clone().into_bytes();
        if framing == "chunked" {
            request.push_str("Transfer-Encoding: chunked\r\n\r\n");
            payload = format!("{:x}\r\n", payload.len())
                .into_bytes()
                .into_iter()
                .chain(payload)
                .chain(*b"\r\n0\r\n\r\n")
                .collect();
        } else {
            request.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
        }
        socket.write_all(request.as_bytes()).await.unwrap();
        tokio::time::timeout(common::PATIENCE, socket.write_all(&payload))
            .await
            .expect("the hub read the body")
            .expect("the body was written whole");
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(common::PATIENCE, socket.read(&mut answer))
            .await
            .expect("an answer")
            .expect("the answer, not a reset");
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{framing}: {answer}");
        assert!(answer.contains("body_too_large"), "{framing}: {answer}");
    }
    assert_eq!(hub.stats().await["published"], 0);
}
