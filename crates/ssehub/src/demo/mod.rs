//! The demo backend behind the pages at `/`: what a team's own backend would
//! do with the hub, built in so `ssehub serve` shows every scenario working.
//!
//! * [`upload`]: a multi-file upload whose processing publishes the task's
//!   state as the retained state of `tasks/{code}`; tasks a restart
//!   interrupted are published as failed.
//! * [`chat`]: an answer streamed in fragments to `chat/{id}`, scripted or
//!   relayed from an OpenAI-compatible model; unfinished scripted answers
//!   continue after a restart.
//! * [`live`]: a clock, prices, logs and the hub's own figures, published
//!   only while someone listens.
//!
//! It uses only what a team's own backend could: [`Hub::publish`] (over
//! HTTP, `POST /.well-known/mercure`), and to look around,
//! [`Hub::history`] (a subscription from `earliest`), [`Hub::stats`]
//! (`GET /v1/stats`) and [`Hub::subscriber_count`], the calls docs/API.md
//! documents for a backend that embeds the hub.

pub mod chat;
pub mod live;
mod script;
pub mod upload;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// Most demo tasks (uploads being processed, answers being written) at
/// once: the demo needs no token, so its cost must be bounded.
pub const MAX_TASKS: usize = 16;

/// Settings of the demo backend.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Delay between steps (a slice of a file, a fragment of an answer), so
    /// progress is visible.
    pub pace: Duration,
    /// Relay a real model instead of the scripted answerer.
    pub llm: Option<chat::LlmSettings>,
    /// Places for tasks; a task holds one until it is done.
    pub tasks: Arc<tokio::sync::Semaphore>,
    /// Answers being written, by chat id, and what stops each.
    pub answers: Arc<std::sync::Mutex<HashMap<String, CancellationToken>>>,
}

impl DemoSettings {
    fn answers(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An answer starts: what stops it (the user, or the hub's shutdown).
    pub fn answering(&self, chat: &str, shutdown: &CancellationToken) -> CancellationToken {
        let stop = shutdown.child_token();
        self.answers().insert(chat.to_owned(), stop.clone());
        stop
    }

    /// An answer's task is over: whether it was stopped before its end.
    pub fn answered(&self, chat: &str) -> bool {
        self.answers()
            .remove(chat)
            .is_some_and(|stop| stop.is_cancelled())
    }

    /// Stops an answer being written; false if none is.
    pub fn stop(&self, chat: &str) -> bool {
        self.answers().get(chat).map(|stop| stop.cancel()).is_some()
    }
}

/// A demo task's place, held until the task is done.
pub type TaskPlace = tokio::sync::OwnedSemaphorePermit;

/// Starts the background parts: live tickers, and continuing answers a
/// restart interrupted.
pub fn start(hub: Arc<Hub>, settings: Arc<DemoSettings>, shutdown: CancellationToken) {
    tokio::spawn(live::run(hub.clone(), shutdown.clone()));
    chat::resume_unfinished(&hub, &settings, &shutdown);
    let tasks = hub.clone();
    tokio::spawn(async move { upload::fail_interrupted(&tasks).await });
}

/// A short id, unique across restarts: time in microseconds and a counter.
pub fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:02x}", micros, n % 256)
}
