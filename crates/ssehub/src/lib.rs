//! ssehub: a Server-Sent Events hub.
//!
//! Backends publish events over HTTP; browsers subscribe with `EventSource`.
//! This crate holds the hub and its command-line interface; the wire format
//! lives in the `sse-codec` crate.
#![deny(missing_docs)]

pub mod cli;
