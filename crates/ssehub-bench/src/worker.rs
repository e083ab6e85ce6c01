//! A worker process: holds a share of a scenario's subscribers from its own
//! 127.0.0.x address (one process may hold at most 20,000 files here),
//! checks every stream for loss, duplicates and order, records latency, and
//! reports to the coordinator as one JSON line.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::load::{Target, now_micros};

/// What a worker is told to do (passed as JSON on its command line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub target: Target,
    pub addr: SocketAddr,
    pub bind: IpAddr,
    /// Index of its first subscriber (topics shape: subscriber i listens to
    /// topic i).
    pub first: usize,
    pub count: usize,
    pub topics: usize,
    /// Events published in all.
    pub events: u64,
    /// Events each connection must see; `None` when topics differ.
    pub per_connection: Option<u64>,
    /// Share of connections that drop mid-run and resume.
    pub resume_fraction: f64,
    /// Unique per run, in topic names, so a peer's buffered messages from an
    /// earlier run are never replayed into this one.
    pub run: String,
    /// A dropping connection drops after this many events.
    pub drop_after: u64,
    pub deadline_ms: u64,
}

/// What a worker saw.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub reconnected: u64,
    pub buckets: Vec<(u64, u64)>,
}

/// A worker started by the coordinator.
pub struct WorkerProcess {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl WorkerProcess {
    /// `ssehub-bench worker SPEC`.
    pub fn start(spec: &WorkerSpec) -> std::io::Result<WorkerProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "worker",
                &serde_json::to_string(spec).expect("plain struct"),
            ])
            .stdout(Stdio::piped())
            .spawn()?;
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        Ok(WorkerProcess { child, lines })
    }

    /// Waits until it holds all its connections.
    pub fn wait_ready(&mut self) -> std::io::Result<()> {
        match self.lines.next() {
            Some(Ok(line)) if line == "ready" => Ok(()),
            other => Err(std::io::Error::other(format!(
                "worker did not start: {other:?}"
            ))),
        }
    }

    /// Waits for its report.
    pub fn finish(mut self) -> std::io::Result<WorkerReport> {
        let line = self
            .lines
            .next()
            .ok_or_else(|| std::io::Error::other("worker ended without a report"))??;
        let _ = self.child.wait();
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }
}

/// Holds the connections, checks the streams, reports.
pub async fn run(spec: WorkerSpec) -> Result<(), Box<dyn std::error::Error>> {
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
        Target::Ssehub | Target::Cluster1 | Target::Cluster3 => {
            format!("/.well-known/mercure?match=bench/{}/{topic}", spec.run)
        }
        Target::Null => "/sub".to_owned(),
        Target::Nchan | Target::Pushpin => format!("/sub/bench/{}/{topic}", spec.run),
        Target::SsehubTls | Target::SsehubH2 | Target::SsehubH2x10 => {
            unreachable!("never started by a load scenario")
        }
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
                // such as the resume position, is not an event). ssehub's
                // ids are `#N`; other hubs' may be bare numbers.
                if let Ok(numeric) = last_id.trim_start_matches('#').parse::<u64>() {
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
