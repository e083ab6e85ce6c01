//! What the hub holds in memory of its history: a small record per event
//! ([`Kept`]), enough to select, authorize, retain and resume, and the
//! newest events whole in a cache bounded in bytes ([`Cache`]). The rest of
//! an event (its data and its encoded bytes) is in the store, read when a
//! replay gets to it; with the memory store, which has nowhere else to keep
//! them, the cache holds every event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::Event;
use crate::store::{Store, StoreError};

/// An event in history or a retained state, without its data.
#[derive(Debug)]
pub(super) struct Kept {
    pub seq: u64,
    /// The publisher's id; `None` for the hub's own (the decimal seq), as
    /// most are: no allocation for them.
    pub id: Option<Box<str>>,
    pub topics: Box<[String]>,
    pub private: bool,
    pub published_at: SystemTime,
    /// What it counts for against `--history-max-bytes`.
    pub size: usize,
}

impl Kept {
    pub fn of(event: &Event) -> Kept {
        Kept {
            seq: event.seq,
            id: (!super::ids::is_hub_id(&event.id)).then(|| event.id.as_str().into()),
            topics: event.topics.clone().into_boxed_slice(),
            private: event.private,
            published_at: event.published_at,
            size: footprint(event),
        }
    }
}

/// Bytes an event counts for against the total size limit: its strings as
/// the store writes them, plus a fixed cost for the rest of its record (the
/// field names and numbers of its JSON, about 100 bytes) and the indexes
/// that lead to it, in the store and in memory.
pub(super) fn footprint(event: &Event) -> usize {
    footprint_of(
        &event.data,
        &event.id,
        event.event_type.as_deref(),
        &event.topics,
    )
}

/// [`footprint`] of an event's parts, before it is one.
pub(super) fn footprint_of(
    data: &str,
    id: &str,
    event_type: Option<&str>,
    topics: &[String],
) -> usize {
    data.len()
        + id.len()
        + event_type.map_or(0, str::len)
        + topics.iter().map(|t| t.len() + 3).sum::<usize>()
        + 160
}

/// The newest events whole, up to a budget in bytes; the oldest leave first.
/// Most replays are of what a client missed in the last seconds: those are
/// sent from here without reading the store.
#[derive(Debug, Default)]
pub(super) struct Cache {
    events: BTreeMap<u64, Arc<Event>>,
    bytes: usize,
    budget: usize,
}

/// What an event costs in the cache: its encoded bytes, and its record
/// (its data among it).
fn cost(event: &Event) -> usize {
    event.wire.len() + footprint(event)
}

impl Cache {
    pub fn with_budget(budget: usize) -> Cache {
        Cache {
            budget,
            ..Cache::default()
        }
    }

    /// Adds a new event (the newest), evicting the oldest beyond the budget.
    pub fn insert(&mut self, event: &Arc<Event>) {
        if cost(event) > self.budget {
            return;
        }
        self.bytes += cost(event);
        if let Some(old) = self.events.insert(event.seq, event.clone()) {
            self.bytes -= cost(&old);
        }
        while self.bytes > self.budget
            && let Some((_, oldest)) = self.events.pop_first()
        {
            self.bytes -= cost(&oldest);
        }
    }

    pub fn get(&self, seq: u64) -> Option<&Arc<Event>> {
        self.events.get(&seq)
    }

    /// An event that left history and every retained state.
    pub fn remove(&mut self, seq: u64) {
        if let Some(event) = self.events.remove(&seq) {
            self.bytes -= cost(&event);
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.events.keys().copied()
    }
}

/// Events of a replay or a read of history, by seq: whole, or `None`
/// while still to be read from the store.
pub(super) type Found = Vec<(u64, Option<Arc<Event>>)>;

/// Fills in, from the store, the events of `found` the cache did not have
/// (each seq with what the cache gave). One left `None` is no longer
/// stored, or, with an error, could not be read: when a read fails, each
/// event is read alone, so that only those the store cannot give back are
/// left out. This blocks on the store's reads.
pub(super) fn read_missing(store: &dyn Store, found: &mut Found) -> Result<(), StoreError> {
    let missing: Vec<u64> = found
        .iter()
        .filter(|(_, event)| event.is_none())
        .map(|(seq, _)| *seq)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let (read, failure) = match store.read(&missing) {
        Ok(read) => (read, None),
        // Nothing can be read now: one by one would only wait longer.
        Err(failure @ StoreError::Unreachable(_)) => (vec![None; missing.len()], Some(failure)),
        Err(failure) => {
            let one_by_one = missing.iter().map(|seq| match store.read(&[*seq]) {
                Ok(mut one) => one.pop().flatten(),
                Err(_) => None,
            });
            (one_by_one.collect(), Some(failure))
        }
    };
    let mut read = read.into_iter();
    for (_, slot) in found.iter_mut().filter(|(_, event)| event.is_none()) {
        *slot = read
            .next()
            .flatten()
            .map(|stored| Arc::new(Event::from_stored(stored)));
    }
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, data: &str) -> Arc<Event> {
        Arc::new(Event {
            seq,
            id: seq.to_string(),
            topics: vec!["t".into()],
            event_type: None,
            data: data.into(),
            retry: None,
            private: false,
            retain: false,
            is_final: false,
            published_at: SystemTime::UNIX_EPOCH,
            wire: crate::frames::data_only(data),
        })
    }

    #[test]
    fn the_cache_keeps_the_newest_events_within_its_budget() {
        let one = cost(&event(1, &"x".repeat(100)));
        let mut cache = Cache::with_budget(3 * one);
        for seq in 1..=5 {
            cache.insert(&event(seq, &"x".repeat(100)));
        }
        let held: Vec<u64> = cache.events.keys().copied().collect();
        assert_eq!(held, [3, 4, 5]);
        assert_eq!(cache.bytes(), 3 * one);
        cache.remove(4);
        assert!(cache.get(4).is_none());
        assert_eq!(cache.bytes(), 2 * one);
        // An event larger than the whole budget is not cached at all.
        cache.insert(&event(6, &"x".repeat(4 * one)));
        assert!(cache.get(6).is_none());
        assert_eq!(cache.bytes(), 2 * one);
    }
}
