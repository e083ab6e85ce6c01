//! The peers measured beside ssehub (nginx + nchan, Pushpin), as
//! `bench/peers/setup` runs them. That script owns their lives: it starts
//! them, writes a pid file for each process it starts, restarts and stops
//! them through those files. This module only reads the pid files (to count
//! a peer's memory and CPU time, children included) and asks the script for
//! fresh processes between rounds. Nothing here looks a process up by name.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::servers::ServerArgs;

/// `$TMPDIR/ssehub-bench-peers`, as the setup script uses by default.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join("ssehub-bench-peers")
}

/// nginx's master (from its pid file) and its workers.
pub fn nchan_pids(servers: &ServerArgs) -> Vec<u32> {
    pid_file(&servers.peers_dir, "nchan.pid")
        .map(family)
        .unwrap_or_default()
}

/// Pushpin's runner and what it runs (condure, which holds the client
/// connections, the proxy and the handler), and zurl, its HTTP client. The
/// origin is not counted.
pub fn pushpin_pids(servers: &ServerArgs) -> Vec<u32> {
    ["pushpin.pid", "zurl.pid"]
        .iter()
        .filter_map(|name| pid_file(&servers.peers_dir, name))
        .flat_map(family)
        .collect()
}

/// Fresh nginx workers (nginx keeps and reuses the memory of earlier rounds).
pub fn reload_nchan(servers: &ServerArgs) -> std::io::Result<()> {
    setup(servers, "reload-nchan")
}

/// Fresh Pushpin processes (it has no reload that starts new workers).
pub fn restart_pushpin(servers: &ServerArgs) -> std::io::Result<()> {
    setup(servers, "restart-pushpin")
}

fn setup(servers: &ServerArgs, action: &str) -> std::io::Result<()> {
    let script = &servers.peers_setup;
    let status = Command::new(script)
        .arg(action)
        .env("SSEHUB_BENCH_PEERS_DIR", &servers.peers_dir)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| std::io::Error::other(format!("{}: {e}", script.display())))?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "{} {action} failed",
            script.display()
        )));
    }
    Ok(())
}

fn pid_file(dir: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(dir.join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `root` and every process below it, from the parent ids in /proc.
fn family(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The parent is the second field after the command name's ")".
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            Some((pid, ppid.parse().ok()?))
        })
        .collect();
    if !parents.iter().any(|(pid, _)| *pid == root) {
        return Vec::new();
    }
    let mut family = vec![root];
    let mut i = 0;
    while i < family.len() {
        let parent = family[i];
        family.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    family
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_family_is_a_process_and_its_descendants() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let family = super::family(std::process::id());
        assert_eq!(family[0], std::process::id());
        assert!(family.contains(&child.id()), "{family:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(super::family(u32::MAX).is_empty());
    }
}
