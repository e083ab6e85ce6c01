//! The hub's state behind its lock: topics with their history, retained
//! states, the subscribers, and the retention rules that keep all of it
//! bounded. Everything the store must learn about (deletions, trims) is
//! collected in [`Pending`] for the next durable write.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use smallvec::SmallVec;

use super::directory::Directory;
use super::kept::{Cache, Kept};
use super::{Event, Selector};
use crate::store::Batch;

pub(super) type SubId = u64;

#[derive(Default)]
pub(super) struct State {
    /// The seq of the newest event assigned (it may still be committing).
    pub last_seq: u64,
    /// The seq of the newest event in history; what subscribers can see.
    pub applied_seq: u64,
    pub topics: HashMap<String, Topic>,
    /// The names of topics with something stored, for wildcard
    /// subscriptions to match outside the lock.
    pub directory: Directory,
    /// Publisher-chosen ids of events still stored (or committing), for
    /// resume and uniqueness.
    pub ids: HashMap<String, u64>,
    /// Topics whose final event is committing: already closed to publishers.
    pub pending_final: HashSet<String>,
    /// Highest seq trimmed from topics that were since forgotten: a resume
    /// from before it on an unknown topic may have missed events.
    pub forgotten_up_to: u64,
    /// Every event the store holds (in some history, or a retained state),
    /// oldest first, for the total size limit.
    pub kept: BTreeMap<u64, Arc<Kept>>,
    pub kept_bytes: usize,
    /// The newest of them whole; the rest are read from the store.
    pub cache: Cache,
    /// Of those, the ones that are no topic's current state: what the size
    /// limit may evict, oldest first. States leave only when replaced, or
    /// with their idle topic (`--history-ttl`).
    pub evictable: BTreeSet<u64>,
    /// The size of the current states.
    pub state_bytes: usize,
    /// What the next durable write must also record. Only collected when the
    /// store is durable.
    pub pending: Option<Pending>,
    pub subscribers: HashMap<SubId, Subscriber>,
    /// Subscribers with a template or `*` selector, checked on every event.
    pub wildcard: HashSet<SubId>,
    pub clients: HashMap<String, SubId>,
    pub next_sub: SubId,
    /// The server is stopping: every stream ends, new ones at once.
    pub shutting_down: bool,
    /// Streams the hub has let go of whose writers are still delivering
    /// their last bytes, and when they will be killed if they have not: a
    /// reader that stalls must not keep its connection forever.
    pub ending: Vec<(std::time::Instant, super::queue::Watch)>,
    /// How long an ending stream may take (`--shutdown-timeout`).
    pub drain_timeout: std::time::Duration,
    /// Streams still sending their replay, by subscriber id.
    pub replays: HashMap<SubId, super::replay::Replaying>,
    /// Events waiting to be replayed, across those streams.
    pub replay_backlog: usize,
    /// Events put into replays since start.
    pub replayed: u64,
    /// The same as counted against `--max-replay` (each replay for at most
    /// `replay_share`), in all and per client address group.
    pub replay_counted: usize,
    pub replay_by_address: HashMap<std::net::IpAddr, usize>,
    pub replay_share: usize,
    /// Clients' acknowledged positions.
    pub acks: super::acks::Acks,
    /// In a cluster: subscribers with a client id whose claim the shared
    /// log has not given back yet (any claim read meanwhile is older).
    pub unclaimed: HashSet<SubId>,
    /// In a cluster: subscribers whose claim could not be written (Redis
    /// was down), to write once it is back.
    pub unsent_claims: HashSet<SubId>,
    /// In a cluster: the shared log is being loaded again; new streams and
    /// publishes are refused meanwhile.
    pub resyncing: bool,
}

/// Store changes waiting for the next commit.
#[derive(Default)]
pub(super) struct Pending {
    pub delete: Vec<u64>,
    pub trimmed: HashMap<String, u64>,
    pub forgotten_topics: Vec<String>,
    /// The newest position of each client that acknowledged since.
    pub acks: HashMap<String, crate::store::Ack>,
    pub forgotten_acks: HashSet<String>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty()
            && self.trimmed.is_empty()
            && self.forgotten_topics.is_empty()
            && self.acks.is_empty()
            && self.forgotten_acks.is_empty()
    }

    pub fn into_batch(self, batch: &mut Batch) {
        batch.delete = self.delete;
        batch.trimmed = self.trimmed.into_iter().collect();
        batch.forgotten_topics = self.forgotten_topics;
        batch.acks = self.acks.into_iter().collect();
        batch.forgotten_acks = self.forgotten_acks.into_iter().collect();
    }

    /// Takes back what a failed write did not store, for the next one
    /// (newer positions taken since win).
    pub fn retry(&mut self, batch: Batch) {
        self.delete.extend(batch.delete);
        self.trimmed.extend(batch.trimmed);
        self.forgotten_topics.extend(batch.forgotten_topics);
        for (client, ack) in batch.acks {
            if !self.forgotten_acks.contains(&client) {
                self.acks.entry(client).or_insert(ack);
            }
        }
        for client in batch.forgotten_acks {
            if !self.acks.contains_key(&client) {
                self.forgotten_acks.insert(client);
            }
        }
    }
}

