//! Any query string or form body: decoding never panics; and any fields,
//! percent-encoded, decode back to exactly themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

fuzz_target!(|input: (&[u8], Vec<(String, String)>)| {
    let (raw, fields) = input;
    let _ = ssehub::http::fuzzing::query(raw);
    let encoded: Vec<String> = fields
        .iter()
        .map(|(name, value)| {
            let name = utf8_percent_encode(name, NON_ALPHANUMERIC);
            let value = utf8_percent_encode(value, NON_ALPHANUMERIC);
            format!("{name}={value}")
        })
        .collect();
    let decoded = ssehub::http::fuzzing::query(encoded.join("&").as_bytes())
        .expect("percent-encoded UTF-8 decodes");
    assert_eq!(decoded, fields);
});
