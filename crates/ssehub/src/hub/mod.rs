//! The hub: topics, event ids, subscriptions, fan-out and retention.
//!
//! No HTTP here. Everything that must be ordered — assigning an id, appending
//! to history, handing the event to subscribers, registering a subscriber with
//! its history snapshot — happens under one lock. That single order is what
//! makes ids increase along every stream (I1) and leaves no gap or duplicate
//! between a subscriber's history and its live events (I2). The lock is held
//! only for memory operations: delivery is a non-blocking push into each
//! subscriber's bounded queue, and a full queue drops that subscriber (I5).
//!
//! With a durable store a publish takes two steps: its id is assigned under
//! the lock, then the committer writes it with everything else that arrived
//! meanwhile (one fsync for the group) and only then adds it to history,
//! fans it out and acknowledges it. Subscribers never see an event that a
//! crash could take back, and ids are never reused.
//!
//! The rooms: [`publish`](Publish) (what a publisher sends), `subscribe`
//! (the subscribe path, step by step), `clock` (heartbeats, lifetimes,
//! retention by age), `commit` (group commit), `state` (what the lock
//! guards), `kept` (what memory holds of history), `replay` (history sent
//! in pieces), `queue` (a subscriber's queue), `selector` (topic selectors).

mod acks;
mod clock;
mod cluster;
mod commit;
mod directory;
pub mod ids;
mod kept;
pub mod measures;
mod publish;
pub mod queue;
mod replay;
mod selector;
mod state;
mod stream_topic;
mod subscribe;
mod subscription;
mod template;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};

use queue::TrySendError;

pub use crate::event::Event;
pub use publish::{
    MERCURE_TYPE, Publish, PublishError, RESERVED_ID_PREFIX, TopicLimits, is_invisible,
    validate_topic,
};
pub use replay::{PIECE_BYTES, Piece, Replay};
pub use selector::{Part, Selector, SelectorError};
pub use stream_topic::StreamCommit;
pub use subscription::{
    Registration, Subscribe, SubscribeError, Subscription, address_group, check_client_id,
};

use crate::frames;
use crate::store::{MemoryStore, Store, StoreError, StreamWrite};
use state::{Pending, State, SubId, Subscriber};

/// Topics of per-client channels start with this; `client_id=X` on subscribe
/// adds the topic `urn:ssehub:client:X`, which only that connection may see.
pub const CLIENT_TOPIC_PREFIX: &str = "urn:ssehub:client:";

/// The topic of a client's channel.
pub fn client_topic(client_id: &str) -> String {
    format!("{CLIENT_TOPIC_PREFIX}{client_id}")
}

/// How the hub behaves; every value has a documented default in the config.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Events kept per topic.
    pub history_size: usize,
    /// How long events are kept; also how long an idle topic (no events, no
    /// subscribers) keeps its retained state.
    pub history_ttl: Duration,
    /// Events queued per connection before it counts as slow and is dropped.
    pub queue_size: usize,
    /// Total bytes of stored events (payloads, ids, topics); the oldest go
    /// first when it is exceeded.
    pub history_max_bytes: usize,
    /// Bytes of the newest events kept whole in memory, so that replays of
    /// recent history need not read the store. (With a store that is not
    /// durable, memory is where history is: all of it is kept.)
    pub history_cache: usize,
    /// Topic count and length limits.
    pub limits: TopicLimits,
    /// A heartbeat comment goes to a stream that has been quiet this long.
    pub heartbeat: Duration,
    /// Streams end after this long (clients reconnect and resume).
    pub max_lifetime: Option<Duration>,
    /// Reconnection delay suggested to clients in a stream's last words.
    pub retry: Duration,
    /// The window over which streams the hub ends together (at shutdown, or
    /// at the maximum lifetime of streams opened together) are told to come
    /// back, each at its own point in it, so they do not all reconnect in
    /// the same second.
    pub reconnect_spread: Duration,
    /// How long a stream the hub ends may take to deliver its last bytes
    /// before its connection is reset (a reader that does not read).
    pub drain_timeout: Duration,
    /// Events waiting to be replayed across all streams; a subscription
    /// that would exceed it is refused while others replay.
    pub max_replay: usize,
    /// Client ids whose acknowledged position is kept.
    pub max_acks: usize,
    /// How the hub writes the ids it gives.
    pub event_ids: ids::EventIds,
}

/// Counters and sizes, as `GET /v1/stats` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Open subscriber streams.
    pub connections: u64,
    /// Topics the hub knows: with history, a retained state or subscribers.
    pub topics: u64,
    /// Topic selectors across all open streams.
    pub subscriptions: u64,
    /// Connections with a client id.
    pub clients: u64,
    /// Events published since start.
    pub published: u64,
    /// Events handed to subscriber queues since start.
    pub delivered: u64,
    /// Subscribers dropped because they did not read fast enough.
    pub dropped_slow: u64,
    /// Streams opened since start.
    pub opened: u64,
    /// Events put into replays, to catch up streams that resumed or
    /// started from an earlier point, since start.
    pub replayed: u64,
    /// Events held in history across topics (an event with several topics
    /// counts once per topic).
    pub history_events: u64,
    /// Events the store holds (in a history or as a retained state).
    pub stored_events: u64,
    /// Their size as counted against `--history-max-bytes`.
    pub stored_bytes: u64,
    /// Bytes of the newest events held whole in memory (`--history-cache`).
    pub cached_bytes: u64,
    /// Events waiting to be replayed to streams that are catching up.
    pub replay_backlog: u64,
}

/// One connected client, as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientInfo {
    /// The id the client chose.
    pub client_id: String,
    /// Its selectors, as given.
    pub topics: Vec<String>,
    /// Connection time, RFC 3339.
    pub connected_at: String,
    /// Its address, when known.
    pub remote_addr: Option<String>,
}

/// The hub. Cheap to share behind an `Arc`.
pub struct Hub {
    state: Mutex<State>,
    config: HubConfig,
    /// `retry: N`, the first bytes of every stream.
    retry_hint: Bytes,
    store: Arc<dyn Store>,
    /// To the committer; `None` when the store is not durable and events are
    /// applied at once.
    commits: Option<mpsc::UnboundedSender<commit::Commit>>,
    /// Wakes the committer to write pending deletions without new events.
    flush: Arc<Notify>,
    /// Told by the committer after each write.
    written: Arc<Notify>,
    /// Why the last write to the store failed, until one succeeds.
    store_failure: Mutex<Option<String>>,
    /// As a node of a cluster: the shared log it follows.
    cluster: Option<cluster::Cluster>,
    /// Lets one subscription with a template or `*` register at a time
    /// (see [`Hub::subscribe_async`]).
    wildcard_gate: tokio::sync::Semaphore,
    /// How many wait for it.
    wildcard_waiting: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    dropped_slow: AtomicU64,
    connections: AtomicU64,
    opened: AtomicU64,
    /// Latencies and batch sizes, for `/metrics`.
    measures: measures::Measures,
    /// Seeds where each stream falls in `--reconnect-spread`.
    spread_seed: std::hash::RandomState,
}

impl Hub {
    /// A hub with in-memory history only. Call it inside a tokio runtime.
    pub fn new(config: HubConfig) -> Arc<Hub> {
        Hub::open(config, Arc::new(MemoryStore)).expect("the memory store cannot fail")
    }

    /// A hub over a store: what the store holds is loaded back, ids continue
    /// after the highest ever assigned, and retention is applied at once.
    /// It starts the hub's clock and, with a durable store, its committer:
    /// call it inside a tokio runtime. Both stop when the hub is dropped.
    pub fn open(config: HubConfig, store: Arc<dyn Store>) -> Result<Arc<Hub>, StoreError> {
        let hub = Hub::unclocked(config, store)?;
        clock::start(&hub);
        Ok(hub)
    }