pub(super) struct Topic {
    pub history: VecDeque<Arc<Kept>>,
    /// Highest seq removed from `history`.
    pub trimmed_up_to: u64,
    /// What the hub had forgotten when this topic (again) became known:
    /// events of a topic of this name up to there may have existed and be
    /// gone, so a client resuming from before gets a `reset`, as it does
    /// while the topic is forgotten.
    pub known_from: u64,
    pub retained: Option<Arc<Kept>>,
    pub finished: bool,
    /// Subscribers that named this topic exactly. A list, not a set: one
    /// subscriber costs 8 bytes instead of a hash table, and the first is
    /// kept inline, which matters when every connection has a topic of its
    /// own.
    pub subscribers: SmallVec<[SubId; 1]>,
    pub last_publish: SystemTime,
}

impl Topic {
    pub fn new(now: SystemTime, known_from: u64) -> Topic {
        Topic {
            history: VecDeque::new(),
            trimmed_up_to: 0,
            known_from,
            retained: None,
            finished: false,
            subscribers: SmallVec::new(),
            last_publish: now,
        }
    }

    /// Whether the store holds anything of it: history, a state, the mark
    /// of a trim, or its end.
    pub fn has_stored(&self) -> bool {
        !self.history.is_empty()
            || self.retained.is_some()
            || self.trimmed_up_to > 0
            || self.finished
    }

    fn is_idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.history.is_empty()
            && self.retained.is_none()
            && !self.finished
    }
}

/// Boxed slices rather than `Vec`s: a subscriber lives as long as its
/// connection, and a `Vec` built by pushing keeps room for four selectors.
pub(super) struct Subscriber {
    pub selectors: Box<[Selector]>,
    /// Private events are delivered only when one of their topics matches.
    pub private: Box<[Selector]>,
    /// How many of its exact topics are not finished yet; the stream ends
    /// when none is left and there is no wildcard selector. (A count, not a
    /// set: the names are in `selectors`, and each topic finishes once.)
    pub open_topics: u32,
    pub wildcard: bool,
    pub client_id: Option<String>,
    pub queue: super::queue::Sender,
    pub connected_at: SystemTime,
    /// When the stream must end, and why: the earliest of its maximum
    /// lifetime and its token's expiry.
    pub ends: Option<(std::time::Instant, crate::frames::StreamEnd)>,
    pub remote: Option<SocketAddr>,
}

/// Whether a subscriber with these grants may receive an event in history:
/// a private event only where a grant covers one of its topics.
pub(super) fn may_see(event: &Kept, grants: &[Selector]) -> bool {
    granted(event.private, &event.topics, grants)
}

fn granted(private: bool, topics: &[String], grants: &[Selector]) -> bool {
    !private || topics.iter().any(|t| grants.iter().any(|s| s.matches(t)))
}

impl Subscriber {
    pub fn may_see(&self, event: &Event) -> bool {
        granted(event.private, &event.topics, &self.private)
    }

    pub fn selects(&self, event: &Event) -> bool {
        event
            .topics
            .iter()
            .any(|t| self.selectors.iter().any(|s| s.matches(t)))
    }
}

impl State {
    /// Adds an applied event to the history (and state) of its topics, then
    /// enforces the per-topic count limit and the total size limit.
    pub fn add_to_history(&mut self, event: &Arc<Event>, history_size: usize, max_bytes: usize) {
        let now = event.published_at;
        self.applied_seq = self.applied_seq.max(event.seq);
        let kept = Arc::new(Kept::of(event));
        self.kept.insert(event.seq, kept.clone());
        self.cache.insert(event);
        self.kept_bytes += kept.size;
        if event.retain {
            // The state of each of its topics from now on (counted once).
            self.state_bytes += kept.size;
        } else {
            self.evictable.insert(event.seq);
        }
        if kept.id.is_some() {
            self.ids.insert(event.id.clone(), event.seq);
        }
        for name in &event.topics {
            let topic = self
                .topics
                .entry(name.clone())
                .or_insert_with(|| Topic::new(now, self.forgotten_up_to));
            if !topic.has_stored() {
                self.directory.add(name);
            }
            topic.history.push_back(kept.clone());
            topic.last_publish = now;
            topic.finished |= event.is_final;
            let replaced = if event.retain {
                topic.retained.replace(kept.clone())
            } else {
                None
            };
            if event.is_final {
                self.pending_final.remove(name);
            }
            if let Some(old) = replaced {
                self.state_replaced(&old);
            }
            while self.topics[name].history.len() > history_size {
                self.trim_oldest(name);
            }
        }
        while self.kept_bytes > max_bytes
            && let Some(&oldest) = self.evictable.first()
        {
            self.evict(oldest);
        }
        let stored = self.topics.iter().filter(|(_, t)| t.has_stored());
        self.directory
            .compact(self.topics.len(), stored.map(|(name, _)| name.as_str()));
    }

