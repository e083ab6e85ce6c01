//! `ssehub bench fanout` / `topics` / `resume`: many subscribers, an
//! open-loop publisher, and a check of every subscriber's stream.
//!
//! The coordinator starts the target (ssehub, or the null server that only
//! writes pre-encoded events: the machine's ceiling), spawns worker processes
//! that each hold a share of the subscribers from their own 127.0.0.x
//! address (one process may hold at most 20,000 files here), waits until all
//! are connected, then publishes at a fixed rate. Each event carries its
//! sequence number and its *scheduled* send time, so a slow publish does not
//! hide latency (no coordinated omission). Workers check every connection's
//! stream for loss, duplicates and order, record latency in HDR histograms,
//! and report; the target's CPU time is read from /proc.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::{HubProcess, QUIET_HUB};

/// What serves the subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// ssehub itself (memory store).
    Ssehub,
    /// The null server: pre-encoded events written to sockets, nothing else.
    Null,
    /// nginx with the nchan module (see bench/peers/setup).
    Nchan,
    /// Pushpin, with nginx as its GRIP origin (see bench/peers/setup).
    Pushpin,
}

impl Target {
    /// Connections a worker opens at once. Pushpin answered 502 or 500 to
    /// part of a burst of 600 simultaneous subscriptions to one channel
    /// (here 50 to 210 of them), so it gets smaller ramps.
    fn ramp(self) -> usize {
        match self {
            Target::Pushpin => 100,
            _ => 500,
        }
    }
}

/// How the subscribers use topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One topic, every subscriber on it.
    Fanout,
    /// One topic per subscriber; events go round-robin.
    Topics,
    /// Like fanout, but 10% of subscribers drop mid-run and resume.
    Resume,
}

/// Flags shared by the three scenarios.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Targets to measure, one after the other, in one run.
    #[arg(long, value_delimiter = ',', default_value = "null,ssehub")]
    pub targets: Vec<Target>,
    /// Subscribers.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Events per second published.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = crate::config::parse_duration)]
    pub duration: Duration,
    /// Bytes of data per event.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Worker processes holding the subscribers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// nchan's address, for `--targets nchan`.
    #[arg(long, default_value = "127.0.0.1:8091")]
    pub nchan: SocketAddr,
    /// Pushpin's address for subscribers, for `--targets pushpin`.
    #[arg(long, default_value = "127.0.0.1:7999")]
    pub pushpin: SocketAddr,
    /// Pushpin's publish address.
    #[arg(long, default_value = "127.0.0.1:5561")]
    pub pushpin_publish: SocketAddr,
}

/// What one target's run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub target: Target,
    pub subscribers: usize,
    pub published: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub reconnected: u64,
    pub deliveries_per_second: f64,
    pub cpu_seconds: f64,
    pub cpu_seconds_per_million: f64,
    /// The share of that CPU time spent in the kernel (system time): on
    /// loopback, each write also runs the receiving end's TCP path.
    pub kernel_share: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Latency distribution: (value in microseconds, count).
    #[serde(skip)]
    pub buckets: Vec<(u64, u64)>,
}

/// Runs one scenario against each target.
pub async fn run(
    shape: Shape,
    args: &LoadArgs,
) -> Result<Vec<LoadResult>, Box<dyn std::error::Error>> {
    let mut results = Vec::new();
    for &target in &args.targets {
        let result = run_target(shape, target, args).await?;
        println!(
            "{:?} {:>7}: {:.0} deliveries/s, {:.2} CPU s per million ({:.0}% kernel), p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; lost {}, duplicated {}, out of order {}{}",
            shape,
            format!("{:?}", target).to_lowercase(),
            result.deliveries_per_second,
            result.cpu_seconds_per_million,
            result.kernel_share * 100.0,
            result.p50_ms,
            result.p99_ms,
            result.p999_ms,
            result.lost,
            result.duplicated,
            result.out_of_order,
            if shape == Shape::Resume {
                format!(", reconnected {}", result.reconnected)
            } else {
                String::new()
            }
        );
        results.push(result);
    }
    Ok(results)
}

/// A running target and how to reach it.
struct Running {
    /// Where subscribers connect.
    addr: SocketAddr,
    /// Where events are published.
    publish: SocketAddr,
    /// Processes whose CPU time counts.
    pids: Vec<u32>,
    _process: Option<Box<dyn std::any::Any>>,
}

