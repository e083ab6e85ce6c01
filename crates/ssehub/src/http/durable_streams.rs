//! The Durable Streams protocol (PROTOCOL.md 1.0) at
//! `--streams-prefix` (default `/v1/stream`): `PUT` creates, `POST`
//! appends and closes, `DELETE`, `HEAD`, and `GET` in catch-up, long-poll
//! and SSE modes. The streams themselves are [`crate::streams`].
//!
//! Auth uses the hub's JWT keys: a stream is the topic of its URL (the
//! hub's origin and the stream's path); writes need a publisher token that
//! may publish to it, reads a subscriber token that may subscribe to it (a
//! stream is private, like a Mercure update with `private=on`). `--dev`
//! lets anyone do both.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};

use super::auth::{Credentials, Grants};
use super::{ApiError, AppState, ConnectionInfo};
use crate::streams::producer::{self, Tuple};
use crate::streams::{
    Append, AppendKind, Create, Expiry, Fork, From, Info, Read, StreamError, Streams, content,
    offset,
};

/// Most bytes of data in one catch-up answer.
const READ_MAX: usize = 1 << 20;
/// Most bytes of data in one SSE data event: a reader that stops reading
/// holds a few such events of the hub's memory (one queued, one waiting to
/// be, one in hyper's buffer; base64 adds a third) until its send deadline
/// (`--shutdown-timeout`) ends it. Measured: about 170 KiB per stalled
/// reader (`stalled_sse_readers_hold_little_memory`).
const SSE_READ_MAX: usize = 32 << 10;
/// Longest stream name (its path under the prefix), in bytes.
const NAME_MAX: usize = 1024;
/// Longest `Stream-TTL`: about 31,700 years.
const MAX_TTL_SECS: u64 = 1_000_000_000_000;
/// Longest `Producer-Id`: producers' state is kept with the stream.
const PRODUCER_ID_MAX: usize = 256;
/// Longest `Content-Type`.
const CONTENT_TYPE_MAX: usize = 256;

const STREAM_NEXT_OFFSET: HeaderName = HeaderName::from_static("stream-next-offset");
const STREAM_UP_TO_DATE: HeaderName = HeaderName::from_static("stream-up-to-date");
const STREAM_CLOSED: HeaderName = HeaderName::from_static("stream-closed");
const STREAM_CURSOR: HeaderName = HeaderName::from_static("stream-cursor");
const STREAM_TTL: HeaderName = HeaderName::from_static("stream-ttl");
const STREAM_EXPIRES_AT: HeaderName = HeaderName::from_static("stream-expires-at");
const STREAM_SEQ: HeaderName = HeaderName::from_static("stream-seq");
const PRODUCER_ID: HeaderName = HeaderName::from_static("producer-id");
const PRODUCER_EPOCH: HeaderName = HeaderName::from_static("producer-epoch");
const PRODUCER_SEQ: HeaderName = HeaderName::from_static("producer-seq");
const PRODUCER_EXPECTED_SEQ: HeaderName = HeaderName::from_static("producer-expected-seq");
const PRODUCER_RECEIVED_SEQ: HeaderName = HeaderName::from_static("producer-received-seq");
const FORKED_FROM: HeaderName = HeaderName::from_static("stream-forked-from");
const FORK_OFFSET: HeaderName = HeaderName::from_static("stream-fork-offset");
const FORK_SUB_OFFSET: HeaderName = HeaderName::from_static("stream-fork-sub-offset");
const SSE_DATA_ENCODING: HeaderName = HeaderName::from_static("stream-sse-data-encoding");

