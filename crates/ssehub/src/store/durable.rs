//! The durable store: one redb file in the data directory.
//!
//! redb was chosen over fjall after measuring both on this workload (see
//! docs/STORAGE.md): the same throughput once commits are grouped, and a file
//! that stays small under steady retention instead of growing until a
//! compaction.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Builder, Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Batch, Recovered, Store, StoreError, StoredStream, StreamWrite};
use crate::event::StoredEvent;

/// Events by seq, as JSON.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Per topic, the highest seq trimmed from its history.
const TRIMMED: TableDefinition<&str, u64> = TableDefinition::new("trimmed");
/// `last_seq`, `forgotten_up_to`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Per client id, its acknowledged position, as JSON.
const ACKS: TableDefinition<&str, &[u8]> = TableDefinition::new("acks");

/// Durable streams' records (JSON), by name.
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
/// Durable streams' data, by name and offset.
const STREAM_DATA: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("stream_data");

const FILE_NAME: &str = "history.redb";

/// redb's own cache of the file's pages. Its default (1 GiB) would hold the
/// whole history in memory; the hub caches the newest events itself, and
/// the operating system's page cache serves the rest, so redb keeps what
/// finding a record needs and what a commit writes.
const PAGE_CACHE: usize = 4 << 20;

const DAMAGED_ADVICE: &str = "Stop the hub, move the file aside (keep it for analysis) and start \
    again: the hub then starts with empty history. Or restore the file from a backup";

/// Opens (or creates) the redb file, with the errors an operator can act on.
fn create(path: &Path) -> Result<Database, StoreError> {
    let open_error = |reason: String, advice: &'static str| StoreError::Open {
        path: path.to_owned(),
        reason,
        advice,
    };
    Builder::new()
        .set_cache_size(PAGE_CACHE)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => open_error(
                "it is already open in another process".into(),
                "Stop the other hub, or give this one its own --data-dir",
            ),
            redb::DatabaseError::Storage(redb::StorageError::Io(io))
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                open_error(io.to_string(), "Check the file's permissions and the disk")
            }
            other => open_error(other.to_string(), DAMAGED_ADVICE),
        })
}

/// History in `DIR/history.redb`. Every commit is fsynced before it returns.
pub struct DurableStore {
    /// `None` only while it is reopened, or if reopening failed.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    /// A write failed: redb refuses every later one ("previous I/O error")
    /// until the database is opened again, which the next write does. A
    /// full disk that is given room again is then written to again.
    failed: AtomicBool,
}

impl std::fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableStore")
            .field("path", &self.path)
            .finish()
    }
}

impl DurableStore {
    /// Opens (or creates) the store in `dir`. A file left by a crash is
    /// recovered by redb itself; a damaged one is an error naming the file.
    pub fn open(dir: &Path) -> Result<DurableStore, StoreError> {
        let path = dir.join(FILE_NAME);
        let open_error = |reason: String, advice: &'static str| StoreError::Open {
            path: path.clone(),
            reason,
            advice,
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            open_error(
                format!("cannot create the data directory {}: {e}", dir.display()),
                "Check the path and its permissions, or choose another with --data-dir",
            )
        })?;
        // redb makes a new database of an empty file; a data file the hub
        // finds empty at startup was truncated (or its creation cut short),
        // and starting on it would lose all history and reuse ids silently.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            return Err(StoreError::Damaged {
                path: path.clone(),
                reason:
                    "the file is empty (0 bytes): it was truncated, or its creation was cut short"
                        .into(),
                advice: DAMAGED_ADVICE,
            });
        }
        let db = create(&path)?;
        let damaged = |reason: String| StoreError::Damaged {
            path: path.clone(),
            reason,
            advice: DAMAGED_ADVICE,
        };
        // Create the tables so reads never meet a missing one.
        let txn = db.begin_write().map_err(|e| damaged(e.to_string()))?;
        {
            txn.open_table(EVENTS).map_err(|e| damaged(e.to_string()))?;
            txn.open_table(TRIMMED)
                .map_err(|e| damaged(e.to_string()))?;
            txn.open_table(META).map_err(|e| damaged(e.to_string()))?;
            txn.open_table(ACKS).map_err(|e| damaged(e.to_string()))?;
            txn.open_table(STREAMS)
                .map_err(|e| damaged(e.to_string()))?;
            txn.open_table(STREAM_DATA)
                .map_err(|e| damaged(e.to_string()))?;
        }
        txn.commit().map_err(|e| damaged(e.to_string()))?;
        Ok(DurableStore {
            db: RwLock::new(Some(db)),
            path,
            failed: AtomicBool::new(false),
        })
    }

    /// The open database, for a read or a write.
    fn db(&self) -> Result<std::sync::RwLockReadGuard<'_, Option<Database>>, StoreError> {
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        if db.is_none() {
            return Err(StoreError::Read(format!(
                "the data file {} could not be opened again after a failed write",
                self.path.display()
            )));
        }
        Ok(db)
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        let db = self.db()?;
        db.as_ref()
            .expect("checked by db()")
            .begin_read()
            .map_err(|e| self.damaged(e))
    }

    /// After a failed write: closes the database and opens it again (redb
    /// recovers the last committed state).
    fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        // Closed first: the file is locked while it is open.
        drop(db.take());
        *db = Some(create(&self.path).map_err(|e| StoreError::Write(e.to_string()))?);
        tracing::info!(path = %self.path.display(), "data file opened again after a failed write");
        Ok(())
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn decode(&self, seq: u64, value: &[u8]) -> Result<StoredEvent, StoreError> {
        let event: StoredEvent =
            serde_json::from_slice(value).map_err(|e| self.damaged(format!("event {seq}: {e}")))?;
        if event.seq != seq {
            return Err(self.damaged(format!("event stored under {seq} says it is {}", event.seq)));
        }
        Ok(event)
    }

    fn damaged(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Damaged {
            path: self.path.clone(),
            reason: reason.to_string(),
            advice: DAMAGED_ADVICE,
        }
    }
}

