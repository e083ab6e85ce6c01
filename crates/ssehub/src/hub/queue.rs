//! A subscriber's queue of encoded events: bounded, one producer (the hub,
//! under its lock) and one consumer (the connection's writer).
//!
//! It replaces tokio's bounded channel, which allocates a block of 32 slots
//! (over 1 KiB) for every subscriber up front. This queue holds a few words
//! until events are actually waiting, which is what lets an idle connection
//! stay small (docs/BENCHMARKS.md).
//!
//! The hub also ends streams through it: dropping the sender finishes a
//! stream after what is queued, [`Sender::end`] does the same after some
//! last words to the client (why, and when to reconnect), and
//! [`Sender::kill`] asks the writer to drop the connection at once (a
//! subscriber too slow to read anything more), whichever transport carries
//! it. And the queue counts how long
//! it has been quiet, so the hub's periodic tick can send heartbeats
//! ([`Sender::beat_if_quiet`]). That way a connection needs no timer and no
//! cancellation handle of its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// A new queue holding at most `capacity` events.
pub fn queue(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        killed: AtomicBool::new(false),
        quiet_ticks: AtomicU32::new(0),
        inner: Mutex::new(Inner {
            items: VecDeque::new(),
            capacity,
            sender_gone: false,
            receiver_gone: false,
            ending: false,
            waker: None,
        }),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct Shared {
    /// Read by the writer before each step without taking the lock.
    killed: AtomicBool,
    /// Hub ticks since something was last queued.
    quiet_ticks: AtomicU32,
    inner: Mutex<Inner>,
}

struct Inner {
    items: VecDeque<Bytes>,
    capacity: usize,
    sender_gone: bool,
    receiver_gone: bool,
    /// Set by [`Sender::end`]: the stream ends once what is queued is sent.
    ending: bool,
    /// The writer's task. One slot serves both waiting for events and
    /// watching for a kill: the same task does both.
    waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poll_killed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if self.killed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        register(&mut inner.waker, cx);
        Poll::Pending
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.wake_after(|inner| inner.items = VecDeque::new());
    }

    /// Changes the state under the lock, then wakes the writer.
    fn wake_after(&self, change: impl FnOnce(&mut Inner)) {
        let waker = {
            let mut inner = self.lock();
            change(&mut inner);
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        slot => *slot = Some(cx.waker().clone()),
    }
}

/// Why an event was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue holds `capacity` events: the subscriber is not keeping up.
    Full,
    /// The receiver is gone.
    Closed,
}

/// Why nothing was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is waiting now.
    Empty,
    /// Nothing is waiting, and the sender is gone: the stream is over.
    Disconnected,
}

/// The hub's end.
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// Queues an event without waiting.
    pub fn try_send(&self, bytes: Bytes) -> Result<(), TrySendError> {
        let waker = {
            let mut inner = self.shared.lock();
            if inner.receiver_gone {
                return Err(TrySendError::Closed);
            }
            if inner.items.len() >= inner.capacity {
                return Err(TrySendError::Full);
            }
            inner.items.push_back(bytes);
            inner.waker.take()
        };
        self.shared.quiet_ticks.store(0, Ordering::Relaxed);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Counts one tick of the hub's clock; once `beat_after` ticks have gone
    /// by with nothing queued, queues `beat`. Nothing is added to a queue
    /// that still holds events: its writer has something to write (or is
    /// stuck, and a heartbeat would not help).
    pub fn beat_if_quiet(&self, beat_after: u32, beat: &Bytes) {
        let quiet = self.shared.quiet_ticks.fetch_add(1, Ordering::Relaxed) + 1;
        if quiet < beat_after {
            return;
        }
        self.shared.quiet_ticks.store(0, Ordering::Relaxed);
        self.shared.wake_after(|inner| {
            if inner.items.is_empty() && !inner.ending {
                inner.items.push_back(beat.clone());
            }
        });
    }

    /// Ends the stream after what is queued and then `last_words`, which go
    /// in even when the queue is full. Only the first call counts.
    pub fn end(&self, last_words: Bytes) {
        self.shared.wake_after(|inner| {
            if !inner.ending && !inner.receiver_gone {
                inner.ending = true;
                inner.items.push_back(last_words);
            }
        });
    }

    /// Asks the writer to close the connection now, dropping what is queued.
    pub fn kill(&self) {
        self.shared.kill();
    }

    /// A handle that can still kill the stream once the hub has let go of
    /// it (dropped this sender, or ended it), while its writer delivers the
    /// last bytes; it does not keep the stream open.
    pub fn watch(&self) -> Watch {
        Watch {
            shared: self.shared.clone(),
        }
    }

    /// Whether the writer is gone (the connection closed).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().receiver_gone
    }
}

/// See [`Sender::watch`].
pub struct Watch {
    shared: Arc<Shared>,
}

impl Watch {
    /// Whether the writer is gone: the stream is over.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().receiver_gone
    }

    /// Asks the writer to close the connection now.
    pub fn kill(&self) {
        self.shared.kill();
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.wake_after(|inner| inner.sender_gone = true);
    }
}