/// Every request under the prefix.
pub async fn handle(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnectionInfo>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut response = match serve(&app, &conn, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    // §12.7: no sniffing, and readable by pages of other origins that
    // CORS lets in.
    let out = response.headers_mut();
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    response
}

async fn serve(
    app: &AppState,
    conn: &ConnectionInfo,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(streams) = app.streams.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "streams_not_on_cluster",
            "Durable Streams are not served by a node of a cluster (--redis-url) yet",
        ));
    };
    let name = stream_name(&app.config.streams_prefix, uri.path())?;
    if topic(app, &name).len() > app.config.max_topic_length {
        // Its topic could hold no event.
        return Err(ApiError::bad_request(
            "stream_name_too_long",
            format!(
                "the stream's URL is longer than --max-topic-length ({} bytes)",
                app.config.max_topic_length
            ),
        ));
    }
    match *method {
        Method::PUT => {
            let grants = authorize_write(app, conn, headers, &name)?;
            create(app, &streams, uri, headers, body, &name, grants.as_ref()).await
        }
        Method::POST => {
            authorize_write(app, conn, headers, &name)?;
            append(app, &streams, headers, body, &name).await
        }
        Method::DELETE => {
            authorize_write(app, conn, headers, &name)?;
            streams.delete(&name).await.map_err(refusal)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Method::HEAD => {
            authorize_read(app, headers, &name)?;
            let info = streams.info(&name).await.map_err(refusal)?;
            let mut response = StatusCode::OK.into_response();
            describe(response.headers_mut(), &info);
            set(
                response.headers_mut(),
                STREAM_NEXT_OFFSET,
                &offset::encode(info.tail),
            );
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Method::GET => {
            let private = authorize_read(app, headers, &name)?;
            read(app, &streams, uri, headers, &name, private).await
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{method} is not a Durable Streams operation: use PUT, POST, GET, HEAD or DELETE"
            ),
        )
        .with_header(header::ALLOW, "GET, HEAD, PUT, POST, DELETE")),
    }
}

/// The stream's name: the path after the prefix, as sent (not decoded, so
/// one name has one spelling).
fn stream_name(prefix: &str, path: &str) -> Result<String, ApiError> {
    let name = path
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("a stream's URL is {prefix}/NAME"),
        ));
    }
    if name.len() > NAME_MAX {
        return Err(ApiError::bad_request(
            "stream_name_too_long",
            format!("a stream's name is at most {NAME_MAX} bytes"),
        ));
    }
    // One stream, one spelling: a name is a key, and `a/../b` or `a//b`
    // would be a second stream whose URL (the topic grants are checked
    // against) is another's.
    let dots = |segment: &str| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    };
    if name
        .split('/')
        .any(|segment| segment.is_empty() || dots(segment))
    {
        return Err(ApiError::bad_request(
            "invalid_stream_name",
            "a stream's name has no empty, . or .. segments",
        ));
    }
    if name == "__ds" || name.starts_with("__ds/") {
        // §6: reserved for the subscription APIs, which this hub does not
        // serve.
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "the reserved __ds subscription APIs are not served by this hub",
        ));
    }
    Ok(name.to_owned())
}

/// The topic a stream is, for grants: its URL on the hub.
fn topic(app: &AppState, name: &str) -> String {
    crate::streams::topic::of(&app.hub_url, &app.config.streams_prefix, name)
}

/// Checks a writer; its grants (`None` in `--dev` without a token).
fn authorize_write(
    app: &AppState,
    conn: &ConnectionInfo,
    headers: &HeaderMap,
    name: &str,
) -> Result<Option<Grants>, ApiError> {
    let credentials = Credentials {
        headers,
        query: &[],
    };
    let grants = app.auth.publisher(&credentials, app.config.dev)?;
    let publisher = match grants.as_ref().and_then(|g| g.subject.as_deref()) {
        Some(subject) => format!("sub:{subject}"),
        None => format!("addr:{}", app.client(conn, headers).ip),
    };
    if let Some(grants) = &grants {
        if grants.by_cookie {
            super::cors::from_a_trusted_page(app, headers)?;
        }
        let topic = topic(app, name);
        grants
            .may_publish(std::slice::from_ref(&topic))
            .map_err(|_| {
                app.auth
                    .insufficient_scope(format!("the token may not write to the stream {topic:?}"))
            })?;
    }
    app.limits.publish(&publisher)?;
    Ok(grants)
}

