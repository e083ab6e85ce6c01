//! `ssehub-bench`: load scenarios measured against servers this command
//! starts itself (the `ssehub` binary, the null server) or finds running (the
//! peers that `bench/peers/setup` starts), each in its own process so that
//! process can be measured alone. Not part of the product binary.
//!
//! * `idle`: hold N subscriber connections and report the server's resident
//!   memory per connection (and the kernel's socket memory separately).
//! * `publish`: closed-loop publishers, durable store against memory store.
//! * `fanout`, `topics`, `resume`: many subscribers and an open-loop
//!   publisher; see [`load`].
//! * `abuse`: the threat model's attacks at full size, with what a
//!   legitimate user gets meanwhile.
//! * `cluster`: one hub against one and three nodes on Redis, a large
//!   fan-out over three nodes, publish throughput through Redis.
//! * `durable-streams`: appends and SSE read fan-out of the Durable Streams
//!   protocol, against its Node reference server.

mod abuse;
mod cluster;
mod idle;
mod load;
mod null_server;
mod peers;
mod publish;
mod report;
mod secure;
mod servers;
mod storm;
mod streams;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Load scenarios for ssehub and its peers, with figures.
#[derive(Debug, clap::Parser)]
#[command(name = "ssehub-bench", version, about)]
struct Cli {
    #[command(flatten)]
    servers: servers::ServerArgs,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, clap::Subcommand)]
enum Scenario {
    /// Hold idle subscriber connections; report server memory per connection.
    Idle(idle::IdleArgs),
    /// Publish throughput and latency, durable store against memory store.
    Publish(publish::PublishArgs),
    /// One topic, N subscribers, an open-loop publisher; loss, order, latency, CPU.
    Fanout(LoadScenario),
    /// N topics with one subscriber each.
    Topics(LoadScenario),
    /// Like fanout; 10% of subscribers drop mid-run and resume with Last-Event-ID.
    Resume(LoadScenario),
    /// Attacks at full size; health-check and round-trip latency, memory.
    Abuse(abuse::AbuseArgs),
    /// One hub against one and three cluster nodes on Redis; publish through Redis.
    Cluster(cluster::ClusterArgs),
    /// Streams opened 500 at a time: rate and listen-queue overflows, against nchan.
    OpenRate(storm::OpenRateArgs),
    /// A hub holding many streams restarts: when its clients are back, at what cost.
    Storm(storm::StormArgs),
    /// Durable Streams: appends/s and SSE read fan-out, against the protocol's reference server.
    DurableStreams(streams::StreamsArgs),
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
    load: load::LoadArgs,
    /// Write the table into this Markdown file, and a latency chart (SVG)
    /// beside it.
    #[arg(long)]
    write: Option<PathBuf>,
    /// The section of the file to write (default: the scenario's name).
    #[arg(long)]
    section: Option<String>,
}

/// `500ms`, `3s`, `1m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every connection is a file, and the default soft limit (often 1024) is
    // far too low.
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("ssehub-bench: could not raise the open files limit: {err}");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ssehub-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let servers = &cli.servers;
    match cli.scenario {
        Scenario::Idle(args) => runtime.block_on(idle::run(servers, args)),
        Scenario::Publish(args) => runtime.block_on(publish::run(servers, args)),
        Scenario::Fanout(args) => runtime.block_on(run_load(servers, load::Shape::Fanout, args)),
        Scenario::Topics(args) => runtime.block_on(run_load(servers, load::Shape::Topics, args)),
        Scenario::Resume(args) => runtime.block_on(run_load(servers, load::Shape::Resume, args)),
        Scenario::Abuse(args) => runtime.block_on(abuse::run(servers, args)),
        Scenario::Cluster(args) => runtime.block_on(cluster::run(servers, args)),
        Scenario::OpenRate(args) => runtime.block_on(storm::open_rate(servers, args)),
        Scenario::Storm(args) => runtime.block_on(storm::storm(servers, args)),
        Scenario::DurableStreams(args) => runtime.block_on(streams::run(servers, args)),
        Scenario::Worker { spec } => runtime.block_on(worker::run(serde_json::from_str(&spec)?)),
        Scenario::NullServer { listen } => runtime.block_on(null_server::run(listen)),
    }
}

async fn run_load(
    servers: &servers::ServerArgs,
    shape: load::Shape,
    args: LoadScenario,
) -> Result<(), Box<dyn std::error::Error>> {
    let results = load::run(servers, shape, &args.load).await?;
    let name = args.section.as_deref().unwrap_or(shape.name());
    if let Some(path) = &args.write {
        let load = &args.load;
        let chart = format!("bench-{name}-latency.svg");
        let svg_path = path.with_file_name(&chart);
        std::fs::write(
            &svg_path,
            report::latency_svg(
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
            report::load_table(&results, shape == load::Shape::Resume)
        );
        report::write_section(path, name, &text)?;
        println!("wrote {}", svg_path.display());
    }
    Ok(())
}