/// The writer's end.
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// The next event; `Ready(None)` once the queue is empty and the sender
    /// is gone or the hub ended the stream.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut inner = self.shared.lock();
        if let Some(bytes) = inner.items.pop_front() {
            return Poll::Ready(Some(bytes));
        }
        if inner.sender_gone || inner.ending {
            return Poll::Ready(None);
        }
        register(&mut inner.waker, cx);
        Poll::Pending
    }

    /// Closes the connection at once, as a kill from the hub does: for a
    /// writer that cannot go on (its replay left history before it was read).
    pub fn kill(&self) {
        self.shared.kill();
    }

    /// Whether the hub asked for the connection to be closed.
    pub fn is_killed(&self) -> bool {
        self.shared.killed.load(Ordering::Acquire)
    }

    /// Ready once the hub asks for the connection to be closed; for a writer
    /// waiting on a socket that may never drain.
    pub fn poll_killed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.poll_killed(cx)
    }

    /// A handle that sees the hub's kill of this stream, for a connection
    /// that must close its socket while the writer itself is not polled
    /// (hyper does not poll a body while its socket does not drain). It must
    /// be polled by the writer's own task: the queue keeps one waker.
    pub fn kill_signal(&self) -> KillSignal {
        KillSignal {
            shared: self.shared.clone(),
        }
    }

    /// The next event, if one is waiting.
    pub fn try_recv(&mut self) -> Result<Bytes, TryRecvError> {
        let mut inner = self.shared.lock();
        match inner.items.pop_front() {
            Some(bytes) => Ok(bytes),
            None if inner.sender_gone => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

/// See [`Receiver::kill_signal`].
pub struct KillSignal {
    shared: Arc<Shared>,
}

impl KillSignal {
    /// Ready once the hub asks for the connection to be closed.
    pub fn poll_killed(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.poll_killed(cx)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.receiver_gone = true;
        inner.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_order_and_closed_by_either_end() {
        let (tx, mut rx) = queue(2);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        tx.try_send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(
            tx.try_send(Bytes::from_static(b"c")),
            Err(TrySendError::Full)
        );
        assert_eq!(rx.try_recv().unwrap(), "a");
        drop(tx);
        // What was queued is still delivered, then the end.
        assert_eq!(rx.try_recv().unwrap(), "b");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

        let (tx, rx) = queue(2);
        drop(rx);
        assert_eq!(tx.try_send(Bytes::new()), Err(TrySendError::Closed));
    }

    #[test]
    fn last_words_come_after_what_is_queued_even_when_full() {
        let (tx, mut rx) = queue(1);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        tx.end(Bytes::from_static(b"bye"));
        tx.end(Bytes::from_static(b"again"));
        // Nothing more is queued once the stream is ending.
        tx.beat_if_quiet(1, &Bytes::from_static(b":\n"));
        let mut cx = Context::from_waker(Waker::noop());
        let mut got = Vec::new();
        while let Poll::Ready(Some(bytes)) = rx.poll_recv(&mut cx) {
            got.push(bytes);
        }
        assert_eq!(got, ["a", "bye"]);
        assert!(!rx.is_killed());
    }

    #[test]
    fn a_heartbeat_goes_only_to_a_queue_quiet_for_long_enough() {
        let beat = Bytes::from_static(b":\n");
        let (tx, mut rx) = queue(4);
        tx.beat_if_quiet(3, &beat);
        tx.beat_if_quiet(3, &beat);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        // An event restarts the count.
        tx.try_send(Bytes::from_static(b"e")).unwrap();
        tx.beat_if_quiet(3, &beat);
        tx.beat_if_quiet(3, &beat);
        assert_eq!(rx.try_recv().unwrap(), "e");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        tx.beat_if_quiet(3, &beat);
        assert_eq!(rx.try_recv().unwrap(), beat);
        // A queue with events waiting gets no heartbeat on top.
        tx.try_send(Bytes::from_static(b"f")).unwrap();
        for _ in 0..3 {
            tx.beat_if_quiet(3, &beat);
        }
        assert_eq!(rx.try_recv().unwrap(), "f");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_kill_drops_what_is_queued() {
        let (tx, mut rx) = queue(4);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(rx.poll_killed(&mut cx), Poll::Pending);
        tx.kill();
        assert!(rx.is_killed());
        assert_eq!(rx.poll_killed(&mut cx), Poll::Ready(()));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[tokio::test]
    async fn a_writer_waiting_for_a_kill_is_woken() {
        let (tx, mut rx) = queue(4);
        let waiter =
            tokio::spawn(async move { std::future::poll_fn(|cx| rx.poll_killed(cx)).await });
        tokio::task::yield_now().await;
        tx.kill();
        waiter.await.unwrap();
    }

    #[test]
    fn a_kill_signal_sees_the_kill_without_the_receiver() {
        let (tx, rx) = queue(4);
        let signal = rx.kill_signal();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(signal.poll_killed(&mut cx), Poll::Pending);
        tx.kill();
        assert_eq!(signal.poll_killed(&mut cx), Poll::Ready(()));
        drop(rx);
        assert_eq!(signal.poll_killed(&mut cx), Poll::Ready(()));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let (tx, mut rx) = queue(4);
        let waiter = tokio::spawn(async move { std::future::poll_fn(|cx| rx.poll_recv(cx)).await });
        tokio::task::yield_now().await;
        tx.try_send(Bytes::from_static(b"x")).unwrap();
        assert_eq!(waiter.await.unwrap().unwrap(), "x");
    }
}