/// A fork copies its source's data: the writer's token must also cover
/// the source, to write to it or to read it, or a token for one stream
/// would read any other by forking it.
fn authorize_fork(app: &AppState, grants: Option<&Grants>, source: &str) -> Result<(), ApiError> {
    let Some(grants) = grants else {
        return Ok(());
    };
    let topic = topic(app, source);
    let writes = grants.may_publish(std::slice::from_ref(&topic)).is_ok();
    if writes || grants.subscribe.iter().any(|s| s.matches(&topic)) {
        Ok(())
    } else {
        Err(app.auth.insufficient_scope(format!(
            "the token may not fork the stream {topic:?}: it grants neither writing nor reading it"
        )))
    }
}

/// Checks a reader; `Ok(true)` when the answer is for this reader only
/// (it showed a token), which caches must not share.
fn authorize_read(app: &AppState, headers: &HeaderMap, name: &str) -> Result<bool, ApiError> {
    let credentials = Credentials {
        headers,
        query: &[],
    };
    match app.auth.subscriber(&credentials, app.config.dev)? {
        None => Ok(false),
        Some(grants) => {
            let topic = topic(app, name);
            if grants.subscribe.iter().any(|s| s.matches(&topic)) {
                Ok(true)
            } else {
                Err(app
                    .auth
                    .insufficient_scope(format!("the token may not read the stream {topic:?}")))
            }
        }
    }
}

/// The answer to a refused operation, with the headers the protocol
/// gives each.
pub(super) fn refusal(error: StreamError) -> ApiError {
    let message = error.to_string();
    match error {
        StreamError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "stream_not_found", message)
        }
        StreamError::Gone(_) => ApiError::new(StatusCode::GONE, "stream_gone", message),
        StreamError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "stream_exists", message),
        StreamError::Closed { tail } => {
            ApiError::new(StatusCode::CONFLICT, "stream_closed", message)
                .with_header(STREAM_CLOSED, "true")
                .with_header(STREAM_NEXT_OFFSET, &offset::encode(tail))
        }
        StreamError::TypeMismatch { .. } => {
            ApiError::new(StatusCode::CONFLICT, "content_type_mismatch", message)
        }
        StreamError::SeqRegression { .. } => {
            ApiError::new(StatusCode::CONFLICT, "stream_seq_regression", message)
        }
        StreamError::StaleEpoch { current, .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "producer_epoch_stale", message)
                .with_header(PRODUCER_EPOCH, &current.to_string())
        }
        StreamError::SeqGap { expected, received } => {
            ApiError::new(StatusCode::CONFLICT, "producer_seq_gap", message)
                .with_header(PRODUCER_EXPECTED_SEQ, &expected.to_string())
                .with_header(PRODUCER_RECEIVED_SEQ, &received.to_string())
        }
        StreamError::Invalid { code, .. } => ApiError::bad_request(code, message),
        StreamError::Full(_) => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "streams_full", message)
        }
        StreamError::TooManyProducers { .. } => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "too_many_producers",
            message,
        ),
        StreamError::Store(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
        ),
        StreamError::Topic(_) => ApiError::new(StatusCode::CONFLICT, "topic_conflict", message),
    }
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// The headers that describe a stream: its type, expiry and closure.
fn describe(headers: &mut HeaderMap, info: &Info) {
    set(headers, header::CONTENT_TYPE, &info.content_type);
    match &info.expiry {
        Expiry::Never => {}
        Expiry::Ttl(seconds) => set(headers, STREAM_TTL, &seconds.to_string()),
        Expiry::At { text, .. } => set(headers, STREAM_EXPIRES_AT, text),
    }
    if info.closed {
        headers.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
    }
}

fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        // Which one would count is a guess a proxy and the hub may make
        // differently.
        return Err(ApiError::bad_request(
            "duplicate_header",
            format!("{name} is given more than once"),
        ));
    }
    first
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_header", format!("{name} is not visible ASCII"))
            })
        })
        .transpose()
}

