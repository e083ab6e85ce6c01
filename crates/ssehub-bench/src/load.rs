//! `fanout` / `topics` / `resume`: many subscribers, an open-loop
//! publisher, and a check of every subscriber's stream.
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

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::peers;
use crate::servers::{QUIET_HUB, RedisProcess, ServerArgs, ServerProcess};
use crate::worker::{WorkerProcess, WorkerReport, WorkerSpec};

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
    /// One ssehub node of a cluster, on a redis-server of its own.
    #[value(name = "cluster-1")]
    #[serde(rename = "cluster-1")]
    Cluster1,
    /// Three ssehub nodes of a cluster on one redis-server; workers and
    /// publishes are spread over the nodes.
    #[value(name = "cluster-3")]
    #[serde(rename = "cluster-3")]
    Cluster3,
    /// ssehub over HTTPS, one HTTP/1.1 stream per TLS connection (idle only).
    #[value(name = "ssehub-tls")]
    #[serde(rename = "ssehub-tls")]
    SsehubTls,
    /// ssehub over HTTPS, one HTTP/2 stream per connection (idle only).
    #[value(name = "ssehub-h2")]
    #[serde(rename = "ssehub-h2")]
    SsehubH2,
    /// ssehub over HTTPS, ten HTTP/2 streams per connection, as a page
    /// with several `EventSource`s has (idle only).
    #[value(name = "ssehub-h2x10")]
    #[serde(rename = "ssehub-h2x10")]
    SsehubH2x10,
}

