//! `idle`: hold N subscriber connections, each on its own topic, and report
//! the server's resident memory per connection, with the kernel's memory for
//! the same sockets beside it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::load::Target;
use crate::peers;
use crate::report::{median, memory_svg, status_kib, write_section};
use crate::secure::{Certificate, Held, open_h2, open_tls};
use crate::servers::{QUIET_HUB, ServerArgs, ServerProcess};

#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// Targets to measure, in one run.
    #[arg(long, value_delimiter = ',', default_value = "ssehub")]
    targets: Vec<Target>,
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
    #[arg(long, default_value = "2s", value_parser = crate::parse_duration)]
    hold: Duration,
    /// Write the results into this Markdown file (between the idle markers).
    #[arg(long)]
    write: Option<PathBuf>,
}

struct IdleRound {
    rss_per_connection: f64,
    /// Kernel memory per connection, both ends (loopback).
    kernel: Kernel,
    open_seconds: f64,
}

/// Runs the scenario.
pub async fn run(servers: &ServerArgs, args: IdleArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    for &target in &args.targets {
        let mut rounds = Vec::new();
        for round in 1..=args.rounds {
            let result = idle_round(servers, &args, target).await?;
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
                target.name(),
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
    }
    Ok(())
}

async fn idle_round(
    servers: &ServerArgs,
    args: &IdleArgs,
    target: Target,
) -> Result<IdleRound, Box<dyn std::error::Error>> {
    // For the TLS targets: a certificate of the round's own.
    let certificate = matches!(
        target,
        Target::SsehubTls | Target::SsehubH2 | Target::SsehubH2x10
    )
    .then(Certificate::new)
    .transpose()?;
    let (mut hub, addr, pids, path): (Option<ServerProcess>, SocketAddr, Vec<u32>, &str) =
        match target {
            Target::SsehubTls | Target::SsehubH2 | Target::SsehubH2x10 => {
                let tls = certificate.as_ref().expect("made above").flags();
                let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
                let hub = ServerProcess::hub(servers, &[&QUIET_HUB[..], &tls].concat())?;
                let (addr, pid) = (hub.addr, hub.pid());
                (
                    Some(hub),
                    addr,
                    vec![pid],
                    "/.well-known/mercure?match=idle/",
                )
            }
            Target::Ssehub => {
                let hub = ServerProcess::hub(servers, &QUIET_HUB)?;
                let (addr, pid) = (hub.addr, hub.pid());
                (
                    Some(hub),
                    addr,
                    vec![pid],
                    "/.well-known/mercure?match=idle/",
                )
            }
            Target::Nchan => {
                // nginx keeps and reuses the memory of earlier rounds, so each
                // round gets fresh workers: SIGHUP makes the master start new
                // ones and retire the old.
                peers::reload_nchan(servers)?;
                (None, args.nchan, peers::nchan_pids(servers), "/sub/idle/")
            }
            Target::Pushpin => {
                peers::restart_pushpin(servers)?;
                (
                    None,
                    args.pushpin,
                    peers::pushpin_pids(servers),
                    "/sub/idle/",
                )
            }
            Target::Null => {
                return Err("the null server holds no idle state worth measuring".into());
            }
            Target::Cluster1 | Target::Cluster3 => {
                return Err("measure idle connections on one hub: --targets ssehub".into());
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
        let warm = open_idle(addr, path, 200, target, certificate.as_ref()).await?;
        drop(warm);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let rss_before = rss(&pids);
    let kernel_before = Kernel::now()?;
    let started = Instant::now();
    let connections = open_idle(addr, path, args.connections, target, certificate.as_ref()).await?;
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

/// Opens `count` subscriptions, each to its own topic, ramping 500 at a time,
/// and waits for each stream's first bytes; over TLS for the TLS targets.
async fn open_idle(
    addr: SocketAddr,
    path: &str,
    count: usize,
    target: Target,
    certificate: Option<&Certificate>,
) -> std::io::Result<Vec<Held>> {
    let Some(certificate) = certificate else {
        let plain = open_plain(addr, path, count).await?;
        return Ok(plain.into_iter().map(|s| Box::new(s) as Held).collect());
    };
    let per_connection = if target == Target::SsehubH2x10 { 10 } else { 1 };
    let alpn: &[u8] = if target == Target::SsehubTls {
        b"http/1.1"
    } else {
        b"h2"
    };
    let connector = certificate.connector(alpn);
    let mut held = Vec::with_capacity(count);
    // (Ramps of 500 streams; a TLS handshake costs the hub far more than a
    // plain connect, so a ramp is fewer connections with more streams.)
    for start in (0..count).step_by(500) {
        let end = count.min(start + 500);
        let batch = (start..end).step_by(per_connection).map(|first| {
            let connector = &connector;
            let n = per_connection.min(end - first);
            async move {
                if target == Target::SsehubTls {
                    open_tls(addr, connector, &format!("{path}{first}")).await
                } else {
                    open_h2(addr, connector, path, first, n).await
                }
            }
        });
        for opened in futures_util::future::join_all(batch).await {
            held.push(opened?);
        }
    }
    Ok(held)
}

/// [`open_idle`] in cleartext HTTP/1.1.
pub async fn open_plain(
    addr: SocketAddr,
    path: &str,
    count: usize,
) -> std::io::Result<Vec<TcpStream>> {
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