async fn start_target(
    target: Target,
    args: &LoadArgs,
) -> Result<Running, Box<dyn std::error::Error>> {
    Ok(match target {
        Target::Ssehub => {
            let hub = HubProcess::start(&[&QUIET_HUB[..], &["--queue-size", "4096"]].concat())?;
            Running {
                addr: hub.addr,
                publish: hub.addr,
                pids: vec![hub.pid()],
                _process: Some(Box::new(hub)),
            }
        }
        Target::Null => {
            let null = start_null()?;
            Running {
                addr: null.addr,
                publish: null.addr,
                pids: vec![null.pid()],
                _process: Some(Box::new(null)),
            }
        }
        Target::Nchan => Running {
            addr: args.nchan,
            publish: args.nchan,
            pids: nginx_pids(),
            _process: None,
        },
        Target::Pushpin => Running {
            addr: args.pushpin,
            publish: args.pushpin_publish,
            pids: pushpin_pids(),
            _process: None,
        },
    })
}

/// nginx's master and worker processes.
pub fn nginx_pids() -> Vec<u32> {
    pids_named(&["nginx"])
}

/// Pushpin's processes: its runner, condure (which holds the client
/// connections), the proxy, the handler (which holds subscriptions), and
/// zurl (its HTTP client). The origin is not counted.
pub fn pushpin_pids() -> Vec<u32> {
    pids_named(&[
        "pushpin",
        "condure",
        "pushpin-proxy",
        "pushpin-handler",
        "zurl",
    ])
}

fn pids_named(names: &[&str]) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if names.contains(&comm.trim()) {
            pids.push(pid);
        }
    }
    pids
}

/// Fresh Pushpin processes (it has no reload that starts new workers), via
/// the setup script of this source tree.
pub fn restart_pushpin() -> std::io::Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/peers/setup");
    let status = Command::new(script)
        .arg("restart-pushpin")
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "{script} restart-pushpin failed"
        )));
    }
    Ok(())
}

/// Restarts nginx's workers (SIGHUP to the master) and waits until only the
/// new ones are left.
pub async fn reload_nginx() {
    let master = nginx_pids().into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("master"))
    });
    let Some(master) = master else { return };
    let before = nginx_pids();
    let _ = Command::new("kill")
        .args(["-HUP", &master.to_string()])
        .status();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = nginx_pids();
        if before
            .iter()
            .all(|pid| *pid == master || !now.contains(pid))
            && now.len() > 1
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// User and system CPU seconds of processes, from /proc/PID/stat.
fn cpu_seconds(pids: &[u32]) -> (f64, f64) {
    let ticks_per_second = 100.0; // CLK_TCK on Linux
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the ")" of the command name; utime and stime are
            // the 12th and 13th of them.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user = fields.get(11)?.parse::<f64>().ok()?;
            let system = fields.get(12)?.parse::<f64>().ok()?;
            Some((user / ticks_per_second, system / ticks_per_second))
        })
        .fold((0.0, 0.0), |(u, s), (user, system)| (u + user, s + system))
}

