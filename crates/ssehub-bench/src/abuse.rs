//! `abuse`: the attacks of docs/SECURITY.md's threat model at full size,
//! each against a fresh hub with its default limits, while a prober checks
//! what a legitimate user gets: a health check on a new connection every
//! 100 ms, and a publish-to-subscriber round trip every 250 ms. Reports
//! their latency, and the hub's and the kernel's memory, during each attack.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::servers::{ServerArgs, ServerProcess};

#[derive(Debug, clap::Args)]
pub struct AbuseArgs {
    /// The attacks to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "redos,replay,bodies,readers,wildcards"
    )]
    attacks: Vec<Attack>,
    /// How long each attack runs once in place.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// History replayed by the `replay` attack, in MB.
    #[arg(long, default_value_t = 200)]
    history_mb: usize,
    /// Connections holding a body back in the `bodies` attack.
    #[arg(long, default_value_t = 19_000)]
    bodies: usize,
    /// Write the table into this Markdown file (between the abuse markers).
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Attack {
    /// 200 subscribers with a template built to make backtracking explode,
    /// while topics of 4,000 `x` are published.
    Redos,
    /// 20 connections replaying all history from `earliest` that never read.
    Replay,
    /// Connections that declare a body and never send it.
    Bodies,
    /// 200 subscribers that never read, under a flood of events.
    Readers,
    /// 4 connections at a time opening `match=*` and hanging up after
    /// 100 ms, against 80,000 topics (20,000 with names of 1 KB).
    Wildcards,
}

impl Attack {
    fn describe(self, args: &AbuseArgs) -> String {
        match self {
            Attack::Redos => {
                "200 x `{+v0}x...{+v13}xQ` selectors, topics `x...xQ` of up to 4,000 bytes published"
                    .into()
            }
            Attack::Replay => format!(
                "20 x `match=*` from `earliest` never read, {} MB of history",
                args.history_mb
            ),
            Attack::Bodies => format!(
                "{} publishes declaring 1 MB and sending nothing, from 20 addresses",
                args.bodies
            ),
            Attack::Readers => "200 stalled readers, 2,000 events/s of 1 KiB".into(),
            Attack::Wildcards => {
                "4 at a time opening `match=*` and hanging up after 100 ms, 80,000 topics (20,000 of 1 KB names)"
                    .into()
            }
        }
    }

    /// The hub's settings for the attack; the replay attack runs on the
    /// durable store (the default), in `data_dir`, whose history is in the
    /// file and not in memory.
    fn hub_args(self, data_dir: &std::path::Path) -> Vec<String> {
        let mut args = vec!["--demos", "false"];
        match self {
            Attack::Redos => args.extend(["--max-topic-length", "4096"]),
            Attack::Replay => args.extend(["--history-size", "100000", "--store", "durable"]),
            Attack::Wildcards => args.extend(["--max-topic-length", "2048"]),
            Attack::Bodies | Attack::Readers => {}
        }
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        if self == Attack::Replay {
            args.extend(["--data-dir".into(), data_dir.display().to_string()]);
        }
        args
    }
}

/// What the prober saw during one attack.
struct Observed {
    health: hdrhistogram::Histogram<u64>,
    health_failed: u64,
    round_trip: hdrhistogram::Histogram<u64>,
    round_trip_failed: u64,
    peak_rss: u64,
    peak_kernel_tcp: u64,
    baseline_rss: u64,
    baseline_kernel_tcp: u64,
}