    /// A node of a cluster: its history is the shared log's, loaded now and
    /// followed from then on; its publishes go to the log. Call it inside a
    /// tokio runtime (it blocks while it loads the log).
    pub fn open_cluster(
        config: HubConfig,
        log: Arc<crate::store::RedisLog>,
    ) -> Result<Arc<Hub>, StoreError> {
        let cluster = cluster::Cluster::new(log.clone());
        let hub = Hub::build(config, log, Some(cluster))?;
        cluster::start(&hub);
        clock::start(&hub);
        Ok(hub)
    }

    /// A hub whose clock is not running (the committer is), for tests that
    /// drive the clock by hand.
    fn unclocked(config: HubConfig, store: Arc<dyn Store>) -> Result<Arc<Hub>, StoreError> {
        Hub::build(config, store, None)
    }

    fn build(
        config: HubConfig,
        store: Arc<dyn Store>,
        cluster: Option<cluster::Cluster>,
    ) -> Result<Arc<Hub>, StoreError> {
        let durable = store.is_durable();
        let (commits, queue) = if durable {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let hub = Arc::new(Hub {
            state: Mutex::new(State::default()),
            retry_hint: frames::retry_hint(config.retry),
            config,
            store,
            commits,
            flush: Arc::new(Notify::new()),
            written: Arc::new(Notify::new()),
            store_failure: Mutex::new(None),
            cluster,
            wildcard_gate: tokio::sync::Semaphore::new(1),
            wildcard_waiting: AtomicU64::new(0),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped_slow: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            measures: measures::Measures::default(),
            spread_seed: std::hash::RandomState::new(),
        });
        hub.restore()?;
        if let Some(queue) = queue {
            let signals = (hub.flush.clone(), hub.written.clone());
            tokio::spawn(commit::run(Arc::downgrade(&hub), queue, signals));
        }
        Ok(hub)
    }

    /// Loads what the store holds, one event at a time: memory keeps their
    /// records and the newest whole, never the whole history at once.
    fn restore(&self) -> Result<(), StoreError> {
        let mut st = self.state();
        self.load_into(&mut st)?;
        drop(st);
        self.sweep(SystemTime::now());
        Ok(())
    }

    /// What the store holds, into `st`, which holds no history yet.
    fn load_into(&self, st: &mut State) -> Result<(), StoreError> {
        st.drain_timeout = self.config.drain_timeout;
        st.replay_share = (self.config.max_replay / replay::SHARE_PER_ADDRESS).max(1);
        if self.store.is_durable() {
            st.pending = Some(Pending::default());
            st.cache = kept::Cache::with_budget(self.config.history_cache);
        } else {
            st.cache = kept::Cache::with_budget(usize::MAX);
        }
        let recovered = self.store.load(&mut |stored| {
            let event = Arc::new(Event::from_stored(stored));
            st.add_to_history(
                &event,
                self.config.history_size,
                self.config.history_max_bytes,
            );
        })?;
        let events = recovered.events;
        for (name, up_to) in recovered.trimmed {
            if st.topics.contains_key(&name) {
                while st.topics[&name]
                    .history
                    .front()
                    .is_some_and(|e| e.seq <= up_to)
                {
                    st.trim_oldest(&name);
                }
                let topic = st.topics.get_mut(&name).expect("present");
                topic.trimmed_up_to = topic.trimmed_up_to.max(up_to);
            } else {
                st.forgotten_up_to = st.forgotten_up_to.max(up_to);
            }
        }
        st.last_seq = recovered.last_seq.max(st.applied_seq);
        st.applied_seq = st.last_seq;
        st.forgotten_up_to = st.forgotten_up_to.max(recovered.forgotten_up_to);
        // What was forgotten before a topic (re)appeared is not stored per
        // topic: what was forgotten before its oldest event counts for it
        // (a resume from before may have missed events of a topic of that
        // name, I3), as it does for a topic that is forgotten still.
        let forgotten = st.forgotten_up_to;
        for topic in st.topics.values_mut() {
            let oldest = topic.history.front().map(|e| e.seq);
            let oldest = oldest
                .into_iter()
                .chain(topic.retained.as_ref().map(|r| r.seq));
            let before = oldest.min().map_or(forgotten, |seq| forgotten.min(seq - 1));
            // What was lost was lost from every topic, whatever it holds.
            topic.known_from = topic.known_from.max(before).max(recovered.lost_up_to);
        }
        st.forgotten_up_to = st.forgotten_up_to.max(recovered.lost_up_to);
        self.restore_acks(st, recovered.acks);
        if events > 0 {
            tracing::info!(
                events,
                topics = st.topics.len(),
                last_id = st.last_seq,
                "history restored"
            );
        }
        Ok(())
    }

    /// Why the store cannot be written to, if its last write failed (the
    /// hub tries again every second): publishes are refused meanwhile.
    pub fn store_failure(&self) -> Option<String> {
        if let Some(why) = self.cluster.as_ref().and_then(cluster::Cluster::degraded) {
            return Some(why);
        }
        self.store_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// As a node of a cluster: the shared log.
    pub fn shared_log(&self) -> Option<&Arc<crate::store::RedisLog>> {
        self.cluster.as_ref().map(|cluster| &cluster.log)
    }

    /// As a node of a cluster: the seq of the newest event of the shared
    /// log it applied.
    pub fn log_position(&self) -> Option<u64> {
        self.cluster.as_ref()?;
        Some(self.state().applied_seq)
    }

    /// Whether this hub is a node of a cluster.
    pub fn is_node(&self) -> bool {
        self.cluster.is_some()
    }

    /// As a node of a cluster: why the shared log cannot be followed, while
    /// it cannot.
    pub fn degraded(&self) -> Option<String> {
        self.cluster.as_ref().and_then(cluster::Cluster::degraded)
    }

    fn store_failed(&self, error: Option<&StoreError>) {
        *self
            .store_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error.map(ToString::to_string);
    }

    /// The configuration in force.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; keep serving rather than
        // turning every later request into a panic too.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes an event: assigns its id, makes it durable (with a durable
    /// store), appends it to the history of each of its topics, and hands it
    /// to every subscriber that selects it. Returns once all of that is done.
    pub async fn publish(&self, publish: Publish) -> Result<Arc<Event>, PublishError> {
        let started = Instant::now();
        publish.validate(self.config.limits)?;
        let published = if self.cluster.is_some() {
            self.publish_to_log(publish).await
        } else {
            self.publish_here(publish, &[], Vec::new()).await
        };
        if published.is_ok() {
            let took = started.elapsed().as_secs_f64();
            self.measures.publish_seconds.observe(took);
        }
        published
    }

    /// The latencies and batch sizes the hub measures.
    pub fn measures(&self) -> &measures::Measures {
        &self.measures
    }

    /// A publish on a single hub: ordered, committed (with `streams`, a
    /// durable stream's change, in the same write, after `clear` of its
    /// topic), applied.
    async fn publish_here(
        &self,
        publish: Publish,
        clear: &[String],
        streams: Vec<StreamWrite>,
    ) -> Result<Arc<Event>, PublishError> {
        let now = SystemTime::now();
        let (event, committed) = {
            let mut st = self.state();
            for topic in clear {
                st.clear_topic(topic);
            }
            if let Some(topic) = publish.topics.iter().find(|t| {
                st.pending_final.contains(*t) || st.topics.get(*t).is_some_and(|t| t.finished)
            }) {
                return Err(PublishError::TopicFinished(topic.clone()));
            }
            if let Some(id) = &publish.id
                && st.ids.contains_key(id)
            {
                return Err(PublishError::DuplicateId(id.clone()));
            }
            let seq = st.last_seq + 1;
            let id = publish
                .id
                .unwrap_or_else(|| self.config.event_ids.name(seq));
            let wire = frames::event(
                &id,
                publish.event_type.as_deref(),
                &publish.data,
                publish.retry,
            )
            .expect("fields were validated");
            let event = Arc::new(Event {
                seq,
                id,
                topics: publish.topics,
                event_type: publish.event_type,
                data: publish.data,
                retry: publish.retry,
                private: publish.private,
                retain: publish.retain || publish.is_final,
                is_final: publish.is_final,
                published_at: now,
                wire,
            });
            self.check_room(&st, kept::footprint(&event), event.retain, &event.topics)?;
            st.last_seq = seq;
            let Some(commits) = &self.commits else {
                self.apply(&mut st, &event);
                return Ok(event);
            };
            // Reserve the id and close finished topics now, so publishes that
            // arrive while this one commits see them.
            if !ids::is_hub_id(&event.id) {
                st.ids.insert(event.id.clone(), seq);
            }
            if event.is_final {
                st.pending_final.extend(event.topics.iter().cloned());
            }
            let (done, committed) = oneshot::channel();
            commits
                .send(commit::Commit {
                    event: Some(event.clone()),
                    streams,
                    done,
                })
                .map_err(|_| PublishError::Unavailable("the hub is shutting down".into()))?;
            (event, committed)
        };
        commit::outcome(committed).await.map(|()| event)
    }

    /// Whether history has room for `event`: no event larger than the whole
    /// size limit is taken, nor a state for which the current states leave
    /// no room (the limit never evicts a state).
    fn check_room(
        &self,
        st: &State,
        size: usize,
        retain: bool,
        topics: &[String],
    ) -> Result<(), PublishError> {
        let limit = self.config.history_max_bytes;
        if size > limit {
            return Err(PublishError::LargerThanHistory { size, limit });
        }
        if retain && st.state_bytes - st.states_replaced_by(topics) + size > limit {
            return Err(PublishError::HistoryFull { limit });
        }
        Ok(())
    }

    /// Adds a committed event to history and delivers it.
    fn apply(&self, st: &mut State, event: &Arc<Event>) {
        st.add_to_history(
            event,
            self.config.history_size,
            self.config.history_max_bytes,
        );
        self.published.fetch_add(1, Relaxed);
        self.fan_out(st, event);
        if event.is_final {
            self.complete(st, event);
        }
    }

    /// Sends a private event of the hub's own (Mercure's subscription
    /// events) to the subscribers of `topic` allowed to see it, live only:
    /// it is not stored, kept in history or replayed, and takes no place in
    /// the order. Its id is the hub's position (the newest event's id, as
    /// the position marker has it): a client that reconnects after it
    /// resumes exactly where it was. So a flood of connections, whose
    /// subscription events these are, can neither fill the store nor push
    /// anyone's events out of history.
    pub fn announce(&self, topic: String, event_type: &str, data: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.tell(crate::store::Control::Announce {
                topic: topic.clone(),
                event_type: event_type.to_owned(),
                data: data.to_owned(),
            });
        }
        let mut st = self.state();
        self.announce_here(&mut st, topic, event_type, data);
    }

    /// [`Hub::announce`] to this hub's own subscribers.
    fn announce_here(&self, st: &mut State, topic: String, event_type: &str, data: &str) {
        let id = (st.applied_seq > 0).then(|| self.config.event_ids.name(st.applied_seq));
        let wire = sse_codec::Event {
            id: id.as_deref(),
            event_type: Some(event_type),
            data: Some(data),
            retry: None,
            comment: None,
        }
        .encode()
        .expect("the hub's own fields are valid");
        let event = Arc::new(Event {
            seq: st.applied_seq,
            id: id.unwrap_or_default(),
            topics: vec![topic],
            event_type: Some(event_type.to_owned()),
            data: String::new(),
            retry: None,
            private: true,
            retain: false,
            is_final: false,
            published_at: SystemTime::now(),
            wire,
        });
        self.fan_out(st, &event);
    }

    /// A commit failed: release what the events reserved.
    fn abandon(&self, st: &mut State, event: &Event) {
        if st.ids.get(&event.id) == Some(&event.seq) {
            st.ids.remove(&event.id);
        }
        if event.is_final {
            for topic in &event.topics {
                st.pending_final.remove(topic);
            }
        }
    }

    fn fan_out(&self, st: &mut State, event: &Arc<Event>) {
        let mut targets: Vec<SubId> = event
            .topics
            .iter()
            .filter_map(|t| st.topics.get(t))
            .flat_map(|t| t.subscribers.iter().copied())
            .collect();
        targets.extend(
            st.wildcard
                .iter()
                .copied()
                .filter(|id| st.subscribers[id].selects(event)),
        );
        if event.topics.len() > 1 || !st.wildcard.is_empty() {
            targets.sort_unstable();
            targets.dedup();
        }
        let mut slow = Vec::new();
        for id in targets {
            let sub = &st.subscribers[&id];
            if sub.may_see(event) {
                self.send(sub, id, event.wire.clone(), &mut slow);
            }
        }
        self.drop_slow(st, slow);
    }

    fn send(&self, sub: &Subscriber, id: SubId, bytes: Bytes, slow: &mut Vec<SubId>) {
        match sub.queue.try_send(bytes) {
            Ok(()) => {
                self.delivered.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full) => slow.push(id),
            // The stream is gone; its guard is about to unregister it.
            Err(TrySendError::Closed) => {}
        }
    }

    fn drop_slow(&self, st: &mut State, slow: Vec<SubId>) {
        for id in slow {
            if let Some(sub) = st.remove_subscriber(id) {
                tracing::debug!(subscriber = id, "dropping a subscriber that does not read");
                self.dropped_slow.fetch_add(1, Relaxed);
                sub.queue.kill();
            }
        }
    }

    /// After a final event: tell every subscriber of its topics, and end the
    /// streams that have no open topic left.
    fn complete(&self, st: &mut State, event: &Event) {
        let mut slow = Vec::new();
        for topic in &event.topics {
            let frame = frames::complete(topic);
            let exact = st
                .topics
                .get_mut(topic)
                .map(|t| std::mem::take(&mut t.subscribers))
                .unwrap_or_default();
            for id in exact {
                let Some(sub) = st.subscribers.get_mut(&id) else {
                    continue;
                };
                sub.open_topics = sub.open_topics.saturating_sub(1);
                let ends = sub.open_topics == 0 && !sub.wildcard;
                self.send(&st.subscribers[&id], id, frame.clone(), &mut slow);
                if ends {
                    // Dropping the queue's sender ends the stream once the
                    // writer has sent what is queued, `complete` included.
                    st.remove_subscriber(id);
                }
            }
            let watching: Vec<SubId> = st
                .wildcard
                .iter()
                .copied()
                .filter(|id| {
                    st.subscribers[id]
                        .selectors
                        .iter()
                        .any(|s| s.matches(topic))
                })
                .collect();
            for id in watching {
                self.send(&st.subscribers[&id], id, frame.clone(), &mut slow);
            }
        }
        self.drop_slow(st, slow);
    }

    fn unsubscribe(&self, id: SubId) {
        self.state().remove_subscriber(id);
        self.connections.fetch_sub(1, Relaxed);
    }

    /// The id of the newest event the hub has sent out (as a hub id, which
    /// resumes after it), or `None` before the first.
    pub fn last_event_id(&self) -> Option<String> {
        let seq = self.state().applied_seq;
        (seq > 0).then(|| self.config.event_ids.name(seq))
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let st = self.state();
        Stats {
            connections: self.connections.load(Relaxed),
            topics: st.topics.len() as u64,
            subscriptions: st
                .subscribers
                .values()
                .map(|s| s.selectors.len() as u64)
                .sum(),
            clients: st.clients.len() as u64,
            published: self.published.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            dropped_slow: self.dropped_slow.load(Relaxed),
            opened: self.opened.load(Relaxed),
            replayed: st.replayed,
            history_events: st.topics.values().map(|t| t.history.len() as u64).sum(),
            stored_events: st.kept.len() as u64,
            stored_bytes: st.kept_bytes as u64,
            cached_bytes: st.cache.bytes() as u64,
            replay_backlog: st.replay_backlog as u64,
        }
    }

    /// The events in the history of the topics `selectors` cover, in id
    /// order: what a subscriber resuming from `earliest` is replayed, private
    /// events included (the caller is the backend, not a subscriber). For
    /// a backend that embeds the hub; over HTTP, subscribe with
    /// `Last-Event-ID: earliest`. Events no longer in the hub's cache are
    /// read from the store, so this blocks: call it at startup or off the
    /// async threads. (An event that left history meanwhile is left out.)
    pub fn history(&self, selectors: &[Selector]) -> Result<Vec<Arc<Event>>, StoreError> {
        let mut found: kept::Found = {
            let prematch = self.prematch(selectors);
            let st = self.state();
            let topics = subscribe::Topics::select(&st, selectors, prematch);
            let everything = [Selector::All];
            subscribe::Backlog::collect(&st, &topics, subscribe::Resume::EARLIEST, &everything)
                .events
                .into_iter()
                .map(|kept| (kept.seq, st.cache.get(kept.seq).cloned()))
                .collect()
        };
        kept::read_missing(&*self.store, &mut found)?;
        Ok(found.into_iter().filter_map(|(_, event)| event).collect())
    }

    /// How many open streams a public event published to `topic` now would
    /// reach: those naming it, and those whose template or `*` matches it.
    /// For a backend that embeds the hub, to publish only while someone
    /// listens.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        let st = self.state();
        let exact = st
            .topics
            .get(topic)
            .map(|t| &t.subscribers[..])
            .unwrap_or_default();
        let by_wildcard = st
            .wildcard
            .iter()
            .filter(|id| !exact.contains(id))
            .filter(|id| {
                st.subscribers[id]
                    .selectors
                    .iter()
                    .any(|s| s.matches(topic))
            })
            .count();
        exact.len() + by_wildcard
    }

