//! What a publisher sends, and the checks it must pass before the hub
//! assigns it an id.

/// What a publisher asks the hub to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publish {
    /// Topics, at least one.
    pub topics: Vec<String>,
    /// The payload.
    pub data: String,
    /// A publisher-chosen id; the hub assigns one when absent.
    pub id: Option<String>,
    /// The SSE event type.
    pub event_type: Option<String>,
    /// Reconnection time hint in milliseconds.
    pub retry: Option<u64>,
    /// Deliver only to subscribers authorized for one of the topics.
    pub private: bool,
    /// Keep as the topics' current state for new subscribers.
    pub retain: bool,
    /// The topics are finished after this event.
    pub is_final: bool,
}

/// Why a publish was refused. Nothing is stored when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No topic was given.
    #[error("at least one topic is required")]
    MissingTopic,
    /// More topics than the configured limit.
    #[error("an event may have at most {limit} topics")]
    TooManyTopics {
        /// The limit.
        limit: usize,
    },
    /// A topic is empty, contains control or format characters, or is
    /// reserved (`*`).
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A topic is longer than the configured limit.
    #[error("a topic is longer than {limit} bytes")]
    TopicTooLong {
        /// The limit.
        limit: usize,
    },
    /// The id is longer than ids may be.
    #[error("the id is longer than {limit} bytes")]
    IdTooLong {
        /// The limit.
        limit: usize,
    },
    /// The id cannot be sent or is reserved.
    #[error("invalid id: {0}")]
    InvalidId(String),
    /// The event type cannot be sent.
    #[error("invalid type: {0}")]
    InvalidType(String),
    /// The id is already used by an event the hub still holds.
    #[error("the id {0:?} is already used by an event in history")]
    DuplicateId(String),
    /// The topic was closed by a final event.
    #[error("the topic {0:?} is finished: a final event was already published")]
    TopicFinished(String),
    /// The event alone is larger than all of history may be.
    #[error(
        "the event counts {size} bytes against history, more than --history-max-bytes ({limit})"
    )]
    LargerThanHistory {
        /// What it counts.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Retained and final states fill history: a new one has no room (they
    /// are never evicted to make some).
    #[error(
        "retained and final states fill --history-max-bytes ({limit}): no room for another until \
         idle topics leave with --history-ttl, or the limit is raised"
    )]
    HistoryFull {
        /// The limit.
        limit: usize,
    },
    /// The event could not be stored; it was not published.
    #[error("the event could not be stored: {0}")]
    Unavailable(String),
    /// Redis did not answer (in time): the event may be stored and
    /// delivered, or not.
    #[error(
        "no answer from the store: {0}. The event may be published or not; publish it again \
         with the same publisher id to be sure (a 409 duplicate_id then says it is there)"
    )]
    OutcomeUnknown(String),
    /// The event is in the shared log under `id` and is delivered, but
    /// fewer Redis replicas than `--redis-wait-replicas` confirmed it in
    /// time: a failover of Redis may lose it.
    #[error(
        "the event is published as {id:?}, but only {confirmed} of {wanted} Redis replicas \
         confirmed it in time: a failover of Redis may lose it (publish it again with the same \
         publisher id to be sure: a 409 duplicate_id then says it is there)"
    )]
    NotReplicated {
        /// Its id.
        id: String,
        /// Replicas that confirmed it.
        confirmed: u32,
        /// Replicas asked for.
        wanted: u32,
    },
}

/// Limits on what may be published or subscribed to.
#[derive(Debug, Clone, Copy)]
pub struct TopicLimits {
    /// Topics per event and selectors per subscription.
    pub max_topics: usize,
    /// Bytes per topic or selector.
    pub max_topic_length: usize,
}

/// The types of the control events the hub sends itself (`frames`): a
/// publisher's event must never pass for one of them.
pub const CONTROL_TYPES: [&str; 3] = ["reset", "complete", "replaced"];

/// Event types `EventSource` fires itself: a published event with one of
/// them reaches a page's `onerror`/`onopen` as if the connection had failed
/// or opened.
pub const BROWSER_TYPES: [&str; 2] = ["error", "open"];

/// Ids in this namespace are the hub's own (such as
/// [`crate::frames::REPLACED_ID`]): an event or an acknowledgement with one
/// could pass for the hub's words.
pub const RESERVED_ID_PREFIX: &str = "urn:ssehub:";

/// Most bytes of a publisher's id: it comes back in `Last-Event-ID` headers
/// (and acknowledgements), which must stay small.
pub const MAX_ID_LENGTH: usize = 256;

/// The event type of the hub's own Mercure events (subscription events): a
/// subscriber listening for it must be able to trust it came from the hub.
pub const MERCURE_TYPE: &str = "mercure";

/// A character no topic, id, event type or matcher may contain: a control
/// character (C0, DEL, C1), which could break the stream's framing, or a
/// format character (Unicode `Cf`: zero-width and direction marks), which
/// makes two different names look the same.
pub fn is_invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.is_control() || c.general_category() == GeneralCategory::Format
}

