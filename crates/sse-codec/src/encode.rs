//! Encoding events into the `text/event-stream` wire format.

use bytes::{BufMut, Bytes, BytesMut};

/// Why an event cannot be put on the wire unchanged.
///
/// The encoder never alters a field to make it fit: a line break in an id
/// would end the `id:` line early and let the rest of the value be read as a
/// new field (an injection), so it is refused instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The id contains CR or LF.
    #[error("the event id contains a line break (CR or LF)")]
    LineBreakInId,
    /// The id contains U+0000. Browsers ignore such an id, so resume would
    /// silently use an older one.
    #[error("the event id contains a NUL character")]
    NulInId,
    /// The event type contains CR or LF.
    #[error("the event type contains a line break (CR or LF)")]
    LineBreakInEventType,
}

/// One event to put on the wire. All fields are optional and borrowed, so a
/// caller can encode from whatever owns the strings.
///
/// An event without `data` is not dispatched by a browser; it is still useful
/// to set the last event id or the reconnection time, or (comment only) as a
/// heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Event<'a> {
    /// `id:` — becomes the client's last event id (sent back on reconnect).
    pub id: Option<&'a str>,
    /// `event:` — the event type; browsers use `message` when absent or empty.
    pub event_type: Option<&'a str>,
    /// `data:` — the payload; may contain any text, including line breaks.
    pub data: Option<&'a str>,
    /// `retry:` — the reconnection time in milliseconds.
    pub retry: Option<u64>,
    /// A comment line (`: text`), ignored by clients.
    pub comment: Option<&'a str>,
}

impl<'a> Event<'a> {
    /// An event carrying `data` as a `message`.
    pub fn message(data: &'a str) -> Self {
        Event {
            data: Some(data),
            ..Event::default()
        }
    }

    /// Sets the id.
    pub fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the event type.
    pub fn event_type(mut self, event_type: &'a str) -> Self {
        self.event_type = Some(event_type);
        self
    }

    /// Sets the reconnection time in milliseconds.
    pub fn retry(mut self, millis: u64) -> Self {
        self.retry = Some(millis);
        self
    }

    /// Sets a comment.
    pub fn comment(mut self, comment: &'a str) -> Self {
        self.comment = Some(comment);
        self
    }

    /// Checks that every field can be sent unchanged.
    pub fn validate(&self) -> Result<(), EncodeError> {
        if let Some(id) = self.id {
            validate_id(id)?;
        }
        if let Some(event_type) = self.event_type {
            validate_event_type(event_type)?;
        }
        Ok(())
    }

    /// Encodes the event into shareable bytes.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut buf)?;
        Ok(buf.freeze())
    }

    /// Appends the encoded event to `buf`. On error nothing is appended.
    pub fn encode_into(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        self.validate()?;
        if let Some(comment) = self.comment {
            // Every line of a multi-line comment gets its own colon, so a line
            // break in a comment can never start a field.
            for line in lines(comment) {
                put_field(buf, "", line);
            }
        }
        if let Some(event_type) = self.event_type {
            put_field(buf, "event", event_type);
        }
        if let Some(id) = self.id {
            put_field(buf, "id", id);
        }
        if let Some(retry) = self.retry {
            buf.put_slice(b"retry: ");
            buf.put_slice(itoa_u64(retry, &mut [0; 20]));
            buf.put_u8(b'\n');
        }
        if let Some(data) = self.data {
            for line in lines(data) {
                put_field(buf, "data", line);
            }
        }
        // The blank line dispatches the event. A blank line also copies the
        // stream's id buffer into the client's last event id, so it is left
        // out when only `retry` or a comment is sent: at the start of a stream
        // it would wipe the id the client must send to resume.
        if self.event_type.is_some() || self.id.is_some() || self.data.is_some() {
            buf.put_u8(b'\n');
        }
        Ok(())
    }

    /// An upper bound guess of the encoded size, to allocate once.
    fn encoded_len_hint(&self) -> usize {
        let text = |s: Option<&str>| s.map_or(0, |s| s.len() + 8);
        // Each data line costs "data: " and "\n"; guess a few lines.
        text(self.comment)
            + text(self.event_type)
            + text(self.id)
            + self.retry.map_or(0, |_| 28)
            + self.data.map_or(0, |d| d.len() + 8 * (1 + d.len() / 64))
            + 1
    }
}

/// Writes `name: value\n`. The space after the colon is always written: the
/// parser strips exactly one, so a value starting with a space survives.
fn put_field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.reserve(name.len() + value.len() + 3);
    buf.put_slice(name.as_bytes());
    buf.put_slice(b": ");
    buf.put_slice(value.as_bytes());
    buf.put_u8(b'\n');
}

/// Splits text at LF, CR and CRLF, the three line endings of the format.
/// Unlike `str::lines`, a trailing line break yields a final empty line, so
/// `"a\n"` round-trips exactly.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr2(b'\r', b'\n', current.as_bytes()) {
            None => {
                rest = None;
                Some(current)
            }
            Some(i) => {
                let after = if current[i..].starts_with("\r\n") {
                    i + 2
                } else {
                    i + 1
                };
                rest = Some(&current[after..]);
                Some(&current[..i])
            }
        }
    })
}

