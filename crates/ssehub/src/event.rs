//! A published event, and the record the store keeps of it: the one type
//! both the hub and the store know, so neither imports the other's. The
//! conversions between the two forms, both ways, are here and nowhere else.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::frames;

/// A published event. It is encoded once, at publish time; every subscriber
/// is sent the same `wire` bytes.
#[derive(Debug)]
pub struct Event {
    /// Position in the hub's total order of events; ids of one stream follow it.
    pub seq: u64,
    /// The SSE id: the publisher's, or the decimal `seq`.
    pub id: String,
    /// Every topic the event was published to.
    pub topics: Vec<String>,
    /// The SSE event type, if not `message`.
    pub event_type: Option<String>,
    /// The payload.
    pub data: String,
    /// Reconnection time hint for clients, in milliseconds.
    pub retry: Option<u64>,
    /// Only subscribers authorized for one of its topics receive it.
    pub private: bool,
    /// Kept as the current state of its topics.
    pub retain: bool,
    /// Closes its topics.
    pub is_final: bool,
    /// When it was published, for age-based retention.
    pub published_at: SystemTime,
    /// The encoded event.
    pub wire: Bytes,
}

/// An event as stored: everything needed to rebuild it, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    /// Position in the hub's order.
    pub seq: u64,
    /// The SSE id.
    pub id: String,
    /// Topics.
    pub topics: Vec<String>,
    /// SSE event type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Payload.
    pub data: String,
    /// Reconnection hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
    /// Private update.
    #[serde(default)]
    pub private: bool,
    /// Retained state.
    #[serde(default)]
    pub retain: bool,
    /// Final event of its topics.
    #[serde(default, rename = "final")]
    pub is_final: bool,
    /// Publish time, milliseconds since the Unix epoch.
    pub published_at_ms: u64,
}

/// A time as stored: milliseconds since the Unix epoch.
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Event {
    /// The stored form.
    pub fn to_stored(&self) -> StoredEvent {
        StoredEvent {
            seq: self.seq,
            id: self.id.clone(),
            topics: self.topics.clone(),
            event_type: self.event_type.clone(),
            data: self.data.clone(),
            retry: self.retry,
            private: self.private,
            retain: self.retain,
            is_final: self.is_final,
            published_at_ms: millis(self.published_at),
        }
    }

    /// The event back from its stored form, encoded again for the wire.
    pub fn from_stored(stored: StoredEvent) -> Event {
        let wire = frames::event(
            &stored.id,
            stored.event_type.as_deref(),
            &stored.data,
            stored.retry,
        )
        // Stored events were validated when published; a record that fails
        // here was altered outside the hub, and is sent without the bad
        // fields rather than not at all.
        .unwrap_or_else(|err| {
            tracing::warn!(seq = stored.seq, %err, "stored event has an invalid field");
            frames::data_only(&stored.data)
        });
        Event {
            seq: stored.seq,
            id: stored.id,
            topics: stored.topics,
            event_type: stored.event_type,
            data: stored.data,
            retry: stored.retry,
            private: stored.private,
            retain: stored.retain,
            is_final: stored.is_final,
            published_at: UNIX_EPOCH + Duration::from_millis(stored.published_at_ms),
            wire,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_survives_its_stored_form() {
        let stored = StoredEvent {
            seq: 9,
            id: "order-9".into(),
            topics: vec!["a".into(), "b".into()],
            event_type: Some("state".into()),
            data: "line 1\nline 2 🎉".into(),
            retry: Some(500),
            private: true,
            retain: true,
            is_final: false,
            published_at_ms: 1_700_000_000_123,
        };
        let event = Event::from_stored(stored.clone());
        assert_eq!(
            event.wire,
            "event: state\nid: order-9\nretry: 500\ndata: line 1\ndata: line 2 🎉\n\n"
        );
        assert_eq!(event.to_stored(), stored);
    }

    #[test]
    fn a_record_altered_outside_the_hub_still_delivers_its_data() {
        let stored = StoredEvent {
            seq: 1,
            id: "bad\nid".into(),
            topics: vec!["a".into()],
            event_type: None,
            data: "kept".into(),
            retry: None,
            private: false,
            retain: false,
            is_final: false,
            published_at_ms: 0,
        };
        assert_eq!(Event::from_stored(stored).wire, "data: kept\n\n");
    }
}
