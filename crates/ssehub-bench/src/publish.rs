//! `publish`: closed-loop publishers against a fresh hub per run, the
//! durable store against the memory store.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::report::{median, write_section};
use crate::servers::{RedisProcess, ServerArgs, ServerProcess};

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Concurrent publishers, one HTTP connection each; one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    publishers: Vec<usize>,
    /// How long each run publishes.
    #[arg(long, default_value = "3s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Runs per configuration, each with a fresh hub; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Write the results into this Markdown file (between the publish markers).
    #[arg(long)]
    write: Option<PathBuf>,
}

pub struct PublishRun {
    pub events_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Where a hub keeps its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// In memory.
    Memory,
    /// The durable store, in a fresh directory.
    Durable,
    /// One node of a cluster, on a fresh redis-server.
    Redis,
}

impl Store {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Durable => "durable",
            Store::Redis => "redis",
        }
    }
}

/// The medians of `rounds` runs, each with a fresh hub.
pub async fn median_run(
    servers: &ServerArgs,
    store: Store,
    publishers: usize,
    duration: Duration,
    rounds: usize,
) -> Result<PublishRun, Box<dyn std::error::Error>> {
    let mut runs = Vec::new();
    for _ in 0..rounds {
        runs.push(publish_run(servers, store, publishers, duration).await?);
    }
    Ok(PublishRun {
        events_per_second: median(&runs, |r| r.events_per_second),
        p50_ms: median(&runs, |r| r.p50_ms),
        p99_ms: median(&runs, |r| r.p99_ms),
    })
}

/// Runs the scenario.
pub async fn run(
    servers: &ServerArgs,
    args: PublishArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    for &publishers in &args.publishers {
        let mut medians = Vec::new();
        for store in [Store::Memory, Store::Durable] {
            let run = median_run(servers, store, publishers, args.duration, args.rounds).await?;
            let store = store.name();
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
    }
    Ok(())
}

async fn publish_run(
    servers: &ServerArgs,
    store: Store,
    publishers: usize,
    duration: Duration,
) -> Result<PublishRun, Box<dyn std::error::Error>> {
    let data_dir = tempfile::tempdir()?;
    let data_dir_arg = data_dir.path().display().to_string();
    let redis = (store == Store::Redis)
        .then(RedisProcess::start)
        .transpose()?;
    let args = match &redis {
        Some(redis) => vec!["--redis-url".to_owned(), redis.url()],
        None => vec![
            "--store".to_owned(),
            store.name().to_owned(),
            "--data-dir".to_owned(),
            data_dir_arg,
        ],
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut hub = ServerProcess::hub(servers, &args)?;
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
