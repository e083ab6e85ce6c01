//! Starts a real hub on 127.0.0.1:0 and talks to it over real sockets.
#![allow(dead_code)] // each test file uses its own part of this harness

use std::time::Duration;

pub mod redis;
pub mod tls;

use ssehub::config::Config;
use ssehub::http::Server;
use ssehub_client::{Connection, Hub, ParsedEvent, Publish, Subscribe};

/// How long any single wait in a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestHub {
    pub server: Server,
    /// The durable store's directory, removed when the hub is dropped.
    pub data_dir: Option<tempfile::TempDir>,
    pub url: String,
    pub client: Hub,
    pub http: reqwest::Client,
}

/// A hub with test-friendly settings, adjusted by `tweak`. The store is
/// memory, or durable in a fresh directory when `SSEHUB_TEST_STORE=durable`
/// (the test command runs the suites both ways).
pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestHub {
    let durable = std::env::var("SSEHUB_TEST_STORE").as_deref() == Ok("durable");
    let data_dir = durable.then(|| tempfile::tempdir().unwrap());
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        dev: true,
        store: if durable {
            ssehub::config::StoreKind::Durable
        } else {
            ssehub::config::StoreKind::Memory
        },
        data_dir: data_dir
            .as_ref()
            .map_or_else(Default::default, |d| d.path().to_owned()),
        ..Config::default()
    };
    tweak(&mut config);
    let server = Server::start(config).await.expect("start hub");
    let url = format!("http://{}", server.addr);
    TestHub {
        client: Hub::new(&url),
        url,
        server,
        data_dir,
        http: reqwest::Client::new(),
    }
}

impl TestHub {
    pub fn endpoint(&self) -> String {
        format!("{}/.well-known/mercure", self.url)
    }

    pub async fn publish(&self, topic: &str, data: &str) -> String {
        self.client
            .publish(&Publish::new(topic, data))
            .await
            .expect("publish")
    }

    pub async fn publish_with(&self, event: Publish) -> String {
        self.client.publish(&event).await.expect("publish")
    }

    /// POSTs a raw body; returns status and body text.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("get");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn stats(&self) -> serde_json::Value {
        self.get_json("/v1/stats").await.1
    }

    pub async fn connect(&self, topics: &[&str], last_event_id: Option<&str>) -> Connection {
        let mut options = Subscribe::topics(topics.iter().copied());
        options.last_event_id = last_event_id.map(str::to_owned);
        self.client.connect(&options).await.expect("connect")
    }

    /// Waits until the hub's own counters satisfy `done` (in-process, so it
    /// works without admin credentials too).
    pub async fn wait_for_hub(&self, wanted: &str, done: impl Fn(&ssehub::hub::Stats) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let stats = self.server.hub.stats();
            if done(&stats) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited for {wanted}: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a stats field reaches a value.
    pub async fn wait_for_stat(&self, field: &str, value: u64) {
        let wanted = format!("stats.{field} to reach {value}");
        wait_for_stats(&self.http, &self.url, &wanted, |stats| {
            stats[field].as_u64() == Some(value)
        })
        .await;
    }
}

/// Polls the hub at `url` for its stats until `done` holds for them, and
/// returns them; fails the test, saying what was `wanted`, after [`PATIENCE`].
pub async fn wait_for_stats(
    http: &reqwest::Client,
    url: &str,
    wanted: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let response = http.get(format!("{url}/v1/stats")).send().await;
        let stats = response.expect("stats").json().await.expect("stats JSON");
        if done(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited for {wanted}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks `check` until it gives a value, and returns it; fails the test,
/// saying what was `wanted`, after [`PATIENCE`].
pub async fn wait_until<T, F: Future<Output = Option<T>>>(
    wanted: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited for {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event on a connection, failing the test after [`PATIENCE`].
pub async fn next_event(connection: &mut Connection) -> ParsedEvent {
    tokio::time::timeout(PATIENCE, connection.next_event())
        .await
        .expect("an event in time")
        .expect("stream still open")
        .expect("no stream error")
}

/// Asserts the stream ends (the hub closed it) within [`PATIENCE`], and
/// returns any events that came before the end.
pub async fn events_until_end(connection: &mut Connection) -> Vec<ParsedEvent> {
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, connection.next_event())
            .await
            .expect("the stream should end in time")
        {
            Some(Ok(event)) => events.push(event),
            Some(Err(err)) => panic!("stream error: {err}"),
            None => return events,
        }
    }
}

/// An event stream read as text: the body of the answer, after HTTP's own
/// framing, exactly as the hub wrote it.
pub struct RawStream {
    pub response: reqwest::Response,
    pub body: String,
}

impl RawStream {
    /// Subscribes at `url` with `headers`; the answer's head has arrived.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> RawStream {
        let mut request = reqwest::Client::new().get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(PATIENCE, request.send())
            .await
            .expect("the answer's head in time")
            .expect("subscribe");
        RawStream {
            response,
            body: String::new(),
        }
    }

    /// Reads until `done` holds for the body (what was `wanted`), and returns
    /// the body; fails the test after [`PATIENCE`], or if the stream ends
    /// first.
    pub async fn read_until(&mut self, wanted: &str, done: impl Fn(&str) -> bool) -> &str {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done(&self.body) {
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("waited for {wanted}: {:?}", self.body))
                .expect("the stream broke");
            let chunk = chunk
                .unwrap_or_else(|| panic!("the stream ended before {wanted}: {:?}", self.body));
            self.body
                .push_str(std::str::from_utf8(&chunk).expect("utf-8 stream"));
        }
        &self.body
    }

    /// Reads until the hub ends the stream; fails the test after
    /// [`PATIENCE`].
    pub async fn read_to_end(mut self) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("the stream did not end: {:?}", self.body))
                .expect("the stream broke");
            match chunk {
                Some(chunk) => self
                    .body
                    .push_str(std::str::from_utf8(&chunk).expect("utf-8 stream")),
                None => return self.body,
            }
        }
    }
}

