//! Durable Streams (PROTOCOL.md 1.0 of durable-streams/durable-streams):
//! append-only byte streams addressed by URL, that the HTTP edge serves
//! under `--streams-prefix` (see `http::durable_streams`).
//!
//! A stream is a list of chunks, each at its offset (its position in the
//! stream's bytes); a JSON stream's chunks are its messages. The whole of
//! every stream is in memory; with the durable store each change is also
//! written, record and data in one transaction, before it is answered. Forks
//! copy the chunks they inherit (shared `Bytes` in memory).
//!
//! Locking: every stream has its own lock, held across its commit, so the
//! producer checks and the append they allow are one step (§5.2.1). Changes
//! to the set of streams (create, fork, delete, expiry) also take one lock
//! for all of them, so a fork and the deletion of its source never cross.

pub mod content;
pub mod offset;
pub mod producer;
pub mod topic;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::store::{Store, StoreError, StreamWrite};
pub use offset::From;
use producer::{State, Tuple, Verdict};

/// When a stream expires (§5.1).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Expiry {
    /// Never (until deleted).
    #[default]
    Never,
    /// After this many seconds without a read or a write.
    Ttl(u64),
    /// At this time (`Stream-Expires-At`, as given, and in ms since the
    /// Unix epoch).
    At {
        /// As given.
        text: String,
        /// In ms since the Unix epoch.
        unix_ms: u64,
    },
}

/// Where a fork branched off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkPoint {
    /// The source stream's name.
    pub source: String,
    /// The offset it was forked at.
    pub offset: u64,
    /// The messages (JSON) or bytes inherited past it.
    #[serde(default)]
    pub sub_offset: u64,
}

/// A stream's record: everything but its data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Unique per creation (ETags name it: a stream created again at the
    /// same path has other ETags).
    pub id: u64,
    /// The content type, as given at creation.
    pub content_type: String,
    /// When it expires.
    pub expiry: Expiry,
    /// Closed: no more appends, ever.
    pub closed: bool,
    /// The producer append that closed it, for its retries.
    pub closed_by: Option<Tuple>,
    /// The offset after the last byte.
    pub tail: u64,
    /// The last `Stream-Seq` (its scope is the stream).
    pub stream_seq: Option<String>,
    /// Idempotent producers, by id.
    pub producers: BTreeMap<String, State>,
    /// Where it was forked from, for a fork.
    pub forked_from: Option<ForkPoint>,
    /// Forks made from it and not yet gone.
    pub forks: u32,
    /// Deleted while forks remained: 410 to everyone.
    pub soft_deleted: bool,
}

/// What a client may know of a stream.
#[derive(Debug, Clone)]
pub struct Info {
    /// [`Record::id`].
    pub id: u64,
    /// Its content type.
    pub content_type: String,
    /// When it expires.
    pub expiry: Expiry,
    /// Closed.
    pub closed: bool,
    /// The offset after the last byte.
    pub tail: u64,
}

impl Record {
    fn info(&self) -> Info {
        Info {
            id: self.id,
            content_type: self.content_type.clone(),
            expiry: self.expiry.clone(),
            closed: self.closed,
            tail: self.tail,
        }
    }

    fn json(&self) -> bool {
        content::is_json(&self.content_type)
    }
}

#[derive(Debug, Clone)]
struct Chunk {
    start: u64,
    data: Bytes,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }
}

struct Stream {
    record: Record,
    chunks: Vec<Chunk>,
    /// The last read or write (a sliding TTL counts from it).
    touched: Instant,
    /// Deleted or expired: whoever still holds it finds no stream.
    gone: bool,
}

impl Stream {
    fn expired(&self, now: Instant, now_ms: u64) -> bool {
        match &self.record.expiry {
            Expiry::Never => false,
            Expiry::Ttl(seconds) => {
                now.duration_since(self.touched) >= Duration::from_secs(*seconds)
            }
            Expiry::At { unix_ms, .. } => now_ms >= *unix_ms,
        }
    }

    /// Whether a client may use it: not gone, not expired, not deleted.
    fn usable(&self, name: &str) -> Result<(), StreamError> {
        if self.gone {
            return Err(StreamError::NotFound(name.to_owned()));
        }
        if self.expired(Instant::now(), now_ms()) {
            // One with forks is kept for them, deleted (410) as soon as
            // it is swept: it answers so already.
            return Err(if self.record.forks > 0 {
                StreamError::Gone(name.to_owned())
            } else {
                StreamError::NotFound(name.to_owned())
            });
        }
        if self.record.soft_deleted {
            return Err(StreamError::Gone(name.to_owned()));
        }
        Ok(())
    }

