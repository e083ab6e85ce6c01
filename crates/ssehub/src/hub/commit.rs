//! Group commit: every event waiting when a write starts goes into that
//! write, so N concurrent publishers share one fsync instead of paying N.

use std::sync::{Arc, Weak};

use tokio::sync::{Notify, mpsc, oneshot};

use super::{Event, Hub};
use crate::store::{Batch, StoreError, StreamWrite};

/// Most events written in one transaction; more wait for the next.
const MAX_BATCH: usize = 4096;

/// After a failed write, how soon the next is tried with no event to carry
/// it: a disk that was full is found usable again, and the hub healthy.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A published event waiting to be made durable, or a durable stream's
/// change, or both (written in one transaction).
pub(super) struct Commit {
    pub event: Option<Arc<Event>>,
    pub streams: Vec<StreamWrite>,
    /// Told once the event is durable and delivered, or why not.
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// What a publisher is told of its commit.
pub(super) async fn outcome(
    committed: oneshot::Receiver<Result<(), StoreError>>,
) -> Result<(), super::PublishError> {
    match committed.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(super::PublishError::Unavailable(err.to_string())),
        Err(_) => Err(super::PublishError::Unavailable(
            "the hub is shutting down".into(),
        )),
    }
}

/// Writes batches until the hub is gone. Events leave the queue in id order,
/// and each batch is applied before the next is written, so delivery order
/// is id order.
pub(super) async fn run(
    hub: Weak<Hub>,
    mut queue: mpsc::UnboundedReceiver<Commit>,
    (flush, told): (Arc<Notify>, Arc<Notify>),
) {
    let mut failing = false;
    loop {
        let mut commits = Vec::new();
        tokio::select! {
            first = queue.recv() => match first {
                Some(commit) => commits.push(commit),
                None => return,
            },
            // Deletions and trims from retention, with no event to carry them.
            _ = flush.notified() => {}
            _ = tokio::time::sleep(RETRY), if failing => {}
        }
        while commits.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(commit) => commits.push(commit),
                Err(_) => break,
            }
        }
        let Some(hub) = hub.upgrade() else { return };
        let mut batch = Batch {
            append: commits.iter().filter_map(|c| c.event.clone()).collect(),
            streams: commits
                .iter_mut()
                .flat_map(|c| std::mem::take(&mut c.streams))
                .collect(),
            ..Batch::default()
        };
        {
            let mut st = hub.state();
            if let Some(pending) = st.pending.take() {
                pending.into_batch(&mut batch);
            }
            st.pending = Some(Default::default());
            batch.last_seq = batch
                .append
                .last()
                .map_or(st.applied_seq, |e| e.seq)
                .max(st.applied_seq);
            batch.forgotten_up_to = st.forgotten_up_to;
        }
        let store = hub.store.clone();
        let written = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = store.commit(&batch);
            let took = started.elapsed();
            tracing::debug!(
                events = batch.append.len(),
                deletes = batch.delete.len(),
                micros = took.as_micros() as u64,
                "store commit"
            );
            (batch, result, took)
        })
        .await;
        let written = written.map(|(batch, result, took)| {
            hub.measures.commit_seconds.observe(took.as_secs_f64());
            hub.measures
                .commit_events
                .observe(batch.append.len() as f64);
            (batch, result)
        });
        let (batch, result) = match written {
            Ok(pair) => pair,
            Err(panic) => (
                Batch::default(),
                Err(StoreError::Write(format!("the store panicked: {panic}"))),
            ),
        };
        failing = result.is_err();
        hub.store_failed(result.as_ref().err());
        let mut st = hub.state();
        match result {
            Ok(()) => {
                for event in commits.iter().filter_map(|c| c.event.as_ref()) {
                    hub.apply(&mut st, event);
                }
                drop(st);
                for commit in commits {
                    let _ = commit.done.send(Ok(()));
                }
            }
            Err(err) => {
                tracing::error!(%err, events = commits.len(), "store write failed");
                // The deletions and positions are retried with the next write.
                if let Some(pending) = &mut st.pending {
                    pending.retry(batch);
                }
                for event in commits.iter().filter_map(|c| c.event.as_ref()) {
                    hub.abandon(&mut st, event);
                }
                drop(st);
                for commit in commits {
                    let _ = commit.done.send(Err(StoreError::Write(err.to_string())));
                }
            }
        }
        // (After what failed is pending again, so a waiter sees it.)
        told.notify_waiters();
    }
}