/// Waits until a connection knows its resume position (the hub sends one
/// in a stream's first bytes, before any event), and returns it.
pub async fn wait_for_position(connection: &mut Connection) -> String {
    while connection.last_event_id().is_empty() {
        tokio::time::timeout(PATIENCE, connection.next())
            .await
            .expect("the stream's first bytes in time")
            .expect("stream still open")
            .expect("no stream error");
    }
    connection.last_event_id().to_owned()
}

pub fn data_of(events: &[ParsedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

/// Opens a subscription over a bare TCP socket and reads the response head,
/// so a test controls reading (or not reading) exactly.
pub async fn raw_subscribe(
    addr: std::net::SocketAddr,
    query: &str,
    receive_buffer: Option<u32>,
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!("GET /.well-known/mercure?{query} HTTP/1.1\r\nHost: hub\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        assert_eq!(n, 1, "connection closed before the response head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// The `ssehub` binary serving on a free port, as a child process that is
/// killed when this is dropped.
pub struct ChildHub {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub url: String,
}

/// Starts `ssehub serve --dev --listen 127.0.0.1:0 ARGS...` (with the memory
/// store unless ARGS choose one) and waits for it to print its address.
pub async fn spawn_hub(args: &[&str]) -> ChildHub {
    spawn_hub_with(args, None).await
}

/// Like [`spawn_hub`], with the hub's open-files limit (soft and hard) set
/// to `open_files` when given.
pub async fn spawn_hub_with(args: &[&str], open_files: Option<u64>) -> ChildHub {
    spawn_hub_prepared(args, move || match open_files {
        Some(limit) => rlimit::setrlimit(rlimit::Resource::NOFILE, limit, limit),
        None => Ok(()),
    })
    .await
}

/// Like [`spawn_hub`], with `prepare` run in the child before it becomes
/// the hub (between fork and exec: only async-signal-safe calls).
pub async fn spawn_hub_prepared(
    args: &[&str],
    prepare: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> ChildHub {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let store: &[&str] = if args.contains(&"--store") {
        &[]
    } else {
        &["--store", "memory"]
    };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ssehub"));
    command
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .args(store)
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped());
    // SAFETY: callers pass only async-signal-safe calls (setrlimit,
    // signal); nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(prepare);
    }
    let mut child = command.spawn().expect("start ssehub");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("ssehub listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let addr = address_of(&url);
    ChildHub { child, addr, url }
}

/// Like [`spawn_hub`], but returns the hub's error output if it fails to start.
pub fn try_spawn_hub(args: &[&str]) -> Result<ChildHub, String> {
    try_spawn_logging(&[&["--dev"], args].concat(), "error")
}

/// `ssehub serve --listen 127.0.0.1:0 ARGS...` (not `--dev` unless ARGS
/// say so) with `RUST_LOG=rust_log`; its log stays on the child's stderr
/// pipe. Returns the hub's error output if it fails to start.
pub fn try_spawn_logging(args: &[&str], rust_log: &str) -> Result<ChildHub, String> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ssehub");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    match line.trim().strip_prefix("ssehub listening on ") {
        Some(url) => Ok(ChildHub {
            addr: address_of(url),
            url: url.to_owned(),
            child,
        }),
        None => {
            let out = child.wait_with_output().unwrap();
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// The address of a URL the hub prints, http:// or https://.
fn address_of(url: &str) -> std::net::SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.parse()
        .unwrap_or_else(|_| panic!("no address in {url:?}"))
}

impl ChildHub {
    /// SIGTERM, then waits for the exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        send_signal(self.child.id(), 15);
        self.child.wait().unwrap().success()
    }

    pub fn rss_bytes(&self) -> u64 {
        rss_of(&format!("/proc/{}/status", self.child.id()))
    }
}

impl Drop for ChildHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory from a /proc status file, in bytes.
pub fn rss_of(status_path: &str) -> u64 {
    let status = std::fs::read_to_string(status_path).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Creates a durable stream of that type at `url`, asserting `201`.
pub async fn create_stream(http: &reqwest::Client, url: &str, content_type: &str) {
    let created = http
        .put(url)
        .header("content-type", content_type)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
}

/// kill(2).
pub fn send_signal(pid: u32, signal: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, signal: i32) -> i32;
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}
