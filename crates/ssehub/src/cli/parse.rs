//! `ssehub parse`: the codec's parser, usable from outside.
//!
//! Output is one JSON object per line, in stream order:
//! `{"type": T, "data": D, "last_event_id": L}` for each dispatched event and
//! `{"retry": N}` for each accepted `retry` field.

use std::io::{self, Read, Write};

use serde::Serialize;
use sse_codec::{Item, Parser};

#[derive(Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Event {
        #[serde(rename = "type")]
        event_type: &'a str,
        data: &'a str,
        last_event_id: &'a str,
    },
    Retry {
        retry: u64,
    },
}

/// Parses `input` to its end, writing JSON lines to `output`. Output is
/// flushed after every chunk read, so `curl -N ... | ssehub parse` is live.
pub fn run(mut input: impl Read, output: impl Write) -> io::Result<()> {
    let mut output = io::BufWriter::new(output);
    let mut parser = Parser::new();
    let mut items = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        let read = match input.read(&mut chunk) {
            Ok(0) => return output.flush(),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        parser.feed_into(&chunk[..read], &mut items);
        for item in items.drain(..) {
            let line = match &item {
                Item::Event(event) => Line::Event {
                    event_type: &event.event_type,
                    data: &event.data,
                    last_event_id: &event.last_event_id,
                },
                Item::Retry(retry) => Line::Retry { retry: *retry },
            };
            serde_json::to_writer(&mut output, &line)?;
            output.write_all(b"\n")?;
        }
        output.flush()?;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prints_events_and_retries_in_order() {
        let mut out = Vec::new();
        super::run(
            &b"retry: 10\ndata: a\n\nretry: x\nid: 2\ndata: \"q\"\n\n"[..],
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"retry\":10}\n\
             {\"type\":\"message\",\"data\":\"a\",\"last_event_id\":\"\"}\n\
             {\"type\":\"message\",\"data\":\"\\\"q\\\"\",\"last_event_id\":\"2\"}\n"
        );
    }
}
