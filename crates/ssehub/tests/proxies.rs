//! The hub behind a real nginx and a real HAProxy, each running the
//! configuration shipped in `deploy/` (only its two addresses replaced):
//! a stream, heartbeats, a resume, a publish and the client's address, all
//! through the proxy.
//!
//! The client connects from 127.0.0.2, the proxy reaches the hub from
//! 127.0.0.1, and only 127.0.0.1 is a trusted proxy: so the address the hub
//! names is the one the proxy saw, whatever the client claims.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{ChildHub, PATIENCE, wait_until};

/// A proxy process of the test's own, stopped by its pid when dropped.
struct Proxy {
    /// (Taken when dropped.)
    child: Option<Child>,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    /// SIGTERM, so that nginx's master stops its workers too (SIGKILL
    /// would leave them running); SIGKILL if it has not exited in time.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        common::send_signal(pid, 15);
        let (exited, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = child.wait();
            let _ = exited.send(());
        });
        if wait.recv_timeout(PATIENCE).is_err() {
            common::send_signal(pid, 9);
            let _ = wait.recv();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shipped configuration, with the test's addresses.
fn shipped(file: &str, listen: (&str, String), hub: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(listen.0), "{file} has {:?}", listen.0);
    assert!(text.contains("127.0.0.1:8080"), "{file} names the hub");
    text.replace(listen.0, &listen.1)
        .replace("127.0.0.1:8080", &hub.to_string())
}

fn is_root() -> bool {
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    unsafe { geteuid() == 0 }
}

async fn nginx(hub: SocketAddr) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let site = shipped(
        "nginx/ssehub.conf",
        ("listen 80;", format!("listen 127.0.0.1:{port};")),
        hub,
    );
    std::fs::write(dir.path().join("ssehub.conf"), site).unwrap();
    let d = dir.path().display();
    // Run as root (CI), nginx's workers would otherwise switch to nobody,
    // who cannot reach the test's directory.
    let user = if is_root() { "user root;" } else { "" };
    let main = format!(
        "daemon off;\n{user}\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         include {d}/ssehub.conf;\n}}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
    let child = Command::new("nginx")
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
        .stdout(Stdio::null())
        .spawn()
        .expect("nginx (apt install nginx)");
    started(child, port, dir).await
}

async fn haproxy(hub: SocketAddr) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = shipped(
        "haproxy/ssehub.cfg",
        ("bind :80", format!("bind 127.0.0.1:{port}")),
        hub,
    );
    let file = dir.path().join("haproxy.cfg");
    std::fs::write(&file, config).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&file)
        .stdout(Stdio::null())
        .spawn()
        .expect("haproxy (apt install haproxy)");
    started(child, port, dir).await
}

/// Waits until the proxy answers for the hub.
async fn started(child: Child, port: u16, dir: tempfile::TempDir) -> Proxy {
    let proxy = Proxy {
        child: Some(child),
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let ready = format!("{}/readyz", proxy.url);
    wait_until("the proxy to pass /readyz on", || async {
        let answer = reqwest::get(&ready).await.ok()?;
        (answer.status() == 200).then_some(())
    })
    .await;
    proxy
}

/// A client on 127.0.0.2, claiming to be someone else.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap()
}

async fn read_until(response: &mut reqwest::Response, got: &mut String, what: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !got.contains(what) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("waited for {what:?}, got {got:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended before {what:?}: {got:?}"));
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

async fn publish(http: &reqwest::Client, url: &str, data: &str) -> String {
    let answer = http
        .post(format!("{url}/.well-known/mercure"))
        .form(&[("topic", "through"), ("data", data)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "publish through the proxy");
    answer.text().await.unwrap()
}

async fn everything_works_through(proxy: &Proxy, hub: &ChildHub) {
    let http = client();
    let stream_url = format!(
        "{}/.well-known/mercure?topic=through&client_id=behind-proxy",
        proxy.url
    );
    let mut stream = http
        .get(&stream_url)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut got = String::new();
    read_until(&mut stream, &mut got, "\n\n").await;

    // Live, unbuffered: each event arrives on its own.
    let first = publish(&http, &proxy.url, "one").await;
    read_until(&mut stream, &mut got, "data: one\n\n").await;
    // A heartbeat (--heartbeat 500ms) comes through too.
    let beat = got.len();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !got[beat..].contains(":\n") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("a heartbeat in time")
            .unwrap()
            .expect("the stream stays open");
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }

    // The hub names the client as the proxy saw it, not as it claimed.
    let clients: serde_json::Value = reqwest::get(format!("{}/v1/clients", hub.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let remote = clients["clients"][0]["remote_addr"]
        .as_str()
        .unwrap_or_default();
    assert!(remote.starts_with("127.0.0.2"), "{clients}");
    drop(stream);

    // A resume through the proxy: Last-Event-ID reaches the hub.
    publish(&http, &proxy.url, "two").await;
    publish(&http, &proxy.url, "three").await;
    let mut resumed = http
        .get(format!("{}/.well-known/mercure?topic=through", proxy.url))
        .header("last-event-id", &first)
        .send()
        .await
        .unwrap();
    let mut again = String::new();
    read_until(&mut resumed, &mut again, "data: three\n\n").await;
    assert!(again.contains("data: two\n\n"), "{again}");
    assert!(!again.contains("data: one\n\n"), "{again}");
}

fn hub_args() -> Vec<&'static str> {
    vec!["--heartbeat", "500ms", "--trusted-proxies", "127.0.0.1/32"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_with_the_shipped_configuration() {
    let hub = common::spawn_hub(&hub_args()).await;
    let proxy = nginx(hub.addr).await;
    everything_works_through(&proxy, &hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_with_the_shipped_configuration() {
    let hub = common::spawn_hub(&hub_args()).await;
    let proxy = haproxy(hub.addr).await;
    everything_works_through(&proxy, &hub).await;
}
