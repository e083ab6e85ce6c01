//! Abuse limits: open connections in total (kept below the open-files
//! limit) and per client address, open streams in total and per token
//! subject, and a publish rate per publisher. Each refusal is a 429 (or a
//! 503 at capacity) with a JSON error.
//!
//! Connections are counted from accept, before a byte is read, so that
//! half-open connections count too: per peer address unless the peer is a
//! trusted proxy, whose streams are counted by the client address it
//! forwards instead (see [`super::peers`]). Near the open-files limit a
//! reserve of connections is kept from streams, so publishes and health
//! checks still get in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};

use super::ApiError;
use super::peers::Client;

/// Limit values; 0 means no limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitSettings {
    /// Open streams in all.
    pub max_connections: usize,
    /// Open connections per client IP address (per /64 for IPv6).
    pub max_per_address: usize,
    /// The process's open-files limit (0: unknown): connections are kept
    /// below it, streams below it minus a reserve.
    pub open_files: usize,
    /// Open streams per token subject.
    pub max_per_subject: usize,
    /// Publishes per second per publisher (token subject, or address when
    /// anonymous); bursts up to one second's worth.
    pub publish_rate: u32,
}

/// Descriptors the process keeps for itself (the store, the listener,
/// logs): connections stop this far below the open-files limit.
const OWN_FILES: usize = 64;
/// At most this many connections are kept from streams near the limit.
const RESERVE: usize = 512;

/// Current counts and rate buckets.
pub struct Limits {
    settings: LimitSettings,
    /// Connections beyond this many are closed at accept (0: no limit).
    max_sockets: usize,
    /// Streams beyond this many are refused (0: no limit).
    max_streams: usize,
    counts: Mutex<Counts>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Default)]
struct Counts {
    /// Open connections, and per peer address (trusted proxies aside).
    sockets: usize,
    by_peer: HashMap<IpAddr, usize>,
    /// Open streams, per forwarded client address and per subject.
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    by_subject: HashMap<String, usize>,
}

/// Holds a connection's place in the counts; released when dropped.
pub struct Connection {
    limits: Arc<Limits>,
    /// The peer address, when it is counted.
    peer: Option<IpAddr>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Holds a stream's place in the counts; released when dropped.
pub struct Admission {
    limits: Arc<Limits>,
    /// The forwarded client address, when it is counted.
    address: Option<IpAddr>,
    subject: Option<String>,
}

impl Limits {
    /// Limits with these settings.
    pub fn new(settings: LimitSettings) -> Arc<Limits> {
        let max_sockets = settings.open_files.saturating_sub(OWN_FILES);
        let reserve = RESERVE.min(settings.open_files / 8);
        Arc::new(Limits {
            settings,
            max_sockets,
            // (0 would mean no limit.)
            max_streams: match max_sockets {
                0 => 0,
                sockets => sockets.saturating_sub(reserve).max(1),
            },
            counts: Mutex::default(),
            buckets: Mutex::default(),
        })
    }

    /// Connections open now (counted from accept).
    pub fn open_sockets(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sockets
    }

    /// Counts a connection just accepted from `peer`, or refuses it: at the
    /// open-files limit, or over the per-address limit (not for a trusted
    /// proxy). Nothing has been read from it yet: a refusal costs one write.
    pub fn connect(self: &Arc<Self>, peer: IpAddr, trusted: bool) -> Result<Connection, ApiError> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if over(self.max_sockets, counts.sockets) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "at_capacity",
                "the hub is at its open-files limit; retry later",
            )
            .with_header(header::RETRY_AFTER, "1"));
        }
        let peer = super::peers::counted_as(peer);
        let counted = !trusted && self.settings.max_per_address > 0;
        if counted && over(self.settings.max_per_address, count(&counts.by_peer, &peer)) {
            return Err(self.too_many_from_address());
        }
        counts.sockets += 1;
        if counted {
            *counts.by_peer.entry(peer).or_default() += 1;
        }
        Ok(Connection {
            limits: self.clone(),
            peer: counted.then_some(peer),
        })
    }

    fn too_many_from_address(&self) -> ApiError {
        too_many(
            "too_many_connections_from_address",
            format!(
                "at most {} connections per client address",
                self.settings.max_per_address
            ),
        )
    }

    /// Admits one more stream, or says which limit it would exceed. A
    /// client's connections were counted at accept, unless they came
    /// through a trusted proxy: then its streams are counted here, by the
    /// address the proxy forwards.
    pub fn admit(
        self: &Arc<Self>,
        client: Client,
        subject: Option<&str>,
    ) -> Result<Admission, ApiError> {
        let s = self.settings;
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if over(s.max_connections, counts.total) {
            return Err(too_many(
                "too_many_connections",
                format!(
                    "the hub holds its maximum of {} streams; retry later",
                    s.max_connections
                ),
            ));
        }
        if over(self.max_streams, counts.total) {
            return Err(too_many(
                "too_many_connections",
                format!(
                    "the hub holds as many streams ({}) as its open-files limit allows; retry later",
                    self.max_streams
                ),
            ));
        }
        let address = (client.forwarded && s.max_per_address > 0)
            .then(|| super::peers::counted_as(client.ip));
        if let Some(address) = address
            && over(s.max_per_address, count(&counts.by_address, &address))
        {
            return Err(self.too_many_from_address());
        }
        if let Some(subject) = subject
            && over(
                s.max_per_subject,
                count(&counts.by_subject, &subject.to_owned()),
            )
        {
            return Err(too_many(
                "too_many_connections_for_subject",
                format!("at most {} streams per token subject", s.max_per_subject),
            ));
        }
        counts.total += 1;
        if let Some(address) = address {
            *counts.by_address.entry(address).or_default() += 1;
        }
        if let Some(subject) = subject {
            *counts.by_subject.entry(subject.to_owned()).or_default() += 1;
        }
        Ok(Admission {
            limits: self.clone(),
            address,
            subject: subject.map(str::to_owned),
        })
    }

    /// Takes one publish from `publisher`'s bucket.
    pub fn publish(&self, publisher: &str) -> Result<(), ApiError> {
        let rate = f64::from(self.settings.publish_rate);
        if rate == 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // Full buckets hold no information; drop them to stay bounded.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < rate
            });
        }
        let bucket = buckets.entry(publisher.to_owned()).or_insert(Bucket {
            tokens: rate,
            updated: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * rate).min(rate);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
        Err(too_many(
            "rate_limited",
            format!(
                "at most {} publishes per second per publisher",
                self.settings.publish_rate
            ),
        )
        .with_header(header::RETRY_AFTER, &wait.as_secs().max(1).to_string()))
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if let Some(address) = &self.address {
            decrement(&mut counts.by_address, address);
        }
        if let Some(subject) = &self.subject {
            decrement(&mut counts.by_subject, subject);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.sockets -= 1;
        if let Some(peer) = &self.peer {
            decrement(&mut counts.by_peer, peer);
        }
    }
}

