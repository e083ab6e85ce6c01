//! Bursts of connections: `open-rate` (streams opened 500 at a time: how
//! fast, and whether the listen queue overflowed) and `storm` (a hub
//! holding many streams restarts: when do its clients come back, what does
//! it cost the hub, and is anything lost).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

use crate::load::cpu_seconds;
use crate::peers;
use crate::report::{median, write_section};
use crate::servers::{QUIET_HUB, ServerArgs, ServerProcess};

/// The kernel's count of connections dropped because a listen queue was
/// full (`ListenOverflows` of /proc/net/netstat), machine-wide.
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// Packets the kernel dropped because a CPU's input queue was full
/// (`net.core.netdev_max_backlog`; the second column of
/// /proc/net/softnet_stat), machine-wide: on loopback, where a burst of
/// SYNs goes.
fn input_drops() -> u64 {
    let text = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
    text.lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// Sockets in TIME_WAIT, machine-wide (/proc/net/sockstat).
fn time_wait() -> u64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let mut fields = l.split_whitespace();
            fields.find(|f| *f == "tw")?;
            fields.next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Waits (at most 70 s) until the sockets an earlier round left in
/// TIME_WAIT are gone: tens of thousands of them made the next round's
/// connects wait for SYN retransmissions and overflow the listen queue,
/// which measured the bench, not the hub.
async fn settle() {
    let deadline = Instant::now() + Duration::from_secs(70);
    // (A few thousand are harmless; the trouble began in the tens of
    // thousands.)
    while time_wait() > 20_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Connections waiting in the accept queue of the listener on `port`
/// (`rx_queue` of its LISTEN row in /proc/net/tcp).
fn accept_queue(port: u16) -> u64 {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A") && fields.get(1)?.ends_with(&local);
            let queues = fields.get(4)?;
            listening.then(|| u64::from_str_radix(queues.split(':').nth(1)?, 16).ok())?
        })
        .max()
        .unwrap_or(0)
}

#[derive(Debug, clap::Args)]
pub struct OpenRateArgs {
    /// Streams to open, each to its own topic.
    #[arg(long, default_value_t = 6_000)]
    streams: usize,
    /// Rounds per target; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// nchan's address (started by bench/peers/setup); `--no-nchan` to skip.
    #[arg(long, default_value = "127.0.0.1:8091")]
    nchan: SocketAddr,
    /// Measure ssehub only.
    #[arg(long)]
    no_nchan: bool,
    /// Write the table into this Markdown file (section `open-rate`).
    #[arg(long)]
    write: Option<PathBuf>,
}

struct Opened {
    seconds: f64,
    overflows: u64,
    cpu: f64,
}

