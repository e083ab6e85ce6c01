//! What a stream's content type means (PROTOCOL.md §9): JSON mode's
//! messages, and how SSE carries the bytes.

use bytes::Bytes;
use serde_json::value::RawValue;

/// A content type's essence: the media type, lower case, without
/// parameters (`application/json; charset=utf-8` is `application/json`).
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a stream of this type is in JSON mode (§9.1).
pub fn is_json(content_type: &str) -> bool {
    essence(content_type) == "application/json"
}

/// Whether SSE carries this type's bytes as text (else base64, §5.8).
pub fn is_text(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence.starts_with("text/") || essence == "application/json"
}

/// Why a JSON body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON.
    #[error("the body is not valid JSON: {0}")]
    Invalid(String),
    /// `[]` appended: nothing to append (§9.1.3).
    #[error("an empty JSON array appends nothing")]
    EmptyArray,
}

/// The messages of a JSON body: an array's elements (one level flattened,
/// §9.1.2), else the body itself, each as its own text (not re-encoded).
/// `[]` is an error unless `empty_allowed` (a create, §9.1.3).
pub fn messages(body: &[u8], empty_allowed: bool) -> Result<Vec<Bytes>, JsonError> {
    let text = std::str::from_utf8(body).map_err(|e| JsonError::Invalid(e.to_string()))?;
    let value: &RawValue =
        serde_json::from_str(text).map_err(|e| JsonError::Invalid(e.to_string()))?;
    let raw = value.get();
    if !raw.starts_with('[') {
        return Ok(vec![Bytes::copy_from_slice(raw.as_bytes())]);
    }
    let elements: Vec<&RawValue> =
        serde_json::from_str(raw).map_err(|e| JsonError::Invalid(e.to_string()))?;
    if elements.is_empty() && !empty_allowed {
        return Err(JsonError::EmptyArray);
    }
    Ok(elements
        .iter()
        .map(|e| Bytes::copy_from_slice(e.get().as_bytes()))
        .collect())
}

/// Messages as the JSON array a read answers.
pub fn array(messages: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + messages.iter().map(|m| m.len() + 1).sum::<usize>());
    out.push(b'[');
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(message);
    }
    out.push(b']');
    out
}

/// The data of a read or an append, as one body: a JSON stream's messages
/// as an array, other streams' chunks joined.
pub fn body(content_type: &str, pieces: &[Bytes]) -> Bytes {
    if is_json(content_type) {
        return Bytes::from(array(pieces));
    }
    match pieces {
        [one] => one.clone(),
        many => Bytes::from(many.concat()),
    }
}

/// The data as text for an SSE event: text types as they are (a byte that
/// is no UTF-8 becomes U+FFFD), other types in base64 (§5.8).
pub fn as_text(content_type: &str, pieces: &[Bytes]) -> String {
    use base64::Engine;
    let body = body(content_type, pieces);
    if is_text(content_type) {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        base64::engine::general_purpose::STANDARD.encode(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(body: &str) -> Result<Vec<String>, JsonError> {
        messages(body.as_bytes(), false).map(|m| {
            m.iter()
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect()
        })
    }

    #[test]
    fn one_level_of_an_array_is_flattened() {
        assert_eq!(
            texts(r#"{"event": "created"}"#).unwrap(),
            [r#"{"event": "created"}"#]
        );
        assert_eq!(
            texts(r#"[{"a":1}, {"b":2}]"#).unwrap(),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
        assert_eq!(texts("[[1,2], [3,4]]").unwrap(), ["[1,2]", "[3,4]"]);
        assert_eq!(texts("[[[1,2,3]]]").unwrap(), ["[[1,2,3]]"]);
        assert_eq!(texts(" 42 ").unwrap(), ["42"]);
        assert_eq!(texts(r#""a""#).unwrap(), [r#""a""#]);
    }

    #[test]
    fn bad_json_and_empty_appends_are_refused() {
        assert_eq!(texts("[]"), Err(JsonError::EmptyArray));
        assert!(messages(b"[]", true).unwrap().is_empty());
        for bad in ["", "{", "[1,", "1 2", "{\"a\":}", "\u{0}"] {
            assert!(matches!(texts(bad), Err(JsonError::Invalid(_))), "{bad:?}");
        }
        assert!(messages(&[0xff, 0xfe], false).is_err());
    }

    #[test]
    fn reads_answer_an_array() {
        assert_eq!(array(&[]), b"[]");
        let m = [Bytes::from_static(b"1"), Bytes::from_static(b"{\"a\":2}")];
        assert_eq!(array(&m), b"[1,{\"a\":2}]");
    }

    #[test]
    fn events_carry_text_as_text_and_bytes_in_base64() {
        let pieces = [Bytes::from_static(b"1"), Bytes::from_static(b"[2]")];
        assert_eq!(as_text("application/json", &pieces), "[1,[2]]");
        assert_eq!(as_text("text/plain", &pieces), "1[2]");
        assert_eq!(
            as_text("text/plain", &[Bytes::from_static(b"a\xffb")]),
            "a\u{fffd}b"
        );
        assert_eq!(as_text("application/octet-stream", &pieces), "MVsyXQ==");
    }

    #[test]
    fn types_are_compared_by_essence() {
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("application/ndjson"));
        assert!(is_text("text/plain"));
        assert!(is_text("application/json"));
        assert!(!is_text("application/octet-stream"));
    }
}
