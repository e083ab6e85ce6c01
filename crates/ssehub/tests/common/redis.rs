//! A real `redis-server` on a free port with a temporary directory, for
//! the cluster's tests. Every acknowledged write is on disk before Redis
//! answers (`appendonly yes`, `appendfsync always`), so a restart keeps
//! every event a publish acknowledged.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// `--replicaof`, for a replica.
    primary: Option<u16>,
    /// A member of a Redis Cluster (`--cluster-enabled yes`).
    clustered: bool,
}

impl Redis {
    /// Starts one; waits until it answers.
    pub async fn start() -> Redis {
        Redis::start_with(None).await
    }

    /// Starts a replica of `primary`; waits until it answers.
    pub async fn replica_of(primary: &Redis) -> Redis {
        Redis::start_with(Some(primary.port)).await
    }

    /// Three primaries joined into a Redis Cluster (`redis-cli --cluster
    /// create`), once it says its state is ok.
    pub async fn cluster_of_three() -> Vec<Redis> {
        let mut members = Vec::new();
        for _ in 0..3 {
            let mut member = Redis::unstarted(None);
            member.port = cluster_port();
            member.clustered = true;
            member.run().await;
            members.push(member);
        }
        let addresses: Vec<String> = members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(created.success(), "redis-cli --cluster create");
        for member in &members {
            super::wait_until("the Redis Cluster's state to be ok", || async {
                let info = member.command("CLUSTER INFO").await;
                info.contains("cluster_state:ok").then_some(())
            })
            .await;
        }
        members
    }

    async fn start_with(primary: Option<u16>) -> Redis {
        let mut redis = Redis::unstarted(primary);
        redis.run().await;
        redis
    }

    fn unstarted(primary: Option<u16>) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            primary,
            clustered: false,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn run(&mut self) {
        std::fs::create_dir_all(self.data()).unwrap();
        let mut command = Command::new("redis-server");
        if let Some(primary) = self.primary {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        if self.clustered {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.data())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--daemonize", "no", "--logfile", ""])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (the test command installs it)");
        self.child = Some(child);
        super::wait_until("redis-server to answer", || async {
            self.answers().await.then_some(())
        })
        .await;
    }

    /// Whether it answers PING.
    pub async fn answers(&self) -> bool {
        self.try_command("PING").await.as_deref() == Some("+PONG")
    }

    /// Sends one inline command (such as `FLUSHALL`) and returns its answer:
    /// a bulk string's body, or the first line of any other.
    pub async fn command(&self, command: &str) -> String {
        self.try_command(command)
            .await
            .expect("an answer from redis")
    }

    async fn try_command(&self, command: &str) -> Option<String> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let talk = async {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .ok()?;
            conn.write_all(format!("{command}\r\n").as_bytes())
                .await
                .ok()?;
            let mut conn = tokio::io::BufReader::new(conn);
            let mut line = String::new();
            conn.read_line(&mut line).await.ok()?;
            let line = line.trim_end().to_owned();
            let Some(length) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
                return Some(line);
            };
            let mut body = vec![0u8; length];
            conn.read_exact(&mut body).await.ok()?;
            Some(String::from_utf8_lossy(&body).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(1), talk)
            .await
            .ok()?
    }

    /// Pauses it (SIGSTOP): it holds its connections and answers nothing.
    pub fn pause(&self) {
        super::send_signal(self.child.as_ref().expect("running").id(), 19);
    }

    /// Resumes it after [`Redis::pause`] (SIGCONT).
    pub fn resume(&self) {
        super::send_signal(self.child.as_ref().expect("running").id(), 18);
    }

    /// Stops it (SIGKILL, by its pid): what it acknowledged is on disk.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }

    /// Its data directory (the AOF lives there).
    pub fn data_dir(&self) -> PathBuf {
        self.data()
    }

    /// Starts it again on the same port with the data directory copied to
    /// `from` earlier: a Redis rolled back to an older copy of itself.
    pub async fn restore(&mut self, from: &std::path::Path) {
        self.stop();
        std::fs::remove_dir_all(self.data()).unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(self.data())
            .status()
            .unwrap();
        assert!(status.success());
        self.run().await;
    }

    /// Starts it again on the same port with no data: a Redis that lost
    /// everything.
    pub async fn restart_empty(&mut self) {
        self.stop();
        std::fs::remove_dir_all(self.data()).unwrap();
        self.run().await;
    }
}

/// A free port whose cluster bus port (10,000 above) is free too, and
/// below 65,536.
fn cluster_port() -> u16 {
    let start = 20_000 + (std::process::id() % 20_000) as u16;
    (0..20_000u16)
        .map(|i| 20_000 + (start - 20_000 + i * 7) % 30_000)
        .find(|&port| {
            TcpListener::bind(("127.0.0.1", port)).is_ok()
                && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        })
        .expect("a free port pair")
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