/// What opens the streams in one row of the table.
#[derive(Clone, Copy)]
enum Opener {
    Ssehub { backlog: Option<&'static str> },
    Nchan,
}

pub async fn open_rate(
    servers: &ServerArgs,
    args: OpenRateArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut openers = vec![
        (
            "ssehub, --listen-backlog 128 (the old backlog)",
            Opener::Ssehub {
                backlog: Some("128"),
            },
        ),
        ("ssehub (default backlog)", Opener::Ssehub { backlog: None }),
    ];
    if !args.no_nchan {
        openers.push(("nginx + nchan", Opener::Nchan));
    }
    let mut rows = Vec::new();
    for (name, opener) in openers {
        let mut rounds = Vec::new();
        for round in 1..=args.rounds {
            let opened = open_round(servers, &args, opener).await?;
            println!(
                "{name} round {round}: {} streams in {:.2} s ({:.0}/s), {} listen overflows, server CPU {:.2} s",
                args.streams,
                opened.seconds,
                args.streams as f64 / opened.seconds,
                opened.overflows,
                opened.cpu
            );
            rounds.push(opened);
        }
        let seconds = median(&rounds, |r| r.seconds);
        let overflows = median(&rounds, |r| r.overflows as f64);
        let cpu = median(&rounds, |r| r.cpu);
        rows.push((name, seconds, overflows, cpu));
    }
    let baseline = rows.iter().find(|r| r.0.starts_with("nginx")).map(|r| r.1);
    let mut table = format!(
        "{} streams, each to its own topic, opened 500 at a time by one client process (each waits for its stream's first bytes before the next 500 start); {} rounds, medians.\n\n| server | time | streams/s | listen overflows | server CPU | time vs nchan |\n|---|---:|---:|---:|---:|---:|\n",
        args.streams, args.rounds
    );
    for (name, seconds, overflows, cpu) in &rows {
        let ratio = baseline.map_or("—".to_owned(), |b| format!("{:.2}", seconds / b));
        table.push_str(&format!(
            "| {name} | {seconds:.2} s | {:.0} | {overflows:.0} | {cpu:.2} s | {ratio} |\n",
            args.streams as f64 / seconds
        ));
        println!("open-rate {name}: {seconds:.2} s, {overflows:.0} overflows, CPU {cpu:.2} s");
    }
    if let Some(path) = &args.write {
        write_section(path, "open-rate", &table)?;
    }
    Ok(())
}

async fn open_round(
    servers: &ServerArgs,
    args: &OpenRateArgs,
    opener: Opener,
) -> Result<Opened, Box<dyn std::error::Error>> {
    let (hub, addr, pids, path) = match opener {
        Opener::Ssehub { backlog } => {
            let mut flags = QUIET_HUB.to_vec();
            if let Some(backlog) = backlog {
                flags.extend(["--listen-backlog", backlog]);
            }
            let hub = ServerProcess::hub(servers, &flags)?;
            let (addr, pid) = (hub.addr, hub.pid());
            (
                Some(hub),
                addr,
                vec![pid],
                "/.well-known/mercure?match=open/",
            )
        }
        Opener::Nchan => {
            peers::reload_nchan(servers)?;
            (None, args.nchan, peers::nchan_pids(servers), "/sub/open/")
        }
    };
    settle().await;
    let cpu = || {
        let (user, system) = cpu_seconds(&pids);
        user + system
    };
    let (overflows, cpu_before) = (listen_overflows(), cpu());
    let started = Instant::now();
    let streams = crate::idle::open_plain(addr, path, args.streams).await?;
    let seconds = started.elapsed().as_secs_f64();
    let opened = Opened {
        seconds,
        overflows: listen_overflows() - overflows,
        cpu: cpu() - cpu_before,
    };
    drop(streams);
    drop(hub);
    if matches!(opener, Opener::Nchan) {
        // Let nginx see the closed connections before the next round.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(opened)
}

#[derive(Debug, clap::Args)]
pub struct StormArgs {
    /// Streams the hub holds when it restarts (one client process; at most
    /// ~19,000 here).
    #[arg(long, default_value_t = 19_000)]
    streams: usize,
    /// The `--reconnect-spread` values to compare, in one run.
    #[arg(long, value_delimiter = ',', default_value = "0s,5s", value_parser = crate::parse_duration)]
    spreads: Vec<Duration>,
    /// The hub's `--retry`.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration)]
    retry: Duration,
    /// Rounds per spread; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Write the table into this Markdown file (section `reconnect-storm`).
    #[arg(long)]
    write: Option<PathBuf>,
}

/// One client's view: what it got and when it came back.
#[derive(Default)]
struct Seen {
    /// Each event's data, as received.
    events: Vec<String>,
    /// When the stream opened again after the restart.
    back_at: Option<Instant>,
}

struct Storm {
    all_back: f64,
    busiest_second: usize,
    peak_cpu: f64,
    max_queue: u64,
    overflows: u64,
    /// Packets dropped at the kernel's input queues (see [`input_drops`]).
    dropped: u64,
    lost: usize,
    duplicated: usize,
}

pub async fn storm(
    servers: &ServerArgs,
    args: StormArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    for &spread in &args.spreads {
        let mut rounds = Vec::new();
        for round in 1..=args.rounds {
            let r = storm_round(servers, &args, spread).await?;
            println!(
                "storm, spread {spread:?}, round {round}: all {} back in {:.2} s, busiest second {} reconnections, peak hub CPU {:.0}%, accept queue up to {}, {} listen overflows, {} packets dropped, {} lost, {} duplicated",
                args.streams,
                r.all_back,
                r.busiest_second,
                r.peak_cpu,
                r.max_queue,
                r.overflows,
                r.dropped,
                r.lost,
                r.duplicated
            );
            rounds.push(r);
        }
        // Medians of each figure; losses and duplicates summed over rounds.
        let result = Storm {
            all_back: median(&rounds, |r| r.all_back),
            busiest_second: median(&rounds, |r| r.busiest_second as f64) as usize,
            peak_cpu: median(&rounds, |r| r.peak_cpu),
            max_queue: median(&rounds, |r| r.max_queue as f64) as u64,
            overflows: median(&rounds, |r| r.overflows as f64) as u64,
            dropped: median(&rounds, |r| r.dropped as f64) as u64,
            lost: rounds.iter().map(|r| r.lost).sum(),
            duplicated: rounds.iter().map(|r| r.duplicated).sum(),
        };
        rows.push((spread, result));
    }
    if let Some(path) = &args.write {
        let mut table = format!(
            "A hub (durable store) holding {} streams on one topic restarts (SIGTERM, then a new process on the same port and data directory); `--retry {}`. The clients reconnect as `EventSource` does: after the `retry:` of the stream's last words, with `Last-Event-ID`; one event is published before the restart, one as soon as the new hub is up (most clients are still away), one once all are back. Peak CPU is of the new hub over 250 ms windows (100% = one core); the accept queue is sampled every 50 ms. Medians of {} rounds; events lost and duplicated are summed over the rounds (3 events × streams × rounds checked).\n\n| `--reconnect-spread` | all back after | reconnections in the busiest second | peak hub CPU | accept queue, most | listen overflows | packets dropped | events lost | duplicated |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            args.streams,
            humantime::format_duration(args.retry),
            args.rounds
        );
        for (spread, r) in &rows {
            table.push_str(&format!(
                "| {} | {:.2} s | {} | {:.0}% | {} | {} | {} | {} | {} |\n",
                humantime::format_duration(*spread),
                r.all_back,
                r.busiest_second,
                r.peak_cpu,
                r.max_queue,
                r.overflows,
                r.dropped,
                r.lost,
                r.duplicated
            ));
        }
        write_section(path, "reconnect-storm", &table)?;
    }
    Ok(())
}

async fn storm_round(
    servers: &ServerArgs,
    args: &StormArgs,
    spread: Duration,
) -> Result<Storm, Box<dyn std::error::Error>> {
    settle().await;
    static ROUNDS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    let round = ROUNDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let (retry, spread_text) = (
        humantime::format_duration(args.retry).to_string(),
        humantime::format_duration(spread).to_string(),
    );
    let data_dir = data.path().display().to_string();
    let flags = [
        "--store",
        "durable",
        "--data-dir",
        &data_dir,
        "--retry",
        &retry,
        "--reconnect-spread",
        &spread_text,
        "--max-connections-per-address",
        "0",
    ];
    let flags = [&flags[..], &QUIET_HUB[..]].concat();
    let mut hub = ServerProcess::hub_on(servers, &listen, &flags)?;
    let addr = hub.addr;
    let seen: Vec<Arc<Mutex<Seen>>> = (0..args.streams).map(|_| Arc::default()).collect();
    let restart_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut clients = Vec::new();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, seen) in seen.iter().enumerate() {
        let seen = seen.clone();
        let opened = opened_tx.clone();
        let restart_at = restart_at.clone();
        // Four source addresses: plenty of ports for two lives of each;
        // new ones each round, so that no round meets the sockets an
        // earlier one left in TIME_WAIT (60 s), which made its connects
        // wait for SYN retransmissions.
        let source = IpAddr::from([127, 1 + round, 0, 1 + (i % 4) as u8]);
        clients.push(tokio::spawn(follow(addr, source, seen, opened, restart_at)));
    }
    drop(opened_tx);
    for _ in 0..args.streams {
        opened_rx.recv().await.ok_or("a client stopped")?;
    }
    let http = reqwest::Client::new();
    let publish = |data: &'static str| {
        let http = http.clone();
        async move {
            http.post(format!("http://{addr}/.well-known/mercure"))
                .form(&[("topic", "storm"), ("data", data)])
                .send()
                .await?
                .error_for_status()
                .map(drop)
        }
    };
    publish("before").await?;
    wait_for(&seen, Duration::from_secs(60), |s| s.events.len() == 1).await?;

