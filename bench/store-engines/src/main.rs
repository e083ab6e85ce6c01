//! ssehub's history workload on two embedded engines.
//!
//! Each commit appends a batch of events (about 300 bytes each, keyed by a
//! big-endian sequence number), deletes the events that fell out of the
//! retention window (the newest 2,000 are kept), and is made durable with an
//! fsync before the next one starts: exactly what a publish acknowledgement
//! waits for with group commit. Reported per batch size: durable commits and
//! events per second, commit latency p50/p99, and the files' size at the end
//! (steady deletes must keep it bounded).
//!
//! Run: cargo run --release --manifest-path bench/store-engines/Cargo.toml -- [SECONDS]

use std::path::Path;
use std::time::{Duration, Instant};

const KEEP: u64 = 2000;

trait Engine {
    fn name(&self) -> &'static str;
    fn commit(&mut self, append: &[(u64, Vec<u8>)], delete: &[u64]);
}

struct Redb {
    db: redb::Database,
}

const EVENTS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb 4"
    }
    fn commit(&mut self, append: &[(u64, Vec<u8>)], delete: &[u64]) {
        let txn = self.db.begin_write().unwrap();
        {
            let mut table = txn.open_table(EVENTS).unwrap();
            for (seq, value) in append {
                table.insert(seq, value.as_slice()).unwrap();
            }
            for seq in delete {
                table.remove(seq).unwrap();
            }
        }
        txn.commit().unwrap(); // Durability::Immediate: fsync before returning
    }
}

struct Fjall {
    db: fjall::Database,
    events: fjall::Keyspace,
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall 3"
    }
    fn commit(&mut self, append: &[(u64, Vec<u8>)], delete: &[u64]) {
        let mut batch = self.db.batch().durability(Some(fjall::PersistMode::SyncAll));
        for (seq, value) in append {
            batch.insert(&self.events, seq.to_be_bytes(), value);
        }
        for seq in delete {
            batch.remove(&self.events, seq.to_be_bytes());
        }
        batch.commit().unwrap();
    }
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let meta = e.metadata().unwrap();
                    if meta.is_dir() { dir_size(&e.path()) } else { meta.len() }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn run(engine: &mut dyn Engine, dir: &Path, batch: usize, seconds: f64) -> String {
    let event = vec![b'x'; 300];
    let mut seq = 0u64;
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        let append: Vec<(u64, Vec<u8>)> = (0..batch)
            .map(|_| {
                seq += 1;
                (seq, event.clone())
            })
            .collect();
        let delete: Vec<u64> = (seq.saturating_sub(KEEP + batch as u64) + 1..=seq.saturating_sub(KEEP))
            .filter(|s| *s > 0)
            .collect();
        let t = Instant::now();
        engine.commit(&append, &delete);
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
    format!(
        "| {} | {batch} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {:.1} MiB |",
        engine.name(),
        latencies.len() as f64 / elapsed,
        seq as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        seq,
        dir_size(dir) as f64 / (1 << 20) as f64
    )
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let root = std::env::temp_dir().join(format!("ssehub-store-engines-{}", std::process::id()));
    println!("| engine | events per commit | commits/s | events/s | commit p50 ms | commit p99 ms | events written | files at end |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for batch in [1, 16, 256] {
        for which in ["redb", "fjall"] {
            let dir = root.join(format!("{which}-{batch}"));
            std::fs::create_dir_all(&dir).unwrap();
            let line = match which {
                "redb" => {
                    let db = redb::Database::create(dir.join("history.redb")).unwrap();
                    run(&mut Redb { db }, &dir, batch, seconds)
                }
                _ => {
                    let db = fjall::Database::builder(&dir).open().unwrap();
                    let events = db.keyspace("events", fjall::KeyspaceCreateOptions::default).unwrap();
                    run(&mut Fjall { db, events }, &dir, batch, seconds)
                }
            };
            println!("{line}");
        }
    }
    let _ = std::fs::remove_dir_all(root);
}
