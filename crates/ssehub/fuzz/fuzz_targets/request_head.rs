//! Any bytes as the first request head of a connection, cut anywhere: the
//! direct path's reader never panics, a cut never turns a complete head
//! into a different one, and a head it routes has its query split off.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssehub::http::fuzzing::{HeadOutcome, request_head};

fuzz_target!(|input: (&[u8], u16)| {
    let (bytes, cut) = input;
    let whole = request_head(bytes);
    if let HeadOutcome::Head { path, .. } = &whole {
        assert!(!path.contains('?'));
    }
    let cut = usize::from(cut) % (bytes.len() + 1);
    if let HeadOutcome::Head { .. } = request_head(&bytes[..cut]) {
        // A head complete in a prefix is the same head in the whole.
        assert_eq!(request_head(&bytes[..cut]), whole);
    }
});