fn write_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

impl Store for DurableStore {
    fn load(&self, each: &mut dyn FnMut(StoredEvent)) -> Result<Recovered, StoreError> {
        let txn = self.begin_read()?;
        let mut recovered = Recovered::default();
        let mut highest = 0;
        let events = txn.open_table(EVENTS).map_err(|e| self.damaged(e))?;
        for entry in events.iter().map_err(|e| self.damaged(e))? {
            let (seq, value) = entry.map_err(|e| self.damaged(e))?;
            each(self.decode(seq.value(), value.value())?);
            recovered.events += 1;
            highest = seq.value();
        }
        let trimmed = txn.open_table(TRIMMED).map_err(|e| self.damaged(e))?;
        for entry in trimmed.iter().map_err(|e| self.damaged(e))? {
            let (topic, up_to) = entry.map_err(|e| self.damaged(e))?;
            recovered
                .trimmed
                .insert(topic.value().to_owned(), up_to.value());
        }
        let meta = txn.open_table(META).map_err(|e| self.damaged(e))?;
        let read_meta = |key: &str| -> Result<u64, StoreError> {
            Ok(meta
                .get(key)
                .map_err(|e| self.damaged(e))?
                .map_or(0, |v| v.value()))
        };
        recovered.last_seq = read_meta("last_seq")?.max(highest);
        recovered.forgotten_up_to = read_meta("forgotten_up_to")?;
        let acks = txn.open_table(ACKS).map_err(|e| self.damaged(e))?;
        for entry in acks.iter().map_err(|e| self.damaged(e))? {
            let (client, ack) = entry.map_err(|e| self.damaged(e))?;
            // A position is a convenience: one that cannot be read back is
            // dropped (that client resumes from its own Last-Event-ID).
            match serde_json::from_slice(ack.value()) {
                Ok(ack) => recovered.acks.push((client.value().to_owned(), ack)),
                Err(err) => {
                    tracing::warn!(client = client.value(), %err, "an unreadable acknowledged position is dropped")
                }
            }
        }
        Ok(recovered)
    }

