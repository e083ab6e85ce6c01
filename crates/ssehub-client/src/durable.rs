//! Durable Streams (the protocol ssehub serves at `/v1/stream/{name}`):
//! create, append, close, delete, metadata and reads, and an idempotent
//! [`Producer`] whose retries are never appended twice.

use std::time::Duration;

use bytes::Bytes;

use crate::{Error, Hub};

/// One durable stream of a hub.
#[derive(Debug, Clone)]
pub struct DurableStream {
    hub: Hub,
    url: String,
}

/// What the hub says of a stream after an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// The offset after the last byte (`Stream-Next-Offset`).
    pub next_offset: String,
    /// Closed: nothing more will be appended.
    pub closed: bool,
    /// The stream's content type, where the answer says it.
    pub content_type: Option<String>,
}

/// One read's answer.
#[derive(Debug, Clone)]
pub struct StreamChunk {
    /// The data (a JSON stream's messages as one JSON array).
    pub data: Bytes,
    /// Where the next read starts.
    pub next_offset: String,
    /// Everything there was has been read.
    pub up_to_date: bool,
    /// The stream is closed and this read reached its end: stop reading.
    pub closed: bool,
}

/// How a read waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Answer at once with what is there.
    No,
    /// Wait for data when there is none (the hub answers empty after its
    /// long-poll timeout).
    LongPoll,
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn state_of(response: &reqwest::Response) -> StreamState {
    StreamState {
        next_offset: header(response, "stream-next-offset").unwrap_or_default(),
        closed: header(response, "stream-closed").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        content_type: header(response, "content-type"),
    }
}

async fn checked(response: reqwest::Response) -> Result<reqwest::Response, Error> {
    if response.status().is_success() || response.status().as_u16() == 304 {
        return Ok(response);
    }
    Err(Error::Status {
        status: response.status().as_u16(),
        body: response.text().await.unwrap_or_default(),
    })
}

impl Hub {
    /// The durable stream `name` (its path under `/v1/stream/`).
    pub fn stream(&self, name: &str) -> DurableStream {
        self.stream_under("/v1/stream", name)
    }

    /// The durable stream `name` on a hub serving them under `prefix`
    /// (`--streams-prefix`).
    pub fn stream_under(&self, prefix: &str, name: &str) -> DurableStream {
        DurableStream {
            hub: self.clone(),
            url: format!("{}{}/{}", self.base, prefix.trim_end_matches('/'), name),
        }
    }
}

impl DurableStream {
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        self.hub
            .authorized(self.hub.http.request(method, &self.url))
    }

    /// Creates it with this content type, or finds it there with the same
    /// configuration (else [`Error::Status`] 409).
    pub async fn create(&self, content_type: &str) -> Result<StreamState, Error> {
        let response = self
            .request(reqwest::Method::PUT)
            .header("content-type", content_type)
            .send()
            .await?;
        Ok(state_of(&checked(response).await?))
    }

    /// Appends `data` (of the stream's content type).
    pub async fn append(
        &self,
        content_type: &str,
        data: impl Into<Bytes>,
    ) -> Result<StreamState, Error> {
        let response = self
            .request(reqwest::Method::POST)
            .header("content-type", content_type)
            .body(data.into())
            .send()
            .await?;
        Ok(state_of(&checked(response).await?))
    }

    /// Closes it: nothing more can be appended. Closing a closed stream
    /// succeeds.
    pub async fn close(&self) -> Result<StreamState, Error> {
        let response = self
            .request(reqwest::Method::POST)
            .header("stream-closed", "true")
            .send()
            .await?;
        Ok(state_of(&checked(response).await?))
    }

    /// Deletes it.
    pub async fn delete(&self) -> Result<(), Error> {
        checked(self.request(reqwest::Method::DELETE).send().await?).await?;
        Ok(())
    }

    /// Its metadata (`HEAD`).
    pub async fn head(&self) -> Result<StreamState, Error> {
        let response = self.request(reqwest::Method::HEAD).send().await?;
        Ok(state_of(&checked(response).await?))
    }

    /// Reads from `offset` (`-1` for the start, `now` for the tail, else
    /// an offset the hub gave).
    pub async fn read(&self, offset: &str, live: Live) -> Result<StreamChunk, Error> {
        let mut query = vec![("offset", offset)];
        if live == Live::LongPoll {
            query.push(("live", "long-poll"));
        }
        let response = self
            .request(reqwest::Method::GET)
            .query(&query)
            .send()
            .await?;
        let response = checked(response).await?;
        let state = state_of(&response);
        let up_to_date = header(&response, "stream-up-to-date").is_some();
        let next_offset = if state.next_offset.is_empty() {
            offset.to_owned()
        } else {
            state.next_offset
        };
        Ok(StreamChunk {
            data: response.bytes().await?,
            next_offset,
            up_to_date,
            closed: state.closed,
        })
    }

    /// An idempotent producer `id` on this stream, in `epoch` (raise it
    /// when a producer restarts without knowing its last seq).
    pub fn producer(&self, id: &str, epoch: u64, content_type: &str) -> Producer {
        Producer {
            stream: self.clone(),
            id: id.to_owned(),
            epoch,
            seq: 0,
            content_type: content_type.to_owned(),
            retries: 5,
        }
    }
}

/// Appends with `Producer-Id`, `Producer-Epoch` and `Producer-Seq`: an
/// append whose answer was lost is sent again with the same seq, and the
/// hub keeps it once (it answers the retry as a duplicate).
#[derive(Debug, Clone)]
pub struct Producer {
    stream: DurableStream,
    id: String,
    epoch: u64,
    seq: u64,
    content_type: String,
    retries: u32,
}

impl Producer {
    /// Tries each append this many more times after a failed connection
    /// (default 5), waiting 100 ms, 200 ms, ... between tries.
    pub fn with_retries(mut self, retries: u32) -> Producer {
        self.retries = retries;
        self
    }

    /// The seq the next append carries.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Appends `data`; with `close`, closes the stream with it.
    pub async fn append(
        &mut self,
        data: impl Into<Bytes>,
        close: bool,
    ) -> Result<StreamState, Error> {
        let data = data.into();
        let mut attempt = 0;
        loop {
            let mut request = self
                .stream
                .request(reqwest::Method::POST)
                .header("producer-id", &self.id)
                .header("producer-epoch", self.epoch.to_string())
                .header("producer-seq", self.seq.to_string())
                .body(data.clone());
            if !data.is_empty() {
                request = request.header("content-type", &self.content_type);
            }
            if close {
                request = request.header("stream-closed", "true");
            }
            match request.send().await {
                Ok(response) => {
                    let state = state_of(&checked(response).await?);
                    self.seq += 1;
                    return Ok(state);
                }
                // The request may or may not have reached the hub: the same
                // seq again is safe either way.
                Err(e) if attempt < self.retries && (e.is_connect() || e.is_request()) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Closes the stream (idempotent, like every append of a producer).
    pub async fn close(&mut self) -> Result<StreamState, Error> {
        self.append(Bytes::new(), true).await
    }
}
