//! Any event: the encoder never panics; what it accepts parses back exactly
//! (line breaks in data normalised to LF); what it refuses has a line break
//! or NUL where one cannot go.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_codec::{Event, Item, Parser, normalize_line_breaks};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    id: Option<String>,
    event_type: Option<String>,
    data: Option<String>,
    retry: Option<u64>,
    comment: Option<String>,
}

fuzz_target!(|input: Input| {
    let event = Event {
        id: input.id.as_deref(),
        event_type: input.event_type.as_deref(),
        data: input.data.as_deref(),
        retry: input.retry,
        comment: input.comment.as_deref(),
    };
    let bytes = match event.encode() {
        Ok(bytes) => bytes,
        Err(_) => {
            let bad_id = event.id.is_some_and(|id| id.contains(['\r', '\n', '\0']));
            let bad_type = event.event_type.is_some_and(|t| t.contains(['\r', '\n']));
            assert!(bad_id || bad_type, "refused a valid event: {event:?}");
            return;
        }
    };
    let mut parser = Parser::new();
    let mut items = parser.feed(&bytes).into_iter();
    if let Some(retry) = input.retry {
        assert_eq!(items.next(), Some(Item::Retry(retry)));
    }
    match event.data {
        Some(data) => {
            let Some(Item::Event(parsed)) = items.next() else {
                panic!("no event for {event:?}");
            };
            assert_eq!(parsed.data, normalize_line_breaks(data));
            let expected_type = match event.event_type {
                None | Some("") => "message",
                Some(t) => t,
            };
            assert_eq!(parsed.event_type, expected_type);
            assert_eq!(parsed.last_event_id, event.id.unwrap_or_default());
        }
        None => assert_eq!(parser.last_event_id(), event.id.unwrap_or_default()),
    }
    assert_eq!(items.next(), None);
});
