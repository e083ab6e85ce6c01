//! A stream's replay: the events of history it is sent before live ones,
//! fetched in bounded pieces as its socket drains.
//!
//! Registration notes which events the replay holds (their seqs, 8 bytes
//! each), not their bytes: a connection that replays all of history holds no
//! copy of it, and one that stops reading keeps nothing alive that retention
//! would free. Each piece is looked up under the hub's lock, at most
//! [`PIECE_BYTES`] at a time, when the writer has written the last one:
//! the events the hub's cache holds are taken from it, the others are read
//! from the store after the lock is released, on a blocking thread.
//!
//! A reader too slow for its replay is dropped like any slow subscriber (its
//! connection reset; the client resumes from what it got, with a `reset` if
//! history has moved on):
//! * when an event it must still be sent has left history (retention
//!   trimmed it meanwhile): sending the rest would leave a silent gap;
//! * when it has taken no piece for `drain_timeout` (the hub's clock checks).
//!
//! Across the hub at most `max_replay` events wait to be replayed (each
//! replay counting for at most an eighth of it), so streams that never read
//! cannot hold memory without bound, and at most an eighth of it for one
//! client address group, so that they cannot keep everyone else's replays
//! out either.

use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::kept::{self, Found};
use super::queue::Watch;
use super::state::{State, SubId};
use super::{Event, Hub};
use crate::store::StoreError;

/// At most this much history is handed to the writer at once (one event
/// more, if a single event is larger): small, so that a slow reader takes
/// a piece often (it is dropped only if it takes none for
/// `drain_timeout`: a reader slower than a piece per that time).
pub const PIECE_BYTES: usize = 16 * 1024;

/// The hub's record of a stream that is replaying.
pub(super) struct Replaying {
    /// When it last took a piece (or registered).
    pub last_progress: Instant,
    /// Events it must still be sent.
    pub left: usize,
    /// Its client's address group, whose share of the bound it counts in.
    pub address: Option<IpAddr>,
    /// Its connection, to reset.
    pub stream: Watch,
}

/// Of `--max-replay`, the share one client address may hold, and the most
/// one replay counts for, however long: streams from one address cannot
/// keep everyone else's replays out, and a replay of all history still
/// gets in (the most memory it can pin is its own list).
pub(super) const SHARE_PER_ADDRESS: usize = 8;

impl State {
    /// What a replay with `left` events counts for against the bounds.
    pub(super) fn replay_weight(&self, left: usize) -> usize {
        left.min(self.replay_share)
    }

    /// A replay for `address` went from `before` to `after` events left.
    fn replay_changed(&mut self, address: Option<IpAddr>, before: usize, after: usize) {
        self.replay_backlog = self.replay_backlog + after - before;
        // A replay only grows when it starts.
        self.replayed += after.saturating_sub(before) as u64;
        let (was, is) = (self.replay_weight(before), self.replay_weight(after));
        self.replay_counted = self.replay_counted + is - was;
        if let Some(address) = address {
            let count = self.replay_by_address.entry(address).or_default();
            *count = *count + is - was;
            if *count == 0 {
                self.replay_by_address.remove(&address);
            }
        }
    }

    /// Ends a replaying stream at once: resets its connection and
    /// unregisters it.
    fn cut_replay(&mut self, key: SubId) {
        if let Some(replaying) = self.end_replay(key) {
            replaying.stream.kill();
        }
        self.remove_subscriber(key);
    }

    /// Stops counting a replay that ends or is dropped.
    fn end_replay(&mut self, key: SubId) -> Option<Replaying> {
        let replaying = self.replays.remove(&key)?;
        self.replay_changed(replaying.address, replaying.left, 0);
        Some(replaying)
    }
}

/// What the writer gets next from a replay.
#[derive(Debug)]
pub enum Piece {
    /// Bytes to write.
    Bytes(Bytes),
    /// The replay is over: live events follow.
    Done,
    /// The reader was too slow (see the module's text): close the connection.
    Dropped,
}

