//! Every frame a stream carries, built in one place: an event's own bytes,
//! and the hub's control frames around them (the retry hint, the resume
//! position, `reset`, `complete`, heartbeats and a stream's last words).
//! docs/API.md describes each one; docs/WIRE-FORMAT.md the encoding rules.
//!
//! Pure: text in, bytes out, with the `sse-codec` encoder. Below the hub and
//! the store, both of which need an event's bytes.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// A published event as the wire carries it; encoded once, sent to every
/// subscriber as the same bytes.
pub fn event(
    id: &str,
    event_type: Option<&str>,
    data: &str,
    retry: Option<u64>,
) -> Result<Bytes, sse_codec::EncodeError> {
    sse_codec::Event {
        id: Some(id),
        event_type,
        data: Some(data),
        retry,
        comment: None,
    }
    .encode()
}

/// An event with no id or type, for a stored record whose fields no longer
/// encode (it was altered outside the hub): its data is still delivered.
pub fn data_only(data: &str) -> Bytes {
    sse_codec::Event::message(data)
        .encode()
        .expect("data alone always encodes")
}

/// `retry: N` without a blank line: the reconnection delay, first on every
/// stream. A blank line here would reset the browser's last event id.
pub fn retry_hint(retry: Duration) -> Bytes {
    sse_codec::Event::default()
        .retry(retry.as_millis() as u64)
        .encode()
        .expect("retry only")
}

/// A heartbeat: a bare comment line.
pub const HEARTBEAT: Bytes = Bytes::from_static(b":\n");

/// `id: X` alone, without a blank line: sent first to a resuming client, so
/// the control events after it (which carry no id) keep its position.
/// `None` for an id that cannot be written back.
pub fn resume_position(id: &str) -> Option<Bytes> {
    sse_codec::id_line(id).ok()
}

/// `id: ID` and a blank line, with the hub's id of the newest event:
/// dispatches nothing in a browser but moves its last event id there, so a
/// reconnect before the next event loses nothing.
pub fn position(id: &str) -> Bytes {
    sse_codec::Event::default()
        .id(id)
        .encode()
        .expect("a hub id is a valid id")
}

/// `event: reset`: history does not cover the client's position. The data is
/// JSON: `{"reason": ..., "topics": [...]}`; the topics' retained states
/// follow as ordinary events.
pub fn reset(reason: &str, topics: &[&str]) -> Bytes {
    let data = serde_json::json!({ "reason": reason, "topics": topics }).to_string();
    sse_codec::Event::message(&data)
        .event_type("reset")
        .encode()
        .expect("constant type")
}

/// `event: complete`, data = the topic. It has no id, so the client keeps the
/// id of the final event as its position.
pub fn complete(topic: &str) -> Bytes {
    sse_codec::Event::message(topic)
        .event_type("complete")
        .encode()
        .expect("constant type")
}

/// Why the hub ends a stream; its last words tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The hub is stopping.
    ShuttingDown,
    /// The stream reached `--max-lifetime`.
    LifetimeReached,
    /// The subscriber's token expired.
    TokenExpired,
    /// A node of a cluster loads the shared log again.
    Reloading,
}

/// The end of a stream the hub closes: when to reconnect, and why, as a
/// comment (no blank line, so nothing is dispatched).
pub fn last_words(why: StreamEnd, retry: Duration) -> Bytes {
    let comment = match why {
        StreamEnd::ShuttingDown => "the hub is shutting down; reconnect to resume",
        StreamEnd::TokenExpired => "the token has expired; reconnect with a fresh one",
        StreamEnd::LifetimeReached => "maximum connection lifetime reached; reconnect to resume",
        StreamEnd::Reloading => "this node is loading the shared log again; reconnect to resume",
    };
    let mut words = BytesMut::from(&retry_hint(retry)[..]);
    sse_codec::Event::default()
        .comment(comment)
        .encode_into(&mut words)
        .expect("a comment only");
    words.freeze()
}

/// The id a replaced stream's `replaced` event carries: a plain
/// `EventSource` that ignores the event reconnects with it as its
/// `Last-Event-ID`, and the hub refuses that reconnect (`409`), which
/// `EventSource` does not retry. So two tabs with one client id never take
/// the connection from each other in a loop.
pub const REPLACED_ID: &str = "urn:ssehub:replaced";

/// The last words of a stream replaced by a newer connection with the same
/// client id: `event: replaced`, data `{"client_id": ...}`.
pub fn replaced(client_id: &str) -> Bytes {
    let data = serde_json::json!({ "client_id": client_id }).to_string();
    sse_codec::Event::message(&data)
        .event_type("replaced")
        .id(REPLACED_ID)
        .encode()
        .expect("constant type and id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_the_documented_bytes() {
        assert_eq!(
            event("7", Some("fragment"), "a\nb", None).unwrap(),
            "event: fragment\nid: 7\ndata: a\ndata: b\n\n"
        );
        assert!(event("a\nb", None, "x", None).is_err());
        assert_eq!(retry_hint(Duration::from_millis(1500)), "retry: 1500\n");
        assert_eq!(resume_position("x-1").unwrap(), "id: x-1\n");
        assert_eq!(position("#42"), "id: #42\n\n");
        assert_eq!(
            reset("history_trimmed", &["a", "b"]),
            "event: reset\ndata: {\"reason\":\"history_trimmed\",\"topics\":[\"a\",\"b\"]}\n\n"
        );
        assert_eq!(complete("tasks/1"), "event: complete\ndata: tasks/1\n\n");
        assert_eq!(
            replaced("tab-1"),
            "event: replaced\nid: urn:ssehub:replaced\ndata: {\"client_id\":\"tab-1\"}\n\n"
        );
        assert_eq!(
            last_words(StreamEnd::ShuttingDown, Duration::from_secs(3)),
            "retry: 3000\n: the hub is shutting down; reconnect to resume\n"
        );
    }
}
