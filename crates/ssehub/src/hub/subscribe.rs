//! The subscribe path, as named steps. All of them run under the hub's
//! lock, in one go with the registration, so no event can fall between what
//! a subscriber is sent first and what it is sent live (I2). Only matching
//! a template or `*` against every known topic is done before, with the lock
//! released ([`Hub::prematch`]); step 2 matches the topics added since.
//!
//! 1. [`Resume::resolve`]: where the client's `Last-Event-ID` sits in the
//!    hub's order of events.
//! 2. [`Topics::select`] and [`Backlog::collect`]: the topics it covers now,
//!    and what it must be sent before live events (history or retained
//!    states), in id order, with the topics whose history no longer covers
//!    its position.
//! 3. [`Opening::build`]: the bytes around that backlog, from
//!    [`crate::frames`].
//! 4. [`Hub::register`]: the subscriber joins its topics, replacing an older
//!    connection with the same client id; its backlog becomes its
//!    [`Replay`], sent in pieces as its socket drains.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use super::directory::Snapshot;
use super::kept::Kept;
use super::replay::Replay;
use super::state::{State, SubId, Subscriber, Topic, may_see};
use super::{Hub, Registration, Selector, Subscribe, SubscribeError, Subscription};
use crate::frames::{self, StreamEnd};

impl Hub {
    /// Registers a subscriber. The returned subscription carries what it must
    /// be sent first (history or retained states) and the queue of live
    /// events; dropping it unregisters the subscriber.
    pub fn subscribe(self: &Arc<Self>, request: Subscribe) -> Result<Subscription, SubscribeError> {
        let client = request.client_id.clone();
        let subscription = self.subscribe_unclaimed(request)?;
        if let Some(client) = client {
            self.claim_later(client, subscription.registration.id);
        }
        Ok(subscription)
    }

    /// [`Hub::subscribe`], without telling the other nodes of a cluster
    /// about its client id yet.
    fn subscribe_unclaimed(
        self: &Arc<Self>,
        request: Subscribe,
    ) -> Result<Subscription, SubscribeError> {
        let mut request = request.validated(self.config.limits)?;
        let asked = request.last_event_id.is_some();
        if request.last_event_id.is_none()
            && let Some(client_id) = &request.client_id
        {
            // A page load sends no Last-Event-ID: the client's acknowledged
            // position stands in for it.
            request.last_event_id = self.acknowledged(client_id).map(|a| a.last_event_id);
        }
        let prematch = self.prematch(&request.selectors);
        let mut st = self.state();
        if st.resyncing {
            return Err(SubscribeError::Reloading);
        }
        let resume = Resume::resolve(
            &st,
            &self.config.event_ids,
            request.last_event_id.as_deref(),
            &request.private,
        );
        let topics = Topics::select(&st, &request.selectors, prematch);
        if topics.matched_under_lock > 10_000 {
            // Only if the directory was rebuilt between the two steps.
            tracing::debug!(
                topics = topics.matched_under_lock,
                "a wildcard subscription was matched under the lock"
            );
        }
        let backlog = Backlog::collect(&st, &topics, resume, &request.private);
        // A replay counts for at most a share of the bound, so one of all
        // history gets in; no stream with nothing to replay is refused.
        let address = request.remote.map(|r| super::address_group(r.ip()));
        let adds = st.replay_weight(backlog.events.len());
        let mine = address.map_or(0, |a| st.replay_by_address.get(&a).copied().unwrap_or(0));
        if adds > 0
            && (st.replay_counted + adds > self.config.max_replay || mine + adds > st.replay_share)
        {
            return Err(SubscribeError::ReplayBusy {
                limit: self.config.max_replay,
            });
        }
        // Mercure's answer to a Last-Event-ID: the id the stream continues
        // from, or `earliest` when it starts elsewhere (so a client that
        // compares sees the loss).
        let resumed_after = asked.then(|| match resume {
            Resume::After {
                check_gaps: true, ..
            } if backlog.gapped.is_empty() && !backlog.forgotten => {
                request.last_event_id.clone().unwrap_or_default()
            }
            _ => "earliest".to_owned(),
        });
        let opening = Opening::build(self, &st, &request, resume, &backlog, &topics);
        let seqs = backlog.events.iter().map(|e| e.seq).collect();
        let wildcard = topics.wildcard;
        let mut subscription = self.register(&mut st, request, wildcard, opening, (seqs, address));
        subscription.resumed_after = resumed_after;
        Ok(subscription)
    }