    /// Connected clients, by client id.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let st = self.state();
        let mut clients: Vec<ClientInfo> = st
            .clients
            .iter()
            .map(|(client_id, id)| {
                let sub = &st.subscribers[id];
                let own = client_topic(client_id);
                ClientInfo {
                    client_id: client_id.clone(),
                    topics: sub
                        .selectors
                        .iter()
                        .map(ToString::to_string)
                        .filter(|t| *t != own)
                        .collect(),
                    connected_at: humantime::format_rfc3339_seconds(sub.connected_at).to_string(),
                    // Port 0: an address a trusted proxy forwarded, whose
                    // port the hub does not know.
                    remote_addr: sub.remote.map(|a| match a.port() {
                        0 => a.ip().to_string(),
                        _ => a.to_string(),
                    }),
                }
            })
            .collect();
        clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        clients
    }

    /// Whether a client with this id is connected.
    pub fn is_connected(&self, client_id: &str) -> bool {
        self.state().clients.contains_key(client_id)
    }

    /// Writes what waits for the next commit (acknowledged positions,
    /// deletions) now, for a shutdown; waits at most `limit`.
    pub async fn write_pending(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.state().pending.as_ref().is_some_and(|p| !p.is_empty()) {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            self.flush.notify_one();
            if tokio::time::timeout_at(deadline, written).await.is_err() {
                return;
            }
        }
    }

    /// Ends every stream after what is queued for it, with a word that the hub
    /// is shutting down, and any stream opened from now on at once.
    pub fn shut_down_streams(&self) {
        let mut st = self.state();
        st.shutting_down = true;
        let spread = self.config.reconnect_spread;
        let same_for_all = frames::last_words(frames::StreamEnd::ShuttingDown, self.config.retry);
        for (id, sub) in &st.subscribers {
            // Each its own delay in [retry, retry + spread]: a restart of a
            // hub holding 19,000 streams must not bring them all back in
            // the same second (docs/BENCHMARKS.md#reconnect-storm).
            let words = if spread.is_zero() {
                same_for_all.clone()
            } else {
                let retry = self.config.retry + self.spread_point(*id, spread);
                frames::last_words(frames::StreamEnd::ShuttingDown, retry)
            };
            sub.queue.end(words);
        }
    }

    /// Ends a client's stream (it may reconnect). False if it is not
    /// connected (here: in a cluster, the other nodes are told, and end it
    /// if it is connected there).
    pub fn disconnect(&self, client_id: &str) -> bool {
        if let Some(cluster) = &self.cluster {
            cluster.tell(crate::store::Control::Disconnect {
                client: client_id.to_owned(),
            });
        }
        let mut st = self.state();
        match st.clients.get(client_id).copied() {
            Some(id) => st.remove_subscriber(id).is_some(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// The clock is driven by hand in these tests.
    fn hub(history_size: usize) -> Arc<Hub> {
        unclocked(config(history_size))
    }

    fn unclocked(config: HubConfig) -> Arc<Hub> {
        Hub::unclocked(config, Arc::new(MemoryStore)).unwrap()
    }

    fn config(history_size: usize) -> HubConfig {
        HubConfig {
            history_size,
            history_ttl: Duration::from_secs(60),
            queue_size: 8,
            history_max_bytes: 1 << 20,
            history_cache: 1 << 20,
            limits: TopicLimits {
                max_topics: 8,
                max_topic_length: 64,
            },
            heartbeat: Duration::from_secs(15),
            max_lifetime: None,
            retry: Duration::from_secs(3),
            reconnect_spread: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
            max_replay: 1_000_000,
            max_acks: 1000,
            event_ids: ids::EventIds::Sequential,
        }
    }

    #[tokio::test]
    async fn streams_opened_together_reach_their_lifetime_spread_over_the_window() {
        let hub = unclocked(HubConfig {
            max_lifetime: Some(Duration::from_secs(600)),
            reconnect_spread: Duration::from_secs(20),
            ..config(10)
        });
        let opened = Instant::now();
        let streams: Vec<_> = (0..50)
            .map(|_| hub.subscribe(subscribe(&["t"], None)).unwrap())
            .collect();
        let ends: Vec<Duration> = hub
            .state()
            .subscribers
            .values()
            .map(|s| s.ends.unwrap().0.duration_since(opened))
            .collect();
        // Each ends up to 20 s early (at most a tenth of the lifetime), at
        // its own point: not all within the same second.
        assert!(
            ends.iter()
                .all(|e| *e > Duration::from_secs(579) && *e <= Duration::from_secs(600))
        );
        let mut seconds: Vec<u64> = ends.iter().map(Duration::as_secs).collect();
        seconds.sort_unstable();
        seconds.dedup();
        assert!(seconds.len() >= 10, "{ends:?}");
        drop(streams);
    }

    #[tokio::test]
    async fn the_stream_clock_beats_quiet_streams_and_ends_them_at_their_deadline() {
        let hub = unclocked(HubConfig {
            heartbeat: Duration::from_secs(4),
            max_lifetime: Some(Duration::from_secs(60)),
            ..config(10)
        });
        assert_eq!(hub.stream_tick(), Duration::from_secs(1));
        let start = Instant::now();
        let mut quiet = hub.subscribe(subscribe(&["q"], None)).unwrap();
        let mut expiring = hub
            .subscribe(Subscribe {
                expires_at: Some(SystemTime::now() + Duration::from_secs(10)),
                ..subscribe(&["e"], None)
            })
            .unwrap();
        quiet.read_now();
        expiring.read_now();
        let q = &mut quiet.events;
        let e = &mut expiring.events;
        // A heartbeat after four quiet ticks (the heartbeat interval)...
        for _ in 0..3 {
            hub.tick_streams(start);
        }
        assert_eq!(q.try_recv(), Err(queue::TryRecvError::Empty));
        hub.tick_streams(start);
        assert_eq!(q.try_recv().unwrap(), ":\n");
        assert_eq!(e.try_recv().unwrap(), ":\n");
        // ...and an event restarts the count.
        hub.publish(publish(&["q"], "x")).await.unwrap();
        for _ in 0..3 {
            hub.tick_streams(start);
        }
        assert!(q.try_recv().unwrap().ends_with(b"data: x\n\n"));
        assert_eq!(q.try_recv(), Err(queue::TryRecvError::Empty));
        // The token's expiry comes first for one, the lifetime for the other;
        // each stream ends with its reason, after which nothing more comes.
        hub.tick_streams(start + Duration::from_secs(11));
        let words = e.try_recv().unwrap();
        assert_eq!(
            words,
            "retry: 3000\n: the token has expired; reconnect with a fresh one\n"
        );
        assert_eq!(e.try_recv(), Err(queue::TryRecvError::Disconnected));
        assert_eq!(hub.stats().subscriptions, 1);
        // (The same tick was the fourth quiet one for the other.)
        assert_eq!(q.try_recv().unwrap(), ":\n");
        hub.tick_streams(start + Duration::from_secs(61));
        let words = q.try_recv().unwrap();
        assert!(words.ends_with(b": maximum connection lifetime reached; reconnect to resume\n"));
        assert_eq!(q.try_recv(), Err(queue::TryRecvError::Disconnected));
        assert_eq!(hub.stats().subscriptions, 0);
    }

    fn publish(topics: &[&str], data: &str) -> Publish {
        Publish {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            data: data.into(),
            ..Publish::default()
        }
    }

    fn subscribe(topics: &[&str], last_event_id: Option<&str>) -> Subscribe {
        Subscribe {
            selectors: topics.iter().map(|t| Selector::parse(t).unwrap()).collect(),
            last_event_id: last_event_id.map(str::to_owned),
            ..Subscribe::default()
        }
    }

    /// What a browser would see from the first bytes of a subscription.
    fn parsed(subscription: &mut Subscription) -> (Vec<(String, String, String)>, String) {
        let mut parser = sse_codec::Parser::new();
        let events = parser
            .feed(&subscription.read_now())
            .into_iter()
            .filter_map(|item| match item {
                sse_codec::Item::Event(e) => Some((e.event_type, e.data, e.last_event_id)),
                sse_codec::Item::Retry(_) => None,
            })
            .collect();
        (events, parser.last_event_id().to_owned())
    }

    #[tokio::test]
    async fn retained_states_of_several_topics_come_in_id_order() {
        let hub = hub(10);
        let mut b = publish(&["b"], "b-state");
        b.retain = true;
        hub.publish(b).await.unwrap();
        let mut a = publish(&["a"], "a-state");
        a.retain = true;
        hub.publish(a).await.unwrap();
        hub.publish(publish(&["c"], "later")).await.unwrap();
        let mut sub = hub.subscribe(subscribe(&["a", "b"], None)).unwrap();
        let (events, position) = parsed(&mut sub);
        let data: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(data, ["b-state", "a-state"]);
        // The marker moves the position past the unrelated event.
        assert_eq!(position, "#3");
    }

    #[tokio::test]
    async fn publisher_ids_leave_the_index_when_trimmed_from_every_topic() {
        let hub = hub(1);
        let mut first = publish(&["x", "y"], "1");
        first.id = Some("mine".into());
        hub.publish(first).await.unwrap();
        hub.publish(publish(&["x"], "2")).await.unwrap();
        // Still held by y: the id stays usable and resumable.
        assert!(hub.state().ids.contains_key("mine"));
        hub.publish(publish(&["y"], "3")).await.unwrap();
        assert!(!hub.state().ids.contains_key("mine"));
        // Reusable once gone.
        let mut again = publish(&["z"], "4");
        again.id = Some("mine".into());
        assert!(hub.publish(again).await.is_ok());
    }

    #[tokio::test]
    async fn duplicate_publisher_ids_are_refused_while_in_history() {
        let hub = hub(10);
        let mut event = publish(&["x"], "1");
        event.id = Some("dup".into());
        hub.publish(event.clone()).await.unwrap();
        assert_eq!(
            hub.publish(event).await.unwrap_err(),
            PublishError::DuplicateId("dup".into())
        );
        assert_eq!(hub.stats().published, 1);
    }

    #[tokio::test]
    async fn private_events_reach_only_authorized_subscribers() {
        let hub = hub(10);
        let mut anonymous = hub.subscribe(subscribe(&["p"], None)).unwrap();
        let mut allowed = subscribe(&["p"], None);
        allowed.private = vec![Selector::parse("p").unwrap()];
        let mut allowed = hub.subscribe(allowed).unwrap();
        anonymous.read_now();
        allowed.read_now();
        let mut secret = publish(&["p"], "secret");
        secret.private = true;
        hub.publish(secret).await.unwrap();
        assert!(anonymous.events.try_recv().is_err());
        assert!(allowed.events.try_recv().is_ok());
        // Nor does history replay leak it.
        let mut replay = hub.subscribe(subscribe(&["p"], Some("earliest"))).unwrap();
        assert!(parsed(&mut replay).0.is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_drops_that_subscriber_only() {
        let hub = hub(100);
        let slow = hub.subscribe(subscribe(&["q"], None)).unwrap();
        let mut fast = hub.subscribe(subscribe(&["q"], None)).unwrap();
        fast.read_now();
        let mut fast_events = fast.events;
        for i in 0..9 {
            hub.publish(publish(&["q"], &i.to_string())).await.unwrap();
            fast_events.try_recv().unwrap();
        }
        assert_eq!(hub.stats().dropped_slow, 1);
        let mut slow_events = slow.events;
        // Its writer is told to close the connection, with nothing more to
        // write: a reader this slow may never read again.
        assert!(slow_events.is_killed());
        assert_eq!(
            slow_events.try_recv(),
            Err(queue::TryRecvError::Disconnected)
        );
    }

    #[tokio::test]
    async fn subscribing_only_to_finished_topics_ends_after_the_first_bytes() {
        let hub = hub(10);
        let mut last = publish(&["done"], "result");
        last.is_final = true;
        hub.publish(last).await.unwrap();
        let mut sub = hub.subscribe(subscribe(&["done"], None)).unwrap();
        let (events, _) = parsed(&mut sub);
        let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(kinds, ["message", "complete"]);
        assert_eq!(
            sub.events.try_recv(),
            Err(queue::TryRecvError::Disconnected)
        );
    }

    #[tokio::test]
    async fn a_stream_the_hub_ends_is_killed_if_its_last_bytes_are_not_read() {
        let hub = hub(10);
        let stalled = hub
            .subscribe(Subscribe {
                client_id: Some("stalled".into()),
                ..subscribe(&["s"], None)
            })
            .unwrap();
        let mut reading = hub
            .subscribe(Subscribe {
                client_id: Some("reading".into()),
                ..subscribe(&["s"], None)
            })
            .unwrap();
        assert!(hub.disconnect("stalled") && hub.disconnect("reading"));
        // One reads to the end of its stream: its writer goes away.
        reading.read_now();
        let mut events = reading.events;
        assert!(matches!(
            events.try_recv(),
            Err(queue::TryRecvError::Disconnected)
        ));
        drop(events);
        let later = Instant::now() + hub.config.drain_timeout + Duration::from_secs(1);
        hub.tick_streams(Instant::now());
        assert!(!stalled.events.is_killed());
        hub.tick_streams(later);
        assert!(stalled.events.is_killed());
        assert!(hub.state().ending.is_empty());
    }

    /// Publishes `count` events of `size` bytes to `topic`.
    async fn publish_many(hub: &Hub, topic: &str, count: usize, size: usize) {
        for i in 0..count {
            let data = format!("{i:>size$}");
            hub.publish(publish(&[topic], &data)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_replay_is_sent_in_bounded_pieces_and_holds_no_copy_of_history() {
        let hub = hub(100);
        publish_many(&hub, "r", 40, 10_000).await;
        let mut sub = hub.subscribe(subscribe(&["r"], Some("earliest"))).unwrap();
        assert_eq!(hub.stats().replay_backlog, 40);
        let replay = sub.replay.as_mut().unwrap();
        let Piece::Bytes(head) = replay.next_piece() else {
            panic!("the head comes first")
        };
        assert!(head.starts_with(b"retry: "));
        let mut pieces = Vec::new();
        while let Piece::Bytes(piece) = replay.next_piece() {
            assert!(piece.len() < PIECE_BYTES + 10_100, "{}", piece.len());
            pieces.push(piece);
        }
        assert!(pieces.len() >= 6, "{} pieces", pieces.len());
        let events = sse_codec::Parser::new().feed(&pieces.concat()).len();
        assert_eq!(events, 40);
        assert_eq!(hub.stats().replay_backlog, 0);
        assert!(hub.state().replays.is_empty());
    }

    /// A durable hub in a fresh directory, whose cache holds `cache` bytes.
    fn durable(name: &str, cache: usize) -> (Arc<Hub>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ssehub-hub-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::store::DurableStore::open(&dir).unwrap();
        let config = HubConfig {
            history_cache: cache,
            ..config(1000)
        };
        (Hub::unclocked(config, Arc::new(store)).unwrap(), dir)
    }

    fn data_of(bytes: &[u8]) -> Vec<String> {
        sse_codec::Parser::new()
            .feed(bytes)
            .into_iter()
            .filter_map(|item| match item {
                sse_codec::Item::Event(e) => Some(e.data),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_beyond_the_cache_is_replayed_from_the_store_exactly() {
        let (hub, dir) = durable("beyond-cache", 8 * 1024);
        for i in 0..200 {
            let mut event = publish(&["r"], &format!("{i}:{}", "x".repeat(1000)));
            // A private one among them, and states, read back like the rest.
            event.private = i == 7;
            event.retain = i % 50 == 0;
            hub.publish(event).await.unwrap();
        }
        let stats = hub.stats();
        assert!(stats.cached_bytes <= 8 * 1024, "{stats:?}");
        assert!(stats.cached_bytes > 0, "the newest are cached");
        let expected = |from: usize| -> Vec<String> {
            (from..200)
                .filter(|i| *i != 7)
                .map(|i| format!("{i}:{}", "x".repeat(1000)))
                .collect()
        };
        // By hand, and through the writer's poll (reads off the async
        // threads), from the start and from the middle.
        let mut sub = hub.subscribe(subscribe(&["r"], Some("earliest"))).unwrap();
        assert_eq!(data_of(&sub.read_now()), expected(0));
        let mut sub = hub.subscribe(subscribe(&["r"], Some("100"))).unwrap();
        let mut replay = sub.replay.take().unwrap();
        let mut bytes = Vec::new();
        loop {
            match std::future::poll_fn(|cx| replay.poll_piece(cx)).await {
                Piece::Bytes(piece) => bytes.extend_from_slice(&piece),
                Piece::Done => break,
                Piece::Dropped => panic!("dropped"),
            }
        }
        assert_eq!(data_of(&bytes), expected(100));
        // A fresh subscriber gets the state, read from the store too.
        let mut fresh = hub.subscribe(subscribe(&["r"], None)).unwrap();
        assert_eq!(data_of(&fresh.read_now()), expected(150)[..1]);
        assert_eq!(
            hub.history(&[Selector::parse("r").unwrap()]).unwrap().len(),
            200
        );
        assert_eq!(hub.stats().replay_backlog, 0);
        drop((sub, fresh, hub));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_wildcard_subscription_matches_only_new_topics_under_the_lock() {
        let hub = hub(10);
        for i in 0..3000 {
            hub.publish(publish(&[&format!("t/{i}")], "x"))
                .await
                .unwrap();
        }
        let selectors = [Selector::parse("t/{n}").unwrap()];
        let prematch = hub.prematch(&selectors).unwrap();
        // Meanwhile: a new topic, and an old one forgotten.
        hub.publish(publish(&["t/new"], "x")).await.unwrap();
        hub.state().forget("t/7");
        let st = hub.state();
        let topics = subscribe::Topics::select(&st, &selectors, Some(prematch));
        assert_eq!(topics.matched_under_lock, 1, "only t/new");
        let names: Vec<&str> = topics.all(&st).map(|(name, _)| name).collect();
        assert_eq!(names.len(), 3000);
        assert!(names.contains(&"t/new") && !names.contains(&"t/7"));
        drop(st);
        // Through the whole subscribe path: every topic's event, once.
        let mut sub = hub
            .subscribe(subscribe(&["t/{n}"], Some("earliest")))
            .unwrap();
        assert_eq!(data_of(&sub.read_now()).len(), 3000);
    }

    #[tokio::test]
    async fn a_replay_overtaken_by_retention_is_dropped_not_sent_with_a_gap() {
        let hub = hub(10);
        publish_many(&hub, "r", 10, 10).await;
        let mut sub = hub.subscribe(subscribe(&["r"], Some("earliest"))).unwrap();
        // Retention moves on before the reader gets to the replay.
        publish_many(&hub, "r", 5, 10).await;
        let replay = sub.replay.as_mut().unwrap();
        assert!(matches!(replay.next_piece(), Piece::Bytes(_)));
        assert!(matches!(replay.next_piece(), Piece::Dropped));
        assert!(sub.events.is_killed());
        let stats = hub.stats();
        assert_eq!((stats.dropped_slow, stats.replay_backlog), (1, 0));
        assert_eq!(stats.subscriptions, 0);
    }

    #[tokio::test]
    async fn a_replay_that_takes_nothing_is_dropped_by_the_clock() {
        let hub = hub(100);
        publish_many(&hub, "r", 50, 10).await;
        let stalled = hub.subscribe(subscribe(&["r"], Some("earliest"))).unwrap();
        let mut reading = hub.subscribe(subscribe(&["r"], Some("earliest"))).unwrap();
        let later = Instant::now() + hub.config.drain_timeout + Duration::from_secs(1);
        assert_eq!(hub.stats().replay_backlog, 100);
        // One takes a piece now; the other never does.
        let replay = reading.replay.as_mut().unwrap();
        assert!(matches!(replay.next_piece(), Piece::Bytes(_)));
        hub.tick_streams(Instant::now());
        assert!(!stalled.events.is_killed());
        // Both are quiet past the timeout: both dropped, their backlog freed.
        hub.tick_streams(later);
        assert!(stalled.events.is_killed() && reading.events.is_killed());
        let stats = hub.stats();
        assert_eq!((stats.dropped_slow, stats.replay_backlog), (2, 0));
        assert!(matches!(
            reading.replay.as_mut().unwrap().next_piece(),
            Piece::Dropped
        ));
    }

    #[tokio::test]
    async fn replays_beyond_the_hub_wide_bound_are_refused_until_others_finish() {
        let hub = unclocked(HubConfig {
            max_replay: 16,
            ..config(100)
        });
        publish_many(&hub, "r", 20, 10).await;
        // Each replay of all 20 counts for an eighth of 16: eight fit, and
        // each is longer than the whole bound.
        let mut replays: Vec<Subscription> = (0..8)
            .map(|_| hub.subscribe(subscribe(&["r"], Some("earliest"))).unwrap())
            .collect();
        assert_eq!(hub.stats().replay_backlog, 160);
        let refused = hub.subscribe(subscribe(&["r"], Some("earliest")));
        assert_eq!(
            refused.unwrap_err(),
            SubscribeError::ReplayBusy { limit: 16 }
        );
        // A subscription with nothing to replay is not refused.
        assert!(hub.subscribe(subscribe(&["r"], None)).is_ok());
        drop(replays[0].read_now());
        assert!(hub.subscribe(subscribe(&["r"], Some("earliest"))).is_ok());
        drop(replays);
        assert_eq!(hub.stats().replay_backlog, 0);
        assert_eq!(hub.state().replay_counted, 0);
    }

    #[tokio::test]
    async fn one_address_may_hold_only_a_share_of_the_replay_bound() {
        let hub = unclocked(HubConfig {
            max_replay: 80,
            ..config(100)
        });
        publish_many(&hub, "r", 8, 10).await;
        let from = |address: &str| Subscribe {
            remote: Some(format!("{address}:1000").parse().unwrap()),
            ..subscribe(&["r"], Some("earliest"))
        };
        // An eighth of 80 is 10: one replay of 8 from an address, not two.
        let _first = hub.subscribe(from("192.0.2.1")).unwrap();
        assert_eq!(
            hub.subscribe(from("192.0.2.1")).unwrap_err(),
            SubscribeError::ReplayBusy { limit: 80 }
        );
        // Another address gets in; another IPv6 address of the same /64 does not.
        let _other = hub.subscribe(from("192.0.2.2")).unwrap();
        let _v6 = hub.subscribe(from("[2001:db8::1]")).unwrap();
        assert!(hub.subscribe(from("[2001:db8::2]")).is_err());
        assert_eq!(hub.stats().replay_backlog, 24);
        drop((_first, _other, _v6));
        assert_eq!(hub.stats().replay_backlog, 0);
        assert!(hub.state().replay_by_address.is_empty());
    }

    #[tokio::test]
    async fn a_backend_reads_history_and_counts_listeners() {
        let hub = hub(2);
        for (topic, data) in [
            ("chat/1", "a"),
            ("chat/2", "b"),
            ("other", "c"),
            ("chat/1", "d"),
        ] {
            hub.publish(publish(&[topic], data)).await.unwrap();
        }
        let mut secret = publish(&["chat/2"], "private");
        secret.private = true;
        hub.publish(secret).await.unwrap();
        hub.publish(publish(&["chat/1"], "e")).await.unwrap();
        // What history holds (two per topic here), private included, in id
        // order, for the topics the selector covers.
        let chats = Selector::parse("chat/{id}").unwrap();
        let data: Vec<String> = hub
            .history(std::slice::from_ref(&chats))
            .unwrap()
            .iter()
            .map(|e| e.data.clone())
            .collect();
        assert_eq!(data, ["b", "d", "private", "e"]);
        assert!(
            hub.history(&[Selector::parse("none").unwrap()])
                .unwrap()
                .is_empty()
        );

        assert_eq!(hub.subscriber_count("chat/1"), 0);
        let _exact = hub.subscribe(subscribe(&["chat/1"], None)).unwrap();
        let _both = hub
            .subscribe(subscribe(&["chat/1", "chat/{id}"], None))
            .unwrap();
        let _wildcard = hub.subscribe(subscribe(&["*"], None)).unwrap();
        assert_eq!(hub.subscriber_count("chat/1"), 3);
        assert_eq!(hub.subscriber_count("chat/9"), 2);
        assert_eq!(hub.subscriber_count("other"), 1);
        drop(_exact);
        assert_eq!(hub.subscriber_count("chat/1"), 2);
    }

    #[tokio::test]
    async fn sweeping_forgets_idle_topics_and_remembers_what_was_trimmed() {
        let hub = hub(10);
        hub.publish(publish(&["old"], "1")).await.unwrap();
        hub.sweep(SystemTime::now() + Duration::from_secs(120));
        assert_eq!(hub.stats().topics, 0);
        // A client that saw event 1 missed nothing on "old"...
        let (events, _) = parsed(&mut hub.subscribe(subscribe(&["old"], Some("1"))).unwrap());
        assert!(events.is_empty(), "{events:?}");
        // ...one from before it is told it may have.
        let (events, _) = parsed(&mut hub.subscribe(subscribe(&["old"], Some("0"))).unwrap());
        assert_eq!(events[0].0, "reset");
        // The hub no longer knows which forgotten topic held what, so it errs
        // on the side of a reset for any topic it does not know.
        hub.publish(publish(&["other"], "2")).await.unwrap();
        hub.sweep(SystemTime::now() + Duration::from_secs(240));
        let (events, _) = parsed(&mut hub.subscribe(subscribe(&["old"], Some("1"))).unwrap());
        assert_eq!(events[0].0, "reset");
    }
}

/// Properties over random topics, selectors, grants and payloads.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const TOPICS: [&str; 5] = ["a", "b", "c/1", "c/2", "d"];
    const SELECTORS: [&str; 7] = ["a", "b", "c/1", "c/2", "d", "c/{id}", "*"];

    fn hub() -> Arc<Hub> {
        Hub::unclocked(
            HubConfig {
                history_size: 1000,
                history_ttl: Duration::from_secs(3600),
                queue_size: 4096,
                history_max_bytes: 1 << 30,
                history_cache: 1 << 30,
                limits: TopicLimits {
                    max_topics: 8,
                    max_topic_length: 1024,
                },
                heartbeat: Duration::from_secs(15),
                max_lifetime: None,
                retry: Duration::from_secs(3),
                reconnect_spread: Duration::ZERO,
                drain_timeout: Duration::from_secs(10),
                max_replay: 1_000_000,
                max_acks: 1000,
                event_ids: ids::EventIds::Sequential,
            },
            Arc::new(MemoryStore),
        )
        .unwrap()
    }

    /// The topics of [`TOPICS`] a bit mask picks.
    fn topics_of(mask: u8) -> Vec<String> {
        TOPICS
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, t)| t.to_string())
            .collect()
    }

    fn pick(pool: &'static [&'static str], mask: u8) -> Vec<Selector> {
        pool.iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, s)| Selector::parse(s).unwrap())
            .collect()
    }

    #[derive(Debug, Clone)]
    struct Reader {
        selectors: u8,
        grants: u8,
        joins_before: usize,
        replay: bool,
    }

    fn reader() -> impl Strategy<Value = Reader> {
        (1u8..128, 0u8..128, 0usize..20, any::<bool>()).prop_map(
            |(selectors, grants, joins_before, replay)| Reader {
                selectors,
                grants,
                joins_before,
                replay,
            },
        )
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// No subscriber ever receives a private update its grants do not
        /// cover, live or replayed, and each gets exactly what its
        /// selectors and grants allow from the moment it joined.
        #[test]
        fn private_updates_reach_only_authorized_subscribers(
            readers in prop::collection::vec(reader(), 1..6),
            events in prop::collection::vec((1u8..32, any::<bool>()), 1..20),
        ) {
            let hub = hub();
            let runtime = runtime();
            let mut published: Vec<Arc<Event>> = Vec::new();
            let mut subscriptions: Vec<(Reader, Subscription, usize)> = Vec::new();
            for step in 0..=events.len() {
                for reader in readers.iter().filter(|r| r.joins_before.min(events.len()) == step) {
                    let subscription = hub.subscribe(Subscribe {
                        selectors: pick(&SELECTORS, reader.selectors),
                        private: pick(&SELECTORS, reader.grants),
                        last_event_id: reader.replay.then(|| "earliest".to_owned()),
                        ..Subscribe::default()
                    }).unwrap();
                    subscriptions.push((reader.clone(), subscription, published.len()));
                }
                if let Some((topics, private)) = events.get(step) {
                    let topics = topics_of(*topics);
                    let event = runtime.block_on(hub.publish(Publish {
                        topics,
                        data: format!("event {step}"),
                        private: *private,
                        ..Publish::default()
                    })).unwrap();
                    published.push(event);
                }
            }
            for (reader, mut subscription, joined_at) in subscriptions {
                let selectors = pick(&SELECTORS, reader.selectors);
                let grants = pick(&SELECTORS, reader.grants);
                let bytes = subscription.read_now();
                let received: Vec<String> = sse_codec::Parser::new()
                    .feed(&bytes)
                    .into_iter()
                    .filter_map(|item| match item {
                        sse_codec::Item::Event(e) => Some(e.data),
                        _ => None,
                    })
                    .collect();
                let allowed = |e: &Event| {
                    e.topics.iter().any(|t| selectors.iter().any(|s| s.matches(t)))
                        && (!e.private || e.topics.iter().any(|t| grants.iter().any(|s| s.matches(t))))
                };
                let from = if reader.replay { 0 } else { joined_at };
                let expected: Vec<String> = published[from..]
                    .iter()
                    .filter(|e| allowed(e))
                    .map(|e| e.data.clone())
                    .collect();
                prop_assert_eq!(received, expected, "reader {:?}", reader);
            }
        }

        /// Whatever is published under a small size limit, the hub's
        /// accounts stay true: every history event is kept, the counted
        /// sizes are the sizes of what is kept and of the current states,
        /// what may be evicted is exactly what is no state, the limit holds
        /// unless states alone exceed it (which publishes refuse), and no
        /// state is ever evicted.
        #[test]
        fn the_size_limit_keeps_true_accounts_and_never_evicts_a_state(
            publishes in prop::collection::vec((1u8..32, any::<bool>(), 0usize..3000), 1..60),
        ) {
            let mut config = hub().config;
            config.history_size = 4;
            config.history_max_bytes = 8 * 1024;
            config.history_cache = 4 * 1024;
            // (A durable store's cache is bounded; this one's is the same
            // code with a budget.)
            let hub = Hub::unclocked(config, Arc::new(MemoryStore)).unwrap();
            hub.state().cache = kept::Cache::with_budget(config.history_cache);
            let runtime = runtime();
            let mut states: std::collections::HashMap<String, u64> = Default::default();
            for (topics, retain, size) in publishes {
                let topics = topics_of(topics);
                let published = runtime.block_on(hub.publish(Publish {
                    topics: topics.clone(),
                    data: "x".repeat(size),
                    retain,
                    ..Publish::default()
                }));
                match published {
                    Ok(event) if retain => {
                        for topic in &topics {
                            states.insert(topic.clone(), event.seq);
                        }
                    }
                    Ok(_) | Err(PublishError::HistoryFull { .. }) => {}
                    Err(err) => panic!("{err}"),
                }
                let st = hub.state();
                for topic in st.topics.values() {
                    for event in &topic.history {
                        prop_assert!(st.kept.contains_key(&event.seq));
                    }
                }
                let kept: usize = st.kept.values().map(|e| e.size).sum();
                prop_assert_eq!(kept, st.kept_bytes);
                prop_assert!(st.cache.bytes() <= 4 * 1024);
                for seq in st.cache.seqs() {
                    prop_assert!(st.kept.contains_key(&seq), "cached {} is not kept", seq);
                }
                let mut current: Vec<&Arc<kept::Kept>> =
                    st.topics.values().filter_map(|t| t.retained.as_ref()).collect();
                current.sort_unstable_by_key(|e| e.seq);
                current.dedup_by_key(|e| e.seq);
                let state_bytes: usize = current.iter().map(|e| e.size).sum();
                prop_assert_eq!(state_bytes, st.state_bytes);
                let evictable: Vec<u64> = st
                    .kept
                    .keys()
                    .copied()
                    .filter(|seq| current.iter().all(|e| e.seq != *seq))
                    .collect();
                prop_assert_eq!(evictable, st.evictable.iter().copied().collect::<Vec<_>>());
                prop_assert!(st.kept_bytes <= 8 * 1024 || st.evictable.is_empty());
                for (topic, seq) in &states {
                    let state = st.topics.get(topic).and_then(|t| t.retained.as_ref());
                    prop_assert_eq!(state.map(|e| e.seq), Some(*seq), "state of {}", topic);
                }
            }
        }

        /// Whatever a publisher puts in an id, a type or the data, the wire
        /// carries exactly one event with exactly those values, or the
        /// publish is refused; a line break never becomes a field.
        #[test]
        fn publisher_input_never_adds_a_field_on_the_wire(
            id in prop::option::of("[a-z]{0,3}[\r\n\0:]?[a-z: ]{0,6}"),
            event_type in prop::option::of("[a-z]{0,3}[\r\n]?[a-z: ]{0,6}"),
            data in "(data: x|id: 9|event: y|retry: 1|\r|\n|\r\n|:|[a-z ]{0,4}){0,8}",
            topic in "[a-z]{1,3}[\r\n]?[a-z]{0,3}",
        ) {
            let hub = hub();
            let result = runtime().block_on(hub.publish(Publish {
                topics: vec![topic.clone()],
                data: data.clone(),
                id: id.clone(),
                event_type: event_type.clone(),
                ..Publish::default()
            }));
            let invisible = |text: &str| text.chars().any(publish::is_invisible);
            let bad_id = id.as_deref().is_some_and(|i| {
                i.is_empty()
                    || invisible(i)
                    || i.bytes().all(|b| b.is_ascii_digit())
                    || i == "earliest"
                    || i.starts_with('#')
                    || i.starts_with([' ', '\t'])
                    || i.ends_with([' ', '\t'])
                    || i.len() > publish::MAX_ID_LENGTH
                    || i.starts_with(publish::RESERVED_ID_PREFIX)
            });
            let bad_type = event_type.as_deref().is_some_and(|t| {
                invisible(t)
                    || t == publish::MERCURE_TYPE
                    || publish::CONTROL_TYPES.contains(&t)
                    || publish::BROWSER_TYPES.contains(&t)
            });
            let bad_topic = invisible(&topic) || topic == "*" || topic.len() > 1024;
            match result {
                Err(_) => prop_assert!(bad_id || bad_type || bad_topic),
                Ok(event) => {
                    prop_assert!(!(bad_id || bad_type || bad_topic));
                    let items = sse_codec::Parser::new().feed(&event.wire);
                    prop_assert_eq!(items.len(), 1, "{:?}", items);
                    let sse_codec::Item::Event(parsed) = &items[0] else {
                        return Err(TestCaseError::fail("not an event"));
                    };
                    prop_assert_eq!(&parsed.data, &sse_codec::normalize_line_breaks(&data));
                    prop_assert_eq!(&parsed.last_event_id, &event.id);
                    let expected_type = match event_type.as_deref() {
                        None | Some("") => "message",
                        Some(t) => t,
                    };
                    prop_assert_eq!(parsed.event_type.as_str(), expected_type);
                }
            }
        }
    }
}
