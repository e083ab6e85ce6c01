//! Any URL pattern (as `match_urlpattern=` or a grant's `urlpattern`)
//! against any topics: compiling and matching never panic, a pattern that
//! compiles compiles again from its own text to one matching the same
//! topics, and `*` matches everything. libFuzzer's `-timeout` catches a
//! pattern whose matching is not linear (the test command runs it with 2 s).
//!
//! The `urlpattern` crate's parser panics on some patterns in a build with
//! overflow checks (as fuzzing builds are); the hub catches those panics
//! and counts the pattern as malformed. So here they must not abort the
//! fuzzer as libFuzzer's panic hook does: any other panic still does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::hub::Selector;

fn let_the_crate_s_panics_be_caught() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_the_crate = info
                .location()
                .is_some_and(|l| l.file().contains("/urlpattern-"));
            if !in_the_crate {
                abort_hook(info);
            }
        }));
    });
}

fuzz_target!(|input: (String, Vec<String>)| {
    let_the_crate_s_panics_be_caught();
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