async fn run_target(
    shape: Shape,
    target: Target,
    args: &LoadArgs,
) -> Result<LoadResult, Box<dyn std::error::Error>> {
    let running = start_target(target, args).await?;
    let run = format!("{:x}", now_micros());
    let events = (args.rate as u64 * args.duration.as_millis() as u64 / 1000).max(1);
    let topics = if shape == Shape::Topics {
        args.subscribers
    } else {
        1
    };
    // Workers: each takes a slice of the subscribers, from 127.0.0.(2+i).
    let per_worker = args.subscribers.div_ceil(args.workers);
    let mut workers = Vec::new();
    for w in 0..args.workers {
        let first = w * per_worker;
        let count = per_worker.min(args.subscribers.saturating_sub(first));
        if count == 0 {
            break;
        }
        let spec = WorkerSpec {
            target,
            addr: running.addr,
            bind: IpAddr::from([127, 0, 0, 2 + w as u8]),
            first,
            count,
            topics,
            events,
            per_connection: if shape == Shape::Topics {
                None
            } else {
                Some(events)
            },
            resume_fraction: if shape == Shape::Resume { 0.1 } else { 0.0 },
            drop_after: events / 2,
            run: run.clone(),
            deadline_ms: (args.duration + Duration::from_secs(15)).as_millis() as u64,
        };
        workers.push(WorkerProcess::start(&spec)?);
    }
    for worker in &mut workers {
        worker.wait_ready()?;
    }
    let cpu_before = cpu_seconds(&running.pids);
    let started = Instant::now();
    let published = publish_open_loop(
        target,
        running.publish,
        &run,
        topics,
        events,
        args.rate,
        args.size,
    )
    .await?;
    let mut reports = Vec::new();
    for worker in workers {
        reports.push(worker.finish()?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds(&running.pids);
    let (user, system) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let cpu = user + system;
    drop(running);

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut totals = WorkerReport::default();
    for report in reports {
        for (value, count) in &report.buckets {
            histogram.record_n(*value, *count)?;
        }
        totals.received += report.received;
        totals.lost += report.lost;
        totals.duplicated += report.duplicated;
        totals.out_of_order += report.out_of_order;
        totals.reconnected += report.reconnected;
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(LoadResult {
        target,
        subscribers: args.subscribers,
        published,
        delivered: totals.received,
        lost: totals.lost,
        duplicated: totals.duplicated,
        out_of_order: totals.out_of_order,
        reconnected: totals.reconnected,
        deliveries_per_second: totals.received as f64 / elapsed,
        cpu_seconds: cpu,
        cpu_seconds_per_million: cpu / (totals.received.max(1) as f64 / 1e6),
        kernel_share: if cpu > 0.0 { system / cpu } else { 0.0 },
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: histogram.max() as f64 / 1000.0,
        buckets: histogram
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect(),
    })
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Publishes `events` events at `rate` per second on a schedule fixed in
/// advance; each carries `seq scheduled_micros` and padding.
async fn publish_open_loop(
    target: Target,
    addr: SocketAddr,
    run: &str,
    topics: usize,
    events: u64,
    rate: u32,
    size: usize,
) -> Result<u64, Box<dyn std::error::Error>> {
    let client = reqwest::Client::new();
    let start = Instant::now() + Duration::from_millis(100);
    let start_micros = now_micros() + 100_000;
    let interval = 1e6 / rate as f64;
    let sent = Arc::new(AtomicU64::new(0));
    let mut inflight = tokio::task::JoinSet::new();
    for seq in 0..events {
        let offset = Duration::from_micros((seq as f64 * interval) as u64);
        tokio::time::sleep_until((start + offset).into()).await;
        let scheduled = start_micros + offset.as_micros() as u64;
        let mut data = format!("{seq} {scheduled} ");
        data.extend(std::iter::repeat_n('x', size.saturating_sub(data.len())));
        let topic = format!("bench/{run}/{}", seq as usize % topics);
        let request = match target {
            Target::Ssehub => client
                .post(format!("http://{addr}/.well-known/mercure"))
                .form(&[("topic", topic.as_str()), ("data", data.as_str())]),
            Target::Null => client.post(format!("http://{addr}/publish")).body(data),
            Target::Nchan => client.post(format!("http://{addr}/pub/{topic}")).body(data),
            // Pushpin sends the content as given; the id is not a number, so
            // (as with nchan's ids) only ssehub's ids are checked for order.
            Target::Pushpin => client.post(format!("http://{addr}/publish/")).json(
                &serde_json::json!({"items": [{
                    "channel": topic,
                    "formats": {"http-stream": {"content": format!("id: p{seq}\ndata: {data}\n\n")}},
                }]}),
            ),
        };
        let sent = sent.clone();
        // Open loop: the next publish does not wait for this one.
        inflight.spawn(async move {
            if let Ok(response) = request.send().await
                && response.status().is_success()
            {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
    Ok(sent.load(Ordering::Relaxed))
}

/// What a worker is told to do (passed as JSON on its command line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    target: Target,
    addr: SocketAddr,
    bind: IpAddr,
    /// Index of its first subscriber (topics shape: subscriber i listens to
    /// topic i).
    first: usize,
    count: usize,
    topics: usize,
    /// Events published in all.
    events: u64,
    /// Events each connection must see; `None` when topics differ.
    per_connection: Option<u64>,
    /// Share of connections that drop mid-run and resume.
    resume_fraction: f64,
    /// Unique per run, in topic names, so a peer's buffered messages from an
    /// earlier run are never replayed into this one.
    run: String,
    /// A dropping connection drops after this many events.
    drop_after: u64,
    deadline_ms: u64,
}

/// What a worker saw.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    received: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    reconnected: u64,
    buckets: Vec<(u64, u64)>,
}

struct WorkerProcess {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl WorkerProcess {
    fn start(spec: &WorkerSpec) -> std::io::Result<WorkerProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "bench",
                "worker",
                &serde_json::to_string(spec).expect("plain struct"),
            ])
            .stdout(Stdio::piped())
            .spawn()?;
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        Ok(WorkerProcess { child, lines })
    }

    fn wait_ready(&mut self) -> std::io::Result<()> {
        match self.lines.next() {
            Some(Ok(line)) if line == "ready" => Ok(()),
            other => Err(std::io::Error::other(format!(
                "worker did not start: {other:?}"
            ))),
        }
    }

    fn finish(mut self) -> std::io::Result<WorkerReport> {
        let line = self
            .lines
            .next()
            .ok_or_else(|| std::io::Error::other("worker ended without a report"))??;
        let _ = self.child.wait();
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }
}

/// `ssehub bench worker SPEC`: hold connections, check streams, report.
pub async fn worker(spec: WorkerSpec) -> Result<(), Box<dyn std::error::Error>> {
    let mut connections = Vec::with_capacity(spec.count);
    let ramp = spec.target.ramp();
    for start in (0..spec.count).step_by(ramp) {
        let batch = (start..spec.count.min(start + ramp)).map(|i| {
            let spec = &spec;
            async move {
                let index = spec.first + i;
                let topic = index % spec.topics;
                // Pushpin answers 5xx to some subscriptions of a burst (see
                // `Target::ramp`): those try again, before the measurement.
                let mut attempts = 0;
                let stream = loop {
                    match open(spec, topic, None).await {
                        Err(e)
                            if spec.target == Target::Pushpin
                                && attempts < 20
                                && e.to_string().starts_with("HTTP/1.1 5") =>
                        {
                            attempts += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        other => break other?,
                    }
                };
                Ok::<_, std::io::Error>((index, topic, stream))
            }
        });
        for opened in futures_util::future::join_all(batch).await {
            connections.push(opened?);
        }
    }
    println!("ready");
    // Counted from now: opening the connections may take a while.
    let deadline = Instant::now() + Duration::from_millis(spec.deadline_ms);
    let spec = Arc::new(spec);
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|(index, topic, stream)| {
            let spec = spec.clone();
            tokio::spawn(async move { follow(&spec, index, topic, stream, deadline).await })
        })
        .collect();
    let mut report = WorkerReport::default();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for task in tasks {
        let seen = task.await?;
        report.received += seen.received;
        report.lost += seen.lost;
        report.duplicated += seen.duplicated;
        report.out_of_order += seen.out_of_order;
        report.reconnected += seen.reconnected;
        histogram.add(&seen.latency)?;
    }
    report.buckets = histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Opens one subscription and reads the response head.
async fn open(
    spec: &WorkerSpec,
    topic: usize,
    last_event_id: Option<&str>,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(spec.bind, 0))?;
    let mut stream = socket.connect(spec.addr).await?;
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let path = match spec.target {
        Target::Ssehub => format!("/.well-known/mercure?match=bench/{}/{topic}", spec.run),
        Target::Null => "/sub".to_owned(),
        Target::Nchan | Target::Pushpin => format!("/sub/bench/{}/{topic}", spec.run),
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n{resume}\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other("closed before the response head"));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ));
    }
    Ok(stream)
}

struct Seen {
    received: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    reconnected: u64,
    latency: Histogram<u64>,
}

/// Reads one subscriber's stream until it has every event (or the
/// deadline). Each event must arrive exactly once; publishes race each other
/// (the publisher is open-loop), so arrival order is checked on the hub's
/// ids, which must strictly increase along the stream. Only `data:` and
/// `id:` lines are looked at; chunk framing never starts with either.
async fn follow(
    spec: &WorkerSpec,
    index: usize,
    topic: usize,
    mut stream: TcpStream,
    deadline: Instant,
) -> Seen {
    let mut seen = Seen {
        received: 0,
        lost: 0,
        duplicated: 0,
        out_of_order: 0,
        reconnected: 0,
        latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds"),
    };
    // In the topics shape, subscriber i gets events i, i+N, i+2N, ...
    let stride = spec.topics as u64;
    let expected_total = spec
        .per_connection
        .unwrap_or_else(|| (spec.events + stride - 1 - topic as u64) / stride);
    let mut got = vec![0u64; (expected_total as usize).div_ceil(64).max(1)];
    let will_drop =
        spec.resume_fraction > 0.0 && (index as f64 % (1.0 / spec.resume_fraction)) < 1.0;
    let mut dropped = false;
    let mut last_id = String::new();
    let mut last_seq_id: u64 = 0;
    let mut buf = vec![0u8; 16 * 1024];
    let mut line = Vec::new();
    while seen.received < expected_total {
        let read = tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        let mut rest = &buf[..n];
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let whole;
            let current: &[u8] = if line.is_empty() {
                &rest[..end]
            } else {
                line.extend_from_slice(&rest[..end]);
                whole = std::mem::take(&mut line);
                &whole
            };
            rest = &rest[end + 1..];
            if let Some(id) = current.strip_prefix(b"id: ") {
                last_id = String::from_utf8_lossy(id)
                    .trim_end_matches('\r')
                    .to_owned();
            } else if let Some(data) = current.strip_prefix(b"data: ") {
                // Order is checked on the ids of events (an id line alone,
                // such as the resume position, is not an event).
                if let Ok(numeric) = last_id.parse::<u64>() {
                    if numeric <= last_seq_id && last_seq_id != 0 {
                        seen.out_of_order += 1;
                    }
                    last_seq_id = numeric;
                }
                let mut parts = data.split(|&b| b == b' ');
                let number = |part: Option<&[u8]>| -> Option<u64> {
                    std::str::from_utf8(part?).ok()?.parse().ok()
                };
                if let (Some(seq), Some(scheduled)) = (number(parts.next()), number(parts.next())) {
                    seen.latency
                        .saturating_record(now_micros().saturating_sub(scheduled).max(1));
                    let slot = (seq / stride) as usize;
                    if seq % stride != topic as u64 || slot >= expected_total as usize {
                        seen.out_of_order += 1; // an event of another topic
                    } else if got[slot / 64] & (1 << (slot % 64)) != 0 {
                        seen.duplicated += 1;
                    } else {
                        got[slot / 64] |= 1 << (slot % 64);
                        seen.received += 1;
                    }
                }
            }
        }
        line.extend_from_slice(rest);
        if will_drop && !dropped && seen.received >= spec.drop_after {
            // Drop and come back with Last-Event-ID, as a browser would.
            dropped = true;
            let _ = stream.shutdown().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            match open(spec, topic, Some(&last_id)).await {
                Ok(fresh) => {
                    stream = fresh;
                    seen.reconnected += 1;
                    line.clear();
                }
                Err(_) => break,
            }
        }
    }
    seen.lost = expected_total - seen.received;
    seen
}

