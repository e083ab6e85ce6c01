//! The names of the topics that have something stored, in an order that
//! only grows, so that a subscription with a template or `*` can match them
//! outside the hub's lock: under the lock it takes a snapshot (a pointer per
//! [`CHUNK`] names), matches the snapshot with the lock released, and back
//! under the lock matches only the names added since. The work of matching
//! a selector against every topic never holds the lock.
//!
//! A name is added when its topic gets something stored, and stays when the
//! topic is forgotten (whoever matches checks that the topic still has
//! something stored); once stale names make up half the directory it is
//! rebuilt from the live topics, which costs as much as the additions since
//! the last rebuild.

use std::sync::Arc;

/// Names per shared chunk.
const CHUNK: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct Directory {
    /// Full chunks, shared with snapshots.
    sealed: Vec<Arc<[Arc<str>]>>,
    /// The chunk being filled.
    open: Vec<Arc<str>>,
    /// Bumped by each rebuild: positions taken before it mean nothing.
    generation: u64,
}

/// The directory as it was: its names, and where later additions start.
#[derive(Debug)]
pub(super) struct Snapshot {
    sealed: Vec<Arc<[Arc<str>]>>,
    open: Vec<Arc<str>>,
    generation: u64,
}

impl Snapshot {
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sealed
            .iter()
            .flat_map(|chunk| chunk.iter())
            .chain(&self.open)
            .map(|name| &**name)
    }

    fn len(&self) -> usize {
        self.sealed.len() * CHUNK + self.open.len()
    }
}

impl Directory {
    pub fn add(&mut self, name: &str) {
        self.open.push(name.into());
        if self.open.len() == CHUNK {
            let full = std::mem::take(&mut self.open);
            self.sealed.push(full.into());
        }
    }

    pub fn len(&self) -> usize {
        self.sealed.len() * CHUNK + self.open.len()
    }

    /// Costs a pointer per chunk, and the names of the open one.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sealed: self.sealed.clone(),
            open: self.open.clone(),
            generation: self.generation,
        }
    }

    /// The names added since `snapshot`, or `None` if the directory was
    /// rebuilt since (then every name must be matched again).
    pub fn added_since(&self, snapshot: &Snapshot) -> Option<impl Iterator<Item = &str>> {
        if snapshot.generation != self.generation {
            return None;
        }
        let names = self
            .sealed
            .iter()
            .flat_map(|chunk| chunk.iter())
            .chain(&self.open)
            .skip(snapshot.len())
            .map(|name| &**name);
        Some(names)
    }

    /// Rebuilds from `live` (the topics with something stored, `count` of
    /// them) once stale names are half of it.
    pub fn compact<'a>(&mut self, count: usize, live: impl Iterator<Item = &'a str>) {
        if self.len() <= 2 * count + CHUNK {
            return;
        }
        let generation = self.generation + 1;
        *self = Directory {
            generation,
            ..Directory::default()
        };
        for name in live {
            self.add(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additions_after_a_snapshot_are_found_until_a_rebuild() {
        let mut directory = Directory::default();
        for i in 0..2500 {
            directory.add(&format!("t/{i}"));
        }
        let snapshot = directory.snapshot();
        assert_eq!(snapshot.names().count(), 2500);
        assert_eq!(snapshot.names().nth(1500), Some("t/1500"));
        for i in 2500..3100 {
            directory.add(&format!("t/{i}"));
        }
        let added: Vec<&str> = directory.added_since(&snapshot).unwrap().collect();
        assert_eq!(added.len(), 600);
        assert_eq!(added[0], "t/2500");
        // The snapshot did not change.
        assert_eq!(snapshot.names().count(), 2500);
        // Few stale names: no rebuild.
        directory.compact(3000, std::iter::empty());
        assert!(directory.added_since(&snapshot).is_some());
        // Most are stale: rebuilt from the live ones; the old positions are void.
        directory.compact(10, ["t/1", "t/2"].into_iter());
        assert_eq!(directory.len(), 2);
        assert!(directory.added_since(&snapshot).is_none());
    }
}
