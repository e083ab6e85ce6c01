//! `POST /.well-known/mercure`: publish an event, as a Mercure form or as JSON.

use axum::body::{Body, BodyDataStream};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::Deserialize;

use super::auth::Credentials;
use super::{ApiError, AppState, ConnectionInfo, form};
use crate::hub::Publish;

/// Publishes; answers the event id as `text/plain`, as Mercure does.
pub async fn publish(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnectionInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let credentials = Credentials {
        headers: &headers,
        query: &[],
    };
    let grants = app.auth.publisher(&credentials, app.config.dev)?;
    if grants.as_ref().is_some_and(|g| g.by_cookie) {
        super::cors::from_a_trusted_page(&app, &headers)?;
    }
    // The rate is per publisher: the token's subject, else the address.
    let publisher = match grants.as_ref().and_then(|g| g.subject.as_deref()) {
        Some(subject) => format!("sub:{subject}"),
        None => format!("addr:{}", app.client(&conn, &headers).ip),
    };
    app.limits.publish(&publisher)?;
    let publish = read_publish(&headers, body, app.config.max_body).await?;
    if let Some(topic) = publish
        .topics
        .iter()
        .find(|t| addresses_hub(t, &app.hub_url))
    {
        return Err(ApiError::bad_request(
            "reserved_topic",
            format!(
                "the topic {topic:?} is in the hub's own namespace ({}): only the hub publishes there",
                app.hub_url.path()
            ),
        ));
    }
    if let Some(grants) = &grants {
        grants.may_publish(&publish.topics).map_err(|topic| {
            app.auth
                .insufficient_scope(format!("the token may not publish to the topic {topic:?}"))
        })?;
    }
    let id = match super::stream_topics::target(&app, &publish).await? {
        Some(stream) => super::stream_topics::append(&app, stream, publish).await?,
        None => app.hub.publish(publish).await?.id.clone(),
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        id,
    )
        .into_response())
}