/// The writer's side of a replay: the stream's first bytes, around what it
/// is sent from history. Dropped once sent, so an idle stream keeps nothing
/// of it.
pub struct Replay {
    hub: Arc<Hub>,
    key: SubId,
    /// Before history: the retry hint, resume position, `reset`. Empty once
    /// sent.
    head: Bytes,
    /// Events still to send, in id order.
    left: VecDeque<u64>,
    /// After history: a position marker, `complete` of finished topics.
    tail: Bytes,
    /// A piece being read from the store.
    reading: Option<JoinHandle<(Found, Result<(), StoreError>)>>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("left", &self.left.len())
            .finish_non_exhaustive()
    }
}

impl Replay {
    /// A replay of `seqs` for the stream `key`, between `head` and `tail`,
    /// registered with the hub; or, with no history to send, the two as one
    /// write.
    pub(super) fn start(
        hub: &Arc<Hub>,
        st: &mut State,
        key: SubId,
        (head, tail): (Bytes, Bytes),
        (seqs, address): (VecDeque<u64>, Option<IpAddr>),
        stream: Watch,
    ) -> Replay {
        if seqs.is_empty() {
            // Nothing between them: one write, as most streams open.
            let mut first = BytesMut::from(&head[..]);
            first.extend_from_slice(&tail);
            return Replay {
                hub: hub.clone(),
                key,
                head: first.freeze(),
                left: seqs,
                tail: Bytes::new(),
                reading: None,
            };
        }
        st.replay_changed(address, 0, seqs.len());
        st.replays.insert(
            key,
            Replaying {
                last_progress: Instant::now(),
                left: seqs.len(),
                address,
                stream,
            },
        );
        Replay {
            hub: hub.clone(),
            key,
            head,
            left: seqs,
            tail,
            reading: None,
        }
    }

    /// The next piece to write, for a writer that polls: a piece the cache
    /// does not hold whole is read from the store off the async threads.
    pub fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Piece> {
        if let Some(reading) = &mut self.reading {
            let read = std::task::ready!(Pin::new(reading).poll(cx));
            self.reading = None;
            let (found, read) = read.unwrap_or_else(|panic| {
                let panicked = StoreError::Read(format!("the store panicked: {panic}"));
                (Vec::new(), Err(panicked))
            });
            return Poll::Ready(self.finish(found, read));
        }
        match self.take() {
            Taken::Whole(piece) => Poll::Ready(piece),
            Taken::Partly(mut found) => {
                let store = self.hub.store.clone();
                self.reading = Some(tokio::task::spawn_blocking(move || {
                    let read = kept::read_missing(&*store, &mut found);
                    (found, read)
                }));
                self.poll_piece(cx)
            }
        }
    }

    /// The next piece to write, reading the store on this thread if need be
    /// (for tests and embedders that poll by hand).
    pub fn next_piece(&mut self) -> Piece {
        match self.take() {
            Taken::Whole(piece) => piece,
            Taken::Partly(mut found) => {
                let read = kept::read_missing(&*self.hub.store, &mut found);
                self.finish(found, read)
            }
        }
    }

    /// Takes the next events under the lock: from the cache, and which
    /// must be read from the store.
    fn take(&mut self) -> Taken {
        if !self.head.is_empty() {
            return Taken::Whole(Piece::Bytes(std::mem::take(&mut self.head)));
        }
        if self.left.is_empty() {
            return Taken::Whole(match std::mem::take(&mut self.tail) {
                tail if tail.is_empty() => Piece::Done,
                tail => Piece::Bytes(tail),
            });
        }
        let mut st = self.hub.state();
        if !st.replays.contains_key(&self.key) {
            // The clock dropped it as stalled (and reset its connection).
            self.left.clear();
            return Taken::Whole(Piece::Dropped);
        }
        let mut found: Found = Vec::new();
        let mut size = 0;
        while size < PIECE_BYTES
            && let Some(&seq) = self.left.front()
        {
            let Some(kept) = st.kept.get(&seq) else {
                // Gone from history before this reader got to it.
                self.left.clear();
                self.hub.drop_replay(&mut st, self.key);
                return Taken::Whole(Piece::Dropped);
            };
            let cached = st.cache.get(seq).cloned();
            size += cached.as_ref().map_or(kept.size, |e| e.wire.len());
            found.push((seq, cached));
            self.left.pop_front();
        }
        if found.iter().any(|(_, event)| event.is_none()) {
            return Taken::Partly(found);
        }
        progressed(&mut st, self.key, self.left.len());
        drop(st);
        Taken::Whole(Piece::Bytes(concat(found)))
    }