/// The null server, as a child process.
fn start_null() -> std::io::Result<HubProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["bench", "null-server", "--listen", "127.0.0.1:0"]);
    HubProcess::spawn(command, "null server on ")
}

/// `ssehub bench null-server`: `GET /sub` holds a stream; `POST /publish`
/// encodes `data: BODY` once and hands it to every stream's writer, which
/// writes whatever is pending in one write, as ssehub does. No topics, ids,
/// history or checks: the least work that puts events on every socket with
/// the same write strategy, which is the machine's ceiling for ssehub.
pub async fn null_server(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("null server on {}", listener.local_addr()?);
    let (events, _) = tokio::sync::broadcast::channel::<bytes::Bytes>(65_536);
    loop {
        let (mut socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let events = events.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            let end = loop {
                let Ok(n) = socket.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
            };
            if head.starts_with(b"GET") {
                let mut receiver = events.subscribe();
                let ok = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                if socket.write_all(ok).await.is_err() {
                    return;
                }
                let mut pending = Vec::new();
                loop {
                    match receiver.recv().await {
                        Ok(bytes) => pending.extend_from_slice(&bytes),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    }
                    while let Ok(bytes) = receiver.try_recv() {
                        pending.extend_from_slice(&bytes);
                    }
                    if socket.write_all(&pending).await.is_err() {
                        return;
                    }
                    pending.clear();
                }
            } else {
                // Publishers: one request after another on the connection.
                let mut pending = head;
                let mut end = end;
                loop {
                    let length = String::from_utf8_lossy(&pending[..end])
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    while pending.len() < end + length {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                    }
                    let mut event = b"data: ".to_vec();
                    event.extend_from_slice(&pending[end..end + length]);
                    event.extend_from_slice(b"\n\n");
                    let _ = events.send(bytes::Bytes::from(event));
                    if socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    pending.drain(..end + length);
                    end = loop {
                        if let Some(e) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break e + 4;
                        }
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buf[..n]);
                    };
                }
            }
        });
    }
}