    /// What it counts against `--streams-max-bytes`: its data, and its
    /// producers' state (kept as long as it is).
    fn bytes(&self) -> u64 {
        let data: u64 = self.chunks.iter().map(|c| c.data.len() as u64).sum();
        let producers: u64 = self
            .record
            .producers
            .keys()
            .map(|id| producer_cost(id))
            .sum();
        data + producers
    }

    /// The chunks from `position` on, at most `max` bytes, and where they
    /// end. A byte stream's chunk larger than that is cut (a text stream's
    /// at a character's start), so a reader that does not read holds at
    /// most `max` of its data per answer; a JSON message is never cut (it
    /// comes whole, alone).
    fn from(&self, position: u64, max: usize) -> (Vec<Bytes>, u64) {
        let first = self.chunks.partition_point(|c| c.end() <= position);
        let json = self.record.json();
        let text = content::is_text(&self.record.content_type);
        let mut out = Vec::new();
        let mut size = 0;
        let mut end = position;
        for chunk in &self.chunks[first..] {
            if !out.is_empty() && size + chunk.data.len() > max {
                break;
            }
            let mut data = if chunk.start < position {
                // An offset inside a chunk is one of a cut read; of a JSON
                // message (none the hub hands out), nothing is served.
                if json {
                    continue;
                }
                chunk.data.slice((position - chunk.start) as usize..)
            } else {
                chunk.data.clone()
            };
            if !json && data.len() > max {
                // (Only the first: a later one that does not fit waits.)
                data.truncate(cut_at(&data, max, text));
                end = chunk.start.max(position) + data.len() as u64;
                out.push(data);
                break;
            }
            size += data.len();
            end = chunk.end();
            out.push(data);
        }
        (out, end.max(position))
    }
}

/// Where to cut `data` to at most `max` bytes (at least one): for text,
/// at the start of the character there, so none is split in two (unless
/// it alone is longer than `max`).
fn cut_at(data: &[u8], max: usize, text: bool) -> usize {
    let cut = max.clamp(1, data.len());
    if !text {
        return cut;
    }
    let starts_a_character = |i: usize| i == data.len() || data[i] & 0b1100_0000 != 0b1000_0000;
    let cut = match (cut.saturating_sub(3)..=cut)
        .rev()
        .find(|&i| starts_a_character(i))
    {
        Some(start) if start > 0 => start,
        _ => cut,
    };
    // Nor a CRLF: its halves would be two line breaks in SSE.
    if cut > 1 && cut < data.len() && data[cut - 1] == b'\r' && data[cut] == b'\n' {
        cut - 1
    } else {
        cut
    }
}

/// What a producer's state counts against `--streams-max-bytes`: its id
/// and about what its state takes, stored and in memory.
fn producer_cost(id: &str) -> u64 {
    id.len() as u64 + 64
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why an operation is refused.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// No such stream (or it expired).
    #[error("there is no stream {0:?}")]
    NotFound(String),
    /// Deleted while forks of it remain.
    #[error("the stream {0:?} was deleted (its forks keep what they inherited)")]
    Gone(String),
    /// A create that does not match the stream there.
    #[error("a stream exists at this path with another configuration: {0}")]
    Exists(String),
    /// Closed: no more appends.
    #[error("the stream is closed: nothing more can be appended")]
    Closed {
        /// Its final offset.
        tail: u64,
    },
    /// The body's type is not the stream's.
    #[error("the content type {given:?} is not the stream's ({stream:?})")]
    TypeMismatch {
        /// The request's.
        given: String,
        /// The stream's.
        stream: String,
    },
    /// `Stream-Seq` not after the last one.
    #[error("Stream-Seq {given:?} is not after the last one ({last:?})")]
    SeqRegression {
        /// The request's.
        given: String,
        /// The last accepted.
        last: String,
    },
    /// An older producer epoch (a zombie).
    #[error("producer epoch {given} is older than the stream's {current}")]
    StaleEpoch {
        /// The request's.
        given: u64,
        /// The stream's.
        current: u64,
    },
    /// A producer seq past the next one.
    #[error("producer seq {received} is not the next one ({expected})")]
    SeqGap {
        /// The next seq.
        expected: u64,
        /// The request's.
        received: u64,
    },
    /// A bad request, with a code.
    #[error("{message}")]
    Invalid {
        /// The documented error code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// Over `--streams-max-bytes` or `--max-streams`.
    #[error("{0}")]
    Full(String),
    /// A new producer on a stream that has `--stream-max-producers`.
    #[error(
        "the stream has {limit} producers (--stream-max-producers): a new Producer-Id is \
         refused; reuse one (a new epoch restarts it)"
    )]
    TooManyProducers {
        /// The limit.
        limit: usize,
    },
    /// The store could not write.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The stream's topic refused the change's event.
    #[error("the stream's topic refused the change: {0}")]
    Topic(String),
}

