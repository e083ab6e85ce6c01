//! The hub's clock: one task for the whole hub, started by [`Hub::open`],
//! that keeps time for history (age limit, idle topics) and for every open
//! stream (heartbeats, maximum lifetime, token expiry) instead of a timer
//! per connection (docs/BENCHMARKS.md). It holds the hub weakly and stops
//! when the hub is gone.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use super::Hub;
use super::state::SubId;
use crate::frames;
use crate::frames::StreamEnd;

/// Starts the clock of `hub`.
pub(super) fn start(hub: &Arc<Hub>) {
    let history_every =
        (hub.config.history_ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let streams_every = hub.stream_tick();
    tokio::spawn(run(Arc::downgrade(hub), history_every, streams_every));
}

async fn run(hub: Weak<Hub>, history_every: Duration, streams_every: Duration) {
    let mut history = tokio::time::interval(history_every);
    let mut streams = tokio::time::interval(streams_every);
    history.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    streams.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let history_due = tokio::select! {
            _ = history.tick() => true,
            _ = streams.tick() => false,
        };
        let Some(hub) = hub.upgrade() else { return };
        if history_due {
            hub.sweep(SystemTime::now());
        } else {
            hub.tick_streams(Instant::now());
        }
    }
}

impl Hub {
    /// How often the clock ticks for streams: often enough for heartbeats
    /// and the maximum lifetime to be kept within a quarter of their length,
    /// and token expiry within a second.
    pub fn stream_tick(&self) -> Duration {
        let shortest = self
            .config
            .max_lifetime
            .map_or(self.config.heartbeat, |l| l.min(self.config.heartbeat));
        (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// One tick for streams: a heartbeat to each stream that has been quiet
    /// for the heartbeat interval, and the end for those past their maximum
    /// lifetime or token expiry.
    pub(super) fn tick_streams(&self, now: Instant) {
        let tick = self.stream_tick().as_nanos().max(1);
        let beat_after = (self.config.heartbeat.as_nanos() / tick).clamp(1, u32::MAX.into()) as u32;
        let mut st = self.state();
        // A stream the hub let go of (at an earlier tick) that still has not
        // delivered its last bytes has a reader that does not read: close
        // its connection.
        st.ending.retain(|(deadline, stream)| {
            if stream.is_closed() {
                return false;
            }
            if *deadline <= now {
                stream.kill();
                return false;
            }
            true
        });
        self.drop_stalled_replays(&mut st, now);
        let mut due = Vec::new();
        for (id, sub) in &st.subscribers {
            match sub.ends {
                Some((at, why)) if at <= now => due.push((*id, why)),
                _ => sub.queue.beat_if_quiet(beat_after, &frames::HEARTBEAT),
            }
        }
        for (id, why) in due {
            // Unregistered now, so nothing more is queued; the writer sends
            // what is, then says why and closes.
            if let Some(sub) = st.remove_subscriber(id) {
                sub.queue
                    .end(frames::last_words(why, self.reconnect_after(id, why)));
            }
        }
    }

    /// A point in `window` for stream `id`, spread evenly over the window
    /// across streams and unpredictable from outside (the hash is seeded
    /// per process), so streams ended together come back apart.
    pub(super) fn spread_point(&self, id: SubId, window: Duration) -> Duration {
        use std::hash::BuildHasher;
        let nanos = window.as_nanos().min(u64::MAX.into()) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.spread_seed.hash_one(id) % nanos)
    }

    /// The `retry` a stream's last words give: a stream at the end of its
    /// lifetime has done nothing wrong, so it comes back within a second
    /// (at a point spread by its id, so streams opened together do not all
    /// return at once) instead of after the full delay.
    fn reconnect_after(&self, id: SubId, why: StreamEnd) -> Duration {
        match why {
            StreamEnd::LifetimeReached => Duration::from_millis(id % 1000).min(self.config.retry),
            StreamEnd::ShuttingDown | StreamEnd::TokenExpired | StreamEnd::Reloading => {
                self.config.retry
            }
        }
    }

    /// One tick for history: removes events older than the history TTL, and
    /// forgets topics that have been idle that long with no subscriber.
    pub(super) fn sweep(&self, now: SystemTime) {
        let ttl = self.config.history_ttl;
        let expired = |t: SystemTime| now.duration_since(t).is_ok_and(|age| age > ttl);
        let mut st = self.state();
        // Only the topics with something to do: with one topic per
        // connection, copying every name on each tick was most of the work.
        let names: Vec<String> = st
            .topics
            .iter()
            .filter(|(_, t)| {
                t.history.front().is_some_and(|e| expired(e.published_at))
                    || (t.history.is_empty() && t.subscribers.is_empty() && expired(t.last_publish))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            while st.topics[&name]
                .history
                .front()
                .is_some_and(|e| expired(e.published_at))
            {
                st.trim_oldest(&name);
            }
            let topic = &st.topics[&name];
            if topic.history.is_empty()
                && topic.subscribers.is_empty()
                && expired(topic.last_publish)
            {
                st.forget(&name);
            }
        }
        if st.pending.as_ref().is_some_and(|p| !p.is_empty()) {
            self.flush.notify_one();
        }
    }
}