/// Runs the scenario.
pub async fn run(servers: &ServerArgs, args: AbuseArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = String::new();
    for &attack in &args.attacks {
        let data_dir = tempfile::tempdir()?;
        let hub_args = attack.hub_args(data_dir.path());
        let hub_args: Vec<&str> = hub_args.iter().map(String::as_str).collect();
        let hub = ServerProcess::hub_as_deployed(servers, &hub_args)?;
        let seen = under_attack(&hub, attack, &args).await?;
        let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let row = format!(
            "| {} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {} | {:.0} MiB | {:.0} MiB | {:.0} MiB |\n",
            attack.describe(&args),
            ms(&seen.health, 0.5),
            ms(&seen.health, 0.99),
            seen.health.max() as f64 / 1000.0,
            seen.health_failed,
            ms(&seen.round_trip, 0.5),
            ms(&seen.round_trip, 0.99),
            seen.round_trip_failed,
            mib(seen.baseline_rss),
            mib(seen.peak_rss),
            mib(seen
                .peak_kernel_tcp
                .saturating_sub(seen.baseline_kernel_tcp)),
        );
        print!("{row}");
        rows.push_str(&row);
    }
    if let Some(path) = &args.write {
        let table = format!(
            "Each attack against a fresh `ssehub serve --dev --demos false` (memory store, except the replay attack: the durable store, the default; default limits otherwise), held for {:?} once in place. \
             A prober on another address opens a new connection for `GET /healthz` every 100 ms and publishes to a topic it subscribes to every 250 ms; \
             a check fails after 5 s.\n\n\
             | attack | health p50 ms | health p99 ms | health max ms | health failed | round trip p50 ms | round trip p99 ms | round trips failed | hub RSS before | hub RSS peak | kernel TCP memory peak (added) |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{rows}",
            args.duration
        );
        crate::report::write_section(path, "abuse", &table)?;
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn under_attack(
    hub: &ServerProcess,
    attack: Attack,
    args: &AbuseArgs,
) -> Result<Observed, Box<dyn std::error::Error>> {
    let url = format!("http://{}", hub.addr);
    let client = ssehub_client::Hub::new(&url);
    prepare(&client, attack, args).await?;
    let baseline_rss = rss(hub.pid());
    let baseline_kernel_tcp = kernel_tcp();
    let attacking = Arc::new(AtomicBool::new(true));
    let attacker = tokio::spawn(attack_for(
        hub.addr,
        client.clone(),
        attack,
        args.bodies,
        attacking.clone(),
    ));
    // Let the attack get in place before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let observed = probe(
        hub,
        &client,
        args.duration,
        baseline_rss,
        baseline_kernel_tcp,
    )
    .await;
    attacking.store(false, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), attacker).await;
    Ok(observed)
}

/// What the attack needs in place first: history, long topics.
async fn prepare(
    client: &ssehub_client::Hub,
    attack: Attack,
    args: &AbuseArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    match attack {
        Attack::Redos => {
            for len in [50, 1000, 4000] {
                client
                    .publish(&ssehub_client::Publish::new("x".repeat(len), "long"))
                    .await?;
            }
        }
        Attack::Wildcards => {
            // Names with a long common start are the costly ones to sort.
            let long = "x".repeat(1000);
            let publishers = (0..16).map(|p| {
                let client = client.clone();
                let long = long.clone();
                async move {
                    for i in (p..80_000).step_by(16) {
                        let topic = match i < 20_000 {
                            true => format!("{long}/{i}"),
                            false => format!("t/{i}"),
                        };
                        client
                            .publish(&ssehub_client::Publish::new(topic, "d"))
                            .await?;
                    }
                    Ok::<_, ssehub_client::Error>(())
                }
            });
            for published in futures_util::future::join_all(publishers).await {
                published?;
            }
        }
        Attack::Replay => {
            // 4 KiB events over 100 topics, 16 publishers at once.
            let events = args.history_mb * 1_000_000 / 4096;
            let publishers = (0..16).map(|p| {
                let client = client.clone();
                async move {
                    let payload = "h".repeat(4096);
                    for i in (p..events).step_by(16) {
                        let publish =
                            ssehub_client::Publish::new(format!("h/{}", i % 100), payload.clone());
                        client.publish(&publish).await?;
                    }
                    Ok::<_, ssehub_client::Error>(())
                }
            });
            for done in futures_util::future::join_all(publishers).await {
                done?;
            }
        }
        Attack::Bodies | Attack::Readers => {}
    }
    Ok(())
}

