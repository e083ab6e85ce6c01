//! An incremental parser for `text/event-stream`, following the WHATWG HTML
//! standard's "event stream interpretation" section rule by rule.
//!
//! It works on bytes, not text: lines are cut at CR and LF bytes, and each
//! field name and value is then decoded as UTF-8 with replacement characters.
//! That is the same as decoding the whole stream first, because CR, LF and `:`
//! are ASCII and can never be part of a multi-byte sequence; an incomplete
//! sequence before them decodes to U+FFFD either way.

/// The three bytes of a UTF-8 byte order mark.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One thing the parser found, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An event an `EventSource` would dispatch.
    Event(ParsedEvent),
    /// A `retry` field with a valid value: the new reconnection time in
    /// milliseconds. It takes effect at once, not at the next blank line.
    Retry(u64),
}

/// A dispatched event, as a browser's `MessageEvent` would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The event type; `message` when the stream gave none.
    pub event_type: String,
    /// The data lines joined with LF.
    pub data: String,
    /// The last event id at dispatch time; it persists across events until an
    /// `id` field changes it.
    pub last_event_id: String,
}

/// Incremental event-stream parser. Feed it chunks split anywhere, even inside
/// a UTF-8 sequence, a BOM or a CRLF.
///
/// What it holds is bounded by [`Parser::with_max_event_size`]: a line or an
/// event that grows past the bound (a broken or hostile server can send a
/// line that never ends) is dropped whole, never dispatched, and
/// [`Parser::take_overflow`] says so; parsing goes on with the next event.
#[derive(Debug, Clone)]
pub struct Parser {
    /// Bytes of the line being read, not yet terminated.
    line: Vec<u8>,
    /// The previous chunk ended with CR: an LF starting the next chunk belongs
    /// to the same line ending.
    after_cr: bool,
    /// The stream's first bytes have been checked for a BOM.
    past_start: bool,
    data: String,
    event_type: String,
    /// The id buffer: set by `id` fields, read at dispatch.
    id_buffer: String,
    /// The last event id as of the last dispatch: what a client resends in
    /// `Last-Event-ID` when it reconnects.
    last_event_id: String,
    /// Most bytes a line and the event being read may hold together.
    max_event_size: usize,
    /// The event being read grew too large: its fields are ignored until the
    /// blank line that would have dispatched it.
    dropping_event: bool,
    /// The line being read grew too large: its bytes are ignored until it
    /// ends.
    dropping_line: bool,
    /// An event was dropped since the last [`Parser::take_overflow`].
    overflowed: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            line: Vec::new(),
            after_cr: false,
            past_start: false,
            data: String::new(),
            event_type: String::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
            max_event_size: usize::MAX,
            dropping_event: false,
            dropping_line: false,
            overflowed: false,
        }
    }
}

impl Parser {
    /// A parser at the start of a stream, with no bound on what it holds.
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that holds at most `bytes` for the line and the event being
    /// read; larger events are dropped (see [`Parser::take_overflow`]).
    pub fn with_max_event_size(bytes: usize) -> Self {
        Parser {
            max_event_size: bytes,
            ..Self::default()
        }
    }

    /// Whether an event was dropped for being too large since the last call.
    pub fn take_overflow(&mut self) -> bool {
        std::mem::take(&mut self.overflowed)
    }

    /// Bytes held for the event being read, its unfinished line included.
    pub fn held_bytes(&self) -> usize {
        self.line.len() + self.data.len() + self.event_type.len() + self.id_buffer.len()
    }

    /// Drops the event being read once it holds more than the bound.
    fn check_size(&mut self) {
        if self.held_bytes() > self.max_event_size {
            self.overflowed = true;
            self.dropping_event = true;
            self.data = String::new();
            self.event_type = String::new();
        }
    }