/// The `Content-Type`, if given: a media type (`type/subtype`, parameters
/// after a `;`), or a 400.
fn media_type(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(given) = text(headers, &header::CONTENT_TYPE)? else {
        return Ok(None);
    };
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let essence = given.split(';').next().unwrap_or("").trim();
    let valid = given.len() <= CONTENT_TYPE_MAX
        && essence
            .split_once('/')
            .is_some_and(|(kind, sub)| token(kind) && token(sub));
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_content_type",
            format!(
                "Content-Type {given:?} is not a media type such as text/plain (at most \
                 {CONTENT_TYPE_MAX} bytes)"
            ),
        ));
    }
    Ok(Some(given.trim().to_owned()))
}

/// `Stream-Closed` counts only as `true`, in any case (§4.1).
fn closing(headers: &HeaderMap) -> Result<bool, ApiError> {
    Ok(text(headers, &STREAM_CLOSED)?.is_some_and(|v| v.eq_ignore_ascii_case("true")))
}

/// A non-negative decimal integer without sign, leading zeros or
/// fraction, at most `max`.
fn strict_integer(value: &str, max: u64) -> Option<u64> {
    let plain = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    plain
        .then(|| value.parse::<u64>().ok())
        .flatten()
        .filter(|&v| v <= max)
}

fn expiry(headers: &HeaderMap) -> Result<Expiry, ApiError> {
    let ttl = text(headers, &STREAM_TTL)?;
    let at = text(headers, &STREAM_EXPIRES_AT)?;
    match (ttl, at) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "conflicting_expiry",
            "give Stream-TTL or Stream-Expires-At, not both",
        )),
        (Some(ttl), None) => strict_integer(ttl, MAX_TTL_SECS)
            .map(Expiry::Ttl)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_ttl",
                    format!(
                        "Stream-TTL {ttl:?} is not a whole number of seconds from 0 to \
                         {MAX_TTL_SECS} (such as 3600)"
                    ),
                )
            }),
        (None, Some(at)) => parse_rfc3339(at)
            .map(|unix_ms| Expiry::At {
                text: at.to_owned(),
                unix_ms,
            })
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_expires_at",
                    format!(
                        "Stream-Expires-At {at:?} is not an RFC 3339 time (such as 2026-12-31T23:59:59Z)"
                    ),
                )
            }),
        (None, None) => Ok(Expiry::Never),
    }
}

/// An RFC 3339 time, in ms since the Unix epoch: `Z` or a numeric offset.
fn parse_rfc3339(text: &str) -> Option<u64> {
    let utc = |t: &str| {
        humantime::parse_rfc3339(t)
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64)
    };
    let upper = text.to_ascii_uppercase();
    if upper.ends_with('Z') {
        return utc(&upper);
    }
    // `+HH:MM` / `-HH:MM`: the same instant in UTC.
    let (local, zone) = upper.split_at(upper.len().checked_sub(6)?);
    let sign = match zone.as_bytes()[0] {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    let hours: i64 = zone.get(1..3)?.parse().ok()?;
    let minutes: i64 = zone.get(4..6)?.parse().ok()?;
    if zone.as_bytes()[3] != b':' || hours > 23 || minutes > 59 {
        return None;
    }
    let local = utc(&format!("{local}Z"))? as i64;
    u64::try_from(local - sign * (hours * 3600 + minutes * 60) * 1000).ok()
}

async fn body_bytes(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    Ok(
        super::publish::read_body(headers, body, app.config.stream_max_append)
            .await?
            .freeze(),
    )
}

