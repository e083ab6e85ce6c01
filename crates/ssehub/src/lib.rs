//! ssehub: a Server-Sent Events hub.
//!
//! Backends publish events over HTTP; browsers subscribe with `EventSource`.
//! Data flows one way: the HTTP edge ([`http`]) turns requests into hub calls;
//! the [`hub`] assigns ids, keeps history and fans events out to per-connection
//! queues; each connection's writer sends what is queued. Below the hub, the
//! [`store`] keeps history; both know an [`event`] as one record, and every
//! frame a stream carries is built in [`frames`]. The wire format itself
//! lives in the `sse-codec` crate.
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod demo;
pub mod event;
pub mod frames;
pub mod http;
pub mod hub;
pub mod store;
pub mod streams;
