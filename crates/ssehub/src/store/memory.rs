//! The memory store: history lives only in the hub's memory.

use super::{Batch, Recovered, Store, StoreError};
use crate::event::StoredEvent;

/// Keeps nothing beyond the process; fast, and empty after a restart.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn load(&self, _each: &mut dyn FnMut(StoredEvent)) -> Result<Recovered, StoreError> {
        Ok(Recovered::default())
    }

    /// The hub's cache holds every event of a memory store's history: what
    /// is not there is gone.
    fn read(&self, seqs: &[u64]) -> Result<Vec<Option<StoredEvent>>, StoreError> {
        Ok(vec![None; seqs.len()])
    }

    fn commit(&self, _batch: &Batch) -> Result<(), StoreError> {
        Ok(())
    }

    fn is_durable(&self) -> bool {
        false
    }
}
