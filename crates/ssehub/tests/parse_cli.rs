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