/// Whether `topic` names a resource under the hub's URL (its subscription
/// events, `/.well-known/mercure/subscriptions/...`), which publishers may
/// not forge. As the Mercure draft has it: the topic resolved against the
/// hub's URL, whatever its scheme and host, with dot segments removed and
/// percent-encoded unreserved characters decoded, so `/.well-known/%6Dercure`
/// or `/x/../.well-known/mercure/a` do not slip through.
pub(super) fn addresses_hub(topic: &str, hub: &url::Url) -> bool {
    // An empty topic would resolve to the hub's URL itself: the hub refuses
    // it as empty.
    if topic.is_empty() {
        return false;
    }
    let Ok(resolved) = hub.join(topic) else {
        // No URL reference: it cannot name a path of the hub.
        return false;
    };
    let decoded = decode_unreserved(resolved.path());
    // Decoding may make new dot segments (`%2E%2E`): remove them again.
    let path = match hub.join(&decoded) {
        Ok(again) => again.path().to_owned(),
        Err(_) => decoded,
    };
    // The hub's own path, normalized the same way (`/my%2Dhub` is `/my-hub`).
    let own = decode_unreserved(hub.path());
    let own = own.trim_end_matches('/');
    path == own
        || path
            .strip_prefix(own)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `%XX` decoded where it encodes an unreserved character (RFC 3986:
/// letters, digits, `-._~`); any other escape is kept as is.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
        match decoded {
            Some(b) => {
                out.push(b as char);
                i += 3;
            }
            None => {
                let c = path[i..].chars().next().expect("in bounds");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// Reads a publish request body of either kind, enforcing the size limit.
pub async fn read_publish(
    headers: &HeaderMap,
    body: Body,
    max_body: usize,
) -> Result<Publish, ApiError> {
    let kind = body_kind(headers)?;
    let bytes = read_body(headers, body, max_body).await?;
    match kind {
        BodyKind::Form => from_form(&bytes),
        BodyKind::Json => from_json(&bytes),
    }
}

/// Reads a whole request body, at most `max_body` bytes (else `413`).
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max_body: usize,
) -> Result<BytesMut, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {max_body} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut frames = body.into_data_stream();
    if declared.is_some_and(|len| len > max_body as u64) {
        discard(&mut frames, 0, declared).await;
        return Err(too_large());
    }
    let mut bytes = BytesMut::new();
    while let Some(chunk) = frames.next().await {
        let chunk = chunk.map_err(|e| ApiError::unreadable_body(&e))?;
        if bytes.len() + chunk.len() > max_body {
            discard(&mut frames, (bytes.len() + chunk.len()) as u64, declared).await;
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Most bytes of a refused body read (and thrown away) before answering.
const DISCARD_LIMIT: u64 = 8 << 20;

/// Reads and throws away a body that is too large, as long as it is not
/// larger than [`DISCARD_LIMIT`] (and within the body deadline), before the
/// `413`: a client that sends its whole body before reading the answer (as
/// many HTTP libraries do) would otherwise get a reset, not the answer,
/// when the connection is closed with its body unread.
async fn discard(frames: &mut BodyDataStream, mut read: u64, declared: Option<u64>) {
    if declared.is_some_and(|len| len > DISCARD_LIMIT) {
        return;
    }
    while let Some(Ok(chunk)) = frames.next().await {
        read += chunk.len() as u64;
        if read > DISCARD_LIMIT {
            return;
        }
    }
}

enum BodyKind {
    Form,
    Json,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
        "application/json" => Ok(BodyKind::Json),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            format!(
                "content type {content_type:?} is not supported: use application/x-www-form-urlencoded or application/json"
            ),
        )),
    }
}

pub(super) fn from_form(body: &[u8]) -> Result<Publish, ApiError> {
    let fields =
        form::parse(body).map_err(|e| ApiError::bad_request("invalid_utf8", e.to_string()))?;
    let mut publish = Publish::default();
    let mut seen = Vec::new();
    for (name, value) in fields {
        const ONCE: [&str; 7] = ["data", "id", "type", "retry", "private", "retain", "final"];
        if ONCE.contains(&name.as_str()) {
            if seen.contains(&name) {
                return Err(ApiError::bad_request(
                    "duplicate_field",
                    format!("the field {name:?} is given more than once"),
                ));
            }
            seen.push(name.clone());
        }
        match name.as_str() {
            "topic" => publish.topics.push(value),
            "data" => publish.data = value,
            "id" => publish.id = Some(value),
            "type" => publish.event_type = Some(value),
            "retry" => publish.retry = Some(parse_retry(&value)?),
            // The field's presence marks the update private, whatever its
            // value (`private=`, even `private=off`): Mercure says so, and
            // reading `off` as public would deliver to anyone an update its
            // publisher meant to protect.
            "private" => publish.private = true,
            "retain" => publish.retain = parse_bool(&name, &value)?,
            "final" => publish.is_final = parse_bool(&name, &value)?,
            // Mercure: "hubs MUST ignore fields they do not recognize", so
            // that publishers of later versions work. (JSON bodies, ssehub's
            // own, stay strict: a misspelled field there is an error.)
            _ => {}
        }
    }
    Ok(publish)
}

/// Booleans as HTML forms and Mercure send them (`private=on`).
fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" | "" => Ok(false),
        _ => Err(ApiError::bad_request(
            "invalid_boolean",
            format!("the field {name:?} must be true, on, 1, false, off or 0, not {value:?}"),
        )),
    }
}

