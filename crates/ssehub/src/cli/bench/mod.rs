//! `ssehub bench`: load scenarios measured against a hub this command starts
//! itself, so the hub's own process can be measured alone.
//!
//! * `idle`: hold N subscriber connections and report the hub's resident
//!   memory per connection (and the kernel's socket memory separately).
//! * `publish`: closed-loop publishers, durable store against memory store.
//! * `fanout`, `topics`, `resume`: see [`fanout`].

mod fanout;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Flags of `ssehub bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, clap::Subcommand)]
enum Scenario {
    /// Hold idle subscriber connections; report hub memory per connection.
    Idle(IdleArgs),
    /// Publish throughput and latency, durable store against memory store.
    Publish(PublishArgs),
    /// One topic, N subscribers, an open-loop publisher; loss, order, latency, CPU.
    Fanout(LoadScenario),
    /// N topics with one subscriber each.
    Topics(LoadScenario),
    /// Like fanout; 10% of subscribers drop mid-run and resume with Last-Event-ID.
    Resume(LoadScenario),
    /// (internal) Holds a share of the subscribers for the scenarios above.
    #[command(hide = true)]
    Worker {
        /// The worker's task, as JSON.
        spec: String,
    },
    /// The null server: writes pre-encoded events to sockets and nothing else.
    NullServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8092")]
        listen: SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
struct LoadScenario {
    #[command(flatten)]
    load: fanout::LoadArgs,
    /// Write the table into this Markdown file, and a latency chart (SVG)
    /// beside it.
    #[arg(long)]
    write: Option<PathBuf>,
    /// The section of the file to write (default: the scenario's name).
    #[arg(long)]
    section: Option<String>,
}

#[derive(Debug, clap::Args)]
struct PublishArgs {
    /// Concurrent publishers, one HTTP connection each; one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    publishers: Vec<usize>,
    /// How long each run publishes.
    #[arg(long, default_value = "3s", value_parser = crate::config::parse_duration)]
    duration: Duration,
    /// Runs per configuration, each with a fresh hub; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Write the results into this Markdown file (between the publish markers).
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct IdleArgs {
    /// Targets to measure, in one run.
    #[arg(long, value_delimiter = ',', default_value = "ssehub")]
    targets: Vec<fanout::Target>,
    /// Connections to hold (one process holds at most ~19,000 here).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// nchan's address, for `--targets nchan` (started by bench/peers/setup).
    #[arg(long, default_value = "127.0.0.1:8091")]
    nchan: SocketAddr,
    /// Pushpin's address, for `--targets pushpin` (started by bench/peers/setup).
    #[arg(long, default_value = "127.0.0.1:7999")]
    pushpin: SocketAddr,
    /// Rounds, each with a fresh hub; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How long to hold the connections before measuring.
    #[arg(long, default_value = "2s", value_parser = crate::config::parse_duration)]
    hold: Duration,
    /// Write the results into this Markdown file (between the idle markers).
    #[arg(long)]
    write: Option<PathBuf>,
}

/// Runs a scenario.
pub fn run(args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    crate::cli::raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.scenario {
        Scenario::Idle(idle) => runtime.block_on(run_idle(idle)),
        Scenario::Publish(publish) => runtime.block_on(run_publish(publish)),
        Scenario::Fanout(args) => runtime.block_on(run_load(fanout::Shape::Fanout, "fanout", args)),
        Scenario::Topics(args) => runtime.block_on(run_load(fanout::Shape::Topics, "topics", args)),
        Scenario::Resume(args) => runtime.block_on(run_load(fanout::Shape::Resume, "resume", args)),
        Scenario::Worker { spec } => runtime.block_on(fanout::worker(serde_json::from_str(&spec)?)),
        Scenario::NullServer { listen } => runtime.block_on(fanout::null_server(listen)),
    }
}

async fn run_load(
    shape: fanout::Shape,
    name: &str,
    args: LoadScenario,
) -> Result<(), Box<dyn std::error::Error>> {
    let results = fanout::run(shape, &args.load).await?;
    let name = args.section.as_deref().unwrap_or(name);
    if let Some(path) = &args.write {
        let load = &args.load;
        let chart = format!("bench-{name}-latency.svg");
        let svg_path = path.with_file_name(&chart);
        std::fs::write(
            &svg_path,
            fanout::latency_svg(
                &results,
                &format!(
                    "{name}: latency by percentile, {} subscribers, {} events/s",
                    load.subscribers, load.rate
                ),
            ),
        )?;
        let text = format!(
            "{} subscribers, {} events/s of {} bytes for {:?}, {} worker processes.\n\n{}\n![latency distribution]({chart})\n",
            load.subscribers,
            load.rate,
            load.size,
            load.duration,
            load.workers,
            fanout::table(&results, shape == fanout::Shape::Resume)
        );
        write_section(path, name, &text)?;
        println!("wrote {} and {}", path.display(), svg_path.display());
    }
    Ok(())
}

/// The median of one figure over several runs (the upper middle one of an
/// even count).
fn median<T>(runs: &[T], figure: impl Fn(&T) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(figure).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct IdleRound {
    rss_per_connection: f64,
    /// Kernel memory per connection, both ends (loopback).
    kernel: Kernel,
    open_seconds: f64,
}

async fn run_idle(args: IdleArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    for &target in &args.targets {
        let mut rounds = Vec::new();
        for round in 1..=args.rounds {
            let result = idle_round(&args, target).await?;
            println!(
                "{target:?} round {round}: RSS {:.0} B/connection, kernel slab {:.0} B and socket buffers {:.0} B/connection, opened in {:.2}s",
                result.rss_per_connection,
                result.kernel.slab,
                result.kernel.buffers,
                result.open_seconds
            );
            rounds.push(result);
        }
        let rss = median(&rounds, |r| r.rss_per_connection);
        let slab = median(&rounds, |r| r.kernel.slab);
        let buffers = median(&rounds, |r| r.kernel.buffers);
        println!(
            "idle {target:?}, {} connections, median of {} rounds: RSS {rss:.0} B ({:.2} KiB) per connection; kernel (both ends, loopback): slab {slab:.0} B, socket buffers {buffers:.0} B per connection",
            args.connections,
            args.rounds,
            rss / 1024.0
        );
        rows.push((target, rss, slab, buffers));
    }
    if let Some(path) = &args.write {
        let mut table = String::from(
            "| target | connections | rounds | server RSS per connection (median) | kernel slab per connection (median, both ends) | kernel socket buffers per connection (median, both ends) |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for (target, rss, slab, buffers) in &rows {
            table.push_str(&format!(
                "| {} | {} | {} | {rss:.0} B ({:.2} KiB) | {slab:.0} B | {buffers:.0} B |\n",
                format!("{target:?}").to_lowercase(),
                args.connections,
                args.rounds,
                rss / 1024.0
            ));
        }
        let chart = "bench-idle-memory.svg";
        std::fs::write(
            path.with_file_name(chart),
            memory_svg(&rows, args.connections),
        )?;
        table.push_str(&format!("\n![memory per idle connection]({chart})\n"));
        write_section(path, "idle", &table)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Bars of memory per idle connection, as SVG.
fn memory_svg(rows: &[(fanout::Target, f64, f64, f64)], connections: usize) -> String {
    let max = rows.iter().map(|r| r.1).fold(1.0_f64, f64::max);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"{}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"20\" font-size=\"14\">Server memory per idle connection at {connections} connections (RSS)</text>\n",
        50 + rows.len() * 36
    );
    for (i, (target, rss, ..)) in rows.iter().enumerate() {
        let y = 40 + i * 36;
        let width = 420.0 * rss / max;
        let color = if *target == fanout::Target::Ssehub {
            "#4f46e5"
        } else {
            "#98a2b3"
        };
        svg.push_str(&format!(
            "<text x=\"10\" y=\"{}\">{}</text><rect x=\"80\" y=\"{y}\" width=\"{width:.1}\" height=\"24\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{}\">{:.2} KiB</text>\n",
            y + 17,
            format!("{target:?}").to_lowercase(),
            86.0 + width,
            y + 17,
            rss / 1024.0
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

async fn idle_round(
    args: &IdleArgs,
    target: fanout::Target,
) -> Result<IdleRound, Box<dyn std::error::Error>> {
    let (mut hub, addr, pids, path): (Option<HubProcess>, SocketAddr, Vec<u32>, &str) = match target
    {
        fanout::Target::Ssehub => {
            let hub = HubProcess::start(&QUIET_HUB)?;
            let (addr, pid) = (hub.addr, hub.pid());
            (
                Some(hub),
                addr,
                vec![pid],
                "/.well-known/mercure?match=idle/",
            )
        }
        fanout::Target::Nchan => {
            // nginx keeps and reuses the memory of earlier rounds, so each
            // round gets fresh workers: SIGHUP makes the master start new
            // ones and retire the old.
            fanout::reload_nginx().await;
            (None, args.nchan, fanout::nginx_pids(), "/sub/idle/")
        }
        fanout::Target::Pushpin => {
            fanout::restart_pushpin()?;
            (None, args.pushpin, fanout::pushpin_pids(), "/sub/idle/")
        }
        fanout::Target::Null => {
            return Err("the null server holds no idle state worth measuring".into());
        }
    };
    let rss = |pids: &[u32]| -> u64 {
        pids.iter()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|status| status_kib(&status, "VmRSS:"))
            .sum::<u64>()
            * 1024
    };
    // Warm up: the first connections grow allocator pools that later ones
    // reuse; measuring from a warm baseline counts what a connection holds.
    {
        let warm = open_idle(addr, path, 200).await?;
        drop(warm);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let rss_before = rss(&pids);
    let kernel_before = Kernel::now()?;
    let started = Instant::now();
    let connections = open_idle(addr, path, args.connections).await?;
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(args.hold).await;
    let rss_after = rss(&pids);
    let kernel_after = Kernel::now()?;
    drop(connections);
    if let Some(hub) = hub.as_mut() {
        hub.stop();
    } else {
        // Let the peer notice the closed connections before the next round.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let n = args.connections as f64;
    Ok(IdleRound {
        rss_per_connection: (rss_after as f64 - rss_before as f64) / n,
        kernel: Kernel {
            slab: (kernel_after.slab - kernel_before.slab) / n,
            buffers: (kernel_after.buffers - kernel_before.buffers) / n,
        },
        open_seconds,
    })
}

struct PublishRun {
    events_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run_publish(args: PublishArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    for &publishers in &args.publishers {
        let mut medians = Vec::new();
        for store in ["memory", "durable"] {
            let mut runs = Vec::new();
            for _ in 0..args.rounds {
                runs.push(publish_run(store, publishers, args.duration).await?);
            }
            let run = PublishRun {
                events_per_second: median(&runs, |r| r.events_per_second),
                p50_ms: median(&runs, |r| r.p50_ms),
                p99_ms: median(&runs, |r| r.p99_ms),
            };
            println!(
                "{publishers:>4} publishers, {store:>7}: {:>8.0} events/s, p50 {:.2} ms, p99 {:.2} ms",
                run.events_per_second, run.p50_ms, run.p99_ms
            );
            medians.push(run);
        }
        let (memory, durable) = (&medians[0], &medians[1]);
        rows.push(format!(
            "| {publishers} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |\n",
            memory.events_per_second,
            memory.p50_ms,
            memory.p99_ms,
            durable.events_per_second,
            durable.p50_ms,
            durable.p99_ms,
            durable.events_per_second / memory.events_per_second,
        ));
    }
    if let Some(path) = &args.write {
        let table = format!(
            "Medians of {} runs of {:?} each; 100-byte events over 16 topics; every publisher is one HTTP/1.1 connection publishing its next event as soon as the last was acknowledged.\n\n\
             | publishers | memory events/s | memory p50 ms | memory p99 ms | durable events/s | durable p50 ms | durable p99 ms | durable / memory throughput |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|\n{}",
            args.rounds,
            args.duration,
            rows.concat()
        );
        write_section(path, "publish", &table)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

async fn publish_run(
    store: &str,
    publishers: usize,
    duration: Duration,
) -> Result<PublishRun, Box<dyn std::error::Error>> {
    let data_dir = tempfile::tempdir()?;
    let data_dir_arg = data_dir.path().display().to_string();
    let mut hub = HubProcess::start(&["--store", store, "--data-dir", &data_dir_arg])?;
    let url = format!("http://{}", hub.addr);
    let payload = "x".repeat(100);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            // One client each: its own connection, as separate backends have.
            let client = ssehub_client::Hub::new(&url);
            let event = ssehub_client::Publish::new(format!("bench/{}", p % 16), payload.clone());
            tokio::spawn(async move {
                let mut latencies =
                    hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                        .expect("bounds");
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    client.publish(&event).await.map_err(|e| e.to_string())?;
                    latencies.saturating_record(sent.elapsed().as_micros() as u64);
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        all.add(task.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    hub.stop();
    Ok(PublishRun {
        events_per_second: all.len() as f64 / elapsed,
        p50_ms: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// Opens `count` subscriptions, each to its own topic, ramping 500 at a time,
/// and waits for each stream's first bytes.
async fn open_idle(addr: SocketAddr, path: &str, count: usize) -> std::io::Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(count);
    for start in (0..count).step_by(500) {
        let batch = (start..count.min(start + 500)).map(|i| async move {
            let mut stream = TcpStream::connect(addr).await?;
            let request =
                format!("GET {path}{i} HTTP/1.1\r\nHost: hub\r\nAccept: text/event-stream\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            // The response head and the stream's first bytes.
            let mut buf = [0u8; 512];
            let mut seen: Vec<u8> = Vec::new();
            while seen
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .is_none_or(|end| seen.len() <= end + 4)
            {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::Error::other("hub closed a connection"));
                }
                seen.extend_from_slice(&buf[..n]);
            }
            Ok::<_, std::io::Error>(stream)
        });
        for stream in futures_util::future::join_all(batch).await {
            streams.push(stream?);
        }
    }
    Ok(streams)
}

/// A hub started from this same binary, measured through /proc.
/// Hub flags for measuring streams alone: no heartbeats, no lifetime limit,
/// no demo tickers.
const QUIET_HUB: [&str; 6] = [
    "--heartbeat",
    "1h",
    "--max-lifetime",
    "0",
    "--demos",
    "false",
];

/// A server started from this same binary (the hub, or the null server),
/// killed when dropped.
struct HubProcess {
    child: Child,
    addr: SocketAddr,
}

impl HubProcess {
    /// `ssehub serve --dev` on a free port (memory store unless `extra`
    /// chooses one).
    fn start(extra: &[&str]) -> std::io::Result<HubProcess> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
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
        HubProcess::spawn(command, "ssehub listening on http://")
    }

    /// Spawns `command` and reads the address from its first line, which
    /// starts with `announce`.
    fn spawn(mut command: Command, announce: &str) -> std::io::Result<HubProcess> {
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix(announce)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("unexpected server output {line:?}")))?;
        Ok(HubProcess { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Kernel memory, machine-wide, in bytes.
struct Kernel {
    /// Slab caches (`Slab` of /proc/meminfo): where the socket structures,
    /// files and epoll entries of connections live.
    slab: f64,
    /// TCP socket buffers (`mem` of /proc/net/sockstat, in pages): data
    /// queued in sockets, near zero for idle ones.
    buffers: f64,
}

impl Kernel {
    fn now() -> std::io::Result<Kernel> {
        let field = |text: &str, line: &str, name: &str| -> std::io::Result<f64> {
            text.lines()
                .find(|l| l.starts_with(line))
                .and_then(|l| {
                    let mut fields = l.split_whitespace();
                    fields.find(|f| *f == name)?;
                    fields.next()?.parse::<f64>().ok()
                })
                .ok_or_else(|| std::io::Error::other(format!("no {line} {name} in /proc")))
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let sockstat = std::fs::read_to_string("/proc/net/sockstat")?;
        Ok(Kernel {
            slab: field(&meminfo, "Slab:", "Slab:")? * 1024.0,
            buffers: field(&sockstat, "TCP:", "mem")? * 4096.0,
        })
    }
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`
/// with the results, the machine and the exact command.
fn write_section(path: &PathBuf, name: &str, results: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (open, close) = (
        format!("<!-- bench:{name} -->"),
        format!("<!-- /bench:{name} -->"),
    );
    let command: Vec<String> = std::env::args().collect();
    let body = format!(
        "{open}\nMeasured {} on {}.\n\nCommand: `{}`\n\n{results}{close}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        machine(),
        command
            .join(" ")
            .replace(&std::env::current_exe()?.display().to_string(), "ssehub"),
    );
    let updated = match (text.find(&open), text.find(&close)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{body}{}", &text[..start], &text[end + close.len()..])
        }
        _ => format!("{text}\n{body}\n"),
    };
    let mut file = std::fs::File::create(path)?;
    file.write_all(updated.as_bytes())
}

/// CPU model, cores, memory and kernel, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = status_kib(&meminfo, "MemTotal:").unwrap_or(0) as f64 / (1024.0 * 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {memory_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}
