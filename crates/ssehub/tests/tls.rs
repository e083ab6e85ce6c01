//! HTTPS with HTTP/2 and HTTP/1.1, a certificate replaced while the hub
//! runs, and cleartext HTTP/2 (h2c): a real hub process, real handshakes.

mod common;

use common::tls::{H2, Pair, connect, read_until};
use common::{ChildHub, wait_until};
use http_body_util::BodyExt;

struct TlsHub {
    hub: ChildHub,
    pair: Pair,
    _dir: tempfile::TempDir,
}

async fn tls_hub(extra: &[&str]) -> TlsHub {
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new(dir.path());
    let cert = pair.cert.display().to_string();
    let key = pair.key.display().to_string();
    let args = [&["--tls-cert", &cert, "--tls-key", &key], extra].concat();
    let hub = common::spawn_hub(&args).await;
    assert!(hub.url.starts_with("https://"), "{}", hub.url);
    TlsHub {
        hub,
        pair,
        _dir: dir,
    }
}

/// Publishes over an HTTP/2 connection; the answer must be 200.
async fn publish(h2: &H2, topic: &str, data: &str) {
    let form = "application/x-www-form-urlencoded";
    let body = format!("topic={topic}&data={data}");
    let answer = h2
        .send(
            "POST",
            "/.well-known/mercure",
            &[("content-type", form)],
            &body,
        )
        .await;
    assert_eq!(answer.status(), 200);
}