    /// A piece partly read from the store: sent whole, or the replay is
    /// dropped (an event left the store meanwhile, or the store failed).
    fn finish(&mut self, found: Found, read: Result<(), StoreError>) -> Piece {
        let mut st = self.hub.state();
        if !st.replays.contains_key(&self.key) {
            self.left.clear();
            return Piece::Dropped;
        }
        match read {
            Ok(()) if found.iter().all(|(_, event)| event.is_some()) => {
                progressed(&mut st, self.key, self.left.len());
                drop(st);
                Piece::Bytes(concat(found))
            }
            Ok(()) => {
                // Deleted between the lock and the read (retention): the
                // client resumes and is told what it missed.
                self.left.clear();
                self.hub.drop_replay(&mut st, self.key);
                Piece::Dropped
            }
            Err(StoreError::Unreachable(err)) => {
                // Out of reach for now, not lost (a cluster's Redis is
                // down): the stream ends and the client resumes later, from
                // the same place.
                tracing::warn!(%err, "a replay waits for the store to be reachable again");
                self.left.clear();
                st.cut_replay(self.key);
                Piece::Dropped
            }
            Err(err) => {
                // What the store cannot give back leaves history, so that the
                // client, resuming, gets a `reset` instead of this again.
                let unreadable: Vec<u64> = found
                    .iter()
                    .filter(|(_, e)| e.is_none())
                    .map(|(seq, _)| *seq)
                    .collect();
                tracing::error!(%err, events = ?unreadable, "history the store cannot read leaves it");
                for seq in unreadable {
                    st.drop_unreadable(seq);
                }
                self.left.clear();
                st.cut_replay(self.key);
                Piece::Dropped
            }
        }
    }
}

/// Counts what a replay took, `left` events remaining; one with nothing
/// left stops counting.
fn progressed(st: &mut State, key: SubId, left: usize) {
    let (address, before) = {
        let replaying = &st.replays[&key];
        (replaying.address, replaying.left)
    };
    st.replay_changed(address, before, left);
    if left == 0 {
        let replaying = st.replays.remove(&key).expect("checked by the caller");
        if !st.subscribers.contains_key(&key) {
            // Not (or no longer) a subscriber: its tail is its end.
            st.watch_ending(replaying.stream);
        }
    } else {
        let entry = st.replays.get_mut(&key).expect("checked by the caller");
        entry.last_progress = Instant::now();
        entry.left = left;
    }
}

/// A piece as taken under the lock.
enum Taken {
    Whole(Piece),
    /// These events, some still to be read from the store.
    Partly(Found),
}

impl Drop for Replay {
    fn drop(&mut self) {
        // (With a piece still being read, its events are counted still.)
        if self.left.is_empty() && self.reading.is_none() {
            return;
        }
        self.hub.state().end_replay(self.key);
    }
}

impl Hub {
    /// Drops a replaying stream whose reader is too slow: resets its
    /// connection and unregisters it, counted with the slow subscribers.
    pub(super) fn drop_replay(&self, st: &mut State, key: SubId) {
        st.cut_replay(key);
        self.dropped_slow.fetch_add(1, Relaxed);
        tracing::debug!(
            subscriber = key,
            "dropping a subscriber too slow for its replay"
        );
    }

    /// The clock's part: drops replays that have taken nothing for
    /// `drain_timeout`.
    pub(super) fn drop_stalled_replays(&self, st: &mut State, now: Instant) {
        let timeout = self.config.drain_timeout;
        let stalled: Vec<SubId> = st
            .replays
            .iter()
            .filter(|(_, r)| r.last_progress + timeout <= now)
            .map(|(key, _)| *key)
            .collect();
        for key in stalled {
            self.drop_replay(st, key);
        }
    }
}

/// The encoded events of a piece, all present, as one write.
fn concat(found: Found) -> Bytes {
    let events: Vec<Arc<Event>> = found.into_iter().filter_map(|(_, e)| e).collect();
    if let [one] = &events[..] {
        return one.wire.clone();
    }
    let mut bytes = BytesMut::with_capacity(events.iter().map(|e| e.wire.len()).sum());
    for event in &events {
        bytes.extend_from_slice(&event.wire);
    }
    bytes.freeze()
}
