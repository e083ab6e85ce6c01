//! What an operator runs the hub with: Prometheus metrics, health and
//! readiness, JSON logs, the listen backlog, and reconnections spread over
//! a window when the hub ends its streams.

mod common;

use std::time::Duration;

use common::{PATIENCE, RawStream};

/// `/metrics` as a Prometheus server parses it: each sample by name and
/// labels.
struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    async fn get(url: &str, token: Option<&str>) -> Scrape {
        let mut request = reqwest::Client::new().get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        assert!(
            text.ends_with("# EOF\n"),
            "an OpenMetrics exposition ends with # EOF"
        );
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("parses as Prometheus text"))
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.samples.iter().find_map(|s| {
            let matches =
                s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
            if !matches {
                return None;
            }
            match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(*v),
                prometheus_parse::Value::Histogram(buckets) => buckets.last().map(|b| b.count),
                prometheus_parse::Value::Summary(_) => None,
            }
        })
    }

    fn of(&self, name: &str) -> f64 {
        self.value(name, &[])
            .unwrap_or_else(|| panic!("no sample {name}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let hub = common::start(|_| {}).await;
    let metrics = format!("{}/metrics", hub.url);
    let before = Scrape::get(&metrics, None).await;
    assert_eq!(before.of("ssehub_events_published_total"), 0.0);
    assert_eq!(before.of("ssehub_streams"), 0.0);
    assert_eq!(before.of("ssehub_ready"), 1.0);
    assert_eq!(
        before.value(
            "ssehub_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    let mut live = hub.connect(&["m"], None).await;
    let first = hub.publish("m", "one").await;
    hub.publish("m", "two").await;
    hub.publish("m", "three").await;
    for _ in 0..3 {
        common::next_event(&mut live).await;
    }
    // A resume replays what came after its position.
    let mut resumed = hub.connect(&["m"], Some(&first)).await;
    for _ in 0..2 {
        common::next_event(&mut resumed).await;
    }
    // Refused: bad input twice, an unknown path once.
    for _ in 0..2 {
        let answer = hub
            .http
            .get(format!("{}?match_nonsense=x", hub.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400);
    }
    hub.http
        .get(format!("{}/no/such/page", hub.url))
        .send()
        .await
        .unwrap();

    let after = Scrape::get(&metrics, None).await;
    assert_eq!(after.of("ssehub_events_published_total"), 3.0);
    assert_eq!(after.of("ssehub_events_delivered_total"), 3.0);
    assert_eq!(after.of("ssehub_events_replayed_total"), 2.0);
    assert_eq!(after.of("ssehub_streams_opened_total"), 2.0);
    assert_eq!(after.of("ssehub_streams"), 2.0);
    assert!(after.of("ssehub_connections") >= 2.0);
    assert_eq!(after.of("ssehub_history_events"), 3.0);
    assert!(after.of("ssehub_history_bytes") > 0.0);
    assert_eq!(
        after.value(
            "ssehub_requests_rejected_total",
            &[("reason", "bad_input"), ("code", "unknown_matcher_type")]
        ),
        Some(2.0)
    );
    assert_eq!(
        after.value(
            "ssehub_requests_rejected_total",
            &[("reason", "bad_input"), ("code", "not_found")]
        ),
        Some(1.0)
    );
    // Three publishes timed (the histogram's count).
    assert_eq!(after.of("ssehub_publish_duration_seconds"), 3.0);
    if std::env::var("SSEHUB_TEST_STORE").as_deref() == Ok("durable") {
        assert!(after.of("ssehub_store_commit_duration_seconds") >= 1.0);
    }
    drop((live, resumed));
    hub.wait_for_hub("streams closed", |s| s.connections == 0)
        .await;
    assert_eq!(Scrape::get(&metrics, None).await.of("ssehub_streams"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_admin_credential_except_on_their_own_listener() {
    const ADMIN: &str = "admin-token-for-metrics";
    let hub = common::start(|c| {
        c.dev = false;
        c.admin_token = Some(ADMIN.into());
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let refused = hub
        .http
        .get(format!("{}/metrics", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");

    let guarded = Scrape::get(&format!("{}/metrics", hub.url), Some(ADMIN)).await;
    assert_eq!(
        guarded.value("ssehub_requests_rejected_total", &[("reason", "auth")]),
        Some(1.0)
    );
    let own = hub.server.metrics_addr.expect("bound");
    let open = Scrape::get(&format!("http://{own}/metrics"), None).await;
    assert_eq!(open.of("ssehub_ready"), 1.0);
    // That listener serves nothing else.
    let other = hub
        .http
        .get(format!("http://{own}/v1/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn healthz_says_alive_and_readyz_ready() {
    let hub = common::start(|_| {}).await;
    let (status, body) = hub.get_json("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = hub.get_json("/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
}

/// The hub as a child process with its log on a pipe.
struct Logged {
    hub: common::ChildHub,
}

impl Logged {
    fn start(args: &[&str]) -> Logged {
        let args = [&["--store", "memory"], args].concat();
        Logged {
            hub: common::try_spawn_logging(&args, "info").expect("the hub starts"),
        }
    }

    /// Stops the hub and returns its log.
    fn log(mut self) -> String {
        use std::io::Read;
        assert!(self.hub.terminate());
        let mut log = String::new();
        self.hub
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        log
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_line_per_refusal_and_never_a_secret() {
    const ADMIN: &str = "admin-secret-never-logged";
    const KEY: &str = "publisher-key-never-logged";
    const TOKEN: &str = "a-token-in-the-query-never-logged";
    let logged = Logged::start(&[
        "--log-format",
        "json",
        "--admin-token",
        ADMIN,
        "--publisher-jwt-key",
        KEY,
        "--allow-query-token",
    ]);
    let url = logged.hub.url.clone();
    let http = reqwest::Client::new();
    // Refused: a bad token in the query (on the direct stream path), a
    // wrong admin credential, a publish without a token (on hyper's).
    let answer = http
        .get(format!(
            "{url}/.well-known/mercure?topic=a&authorization={TOKEN}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let answer = http
        .get(format!("{url}/v1/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let answer = http
        .post(format!("{url}/.well-known/mercure"))
        .form(&[("topic", "a"), ("data", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let log = logged.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let refused: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "ssehub::rejected")
        .collect();
    assert_eq!(refused.len(), 3, "{log}");
    for line in &refused {
        assert_eq!(line["status"], 401, "{line}");
        assert!(line["code"].is_string(), "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
    }
    assert_eq!(refused[0]["path"], "/.well-known/mercure");
    assert_eq!(refused[1]["path"], "/v1/stats");
    assert_eq!(refused[2]["method"], "POST");
    for secret in [ADMIN, KEY, TOKEN] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[tokio::test]
async fn version_is_printed() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("ssehub {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The backlog of the hub's listening socket, as the kernel reports it
/// (`ss` shows a listener's backlog as its Send-Q).
fn backlog_of(port: u16) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"LISTEN"), "{text}");
    fields[2].parse().unwrap()
}

#[tokio::test]
async fn the_listen_backlog_is_the_one_set_and_by_default_the_kernels_most() {
    let hub = common::spawn_hub(&["--listen-backlog", "1000"]).await;
    assert_eq!(backlog_of(hub.addr.port()), 1000);
    let default = common::spawn_hub(&[]).await;
    let most: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(backlog_of(default.addr.port()), most.min(65535));
    assert!(
        most.min(65535) > 128,
        "deeper than the standard library's 128"
    );
}

/// The `retry:` of each stream's last words, once the hub shut down.
async fn retries_at_shutdown(spread: Duration, streams: usize) -> Vec<u64> {
    let hub = common::start(|c| {
        c.retry = Duration::from_secs(1);
        c.reconnect_spread = spread;
    })
    .await;
    let mut opened = Vec::new();
    for i in 0..streams {
        let url = format!("{}?topic=s{i}", hub.endpoint());
        opened.push(RawStream::open(&url, &[]).await);
    }
    hub.wait_for_hub("every stream open", |s| s.connections == streams as u64)
        .await;
    let shutdown = tokio::spawn(hub.server.shutdown());
    let mut retries = Vec::new();
    for stream in opened {
        let body = stream.read_to_end().await;
        let last = body
            .lines()
            .filter_map(|l| l.strip_prefix("retry: "))
            .next_back()
            .expect("a retry in the last words");
        retries.push(last.parse().unwrap());
    }
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .unwrap()
        .unwrap();
    retries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_streams_are_told_to_come_back_spread_over_the_window() {
    let spread = retries_at_shutdown(Duration::from_secs(10), 40).await;
    assert!(
        spread.iter().all(|r| (1000..11_000).contains(r)),
        "{spread:?}"
    );
    let mut distinct = spread.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 35, "spread apart: {spread:?}");
    // Over the window, not bunched: both halves have some.
    assert!(spread.iter().any(|r| *r < 6000) && spread.iter().any(|r| *r >= 6000));
    // Without a spread, every stream gets --retry.
    let same = retries_at_shutdown(Duration::ZERO, 5).await;
    assert_eq!(same, vec![1000; 5]);
}

#[tokio::test]
async fn a_bad_metrics_address_stops_startup_with_a_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{port}");
    let error = match common::try_spawn_hub(&["--store", "memory", "--metrics-listen", &metrics]) {
        Ok(_) => panic!("started on a taken port"),
        Err(error) => error,
    };
    assert!(
        error.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_stream_tells_the_figures_and_admits_few_watchers() {
    const ADMIN: &str = "admin-token-for-status";
    let hub = common::start(|c| {
        c.dev = false;
        c.admin_token = Some(ADMIN.into());
    })
    .await;
    let url = format!("{}/admin/events", hub.url);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("ops:{ADMIN}")
        )
    );
    let mut watchers = Vec::new();
    for _ in 0..8 {
        let mut stream = RawStream::open(&url, &[("authorization", &basic)]).await;
        assert_eq!(stream.response.status(), 200);
        let body = stream
            .read_until("a status event", |b| b.contains("\n\n"))
            .await
            .to_owned();
        let data = body
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("a data line");
        let figures: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(figures["ready"], true, "{figures}");
        assert!(figures["published"].is_u64(), "{figures}");
        assert!(body.contains("event: status\n"), "{body}");
        watchers.push(stream);
    }
    let ninth = hub
        .http
        .get(&url)
        .header("authorization", &basic)
        .send()
        .await
        .unwrap();
    assert_eq!(ninth.status(), 503);
    // The Bearer form works too, and a wrong password does not.
    // (A watcher's place is free once the hub sees it gone: at its next
    // write, within a second.)
    drop(watchers.pop());
    common::wait_until("a free place for a Bearer watcher", || async {
        let answer = hub.http.get(&url).bearer_auth(ADMIN).send().await.ok()?;
        (answer.status() == 200).then_some(())
    })
    .await;
    let wrong = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ops:nope")
    );
    let refused = hub
        .http
        .get(format!("{}/admin/", hub.url))
        .header("authorization", wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_without_tls_neither_kills_the_hub_nor_its_streams() {
    let mut hub = common::spawn_hub(&[]).await;
    let url = format!("{}/.well-known/mercure?topic=hup", hub.url);
    let mut stream = RawStream::open(&url, &[]).await;
    stream
        .read_until("the first bytes", |b| b.contains("\n\n"))
        .await;
    common::send_signal(hub.child.id(), 1);
    // Still serving, and the stream still gets events.
    common::wait_until("a publish after the SIGHUP", || async {
        let answer = reqwest::Client::new()
            .post(format!("{}/.well-known/mercure", hub.url))
            .form(&[("topic", "hup"), ("data", "after")])
            .send()
            .await
            .ok()?;
        (answer.status() == 200).then_some(())
    })
    .await;
    stream
        .read_until("the event", |b| b.contains("data: after"))
        .await;
    assert!(hub.child.try_wait().unwrap().is_none(), "the hub runs on");
    assert!(hub.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_bounds_its_connections_and_their_time() {
    let hub = common::start(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = hub.server.metrics_addr.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Sixteen idle connections hold every place...
    let mut idle = Vec::new();
    for _ in 0..16 {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        idle.push(socket);
    }
    // ...and each is closed once its head is late.
    for socket in &mut idle {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "an idle scraper is closed in time");
    }
    // Then the places are free again.
    common::wait_until("a scrape", || async {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("ssehub_ready 1").then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_status_page_and_metrics_are_never_shared_with_other_origins() {
    let hub = common::start(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    for path in ["/admin/", "/admin/events", "/metrics"] {
        let answer = hub
            .http
            .get(format!("{}{path}", hub.url))
            .header("origin", "https://app.example")
            .send()
            .await
            .unwrap();
        assert!(
            !answer.headers().contains_key("access-control-allow-origin"),
            "{path}"
        );
    }
    // (Other endpoints still answer the allowed origin.)
    let answer = hub
        .http
        .get(format!("{}/healthz", hub.url))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(answer.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_quoting_the_request_cannot_forge_a_log_line() {
    let logged = Logged::start(&["--dev"]);
    let url = logged.hub.url.clone();
    let forged = "FORGED line\n2026-12-02T06:00:00Z WARN ssehub: admin token accepted\u{1b}[2J";
    let body = serde_json::json!({ "topic": "a", forged: 1 }).to_string();
    let answer = reqwest::Client::new()
        .post(format!("{url}/.well-known/mercure"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let log = logged.log();
    assert!(log.contains("FORGED line"), "the refusal is logged: {log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-02T06:00:00Z")),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "no escape sequence: {log:?}");
}

#[test]
fn a_key_that_does_not_load_is_not_repeated_in_the_error() {
    let secret = "MyHmacSecretValue99-not-a-path";
    let args = [
        "--store",
        "memory",
        "--jwt-alg",
        "ES256",
        "--subscriber-jwt-key",
        secret,
    ];
    let error = match common::try_spawn_hub(&args) {
        Ok(_) => panic!("started with an unusable key"),
        Err(error) => error,
    };
    assert!(error.contains("no PEM key"), "{error}");
    assert!(!error.contains(secret), "{error}");
}
