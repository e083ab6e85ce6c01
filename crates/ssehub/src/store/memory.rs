//! The memory store: history lives only in the hub's memory.

use super::{Batch, Recovered, Store, StoreError};

/// Keeps nothing beyond the process; fast, and empty after a restart.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn load(&self) -> Result<Recovered, StoreError> {
        Ok(Recovered::default())
    }

    fn commit(&self, _batch: &Batch) -> Result<(), StoreError> {
        Ok(())
    }

    fn is_durable(&self) -> bool {
        false
    }
}