fn invalid(code: &'static str, message: impl Into<String>) -> StreamError {
    StreamError::Invalid {
        code,
        message: message.into(),
    }
}

fn json_refused(error: content::JsonError) -> StreamError {
    let code = match error {
        content::JsonError::EmptyArray => "empty_json_array",
        content::JsonError::Invalid(_) => "invalid_json",
    };
    invalid(code, error.to_string())
}

/// Limits of the streams.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bytes of data in all streams.
    pub max_bytes: u64,
    /// Streams in all.
    pub max_streams: usize,
    /// Producers per stream.
    pub max_producers: usize,
}

/// A create (`PUT`).
#[derive(Debug, Default)]
pub struct Create {
    /// `Content-Type` (absent: octet-stream, or a fork's source's).
    pub content_type: Option<String>,
    /// `Stream-TTL` / `Stream-Expires-At`.
    pub expiry: Expiry,
    /// `Stream-Closed: true`.
    pub closed: bool,
    /// The initial data.
    pub body: Bytes,
    /// `Stream-Forked-From` and its offsets.
    pub fork: Option<Fork>,
}

/// A fork's request.
#[derive(Debug)]
pub struct Fork {
    /// The source's name.
    pub source: String,
    /// `Stream-Fork-Offset` (absent: the source's tail).
    pub offset: Option<u64>,
    /// `Stream-Fork-Sub-Offset`.
    pub sub_offset: u64,
}

/// A create's outcome.
#[derive(Debug)]
pub struct Created {
    /// It was there already, with this configuration (200, not 201).
    pub existed: bool,
    /// The stream.
    pub info: Info,
}

