//! Abuse limits: open streams in total, per client address and per token
//! subject, and a publish rate per publisher. Each refusal is a 429 with a
//! JSON error.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};

use super::ApiError;

/// Limit values; 0 means no limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitSettings {
    /// Open streams in all.
    pub max_connections: usize,
    /// Open streams per client IP address.
    pub max_per_address: usize,
    /// Open streams per token subject.
    pub max_per_subject: usize,
    /// Publishes per second per publisher (token subject, or address when
    /// anonymous); bursts up to one second's worth.
    pub publish_rate: u32,
}

/// Current counts and rate buckets.
pub struct Limits {
    settings: LimitSettings,
    counts: Mutex<Counts>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    by_subject: HashMap<String, usize>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Holds a stream's place in the counts; released when dropped.
pub struct Admission {
    limits: Arc<Limits>,
    address: IpAddr,
    subject: Option<String>,
}

impl Limits {
    /// Limits with these settings.
    pub fn new(settings: LimitSettings) -> Arc<Limits> {
        Arc::new(Limits {
            settings,
            counts: Mutex::default(),
            buckets: Mutex::default(),
        })
    }

    /// Admits one more stream, or says which limit it would exceed.
    pub fn admit(
        self: &Arc<Self>,
        address: IpAddr,
        subject: Option<&str>,
    ) -> Result<Admission, ApiError> {
        let s = self.settings;
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let over = |limit: usize, count: usize| limit > 0 && count >= limit;
        if over(s.max_connections, counts.total) {
            return Err(too_many(
                "too_many_connections",
                format!(
                    "the hub holds its maximum of {} streams; retry later",
                    s.max_connections
                ),
            ));
        }
        if over(
            s.max_per_address,
            counts.by_address.get(&address).copied().unwrap_or(0),
        ) {
            return Err(too_many(
                "too_many_connections_from_address",
                format!("at most {} streams per client address", s.max_per_address),
            ));
        }
        if let Some(subject) = subject
            && over(
                s.max_per_subject,
                counts.by_subject.get(subject).copied().unwrap_or(0),
            )
        {
            return Err(too_many(
                "too_many_connections_for_subject",
                format!("at most {} streams per token subject", s.max_per_subject),
            ));
        }
        counts.total += 1;
        *counts.by_address.entry(address).or_default() += 1;
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
        decrement(&mut counts.by_address, &self.address);
        if let Some(subject) = &self.subject {
            decrement(&mut counts.by_subject, subject);
        }
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

fn too_many(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn connection_limits_count_and_release() {
        let limits = Limits::new(LimitSettings {
            max_connections: 3,
            max_per_address: 2,
            max_per_subject: 1,
            publish_rate: 0,
        });
        let a = limits.admit(HOME, Some("alice")).unwrap();
        assert_eq!(
            limits.admit(HOME, Some("alice")).err().unwrap().code,
            "too_many_connections_for_subject"
        );
        let _b = limits.admit(HOME, None).unwrap();
        assert_eq!(
            limits.admit(HOME, None).err().unwrap().code,
            "too_many_connections_from_address"
        );
        let other: IpAddr = "10.0.0.1".parse().unwrap();
        let _c = limits.admit(other, None).unwrap();
        assert_eq!(
            limits.admit(other, None).err().unwrap().code,
            "too_many_connections"
        );
        drop(a);
        assert!(limits.admit(other, Some("alice")).is_ok());
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