async fn create(
    app: &AppState,
    streams: &Streams,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    name: &str,
    grants: Option<&Grants>,
) -> Result<Response, ApiError> {
    let expiry = expiry(headers)?;
    let content_type = media_type(headers)?;
    let fork = match text(headers, &FORKED_FROM)? {
        None if headers.contains_key(&FORK_OFFSET) || headers.contains_key(&FORK_SUB_OFFSET) => {
            return Err(ApiError::bad_request(
                "fork_offset_without_source",
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset go with Stream-Forked-From",
            ));
        }
        None => None,
        Some(source) => {
            let source = stream_name(&app.config.streams_prefix, source).map_err(|_| {
                ApiError::bad_request(
                    "invalid_fork_source",
                    format!(
                        "Stream-Forked-From is the path of a stream here ({}/NAME)",
                        app.config.streams_prefix
                    ),
                )
            })?;
            let offset = text(headers, &FORK_OFFSET)?
                .map(|o| {
                    offset::decode(o).ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_offset",
                            format!("Stream-Fork-Offset {o:?} is not an offset of this hub"),
                        )
                    })
                })
                .transpose()?;
            let sub_offset = text(headers, &FORK_SUB_OFFSET)?
                .map(|s| {
                    strict_integer(s, u32::MAX as u64).ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_sub_offset",
                            format!(
                                "Stream-Fork-Sub-Offset {s:?} is not an integer from 0 to 2^53-1"
                            ),
                        )
                    })
                })
                .transpose()?
                .unwrap_or(0);
            authorize_fork(app, grants, &source)?;
            Some(Fork {
                source,
                offset,
                sub_offset,
            })
        }
    };
    let body = body_bytes(app, headers, body).await?;
    let created = streams
        .create(
            name,
            Create {
                content_type,
                expiry,
                closed: closing(headers)?,
                body,
                fork,
            },
        )
        .await
        .map_err(refusal)?;
    let status = if created.existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = status.into_response();
    let out = response.headers_mut();
    describe(out, &created.info);
    set(out, STREAM_NEXT_OFFSET, &offset::encode(created.info.tail));
    if !created.existed {
        let location = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(host) => format!(
                "{}://{host}{}",
                if app.tls.is_some() { "https" } else { "http" },
                uri.path()
            ),
            None => uri.path().to_owned(),
        };
        set(out, header::LOCATION, &location);
    }
    Ok(response)
}

fn producer_headers(headers: &HeaderMap) -> Result<Option<Tuple>, ApiError> {
    let id = text(headers, &PRODUCER_ID)?;
    let epoch = text(headers, &PRODUCER_EPOCH)?;
    let seq = text(headers, &PRODUCER_SEQ)?;
    let (id, epoch, seq) = match (id, epoch, seq) {
        (None, None, None) => return Ok(None),
        (Some(id), Some(epoch), Some(seq)) => (id, epoch, seq),
        _ => {
            return Err(ApiError::bad_request(
                "incomplete_producer",
                "Producer-Id, Producer-Epoch and Producer-Seq go together",
            ));
        }
    };
    if id.is_empty() || id.len() > PRODUCER_ID_MAX {
        return Err(ApiError::bad_request(
            "invalid_producer",
            format!("Producer-Id is empty or longer than {PRODUCER_ID_MAX} bytes"),
        ));
    }
    let number = |name: &str, value: &str| {
        strict_integer(value, producer::MAX).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_producer",
                format!("{name} {value:?} is not an integer from 0 to 2^53-1"),
            )
        })
    };
    Ok(Some(Tuple {
        id: id.to_owned(),
        epoch: number("Producer-Epoch", epoch)?,
        seq: number("Producer-Seq", seq)?,
    }))
}

async fn append(
    app: &AppState,
    streams: &Streams,
    headers: &HeaderMap,
    body: Body,
    name: &str,
) -> Result<Response, ApiError> {
    let producer = producer_headers(headers)?;
    let stream_seq = text(headers, &STREAM_SEQ)?.map(str::to_owned);
    let content_type = media_type(headers)?;
    let body = body_bytes(app, headers, body).await?;
    let with_producer = producer.is_some();
    let appended = streams
        .append(
            name,
            Append {
                content_type,
                body,
                close: closing(headers)?,
                stream_seq,
                producer,
            },
        )
        .await
        .map_err(refusal)?;
    let status = match appended.kind {
        AppendKind::Appended if with_producer => StatusCode::OK,
        _ => StatusCode::NO_CONTENT,
    };
    let mut response = status.into_response();
    let out = response.headers_mut();
    set(out, STREAM_NEXT_OFFSET, &offset::encode(appended.tail));
    if appended.closed {
        out.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
    }
    if let Some(state) = appended.producer {
        set(out, PRODUCER_EPOCH, &state.epoch.to_string());
        set(out, PRODUCER_SEQ, &state.last_seq.to_string());
    }
    Ok(response)
}

