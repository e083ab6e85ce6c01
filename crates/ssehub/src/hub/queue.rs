//! A subscriber's queue of encoded events: bounded, one producer (the hub,
//! under its lock) and one consumer (the connection's writer).
//!
//! It replaces tokio's bounded channel, which allocates a block of 32 slots
//! (over 1 KiB) for every subscriber up front. This queue holds a few words
//! until events are actually waiting, which is what lets an idle connection
//! stay small (docs/BENCHMARKS.md).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// A new queue holding at most `capacity` events.
pub fn queue(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            items: VecDeque::new(),
            capacity,
            sender_gone: false,
            receiver_gone: false,
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
    inner: Mutex<Inner>,
}

struct Inner {
    items: VecDeque<Bytes>,
    capacity: usize,
    sender_gone: bool,
    receiver_gone: bool,
    waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut inner = self.shared.lock();
            inner.sender_gone = true;
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The writer's end.
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// The next event; `Ready(None)` once the sender is gone and the queue is
    /// empty.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut inner = self.shared.lock();
        if let Some(bytes) = inner.items.pop_front() {
            return Poll::Ready(Some(bytes));
        }
        if inner.sender_gone {
            return Poll::Ready(None);
        }
        match &mut inner.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
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

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let (tx, mut rx) = queue(4);
        let waiter = tokio::spawn(async move { std::future::poll_fn(|cx| rx.poll_recv(cx)).await });
        tokio::task::yield_now().await;
        tx.try_send(Bytes::from_static(b"x")).unwrap();
        assert_eq!(waiter.await.unwrap().unwrap(), "x");
    }
}
