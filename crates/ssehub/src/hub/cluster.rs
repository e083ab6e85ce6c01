//! The hub as one node of a cluster (`--redis-url`).
//!
//! A publish is appended to the shared log ([`RedisLog`]), which assigns
//! its seq; it is not applied where it was published. Every node follows
//! the log and applies what it reads, in the log's order, exactly as a
//! single hub applies what it commits: so every node holds the same history
//! under the same ids, and a client resumes on any of them (I9). The
//! publisher's answer waits until its own node has applied the event, so a
//! publish followed by a subscribe on the same node sees it.
//!
//! What is not an event travels in the log's control stream: a client id's
//! newest connection (the older one ends, on whichever node it is), acks,
//! Mercure's subscription events, disconnects.
//!
//! When the log cannot be followed as it is, the node loads it again
//! (`resync`), ending its streams first so that they reconnect and resume
//! against what it loaded: after Redis lost data (another epoch, or a
//! counter behind what the node saw: the counter then jumps past every seq
//! any node saw, and what was lost is forgotten, so resumes get a `reset`),
//! or when the node fell so far behind that events it did not read were
//! already deleted.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::state::State;
use super::{Event, Hub, Publish, PublishError, SubId, frames};
use crate::event::StoredEvent;
use crate::store::{AppendError, Control, Health, Read, RedisLog};

/// Waits between attempts to reach Redis again.
const BACKOFF: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
];

/// What a node of a cluster has beyond a single hub.
pub(super) struct Cluster {
    pub log: Arc<RedisLog>,
    /// The highest seq applied, for publishers waiting for their event.
    applied: watch::Sender<u64>,
    /// Why the log cannot be followed, while it cannot.
    degraded: Mutex<Option<String>>,
    /// A publish found the log not the one this node knows: the follower
    /// checks it now rather than at its next reconnection.
    recheck: tokio::sync::Notify,
}

impl Cluster {
    pub fn new(log: Arc<RedisLog>) -> Cluster {
        Cluster {
            log,
            applied: watch::Sender::new(0),
            degraded: Mutex::new(None),
            recheck: tokio::sync::Notify::new(),
        }
    }

    pub fn degraded(&self) -> Option<String> {
        self.degraded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_degraded(&self, why: Option<String>) {
        let mut degraded = self
            .degraded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&*degraded, &why) {
            (None, Some(why)) => tracing::warn!(%why, "the shared log cannot be reached"),
            (Some(_), None) => tracing::info!("the shared log is reachable again"),
            _ => {}
        }
        *degraded = why;
    }

    /// Tells every node, in the background (a control record lost with a
    /// Redis outage is a convenience lost, not an event).
    pub fn tell(&self, control: Control) {
        let log = self.log.clone();
        tokio::spawn(async move {
            if let Err(err) = log.tell(&control).await {
                tracing::debug!(%err, "a control record could not be written");
            }
        });
    }
}

/// How long a resume from an id this node has not read yet waits for it.
const CATCH_UP: Duration = Duration::from_secs(1);

/// How often a follower checks that the log is still the one it knows,
/// even with nothing published (a `FLUSHALL` leaves its connection open).
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Why following the log must start again.
enum Stop {
    /// Redis cannot be reached.
    Unreachable(String),
    /// Check the log's health again, now.
    Recheck,
    /// The node must load the log again.
    Resync { lost: bool },
}

