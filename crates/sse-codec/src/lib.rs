//! The Server-Sent Events wire format, and nothing else.
//!
//! * [`Event`] encodes one event (id, event type, data, retry, comment) into
//!   [`bytes::Bytes`], so a hub encodes it once and every subscriber writes the
//!   same bytes.
//! * [`Parser`] is an incremental, byte-level implementation of the WHATWG HTML
//!   "event stream interpretation" algorithm: feed it chunks as they arrive
//!   from the network, in any split, and it yields the events a browser's
//!   `EventSource` would dispatch.
//!
//! The two are exact inverses up to one documented normalisation: line breaks
//! inside data (LF, CR or CRLF) are sent as separate `data:` lines, and the
//! WHATWG algorithm joins those lines with LF. So `"a\r\nb"` comes back as
//! `"a\nb"`. See [`normalize_line_breaks`].
//!
//! The crate does no I/O and knows nothing about topics, connections or tokio.
#![deny(missing_docs)]

mod encode;
mod parse;

pub use encode::{
    EncodeError, Event, id_line, normalize_line_breaks, validate_event_type, validate_id,
};
pub use parse::{Item, ParsedEvent, Parser};
