//! A subscriber's request, and the subscription the hub hands back.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::{CLIENT_TOPIC_PREFIX, Hub, Selector, TopicLimits, client_topic};

/// The group an address is counted in by per-address limits: itself, or
/// for IPv6 its /64 (one site's allocation, whose addresses cost an
/// attacker nothing); an IPv4 address mapped into IPv6 is that IPv4 address.
pub fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// What a subscriber asks for.
#[derive(Debug, Default)]
pub struct Subscribe {
    /// Topic selectors, at least one (or a client id).
    pub selectors: Vec<Selector>,
    /// Resume after this id (`Last-Event-ID`); `earliest` replays all history.
    pub last_event_id: Option<String>,
    /// A client id: a newer connection with the same id replaces this one,
    /// and the client's channel topic is added to the selectors.
    pub client_id: Option<String>,
    /// Selectors of the private topics this subscriber may see.
    pub private: Vec<Selector>,
    /// The peer address, for the admin API.
    pub remote: Option<SocketAddr>,
    /// When the subscriber's token expires: the hub ends the stream then.
    pub expires_at: Option<std::time::SystemTime>,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// Neither a topic selector nor a client id was given.
    #[error("at least one topic selector (match=...) is required")]
    MissingTopic,
    /// More selectors than the configured limit.
    #[error("a subscription may have at most {limit} topic selectors")]
    TooManyTopics {
        /// The limit.
        limit: usize,
    },
    /// A selector longer than the topic length limit.
    #[error("topic selector longer than {limit} bytes")]
    SelectorTooLong {
        /// The limit.
        limit: usize,
    },
    /// A selector names another client's channel.
    #[error(
        "topics starting with {CLIENT_TOPIC_PREFIX:?} are client channels: subscribe with client_id instead"
    )]
    ReservedTopic,
    /// Other streams are replaying as much history as the hub allows.
    #[error(
        "the hub is replaying as much history as it allows ({limit} events); retry in a moment"
    )]
    ReplayBusy {
        /// The limit (`--max-replay`).
        limit: usize,
    },
    /// Too many subscriptions with a template or `*` wait for their turn to
    /// register, or this one waited too long.
    #[error(
        "too many subscriptions with a template or * are waiting to register; retry in a moment"
    )]
    WildcardsBusy,
    /// The client id is empty, too long or has characters outside the allowed set.
    #[error(
        "invalid client_id {0:?}: use 1 to 128 characters among letters, digits and - _ . ~ : @"
    )]
    InvalidClientId(String),
    /// A node of a cluster is loading the shared log again.
    #[error("this node is loading the shared log again; retry in a moment")]
    Reloading,
}

impl Subscribe {
    pub(super) fn validated(mut self, limits: TopicLimits) -> Result<Subscribe, SubscribeError> {
        if self.selectors.is_empty() && self.client_id.is_none() {
            return Err(SubscribeError::MissingTopic);
        }
        if self.selectors.len() > limits.max_topics {
            return Err(SubscribeError::TooManyTopics {
                limit: limits.max_topics,
            });
        }
        for selector in &self.selectors {
            if selector.to_string().len() > limits.max_topic_length {
                return Err(SubscribeError::SelectorTooLong {
                    limit: limits.max_topic_length,
                });
            }
            if selector.to_string().starts_with(CLIENT_TOPIC_PREFIX) {
                return Err(SubscribeError::ReservedTopic);
            }
        }
        if let Some(client_id) = &self.client_id {
            check_client_id(client_id)?;
            let own = Selector::Exact(client_topic(client_id));
            self.selectors.push(own.clone());
            self.private.push(own);
        }
        Ok(self)
    }
}

/// A client id is 1 to 128 of `A-Z a-z 0-9 - _ . ~ : @`.
pub fn check_client_id(client_id: &str) -> Result<(), SubscribeError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.~:@".contains(c);
    if client_id.is_empty() || client_id.len() > 128 || !client_id.chars().all(allowed) {
        return Err(SubscribeError::InvalidClientId(client_id.to_owned()));
    }
    Ok(())
}

/// A registered subscriber's side of the hub.
pub struct Subscription {
    /// What it is sent first, in pieces: the resume position, a `reset`,
    /// history or retained states, a position marker, `complete` for
    /// finished topics. (An `Option` so a writer can drop it once sent.)
    pub replay: Option<Box<super::Replay>>,
    /// Then live events, already encoded. The queue closes when the hub
    /// ends the stream (replaced, disconnected, finished, too slow), at once
    /// when every topic asked for was already finished.
    pub events: super::queue::Receiver,
    /// Unregisters the subscriber when dropped; a stream keeps it as long
    /// as it is open.
    pub registration: Registration,
    /// When the request carried a last event id: the id the stream goes on
    /// after, or `earliest` when it could not (unknown, trimmed, or asked
    /// for). Mercure answers it as `Mercure-Last-Event-ID`.
    pub resumed_after: Option<String>,
}

impl Subscription {
    /// Everything that can be read now, without waiting: the replay whole,
    /// then what is queued. (For tests and embedders that poll; a stream's
    /// writer takes the replay piece by piece.)
    pub fn read_now(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        while let Some(replay) = &mut self.replay {
            match replay.next_piece() {
                super::Piece::Bytes(piece) => bytes.extend_from_slice(&piece),
                super::Piece::Done | super::Piece::Dropped => self.replay = None,
            }
        }
        while let Ok(more) = self.events.try_recv() {
            bytes.extend_from_slice(&more);
        }
        bytes
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("replay", &self.replay)
            .field("id", &self.registration.id)
            .finish_non_exhaustive()
    }
}

/// Unregisters the subscriber when the stream goes away, however it ends.
pub struct Registration {
    pub(super) hub: Arc<Hub>,
    pub(super) id: u64,
}

impl Registration {
    /// Counts the stream as open until this is dropped. Dropping it takes
    /// the hub's lock, so it is made last, once nothing that holds the lock
    /// can unwind any more.
    pub(super) fn new(hub: &Arc<Hub>, id: u64) -> Registration {
        hub.connections.fetch_add(1, Relaxed);
        hub.opened.fetch_add(1, Relaxed);
        Registration {
            hub: hub.clone(),
            id,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}