    /// Whether `event` is the current state of one of its topics.
    fn is_state(&self, event: &Kept) -> bool {
        event.topics.iter().any(|name| {
            self.topics
                .get(name)
                .and_then(|t| t.retained.as_ref())
                .is_some_and(|r| r.seq == event.seq)
        })
    }

    /// `old` is no longer the state of one of its topics: if it is no
    /// other's either, it may be released, or evicted from the histories
    /// that still hold it.
    fn state_replaced(&mut self, old: &Arc<Kept>) {
        if self.is_state(old) {
            return;
        }
        self.state_bytes -= old.size;
        if self.kept.contains_key(&old.seq) {
            self.evictable.insert(old.seq);
        }
        self.release(old);
    }

    /// What the current states would free if `event` replaced them: those
    /// it replaces on every topic they belong to.
    pub fn states_replaced_by(&self, topics: &[String]) -> usize {
        let mut replaced: Vec<&Arc<Kept>> = topics
            .iter()
            .filter_map(|name| self.topics.get(name)?.retained.as_ref())
            .filter(|state| state.topics.iter().all(|t| topics.contains(t)))
            .collect();
        replaced.sort_unstable_by_key(|state| state.seq);
        replaced.dedup_by_key(|state| state.seq);
        replaced.iter().map(|state| state.size).sum()
    }

    /// Removes the oldest event of a topic's history.
    pub fn trim_oldest(&mut self, name: &str) {
        let topic = self.topics.get_mut(name).expect("topic exists");
        let Some(event) = topic.history.pop_front() else {
            return;
        };
        topic.trimmed_up_to = event.seq;
        if let Some(pending) = &mut self.pending {
            pending.trimmed.insert(name.to_owned(), event.seq);
        }
        self.release(&event);
    }

    /// Drops an event from the store's keeping once nothing needs it: it is
    /// out of every topic's history and no topic's retained state.
    fn release(&mut self, event: &Arc<Kept>) {
        let needed = event.topics.iter().any(|name| {
            self.topics.get(name).is_some_and(|t| {
                t.trimmed_up_to < event.seq
                    || t.retained.as_ref().is_some_and(|r| r.seq == event.seq)
            })
        });
        if needed || self.kept.remove(&event.seq).is_none() {
            return;
        }
        self.evictable.remove(&event.seq);
        self.cache.remove(event.seq);
        self.kept_bytes -= event.size;
        if let Some(id) = &event.id
            && self.ids.get(&**id) == Some(&event.seq)
        {
            self.ids.remove(&**id);
        }
        if let Some(pending) = &mut self.pending {
            pending.delete.push(event.seq);
        }
    }

    /// The total size limit: drops an event that is no topic's state from
    /// the front of the histories that hold it. A topic left with nothing
    /// (no history, state or subscriber) is forgotten, so that what the
    /// store keeps per topic stays within the limit too.
    fn evict(&mut self, seq: u64) {
        let Some(event) = self.kept.get(&seq).cloned() else {
            self.evictable.remove(&seq);
            return;
        };
        for name in &event.topics {
            let Some(topic) = self.topics.get(name) else {
                continue;
            };
            // The oldest evictable event: what is before it in a history is
            // a current state, which leaves the history with it (and stays
            // the topic's state).
            if topic.history.front().is_some_and(|e| e.seq <= seq) {
                while self.topics[name]
                    .history
                    .front()
                    .is_some_and(|e| e.seq <= seq)
                {
                    self.trim_oldest(name);
                }
            }
            if self.topics.get(name).is_some_and(Topic::is_idle) {
                self.forget(name);
            }
        }
        // (Released by the last trim, unless its topics were all gone.)
        if self.kept.remove(&seq).is_some() {
            self.evictable.remove(&seq);
            self.cache.remove(seq);
            self.kept_bytes -= event.size;
        }
    }