    /// [`Hub::subscribe`] for a caller on the async threads. A subscription
    /// with a template or `*` costs time in proportion to the topics it
    /// covers (under the lock: looking each up, collecting its states): it
    /// runs on a blocking thread, one at a time, so that a flood of them
    /// can neither take every async thread nor queue on the lock, and
    /// publishes, other subscriptions and health checks go on between them.
    pub async fn subscribe_async(
        self: &Arc<Self>,
        request: Subscribe,
    ) -> Result<Subscription, SubscribeError> {
        // In a cluster, the other nodes learn of its client id before the
        // stream starts: claims are in the order their streams started.
        let client = request.client_id.clone();
        self.catch_up_to(request.last_event_id.as_deref()).await;
        let subscription = self.subscribe_waiting(request).await?;
        if let Some(client) = client {
            self.claim_now(client, subscription.registration.id).await;
        }
        Ok(subscription)
    }

    async fn subscribe_waiting(
        self: &Arc<Self>,
        request: Subscribe,
    ) -> Result<Subscription, SubscribeError> {
        if request.selectors.iter().all(|s| s.exact().is_some()) {
            return self.subscribe_unclaimed(request);
        }
        // Their turn comes in order, and a client that hung up meanwhile is
        // still served: the wait is bounded, so that a flood of them (opened
        // and dropped) queues a few seconds of work at most, and a
        // legitimate one is answered soon, if only with a 503.
        let waiting = Waiting::join(&self.wildcard_waiting);
        if waiting.ahead >= MAX_WILDCARDS_WAITING {
            return Err(SubscribeError::WildcardsBusy);
        }
        let turn = tokio::time::timeout(MAX_WILDCARD_WAIT, self.wildcard_gate.acquire()).await;
        let Ok(_turn) = turn else {
            return Err(SubscribeError::WildcardsBusy);
        };
        drop(waiting);
        let hub = self.clone();
        tokio::task::spawn_blocking(move || hub.subscribe_unclaimed(request))
            .await
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
    }

    /// Step 4: adds the subscriber to its topics (unless everything it asked
    /// for is finished) and hands back its side of the stream: the replay of
    /// `seqs` between the opening's head and tail, then the live queue.
    fn register(
        self: &Arc<Self>,
        st: &mut State,
        mut request: Subscribe,
        wildcard: bool,
        opening: Opening,
        (seqs, address): (VecDeque<u64>, Option<std::net::IpAddr>),
    ) -> Subscription {
        let now = SystemTime::now();
        let (queue, live) = super::queue::queue(self.config.queue_size);
        let id = st.next_sub;
        st.next_sub += 1;
        let has_history = !seqs.is_empty();
        let around = (opening.head, opening.tail);
        let replay = Replay::start(self, st, id, around, (seqs, address), queue.watch());
        if st.shutting_down {
            queue.end(frames::last_words(
                StreamEnd::ShuttingDown,
                self.config.retry,
            ));
        }
        if opening.open_topics.is_empty() && !wildcard {
            // Everything it asked for is finished: nothing live will come.
            // (With history to send, its replay watches its end.)
            if !has_history {
                st.watch_ending(queue.watch());
            }
            return Subscription {
                replay: Some(Box::new(replay)),
                events: live,
                registration: Registration::new(self, id),
                resumed_after: None,
            };
        }
        for name in &opening.open_topics {
            st.topics
                .entry(name.clone())
                .or_insert_with(|| Topic::new(now, st.forgotten_up_to))
                .subscribers
                .push(id);
        }
        if wildcard {
            st.wildcard.insert(id);
        }
        if let Some(client_id) = &request.client_id
            && let Some(old) = st.clients.insert(client_id.clone(), id)
        {
            // The newer connection wins; the older one is told, and ends.
            if let Some(replaced) = st.remove_subscriber(old) {
                replaced.queue.end(frames::replaced(client_id));
            }
        }
        if request.client_id.is_some() && self.cluster.is_some() {
            st.unclaimed.insert(id);
        }
        st.subscribers.insert(
            id,
            Subscriber {
                selectors: std::mem::take(&mut request.selectors).into_boxed_slice(),
                private: std::mem::take(&mut request.private).into_boxed_slice(),
                open_topics: opening.open_topics.len() as u32,
                wildcard,
                client_id: request.client_id.take(),
                queue,
                connected_at: now,
                ends: self.deadline(id, request.expires_at, now),
                remote: request.remote,
            },
        );
        Subscription {
            replay: Some(Box::new(replay)),
            events: live,
            registration: Registration::new(self, id),
            resumed_after: None,
        }
    }