impl Hub {
    fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("a node of a cluster")
    }

    /// A publish on a node: checked here first (a quick answer for what
    /// this node already knows), then by the log, which alone decides.
    pub(super) async fn publish_to_log(
        &self,
        publish: Publish,
    ) -> Result<Arc<Event>, PublishError> {
        let cluster = self.cluster();
        if let Some(why) = cluster.degraded() {
            return Err(PublishError::Unavailable(format!(
                "the shared log (Redis at {}) cannot be reached: {why}",
                cluster.log.address()
            )));
        }
        let now = SystemTime::now();
        let stored = StoredEvent {
            seq: 0,
            id: publish.id.clone().unwrap_or_default(),
            topics: publish.topics,
            event_type: publish.event_type,
            data: publish.data,
            retry: publish.retry,
            private: publish.private,
            retain: publish.retain || publish.is_final,
            is_final: publish.is_final,
            published_at_ms: crate::event::millis(now),
        };
        let known = {
            let st = self.state();
            if st.resyncing {
                return Err(PublishError::Unavailable(
                    "this node is loading the shared log again; retry in a moment".into(),
                ));
            }
            if let Some(topic) = stored
                .topics
                .iter()
                .find(|t| st.topics.get(*t).is_some_and(|t| t.finished))
            {
                return Err(PublishError::TopicFinished(topic.clone()));
            }
            if !stored.id.is_empty() && st.ids.contains_key(&stored.id) {
                return Err(PublishError::DuplicateId(stored.id.clone()));
            }
            let size = super::kept::footprint_of(
                &stored.data,
                &stored.id,
                stored.event_type.as_deref(),
                &stored.topics,
            );
            self.check_room(&st, size, stored.retain, &stored.topics)?;
            st.applied_seq
        };
        let seq = match cluster.log.append(&stored, known).await {
            Ok(seq) => seq,
            Err(AppendError::DuplicateId) => return Err(PublishError::DuplicateId(stored.id)),
            Err(AppendError::TopicFinished(topic)) => {
                return Err(PublishError::TopicFinished(topic));
            }
            Err(AppendError::Lost) => {
                cluster.recheck.notify_one();
                return Err(PublishError::Unavailable(
                    "the shared log lost data (Redis restarted empty?): this node is loading it \
                     again; retry in a moment"
                        .into(),
                ));
            }
            Err(AppendError::NotReplicated { seq, confirmed }) => {
                let id = match &stored.id {
                    id if id.is_empty() => self.config.event_ids.name(seq),
                    id => id.clone(),
                };
                return Err(PublishError::NotReplicated {
                    id,
                    confirmed,
                    wanted: cluster.log.replicas(),
                });
            }
            Err(AppendError::Unknown(why)) => {
                return Err(PublishError::OutcomeUnknown(format!(
                    "the shared log (Redis at {}): {why}",
                    cluster.log.address()
                )));
            }
            Err(AppendError::Unavailable(why)) => {
                return Err(PublishError::Unavailable(format!(
                    "the shared log (Redis at {}): {why}",
                    cluster.log.address()
                )));
            }
        };
        // Acknowledged: Redis has it. Wait (a bounded time) until this node
        // has applied it too, so the publisher's next request here sees it.
        let mut applied = cluster.applied.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            applied.wait_for(|applied| *applied >= seq),
        )
        .await;
        // The event as this node applied it (encoded once), unless it
        // already left the cache.
        if let Some(event) = self.state().cache.get(seq) {
            return Ok(event.clone());
        }
        Ok(Arc::new(self.event_from_log(StoredEvent { seq, ..stored })))
    }

    /// A client resuming from a hub id this node has not read yet (it was
    /// published on another node a moment ago) waits, a bounded time, until
    /// this node has: else its id would be unknown here, and it would get a
    /// `reset` for nothing.
    pub(super) async fn catch_up_to(&self, last_event_id: Option<&str>) {
        let Some(cluster) = &self.cluster else { return };
        let Some(seq) = last_event_id.and_then(|id| self.config.event_ids.seq_of(id)) else {
            return;
        };
        let mut applied = cluster.applied.subscribe();
        let _ = tokio::time::timeout(CATCH_UP, applied.wait_for(|applied| *applied >= seq)).await;
    }

    /// The event a publish appended, named as the log names it when read.
    fn event_from_log(&self, mut stored: StoredEvent) -> Event {
        if stored.id.is_empty() {
            stored.id = self.config.event_ids.name(stored.seq);
        }
        Event::from_stored(stored)
    }

    /// Applies what one read of the log brought; a hole (an event this node
    /// never read was deleted) asks for a resync.
    fn apply_read(&self, read: Read) -> Result<(), Stop> {
        let cluster = self.cluster();
        let node = cluster.log.node();
        let mut st = self.state();
        for stored in read.events {
            if stored.seq <= st.applied_seq {
                continue;
            }
            let event = Arc::new(Event::from_stored(stored));
            // (Another node's clock: a skew shows as lag, or as none.)
            let lag = SystemTime::now().duration_since(event.published_at);
            self.measures
                .log_lag_seconds
                .observe(lag.unwrap_or_default().as_secs_f64());
            st.last_seq = st.last_seq.max(event.seq);
            self.apply(&mut st, &event);
        }
        for (from, control) in read.controls {
            self.apply_control(&mut st, from == node, control);
        }
        cluster.applied.send_replace(st.applied_seq);
        if read.hole {
            tracing::warn!(
                after = st.applied_seq,
                "events this node did not read left the shared log: loading it again"
            );
            return Err(Stop::Resync { lost: false });
        }
        Ok(())
    }

    fn apply_control(&self, st: &mut State, own: bool, control: Control) {
        match control {
            Control::Claim { sub, .. } if own => {
                st.unclaimed.remove(&sub);
            }
            Control::Claim { client, .. } => {
                // A connection of this client opened elsewhere. The local one
                // is older if its own claim was read before this one (one
                // still unread comes later in the log: it wins, there).
                if let Some(&local) = st.clients.get(&client)
                    && !st.unclaimed.contains(&local)
                    && let Some(replaced) = st.remove_subscriber(local)
                {
                    replaced.queue.end(frames::replaced(&client));
                }
            }
            Control::Ack { client, ack } if !own => {
                // Stored by the node that took it; the positions this one
                // forgets to stay within --max-acks are forgotten in Redis
                // too, so that Redis holds no more than a node.
                for gone in st.acks.set(&client, ack, self.config.max_acks) {
                    if let Some(pending) = &mut st.pending {
                        pending.forgotten_acks.insert(gone.to_string());
                    }
                }
            }
            Control::Announce {
                topic,
                event_type,
                data,
            } if !own => self.announce_here(st, topic, &event_type, &data),
            Control::Disconnect { client } if !own => {
                if let Some(&local) = st.clients.get(&client) {
                    st.remove_subscriber(local);
                }
            }
            _ => {}
        }
    }

    /// A connection with a client id registered here: every node learns of
    /// it (and ends an older one) before this returns.
    pub(super) async fn claim_now(&self, client: String, sub: SubId) {
        let Some(cluster) = &self.cluster else { return };
        let control = Control::Claim { client, sub };
        if let Err(err) = cluster.log.tell(&control).await {
            tracing::debug!(%err, "a claim of a client id could not be written");
            // Never read back: it counts as older than any claim from now
            // on, and is written again once Redis is back.
            let mut st = self.state();
            if st.unclaimed.remove(&sub) {
                st.unsent_claims.insert(sub);
            }
        }
    }

    /// [`Hub::claim_now`] in the background, for a caller that cannot wait.
    pub(super) fn claim_later(self: &Arc<Self>, client: String, sub: SubId) {
        if self.cluster.is_none() {
            return;
        }
        let hub = self.clone();
        tokio::spawn(async move { hub.claim_now(client, sub).await });
    }

    /// Once Redis is back: the claims that could not be written are, so
    /// that of two connections of one client id opened meanwhile on two
    /// nodes, the later in the log ends the other.
    async fn claim_again(&self) {
        let again: Vec<(String, SubId)> = {
            let mut st = self.state();
            let unsent = std::mem::take(&mut st.unsent_claims);
            let again: Vec<(String, SubId)> = unsent
                .into_iter()
                .filter_map(|id| Some((st.subscribers.get(&id)?.client_id.clone()?, id)))
                .collect();
            st.unclaimed.extend(again.iter().map(|(_, id)| *id));
            again
        };
        for (client, sub) in again {
            self.claim_now(client, sub).await;
        }
    }

    /// Loads the log again: every stream here ends (to reconnect and resume
    /// against what is loaded), subscribes and publishes wait meanwhile.
    /// `lost`: Redis lost data, and everything this node saw is forgotten.
    async fn resync(self: &Arc<Self>, lost: bool) -> Result<(), String> {
        let known = {
            let mut st = self.state();
            st.resyncing = true;
            let words = frames::last_words(frames::StreamEnd::Reloading, self.config.retry);
            let everyone: Vec<SubId> = st.subscribers.keys().copied().collect();
            for id in everyone {
                if let Some(sub) = st.remove_subscriber(id) {
                    sub.queue.end(words.clone());
                }
            }
            st.last_seq.max(st.applied_seq)
        };
        let cluster = self.cluster();
        if lost {
            let mut conn = cluster.log.reader().await?;
            let counter = cluster.log.adopt(&mut conn, known).await?;
            tracing::warn!(
                forgotten_up_to = known,
                next_id = counter + 1,
                "the shared log lost data: what this node saw is forgotten (resumes from before \
                 get a reset), and ids go on past every one given"
            );
        }
        let hub = self.clone();
        let fresh = tokio::task::spawn_blocking(move || {
            let mut fresh = State::default();
            hub.load_into(&mut fresh).map(|()| fresh)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let mut st = self.state();
        st.replace_history(fresh);
        st.resyncing = false;
        cluster.applied.send_replace(st.applied_seq);
        tracing::info!(last_id = st.applied_seq, "the shared log is loaded again");
        drop(st);
        self.sweep(SystemTime::now());
        Ok(())
    }
}

/// Starts following the log; it stops when the hub is dropped.
pub(super) fn start(hub: &Arc<Hub>) {
    hub.cluster().log.start_presence();
    hub.cluster().applied.send_replace(hub.state().applied_seq);
    tokio::spawn(follow(Arc::downgrade(hub)));
}

/// Follows the log for as long as the hub lives: reads, applies, and on any
/// failure connects again (with a growing pause) and catches up from the
/// last seq applied.
async fn follow(hub: Weak<Hub>) {
    let mut failures = 0usize;
    let mut control: Option<String> = None;
    let mut resync: Option<bool> = None;
    loop {
        let Some(node) = hub.upgrade() else { return };
        let stop = follow_once(&node, &mut control, &mut resync).await;
        let cluster = node.cluster();
        match stop {
            Stop::Unreachable(why) => {
                cluster.set_degraded(Some(why));
                failures += 1;
            }
            Stop::Recheck => {
                failures = 0;
                continue;
            }
            Stop::Resync { lost } => {
                resync = Some(resync.unwrap_or(false) || lost);
                if lost {
                    control = None;
                }
                failures = 0;
                continue;
            }
        }
        drop(node);
        tokio::time::sleep(BACKOFF[(failures - 1).min(BACKOFF.len() - 1)]).await;
    }
}

/// One connection's worth of following.
async fn follow_once(
    hub: &Arc<Hub>,
    control: &mut Option<String>,
    resync: &mut Option<bool>,
) -> Stop {
    let cluster = hub.cluster();
    let log = &cluster.log;
    let mut conn = match log.reader().await {
        Ok(conn) => conn,
        Err(why) => return Stop::Unreachable(why),
    };
    let known = {
        let st = hub.state();
        st.last_seq.max(st.applied_seq)
    };
    match log.check(&mut conn, known).await {
        Err(why) => return Stop::Unreachable(why),
        Ok((Health::Lost, _)) if !resync.is_some_and(|lost| lost) => {
            return Stop::Resync { lost: true };
        }
        Ok((_, position)) => {
            control.get_or_insert(position);
        }
    }
    if let Some(lost) = *resync {
        if let Err(why) = hub.resync(lost).await {
            return Stop::Unreachable(why);
        }
        *resync = None;
    }
    if cluster.degraded().is_some() {
        log.forget_shared().await;
    }
    cluster.set_degraded(None);
    if let Err(why) = log.alive(&mut conn).await {
        return Stop::Unreachable(why);
    }
    hub.claim_again().await;
    let position = control.get_or_insert_with(|| "0-0".to_owned());
    let checked = tokio::time::Instant::now();
    loop {
        let after = hub.state().applied_seq;
        let read = tokio::select! {
            read = log.read(&mut conn, after, position) => read,
            () = cluster.recheck.notified() => return Stop::Recheck,
        };
        let read = match read {
            Ok(read) => read,
            Err(why) => return Stop::Unreachable(why),
        };
        position.clone_from(&read.control_position);
        if let Err(stop) = hub.apply_read(read) {
            return stop;
        }
        // (After applying what was read: the next connection goes on after
        // it, control records included.)
        if checked.elapsed() > CHECK_EVERY {
            return Stop::Recheck;
        }
    }
}