    /// Parses a chunk and returns what it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Item> {
        let mut items = Vec::new();
        self.feed_into(chunk, &mut items);
        items
    }

    /// Parses a chunk, appending what it completed to `items`.
    pub fn feed_into(&mut self, mut chunk: &[u8], items: &mut Vec<Item>) {
        if !self.past_start {
            chunk = self.skip_bom(chunk);
            if !self.past_start {
                return;
            }
        }
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(end) = memchr::memchr2(b'\r', b'\n', chunk) {
            if self.dropping_line {
                // The end of a line too long to keep: it is not a blank
                // line, and its field is lost with the event.
                self.dropping_line = false;
            } else if self.line.is_empty() {
                self.process_line(&chunk[..end], items);
            } else {
                self.line.extend_from_slice(&chunk[..end]);
                let line = std::mem::take(&mut self.line);
                if line.len() + self.data.len() > self.max_event_size {
                    self.overflowed = true;
                    self.dropping_event = true;
                    self.data = String::new();
                } else {
                    self.process_line(&line, items);
                }
                self.line = line;
                self.line.clear();
            }
            let ending = chunk[end];
            chunk = &chunk[end + 1..];
            if ending == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        if !self.dropping_line {
            self.line.extend_from_slice(chunk);
            if self.held_bytes() > self.max_event_size {
                // A line that does not end: keep none of it.
                self.line = Vec::new();
                self.dropping_line = true;
                self.check_size();
                self.overflowed = true;
                self.dropping_event = true;
            }
        }
    }

    /// The last event id as of the last dispatched (or empty-data) block: the
    /// value to send as `Last-Event-ID` when reconnecting. An `id` field of an
    /// event that was never terminated by a blank line does not count.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Strips one BOM from the very start of the stream, holding back a
    /// partial BOM until enough bytes arrived to decide.
    fn skip_bom<'c>(&mut self, mut chunk: &'c [u8]) -> &'c [u8] {
        // `line` holds the matched BOM prefix; BOM bytes are never CR or LF,
        // so on a mismatch they simply stay as the start of the first line.
        while let Some(&byte) = chunk.first() {
            if byte != BOM[self.line.len()] {
                self.past_start = true;
                return chunk;
            }
            self.line.push(byte);
            chunk = &chunk[1..];
            if self.line.len() == BOM.len() {
                self.line.clear();
                self.past_start = true;
                return chunk;
            }
        }
        chunk
    }

    fn process_line(&mut self, line: &[u8], items: &mut Vec<Item>) {
        if self.dropping_event {
            if line.is_empty() {
                // Where the dropped event would have been dispatched: the
                // next one starts clean (the id buffer is kept, as always).
                self.dropping_event = false;
                self.data.clear();
                self.event_type.clear();
            }
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            _ if line.is_empty() => return self.dispatch(items),
            Some(0) => return, // a comment
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"event" => {
                set_lossy(&mut self.event_type, value);
                self.check_size();
            }
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
                self.check_size();
            }
            b"id" if !value.contains(&0) => set_lossy(&mut self.id_buffer, value),
            // Only ASCII digits; an empty value or one too large for u64
            // carries no usable time and is ignored like any other.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Some(millis) = parse_millis(value) {
                    items.push(Item::Retry(millis));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, items: &mut Vec<Item>) {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        self.data.pop(); // the LF appended after the last data line
        let event_type = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        items.push(Item::Event(ParsedEvent {
            event_type,
            data: std::mem::take(&mut self.data),
            last_event_id: self.last_event_id.clone(),
        }));
    }
}

