//! A Rust client for ssehub (and any Mercure hub).
//!
//! * [`Hub::publish`] posts an event and returns its id.
//! * [`Hub::connect`] opens one event stream, with no reconnection: for tests
//!   and tools that want to see exactly what one connection carries.
//! * [`Hub::subscribe`] behaves like a browser's `EventSource`: it reconnects
//!   after the server's `retry` delay, sends `Last-Event-ID`, and stops when
//!   every topic it asked for has sent `complete`.
//! * [`Hub::stream`] is a Durable Stream: create, append, close, read, and
//!   an idempotent [`Producer`] (see [`durable`]).
#![deny(missing_docs)]

pub mod durable;

pub use durable::{DurableStream, Live, Producer, StreamChunk, StreamState};

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Serialize;
pub use sse_codec::{Item, ParsedEvent};

/// What can go wrong talking to a hub.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The hub could not be reached or the connection broke.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The hub answered with an error status.
    #[error("the hub answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The answer body (a JSON error from ssehub).
        body: String,
    },
    /// The hub answered a subscription with something that is not an event stream.
    #[error("the answer is not text/event-stream but {0:?}")]
    NotEventStream(String),
    /// The stream sent an event (or a line) larger than [`MAX_EVENT_SIZE`];
    /// it was dropped, and the connection with it.
    #[error("the stream sent an event larger than {MAX_EVENT_SIZE} bytes")]
    EventTooLarge,
}

/// Most bytes one event (or one unfinished line) may take while it is read:
/// a broken or hostile server could otherwise send a line that never ends
/// and exhaust the client's memory.
pub const MAX_EVENT_SIZE: usize = 16 << 20;

/// An event to publish. Serialized as ssehub's JSON publish body.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Publish {
    /// Topics, at least one.
    pub topic: Vec<String>,
    /// The payload.
    pub data: String,
    /// A chosen id (the hub assigns one when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The SSE event type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Reconnection hint in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
    /// Only for authorized subscribers.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// Keep as the topic's current state.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retain: bool,
    /// Close the topic after this event.
    #[serde(rename = "final", skip_serializing_if = "std::ops::Not::not")]
    pub is_final: bool,
}

impl Publish {
    /// An event with one topic and data.
    pub fn new(topic: impl Into<String>, data: impl Into<String>) -> Publish {
        Publish {
            topic: vec![topic.into()],
            data: data.into(),
            ..Publish::default()
        }
    }
}

/// What to subscribe to.
#[derive(Debug, Clone, Default)]
pub struct Subscribe {
    /// Topic selectors (`topic=`): exact topics, `*`, or URI templates.
    pub topics: Vec<String>,
    /// Resume after this id.
    pub last_event_id: Option<String>,
    /// A client id for a per-client channel.
    pub client_id: Option<String>,
}

impl Subscribe {
    /// Subscribes to these topics.
    pub fn topics<I: IntoIterator<Item = S>, S: Into<String>>(topics: I) -> Subscribe {
        Subscribe {
            topics: topics.into_iter().map(Into::into).collect(),
            ..Subscribe::default()
        }
    }
}

/// A hub at a base URL such as `http://127.0.0.1:8080`.
#[derive(Debug, Clone)]
pub struct Hub {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Hub {
    /// A hub at `base` (scheme, host, port).
    pub fn new(base: &str) -> Hub {
        Hub {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// Uses `http` for every request: your own timeouts, proxy, TLS roots or
    /// connection pool settings.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Hub {
        self.http = http;
        self
    }

    /// Sends `Authorization: Bearer TOKEN` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Hub {
        self.token = Some(token.into());
        self
    }

