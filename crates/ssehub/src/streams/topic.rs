//! A stream as a Mercure topic: the topic is the stream's URL on the hub,
//! each change that adds data is an event on it whose id names the offset
//! after that data ([`event_id`]), and the close is the topic's final event. The hub writes the
//! change and the event together (`Hub::commit_stream`).

use std::sync::Arc;

use crate::hub::{Hub, Publish, PublishError, StreamCommit};
use crate::store::{StoreError, StreamWrite};

use super::{Chunk, Record, StreamError, content, offset};

/// The id of a stream's event: the offset after its data, `@` and the
/// stream's creation (ids are the hub's, across all topics: two streams,
/// or two creations of one, reach the same offsets). A close that adds no
/// data ends in `:closed`, since the offset alone is the event's before it.
pub fn event_id(creation: u64, tail: u64, adds_data: bool) -> String {
    let closed = if adds_data { "" } else { ":closed" };
    format!("{}@{creation:016x}{closed}", offset::encode(tail))
}

/// The topic a stream is: its URL on the hub.
pub fn of(hub_url: &url::Url, prefix: &str, name: &str) -> String {
    let path = format!("{prefix}/{name}");
    hub_url.join(&path).map_or(path, |url| url.to_string())
}

/// Where the streams' topics are.
#[derive(Clone)]
pub struct Topics {
    /// The hub that delivers and stores their events.
    pub hub: Arc<Hub>,
    /// The hub's URL, that topics are resolved against.
    pub hub_url: url::Url,
    /// `--streams-prefix`.
    pub prefix: String,
    /// The events are private: reading a stream needs a grant (no `--dev`).
    pub private: bool,
}

/// What a change shows on a stream's topic.
pub(super) enum Shown<'a> {
    /// `chunks` were added to the stream `name` (its record as after the
    /// change); `closed` when the change closed it. A new stream's topic
    /// starts afresh.
    Data {
        name: &'a str,
        record: &'a Record,
        chunks: &'a [Chunk],
        closed: bool,
        created: bool,
    },
    /// These streams went: their topics' history goes too.
    Gone(Vec<String>),
}

impl Topics {
    fn topic(&self, name: &str) -> String {
        of(&self.hub_url, &self.prefix, name)
    }

    /// Writes `writes` with the event the change makes on its topic.
    pub(super) async fn commit(
        &self,
        writes: Vec<StreamWrite>,
        shown: Shown<'_>,
    ) -> Result<(), StreamError> {
        let mut commit = StreamCommit {
            writes,
            ..StreamCommit::default()
        };
        match shown {
            Shown::Gone(names) => commit.clear = names.iter().map(|n| self.topic(n)).collect(),
            Shown::Data {
                name,
                record,
                chunks,
                closed,
                created,
            } => {
                let topic = self.topic(name);
                if created {
                    commit.clear.push(topic.clone());
                }
                if !chunks.is_empty() || closed {
                    commit.event = Some(self.event(topic, record, chunks, closed));
                }
            }
        }
        self.hub
            .commit_stream(commit)
            .await
            .map(drop)
            .map_err(refused)
    }

    fn event(&self, topic: String, record: &Record, chunks: &[Chunk], closed: bool) -> Publish {
        let pieces: Vec<bytes::Bytes> = chunks.iter().map(|c| c.data.clone()).collect();
        Publish {
            topics: vec![topic],
            data: content::as_text(&record.content_type, &pieces),
            id: Some(event_id(record.id, record.tail, !chunks.is_empty())),
            private: self.private,
            is_final: closed,
            ..Publish::default()
        }
    }
}

fn refused(error: PublishError) -> StreamError {
    match error {
        PublishError::Unavailable(reason) => StreamError::Store(StoreError::Write(reason)),
        full @ (PublishError::LargerThanHistory { .. } | PublishError::HistoryFull { .. }) => {
            StreamError::Full(format!("the stream's topic has no room: {full}"))
        }
        other => StreamError::Topic(other.to_string()),
    }
}