fn parse_millis(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn set_lossy(target: &mut String, value: &[u8]) {
    target.clear();
    target.push_str(&String::from_utf8_lossy(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, data: &str, id: &str) -> Item {
        Item::Event(ParsedEvent {
            event_type: event_type.into(),
            data: data.into(),
            last_event_id: id.into(),
        })
    }

    fn parse(stream: &[u8]) -> Vec<Item> {
        Parser::new().feed(stream)
    }

    #[test]
    fn the_readme_example() {
        assert_eq!(
            parse(b"data: a\r\ndata: b\n\nid: 7\nevent: x\ndata\n\n"),
            [event("message", "a\nb", ""), event("x", "", "7")]
        );
    }

    #[test]
    fn lf_cr_and_crlf_all_end_lines() {
        let want = [event("message", "a\nb\nc", "")];
        assert_eq!(parse(b"data: a\ndata: b\ndata: c\n\n"), want);
        assert_eq!(parse(b"data: a\rdata: b\rdata: c\r\r"), want);
        assert_eq!(parse(b"data: a\r\ndata: b\r\ndata: c\r\n\r\n"), want);
        assert_eq!(parse(b"data: a\rdata: b\r\ndata: c\n\r"), want);
    }

    #[test]
    fn cr_at_chunk_end_and_lf_at_next_start_are_one_line_ending() {
        let mut parser = Parser::new();
        assert_eq!(parser.feed(b"data: a\r"), []);
        assert_eq!(parser.feed(b"\ndata: b\r"), []);
        // If the LF were a second line ending, this would dispatch "a\nb".
        assert_eq!(parser.feed(b"\n"), []);
        assert_eq!(parser.feed(b"\r"), [event("message", "a\nb", "")]);
    }

    #[test]
    fn cr_at_chunk_end_then_empty_chunk_then_lf() {
        let mut parser = Parser::new();
        parser.feed(b"data: a\r");
        parser.feed(b"");
        assert_eq!(parser.feed(b"\n"), []);
        assert_eq!(parser.feed(b"\n"), [event("message", "a", "")]);
    }

    #[test]
    fn a_cr_dispatches_without_waiting_for_a_possible_lf() {
        assert_eq!(parse(b"data: a\r\r"), [event("message", "a", "")]);
    }

    #[test]
    fn a_line_that_never_ends_is_dropped_and_parsing_goes_on() {
        let mut parser = Parser::with_max_event_size(1024);
        parser.feed(b"data: ok\n\n");
        for _ in 0..100 {
            assert_eq!(parser.feed(&[b'x'; 1000]), []);
            assert!(parser.held_bytes() <= 1024);
        }
        assert!(parser.take_overflow());
        assert!(!parser.take_overflow());
        // The rest of the long line, its event's end, then a good event.
        assert_eq!(
            parser.feed(b"xx\ndata: lost\n\ndata: fine\n\n"),
            [event("message", "fine", "")]
        );
    }

    #[test]
    fn an_event_of_many_lines_that_grows_too_large_is_dropped() {
        let mut parser = Parser::with_max_event_size(100);
        let many: Vec<u8> = b"data: 0123456789\n".repeat(20);
        assert_eq!(parser.feed(&many), []);
        assert!(parser.held_bytes() <= 100);
        assert_eq!(
            parser.feed(b"\nid: 2\ndata: small\n\n"),
            [event("message", "small", "2")]
        );
        assert!(parser.take_overflow());
    }

    #[test]
    fn comments_are_ignored() {
        assert_eq!(
            parse(b": hello\n:\ndata: x\n: between\n\n"),
            [event("message", "x", "")]
        );
        assert_eq!(parse(b": only a comment\n\n"), []);
    }

    #[test]
    fn field_without_colon_has_empty_value() {
        assert_eq!(parse(b"data\ndata\n\n"), [event("message", "\n", "")]);
        assert_eq!(parse(b"event\ndata: x\n\n"), [event("message", "x", "")]);
    }

    #[test]
    fn exactly_one_space_after_the_colon_is_stripped() {
        assert_eq!(parse(b"data:x\n\n"), [event("message", "x", "")]);
        assert_eq!(parse(b"data: x\n\n"), [event("message", "x", "")]);
        assert_eq!(parse(b"data:  x\n\n"), [event("message", " x", "")]);
        assert_eq!(parse(b"data:\tx\n\n"), [event("message", "\tx", "")]);
        assert_eq!(parse(b"data: x:y\n\n"), [event("message", "x:y", "")]);
    }

    #[test]
    fn field_names_are_exact() {
        assert_eq!(
            parse(b"Data: x\ndata : y\n data: z\ndata: w\n\n"),
            [event("message", "w", "")]
        );
    }

    #[test]
    fn data_lines_join_with_lf_and_the_final_lf_is_removed() {
        assert_eq!(
            parse(b"data: a\ndata:\ndata: b\ndata:\n\n"),
            [event("message", "a\n\nb\n", "")]
        );
    }

    #[test]
    fn event_type_is_reset_after_dispatch() {
        assert_eq!(
            parse(b"event: x\ndata: 1\n\ndata: 2\n\n"),
            [event("x", "1", ""), event("message", "2", "")]
        );
    }

    #[test]
    fn event_type_is_reset_even_when_nothing_is_dispatched() {
        assert_eq!(
            parse(b"event: x\n\ndata: 2\n\n"),
            [event("message", "2", "")]
        );
    }

    #[test]
    fn empty_event_type_means_message() {
        assert_eq!(parse(b"event:\ndata: 1\n\n"), [event("message", "1", "")]);
    }

    #[test]
    fn last_event_id_persists_until_changed() {
        assert_eq!(
            parse(b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"),
            [
                event("message", "a", "1"),
                event("message", "b", "1"),
                event("message", "c", "")
            ]
        );
    }

    #[test]
    fn an_id_with_nul_is_ignored() {
        assert_eq!(
            parse(b"id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n"),
            [event("message", "a", "1"), event("message", "b", "1")]
        );
    }

    #[test]
    fn an_id_without_data_still_sets_the_last_event_id() {
        let mut parser = Parser::new();
        assert_eq!(parser.feed(b"id: 9\n\n"), []);
        assert_eq!(parser.last_event_id(), "9");
        assert_eq!(parser.feed(b"data: x\n\n"), [event("message", "x", "9")]);
    }

    #[test]
    fn last_event_id_changes_only_at_dispatch() {
        let mut parser = Parser::new();
        parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n");
        assert_eq!(parser.last_event_id(), "1");
        parser.feed(b"\n");
        assert_eq!(parser.last_event_id(), "2");
    }

    #[test]
    fn retry_needs_only_ascii_digits() {
        assert_eq!(parse(b"retry: 1000\n"), [Item::Retry(1000)]);
        assert_eq!(parse(b"retry:0\n"), [Item::Retry(0)]);
        for bad in [
            &b"retry: 10s\n"[..],
            b"retry: -1\n",
            b"retry: 1.5\n",
            b"retry:  10\n",
            b"retry: \n",
            b"retry\n",
            b"retry: \xd9\xa1\n", // ARABIC-INDIC DIGIT ONE is not ASCII
            b"retry: 99999999999999999999999\n",
        ] {
            assert_eq!(parse(bad), [], "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn retry_is_reported_in_stream_order_and_at_once() {
        assert_eq!(
            parse(b"data: a\n\nretry: 5\ndata: b\n\n"),
            [
                event("message", "a", ""),
                Item::Retry(5),
                event("message", "b", "")
            ]
        );
        // Not waiting for a blank line, and not part of any event.
        assert_eq!(parse(b"retry: 7\ndata: unfinished\n"), [Item::Retry(7)]);
    }

    #[test]
    fn empty_data_buffer_dispatches_nothing() {
        assert_eq!(parse(b"\n\n\nevent: x\nid: 3\n\n"), []);
    }

    #[test]
    fn unterminated_last_event_is_discarded() {
        assert_eq!(parse(b"data: a\n\ndata: b\n"), [event("message", "a", "")]);
        assert_eq!(parse(b"data: a\n\ndata: b"), [event("message", "a", "")]);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            parse(b"foo: bar\ndata: x\nid2: 3\n\n"),
            [event("message", "x", "")]
        );
    }

    #[test]
    fn one_leading_bom_is_stripped() {
        assert_eq!(
            parse(b"\xEF\xBB\xBFdata: x\n\n"),
            [event("message", "x", "")]
        );
    }

    #[test]
    fn a_second_bom_is_kept_and_breaks_the_field_name() {
        assert_eq!(parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"), []);
    }

    #[test]
    fn a_bom_later_in_the_stream_is_data() {
        assert_eq!(
            parse(b"data: \xEF\xBB\xBFx\n\n"),
            [event("message", "\u{FEFF}x", "")]
        );
        assert_eq!(parse(b"\n\xEF\xBB\xBFdata: x\n\n"), []);
    }

    #[test]
    fn a_bom_split_across_chunks_is_still_stripped() {
        for split in [&[1, 2][..], &[1], &[2], &[1, 1, 1]] {
            let stream = b"\xEF\xBB\xBFdata: x\n\n";
            let mut parser = Parser::new();
            let mut items = Vec::new();
            let mut rest = &stream[..];
            for &n in split {
                let (head, tail) = rest.split_at(n);
                parser.feed_into(head, &mut items);
                rest = tail;
            }
            parser.feed_into(rest, &mut items);
            assert_eq!(items, [event("message", "x", "")], "split {split:?}");
        }
    }

    #[test]
    fn a_partial_bom_is_not_a_bom() {
        // EF BB followed by a line ending: two replacement characters of an
        // unknown field, then a normal event.
        assert_eq!(parse(b"\xEF\xBB\ndata: x\n\n"), [event("message", "x", "")]);
        let mut parser = Parser::new();
        assert_eq!(parser.feed(b"\xEF"), []);
        assert_eq!(parser.feed(b"data: x\n\n"), []); // "\u{FFFD}data" is unknown
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        // Maximal subparts, as the WHATWG UTF-8 decoder does it.
        assert_eq!(
            parse(b"data: \xF0\x80\x80a\xED\xA0\x80\xE2\x82\n\n"),
            [event(
                "message",
                "\u{FFFD}\u{FFFD}\u{FFFD}a\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}",
                ""
            )]
        );
        assert_eq!(
            parse(b"event: \xFF\nid: \xC3\ndata: \xC3\xA9\n\n"),
            [event("\u{FFFD}", "\u{e9}", "\u{FFFD}")]
        );
    }

    #[test]
    fn a_multibyte_character_split_across_chunks_is_intact() {
        let stream = "data: 日本🎉\n\n".as_bytes();
        for cut in 0..stream.len() {
            let mut parser = Parser::new();
            let mut items = parser.feed(&stream[..cut]);
            items.extend(parser.feed(&stream[cut..]));
            assert_eq!(items, [event("message", "日本🎉", "")], "cut at {cut}");
        }
    }

    #[test]
    fn long_lines_across_many_chunks() {
        let long = "x".repeat(100_000);
        let stream = format!("data: {long}\n\n");
        let mut parser = Parser::new();
        let mut items = Vec::new();
        for chunk in stream.as_bytes().chunks(7) {
            parser.feed_into(chunk, &mut items);
        }
        assert_eq!(items, [event("message", &long, "")]);
    }
}