    /// For selectors with a template or `*`: the known topics they match,
    /// matched against a snapshot of the directory with the lock released
    /// (step 2 then matches only the topics added since).
    pub(super) fn prematch(&self, selectors: &[Selector]) -> Option<Prematch> {
        if selectors.iter().all(|s| s.exact().is_some()) {
            return None;
        }
        let snapshot = self.state().directory.snapshot();
        let mut matched: Vec<Arc<str>> = snapshot
            .names()
            .filter(|t| matches_wildcard(selectors, t))
            .map(Arc::from)
            .collect();
        // Sorted here, not under the lock: with many long names, sorting
        // was most of a `*` subscription's cost.
        matched.sort_unstable();
        matched.dedup();
        Some(Prematch { snapshot, matched })
    }

    /// When a stream must end, and why: the earlier of its token's expiry
    /// and the maximum lifetime (expiry first on a tie: it is the reason the
    /// client must act on).
    /// The lifetime is shortened by the stream's own point in
    /// `--reconnect-spread` (at most a tenth of it), so streams opened
    /// together, after a restart, do not all end together either.
    fn deadline(
        &self,
        id: SubId,
        expires_at: Option<SystemTime>,
        now: SystemTime,
    ) -> Option<(Instant, StreamEnd)> {
        let started = Instant::now();
        // A deadline too far ahead to represent is no deadline.
        let expiry = expires_at.and_then(|at| {
            let left = at.duration_since(now).unwrap_or_default();
            Some((started.checked_add(left)?, StreamEnd::TokenExpired))
        });
        let lifetime = self.config.max_lifetime.and_then(|d| {
            let early = self.spread_point(id, self.config.reconnect_spread.min(d / 10));
            Some((started.checked_add(d - early)?, StreamEnd::LifetimeReached))
        });
        [expiry, lifetime]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }
}

/// How long a subscription with a template or `*` may wait for its turn
/// to register (each may take a lookup per known topic under the lock:
/// about 0.15 s with 80,000 topics, a quarter of them with 1 KB names).
/// Those that wait longer leave the line without costing anything, so the
/// work queued is at most this long, however many come.
const MAX_WILDCARD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// And how many may wait at once: a bound on the memory they hold.
const MAX_WILDCARDS_WAITING: u64 = 1024;

/// One place in the line of waiting registrations, left when dropped.
struct Waiting<'a> {
    count: &'a std::sync::atomic::AtomicU64,
    /// How many were waiting before this one.
    ahead: u64,
}

