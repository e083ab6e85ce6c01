//! The servers a scenario measures: `ssehub` and the null server as child
//! processes of this one (stopped through their pid when dropped), and the
//! peers that `bench/peers/setup` runs (see [`crate::peers`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Where the servers are; global flags of `ssehub-bench`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The `ssehub` binary to measure [default: `ssehub` beside this binary].
    #[arg(long, global = true, env = "SSEHUB_BENCH_HUB")]
    pub hub: Option<PathBuf>,
    /// Where `bench/peers/setup` keeps the peers' pid files and logs.
    #[arg(long, global = true, env = "SSEHUB_BENCH_PEERS_DIR", default_value_os_t = crate::peers::default_dir())]
    pub peers_dir: PathBuf,
    /// The script that starts, restarts and stops the peers.
    #[arg(long, global = true, default_value = "bench/peers/setup")]
    pub peers_setup: PathBuf,
}

impl ServerArgs {
    fn hub_binary(&self) -> std::io::Result<PathBuf> {
        if let Some(path) = &self.hub {
            return Ok(path.clone());
        }
        let beside = std::env::current_exe()?.with_file_name("ssehub");
        if beside.exists() {
            Ok(beside)
        } else {
            Err(std::io::Error::other(format!(
                "no ssehub binary at {}: build it (cargo build --release) or pass --hub PATH",
                beside.display()
            )))
        }
    }
}

/// Hub flags for measuring streams alone: no heartbeats, no lifetime limit,
/// no demo tickers.
pub const QUIET_HUB: [&str; 6] = [
    "--heartbeat",
    "1h",
    "--max-lifetime",
    "0",
    "--demos",
    "false",
];

/// A server started by this command, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// `ssehub serve --dev` on a free port (memory store unless `extra`
    /// chooses one), with no per-address limit: the load comes from a few
    /// loopback addresses, thousands of connections each.
    pub fn hub(servers: &ServerArgs, extra: &[&str]) -> std::io::Result<ServerProcess> {
        let mut args = vec!["--max-connections-per-address", "0"];
        args.extend_from_slice(extra);
        ServerProcess::hub_as_deployed(servers, &args)
    }

    /// `ssehub serve --dev` on a free port (memory store unless `extra`
    /// chooses one), with its default limits.
    pub fn hub_as_deployed(servers: &ServerArgs, extra: &[&str]) -> std::io::Result<ServerProcess> {
        ServerProcess::hub_on(servers, "127.0.0.1:0", extra)
    }

    /// `ssehub serve --dev` on `listen` (memory store unless `extra`
    /// chooses one), with its default limits.
    pub fn hub_on(
        servers: &ServerArgs,
        listen: &str,
        extra: &[&str],
    ) -> std::io::Result<ServerProcess> {
        let mut command = Command::new(servers.hub_binary()?);
        command
            .args(["serve", "--dev", "--listen", listen])
            .args(if extra.contains(&"--store") {
                &[][..]
            } else {
                &["--store", "memory"][..]
            })
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("SSEHUB_BENCH_HUB_LOG").unwrap_or_else(|_| "error".into()),
            );
        let announce = if extra.contains(&"--tls-cert") {
            "ssehub listening on https://"
        } else {
            "ssehub listening on http://"
        };
        ServerProcess::spawn(command, announce)
    }

    /// The null server (`ssehub-bench null-server`) on a free port.
    pub fn null() -> std::io::Result<ServerProcess> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["null-server", "--listen", "127.0.0.1:0"]);
        ServerProcess::spawn(command, "null server on ")
    }

    /// Spawns `command` (a server of another kind) and reads the address
    /// from its first line, which starts with `announce`.
    pub fn spawn_announced(command: Command, announce: &str) -> std::io::Result<ServerProcess> {
        ServerProcess::spawn(command, announce)
    }

    /// Spawns `command` and reads the address from its first line, which
    /// starts with `announce`.
    fn spawn(mut command: Command, announce: &str) -> std::io::Result<ServerProcess> {
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix(announce)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("unexpected server output {line:?}")))?;
        Ok(ServerProcess { child, addr })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (the hub ends its streams with their last words), then
    /// waits for it to exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Kills it and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `redis-server` of this command's own, on a free port with a temporary
/// directory, every write on disk before it answers (`appendfsync always`,
/// the setting docs/CLUSTER.md recommends); killed when dropped.
pub struct RedisProcess {
    child: Child,
    /// Where it listens.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisProcess {
    /// Starts one and waits until it accepts connections.
    pub fn start() -> std::io::Result<RedisProcess> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
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
            .map_err(|e| {
                std::io::Error::other(format!("redis-server: {e} (apt-get install redis-server)"))
            })?;
        let redis = RedisProcess {
            child,
            port,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other("redis-server did not start"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(redis)
    }

    /// `--redis-url` for a hub.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
