//! Multi-file upload processing: hash each file in paced steps and publish
//! the task's state (per-file status, current step, finished) as the
//! retained state of `tasks/{code}`. A page that reloads gets the current
//! state at once; the last state is `final`, which ends every stream: the
//! task finished, or failed with a reason. A task a restart interrupted
//! cannot continue (its files were in memory), so it is published as failed
//! at startup: no page is left watching a "working" state forever.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use futures_util::StreamExt;

use crate::hub::{Hub, Publish, Selector};

/// Steps per file, whatever its size, so small files show progress too.
const STEPS: usize = 20;

/// A file as uploaded.
pub struct UploadedFile {
    /// Its name, as the browser sent it.
    pub name: String,
    /// Its bytes.
    pub bytes: Bytes,
}

#[derive(Serialize, Clone)]
struct FileState {
    name: String,
    size: usize,
    /// `waiting`, `hashing`, `done` or `failed`.
    status: &'static str,
    /// 0 to 1.
    progress: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

/// Marks the states this worker publishes: at startup it fails only its
/// own unfinished tasks, never another application's `tasks/...` topics.
const WORKER: &str = "ssehub-demo";

#[derive(Serialize)]
struct TaskState<'a> {
    /// Always [`WORKER`].
    worker: &'static str,
    code: &'a str,
    step: String,
    /// The last state: `failed` says whether the task did its work.
    finished: bool,
    failed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    files: &'a [FileState],
}

/// A task's state as read back from history.
#[derive(serde::Deserialize)]
struct Stored {
    worker: String,
    finished: bool,
    files: Vec<StoredFile>,
}

#[derive(serde::Deserialize)]
struct StoredFile {
    name: String,
    size: usize,
    status: String,
    progress: f64,
    sha256: Option<String>,
}

/// Why a task a restart interrupted failed, as the page shows it.
const INTERRUPTED: &str = "the hub restarted while this task was running, and its files were \
    only in memory: upload them again";

/// The topic of a task.
pub fn topic(code: &str) -> String {
    format!("tasks/{code}")
}

/// Publishes the first state and starts processing; returns the task code.
pub async fn start(
    hub: Arc<Hub>,
    files: Vec<UploadedFile>,
    pace: Duration,
    place: super::TaskPlace,
) -> Result<String, String> {
    let code = super::new_id();
    let mut states: Vec<FileState> = files
        .iter()
        .map(|f| FileState {
            name: f.name.clone(),
            size: f.bytes.len(),
            status: "waiting",
            progress: 0.0,
            sha256: None,
        })
        .collect();
    publish(
        &hub,
        &code,
        "received, waiting to start".into(),
        false,
        &states,
    )
    .await?;
    let worker_code = code.clone();
    tokio::spawn(async move {
        let _place = place;
        if let Err(err) = process(&hub, &worker_code, files, &mut states, pace).await {
            tracing::warn!(code = %worker_code, %err, "demo upload task stopped");
            for file in states.iter_mut().filter(|f| f.status != "done") {
                file.status = "failed";
            }
            let state = TaskState {
                worker: WORKER,
                code: &worker_code,
                step: "failed".into(),
                finished: true,
                failed: true,
                error: Some(err),
                files: &states,
            };
            let _ = publish_state(&hub, &state).await;
        }
    });
    Ok(code)
}

/// After a restart: every task whose last state is not final is published
/// as failed, with the reason, as its final state. What is unfinished is
/// read from history, as a remote backend would (subscribing to
/// `tasks/{code}` from `earliest`).
pub async fn fail_interrupted(hub: &Hub) {
    let every_task = Selector::parse("tasks/{code}").expect("a valid template");
    let history = hub.history(&[every_task]).unwrap_or_else(|err| {
        tracing::warn!(%err, "cannot read the tasks' history: none is closed");
        Vec::new()
    });
    let mut last: std::collections::BTreeMap<&str, &crate::hub::Event> = Default::default();
    for event in &history {
        for topic in event.topics.iter().filter(|t| t.starts_with("tasks/")) {
            last.insert(topic, event);
        }
    }
    // Only this worker's tasks whose last state says they were running.
    let interrupted: Vec<(String, Stored)> = last
        .into_iter()
        .filter(|(_, event)| !event.is_final && event.event_type.as_deref() == Some("state"))
        .filter_map(|(topic, event)| {
            let stored: Stored = serde_json::from_str(&event.data).ok()?;
            (stored.worker == WORKER && !stored.finished)
                .then(|| (topic.trim_start_matches("tasks/").to_owned(), stored))
        })
        .collect();
    if interrupted.is_empty() {
        return;
    }
    tracing::info!(
        tasks = interrupted.len(),
        "failing the demo tasks a restart interrupted"
    );
    // Published together, so group commit writes them in a few batches.
    futures_util::stream::iter(interrupted)
        .map(|(code, stored)| fail(hub, code, stored))
        .buffer_unordered(256)
        .collect::<Vec<()>>()
        .await;
}

/// Publishes an interrupted task as failed: its files not done, failed.
async fn fail(hub: &Hub, code: String, stored: Stored) {
    let files: Vec<FileState> = stored
        .files
        .into_iter()
        .map(|f| FileState {
            status: if f.status == "done" { "done" } else { "failed" },
            name: f.name,
            size: f.size,
            progress: f.progress,
            sha256: f.sha256,
        })
        .collect();
    let state = TaskState {
        worker: WORKER,
        code: &code,
        step: "failed".into(),
        finished: true,
        failed: true,
        error: Some(INTERRUPTED.into()),
        files: &files,
    };
    if let Err(err) = publish_state(hub, &state).await {
        tracing::warn!(code, %err, "could not close an interrupted task");
    }
}

async fn process(
    hub: &Hub,
    code: &str,
    files: Vec<UploadedFile>,
    states: &mut [FileState],
    pace: Duration,
) -> Result<(), String> {
    let count = files.len();
    for (i, file) in files.iter().enumerate() {
        states[i].status = "hashing";
        let mut hasher = Sha256::new();
        let slice = file.bytes.len().div_ceil(STEPS).max(1);
        for (step, chunk) in file.bytes.chunks(slice).enumerate() {
            hasher.update(chunk);
            tokio::time::sleep(pace).await;
            states[i].progress =
                ((step + 1) * slice).min(file.bytes.len()) as f64 / file.bytes.len().max(1) as f64;
            let step = format!("hashing {} ({} of {count})", file.name, i + 1);
            publish(hub, code, step, false, states).await?;
        }
        if file.bytes.is_empty() {
            tokio::time::sleep(pace).await;
        }
        states[i].status = "done";
        states[i].progress = 1.0;
        states[i].sha256 = Some(format!("{:x}", hasher.finalize()));
    }
    publish(
        hub,
        code,
        format!("all {count} files processed"),
        true,
        states,
    )
    .await
}

async fn publish(
    hub: &Hub,
    code: &str,
    step: String,
    finished: bool,
    files: &[FileState],
) -> Result<(), String> {
    let state = TaskState {
        worker: WORKER,
        code,
        step,
        finished,
        failed: false,
        error: None,
        files,
    };
    publish_state(hub, &state).await
}

/// The task's state as the retained state of its topic; a finished one as
/// the final event.
async fn publish_state(hub: &Hub, state: &TaskState<'_>) -> Result<(), String> {
    hub.publish(Publish {
        topics: vec![topic(state.code)],
        data: serde_json::to_string(state).expect("plain struct"),
        event_type: Some("state".into()),
        retain: true,
        is_final: state.finished,
        ..Publish::default()
    })
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}