/// A read's query: `offset`, `live` and `cursor`.
struct Query {
    offset: Option<String>,
    live: Option<String>,
    cursor: Option<String>,
}

fn query(uri: &Uri) -> Query {
    let mut query = Query {
        offset: None,
        live: None,
        cursor: None,
    };
    for (key, value) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        let slot = match key.as_ref() {
            "offset" => &mut query.offset,
            "live" => &mut query.live,
            "cursor" => &mut query.cursor,
            _ => continue,
        };
        slot.get_or_insert_with(|| value.into_owned());
    }
    query
}

enum Mode {
    CatchUp,
    LongPoll,
    Sse,
}

async fn read(
    app: &AppState,
    streams: &std::sync::Arc<Streams>,
    uri: &Uri,
    headers: &HeaderMap,
    name: &str,
    private: bool,
) -> Result<Response, ApiError> {
    let query = query(uri);
    if let Some(cursor) = query.cursor.as_deref()
        && !offset::answerable(cursor)
    {
        return Err(ApiError::bad_request(
            "invalid_cursor",
            format!("cursor={cursor} is no cursor this hub gave: echo Stream-Cursor"),
        ));
    }
    let mode = match query.live.as_deref() {
        None => Mode::CatchUp,
        Some("long-poll") => Mode::LongPoll,
        Some("sse") => Mode::Sse,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_live",
                format!("live={other:?} is not a mode: use long-poll or sse (or none)"),
            ));
        }
    };
    if !matches!(mode, Mode::CatchUp) && query.offset.is_none() {
        return Err(ApiError::bad_request(
            "missing_offset",
            "a live read needs an offset (-1 for the start, now for the tail)",
        ));
    }
    let from = offset::parse_from(query.offset.as_deref()).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_offset",
            format!(
                "offset {:?} is not an offset of this stream (use one the hub gave, -1 or now)",
                query.offset.as_deref().unwrap_or("")
            ),
        )
    })?;
    // Subscribed before the first read, so no change between the two is
    // missed.
    let changes = streams.watch(name);
    let max = match mode {
        Mode::Sse => SSE_READ_MAX,
        _ => READ_MAX,
    };
    let first = streams.read(name, from, max).await.map_err(refusal)?;
    match mode {
        Mode::CatchUp => Ok(catch_up(headers, &first, from == From::Now, private)),
        Mode::LongPoll => {
            let changes = changes.ok_or_else(|| refusal(StreamError::NotFound(name.to_owned())))?;
            long_poll(
                app,
                streams,
                name,
                first,
                changes,
                query.cursor.as_deref(),
                private,
            )
            .await
        }
        Mode::Sse => {
            let changes = changes.ok_or_else(|| refusal(StreamError::NotFound(name.to_owned())))?;
            Ok(sse(
                app,
                streams.clone(),
                name.to_owned(),
                first,
                changes,
                query.cursor,
            ))
        }
    }
}

/// The body of a read: a JSON stream's messages as an array, else the
/// bytes.
fn read_body(read: &Read) -> Bytes {
    content::body(&read.info.content_type, &read.data)
}

/// The headers of a read with data (or at the tail).
fn read_headers(out: &mut HeaderMap, read: &Read) {
    set(out, header::CONTENT_TYPE, &read.info.content_type);
    set(out, STREAM_NEXT_OFFSET, &offset::encode(read.end));
    if read.up_to_date {
        out.insert(STREAM_UP_TO_DATE, HeaderValue::from_static("true"));
    }
    if read.closed {
        out.insert(STREAM_CLOSED, HeaderValue::from_static("true"));
    }
}

fn etag(read: &Read) -> String {
    format!(
        "\"{:x}:{}:{}{}\"",
        read.info.id,
        offset::encode(read.start),
        offset::encode(read.end),
        if read.closed { ":c" } else { "" }
    )
}

fn cache_control(private: bool) -> HeaderValue {
    HeaderValue::from_static(if private {
        "private, max-age=60, stale-while-revalidate=300"
    } else {
        "public, max-age=60, stale-while-revalidate=300"
    })
}