    fn read(&self, seqs: &[u64]) -> Result<Vec<Option<StoredEvent>>, StoreError> {
        let txn = self.begin_read()?;
        let events = txn.open_table(EVENTS).map_err(|e| self.damaged(e))?;
        seqs.iter()
            .map(|&seq| match events.get(seq).map_err(|e| self.damaged(e))? {
                Some(value) => self.decode(seq, value.value()).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.writing(|store| store.write(batch))
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn load_streams(&self, each: &mut dyn FnMut(StoredStream)) -> Result<(), StoreError> {
        let txn = self.begin_read()?;
        let records = txn.open_table(STREAMS).map_err(|e| self.damaged(e))?;
        let data = txn.open_table(STREAM_DATA).map_err(|e| self.damaged(e))?;
        for entry in records.iter().map_err(|e| self.damaged(e))? {
            let (name, record) = entry.map_err(|e| self.damaged(e))?;
            let name = name.value();
            let mut chunks = Vec::new();
            for chunk in data
                .range((name, 0)..=(name, u64::MAX))
                .map_err(|e| self.damaged(e))?
            {
                let (key, bytes) = chunk.map_err(|e| self.damaged(e))?;
                chunks.push((key.value().1, bytes.value().to_vec()));
            }
            each(StoredStream {
                name: name.to_owned(),
                record: record.value().to_vec(),
                chunks,
            });
        }
        Ok(())
    }

    fn commit_streams(&self, writes: &[StreamWrite]) -> Result<(), StoreError> {
        self.writing(|store| store.write_streams(writes))
    }
}

impl DurableStore {
    /// Runs one write, opening the file again first if the last one failed.
    fn writing(
        &self,
        write: impl FnOnce(&DurableStore) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Relaxed) {
            self.reopen()?;
            self.failed.store(false, Ordering::Relaxed);
        }
        let written = write(self);
        if written.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        written
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let db = self.db().map_err(|e| StoreError::Write(e.to_string()))?;
        db.as_ref()
            .expect("open")
            .begin_write()
            .map_err(write_error)
    }

    fn write_streams(&self, writes: &[StreamWrite]) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        Self::put_streams(&txn, writes)?;
        txn.commit().map_err(write_error)
    }

    /// Durable streams' changes, into a transaction.
    fn put_streams(txn: &redb::WriteTransaction, writes: &[StreamWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        {
            let mut records = txn.open_table(STREAMS).map_err(write_error)?;
            let mut data = txn.open_table(STREAM_DATA).map_err(write_error)?;
            for write in writes {
                let name = write.name.as_str();
                match &write.record {
                    Some(record) => {
                        records
                            .insert(name, record.as_slice())
                            .map_err(write_error)?;
                    }
                    None => {
                        records.remove(name).map_err(write_error)?;
                        data.retain_in((name, 0)..=(name, u64::MAX), |_, _| false)
                            .map_err(write_error)?;
                    }
                }
                for (offset, bytes) in &write.chunks {
                    data.insert((name, *offset), bytes.as_ref())
                        .map_err(write_error)?;
                }
            }
        }
        Ok(())
    }

    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut events = txn.open_table(EVENTS).map_err(write_error)?;
            for event in &batch.append {
                let json = serde_json::to_vec(&event.to_stored()).map_err(write_error)?;
                events
                    .insert(event.seq, json.as_slice())
                    .map_err(write_error)?;
            }
            for seq in &batch.delete {
                events.remove(seq).map_err(write_error)?;
            }
            let mut trimmed = txn.open_table(TRIMMED).map_err(write_error)?;
            for (topic, up_to) in &batch.trimmed {
                trimmed.insert(topic.as_str(), up_to).map_err(write_error)?;
            }
            for topic in &batch.forgotten_topics {
                trimmed.remove(topic.as_str()).map_err(write_error)?;
            }
            let mut acks = txn.open_table(ACKS).map_err(write_error)?;
            for client in &batch.forgotten_acks {
                acks.remove(client.as_str()).map_err(write_error)?;
            }
            for (client, ack) in &batch.acks {
                let json = serde_json::to_vec(ack).map_err(write_error)?;
                acks.insert(client.as_str(), json.as_slice())
                    .map_err(write_error)?;
            }
            let mut meta = txn.open_table(META).map_err(write_error)?;
            meta.insert("last_seq", batch.last_seq)
                .map_err(write_error)?;
            meta.insert("forgotten_up_to", batch.forgotten_up_to)
                .map_err(write_error)?;
        }
        // A stream's change and its topic's event are one transaction.
        Self::put_streams(&txn, &batch.streams)?;
        // Durability::Immediate (the default): fsync before returning.
        txn.commit().map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::event::Event;

    fn event(seq: u64, topic: &str) -> Arc<Event> {
        Arc::new(Event {
            seq,
            id: seq.to_string(),
            topics: vec![topic.into()],
            event_type: Some("t".into()),
            data: format!("data {seq}\nline 2 🎉"),
            retry: None,
            private: false,
            retain: seq.is_multiple_of(2),
            is_final: false,
            published_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + seq),
            wire: bytes::Bytes::new(),
        })
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ssehub-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn what_is_committed_is_loaded_back_after_reopening() {
        let dir = temp_dir("roundtrip");
        {
            let store = DurableStore::open(&dir).unwrap();
            store
                .commit(&Batch {
                    append: vec![event(1, "a"), event(2, "b"), event(3, "a")],
                    last_seq: 3,
                    ..Batch::default()
                })
                .unwrap();
            store
                .commit(&Batch {
                    delete: vec![1],
                    trimmed: vec![("a".into(), 1)],
                    last_seq: 5,
                    forgotten_up_to: 1,
                    ..Batch::default()
                })
                .unwrap();
        }
        let store = DurableStore::open(&dir).unwrap();
        let mut loaded = Vec::new();
        let recovered = store.load(&mut |e| loaded.push(e)).unwrap();
        let seqs: Vec<u64> = loaded.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(recovered.events, 2);
        assert_eq!(loaded[0], event(2, "b").to_stored());
        let read = store.read(&[3, 1, 2]).unwrap();
        assert_eq!(read[0], Some(event(3, "a").to_stored()));
        assert_eq!(read[1], None, "deleted");
        assert_eq!(read[2], Some(event(2, "b").to_stored()));
        assert_eq!(recovered.last_seq, 5);
        assert_eq!(recovered.forgotten_up_to, 1);
        assert_eq!(recovered.trimmed.get("a"), Some(&1));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it_and_saying_what_to_do() {
        let dir = temp_dir("damaged");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(FILE_NAME),
            b"this is not a database file, just some bytes",
        )
        .unwrap();
        let err = DurableStore::open(&dir).unwrap_err().to_string();
        assert!(err.contains("history.redb"), "{err}");
        assert!(err.contains("move the file aside"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_hub_on_the_same_directory_is_refused() {
        let dir = temp_dir("locked");
        let _first = DurableStore::open(&dir).unwrap();
        let err = DurableStore::open(&dir).unwrap_err().to_string();
        assert!(err.contains("already open"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
