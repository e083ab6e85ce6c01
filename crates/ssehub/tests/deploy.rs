//! What `deploy/` ships: the example configuration and the systemd unit's
//! command line load, and the configuration runs a hub (with only what a
//! test machine must change: addresses, certificate, data directory).

mod common;

use std::path::{Path, PathBuf};

fn shipped(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file)
}

fn print_config(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(args)
        .arg("--print-config")
        .output()
        .unwrap()
}

#[test]
fn the_example_configuration_loads() {
    let config = shipped("ssehub.toml").display().to_string();
    let out = print_config(&["serve", "--config", &config]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("tls-cert = \"/etc/letsencrypt/"), "{text}");
    assert!(
        text.contains("metrics-listen = \"127.0.0.1:9090\""),
        "{text}"
    );
}

#[test]
fn the_units_command_line_loads_with_the_example_configuration() {
    let unit = std::fs::read_to_string(shipped("ssehub.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/ssehub"));
    let config = shipped("ssehub.toml").display().to_string();
    let args: Vec<&str> = words
        .map(|w| {
            if w == "/etc/ssehub/ssehub.toml" {
                config.as_str()
            } else {
                w
            }
        })
        .collect();
    let out = print_config(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The unit reloads with SIGHUP, which the hub takes as "read the
    // certificate again".
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_configuration_runs_a_hub() {
    let dir = tempfile::tempdir().unwrap();
    let pair = common::tls::Pair::new(dir.path());
    let config = shipped("ssehub.toml").display().to_string();
    let (cert, key) = (
        pair.cert.display().to_string(),
        pair.key.display().to_string(),
    );
    let data = dir.path().join("data").display().to_string();
    // (`--listen 127.0.0.1:0` comes from the harness.)
    let hub = common::try_spawn_logging(
        &[
            "--config",
            &config,
            "--metrics-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--data-dir",
            &data,
            "--admin-token",
            "an-admin-token-for-the-test",
            "--publisher-jwt-key",
            "a-publisher-key-for-the-test",
        ],
        "warn",
    )
    .expect("the example configuration starts");
    assert!(hub.url.starts_with("https://"), "{}", hub.url);
    let handshake = common::tls::connect(hub.addr, &[&pair.der], &[b"h2"]).await;
    let h2 = common::tls::H2::over(handshake.stream).await;
    let ready = h2.send("GET", "/readyz", &[], "").await;
    assert_eq!(ready.status(), 200);
    // anonymous-subscribers = false: a stream needs a token.
    let refused = h2
        .send("GET", "/.well-known/mercure?topic=a", &[], "")
        .await;
    assert_eq!(refused.status(), 401);
}