impl TlsHub {
    async fn h2(&self) -> H2 {
        let handshake = connect(self.hub.addr, &[&self.pair.der], &[b"h2", b"http/1.1"]).await;
        assert_eq!(handshake.alpn.as_deref(), Some(&b"h2"[..]));
        H2::over(handshake.stream).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_many_streams_share_one_http2_connection() {
    let hub = tls_hub(&[]).await;
    let h2 = hub.h2().await;
    // Twelve streams on one connection: twice what HTTP/1.1 allows a
    // browser per origin.
    let mut streams = Vec::new();
    for i in 0..12 {
        let answer = h2
            .send(
                "GET",
                &format!("/.well-known/mercure?topic=room&n={i}"),
                &[],
                "",
            )
            .await;
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["content-type"], "text/event-stream");
        let mut body = answer.into_body();
        let mut got = String::new();
        read_until(&mut body, &mut got, |b| b.contains("\n\n")).await;
        streams.push((body, got));
    }
    // A publish on the same connection reaches all of them.
    publish(&h2, "room", "over-h2").await;
    for (body, got) in &mut streams {
        read_until(body, got, |b| b.contains("data: over-h2\n\n")).await;
    }
    // The hub counts one TCP connection (and the streams one by one).
    let metrics = h2.send("GET", "/metrics", &[], "").await;
    let text = metrics.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("\nssehub_connections 1\n"), "{text}");
    assert!(text.contains("\nssehub_streams 12\n"), "{text}");
    // Ending one stream leaves the others open.
    drop(streams.pop());
    publish(&h2, "room", "still-here").await;
    for (body, got) in &mut streams {
        read_until(body, got, |b| b.contains("data: still-here\n\n")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_http11_still_streams() {
    let hub = tls_hub(&[]).await;
    let handshake = connect(hub.hub.addr, &[&hub.pair.der], &[b"http/1.1"]).await;
    assert_eq!(handshake.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (mut send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(handshake.stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/.well-known/mercure?topic=t")
        .header("host", "127.0.0.1")
        .header("last-event-id", "earliest")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let answer = send.send_request(request).await.unwrap();
    assert_eq!(answer.status(), 200);
    let mut body = answer.into_body();
    let mut got = String::new();
    read_until(&mut body, &mut got, |b| b.starts_with("retry: ")).await;
    // (An HTTPS client with no ALPN at all gets HTTP/1.1 too.)
    let none = connect(hub.hub.addr, &[&hub.pair.der], &[]).await;
    assert_eq!(none.alpn, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_serves_new_connections_and_open_streams_stay() {
    let mut hub = tls_hub(&[]).await;
    let h2 = hub.h2().await;
    let answer = h2
        .send("GET", "/.well-known/mercure?topic=k", &[], "")
        .await;
    let mut body = answer.into_body();
    let mut got = String::new();
    read_until(&mut body, &mut got, |b| b.contains("\n\n")).await;
    let first = hub.pair.der.clone();

    // Replaced on disk: seen within the file check's interval.
    hub.pair.renew();
    let renewed = hub.pair.der.clone();
    assert_ne!(first, renewed);
    wait_until("the new certificate on a new connection", || async {
        let handshake = connect(hub.hub.addr, &[&first, &renewed], &[b"h2"]).await;
        (handshake.presented == renewed).then_some(())
    })
    .await;
    // The stream opened before it goes on, over its old handshake.
    publish(&hub.h2().await, "k", "after-renewal").await;
    read_until(&mut body, &mut got, |b| b.contains("data: after-renewal")).await;
}

/// A child's log lines, read as they come.
fn follow_log(hub: &mut ChildHub) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = hub.child.stderr.take().unwrap();
    let into = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut log = into.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_broken_one_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let mut pair = Pair::new(dir.path());
    let (cert, key) = (
        pair.cert.display().to_string(),
        pair.key.display().to_string(),
    );
    let mut hub = common::try_spawn_logging(
        &[
            "--dev",
            "--store",
            "memory",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        "info",
    )
    .unwrap();
    let log = follow_log(&mut hub);
    let first = pair.der.clone();
    pair.renew();
    common::send_signal(hub.child.id(), 1);
    let renewed = pair.der.clone();
    wait_until("the new certificate", || async {
        // (Both trusted: until the reload, the hub presents the first.)
        let handshake = connect(hub.addr, &[&first, &renewed], &[b"h2"]).await;
        (handshake.presented == renewed).then_some(())
    })
    .await;
    wait_until("the reload logged", || async {
        log.lock()
            .unwrap()
            .contains("TLS certificate reloaded (SIGHUP)")
            .then_some(())
    })
    .await;

    // A broken file is not taken: the certificate in use stays.
    std::fs::write(&pair.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    common::send_signal(hub.child.id(), 1);
    wait_until("the failed reload logged", || async {
        log.lock()
            .unwrap()
            .contains("not reloaded (SIGHUP)")
            .then_some(())
    })
    .await;
    let handshake = connect(hub.addr, &[&renewed], &[b"h2"]).await;
    assert_eq!(handshake.presented, renewed);
    assert!(hub.child.try_wait().unwrap().is_none(), "the hub runs on");
}

#[tokio::test]
async fn tls_settings_that_cannot_work_stop_startup_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new(dir.path());
    let other = tempfile::tempdir().unwrap();
    let other = Pair::new(other.path());
    let cert = pair.cert.display().to_string();
    let key = pair.key.display().to_string();
    let wrong_key = other.key.display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--tls-cert", &cert],
            "--tls-cert and --tls-key go together",
        ),
        (
            &["--tls-cert", "/no/such.pem", "--tls-key", &key],
            "--tls-cert /no/such.pem",
        ),
        (
            &["--tls-cert", &key, "--tls-key", &key],
            "no certificate in it",
        ),
        (&["--tls-cert", &cert, "--tls-key", &wrong_key], "--tls-key"),
    ];
    for (args, wanted) in cases {
        // (The memory store: a durable one would be opened in the working
        // directory before the settings are refused.)
        let error = match common::try_spawn_hub(&[&["--store", "memory"], args].concat()) {
            Ok(_) => panic!("started with {args:?}"),
            Err(error) => error,
        };
        assert!(error.contains(wanted), "{args:?}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_handshake_is_closed() {
    let hub = tls_hub(&["--header-read-timeout", "500ms"]).await;
    let mut silent = tokio::net::TcpStream::connect(hub.hub.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(
        common::PATIENCE,
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("closed by the hub");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Plain HTTP to the HTTPS port is not served either.
    let mut plain = tokio::net::TcpStream::connect(hub.hub.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        common::PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut answer),
    )
    .await
    .expect("closed");
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_serves_cleartext_http2_beside_http11() {
    let hub = common::spawn_hub(&["--h2c"]).await;
    let tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let h2 = H2::over(tcp).await;
    let mut streams = Vec::new();
    for _ in 0..8 {
        let answer = h2
            .send("GET", "/.well-known/mercure?topic=c", &[], "")
            .await;
        assert_eq!(answer.status(), 200);
        let mut body = answer.into_body();
        let mut got = String::new();
        read_until(&mut body, &mut got, |b| b.contains("\n\n")).await;
        streams.push((body, got));
    }
    // HTTP/1.1 on the same port still takes the lean path.
    let mut raw =
        common::RawStream::open(&format!("{}/.well-known/mercure?topic=c", hub.url), &[]).await;
    raw.read_until("the first bytes", |b| b.contains("\n\n"))
        .await;
    let published = reqwest::Client::new()
        .post(format!("{}/.well-known/mercure", hub.url))
        .form(&[("topic", "c"), ("data", "both")])
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200);
    for (body, got) in &mut streams {
        read_until(body, got, |b| b.contains("data: both")).await;
    }
    raw.read_until("the event", |b| b.contains("data: both"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_h2c_the_http2_preface_is_refused_with_json() {
    let hub = common::spawn_hub(&[]).await;
    let mut tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        common::PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut answer),
    )
    .await
    .expect("closed")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"error\":\"bad_request\""), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_http2_each_stream_counts_against_the_per_address_limit() {
    let hub = tls_hub(&["--max-connections-per-address", "5"]).await;
    let h2 = hub.h2().await;
    let mut open = Vec::new();
    for _ in 0..5 {
        let answer = h2
            .send("GET", "/.well-known/mercure?topic=l", &[], "")
            .await;
        assert_eq!(answer.status(), 200);
        open.push(answer);
    }
    // One connection, but five streams already: the sixth is refused.
    let refused = h2
        .send("GET", "/.well-known/mercure?topic=l", &[], "")
        .await;
    assert_eq!(refused.status(), 429);
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("too_many_connections_from_address"),
        "{body:?}"
    );
    drop(open.pop());
    // Its place is free again once the hub sees the stream gone.
    wait_until("a free place", || async {
        let answer = h2
            .send("GET", "/.well-known/mercure?topic=l", &[], "")
            .await;
        (answer.status() == 200).then_some(answer)
    })
    .await;
}
