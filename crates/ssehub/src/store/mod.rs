//! Where history lives between restarts.
//!
//! The hub keeps a small record of every event in memory, and the newest
//! events whole; a store makes events durable, hands them back at startup,
//! and reads the ones a replay needs that the hub's cache no longer holds.
//! The store never knows about connections or subscribers, and knows events
//! only as [`crate::event`] defines them (below the hub).
//!
//! * [`MemoryStore`]: nothing is written; history lives in the hub's memory
//!   only and is lost on restart.
//! * [`DurableStore`]: one redb file; a batch of events is on disk (fsync)
//!   before any of them is acknowledged or delivered.
//! * [`RedisLog`]: the shared log of a cluster (`--redis-url`): it assigns
//!   the seqs, every node reads it, and retention's decisions are written
//!   to it.

mod durable;
mod memory;
mod shared_log;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use durable::DurableStore;
pub use memory::MemoryStore;
pub use shared_log::{AppendError, Control, Health, Read, RedisLog};

use crate::event::{Event, StoredEvent};

/// One durable write: everything since the previous one.
#[derive(Debug, Default)]
pub struct Batch {
    /// New events, in id order.
    pub append: Vec<Arc<Event>>,
    /// Events no longer needed (out of every history, not a retained state).
    pub delete: Vec<u64>,
    /// Topics whose history was trimmed: the highest seq removed.
    pub trimmed: Vec<(String, u64)>,
    /// Topics forgotten entirely.
    pub forgotten_topics: Vec<String>,
    /// The highest seq ever assigned, so ids are never reused.
    pub last_seq: u64,
    /// Highest seq trimmed from topics that were since forgotten.
    pub forgotten_up_to: u64,
    /// Clients' acknowledged positions, new or moved.
    pub acks: Vec<(String, Ack)>,
    /// Clients whose acknowledged position is forgotten.
    pub forgotten_acks: Vec<String>,
    /// Durable streams' changes, written with the events of their topics.
    pub streams: Vec<StreamWrite>,
}

/// A client's acknowledged position: the last event id it says it has
/// shown, and when it said so.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ack {
    /// The event id.
    pub last_event_id: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// What a store holds at startup, besides its events.
#[derive(Debug, Default)]
pub struct Recovered {
    /// How many events were loaded.
    pub events: usize,
    /// The highest seq ever assigned.
    pub last_seq: u64,
    /// Highest seq removed from each topic's history.
    pub trimmed: HashMap<String, u64>,
    /// Highest seq trimmed from forgotten topics.
    pub forgotten_up_to: u64,
    /// Acknowledged positions, by client id.
    pub acks: Vec<(String, Ack)>,
    /// Every event up to this seq may be lost, on every topic (a shared log
    /// that lost data, or began after it): a resume from before gets a
    /// `reset`.
    pub lost_up_to: u64,
}

/// A store failure, with what the operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data file cannot be opened.
    #[error("cannot open the data file {path}: {reason}. {advice}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
        /// What to do.
        advice: &'static str,
    },
    /// A stored record cannot be read back.
    #[error("the data file {path} holds a record that cannot be read ({reason}). {advice}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// What to do.
        advice: &'static str,
    },
    /// A read failed.
    #[error("reading from the store failed: {0}")]
    Read(String),
    /// The store's settings are wrong.
    #[error("{0}")]
    Config(String),
    /// The store cannot be reached now (the shared log of a cluster): what
    /// it holds is not lost, only out of reach.
    #[error("the store cannot be reached: {0}")]
    Unreachable(String),
    /// A write failed; nothing of the batch was stored.
    #[error("writing to the store failed: {0}")]
    Write(String),
}

/// One durable stream's change (the Durable Streams surface): its record
/// and its new data, made durable together, so that the producer state in
/// the record never disagrees with the data (a retried batch is never
/// accepted twice, even across a crash).
#[derive(Debug, Clone)]
pub struct StreamWrite {
    /// The stream's name (its path under the streams prefix).
    pub name: String,
    /// The stream's record (JSON, opaque to the store); `None` removes the
    /// stream and all its data.
    pub record: Option<Vec<u8>>,
    /// New data, by offset.
    pub chunks: Vec<(u64, bytes::Bytes)>,
}

/// A durable stream as stored, for startup.
#[derive(Debug, Clone)]
pub struct StoredStream {
    /// Its name.
    pub name: String,
    /// Its record, as written.
    pub record: Vec<u8>,
    /// Its data, by offset, in offset order.
    pub chunks: Vec<(u64, Vec<u8>)>,
}

/// A place for history. Methods block; the hub calls them off the async
/// threads.
pub trait Store: Send + Sync + 'static {
    /// Everything stored, for startup: each event is handed to `each`, in
    /// id order, one at a time (history can be larger than memory).
    fn load(&self, each: &mut dyn FnMut(StoredEvent)) -> Result<Recovered, StoreError>;
    /// The events stored under `seqs`, each `None` if it is not (or no
    /// longer) stored.
    fn read(&self, seqs: &[u64]) -> Result<Vec<Option<StoredEvent>>, StoreError>;
    /// Makes a batch durable, all or nothing.
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;
    /// Whether `commit` writes anything. A memory store's commits are
    /// skipped, so publishing does not wait for them.
    fn is_durable(&self) -> bool;
    /// Every durable stream, for startup. A store that keeps none (memory)
    /// has none.
    fn load_streams(&self, _each: &mut dyn FnMut(StoredStream)) -> Result<(), StoreError> {
        Ok(())
    }
    /// Makes stream changes durable, all or nothing.
    fn commit_streams(&self, _writes: &[StreamWrite]) -> Result<(), StoreError> {
        Ok(())
    }
}
