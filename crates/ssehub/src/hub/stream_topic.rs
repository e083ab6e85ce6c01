//! A durable stream's topic (`crate::streams`): each change of a stream is
//! written in the same transaction as the event it makes on the topic of
//! the stream's URL, so a Mercure subscriber of that topic sees exactly the
//! stream's data, through crashes too.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Event, Hub, Publish, PublishError, commit};
use crate::store::StreamWrite;

/// A durable stream's change, and what it does to its topic.
#[derive(Debug, Default)]
pub struct StreamCommit {
    /// The stream's records and data to write.
    pub writes: Vec<StreamWrite>,
    /// Topics whose history, state and end go first: their streams were
    /// just created, or went.
    pub clear: Vec<String>,
    /// The event the change publishes on the stream's topic.
    pub event: Option<Publish>,
}

impl Hub {
    /// Writes a durable stream's change with its topic's event (on a
    /// durable store, in one transaction) and delivers the event. Nothing
    /// is written when it fails.
    pub async fn commit_stream(
        &self,
        commit: StreamCommit,
    ) -> Result<Option<Arc<Event>>, PublishError> {
        if self.cluster.is_some() {
            return Err(PublishError::Unavailable(
                "durable streams are not served by a node of a cluster".into(),
            ));
        }
        let StreamCommit {
            writes,
            clear,
            event,
        } = commit;
        if let Some(publish) = event {
            publish.validate(self.config.limits)?;
            return self.publish_here(publish, &clear, writes).await.map(Some);
        }
        let committed = {
            let mut st = self.state();
            for topic in &clear {
                st.clear_topic(topic);
            }
            let Some(commits) = &self.commits else {
                return Ok(None);
            };
            if writes.is_empty() && clear.is_empty() {
                return Ok(None);
            }
            let (done, committed) = oneshot::channel();
            commits
                .send(commit::Commit {
                    event: None,
                    streams: writes,
                    done,
                })
                .map_err(|_| PublishError::Unavailable("the hub is shutting down".into()))?;
            committed
        };
        commit::outcome(committed).await.map(|()| None)
    }
}