/// Per-target figures, as a Markdown table.
pub fn table(results: &[LoadResult], resume: bool) -> String {
    let mut out = String::from(
        "| target | subscribers | events published | deliveries | deliveries/s | CPU s per million deliveries | of which kernel | p50 ms | p99 ms | p99.9 ms | lost | duplicated | out of order |",
    );
    if resume {
        out.push_str(" reconnected |");
    }
    out.push('\n');
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if resume {
        out.push_str("---:|");
    }
    out.push('\n');
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.0}% | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            format!("{:?}", r.target).to_lowercase(),
            r.subscribers,
            r.published,
            r.delivered,
            r.deliveries_per_second,
            r.cpu_seconds_per_million,
            r.kernel_share * 100.0,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.lost,
            r.duplicated,
            r.out_of_order
        ));
        if resume {
            out.push_str(&format!(" {} |", r.reconnected));
        }
        out.push('\n');
    }
    out
}

/// A latency-distribution chart (percentile on a log scale) as SVG.
pub fn latency_svg(results: &[LoadResult], title: &str) -> String {
    let (w, h, left, bottom) = (760.0, 360.0, 100.0, 40.0);
    let colors = ["#98a2b3", "#4f46e5", "#f79009", "#12b76a"];
    let quantiles: Vec<f64> = (0..=60)
        .map(|i| 1.0 - 10f64.powf(-(i as f64) / 15.0))
        .collect();
    let curves: Vec<Vec<(f64, f64)>> = results
        .iter()
        .map(|r| {
            let total: u64 = r.buckets.iter().map(|(_, c)| c).sum();
            quantiles
                .iter()
                .map(|&q| {
                    let mut seen = 0;
                    let target = (q * total as f64).ceil() as u64;
                    let value = r
                        .buckets
                        .iter()
                        .find(|(_, c)| {
                            seen += c;
                            seen >= target.max(1)
                        })
                        .map_or(0, |(v, _)| *v);
                    (q, value as f64 / 1000.0)
                })
                .collect()
        })
        .collect();
    let max_ms = curves
        .iter()
        .flatten()
        .map(|(_, v)| *v)
        .fold(1.0_f64, f64::max);
    let x = |q: f64| left + (-(1.0 - q).max(1e-4).log10() / 4.0) * (w - left - 20.0);
    let y = |ms: f64| h - bottom - (ms / max_ms) * (h - bottom - 30.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"14\">{title}</text>\n"
    );
    for (label, q) in [
        ("p50", 0.5),
        ("p90", 0.9),
        ("p99", 0.99),
        ("p99.9", 0.999),
        ("p99.99", 0.9999),
    ] {
        let px = x(q);
        svg.push_str(&format!(
            "<line x1=\"{px:.1}\" y1=\"30\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n",
            h - bottom,
            h - bottom + 16.0
        ));
    }
    for i in 0..=4 {
        let ms = max_ms * i as f64 / 4.0;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{ms:.0} ms</text>\n",
            left - 6.0,
            y(ms) + 4.0
        ));
    }
    for (i, (curve, result)) in curves.iter().zip(results).enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<String> = curve
            .iter()
            .map(|(q, v)| format!("{:.1},{:.1}", x(*q), y(*v)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{}</text>\n",
            points.join(" "),
            left + 10.0,
            44.0 + 16.0 * i as f64,
            format!("{:?}", result.target).to_lowercase()
        ));
    }
    svg.push_str("</svg>\n");
    svg
}