/// Runs the attack until `attacking` is cleared.
async fn attack_for(
    hub: SocketAddr,
    client: ssehub_client::Hub,
    attack: Attack,
    bodies: usize,
    attacking: Arc<AtomicBool>,
) {
    let mut held = Vec::new();
    match attack {
        Attack::Redos => {
            let hostile: String = (0..14).map(|i| format!("{{+v{i}}}x")).collect::<String>() + "Q";
            let query = format!("topic={}", percent(&hostile));
            for i in 0..200 {
                if let Ok(stream) =
                    stalled_request(hub, attacker(i), &subscribe_request(&query), None).await
                {
                    held.push(stream);
                }
            }
            let mut round = 0;
            while attacking.load(Ordering::Relaxed) {
                for len in [60, 1500, 4000] {
                    // Ending in Q, the topic gets the whole matcher (and
                    // matches: 200 deliveries).
                    let topic = format!("{}Q", "x".repeat(len - 1 - round % 10));
                    let _ = client
                        .publish(&ssehub_client::Publish::new(topic, "longer"))
                        .await;
                }
                round += 1;
            }
        }
        Attack::Replay => {
            let query = "match=*&lastEventID=earliest";
            for i in 0..20 {
                if let Ok(stream) =
                    stalled_request(hub, attacker(i), &subscribe_request(query), Some(4096)).await
                {
                    held.push(stream);
                }
            }
        }
        Attack::Bodies => {
            let request = "POST /.well-known/mercure HTTP/1.1\r\nHost: hub\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\n\r\n";
            for i in 0..bodies {
                if !attacking.load(Ordering::Relaxed) {
                    break;
                }
                match stalled_request(hub, attacker(i % 20), request, None).await {
                    Ok(stream) => held.push(stream),
                    Err(_) => tokio::task::yield_now().await,
                }
            }
        }
        Attack::Readers => {
            for i in 0..200 {
                if let Ok(stream) = stalled_request(
                    hub,
                    attacker(i),
                    &subscribe_request("match=flood"),
                    Some(4096),
                )
                .await
                {
                    held.push(stream);
                }
            }
            let flood = ssehub_client::Publish::new("flood", "f".repeat(1024));
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while attacking.load(Ordering::Relaxed) {
                tick.tick().await;
                let batch = (0..20).map(|_| client.publish(&flood));
                futures_util::future::join_all(batch).await;
            }
        }
        // (Below: it needs no connection held.)
        Attack::Wildcards => {}
    }
    if attack == Attack::Wildcards {
        let openers = (0..4).map(|i| {
            let attacking = attacking.clone();
            async move {
                while attacking.load(Ordering::Relaxed) {
                    let request = subscribe_request("match=*");
                    if let Ok(stream) = stalled_request(hub, attacker(i), &request, None).await {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        drop(stream);
                    }
                }
            }
        });
        futures_util::future::join_all(openers).await;
    }
    while attacking.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
}

/// The attacker's addresses: 127.0.1.1 to 127.0.1.20 (the prober is on
/// 127.0.0.1).
fn attacker(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 1, 1 + (i % 20) as u8])
}

fn subscribe_request(query: &str) -> String {
    format!("GET /.well-known/mercure?{query} HTTP/1.1\r\nHost: hub\r\n\r\n")
}

/// Opens a connection from `from`, sends `request`, and reads nothing.
async fn stalled_request(
    hub: SocketAddr,
    from: IpAddr,
    request: &str,
    receive_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(SocketAddr::new(from, 0))?;
    let mut stream = socket.connect(hub).await?;
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Health checks and round trips for `duration`, with memory sampled.
async fn probe(
    hub: &ServerProcess,
    client: &ssehub_client::Hub,
    duration: Duration,
    baseline_rss: u64,
    baseline_kernel_tcp: u64,
) -> Observed {
    let histogram =
        || hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut seen = Observed {
        health: histogram(),
        health_failed: 0,
        round_trip: histogram(),
        round_trip_failed: 0,
        peak_rss: baseline_rss,
        peak_kernel_tcp: baseline_kernel_tcp,
        baseline_rss,
        baseline_kernel_tcp,
    };
    let limit = Duration::from_secs(5);
    let mut listener = tokio::time::timeout(
        limit,
        client.connect(&ssehub_client::Subscribe::topics(["probe"])),
    )
    .await
    .ok()
    .and_then(Result::ok);
    let started = Instant::now();
    let mut tick = 0u64;
    while started.elapsed() < duration {
        let sent = Instant::now();
        match tokio::time::timeout(limit, health(hub.addr)).await {
            Ok(Ok(true)) => {
                seen.health
                    .saturating_record(sent.elapsed().as_micros() as u64);
            }
            _ => seen.health_failed += 1,
        }
        if tick.is_multiple_of(5) {
            let sent = Instant::now();
            let data = format!("probe {tick}");
            let delivered = async {
                client
                    .publish(&ssehub_client::Publish::new("probe", data.clone()))
                    .await
                    .ok()?;
                let listener = listener.as_mut()?;
                loop {
                    let event = listener.next_event().await?.ok()?;
                    if event.data == data {
                        return Some(());
                    }
                }
            };
            match tokio::time::timeout(limit, delivered).await {
                Ok(Some(())) => seen
                    .round_trip
                    .saturating_record(sent.elapsed().as_micros() as u64),
                _ => seen.round_trip_failed += 1,
            }
        }
        seen.peak_rss = seen.peak_rss.max(rss(hub.pid()));
        seen.peak_kernel_tcp = seen.peak_kernel_tcp.max(kernel_tcp());
        tick += 1;
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed())).await;
    }
    seen
}

/// `GET /healthz` on a new connection: whether it answered 200.
async fn health(hub: SocketAddr) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(hub).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer.starts_with(b"HTTP/1.1 200"))
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Memory of every TCP socket buffer on the machine, in bytes.
fn kernel_tcp() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("TCP:"))?;
            let mut fields = line.split_whitespace();
            fields.find(|f| *f == "mem")?;
            fields.next()?.parse::<u64>().ok()
        })
        .map_or(0, |pages| pages * 4096)
}
