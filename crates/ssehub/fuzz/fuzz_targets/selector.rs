//! Any selector against any topics: parsing never panics; a selector that
//! parses prints to text that parses to one matching the same topics; an
//! exact selector matches its own text. libFuzzer's `-timeout` catches a
//! match that is not linear (the test command runs it with 2 s).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::hub::Selector;

fuzz_target!(|input: (String, Vec<String>)| {
    let (text, topics) = input;
    let Ok(selector) = Selector::parse(&text) else {
        return;
    };
    let again = Selector::parse(&selector.to_string()).expect("its own text parses");
    for topic in &topics {
        assert_eq!(
            selector.matches(topic),
            again.matches(topic),
            "{text:?} on {topic:?}"
        );
    }
    if let Some(exact) = selector.exact() {
        assert!(selector.matches(exact));
    }
});