impl<'a> Waiting<'a> {
    fn join(count: &'a std::sync::atomic::AtomicU64) -> Waiting<'a> {
        let ahead = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting { count, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where a subscriber's stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resume {
    /// No id: retained states, then live.
    Fresh,
    /// After this seq; `check_gaps` is false for `earliest`.
    After { seq: u64, check_gaps: bool },
    /// An id the hub cannot place.
    Unknown,
}

impl Resume {
    /// `Last-Event-ID: earliest`: everything history holds.
    pub(super) const EARLIEST: Resume = Resume::After {
        seq: 0,
        check_gaps: false,
    };

    /// Step 1: the position of `Last-Event-ID` among the events the hub has
    /// applied. A publisher's id is looked up; a hub-assigned one is its
    /// seq, as long as the hub has got that far. The id of a private event
    /// the subscriber may not see is as unknown as an id never used: how the
    /// hub answers must not tell which private ids exist.
    fn resolve(
        st: &State,
        ids: &super::ids::EventIds,
        last_event_id: Option<&str>,
        private: &[Selector],
    ) -> Resume {
        let Some(id) = last_event_id else {
            return Resume::Fresh;
        };
        if id == "earliest" {
            return Resume::EARLIEST;
        }
        if let Some(&seq) = st.ids.get(id) {
            let hidden = st
                .kept
                .get(&seq)
                .is_some_and(|event| !may_see(event, private));
            return if hidden {
                Resume::Unknown
            } else {
                Resume::After {
                    seq,
                    check_gaps: true,
                }
            };
        }
        match ids.seq_of(id) {
            Some(seq) if seq <= st.applied_seq => Resume::After {
                seq,
                check_gaps: true,
            },
            _ => Resume::Unknown,
        }
    }
}

/// Topics matched before the lock was taken: `matched` of the names of
/// `snapshot`, sorted, each once.
pub(super) struct Prematch {
    snapshot: Snapshot,
    matched: Vec<Arc<str>>,
}

/// Whether a template or `*` among `selectors` matches `topic`.
fn matches_wildcard(selectors: &[Selector], topic: &str) -> bool {
    selectors
        .iter()
        .any(|s| s.exact().is_none() && s.matches(topic))
}

/// The topics a subscription covers at the moment it registers.
pub(super) struct Topics<'a> {
    /// The topics it names exactly, as given.
    exact: Vec<String>,
    /// Whether it has a template or `*` selector.
    pub(super) wildcard: bool,
    /// The other known topics its selectors match, among those with
    /// something stored (history, a state, a trim): what it may be sent or
    /// told it missed. Borrowed, not copied: with `*` it is every topic.
    matched: Vec<(&'a str, &'a Topic)>,
    /// How many topic names were matched against its selectors under the
    /// lock (those added since its prematch).
    pub(super) matched_under_lock: usize,
}

impl<'a> Topics<'a> {
    /// Under the lock: with a prematch, only the topics added since its
    /// snapshot are matched here (all of them if the directory was rebuilt
    /// meanwhile, or without one).
    pub(super) fn select(
        st: &'a State,
        selectors: &[Selector],
        prematch: Option<Prematch>,
    ) -> Topics<'a> {
        let exact: Vec<String> = selectors
            .iter()
            .filter_map(|s| s.exact().map(str::to_owned))
            .collect();
        let wildcard = exact.len() < selectors.len();
        let mut matched = Vec::new();
        let mut matched_under_lock = 0;
        if wildcard {
            let added = prematch
                .as_ref()
                .and_then(|p| Some((p, st.directory.added_since(&p.snapshot)?)));
            let candidates: Vec<&str> = match added {
                Some((prematch, added)) => {
                    let mut added: Vec<&str> = added
                        .inspect(|_| matched_under_lock += 1)
                        .filter(|t| matches_wildcard(selectors, t))
                        .filter(|t| {
                            let known = prematch.matched.binary_search_by(|m| (**m).cmp(t));
                            known.is_err()
                        })
                        .collect();
                    added.sort_unstable();
                    added.dedup();
                    let matched = prematch.matched.iter().map(|name| &**name);
                    matched.chain(added).collect()
                }
                None => st
                    .topics
                    .keys()
                    .map(String::as_str)
                    .inspect(|_| matched_under_lock += 1)
                    .filter(|t| matches_wildcard(selectors, t))
                    .collect(),
            };
            // Still there with something stored (the directory keeps the
            // names of forgotten topics). One lookup each: the backlog uses
            // the topic it found.
            matched.extend(
                candidates
                    .into_iter()
                    .filter_map(|name| st.topics.get_key_value(name))
                    .filter(|(_, t)| t.has_stored())
                    .map(|(name, topic)| (name.as_str(), topic))
                    .filter(|(t, _)| !exact.iter().any(|e| e == t)),
            );
        }
        Topics {
            exact,
            wildcard,
            matched,
            matched_under_lock,
        }
    }

    /// Every topic it covers, with what the hub holds of it: the exact
    /// ones, then the matched ones.
    pub(super) fn all(&self, st: &'a State) -> impl Iterator<Item = (&str, Option<&'a Topic>)> {
        let exact = self
            .exact
            .iter()
            .map(move |n| (n.as_str(), st.topics.get(n)));
        exact.chain(
            self.matched
                .iter()
                .map(|(name, topic)| (*name, Some(*topic))),
        )
    }
}

/// What a stream is sent before live events.
pub(super) struct Backlog<'a> {
    /// In seq order, each once, only what the subscriber may see.
    pub(super) events: Vec<&'a Arc<Kept>>,
    /// Topics whose history no longer covers the client's position.
    gapped: Vec<String>,
    /// A template or `*` resuming from before a topic the hub forgot: that
    /// topic may have matched, and no name of it is left to match.
    forgotten: bool,
}