impl Publish {
    /// Checks everything that does not depend on the hub's state.
    pub fn validate(&self, limits: TopicLimits) -> Result<(), PublishError> {
        if self.topics.is_empty() {
            return Err(PublishError::MissingTopic);
        }
        if self.topics.len() > limits.max_topics {
            return Err(PublishError::TooManyTopics {
                limit: limits.max_topics,
            });
        }
        for topic in &self.topics {
            validate_topic(topic, limits.max_topic_length)?;
        }
        if let Some(id) = &self.id {
            sse_codec::validate_id(id).map_err(|e| PublishError::InvalidId(e.to_string()))?;
            if id.chars().any(is_invisible) {
                return Err(PublishError::InvalidId(
                    "the id contains a control or invisible format character".into(),
                ));
            }
            if id.len() > MAX_ID_LENGTH {
                return Err(PublishError::IdTooLong {
                    limit: MAX_ID_LENGTH,
                });
            }
            if id.starts_with([' ', '\t']) || id.ends_with([' ', '\t']) {
                // HTTP strips them from a `Last-Event-ID`: ` earliest` would
                // come back as `earliest`, ` #2` as the hub's `#2`.
                return Err(PublishError::InvalidId(
                    "an id may not start or end with a space or a tab".into(),
                ));
            }
            if id.is_empty() {
                return Err(PublishError::InvalidId("the id is empty".into()));
            }
            if id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(PublishError::InvalidId(
                    "ids made only of digits are reserved for ids the hub assigns".into(),
                ));
            }
            if id.starts_with('#') {
                return Err(PublishError::InvalidId(
                    "ids starting with '#' are reserved for ids the hub assigns".into(),
                ));
            }
            if id == "earliest" {
                return Err(PublishError::InvalidId(
                    "\"earliest\" is reserved: as Last-Event-ID it means all history".into(),
                ));
            }
            if id.starts_with(RESERVED_ID_PREFIX) {
                return Err(PublishError::InvalidId(format!(
                    "ids starting with {RESERVED_ID_PREFIX:?} are reserved for the hub's own"
                )));
            }
        }
        if let Some(event_type) = &self.event_type {
            sse_codec::validate_event_type(event_type)
                .map_err(|e| PublishError::InvalidType(e.to_string()))?;
            if event_type.chars().any(is_invisible) {
                return Err(PublishError::InvalidType(
                    "the type contains a control or invisible format character".into(),
                ));
            }
            if event_type == MERCURE_TYPE {
                return Err(PublishError::InvalidType(
                    "\"mercure\" is the type of the hub's own events (subscription events)".into(),
                ));
            }
            if CONTROL_TYPES.contains(&event_type.as_str()) {
                return Err(PublishError::InvalidType(format!(
                    "{event_type:?} is a control event the hub sends itself"
                )));
            }
            if BROWSER_TYPES.contains(&event_type.as_str()) {
                return Err(PublishError::InvalidType(format!(
                    "{event_type:?} is EventSource's own: a browser would take the event for its \
                     connection's {event_type} and call onerror/onopen"
                )));
            }
        }
        Ok(())
    }
}

/// Checks one topic name.
pub fn validate_topic(topic: &str, max_length: usize) -> Result<(), PublishError> {
    if topic.len() > max_length {
        return Err(PublishError::TopicTooLong { limit: max_length });
    }
    let reason = if topic.is_empty() {
        "it is empty".to_owned()
    } else if topic == "*" {
        "\"*\" is the wildcard that selects every topic, so it cannot name one".to_owned()
    } else if topic.chars().any(is_invisible) {
        "it contains a control or invisible format character".to_owned()
    } else {
        return Ok(());
    };
    Err(PublishError::InvalidTopic {
        topic: topic.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TopicLimits = TopicLimits {
        max_topics: 2,
        max_topic_length: 8,
    };

    fn publish(topics: &[&str]) -> Publish {
        Publish {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Publish::default()
        }
    }

    #[test]
    fn topics_are_checked() {
        assert_eq!(
            publish(&[]).validate(LIMITS),
            Err(PublishError::MissingTopic)
        );
        assert_eq!(
            publish(&["a", "b", "c"]).validate(LIMITS),
            Err(PublishError::TooManyTopics { limit: 2 })
        );
        assert_eq!(
            publish(&["123456789"]).validate(LIMITS),
            Err(PublishError::TopicTooLong { limit: 8 })
        );
        for bad in ["*", "a\u{200b}b", "a\u{202e}", "a\u{85}"] {
            // (and a topic's length is its own error, above)
            assert!(
                matches!(
                    publish(&[bad]).validate(LIMITS),
                    Err(PublishError::InvalidTopic { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            publish(&["a\nb"]).validate(LIMITS),
            Err(PublishError::InvalidTopic { .. })
        ));
        assert_eq!(publish(&["a", "b"]).validate(LIMITS), Ok(()));
    }

    #[test]
    fn ids_and_types_are_checked() {
        let with = |id: &str, ty: &str| Publish {
            id: Some(id.into()),
            event_type: Some(ty.into()),
            ..publish(&["t"])
        };
        assert!(matches!(
            with("a\nb", "t").validate(LIMITS),
            Err(PublishError::InvalidId(_))
        ));
        assert!(matches!(
            with("a\0b", "t").validate(LIMITS),
            Err(PublishError::InvalidId(_))
        ));
        assert!(matches!(
            with("", "t").validate(LIMITS),
            Err(PublishError::InvalidId(_))
        ));
        assert!(matches!(
            with("123", "t").validate(LIMITS),
            Err(PublishError::InvalidId(_))
        ));
        assert!(matches!(
            with("a", "x\r").validate(LIMITS),
            Err(PublishError::InvalidType(_))
        ));
        for id in [
            "#1",
            "earliest",
            "a\u{200d}",
            "urn:ssehub:x",
            " earliest",
            "#2 ",
            "\ta",
        ] {
            assert!(
                matches!(
                    with(id, "t").validate(LIMITS),
                    Err(PublishError::InvalidId(_))
                ),
                "{id:?}"
            );
        }
        for ty in ["mercure", "reset", "error", "a\u{feff}"] {
            assert!(
                matches!(
                    with("a", ty).validate(LIMITS),
                    Err(PublishError::InvalidType(_))
                ),
                "{ty:?}"
            );
        }
        assert_eq!(with("urn:uuid:1", "x").validate(LIMITS), Ok(()));
    }
}
