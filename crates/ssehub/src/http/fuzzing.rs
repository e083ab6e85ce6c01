//! Entry points for the fuzz targets in `crates/ssehub/fuzz`: the edge's
//! parsers of untrusted input that are not public API. Built only by
//! cargo-fuzz, which sets `--cfg fuzzing`.

use super::{ApiError, direct, form, publish};
use crate::hub::Publish;

/// A publish body read as the route reads it: JSON (`application/json`)
/// or a form.
pub fn publish_body(json: bool, body: &[u8]) -> Result<Publish, ApiError> {
    if json {
        publish::from_json(body)
    } else {
        publish::from_form(body)
    }
}

/// A query string or form body, decoded.
pub fn query(input: &[u8]) -> Result<Vec<(String, String)>, form::FormError> {
    form::parse(input)
}

/// What the direct path makes of a connection's first bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadOutcome {
    /// A complete, valid head.
    Head {
        /// The method.
        method: String,
        /// The path, without the query.
        path: String,
        /// The query.
        query: String,
        /// The headers, in order.
        headers: Vec<(String, Vec<u8>)>,
        /// HTTP/1.1.
        http11: bool,
    },
    /// More bytes are needed.
    Partial,
    /// Over the head limits.
    TooLarge,
    /// Refused, and why.
    Invalid(&'static str),
}

/// Parses `buf` as the direct path does.
pub fn request_head(buf: &[u8]) -> HeadOutcome {
    match direct::parse_head(buf) {
        direct::Parsed::Head(head) => HeadOutcome::Head {
            method: head.method.to_string(),
            path: head.path,
            query: head.query,
            headers: head
                .headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                .collect(),
            http11: head.http11,
        },
        direct::Parsed::Partial => HeadOutcome::Partial,
        direct::Parsed::TooLarge => HeadOutcome::TooLarge,
        direct::Parsed::Invalid(why) => HeadOutcome::Invalid(why),
    }
}