    let (overflows, dropped) = (listen_overflows(), input_drops());
    let t0 = Instant::now();
    *restart_at.lock().unwrap() = Some(t0);
    hub.terminate();
    drop(hub);
    let stopped = t0.elapsed();
    let mut hub = ServerProcess::hub_on(servers, &listen, &flags)?;
    println!(
        "the old hub stopped after {:.2} s, the new one listened after {:.2} s",
        stopped.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    publish("during").await?;
    // Sample the new hub while the clients come back.
    let pid = hub.pid();
    let peaks: Arc<Mutex<(f64, u64)>> = Arc::default();
    let sampled = peaks.clone();
    let sampling = tokio::spawn(async move {
        let mut last = (Instant::now(), cpu_of(pid));
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for n in 0u64.. {
            tick.tick().await;
            let queue = accept_queue(port);
            let mut peaks = sampled.lock().unwrap();
            peaks.1 = peaks.1.max(queue);
            if n % 5 == 4 {
                let now = (Instant::now(), cpu_of(pid));
                let share = (now.1 - last.1) / now.0.duration_since(last.0).as_secs_f64();
                peaks.0 = peaks.0.max(share * 100.0);
                last = now;
            }
        }
    });
    wait_for(&seen, Duration::from_secs(60), |s| s.back_at.is_some()).await?;
    let back: Vec<f64> = seen
        .iter()
        .map(|s| {
            s.lock()
                .unwrap()
                .back_at
                .unwrap()
                .duration_since(t0)
                .as_secs_f64()
        })
        .collect();
    let all_back = back.iter().copied().fold(0.0, f64::max);
    let mut per_second = std::collections::HashMap::new();
    for b in &back {
        *per_second.entry(*b as u64).or_insert(0usize) += 1;
    }
    let busiest_second = per_second.values().copied().max().unwrap_or(0);
    let mut seconds: Vec<_> = per_second.iter().map(|(s, n)| (*s, *n)).collect();
    seconds.sort_unstable();
    println!("reconnections per second after the restart: {seconds:?}");
    println!(
        "failed attempts after the restart: {:?}",
        std::mem::take(&mut *failures().lock().unwrap())
    );
    publish("after").await?;
    let _ = wait_for(&seen, Duration::from_secs(30), |s| s.events.len() >= 3).await;
    sampling.abort();
    let (peak_cpu, max_queue) = *peaks.lock().unwrap();
    let (mut lost, mut duplicated) = (0, 0);
    for s in &seen {
        let s = s.lock().unwrap();
        for wanted in ["before", "during", "after"] {
            match s.events.iter().filter(|e| *e == wanted).count() {
                0 => lost += 1,
                1 => {}
                n => duplicated += n - 1,
            }
        }
    }
    for client in clients {
        client.abort();
    }
    hub.stop();
    Ok(Storm {
        all_back,
        busiest_second,
        peak_cpu,
        max_queue,
        overflows: listen_overflows() - overflows,
        dropped: input_drops() - dropped,
        lost,
        duplicated,
    })
}

fn cpu_of(pid: u32) -> f64 {
    let (user, system) = cpu_seconds(&[pid]);
    user + system
}

/// Waits until `done` holds for every client, at most `limit`.
async fn wait_for(
    seen: &[Arc<Mutex<Seen>>],
    limit: Duration,
    done: impl Fn(&Seen) -> bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + limit;
    loop {
        let missing = seen.iter().filter(|s| !done(&s.lock().unwrap())).count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{missing} clients not there after {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Why clients' attempts failed after the restart, for the log.
fn failures() -> &'static Mutex<std::collections::HashMap<String, usize>> {
    static FAILURES: std::sync::OnceLock<Mutex<std::collections::HashMap<String, usize>>> =
        std::sync::OnceLock::new();
    FAILURES.get_or_init(Default::default)
}

/// One client, as `EventSource` behaves: follows the stream, and when it
/// ends (or cannot open) waits the last `retry:` and opens it again with
/// the last id it saw.
async fn follow(
    addr: SocketAddr,
    source: IpAddr,
    seen: Arc<Mutex<Seen>>,
    opened: tokio::sync::mpsc::UnboundedSender<()>,
    restart_at: Arc<Mutex<Option<Instant>>>,
) {
    let mut last_id: Option<String> = None;
    let mut retry = Duration::from_secs(3);
    loop {
        let attempt = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            let stream = socket.connect(addr).await?;
            let (read, mut write) = stream.into_split();
            let resume = last_id
                .as_ref()
                .map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
            let request = format!(
                "GET /.well-known/mercure?topic=storm HTTP/1.1\r\nHost: hub\r\nAccept: text/event-stream\r\n{resume}\r\n"
            );
            write.write_all(request.as_bytes()).await?;
            let mut lines = BufReader::new(read).lines();
            let status = lines.next_line().await?.unwrap_or_default();
            if !status.starts_with("HTTP/1.1 200") {
                return Err(std::io::Error::other(status));
            }
            while !lines.next_line().await?.unwrap_or_default().is_empty() {}
            {
                let mut s = seen.lock().unwrap();
                if restart_at.lock().unwrap().is_some() && s.back_at.is_none() {
                    s.back_at = Some(Instant::now());
                }
            }
            let _ = opened.send(());
            while let Some(line) = lines.next_line().await? {
                if let Some(id) = line.strip_prefix("id: ") {
                    last_id = Some(id.to_owned());
                } else if let Some(ms) = line.strip_prefix("retry: ") {
                    if let Ok(ms) = ms.trim().parse() {
                        retry = Duration::from_millis(ms);
                    }
                } else if let Some(data) = line.strip_prefix("data: ") {
                    seen.lock().unwrap().events.push(data.to_owned());
                }
            }
            Ok::<_, std::io::Error>(())
        };
        if let Err(err) = attempt.await
            && restart_at.lock().unwrap().is_some()
        {
            *failures()
                .lock()
                .unwrap()
                .entry(err.to_string())
                .or_default() += 1;
        }
        tokio::time::sleep(retry).await;
    }
}
