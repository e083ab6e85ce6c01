//! `durable-streams`: the Durable Streams protocol, ssehub against the
//! protocol's Node reference server (`@durable-streams/server`, installed
//! by `npm ci` in bench/durable-streams), each in its own process, in one
//! run: closed-loop appends, and one stream read live (SSE) by many.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;

use crate::report::{median, write_section};
use crate::servers::{ServerArgs, ServerProcess};

#[derive(Debug, clap::Args)]
pub struct StreamsArgs {
    /// Concurrent writers, each appending to its own stream; one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    writers: Vec<usize>,
    /// SSE readers of the one stream of the fan-out.
    #[arg(long, default_value_t = 1000)]
    readers: usize,
    /// Appends per second in the fan-out.
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// How long each run appends.
    #[arg(long, default_value = "3s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Runs per configuration, each with a fresh server; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Write the results into this Markdown file.
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ssehub { durable: bool },
    Reference { files: bool },
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ssehub { durable: false } => "ssehub, memory store",
            Target::Ssehub { durable: true } => "ssehub, durable store (fsync)",
            Target::Reference { files: false } => "reference server, memory",
            Target::Reference { files: true } => "reference server, file-backed",
        }
    }

    fn start(self, servers: &ServerArgs, dir: &std::path::Path) -> std::io::Result<ServerProcess> {
        let dir = dir.display().to_string();
        match self {
            Target::Ssehub { durable } => {
                let store = if durable { "durable" } else { "memory" };
                ServerProcess::hub(servers, &["--store", store, "--data-dir", &dir])
            }
            Target::Reference { files } => {
                let script = concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../bench/durable-streams/reference-server.mjs"
                );
                let mut command = Command::new("node");
                command.arg(script).stderr(Stdio::inherit());
                if files {
                    command.env("DATA_DIR", &dir);
                }
                ServerProcess::spawn_announced(command, "reference server on ")
            }
        }
    }
}

const TARGETS: [Target; 4] = [
    Target::Ssehub { durable: false },
    Target::Reference { files: false },
    Target::Ssehub { durable: true },
    Target::Reference { files: true },
];

struct AppendRun {
    per_second: f64,
    p50_ms: f64,
}

struct FanoutRun {
    deliveries_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    complete: bool,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Sends `request`; an error unless the answer is a success.
async fn succeed(request: reqwest::RequestBuilder, what: &str) -> Result<(), String> {
    let response = request.send().await.map_err(|e| format!("{what}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{what}: {}", response.status()))
    }
}

async fn create(http: &reqwest::Client, url: &str) -> Result<(), String> {
    let request = http.put(url).header("content-type", "text/plain");
    succeed(request, &format!("PUT {url}")).await
}

async fn append(http: &reqwest::Client, url: &str, body: String) -> Result<(), String> {
    let request = http
        .post(url)
        .header("content-type", "text/plain")
        .body(body);
    succeed(request, &format!("POST {url}")).await
}