/// Whether `count` has reached `limit` (0: no limit).
fn over(limit: usize, count: usize) -> bool {
    limit > 0 && count >= limit
}

fn count<K: std::hash::Hash + Eq>(map: &HashMap<K, usize>, key: &K) -> usize {
    map.get(key).copied().unwrap_or(0)
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// A connection limit: connections come and go, so a client may try again
/// soon (`ssehub.js` waits for `Retry-After`; `EventSource` alone gives up).
fn too_many(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        .with_header(axum::http::header::RETRY_AFTER, RETRY_AFTER_SECONDS)
}

/// How long a client refused at a connection limit is asked to wait.
const RETRY_AFTER_SECONDS: &str = "5";

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn forwarded(ip: IpAddr) -> Client {
        Client {
            ip,
            forwarded: true,
        }
    }

    #[test]
    fn stream_limits_count_and_release() {
        let limits = Limits::new(LimitSettings {
            max_connections: 3,
            max_per_address: 2,
            max_per_subject: 1,
            ..LimitSettings::default()
        });
        let a = limits.admit(forwarded(HOME), Some("alice")).unwrap();
        assert_eq!(
            limits
                .admit(forwarded(HOME), Some("alice"))
                .err()
                .unwrap()
                .code,
            "too_many_connections_for_subject"
        );
        let _b = limits.admit(forwarded(HOME), None).unwrap();
        assert_eq!(
            limits.admit(forwarded(HOME), None).err().unwrap().code,
            "too_many_connections_from_address"
        );
        // A direct client's address was counted with its connection.
        let direct = Client {
            ip: HOME,
            forwarded: false,
        };
        let _c = limits.admit(direct, None).unwrap();
        let other: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            limits.admit(forwarded(other), None).err().unwrap().code,
            "too_many_connections"
        );
        drop(a);
        assert!(limits.admit(forwarded(other), Some("alice")).is_ok());
    }

    #[test]
    fn connections_are_counted_per_peer_unless_it_is_a_trusted_proxy() {
        let limits = Limits::new(LimitSettings {
            max_per_address: 2,
            ..LimitSettings::default()
        });
        let first = limits.connect(HOME, false).unwrap();
        let _second = limits.connect(HOME, false).unwrap();
        let refused = limits.connect(HOME, false).err().unwrap();
        assert_eq!(
            (refused.status.as_u16(), refused.code),
            (429, "too_many_connections_from_address")
        );
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let _behind: Vec<_> = (0..5)
            .map(|_| limits.connect(proxy, true).unwrap())
            .collect();
        drop(first);
        assert!(limits.connect(HOME, false).is_ok());
    }

    #[test]
    fn near_the_open_files_limit_streams_leave_a_reserve_for_other_requests() {
        // 128 descriptors: 64 for the hub itself, 64 connections, of which
        // streams may take all but a reserve of 128 / 8.
        let limits = Limits::new(LimitSettings {
            open_files: 128,
            ..LimitSettings::default()
        });
        let direct = Client {
            ip: HOME,
            forwarded: false,
        };
        let sockets: Vec<_> = (0..64)
            .map(|_| limits.connect(HOME, false).unwrap())
            .collect();
        let refused = limits.connect(HOME, false).err().unwrap();
        assert_eq!(
            (refused.status.as_u16(), refused.code),
            (503, "at_capacity")
        );
        let streams: Vec<_> = (0..48)
            .map(|_| limits.admit(direct, None).unwrap())
            .collect();
        assert_eq!(
            limits.admit(direct, None).err().unwrap().code,
            "too_many_connections"
        );
        drop((sockets, streams));
        assert!(limits.connect(HOME, false).is_ok());
    }

    #[test]
    fn publish_rate_allows_a_burst_then_refuses_with_retry_after() {
        let limits = Limits::new(LimitSettings {
            publish_rate: 5,
            ..LimitSettings::default()
        });
        for _ in 0..5 {
            limits.publish("p").unwrap();
        }
        let err = limits.publish("p").unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (429, "rate_limited"));
        assert!(
            err.headers
                .iter()
                .any(|(name, _)| name == header::RETRY_AFTER)
        );
        assert!(limits.publish("another publisher").is_ok());
    }
}