    fn endpoint(&self) -> String {
        format!("{}/.well-known/mercure", self.base)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Publishes and returns the event id.
    pub async fn publish(&self, event: &Publish) -> Result<String, Error> {
        let body = serde_json::to_vec(event).expect("plain struct");
        let response = self
            .authorized(self.http.post(self.endpoint()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(Error::Status {
                status: status.as_u16(),
                body: text,
            })
        }
    }

    /// Opens one event stream; no reconnection.
    pub async fn connect(&self, options: &Subscribe) -> Result<Connection, Error> {
        let mut query: Vec<(&str, &str)> = options
            .topics
            .iter()
            .map(|t| ("topic", t.as_str()))
            .collect();
        if let Some(client_id) = &options.client_id {
            query.push(("client_id", client_id));
        }
        let mut request = self
            .authorized(self.http.get(self.endpoint()))
            .query(&query)
            .header("accept", "text/event-stream");
        if let Some(id) = &options.last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(Error::Status {
                status: status.as_u16(),
                body,
            });
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !content_type.starts_with("text/event-stream") {
            return Err(Error::NotEventStream(content_type));
        }
        Ok(Connection {
            body: response.bytes_stream().boxed(),
            parser: sse_codec::Parser::with_max_event_size(MAX_EVENT_SIZE),
            pending: VecDeque::new(),
            position: String::new(),
        })
    }

    /// Subscribes like `EventSource`: reconnects and resumes until every
    /// topic is complete (or forever, with a wildcard selector).
    pub fn subscribe(&self, options: Subscribe) -> Subscription {
        let open_topics = options
            .topics
            .iter()
            .filter(|t| *t != "*" && !t.contains('{'))
            .cloned()
            .collect();
        let wildcard = options.topics.iter().any(|t| t == "*" || t.contains('{'));
        Subscription {
            hub: self.clone(),
            last_event_id: options.last_event_id.clone(),
            options,
            connection: None,
            retry: Duration::from_secs(3),
            open_topics,
            wildcard,
            connected_once: false,
            done: false,
        }
    }
}

/// One open event stream.
pub struct Connection {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: sse_codec::Parser,
    /// Parsed but not yet handed to the caller.
    pending: VecDeque<Item>,
    /// The resume position while `pending` is not empty: the id of the last
    /// event handed out, or the parser's id before the current chunk. The
    /// parser's own id may already be past events the caller never saw.
    position: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("last_event_id", &self.parser.last_event_id())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The next event or `retry`; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Result<Item, Error>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if let Item::Event(event) = &item {
                    self.position.clone_from(&event.last_event_id);
                }
                return Some(Ok(item));
            }
            match self.body.next().await? {
                Ok(chunk) => {
                    self.position = self.parser.last_event_id().to_owned();
                    let mut items = Vec::new();
                    self.parser.feed_into(&chunk, &mut items);
                    self.pending.extend(items);
                    if self.parser.take_overflow() {
                        return Some(Err(Error::EventTooLarge));
                    }
                }
                Err(err) => return Some(Err(err.into())),
            }
        }
    }

    /// The next dispatched event, skipping `retry` items.
    pub async fn next_event(&mut self) -> Option<Result<ParsedEvent, Error>> {
        loop {
            match self.next().await? {
                Ok(Item::Event(event)) => return Some(Ok(event)),
                Ok(Item::Retry(_)) => continue,
                Err(err) => return Some(Err(err)),
            }
        }
    }

    /// The id a reconnect should resume from: everything up to it has been
    /// handed out by [`Connection::next`].
    pub fn last_event_id(&self) -> &str {
        if self.pending.is_empty() {
            self.parser.last_event_id()
        } else {
            &self.position
        }
    }
}

/// A reconnecting subscription.
#[derive(Debug)]
pub struct Subscription {
    hub: Hub,
    options: Subscribe,
    connection: Option<Connection>,
    last_event_id: Option<String>,
    retry: Duration,
    open_topics: HashSet<String>,
    wildcard: bool,
    connected_once: bool,
    done: bool,
}

impl Subscription {
    /// The next event. Reconnects as needed; `None` once every topic is
    /// complete, or after `replaced` (a newer connection took its client
    /// id). Errors that retrying cannot fix (a 4xx answer) end it.
    pub async fn next(&mut self) -> Option<Result<ParsedEvent, Error>> {
        loop {
            if self.done {
                return None;
            }
            let Some(connection) = self.connection.as_mut() else {
                if self.connected_once {
                    tokio::time::sleep(self.retry).await;
                }
                self.connected_once = true;
                let options = Subscribe {
                    last_event_id: self.last_event_id.clone(),
                    ..self.options.clone()
                };
                match self.hub.connect(&options).await {
                    Ok(connection) => self.connection = Some(connection),
                    Err(Error::Status { status, body }) if (400..500).contains(&status) => {
                        self.done = true;
                        return Some(Err(Error::Status { status, body }));
                    }
                    // Unreachable or 5xx: try again after the delay.
                    Err(_) => {}
                }
                continue;
            };
            match connection.next().await {
                Some(Ok(Item::Event(event))) => {
                    if event.event_type == "complete" {
                        self.open_topics.remove(&event.data);
                    }
                    if event.event_type == "replaced" {
                        // A newer connection with this client id took over:
                        // coming back would only take it from that one.
                        self.done = true;
                        self.connection = None;
                    }
                    return Some(Ok(event));
                }
                Some(Ok(Item::Retry(millis))) => self.retry = Duration::from_millis(millis),
                // A broken connection is like an ended one: resume.
                Some(Err(_)) | None => {
                    let id = connection.last_event_id();
                    if !id.is_empty() {
                        self.last_event_id = Some(id.to_owned());
                    }
                    self.connection = None;
                    if self.open_topics.is_empty() && !self.wildcard {
                        self.done = true;
                    }
                }
            }
        }
    }

    /// The id the next reconnect would send.
    pub fn last_event_id(&self) -> Option<&str> {
        match &self.connection {
            Some(c) if !c.last_event_id().is_empty() => Some(c.last_event_id()),
            _ => self.last_event_id.as_deref(),
        }
    }
}
