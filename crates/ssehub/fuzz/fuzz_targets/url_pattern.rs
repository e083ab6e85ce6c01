//! Any URL pattern (as `match_urlpattern=` or a grant's `urlpattern`)
//! against any topics: compiling and matching never panic, a pattern that
//! compiles compiles again from its own text to one matching the same
//! topics, and `*` matches everything. libFuzzer's `-timeout` catches a
//! pattern whose matching is not linear (the test command runs it with 2 s).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::hub::Selector;

fuzz_target!(|input: (String, Vec<String>)| {
    let (text, topics) = input;
    let base = url::Url::parse("https://hub.example.com/.well-known/mercure").unwrap();
    let Ok(selector) = Selector::url_pattern(&text, &base) else {
        return;
    };
    let again = Selector::url_pattern(&selector.to_string(), &base).expect("its own text compiles");
    for topic in &topics {
        assert_eq!(
            selector.matches(topic),
            again.matches(topic),
            "{text:?} on {topic:?}"
        );
    }
    if text == "*" {
        assert!(topics.iter().all(|t| selector.matches(t)));
    }
});