impl<'a> Backlog<'a> {
    /// Step 2: for a fresh subscriber the retained states of its topics; for
    /// a resuming one every later event in their histories, and where history
    /// was trimmed past its position, the current state and what followed it.
    pub(super) fn collect(
        st: &'a State,
        topics: &Topics<'a>,
        resume: Resume,
        private: &[Selector],
    ) -> Backlog<'a> {
        let mut events: Vec<&'a Arc<Kept>> = Vec::new();
        let mut gapped = Vec::new();
        for (name, topic) in topics.all(st) {
            let history = topic.into_iter().flat_map(|t| t.history.iter());
            let retained = topic.and_then(|t| t.retained.as_ref());
            // Whether history no longer covers the client's position, and
            // that position (an unknown id is before everything).
            let (gap, position) = match resume {
                Resume::Fresh => {
                    events.extend(retained);
                    continue;
                }
                Resume::Unknown => (true, 0),
                Resume::After { seq, check_gaps } => {
                    let trimmed =
                        topic.map_or(st.forgotten_up_to, |t| t.trimmed_up_to.max(t.known_from));
                    (check_gaps && trimmed > seq, seq)
                }
            };
            let mut from = position;
            if gap {
                // One rule after a reset, for a trimmed or an unknown
                // position alike: the current state, then what history
                // holds after it.
                if names_visibly(topics, st, name, private) {
                    gapped.push(name.to_owned());
                }
                if let Some(state) = retained {
                    if state.seq > position {
                        events.push(state);
                    }
                    from = from.max(state.seq);
                }
            }
            events.extend(history.filter(|e| e.seq > from));
        }
        // Private events (the hub's own control events among them) go only
        // to subscribers granted one of their topics.
        events.retain(|e| may_see(e, private));
        events.sort_unstable_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        // A forgotten topic is matched by no wildcard any more: the hub
        // cannot tell whether it was one of this subscriber's, so it says
        // it may have missed something.
        let forgotten = topics.wildcard
            && matches!(resume, Resume::After { seq, check_gaps: true } if st.forgotten_up_to > seq);
        Backlog {
            events,
            gapped,
            forgotten,
        }
    }
}

/// Whether a `reset` may name `topic` to this subscriber: it named the topic
/// itself, or may see its private events, or the topic has a public event
/// (whose name any subscriber could learn). A topic known only from private
/// events it may not see stays unnamed.
fn names_visibly(topics: &Topics, st: &State, name: &str, private: &[Selector]) -> bool {
    topics.exact.iter().any(|t| t == name)
        || private.iter().any(|s| s.matches(name))
        || st
            .topics
            .get(name)
            .is_some_and(|t| t.history.iter().chain(&t.retained).any(|e| !e.private))
}

/// The bytes around a stream's backlog, and the topics still open for it.
struct Opening {
    /// Before the backlog.
    head: Bytes,
    /// After it, before live events; often empty.
    tail: Bytes,
    /// Its exact topics that are not finished, each once.
    open_topics: Vec<String>,
}

impl Opening {
    /// Step 3, in this order: the retry hint; when resuming, the client's own
    /// id (so the control events that follow keep its position); `reset` if
    /// history does not cover it; (the backlog); a position marker if the
    /// backlog did not end at the hub's newest event; `complete` for each
    /// exact topic already finished.
    fn build(
        hub: &Hub,
        st: &State,
        request: &Subscribe,
        resume: Resume,
        backlog: &Backlog,
        topics: &Topics,
    ) -> Opening {
        let mut head = BytesMut::from(&hub.retry_hint[..]);
        if resume != Resume::Fresh
            && let Some(line) = request
                .last_event_id
                .as_deref()
                .and_then(frames::resume_position)
        {
            head.extend_from_slice(&line);
        }
        if !backlog.gapped.is_empty() || backlog.forgotten || resume == Resume::Unknown {
            let reason = if resume == Resume::Unknown {
                "unknown_last_event_id"
            } else {
                "history_trimmed"
            };
            let gapped: Vec<&str> = backlog.gapped.iter().map(String::as_str).collect();
            head.extend_from_slice(&frames::reset(reason, &gapped));
        }
        let mut tail = BytesMut::new();
        let position = match (resume, backlog.events.last()) {
            (_, Some(last)) => Some(last.seq),
            (Resume::After { seq, .. }, None) => Some(seq),
            _ => None,
        };
        if position != Some(st.applied_seq) {
            tail.extend_from_slice(&frames::position(
                &hub.config.event_ids.name(st.applied_seq),
            ));
        }
        let mut open_topics: Vec<String> = Vec::new();
        for name in &topics.exact {
            if st.topics.get(name).is_some_and(|t| t.finished) {
                tail.extend_from_slice(&frames::complete(name));
            } else if !open_topics.contains(name) {
                open_topics.push(name.clone());
            }
        }
        Opening {
            head: head.freeze(),
            tail: tail.freeze(),
            open_topics,
        }
    }
}