fn itoa_u64(mut n: u64, scratch: &mut [u8; 20]) -> &[u8] {
    let mut i = scratch.len();
    loop {
        i -= 1;
        scratch[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &scratch[i..];
        }
    }
}

/// Encodes a lone `id:` line with no blank line after it. It dispatches
/// nothing; it sets the id that the next dispatched block gives the client,
/// even a block that carries no id of its own. A hub writes it at the start of
/// a resumed stream so that id-less control events do not make the client
/// forget where it was.
pub fn id_line(id: &str) -> Result<Bytes, EncodeError> {
    validate_id(id)?;
    let mut buf = BytesMut::with_capacity(id.len() + 5);
    put_field(&mut buf, "id", id);
    Ok(buf.freeze())
}

/// Checks that `id` can be sent as an event id: no CR, LF or NUL.
pub fn validate_id(id: &str) -> Result<(), EncodeError> {
    if id.contains(['\r', '\n']) {
        Err(EncodeError::LineBreakInId)
    } else if id.contains('\0') {
        Err(EncodeError::NulInId)
    } else {
        Ok(())
    }
}

/// Checks that `event_type` can be sent as an event type: no CR or LF.
pub fn validate_event_type(event_type: &str) -> Result<(), EncodeError> {
    if event_type.contains(['\r', '\n']) {
        Err(EncodeError::LineBreakInEventType)
    } else {
        Ok(())
    }
}

/// What data looks like after a round trip through the wire: every CRLF and
/// every lone CR becomes LF. Everything else is kept exactly.
pub fn normalize_line_breaks(data: &str) -> String {
    lines(data).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(event: Event<'_>) -> String {
        String::from_utf8(event.encode().unwrap().to_vec()).unwrap()
    }

    #[test]
    fn message_is_one_data_line_and_a_blank_line() {
        assert_eq!(wire(Event::message("hello")), "data: hello\n\n");
    }

    #[test]
    fn all_fields_in_a_stable_order() {
        let event = Event::message("d")
            .id("42")
            .event_type("update")
            .retry(1500)
            .comment("hi");
        assert_eq!(
            wire(event),
            ": hi\nevent: update\nid: 42\nretry: 1500\ndata: d\n\n"
        );
    }

    #[test]
    fn every_line_break_kind_starts_a_new_data_line() {
        assert_eq!(
            wire(Event::message("a\nb\r\nc\rd")),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn empty_lines_and_trailing_break_are_kept() {
        assert_eq!(
            wire(Event::message("\na\n\n")),
            "data: \ndata: a\ndata: \ndata: \n\n"
        );
    }

    #[test]
    fn empty_data_is_still_an_event() {
        assert_eq!(wire(Event::message("")), "data: \n\n");
    }

    #[test]
    fn leading_space_survives_because_one_space_is_always_written() {
        assert_eq!(wire(Event::message("  x")), "data:   x\n\n");
    }

    #[test]
    fn comment_only_has_no_dispatching_blank_line() {
        assert_eq!(wire(Event::default().comment("")), ": \n");
        assert_eq!(wire(Event::default().comment("a\nb")), ": a\n: b\n");
    }

    #[test]
    fn retry_extremes_and_no_blank_line_for_retry_alone() {
        assert_eq!(wire(Event::default().retry(0)), "retry: 0\n");
        assert_eq!(
            wire(Event::default().retry(u64::MAX)),
            "retry: 18446744073709551615\n"
        );
        assert_eq!(wire(Event::default().id("3")), "id: 3\n\n");
    }

    #[test]
    fn id_line_sets_the_buffer_without_dispatch() {
        assert_eq!(&id_line("42").unwrap()[..], b"id: 42\n");
        assert_eq!(id_line("4\n2"), Err(EncodeError::LineBreakInId));
    }

    #[test]
    fn bad_ids_and_types_are_errors_and_append_nothing() {
        let mut buf = BytesMut::from(&b"keep"[..]);
        for (event, err) in [
            (Event::message("x").id("1\n2"), EncodeError::LineBreakInId),
            (Event::message("x").id("1\r"), EncodeError::LineBreakInId),
            (Event::message("x").id("a\0b"), EncodeError::NulInId),
            (
                Event::message("x").event_type("t\ndata: evil"),
                EncodeError::LineBreakInEventType,
            ),
            (
                Event::message("x").event_type("\r"),
                EncodeError::LineBreakInEventType,
            ),
        ] {
            assert_eq!(event.encode_into(&mut buf), Err(err));
        }
        assert_eq!(&buf[..], b"keep");
    }

    #[test]
    fn nul_is_fine_in_type_and_data() {
        assert_eq!(
            wire(Event::message("a\0b").event_type("t\0")),
            "event: t\0\ndata: a\0b\n\n"
        );
    }

    #[test]
    fn normalization_turns_cr_and_crlf_into_lf() {
        assert_eq!(normalize_line_breaks("a\r\nb\rc\nd\r"), "a\nb\nc\nd\n");
        assert_eq!(normalize_line_breaks("\r\r\n"), "\n\n");
        assert_eq!(normalize_line_breaks("日本語 🎉"), "日本語 🎉");
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            EncodeError::NulInId.to_string(),
            "the event id contains a NUL character"
        );
    }
}
