//! Any bytes, split anywhere: the parser never panics, and the split never
//! changes what it finds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_codec::Parser;

fuzz_target!(|input: (Vec<u8>, Vec<u16>)| {
    let (stream, cuts) = input;
    let mut whole = Parser::new();
    let expected = whole.feed(&stream);

    let mut cuts: Vec<usize> = cuts
        .into_iter()
        .map(|c| usize::from(c) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunked = Parser::new();
    let mut items = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        chunked.feed_into(&stream[start..cut], &mut items);
        start = cut;
    }
    assert_eq!(items, expected);
    assert_eq!(chunked.last_event_id(), whole.last_event_id());
});