fn catch_up(headers: &HeaderMap, read: &Read, now: bool, private: bool) -> Response {
    let tag = etag(read);
    if !now
        && headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        set(response.headers_mut(), header::ETAG, &tag);
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, cache_control(private));
        return response;
    }
    let mut response = (StatusCode::OK, read_body(read)).into_response();
    let out = response.headers_mut();
    read_headers(out, read);
    if now {
        // The tail moves: this answer must not be kept (§8).
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    } else {
        set(out, header::ETAG, &tag);
        out.insert(header::CACHE_CONTROL, cache_control(private));
    }
    response
}

fn jitter() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

async fn long_poll(
    app: &AppState,
    streams: &Streams,
    name: &str,
    mut read: Read,
    mut changes: tokio::sync::watch::Receiver<u64>,
    cursor: Option<&str>,
    private: bool,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + app.config.stream_long_poll;
    while read.data.is_empty() && !read.closed {
        let woken = tokio::select! {
            changed = changes.changed() => changed.is_ok(),
            () = tokio::time::sleep_until(deadline) => false,
            () = app.closing.cancelled() => false,
        };
        if !woken {
            break;
        }
        read = streams
            .read(name, From::At(read.start), READ_MAX)
            .await
            .map_err(refusal)?;
    }
    let mut response = if read.data.is_empty() {
        let mut response = StatusCode::NO_CONTENT.into_response();
        read_headers(response.headers_mut(), &read);
        response.headers_mut().remove(header::CONTENT_TYPE);
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    } else {
        let mut response = (StatusCode::OK, read_body(&read)).into_response();
        read_headers(response.headers_mut(), &read);
        set(response.headers_mut(), header::ETAG, &etag(&read));
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, cache_control(private));
        response
    };
    if !read.closed {
        set(
            response.headers_mut(),
            STREAM_CURSOR,
            &offset::cursor(cursor, jitter()),
        );
    }
    Ok(response)
}