    /// An event the store can no longer read leaves history, with what is
    /// older in its topics, and stops being a state: a client that needs it
    /// is told with a `reset` that it missed it, instead of being dropped
    /// each time its replay reaches it.
    pub fn drop_unreadable(&mut self, seq: u64) {
        let Some(event) = self.kept.get(&seq).cloned() else {
            return;
        };
        let was_state = !self.evictable.contains(&seq);
        for name in &event.topics {
            while self
                .topics
                .get(name)
                .is_some_and(|t| t.history.front().is_some_and(|e| e.seq <= seq))
            {
                self.trim_oldest(name);
            }
            if let Some(topic) = self.topics.get_mut(name)
                && topic.retained.as_ref().is_some_and(|r| r.seq == seq)
            {
                topic.retained = None;
            }
        }
        if !self.kept.contains_key(&seq) {
            // Released by the trims: it was no state.
            return;
        }
        if was_state {
            self.state_bytes -= event.size;
        }
        self.release(&event);
    }

    /// Drops a topic's history, state and end, as if nothing had been
    /// published to it (a durable stream at its URL was created or went):
    /// the next event on it starts afresh, under ids it may have used.
    pub fn clear_topic(&mut self, name: &str) {
        while self.topics.get(name).is_some_and(|t| !t.history.is_empty()) {
            self.trim_oldest(name);
        }
        let Some(topic) = self.topics.get_mut(name) else {
            return;
        };
        topic.finished = false;
        if let Some(state) = topic.retained.take() {
            self.state_replaced(&state);
        }
        if self.topics.get(name).is_some_and(Topic::is_idle) {
            self.forget(name);
        }
    }

    /// Forgets a topic that has nothing left: no history, no subscribers.
    pub fn forget(&mut self, name: &str) {
        let Some(topic) = self.topics.remove(name) else {
            return;
        };
        self.forgotten_up_to = self.forgotten_up_to.max(topic.trimmed_up_to);
        if let Some(pending) = &mut self.pending {
            pending.trimmed.remove(name);
            pending.forgotten_topics.push(name.to_owned());
        }
        if let Some(state) = topic.retained {
            self.state_replaced(&state);
        }
    }

    /// Takes the history of `fresh` (just loaded from the store) in place of
    /// this one's; connections, replays and positions stay. Only when no
    /// subscriber is registered (a resync ends them all first).
    pub fn replace_history(&mut self, fresh: State) {
        debug_assert!(self.subscribers.is_empty());
        let State {
            last_seq,
            applied_seq,
            topics,
            directory,
            ids,
            pending_final,
            forgotten_up_to,
            kept,
            kept_bytes,
            cache,
            evictable,
            state_bytes,
            pending,
            ..
        } = fresh;
        self.last_seq = last_seq;
        self.applied_seq = applied_seq;
        self.topics = topics;
        self.directory = directory;
        self.ids = ids;
        self.pending_final = pending_final;
        self.forgotten_up_to = forgotten_up_to;
        self.kept = kept;
        self.kept_bytes = kept_bytes;
        self.cache = cache;
        self.evictable = evictable;
        self.state_bytes = state_bytes;
        self.pending = pending;
    }

    /// A stream the hub has let go of gets `drain_timeout` to deliver its
    /// last bytes before its connection is reset.
    pub fn watch_ending(&mut self, stream: super::queue::Watch) {
        let deadline = std::time::Instant::now() + self.drain_timeout;
        self.ending.push((deadline, stream));
    }

    pub fn remove_subscriber(&mut self, id: SubId) -> Option<Subscriber> {
        let sub = self.subscribers.remove(&id)?;
        // (A stream still replaying is watched once its replay is sent.)
        if !sub.queue.is_closed() && !self.replays.contains_key(&id) {
            self.watch_ending(sub.queue.watch());
        }
        for name in sub.selectors.iter().filter_map(Selector::exact) {
            let idle = self.topics.get_mut(name).is_some_and(|topic| {
                if let Some(at) = topic.subscribers.iter().position(|s| *s == id) {
                    topic.subscribers.swap_remove(at);
                }
                topic.is_idle()
            });
            // A topic only subscribers ever named leaves with them.
            if idle {
                self.forget(name);
            }
        }
        self.wildcard.remove(&id);
        self.unclaimed.remove(&id);
        self.unsent_claims.remove(&id);
        if let Some(client_id) = &sub.client_id
            && self.clients.get(client_id) == Some(&id)
        {
            self.clients.remove(client_id);
        }
        Some(sub)
    }
}
