//! Multi-file upload processing: hash each file in paced steps and publish
//! the task's state (per-file status, current step, finished) as the
//! retained state of `tasks/{code}`. A page that reloads gets the current
//! state at once; the last state is `final`, which ends every stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::hub::{Hub, Publish};

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
    /// `waiting`, `hashing` or `done`.
    status: &'static str,
    /// 0 to 1.
    progress: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

#[derive(Serialize)]
struct TaskState<'a> {
    code: &'a str,
    step: String,
    finished: bool,
    files: &'a [FileState],
}

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
        }
    });
    Ok(code)
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
        code,
        step,
        finished,
        files,
    };
    hub.publish(Publish {
        topics: vec![topic(code)],
        data: serde_json::to_string(&state).expect("plain struct"),
        event_type: Some("state".into()),
        retain: true,
        is_final: finished,
        ..Publish::default()
    })
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}
