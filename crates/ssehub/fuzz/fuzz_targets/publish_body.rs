//! Any publish body, form or JSON: reading it never panics, and whatever
//! the hub accepts (read, then validated) encodes onto the wire, which the
//! hub relies on when it publishes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::hub::TopicLimits;

fuzz_target!(|input: (bool, &[u8])| {
    let (json, body) = input;
    let Ok(publish) = ssehub::http::fuzzing::publish_body(json, body) else {
        return;
    };
    let limits = TopicLimits {
        max_topics: 32,
        max_topic_length: 1024,
    };
    if publish.validate(limits).is_ok() {
        ssehub::frames::event(
            publish.id.as_deref().unwrap_or("1"),
            publish.event_type.as_deref(),
            &publish.data,
            publish.retry,
        )
        .expect("a validated publish encodes");
    }
});
