//! Any token string, and any claims signed with the hub's key: verifying
//! never panics (forged tokens are refused; a validly signed token with
//! any claims is read into grants or refused with a reason).
#![no_main]

use jsonwebtoken::{EncodingKey, Header, encode};
use libfuzzer_sys::fuzz_target;
use ssehub::http::auth::{AuthSettings, Verifier};
use std::sync::OnceLock;

const SECRET: &str = "a-fuzzing-secret-of-32-bytes-ok!";

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let settings = AuthSettings {
            algorithm: "HS256".into(),
            audience: Some("hub".into()),
            ..AuthSettings::default()
        };
        Verifier::new(SECRET, &settings).expect("an HMAC verifier")
    })
}

fuzz_target!(|input: (&str, &[u8])| {
    let (token, claims) = input;
    let _ = verifier().verify(token);
    let Ok(mut claims) = serde_json::from_slice::<serde_json::Value>(claims) else {
        return;
    };
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    if let Ok(signed) = encode(&Header::default(), &claims, &key) {
        let _ = verifier().verify(&signed);
    }
    // With the audience the hub requires, the claims reach the grants.
    if let Some(object) = claims.as_object_mut() {
        object.insert("aud".into(), "hub".into());
        let signed = encode(&Header::default(), &claims, &key).expect("an object encodes");
        if let Ok(grants) = verifier().verify(&signed) {
            let _ = grants.may_publish(&["a/topic".to_owned()]);
        }
    }
});