async fn append_run(
    base: &str,
    writers: usize,
    duration: Duration,
) -> Result<AppendRun, Box<dyn std::error::Error>> {
    let payload = "x".repeat(100);
    let mut tasks = Vec::new();
    let start = Instant::now() + Duration::from_millis(200);
    for w in 0..writers {
        // One client each: its own connection, as separate backends have.
        let http = reqwest::Client::new();
        let url = format!("{base}/v1/stream/bench-append-{w}");
        create(&http, &url).await?;
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            tokio::time::sleep_until(start.into()).await;
            let deadline = start + duration;
            while Instant::now() < deadline {
                let sent = Instant::now();
                append(&http, &url, payload.clone()).await?;
                latencies.saturating_record(sent.elapsed().as_micros() as u64);
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        all.add(task.await??)?;
    }
    Ok(AppendRun {
        per_second: all.len() as f64 / duration.as_secs_f64(),
        p50_ms: all.value_at_quantile(0.5) as f64 / 1000.0,
    })
}

/// One SSE reader: the send times of the appends it received, counted from
/// the `t=MICROS;` marks in the data, until `expected` are in or the
/// deadline.
async fn reader(
    http: reqwest::Client,
    url: String,
    expected: usize,
    deadline: Instant,
    opened: tokio::sync::mpsc::Sender<()>,
) -> Result<Vec<u64>, String> {
    let response = http
        .get(format!("{url}?offset=-1&live=sse"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let _ = opened.send(()).await;
    let mut body = response.bytes_stream();
    let mut latencies = Vec::with_capacity(expected);
    let mut pending = String::new();
    while latencies.len() < expected {
        let chunk = match tokio::time::timeout_at(deadline.into(), body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            _ => break,
        };
        let received = now_micros();
        pending.push_str(&String::from_utf8_lossy(&chunk));
        // Only whole marks: a mark cut by the chunk boundary waits.
        while let Some(start) = pending.find("t=") {
            let Some(end) = pending[start..].find(';') else {
                pending.drain(..start);
                break;
            };
            if let Ok(sent) = pending[start + 2..start + end].parse::<u64>() {
                latencies.push(received.saturating_sub(sent));
            }
            pending.drain(..start + end + 1);
        }
    }
    Ok(latencies)
}

async fn fanout_run(
    base: &str,
    readers: usize,
    rate: u64,
    duration: Duration,
) -> Result<FanoutRun, Box<dyn std::error::Error>> {
    let url = format!("{base}/v1/stream/bench-fanout");
    let http = reqwest::Client::new();
    create(&http, &url).await?;
    let expected = (rate * duration.as_secs()) as usize;
    let deadline = Instant::now() + duration + Duration::from_secs(30);
    let (opened_tx, mut opened) = tokio::sync::mpsc::channel(readers);
    let mut tasks = Vec::new();
    // Readers on a few clients, each its own pool of connections.
    let clients: Vec<reqwest::Client> = (0..16).map(|_| reqwest::Client::new()).collect();
    for r in 0..readers {
        tasks.push(tokio::spawn(reader(
            clients[r % clients.len()].clone(),
            url.clone(),
            expected,
            deadline,
            opened_tx.clone(),
        )));
    }
    for _ in 0..readers {
        opened.recv().await;
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    for _ in 0..expected {
        tick.tick().await;
        append(&http, &url, format!("t={};", now_micros())).await?;
    }
    let mut latencies = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut complete = true;
    let mut delivered = 0u64;
    for task in tasks {
        let got = task.await??;
        complete &= got.len() == expected;
        delivered += got.len() as u64;
        for latency in got {
            latencies.saturating_record(latency.max(1));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(FanoutRun {
        deliveries_per_second: delivered as f64 / elapsed,
        p50_ms: latencies.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
        complete,
    })
}

/// Runs the scenario.
pub async fn run(
    servers: &ServerArgs,
    args: StreamsArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut append_rows = String::new();
    for &writers in &args.writers {
        let mut results = Vec::new();
        for target in TARGETS {
            let mut runs = Vec::new();
            for _ in 0..args.rounds {
                let dir = tempfile::tempdir()?;
                let mut server = target.start(servers, dir.path())?;
                let base = format!("http://{}", server.addr);
                runs.push(append_run(&base, writers, args.duration).await?);
                server.terminate();
            }
            let (per_second, p50) = (median(&runs, |r| r.per_second), median(&runs, |r| r.p50_ms));
            println!(
                "appends, {writers:>3} writers, {:<32} {per_second:>8.0}/s, p50 {p50:.2} ms",
                target.name()
            );
            results.push((target, per_second, p50));
        }
        // Each of ssehub's rows against the reference server on the same
        // kind of store.
        let of = |wanted: Target| {
            results
                .iter()
                .find(|r| r.0 == wanted)
                .map_or(f64::NAN, |r| r.1)
        };
        for &(target, per_second, p50) in &results {
            let ratio = match target {
                Target::Ssehub { durable } => {
                    format!(
                        "{:.2}",
                        per_second / of(Target::Reference { files: durable })
                    )
                }
                Target::Reference { .. } => "1".into(),
            };
            append_rows.push_str(&format!(
                "| {writers} | {} | {per_second:.0} | {p50:.2} | {ratio} |\n",
                target.name()
            ));
        }
    }
    let mut fanout_rows = String::new();
    for target in [TARGETS[0], TARGETS[1]] {
        let mut runs = Vec::new();
        for _ in 0..args.rounds {
            let dir = tempfile::tempdir()?;
            let mut server = target.start(servers, dir.path())?;
            let base = format!("http://{}", server.addr);
            runs.push(fanout_run(&base, args.readers, args.rate, args.duration).await?);
            server.terminate();
        }
        let all_complete = runs.iter().all(|r| r.complete);
        let deliveries = median(&runs, |r| r.deliveries_per_second);
        let (p50, p99) = (median(&runs, |r| r.p50_ms), median(&runs, |r| r.p99_ms));
        println!(
            "fan-out, {} SSE readers, {:<32} {deliveries:>8.0} deliveries/s, p50 {p50:.1} ms, p99 {p99:.1} ms, every reader got every append: {all_complete}",
            args.readers,
            target.name()
        );
        fanout_rows.push_str(&format!(
            "| {} | {deliveries:.0} | {p50:.1} | {p99:.1} | {} |\n",
            target.name(),
            if all_complete { "yes" } else { "no" }
        ));
    }
    if let Some(path) = &args.write {
        let table = format!(
            "Medians of {rounds} runs of {duration:?} each, a fresh server per run, each in its own process. \
             **Appends**: closed-loop writers, each on its own connection and stream, 100-byte `text/plain` \
             appends; the ratio is against the reference server on the same kind of store (memory, or on disk).\n\n\
             | writers | server | appends/s | p50 ms | / reference |\n|---:|---|---:|---:|---:|\n{append_rows}\n\
             **Read fan-out**: {readers} SSE readers (`live=sse`) of one stream, {rate} appends/s for {duration:?}; \
             latency from the append's send to its arrival at each reader.\n\n\
             | server | deliveries/s | p50 ms | p99 ms | every reader got every append |\n|---|---:|---:|---:|---|\n{fanout_rows}",
            rounds = args.rounds,
            duration = args.duration,
            readers = args.readers,
            rate = args.rate,
        );
        write_section(path, "durable-streams", &table)?;
    }
    Ok(())
}