fn parse_retry(value: &str) -> Result<u64, ApiError> {
    value
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| value.parse().ok())
        .flatten()
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_retry",
                format!("retry must be a whole number of milliseconds, not {value:?}"),
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPublish {
    #[serde(default, alias = "topics")]
    topic: Option<Topics>,
    #[serde(default)]
    data: serde_json::Value,
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    retry: Option<u64>,
    #[serde(default)]
    private: bool,
    #[serde(default)]
    retain: bool,
    #[serde(default, rename = "final")]
    is_final: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Topics {
    One(String),
    Many(Vec<String>),
}

pub(super) fn from_json(body: &[u8]) -> Result<Publish, ApiError> {
    let parsed: JsonPublish = serde_json::from_slice(body).map_err(|e| {
        let message = e.to_string();
        let code = if message.starts_with("unknown field") {
            "unknown_field"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(code, message)
    })?;
    Ok(Publish {
        topics: match parsed.topic {
            None => Vec::new(),
            Some(Topics::One(topic)) => vec![topic],
            Some(Topics::Many(topics)) => topics,
        },
        // Data is text on the wire; any other JSON value is sent as compact
        // JSON text, so `"data": {"step": 2}` just works.
        data: match parsed.data {
            serde_json::Value::String(text) => text,
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        },
        id: parsed.id,
        event_type: parsed.event_type,
        retry: parsed.retry,
        private: parsed.private,
        retain: parsed.retain,
        is_final: parsed.is_final,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_map_to_a_publish() {
        let p = from_form(
            b"topic=a&topic=b&data=hi&id=x1&type=t&retry=50&private=on&retain=1&final=true",
        )
        .unwrap();
        assert_eq!(
            p,
            Publish {
                topics: vec!["a".into(), "b".into()],
                data: "hi".into(),
                id: Some("x1".into()),
                event_type: Some("t".into()),
                retry: Some(50),
                private: true,
                retain: true,
                is_final: true,
            }
        );
    }

    #[test]
    fn form_errors_have_codes() {
        let code = |body: &[u8]| from_form(body).unwrap_err().code;
        assert!(
            from_form(b"topic=a&nope=1&nope=2").is_ok(),
            "unknown: ignored"
        );
        assert_eq!(code(b"topic=a&data=1&data=2"), "duplicate_field");
        assert_eq!(code(b"topic=a&retain=yes"), "invalid_boolean");
        // `private` is a presence, not a boolean.
        for private in ["private", "private=", "private=off", "private=yes"] {
            let body = format!("topic=a&{private}");
            assert!(from_form(body.as_bytes()).unwrap().private, "{private}");
        }
        assert_eq!(code(b"topic=a&retry=-1"), "invalid_retry");
        assert_eq!(code(b"topic=a&data=%C3"), "invalid_utf8");
    }

    #[test]
    fn the_hub_namespace_is_found_however_it_is_spelled() {
        let hub = url::Url::parse("https://hub.example.com/.well-known/mercure").unwrap();
        for topic in [
            "/.well-known/mercure",
            "/.well-known/mercure/subscriptions/exact/a/b",
            "https://elsewhere.example/.well-known/mercure/subscriptions",
            "https://hub.example.com/.well-known/%6Dercure/x",
            "/.well-known/mercure/../mercure/x",
            "/x/../.well-known/mercure",
            "/.well-known/mercure/%2E%2E/mercure/x",
            "/.well-known/%2E/mercure",
            "mercure/x",
        ] {
            assert!(addresses_hub(topic, &hub), "{topic}");
        }
        for topic in [
            "/.well-known/mercurey",
            "/.well-known/mercure%2Fx",
            "https://example.com/books/1",
            "urn:uuid:1",
            "books",
            "http://[::1",
        ] {
            assert!(!addresses_hub(topic, &hub), "{topic}");
        }
    }

    #[test]
    fn the_hub_namespace_is_normalized_on_both_sides() {
        let hub = url::Url::parse("https://hub.example.com/my%2Dhub").unwrap();
        for topic in ["/my-hub/subscriptions/x", "/my%2Dhub", "/my%2dhub/a"] {
            assert!(addresses_hub(topic, &hub), "{topic}");
        }
        assert!(!addresses_hub("/my-hubs/x", &hub));
    }

    #[test]
    fn json_accepts_one_or_many_topics_and_any_data() {
        let p = from_json(br#"{"topic":"a","data":{"step":2}}"#).unwrap();
        assert_eq!(p.topics, ["a"]);
        assert_eq!(p.data, r#"{"step":2}"#);
        let p = from_json(br#"{"topics":["a","b"],"data":"x","final":true}"#).unwrap();
        assert_eq!(p.topics, ["a", "b"]);
        assert!(p.is_final);
    }

    #[test]
    fn json_errors_have_codes() {
        let code = |body: &[u8]| from_json(body).unwrap_err().code;
        assert_eq!(code(br#"{"topic":"a","colour":1}"#), "unknown_field");
        assert!(from_json(br#"{"data":"x"}"#).unwrap().topics.is_empty());
        assert_eq!(code(br#"{"topic":"a","private":"on"}"#), "invalid_json");
        assert_eq!(code(b"{"), "invalid_json");
    }
}
