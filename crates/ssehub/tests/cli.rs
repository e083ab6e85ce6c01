//! `ssehub parse` run as a real process, as a user would run it.

use std::io::Write;
use std::process::{Command, Stdio};

fn parse(stdin: &[u8]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .arg("parse")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ssehub");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_readme_example() {
    let out = parse(b"data: a\r\ndata: b\n\nid: 7\nevent: x\ndata\n\n");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"type": "message", "data": "a\nb", "last_event_id": ""}),
            serde_json::json!({"type": "x", "data": "", "last_event_id": "7"}),
        ]
    );
}

#[test]
fn invalid_utf8_is_printed_as_replacement_characters() {
    let out = parse(b"\xEF\xBB\xBFdata: \xFF\xE4\xBD\xA0\n\nretry: 3000\n");
    assert_eq!(
        out,
        "{\"type\":\"message\",\"data\":\"\u{FFFD}\u{4F60}\",\"last_event_id\":\"\"}\n{\"retry\":3000}\n"
    );
}

mod common;

fn ssehub(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(args)
        .output()
        .expect("run ssehub")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_commands_work_against_a_running_hub() {
    let hub = common::spawn_hub(&["--retry", "100ms", "--max-lifetime", "300ms"]).await;
    let url = hub.url.clone();
    let subscriber = Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args([
            "subscribe",
            "--hub",
            &url,
            "--last-event-id",
            "earliest",
            "tasks/7",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    for (data, extra) in [
        ("one", vec![]),
        ("多行\n第二行 🎉", vec!["--type", "progress"]),
        ("done", vec!["--final"]),
    ] {
        let mut args = vec!["publish", "--hub", &url, "-t", "tasks/7", "-d", data];
        args.extend(extra);
        // The subscriber lives through a lifetime reconnect before each
        // publish: its stream ends every 300 ms, and it comes back.
        let http = reqwest::Client::new();
        let opened = common::wait_for_stats(&http, &url, "a subscriber", |s| s["connections"] == 1)
            .await["opened"]
            .as_u64()
            .unwrap();
        common::wait_for_stats(&http, &url, "a reconnect", |s| {
            s["connections"] == 1 && s["opened"].as_u64() > Some(opened)
        })
        .await;
        let out = ssehub(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Data from stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(["publish", "--hub", &url, "-t", "other"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8(out.stdout).unwrap().trim().is_empty());

    // The subscriber exits by itself after `complete`.
    let out = tokio::task::spawn_blocking(move || subscriber.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["type"].as_str().unwrap(), l["data"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("message", "one"),
            ("progress", "多行\n第二行 🎉"),
            ("message", "done"),
            ("complete", "tasks/7")
        ]
    );
}

#[test]
fn publish_reports_hub_errors_and_fails() {
    let out = ssehub(&[
        "publish",
        "--hub",
        "http://127.0.0.1:9",
        "-t",
        "x",
        "-d",
        "y",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ssehub:"));
}

/// The order every setting is taken in, through the real binary and real
/// environment variables: flag, then `SSEHUB_*`, then the file, then the
/// default; a boolean flag switches off what the file switched on.
#[test]
fn serve_takes_each_setting_from_flag_then_environment_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ssehub.toml");
    std::fs::write(
        &file,
        "heartbeat = \"5s\"\nretry = \"6s\"\nhistory-size = 7\ndev = true\nadmin-token = \"0123456789abcdef-file\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args([
            "serve",
            "--print-config",
            "--heartbeat",
            "2s",
            "--dev=false",
        ])
        .arg("--config")
        .arg(&file)
        .env("SSEHUB_HEARTBEAT", "3s")
        .env("SSEHUB_RETRY", "4s")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let file_key = |key: &str| format!("# {}: {key}", file.display());
    for line in [
        "heartbeat = \"2s\"  # --heartbeat".to_owned(),
        "retry = \"4s\"  # SSEHUB_RETRY".to_owned(),
        format!("history-size = \"7\"  {}", file_key("history-size")),
        "dev = \"false\"  # --dev".to_owned(),
        "max-body = \"1MiB\"  # default".to_owned(),
        format!(
            "# admin-token = \"<redacted>\"  {}",
            file_key("admin-token")
        ),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }
    assert!(!text.contains("0123456789abcdef"), "{text}");

    // What it prints is itself a valid config file.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &text).unwrap();
    let again = Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(["serve", "--print-config", "--config"])
        .arg(&printed)
        .output()
        .unwrap();
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.contains("heartbeat = \"2s\""), "{again}");

    // A bad value names where it came from; an empty one is refused (a
    // variable that expanded to nothing must not silently drop a setting).
    for (variable, value, message) in [
        (
            "SSEHUB_QUEUE_SIZE",
            "0",
            "SSEHUB_QUEUE_SIZE: must be greater than 0",
        ),
        ("SSEHUB_HEARTBEAT", "", "SSEHUB_HEARTBEAT: is empty"),
    ] {
        let bad = Command::new(env!("CARGO_BIN_EXE_ssehub"))
            .args(["serve", "--print-config"])
            .env(variable, value)
            .output()
            .unwrap();
        assert!(!bad.status.success());
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
}

/// SIGTERM the moment the hub says it listens is a clean shutdown, not a
/// kill: scripts stop a hub they just started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_start_is_a_clean_shutdown() {
    for _ in 0..5 {
        let mut hub = common::spawn_hub(&[]).await;
        assert!(hub.terminate(), "the hub did not exit cleanly");
    }
}

/// A log that cannot be written (stderr on a full disk; /dev/full fails
/// every write with ENOSPC) neither stops the hub nor its shutdown. (The
/// log's own fallback used to panic: the hub exited at start, or its
/// signal task died before it could shut the hub down.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_log_stops_neither_the_hub_nor_its_shutdown() {
    use std::io::BufRead;
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
        ])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(full)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().strip_prefix("ssehub listening on ").unwrap();
    let id = ssehub_client::Hub::new(url)
        .publish(&ssehub_client::Publish::new("logs", "still serving"))
        .await
        .unwrap();
    assert_eq!(id, "#1");
    common::send_signal(child.id(), 15);
    let status = common::wait_until("an exit after SIGTERM", || {
        let exited = child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "{status}");
}

/// An LLM's answer piped into `ssehub publish --stream` reaches `ssehub
/// subscribe --stream` piece by piece while it is written, and the reader
/// exits when the writer's end of input closes the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_commands_pipe_an_answer_through_a_durable_stream() {
    use std::io::Read;
    let hub = common::spawn_hub(&[]).await;
    let mut writer = Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(["publish", "--hub", &hub.url, "--stream", "answers/1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let mut input = writer.stdin.take().unwrap();
    input.write_all(b"Hello").unwrap();
    input.flush().unwrap();
    // The stream exists and holds the first piece while the writer goes on.
    let http = reqwest::Client::new();
    let stream_url = format!("{}/v1/stream/answers/1", hub.url);
    common::wait_until("the first piece appended", || {
        let (http, url) = (http.clone(), stream_url.clone());
        async move {
            let body = http.get(format!("{url}?offset=-1")).send().await.ok()?;
            (body.text().await.ok()? == "Hello").then_some(())
        }
    })
    .await;
    let mut reader = Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(["subscribe", "--hub", &hub.url, "--stream", "answers/1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the reader");
    let mut output = reader.stdout.take().unwrap();
    let mut first = [0u8; 5];
    output.read_exact(&mut first).unwrap();
    assert_eq!(
        &first, b"Hello",
        "the reader has the first piece before the rest is written"
    );
    input.write_all(b", world.\n").unwrap();
    drop(input);
    let written = writer.wait_with_output().unwrap();
    assert!(written.status.success());
    assert_eq!(
        String::from_utf8(written.stdout).unwrap().trim(),
        "0000000000000000_0000000000000014",
        "the writer prints the stream's end"
    );
    let mut rest = String::new();
    output.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, ", world.\n");
    assert!(
        reader.wait().unwrap().success(),
        "the reader ends at the close"
    );
    let head = http.head(&stream_url).send().await.unwrap();
    assert_eq!(head.headers()["stream-closed"], "true");
}