/// An append (`POST`).
#[derive(Debug, Default)]
pub struct Append {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// The data (empty: a close).
    pub body: Bytes,
    /// `Stream-Closed: true`.
    pub close: bool,
    /// `Stream-Seq`.
    pub stream_seq: Option<String>,
    /// The producer headers.
    pub producer: Option<Tuple>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendKind {
    /// Appended (and closed, if asked).
    Appended,
    /// A producer's retry of what is there: nothing appended.
    Duplicate,
    /// Closed without data, or found closed by a close.
    Closed,
}

/// An append's outcome.
#[derive(Debug, Clone)]
pub struct Appended {
    /// What happened.
    pub kind: AppendKind,
    /// The tail after it.
    pub tail: u64,
    /// Whether the stream is closed now.
    pub closed: bool,
    /// The producer's state after it, with producer headers.
    pub producer: Option<State>,
}

/// A read's answer.
#[derive(Debug, Clone)]
pub struct Read {
    /// The stream.
    pub info: Info,
    /// Where the data starts.
    pub start: u64,
    /// Where it ends: the next read's offset.
    pub end: u64,
    /// The data: chunks, or a JSON stream's messages.
    pub data: Vec<Bytes>,
    /// Everything there is was read.
    pub up_to_date: bool,
    /// The stream is closed and this read reached its end.
    pub closed: bool,
}

struct Handle {
    stream: Arc<Mutex<Stream>>,
    /// Bumped at every change, for live reads.
    changed: watch::Sender<u64>,
}

impl Handle {
    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

/// Every stream.
pub struct Streams {
    map: RwLock<HashMap<String, Arc<Handle>>>,
    /// Held by changes to the set of streams.
    structure: Mutex<()>,
    store: Arc<dyn Store>,
    bytes: AtomicU64,
    /// Appends that added data, since start.
    appends: AtomicU64,
    settings: Settings,
    /// Where changes are shown as events (`None`: nowhere, written to the
    /// store alone).
    topics: Option<topic::Topics>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("streams", &self.count())
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl Streams {
    /// The streams the store holds, their changes shown on `topics`.
    /// Blocks (reads the store).
    pub fn open(
        store: Arc<dyn Store>,
        settings: Settings,
        topics: Option<topic::Topics>,
    ) -> Result<Streams, StoreError> {
        let mut map = HashMap::new();
        let mut bytes = 0;
        let mut damaged = None;
        store.load_streams(&mut |stored| {
            let record: Record = match serde_json::from_slice(&stored.record) {
                Ok(record) => record,
                Err(e) => {
                    damaged.get_or_insert(format!("stream {:?}: {e}", stored.name));
                    return;
                }
            };
            let chunks: Vec<Chunk> = stored
                .chunks
                .into_iter()
                .map(|(start, data)| Chunk {
                    start,
                    data: Bytes::from(data),
                })
                .collect();
            let stream = Stream {
                record,
                chunks,
                // The last access before the restart is not kept: a
                // sliding TTL starts again (never sooner than it would have).
                touched: Instant::now(),
                gone: false,
            };
            bytes += stream.bytes();
            map.insert(stored.name, new_handle(stream));
        })?;
        if let Some(reason) = damaged {
            return Err(StoreError::Read(format!(
                "a durable stream's record cannot be read: {reason}"
            )));
        }
        Ok(Streams {
            map: RwLock::new(map),
            structure: Mutex::new(()),
            store,
            bytes: AtomicU64::new(bytes),
            appends: AtomicU64::new(0),
            settings,
            topics,
        })
    }

    /// Streams held (deleted ones kept for their forks too).
    pub fn count(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Bytes of data held.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Appends that added data, since start.
    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    fn handle(&self, name: &str) -> Option<Arc<Handle>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn existing(&self, name: &str) -> Result<Arc<Handle>, StreamError> {
        self.handle(name)
            .ok_or_else(|| StreamError::NotFound(name.to_owned()))
    }

    /// Writes a change, with the event it makes on its topic.
    async fn commit(
        &self,
        writes: Vec<StreamWrite>,
        shown: topic::Shown<'_>,
    ) -> Result<(), StreamError> {
        if let Some(topics) = &self.topics {
            return topics.commit(writes, shown).await;
        }
        if !self.store.is_durable() || writes.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        Ok(
            tokio::task::spawn_blocking(move || store.commit_streams(&writes))
                .await
                .map_err(|e| StoreError::Write(format!("the write was cut short: {e}")))??,
        )
    }

    fn write(name: &str, record: &Record, chunks: &[Chunk]) -> StreamWrite {
        StreamWrite {
            name: name.to_owned(),
            record: Some(serde_json::to_vec(record).expect("a record serializes")),
            chunks: chunks.iter().map(|c| (c.start, c.data.clone())).collect(),
        }
    }

    fn removal(name: &str) -> StreamWrite {
        StreamWrite {
            name: name.to_owned(),
            record: None,
            chunks: Vec::new(),
        }
    }

    fn reserve(&self, bytes: u64) -> Result<(), StreamError> {
        let held = self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if held + bytes > self.settings.max_bytes {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(StreamError::Full(format!(
                "the streams hold {held} bytes: {bytes} more would pass --streams-max-bytes ({})",
                self.settings.max_bytes
            )));
        }
        Ok(())
    }

    fn release(&self, bytes: u64) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Creates a stream, or finds it there with the same configuration.
    pub async fn create(&self, name: &str, create: Create) -> Result<Created, StreamError> {
        let _structure = self.structure.lock().await;
        self.remove_if_expired(name).await?;
        if let Some(handle) = self.handle(name) {
            let stream = handle.stream.lock().await;
            return same_configuration(name, &stream.record, &create).map(|()| Created {
                existed: true,
                info: stream.record.info(),
            });
        }
        if self.count() >= self.settings.max_streams {
            return Err(StreamError::Full(format!(
                "there are {} streams already (--max-streams)",
                self.settings.max_streams
            )));
        }
        let mut record = Record {
            id: uuid::Uuid::new_v4().as_u64_pair().0,
            content_type: create
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
            expiry: create.expiry.clone(),
            closed: create.closed,
            closed_by: None,
            tail: 0,
            stream_seq: None,
            producers: BTreeMap::new(),
            forked_from: None,
            forks: 0,
            soft_deleted: false,
        };
        let mut chunks = Vec::new();
        let mut source_guard = None;
        if let Some(fork) = &create.fork {
            let source = self
                .handle(&fork.source)
                .ok_or_else(|| StreamError::NotFound(fork.source.clone()))?;
            let source = source.stream.clone().lock_owned().await;
            source.usable(&fork.source).map_err(|e| match e {
                // §4.2: a deleted source's path answers 409 to a fork.
                StreamError::Gone(name) => StreamError::Exists(format!(
                    "the source {name:?} was deleted: nothing can be forked from it"
                )),
                other => other,
            })?;
            let (inherited, at) = inherit(&source, fork)?;
            let source_type = &source.record.content_type;
            match &create.content_type {
                Some(given) if content::essence(given) != content::essence(source_type) => {
                    return Err(StreamError::TypeMismatch {
                        given: given.clone(),
                        stream: source_type.clone(),
                    });
                }
                _ => record.content_type = source_type.clone(),
            }
            if record.expiry == Expiry::Never {
                record.expiry = source.record.expiry.clone();
            }
            record.tail = at;
            record.forked_from = Some(ForkPoint {
                source: fork.source.clone(),
                offset: fork.offset.unwrap_or(at),
                sub_offset: fork.sub_offset,
            });
            chunks = inherited;
            source_guard = Some(source);
        }
        let initial = chunks_of(&record, &create.body, true)?;
        let new_bytes: u64 = chunks
            .iter()
            .chain(&initial)
            .map(|c| c.data.len() as u64)
            .sum();
        record.tail = initial.last().map_or(record.tail, Chunk::end);
        let inherited = chunks.len();
        chunks.extend(initial);
        self.reserve(new_bytes)?;
        let mut writes = vec![Self::write(name, &record, &chunks)];
        let mut source_record = None;
        if let Some(source) = &source_guard {
            let mut updated = source.record.clone();
            updated.forks += 1;
            writes.push(Self::write(
                &create.fork.as_ref().expect("a fork").source,
                &updated,
                &[],
            ));
            source_record = Some(updated);
        }
        let shown = topic::Shown::Data {
            name,
            record: &record,
            chunks: &chunks[inherited..],
            closed: record.closed,
            created: true,
        };
        if let Err(e) = self.commit(writes, shown).await {
            self.release(new_bytes);
            return Err(e);
        }
        if let (Some(mut source), Some(updated)) = (source_guard, source_record) {
            source.record = updated;
        }
        let info = record.info();
        let stream = Stream {
            record,
            chunks,
            touched: Instant::now(),
            gone: false,
        };
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), new_handle(stream));
        Ok(Created {
            existed: false,
            info,
        })
    }

