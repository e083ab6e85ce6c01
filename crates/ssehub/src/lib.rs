//! ssehub: a Server-Sent Events hub.
//!
//! Backends publish events over HTTP; browsers subscribe with `EventSource`.
//! Data flows one way: the HTTP edge ([`http`]) turns requests into hub calls;
//! the [`hub`] assigns ids, keeps history and fans events out to per-connection
//! queues; each connection's writer sends what is queued. The wire format
//! lives in the `sse-codec` crate.
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod demo;
pub mod http;
pub mod hub;
pub mod store;
