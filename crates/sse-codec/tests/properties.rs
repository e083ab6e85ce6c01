//! Properties of the codec over arbitrary input:
//! encode → parse gives the event back, and chunking never changes a parse.

use proptest::prelude::*;
use sse_codec::{Event, Item, ParsedEvent, Parser, normalize_line_breaks};

/// Text biased towards the characters that matter to the format: line
/// breaks, colons, spaces, NUL, a BOM, multi-byte characters.
fn tricky_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\n".to_owned()),
        Just("\r".to_owned()),
        Just("\r\n".to_owned()),
        Just(":".to_owned()),
        Just(" ".to_owned()),
        Just("\0".to_owned()),
        Just("\u{FEFF}".to_owned()),
        Just("data: ".to_owned()),
        Just("日本語🎉".to_owned()),
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

fn without(chars: &'static [char]) -> impl Strategy<Value = String> {
    tricky_text().prop_map(move |s| s.replace(chars, ""))
}

#[derive(Debug, Clone)]
struct Sent {
    id: Option<String>,
    event_type: Option<String>,
    data: String,
    retry: Option<u64>,
    comment: Option<String>,
}

fn sent_event() -> impl Strategy<Value = Sent> {
    (
        prop::option::of(without(&['\r', '\n', '\0'])),
        prop::option::of(without(&['\r', '\n'])),
        tricky_text(),
        prop::option::of(any::<u64>()),
        prop::option::of(tricky_text()),
    )
        .prop_map(|(id, event_type, data, retry, comment)| Sent {
            id,
            event_type,
            data,
            retry,
            comment,
        })
}

fn encode(sent: &Sent) -> bytes::Bytes {
    Event {
        id: sent.id.as_deref(),
        event_type: sent.event_type.as_deref(),
        data: Some(&sent.data),
        retry: sent.retry,
        comment: sent.comment.as_deref(),
    }
    .encode()
    .expect("valid by construction")
}

/// What a browser should see for a sequence of sent events.
fn expected(events: &[Sent]) -> Vec<Item> {
    let mut last_id = String::new();
    let mut items = Vec::new();
    for sent in events {
        if let Some(id) = &sent.id {
            last_id.clone_from(id);
        }
        if let Some(retry) = sent.retry {
            items.push(Item::Retry(retry));
        }
        items.push(Item::Event(ParsedEvent {
            event_type: match sent.event_type.as_deref() {
                None | Some("") => "message".to_owned(),
                Some(t) => t.to_owned(),
            },
            data: normalize_line_breaks(&sent.data),
            last_event_id: last_id.clone(),
        }));
    }
    items
}

fn parse_in_chunks(stream: &[u8], cuts: &[usize]) -> (Vec<Item>, String) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    let mut parser = Parser::new();
    let mut items = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        parser.feed_into(&stream[start..cut], &mut items);
        start = cut;
    }
    (items, parser.last_event_id().to_owned())
}

/// Streams that look like SSE, with damage: random bytes, invalid UTF-8, BOMs,
/// every kind of line ending.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: x".to_vec()),
        Just(b"data".to_vec()),
        Just(b"id: 1".to_vec()),
        Just(b"id: a\0b".to_vec()),
        Just(b"event: t".to_vec()),
        Just(b"retry: 250".to_vec()),
        Just(b": c".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\xE6\x97\xA5".to_vec()),
        Just(b"\xF0\x9F".to_vec()),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_parse_gives_the_events_back(
        events in prop::collection::vec(sent_event(), 1..5),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let stream: Vec<u8> = events.iter().flat_map(|e| encode(e).to_vec()).collect();
        let (items, _) = parse_in_chunks(&stream, &cuts);
        prop_assert_eq!(items, expected(&events));
    }

    #[test]
    fn any_split_parses_like_the_whole(
        stream in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = parse_in_chunks(&stream, &[]);
        prop_assert_eq!(parse_in_chunks(&stream, &cuts), whole);
    }

    #[test]
    fn byte_at_a_time_parses_like_the_whole(stream in stream_bytes()) {
        let mut parser = Parser::new();
        let mut items = Vec::new();
        for byte in &stream {
            parser.feed_into(std::slice::from_ref(byte), &mut items);
        }
        prop_assert_eq!(
            (items, parser.last_event_id().to_owned()),
            parse_in_chunks(&stream, &[])
        );
    }

    #[test]
    fn ids_and_types_with_line_breaks_are_refused(
        prefix in any::<String>(),
        brk in prop_oneof![Just("\n"), Just("\r")],
        suffix in any::<String>(),
    ) {
        let bad = format!("{prefix}{brk}{suffix}");
        prop_assert!(Event::message("x").id(&bad).encode().is_err());
        prop_assert!(Event::message("x").event_type(&bad).encode().is_err());
    }
}

/// Streams of events and long unfinished lines, split anywhere.
fn stream_with_long_lines() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let piece = prop_oneof![
        Just(b"data: short\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"event: t\n".to_vec()),
        Just(b"id: 7\n".to_vec()),
        Just(b"retry: 10\n".to_vec()),
        (1usize..400).prop_map(|n| [b"data: ".to_vec(), vec![b'x'; n], b"\n".to_vec()].concat()),
        (1usize..400).prop_map(|n| vec![b'y'; n]),
    ];
    (
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat()),
        prop::collection::vec(1usize..64, 0..16),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A bounded parser never holds more than its bound between chunks, and
    /// when it dropped nothing it parsed exactly what an unbounded one does.
    #[test]
    fn a_bounded_parser_holds_at_most_its_bound(
        (stream, cuts) in stream_with_long_lines(),
        bound in 16usize..512,
    ) {
        let mut bounded = Parser::with_max_event_size(bound);
        let mut free = Parser::new();
        let (mut got, mut want) = (Vec::new(), Vec::new());
        let mut rest = &stream[..];
        for cut in cuts.iter().copied().chain([usize::MAX]) {
            let (chunk, after) = rest.split_at(cut.min(rest.len()));
            rest = after;
            bounded.feed_into(chunk, &mut got);
            free.feed_into(chunk, &mut want);
            prop_assert!(bounded.held_bytes() <= bound, "{} > {}", bounded.held_bytes(), bound);
        }
        if !bounded.take_overflow() {
            prop_assert_eq!(got, want);
        }
    }
}