    /// Appends, closes, or both.
    pub async fn append(&self, name: &str, append: Append) -> Result<Appended, StreamError> {
        let handle = self.existing(name)?;
        let mut stream = handle.stream.lock().await;
        stream.usable(name)?;
        stream.touched = Instant::now();
        let record = &stream.record;
        let close_only = append.body.is_empty();
        if close_only && !append.close {
            return Err(invalid(
                "empty_body",
                "an append needs a body (an empty one only with Stream-Closed: true)",
            ));
        }
        if record.closed {
            let retry_of_closer = append.producer.is_some() && append.producer == record.closed_by;
            if close_only || retry_of_closer {
                return Ok(Appended {
                    kind: if retry_of_closer {
                        AppendKind::Duplicate
                    } else {
                        AppendKind::Closed
                    },
                    tail: record.tail,
                    closed: true,
                    producer: append
                        .producer
                        .as_ref()
                        .and_then(|p| record.producers.get(&p.id).copied()),
                });
            }
            return Err(StreamError::Closed { tail: record.tail });
        }
        if !close_only {
            match &append.content_type {
                None => {
                    return Err(invalid(
                        "missing_content_type",
                        "an append with a body needs its Content-Type",
                    ));
                }
                Some(given)
                    if content::essence(given) != content::essence(&record.content_type) =>
                {
                    return Err(StreamError::TypeMismatch {
                        given: given.clone(),
                        stream: record.content_type.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        let mut producer_state = None;
        let mut new_producer = 0;
        if let Some(p) = &append.producer
            && !record.producers.contains_key(&p.id)
        {
            if record.producers.len() >= self.settings.max_producers {
                return Err(StreamError::TooManyProducers {
                    limit: self.settings.max_producers,
                });
            }
            new_producer = producer_cost(&p.id);
        }
        if let Some(p) = &append.producer {
            match producer::judge(record.producers.get(&p.id).copied(), p.epoch, p.seq) {
                Verdict::Accept(state) => producer_state = Some(state),
                Verdict::Duplicate(state) => {
                    return Ok(Appended {
                        kind: AppendKind::Duplicate,
                        tail: record.tail,
                        closed: false,
                        producer: Some(state),
                    });
                }
                Verdict::StaleEpoch { current } => {
                    return Err(StreamError::StaleEpoch {
                        given: p.epoch,
                        current,
                    });
                }
                Verdict::Gap { expected, received } => {
                    return Err(StreamError::SeqGap { expected, received });
                }
                Verdict::NewEpochNotAtZero => {
                    return Err(invalid(
                        "producer_epoch_not_at_zero",
                        format!(
                            "a new producer epoch ({}) starts at Producer-Seq 0",
                            p.epoch
                        ),
                    ));
                }
            }
        }
        if let (Some(given), Some(last)) = (&append.stream_seq, &record.stream_seq)
            && given.as_bytes() <= last.as_bytes()
        {
            return Err(StreamError::SeqRegression {
                given: given.clone(),
                last: last.clone(),
            });
        }
        let new_chunks = if close_only {
            Vec::new()
        } else {
            chunks_of(record, &append.body, false)?
        };
        let new_bytes: u64 =
            new_chunks.iter().map(|c| c.data.len() as u64).sum::<u64>() + new_producer;
        self.reserve(new_bytes)?;
        let mut updated = record.clone();
        updated.tail = new_chunks.last().map_or(updated.tail, Chunk::end);
        if let Some(seq) = append.stream_seq {
            updated.stream_seq = Some(seq);
        }
        if let (Some(p), Some(state)) = (&append.producer, producer_state) {
            updated.producers.insert(p.id.clone(), state);
        }
        if append.close {
            updated.closed = true;
            updated.closed_by = append.producer.clone();
        }
        let writes = vec![Self::write(name, &updated, &new_chunks)];
        let shown = topic::Shown::Data {
            name,
            record: &updated,
            chunks: &new_chunks,
            closed: append.close,
            created: false,
        };
        if let Err(e) = self.commit(writes, shown).await {
            self.release(new_bytes);
            return Err(e);
        }
        stream.chunks.extend(new_chunks);
        let closed = updated.closed;
        let tail = updated.tail;
        stream.record = updated;
        drop(stream);
        handle.notify();
        if !close_only {
            self.appends.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Appended {
            kind: if close_only {
                AppendKind::Closed
            } else {
                AppendKind::Appended
            },
            tail,
            closed,
            producer: producer_state,
        })
    }

    /// A stream's metadata (`HEAD`: it does not count as a read for a TTL).
    pub async fn info(&self, name: &str) -> Result<Info, StreamError> {
        let handle = self.existing(name)?;
        let stream = handle.stream.lock().await;
        stream.usable(name)?;
        Ok(stream.record.info())
    }

    /// Reads from `from`, about `max` bytes at most.
    pub async fn read(&self, name: &str, from: From, max: usize) -> Result<Read, StreamError> {
        let handle = self.existing(name)?;
        let mut stream = handle.stream.lock().await;
        stream.usable(name)?;
        stream.touched = Instant::now();
        let tail = stream.record.tail;
        let position = match from {
            From::Start => 0,
            From::Now => tail,
            From::At(p) if p > tail => {
                return Err(invalid(
                    "offset_beyond_tail",
                    format!(
                        "the offset {} is past the stream's end ({})",
                        offset::encode(p),
                        offset::encode(tail)
                    ),
                ));
            }
            From::At(p) => p,
        };
        let (data, end) = stream.from(position, max);
        let up_to_date = end >= tail;
        Ok(Read {
            info: stream.record.info(),
            start: position,
            end,
            data,
            up_to_date,
            closed: up_to_date && stream.record.closed,
        })
    }

    /// Told of every change to a stream (a live read waits on it).
    pub fn watch(&self, name: &str) -> Option<watch::Receiver<u64>> {
        self.handle(name).map(|h| h.changed.subscribe())
    }

    /// Deletes a stream; one with forks is only marked deleted (410) until
    /// they are gone.
    pub async fn delete(&self, name: &str) -> Result<(), StreamError> {
        let _structure = self.structure.lock().await;
        self.remove_if_expired(name).await?;
        let handle = self.existing(name)?;
        let stream = handle.stream.clone().lock_owned().await;
        stream.usable(name)?;
        self.remove(name, handle, stream).await
    }

    /// Removes every expired stream (and what their going releases).
    pub async fn sweep(&self) {
        let names: Vec<String> = {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            let (now, now_ms) = (Instant::now(), now_ms());
            map.iter()
                .filter(|(_, h)| {
                    h.stream
                        .try_lock()
                        .is_ok_and(|s| !s.gone && s.expired(now, now_ms))
                })
                .map(|(n, _)| n.clone())
                .collect()
        };
        for name in names {
            let _structure = self.structure.lock().await;
            if let Err(err) = self.remove_if_expired(&name).await {
                tracing::warn!(stream = name, %err, "an expired stream could not be removed yet");
            }
        }
    }

    /// With the structure lock held.
    async fn remove_if_expired(&self, name: &str) -> Result<(), StreamError> {
        let Some(handle) = self.handle(name) else {
            return Ok(());
        };
        let stream = handle.stream.clone().lock_owned().await;
        if stream.gone || !stream.expired(Instant::now(), now_ms()) {
            return Ok(());
        }
        self.remove(name, handle, stream).await
    }

    /// Removes (or marks deleted) a stream, and releases its source; with
    /// the structure lock held.
    async fn remove(
        &self,
        name: &str,
        handle: Arc<Handle>,
        mut stream: OwnedMutexGuard<Stream>,
    ) -> Result<(), StreamError> {
        let mut writes = Vec::new();
        if stream.record.forks > 0 {
            let mut record = stream.record.clone();
            record.soft_deleted = true;
            writes.push(Self::removal(name));
            writes.push(Self::write(name, &record, &[]));
            self.commit(writes, topic::Shown::Gone(vec![name.to_owned()]))
                .await?;
            self.release(stream.bytes());
            stream.record = record;
            stream.chunks.clear();
            drop(stream);
            handle.notify();
            return Ok(());
        }
        // The chain of sources this removal releases: each loses a fork,
        // and goes too if it was deleted and that was its last.
        writes.push(Self::removal(name));
        let mut gone = vec![(name.to_owned(), handle, stream)];
        let mut released = Vec::new();
        let mut source = gone[0].2.record.forked_from.clone();
        while let Some(point) = source.take() {
            let Some(source_handle) = self.handle(&point.source) else {
                break;
            };
            let source_stream = source_handle.stream.clone().lock_owned().await;
            let mut record = source_stream.record.clone();
            record.forks = record.forks.saturating_sub(1);
            if record.forks == 0 && record.soft_deleted {
                writes.push(Self::removal(&point.source));
                source = record.forked_from.clone();
                gone.push((point.source, source_handle, source_stream));
            } else {
                writes.push(Self::write(&point.source, &record, &[]));
                released.push((source_stream, record));
            }
        }
        let names = gone.iter().map(|(name, ..)| name.clone()).collect();
        self.commit(writes, topic::Shown::Gone(names)).await?;
        for (mut source_stream, record) in released {
            source_stream.record = record;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for (name, handle, mut stream) in gone {
            self.release(stream.bytes());
            stream.gone = true;
            stream.chunks.clear();
            drop(stream);
            map.remove(&name);
            handle.notify();
        }
        Ok(())
    }
}

fn new_handle(stream: Stream) -> Arc<Handle> {
    Arc::new(Handle {
        stream: Arc::new(Mutex::new(stream)),
        changed: watch::channel(0).0,
    })
}

/// A body as chunks from the record's tail on: a JSON stream's messages
/// (`[]` is none, where `empty_allowed`), else the bytes.
fn chunks_of(
    record: &Record,
    body: &Bytes,
    empty_allowed: bool,
) -> Result<Vec<Chunk>, StreamError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let pieces = if record.json() {
        content::messages(body, empty_allowed).map_err(json_refused)?
    } else {
        vec![body.clone()]
    };
    let mut at = record.tail;
    Ok(pieces
        .into_iter()
        .map(|data| {
            let chunk = Chunk { start: at, data };
            at = chunk.end();
            chunk
        })
        .collect())
}

/// What a fork inherits from its source, and where it starts its own data.
fn inherit(source: &Stream, fork: &Fork) -> Result<(Vec<Chunk>, u64), StreamError> {
    let tail = source.record.tail;
    let anchor = fork.offset.unwrap_or(tail);
    if anchor > tail {
        return Err(invalid(
            "fork_offset_beyond_tail",
            format!(
                "Stream-Fork-Offset {} is past the source's end ({})",
                offset::encode(anchor),
                offset::encode(tail)
            ),
        ));
    }
    let mut chunks: Vec<Chunk> = Vec::new();
    for chunk in &source.chunks {
        if chunk.end() <= anchor {
            chunks.push(chunk.clone());
        } else if chunk.start < anchor && !source.record.json() {
            chunks.push(Chunk {
                start: chunk.start,
                data: chunk.data.slice(..(anchor - chunk.start) as usize),
            });
        }
    }
    let mut at = anchor;
    if fork.sub_offset > 0 {
        let beyond = || {
            invalid(
                "fork_sub_offset_beyond",
                format!(
                    "Stream-Fork-Sub-Offset {} is past the data after the fork offset",
                    fork.sub_offset
                ),
            )
        };
        let next = source.chunks.partition_point(|c| c.end() <= anchor);
        if source.record.json() {
            let messages = source.chunks[next..]
                .iter()
                .filter(|c| c.start >= anchor)
                .take(fork.sub_offset as usize)
                .cloned()
                .collect::<Vec<_>>();
            if (messages.len() as u64) < fork.sub_offset {
                return Err(beyond());
            }
            at = messages.last().map_or(at, Chunk::end);
            chunks.extend(messages);
        } else {
            let chunk = source.chunks.get(next).ok_or_else(beyond)?;
            let from = (anchor - chunk.start) as usize;
            let to = from
                .checked_add(fork.sub_offset as usize)
                .filter(|&to| to <= chunk.data.len())
                .ok_or_else(beyond)?;
            chunks.push(Chunk {
                start: anchor,
                data: chunk.data.slice(from..to),
            });
            at = anchor + fork.sub_offset;
        }
    }
    Ok((chunks, at))
}

/// Whether a create asks for the stream that is there (§5.1): the same
/// type, expiry, closure and fork point.
fn same_configuration(name: &str, record: &Record, create: &Create) -> Result<(), StreamError> {
    if record.soft_deleted {
        return Err(StreamError::Exists(format!(
            "{name:?} was deleted and its forks keep it: the path cannot be used again yet"
        )));
    }
    let wanted_type = match (&create.content_type, &create.fork) {
        (Some(given), _) => given.clone(),
        (None, Some(_)) => record.content_type.clone(),
        (None, None) => "application/octet-stream".into(),
    };
    if content::essence(&wanted_type) != content::essence(&record.content_type) {
        return Err(StreamError::Exists(format!(
            "its content type is {:?}, not {wanted_type:?}",
            record.content_type
        )));
    }
    let expiry_matches = match (&create.expiry, &record.expiry) {
        (Expiry::At { unix_ms: a, .. }, Expiry::At { unix_ms: b, .. }) => a == b,
        (wanted, held) => wanted == held,
    };
    // A fork created without an expiry took its source's.
    let inherited = create.fork.is_some() && create.expiry == Expiry::Never;
    if !(expiry_matches || inherited) {
        return Err(StreamError::Exists("its TTL or expiry differs".into()));
    }
    if create.closed != record.closed {
        return Err(StreamError::Exists(if record.closed {
            "it is closed".into()
        } else {
            "it is open".into()
        }));
    }
    let fork_matches = match (&create.fork, &record.forked_from) {
        (None, None) => true,
        (Some(fork), Some(point)) => {
            fork.source == point.source
                && fork.offset.is_none_or(|o| o == point.offset)
                && fork.sub_offset == point.sub_offset
        }
        _ => false,
    };
    if !fork_matches {
        return Err(StreamError::Exists(
            "its fork source or offset differs".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cut_at;

    #[test]
    fn a_cut_never_splits_a_character_of_text() {
        let text = "aé€😀b".as_bytes(); // 1, 2, 3 and 4 bytes, then 1
        assert_eq!(cut_at(text, 2, true), 1, "not inside é");
        assert_eq!(cut_at(text, 3, true), 3);
        assert_eq!(cut_at(text, 5, true), 3, "not inside €");
        assert_eq!(cut_at(text, 9, true), 6, "not inside 😀");
        assert_eq!(cut_at(text, 10, true), 10);
        assert_eq!(cut_at(text, 99, true), text.len());
        // Bytes are cut anywhere, and a cut takes at least one byte.
        assert_eq!(cut_at(text, 2, false), 2);
        assert_eq!(cut_at(text, 0, false), 1);
        assert_eq!(
            cut_at("😀".as_bytes(), 2, true),
            2,
            "one character longer than max"
        );
        assert_eq!(cut_at(b"ab\r\nc", 3, true), 2, "not inside a CRLF");
        assert_eq!(cut_at(b"ab\r\nc", 4, true), 4);
    }
}