impl Target {
    /// Connections a worker opens at once. Pushpin answered 502 or 500 to
    /// part of a burst of 600 simultaneous subscriptions to one channel
    /// (here 50 to 210 of them), so it gets smaller ramps.
    pub fn ramp(self) -> usize {
        match self {
            Target::Pushpin => 100,
            _ => 500,
        }
    }

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Target::Ssehub => "ssehub",
            Target::Null => "null",
            Target::Nchan => "nchan",
            Target::Pushpin => "pushpin",
            Target::Cluster1 => "cluster-1",
            Target::Cluster3 => "cluster-3",
            Target::SsehubTls => "ssehub, TLS + HTTP/1.1",
            Target::SsehubH2 => "ssehub, TLS + HTTP/2",
            Target::SsehubH2x10 => "ssehub, TLS + HTTP/2, 10 streams per connection",
        }
    }

    /// Whether it is ssehub (ids and subscriptions alike).
    pub fn is_ssehub(self) -> bool {
        matches!(self, Target::Ssehub | Target::Cluster1 | Target::Cluster3)
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

impl Shape {
    /// The scenario's name, also its section in docs/BENCHMARKS.md.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Fanout => "fanout",
            Shape::Topics => "topics",
            Shape::Resume => "resume",
        }
    }
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
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
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
    /// CPU seconds of the cluster's shared log (redis-server), not in
    /// `cpu_seconds`.
    pub log_cpu_seconds: f64,
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
    servers: &ServerArgs,
    shape: Shape,
    args: &LoadArgs,
) -> Result<Vec<LoadResult>, Box<dyn std::error::Error>> {
    let mut results = Vec::new();
    for &target in &args.targets {
        let result = run_target(servers, shape, target, args).await?;
        println!(
            "{:?} {:>7}: {:.0} deliveries/s, {:.2} CPU s per million ({:.0}% kernel), p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; lost {}, duplicated {}, out of order {}{}",
            shape,
            target.name(),
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
    /// Where subscribers connect (worker `w` to the `w % len`th).
    addrs: Vec<SocketAddr>,
    /// Where events are published (in turn).
    publish: Vec<SocketAddr>,
    /// Processes whose CPU time counts.
    pids: Vec<u32>,
    /// The shared log of a cluster, measured apart.
    log_pids: Vec<u32>,
    /// The servers, when this command started them.
    _processes: Vec<ServerProcess>,
    _redis: Option<RedisProcess>,
}

impl Running {
    fn one(
        addr: SocketAddr,
        publish: SocketAddr,
        pids: Vec<u32>,
        process: Option<ServerProcess>,
    ) -> Running {
        Running {
            addrs: vec![addr],
            publish: vec![publish],
            pids,
            log_pids: Vec::new(),
            _processes: process.into_iter().collect(),
            _redis: None,
        }
    }

    /// `nodes` ssehub nodes on a fresh redis-server.
    fn cluster(servers: &ServerArgs, nodes: usize) -> Result<Running, Box<dyn std::error::Error>> {
        let redis = RedisProcess::start()?;
        let url = redis.url();
        let mut processes = Vec::new();
        for _ in 0..nodes {
            processes.push(ServerProcess::hub(
                servers,
                &[
                    &QUIET_HUB[..],
                    &["--queue-size", "4096", "--redis-url", &url],
                ]
                .concat(),
            )?);
        }
        let addrs: Vec<SocketAddr> = processes.iter().map(|p| p.addr).collect();
        Ok(Running {
            publish: addrs.clone(),
            addrs,
            pids: processes.iter().map(ServerProcess::pid).collect(),
            log_pids: vec![redis.pid()],
            _processes: processes,
            _redis: Some(redis),
        })
    }
}

fn start_target(
    servers: &ServerArgs,
    target: Target,
    args: &LoadArgs,
) -> Result<Running, Box<dyn std::error::Error>> {
    Ok(match target {
        Target::Ssehub => {
            let hub = ServerProcess::hub(
                servers,
                &[&QUIET_HUB[..], &["--queue-size", "4096"]].concat(),
            )?;
            Running::one(hub.addr, hub.addr, vec![hub.pid()], Some(hub))
        }
        Target::Null => {
            let null = ServerProcess::null()?;
            Running::one(null.addr, null.addr, vec![null.pid()], Some(null))
        }
        Target::Nchan => Running::one(args.nchan, args.nchan, peers::nchan_pids(servers), None),
        Target::Pushpin => Running::one(
            args.pushpin,
            args.pushpin_publish,
            peers::pushpin_pids(servers),
            None,
        ),
        Target::Cluster1 => Running::cluster(servers, 1)?,
        Target::Cluster3 => Running::cluster(servers, 3)?,
        Target::SsehubTls | Target::SsehubH2 | Target::SsehubH2x10 => {
            return Err("the TLS targets are measured by `idle` only".into());
        }
    })
}

/// User and system CPU seconds of processes, from /proc/PID/stat.
pub fn cpu_seconds(pids: &[u32]) -> (f64, f64) {
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
    servers: &ServerArgs,
    shape: Shape,
    target: Target,
    args: &LoadArgs,
) -> Result<LoadResult, Box<dyn std::error::Error>> {
    let running = start_target(servers, target, args)?;
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
            addr: running.addrs[w % running.addrs.len()],
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
    let log_before = cpu_seconds(&running.log_pids);
    let started = Instant::now();
    let published = publish_open_loop(
        target,
        &running.publish,
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
    let log_after = cpu_seconds(&running.log_pids);
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
        log_cpu_seconds: (log_after.0 - log_before.0) + (log_after.1 - log_before.1),
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

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Publishes `events` events at `rate` per second on a schedule fixed in
/// advance; each carries `seq scheduled_micros` and padding.
async fn publish_open_loop(
    target: Target,
    addrs: &[SocketAddr],
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
        let addr = addrs[seq as usize % addrs.len()];
        let request = match target {
            Target::Ssehub | Target::Cluster1 | Target::Cluster3 => client
                .post(format!("http://{addr}/.well-known/mercure"))
                .form(&[("topic", topic.as_str()), ("data", data.as_str())]),
            Target::Null => client.post(format!("http://{addr}/publish")).body(data),
            Target::SsehubTls | Target::SsehubH2 | Target::SsehubH2x10 => {
                unreachable!("never started by a load scenario")
            }
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