/// An SSE `event: data` with a read's data: text as it is (line by line),
/// other types in base64 (§5.8).
fn data_event(out: &mut BytesMut, read: &Read, text: bool) {
    out.put_slice(b"event: data\n");
    let data = content::as_text(&read.info.content_type, &read.data);
    if text {
        let mut lines = data.split('\n').peekable();
        while let Some(line) = lines.next() {
            // A CR before an LF is one line break with it; any other CR
            // (a progress line's, or the data's last byte) is one alone.
            let line = match lines.peek() {
                Some(_) => line.strip_suffix('\r').unwrap_or(line),
                None => line,
            };
            for piece in line.split('\r') {
                // A reader drops one space after the colon: a line that
                // starts with one gets one more.
                out.put_slice(if piece.starts_with(' ') {
                    b"data: "
                } else {
                    b"data:"
                });
                out.put_slice(piece.as_bytes());
                out.put_u8(b'\n');
            }
        }
    } else {
        out.put_slice(b"data:");
        out.put_slice(data.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// The `event: control` after every data event, and at the start.
fn control_event(out: &mut BytesMut, read: &Read, cursor: &str) {
    let mut control = serde_json::Map::new();
    control.insert("streamNextOffset".into(), offset::encode(read.end).into());
    if read.closed {
        control.insert("streamClosed".into(), true.into());
        control.insert("upToDate".into(), true.into());
    } else {
        control.insert("streamCursor".into(), cursor.into());
        if read.up_to_date {
            control.insert("upToDate".into(), true.into());
        }
    }
    out.put_slice(b"event: control\ndata:");
    out.put_slice(serde_json::Value::Object(control).to_string().as_bytes());
    out.put_slice(b"\n\n");
}

fn sse(
    app: &AppState,
    streams: std::sync::Arc<Streams>,
    name: String,
    first: Read,
    mut changes: tokio::sync::watch::Receiver<u64>,
    client_cursor: Option<String>,
) -> Response {
    let text = content::is_text(&first.info.content_type);
    // One event queued: see SSE_READ_MAX.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let heartbeat = app.config.heartbeat;
    let lifetime = app.config.stream_sse_lifetime;
    let send_timeout = app.config.shutdown_timeout.max(Duration::from_secs(1));
    let closing = app.closing.clone();
    tokio::spawn(async move {
        let cursor = offset::cursor(client_cursor.as_deref(), jitter());
        let end_at = tokio::time::Instant::now() + lifetime;
        let send = |bytes: Bytes| {
            let tx = tx.clone();
            async move {
                matches!(
                    tokio::time::timeout(send_timeout, tx.send(bytes)).await,
                    Ok(Ok(()))
                )
            }
        };
        let mut read = first;
        let mut announced = false;
        loop {
            if !read.data.is_empty() || !announced || read.closed {
                let mut out = BytesMut::new();
                if !read.data.is_empty() {
                    data_event(&mut out, &read, text);
                }
                control_event(&mut out, &read, &cursor);
                announced = true;
                if !send(out.freeze()).await || read.closed {
                    return;
                }
            }
            if read.up_to_date {
                // Wait for a change, with heartbeats, until the lifetime.
                loop {
                    let next = tokio::select! {
                        changed = changes.changed() => if changed.is_ok() { Some(true) } else { None },
                        () = tokio::time::sleep(heartbeat) => Some(false),
                        () = tokio::time::sleep_until(end_at) => None,
                        () = closing.cancelled() => None,
                    };
                    match next {
                        None => return,
                        Some(true) => break,
                        Some(false) => {
                            if !send(Bytes::from_static(b":\n\n")).await {
                                return;
                            }
                        }
                    }
                }
            }
            read = match streams.read(&name, From::At(read.end), SSE_READ_MAX).await {
                Ok(read) => read,
                Err(_) => return,
            };
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
    }));
    let mut response = body.into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if !text {
        out.insert(SSE_DATA_ENCODING, HeaderValue::from_static("base64"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain_decimals() {
        assert_eq!(strict_integer("0", 10), Some(0));
        assert_eq!(strict_integer("3600", u64::MAX), Some(3600));
        for bad in ["", "+3600", "03600", "3600.0", "3.6e3", "-1", " 1", "１"] {
            assert_eq!(strict_integer(bad, u64::MAX), None, "{bad:?}");
        }
        assert_eq!(strict_integer("11", 10), None);
    }

    #[test]
    fn rfc3339_times_with_an_offset_name_the_same_instant() {
        let z = parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2030-01-01T01:00:00+01:00"), Some(z));
        assert_eq!(parse_rfc3339("2029-12-31T23:30:00-00:30"), Some(z));
        assert_eq!(parse_rfc3339("2030-01-01T00:00:00.500Z"), Some(z + 500));
        for bad in [
            "",
            "tomorrow",
            "2030-01-01",
            "2030-01-01T00:00:00+1:00",
            "1735689600",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_are_the_path_after_the_prefix() {
        assert_eq!(stream_name("/v1/stream", "/v1/stream/a/b").unwrap(), "a/b");
        assert!(stream_name("/v1/stream", "/v1/stream/").is_err());
        assert!(stream_name("/v1/stream", "/v1/streamx").is_err());
        for bad in [
            "a//b",
            "a/",
            "/a",
            "a/../b",
            "a/./b",
            "..",
            "a/%2E%2e/b",
            "%2e",
        ] {
            let error = stream_name("/v1/stream", &format!("/v1/stream/{bad}")).unwrap_err();
            assert_eq!(error.code, "invalid_stream_name", "{bad}");
        }
        assert_eq!(
            stream_name("/v1/stream", "/v1/stream/a.b/..c").unwrap(),
            "a.b/..c"
        );
        assert_eq!(
            stream_name("/v1/stream", "/v1/stream/__ds/subscriptions/x")
                .unwrap_err()
                .status,
            StatusCode::NOT_IMPLEMENTED
        );
        let long = format!("/v1/stream/{}", "a".repeat(NAME_MAX + 1));
        assert_eq!(
            stream_name("/v1/stream", &long).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
