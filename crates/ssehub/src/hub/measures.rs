//! What the hub times and sizes, for `/metrics`: each a histogram that
//! costs one short lock per observation (per publish, per store write, per
//! event a node reads from the shared log), never per connection or per
//! delivery. The counters and sizes are in [`super::Stats`].

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// The hub's histograms; cloning one shares it.
pub struct Measures {
    /// From a publish's arrival at the hub to its acknowledgement: durable
    /// (or in the shared log) and delivered to the subscribers' queues.
    pub publish_seconds: Histogram,
    /// One write of the durable store (one group commit).
    pub commit_seconds: Histogram,
    /// Events in one write of the durable store.
    pub commit_events: Histogram,
    /// On a node of a cluster: from an event's publish (on any node) to its
    /// apply on this node.
    pub log_lag_seconds: Histogram,
}

impl Default for Measures {
    fn default() -> Measures {
        // 25 µs to 13 s, doubling: a publish to the memory store takes tens
        // of microseconds, one waiting for an fsync or Redis milliseconds.
        let seconds = || Histogram::new(exponential_buckets(0.000_025, 2.0, 20));
        Measures {
            publish_seconds: seconds(),
            commit_seconds: seconds(),
            // 1 to 4096 events (the most one write takes).
            commit_events: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            log_lag_seconds: seconds(),
        }
    }
}
