//! `cluster`: in one run, the same fan-out on one hub, on one node of a
//! cluster and on three nodes (subscribers and publishes spread over them),
//! a large fan-out over three nodes, and publish throughput through Redis
//! against the single hub's durable store.

use std::path::PathBuf;
use std::time::Duration;

use crate::load::{self, LoadArgs, LoadResult, Shape, Target};
use crate::publish::{self, Store};
use crate::report::write_section;
use crate::servers::ServerArgs;

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Subscribers of the comparison (one hub holds them all: at most
    /// about 19,000 here).
    #[arg(long, default_value_t = 15_000)]
    subscribers: usize,
    /// Subscribers of the large run over three nodes; 0 to skip it.
    #[arg(long, default_value_t = 45_000)]
    large: usize,
    /// Events per second published during the fan-out runs (below this
    /// machine's saturation, so that latency means something).
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// Events per second of the large run (each reaches every subscriber).
    #[arg(long, default_value_t = 2)]
    large_rate: u32,
    /// How long each fan-out run publishes.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Worker processes holding the subscribers (worker `w` connects to
    /// node `w % nodes`).
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Concurrent publishers of the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    publishers: Vec<usize>,
    /// How long each throughput run publishes.
    #[arg(long, default_value = "3s", value_parser = crate::parse_duration)]
    publish_duration: Duration,
    /// Throughput runs per configuration; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Write the tables into this Markdown file (section `cluster`).
    #[arg(long)]
    write: Option<PathBuf>,
}

impl ClusterArgs {
    fn load(&self, targets: Vec<Target>, subscribers: usize, rate: u32) -> LoadArgs {
        LoadArgs {
            targets,
            subscribers,
            rate,
            duration: self.duration,
            size: 100,
            workers: self.workers,
            nchan: "127.0.0.1:8091".parse().expect("an address"),
            pushpin: "127.0.0.1:7999".parse().expect("an address"),
            pushpin_publish: "127.0.0.1:5561".parse().expect("an address"),
        }
    }
}

fn nodes(target: Target) -> &'static str {
    match target {
        Target::Cluster1 => "1 on Redis",
        Target::Cluster3 => "3 on Redis",
        _ => "1, no Redis",
    }
}

fn fanout_rows(results: &[LoadResult]) -> String {
    results
        .iter()
        .map(|r| {
            format!(
                "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |\n",
                r.target.name(),
                nodes(r.target),
                r.subscribers,
                r.published,
                r.delivered,
                r.deliveries_per_second,
                r.cpu_seconds_per_million,
                r.log_cpu_seconds,
                r.p50_ms,
                r.p99_ms,
                r.lost,
                r.duplicated,
                r.out_of_order,
            )
        })
        .collect()
}

/// Runs the scenario.
pub async fn run(
    servers: &ServerArgs,
    args: ClusterArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let targets = vec![Target::Ssehub, Target::Cluster1, Target::Cluster3];
    let mut fanout = load::run(
        servers,
        Shape::Fanout,
        &args.load(targets, args.subscribers, args.rate),
    )
    .await?;
    if args.large > 0 {
        let large = args.load(vec![Target::Cluster3], args.large, args.large_rate);
        fanout.extend(load::run(servers, Shape::Fanout, &large).await?);
    }
    let mut publish_rows = Vec::new();
    for &publishers in &args.publishers {
        let mut medians = Vec::new();
        for store in [Store::Durable, Store::Redis] {
            let run = publish::median_run(
                servers,
                store,
                publishers,
                args.publish_duration,
                args.rounds,
            )
            .await?;
            println!(
                "{publishers:>4} publishers, {:>7}: {:>8.0} events/s, p50 {:.2} ms, p99 {:.2} ms",
                store.name(),
                run.events_per_second,
                run.p50_ms,
                run.p99_ms
            );
            medians.push(run);
        }
        let (durable, redis) = (&medians[0], &medians[1]);
        publish_rows.push(format!(
            "| {publishers} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |\n",
            durable.events_per_second,
            durable.p50_ms,
            durable.p99_ms,
            redis.events_per_second,
            redis.p50_ms,
            redis.p99_ms,
            redis.events_per_second / durable.events_per_second,
        ));
    }
    if let Some(path) = &args.write {
        let text = format!(
            "Fan-out: one topic, {rate} events/s of 100 bytes for {duration:?} ({large_rate} events/s in the \
             run with {large} subscribers), {workers} worker processes \
             (worker `w` connects to node `w % nodes`; publishes go to the nodes in turn). Hub CPU is \
             the nodes' CPU summed; Redis CPU is redis-server's (`appendfsync always`).\n\n\
             | target | nodes | subscribers | events published | deliveries | deliveries/s | hub CPU s per million deliveries | Redis CPU s | p50 ms | p99 ms | lost | duplicated | out of order |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{fanout}\n\
             Publish throughput: closed-loop publishers (one HTTP/1.1 connection each, 100-byte events over 16 \
             topics), medians of {rounds} runs of {publish:?}; a single hub on its durable store against one \
             node whose events go through Redis (`appendfsync always`).\n\n\
             | publishers | durable events/s | durable p50 ms | durable p99 ms | Redis events/s | Redis p50 ms | Redis p99 ms | Redis / durable throughput |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|\n{publish_rows}",
            rate = args.rate,
            large_rate = args.large_rate,
            large = args.large,
            duration = args.duration,
            workers = args.workers,
            fanout = fanout_rows(&fanout),
            rounds = args.rounds,
            publish = args.publish_duration,
            publish_rows = publish_rows.concat(),
        );
        write_section(path, "cluster", &text)?;
    }
    Ok(())
}
