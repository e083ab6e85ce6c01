//! Every rejection path of auth, CORS and the abuse limits, with its status
//! code and JSON error; and that tokens grant exactly what they say.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::{RawStream, TestHub, start};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PUBLISHER_SECRET: &str = "publisher-secret-for-tests-only";
const SUBSCRIBER_SECRET: &str = "subscriber-secret-for-tests-only";
const FORM: &str = "application/x-www-form-urlencoded";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

fn hs256(secret: &str, claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()),
        &claims,
    )
}

/// RSA and EC key pairs made with openssl for this test run (private PEM,
/// public PEM).
struct Keys {
    rsa: (String, String),
    ec: (String, String),
    _dir: tempfile::TempDir,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl is installed by scripts/test-all");
            assert!(status.success(), "openssl {args:?}");
        };
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ]);
        run(&["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"]);
        run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ]);
        run(&["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub.pem"]);
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        Keys {
            rsa: (read("rsa.pem"), read("rsa.pub.pem")),
            ec: (read("ec.pem"), read("ec.pub.pem")),
            _dir: dir,
        }
    })
}

fn publish_everything() -> Value {
    json!({"mercure": {"publish": ["*"]}, "exp": now() + 3600})
}

/// A hub that checks tokens (no --dev).
async fn secured(tweak: impl FnOnce(&mut ssehub::config::Config)) -> TestHub {
    start(|c| {
        c.dev = false;
        c.publisher_jwt_key = Some(PUBLISHER_SECRET.into());
        c.subscriber_jwt_key = Some(SUBSCRIBER_SECRET.into());
        tweak(c);
    })
    .await
}

async fn publish_with(
    hub: &TestHub,
    authorization: Option<&str>,
    body: &str,
) -> (u16, Value, Option<String>) {
    let mut request = hub
        .http
        .post(hub.endpoint())
        .header("content-type", FORM)
        .body(body.to_owned());
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json, challenge)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A token with `"alg": "none"` and no signature.
fn unsigned(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_publisher_token_is_refused_with_401_and_nothing_is_published() {
    let hub = secured(|c| {
        c.jwt_audience = Some("https://hub.example".into());
        c.jwt_issuer = Some("https://issuer.example".into());
    })
    .await;
    let good = json!({
        "mercure": {"publish": ["*"]},
        "aud": "https://hub.example",
        "iss": "https://issuer.example",
        "exp": now() + 3600,
    });
    let with = |patch: Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "unauthorized"),
        ("malformed", Some(bearer("not.a.jwt")), "invalid_token"),
        (
            "expired",
            Some(bearer(&hs256(
                PUBLISHER_SECRET,
                with(json!({"exp": now() - 600})),
            ))),
            "invalid_token",
        ),
        (
            "not yet valid",
            Some(bearer(&hs256(
                PUBLISHER_SECRET,
                with(json!({"nbf": now() + 600})),
            ))),
            "invalid_token",
        ),
        (
            "wrong audience",
            Some(bearer(&hs256(
                PUBLISHER_SECRET,
                with(json!({"aud": "https://other.example"})),
            ))),
            "invalid_token",
        ),
        (
            "no audience",
            Some(bearer(&hs256(PUBLISHER_SECRET, {
                let mut claims = good.clone();
                claims.as_object_mut().unwrap().remove("aud");
                claims
            }))),
            "invalid_token",
        ),
        (
            "null audience",
            Some(bearer(&hs256(PUBLISHER_SECRET, with(json!({"aud": null}))))),
            "invalid_token",
        ),
        (
            "wrong issuer",
            Some(bearer(&hs256(
                PUBLISHER_SECRET,
                with(json!({"iss": "https://evil.example"})),
            ))),
            "invalid_token",
        ),
        ("alg none", Some(bearer(&unsigned(&good))), "invalid_token"),
        (
            "wrong key",
            Some(bearer(&hs256(
                "another-secret-of-some-length",
                good.clone(),
            ))),
            "invalid_token",
        ),
        (
            "subscriber key",
            Some(bearer(&hs256(SUBSCRIBER_SECRET, good.clone()))),
            "invalid_token",
        ),
        (
            "rs256 token",
            Some(bearer(&sign(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(keys().rsa.0.as_bytes()).unwrap(),
                &good,
            ))),
            "invalid_token",
        ),
    ];
    for (name, authorization, code) in cases {
        let (status, json, challenge) =
            publish_with(&hub, authorization.as_deref(), "topic=t&data=x").await;
        assert_eq!(
            (status, json["error"].as_str()),
            (401, Some(code)),
            "{name}: {json}"
        );
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        assert!(
            challenge.is_some_and(|c| c.starts_with("Bearer")),
            "{name}: no WWW-Authenticate"
        );
    }
    // A presentation that is no Bearer token at all is a malformed
    // request (RFC 6750's invalid_request), still with the challenge.
    let (status, json, challenge) =
        publish_with(&hub, Some("Basic dXNlcjpwYXNz"), "topic=t&data=x").await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(challenge.is_some_and(|c| c.starts_with("Bearer error=\"invalid_request\"")));
    assert_eq!(hub.server.hub.stats().published, 0);
    let (status, id, _) = publish_with(
        &hub,
        Some(&bearer(&hs256(PUBLISHER_SECRET, good))),
        "topic=t&data=x",
    )
    .await;
    assert_eq!(status, 200, "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_may_publish_only_to_the_topics_it_covers() {
    let hub = secured(|_| {}).await;
    let classic = hs256(
        PUBLISHER_SECRET,
        json!({"mercure": {"publish": ["books/{id}"]}}),
    );
    let detailed = hs256(
        PUBLISHER_SECRET,
        json!({"authorization_details": [{
            "type": "mercure",
            "actions": ["publish"],
            "topics": [{"match": "https://example.com/books/:id", "matchType": "URLPattern"}, {"match": "news"}]
        }]}),
    );
    for (token, allowed, refused) in [
        (&classic, "topic=books/1", "topic=books/1/reviews"),
        (&classic, "topic=books/2", "topic=books/2&topic=authors/1"),
        (
            &detailed,
            "topic=https://example.com/books/9",
            "topic=https://example.com/authors/9",
        ),
        (&detailed, "topic=news", "topic=news/today"),
    ] {
        let (status, _, _) = publish_with(&hub, Some(&bearer(token)), allowed).await;
        assert_eq!(status, 200, "{allowed}");
        let before = hub.server.hub.stats().published;
        let (status, json, challenge) = publish_with(&hub, Some(&bearer(token)), refused).await;
        assert_eq!(
            (status, json["error"].as_str()),
            (403, Some("insufficient_scope")),
            "{refused}: {json}"
        );
        assert!(challenge.unwrap().contains("insufficient_scope"));
        assert_eq!(hub.server.hub.stats().published, before);
    }
    // A subscribe-only token publishes nothing.
    let reader = hs256(PUBLISHER_SECRET, json!({"mercure": {"subscribe": ["*"]}}));
    let (status, json, _) = publish_with(&hub, Some(&bearer(&reader)), "topic=news").await;
    assert_eq!(
        (status, json["error"].as_str()),
        (403, Some("insufficient_scope"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_keys_work_and_algorithm_confusion_is_refused() {
    let keys = keys();
    let rsa_private = EncodingKey::from_rsa_pem(keys.rsa.0.as_bytes()).unwrap();
    let ec_private = EncodingKey::from_ec_pem(keys.ec.0.as_bytes()).unwrap();

    // RS256 with a public key file.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("publisher.pub.pem");
    std::fs::write(&key_file, &keys.rsa.1).unwrap();
    let hub = start(|c| {
        c.dev = false;
        c.jwt_alg = "RS256".into();
        c.publisher_jwt_key = Some(key_file.display().to_string());
    })
    .await;
    let claims = publish_everything();
    let ok = sign(Algorithm::RS256, &rsa_private, &claims);
    assert_eq!(
        publish_with(&hub, Some(&bearer(&ok)), "topic=t").await.0,
        200
    );
    // HS256 "signed" with the RSA public key as the HMAC secret.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(keys.rsa.1.as_bytes()),
        &claims,
    );
    let (status, json, _) = publish_with(&hub, Some(&bearer(&confused)), "topic=t").await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("invalid_token")),
        "{json}"
    );
    let other_alg = sign(Algorithm::ES256, &ec_private, &claims);
    assert_eq!(
        publish_with(&hub, Some(&bearer(&other_alg)), "topic=t")
            .await
            .0,
        401
    );
    assert_eq!(
        publish_with(&hub, Some(&bearer(&unsigned(&claims))), "topic=t")
            .await
            .0,
        401
    );

    // ES256 with an inline PEM key.
    let hub = start(|c| {
        c.dev = false;
        c.jwt_alg = "ES256".into();
        c.publisher_jwt_key = Some(keys.ec.1.clone());
    })
    .await;
    let ok = sign(Algorithm::ES256, &ec_private, &claims);
    assert_eq!(
        publish_with(&hub, Some(&bearer(&ok)), "topic=t").await.0,
        200
    );
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(keys.ec.1.as_bytes()),
        &claims,
    );
    assert_eq!(
        publish_with(&hub, Some(&bearer(&confused)), "topic=t")
            .await
            .0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_load_stops_startup_with_a_clear_error() {
    let config = ssehub::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: ssehub::config::StoreKind::Memory,
        jwt_alg: "RS256".into(),
        publisher_jwt_key: Some("/nonexistent/key.pem".into()),
        ..Default::default()
    };
    let err = ssehub::http::Server::start(config)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("--publisher-jwt-key") && err.contains("/nonexistent/key.pem"),
        "{err}"
    );
}

async fn subscribe_status(hub: &TestHub, query: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = hub.http.get(format!("{}?{query}", hub.endpoint()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        return (status, Value::Null);
    }
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_updates_reach_only_subscribers_whose_token_covers_them() {
    let hub = secured(|_| {}).await;
    let publisher = bearer(&hs256(PUBLISHER_SECRET, publish_everything()));
    let reader_of_1 = hs256(
        SUBSCRIBER_SECRET,
        json!({"mercure": {"subscribe": ["orders/1"]}}),
    );
    let reader_of_all = hs256(
        SUBSCRIBER_SECRET,
        json!({"authorization_details": [{"type": "mercure", "actions": ["subscribe"], "topics": [{"match": "orders/:id", "matchType": "URLPattern"}]}]}),
    );
    let url = format!("{}?topic=orders/{{id}}", hub.endpoint());
    let cookie = format!("mercureAuthorization={reader_of_1}");
    let authorization = bearer(&reader_of_all);
    let mut streams = [
        RawStream::open(&url, &[]).await,
        RawStream::open(&url, &[("cookie", &cookie)]).await,
        RawStream::open(&url, &[("authorization", &authorization)]).await,
    ];
    hub.wait_for_hub("3 streams", |s| s.connections == 3).await;
    for body in [
        "topic=orders/1&data=public-1",
        "topic=orders/1&data=secret-1&private=on",
        "topic=orders/2&data=secret-2&private=on",
        // Public, and last: once a stream has it, it has all it will get.
        "topic=orders/3&data=the-end",
    ] {
        assert_eq!(publish_with(&hub, Some(&publisher), body).await.0, 200);
    }
    let saw = |body: &str, data: &str| body.contains(&format!("data: {data}\n"));
    let mut bodies = Vec::new();
    for stream in &mut streams {
        let body = stream
            .read_until("the last event", |b| saw(b, "the-end"))
            .await;
        bodies.push(body.to_owned());
    }
    // Anonymous: public only.
    assert!(
        saw(&bodies[0], "public-1") && !saw(&bodies[0], "secret-1") && !saw(&bodies[0], "secret-2"),
        "{}",
        bodies[0]
    );
    // Cookie token for orders/1.
    assert!(
        saw(&bodies[1], "public-1") && saw(&bodies[1], "secret-1") && !saw(&bodies[1], "secret-2"),
        "{}",
        bodies[1]
    );
    // Header token for orders/:id.
    assert!(
        saw(&bodies[2], "secret-1") && saw(&bodies[2], "secret-2"),
        "{}",
        bodies[2]
    );

    // Replay applies the same rule.
    let mut replay = RawStream::open(
        &format!(
            "{}?topic=orders/{{id}}&lastEventID=earliest",
            hub.endpoint()
        ),
        &[("cookie", &cookie)],
    )
    .await;
    let replay = replay
        .read_until("the replay's last event", |b| saw(b, "the-end"))
        .await;
    assert!(
        saw(replay, "public-1") && saw(replay, "secret-1") && !saw(replay, "secret-2"),
        "{replay}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_token_rules() {
    let hub = secured(|c| c.anonymous_subscribers = false).await;
    let token = hs256(
        SUBSCRIBER_SECRET,
        json!({"sub": "alice", "mercure": {"subscribe": ["a"]}}),
    );
    // No token, when anonymous subscribers are off.
    let (status, json) = subscribe_status(&hub, "match=a", &[]).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("unauthorized"))
    );
    // Bad tokens, by header and by cookie.
    let expired = hs256(SUBSCRIBER_SECRET, json!({"exp": now() - 600}));
    let (status, json) =
        subscribe_status(&hub, "match=a", &[("authorization", &bearer(&expired))]).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("invalid_token"))
    );
    let forged = hs256(PUBLISHER_SECRET, json!({"mercure": {"subscribe": ["*"]}}));
    let (status, _) = subscribe_status(
        &hub,
        "match=a",
        &[("cookie", &format!("mercureAuthorization={forged}"))],
    )
    .await;
    assert_eq!(status, 401);
    // The query-string token is off unless enabled.
    let (status, json) =
        subscribe_status(&hub, &format!("match=a&authorization={token}"), &[]).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(
        subscribe_status(&hub, "match=a", &[("authorization", &bearer(&token))])
            .await
            .0,
        200
    );
    let with_query = secured(|c| {
        c.anonymous_subscribers = false;
        c.allow_query_token = true;
    })
    .await;
    assert_eq!(
        subscribe_status(&with_query, &format!("match=a&access_token={token}"), &[])
            .await
            .0,
        200
    );

    // A client channel belongs to the token's subject (or to a token that
    // may subscribe to it explicitly, like an all-topics reader).
    let (status, json) = subscribe_status(
        &hub,
        "match=a&client_id=bob",
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (403, Some("client_id_not_allowed"))
    );
    assert_eq!(
        subscribe_status(
            &hub,
            "match=a&client_id=alice",
            &[("authorization", &bearer(&token))]
        )
        .await
        .0,
        200
    );
    let reader = hs256(
        SUBSCRIBER_SECRET,
        json!({"mercure": {"subscribe": ["urn:ssehub:client:bob"]}}),
    );
    assert_eq!(
        subscribe_status(
            &hub,
            "match=a&client_id=bob",
            &[("authorization", &bearer(&reader))]
        )
        .await
        .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ends_when_its_token_expires() {
    let hub = secured(|_| {}).await;
    // Four seconds past `exp`, within the 5 s leeway: accepted, and the
    // stream lasts as long as the token is accepted (it is not cut at once,
    // to be reopened with the same token), then ends.
    let token = hs256(SUBSCRIBER_SECRET, json!({"exp": now() - 4}));
    let started = Instant::now();
    let body = RawStream::open(
        &format!("{}?match=x", hub.endpoint()),
        &[("authorization", &bearer(&token))],
    )
    .await
    .read_to_end()
    .await;
    assert!(
        body.ends_with(": the token has expired; reconnect with a fresh one\n"),
        "{body:?}"
    );
    let lived = started.elapsed();
    assert!(
        lived > Duration::from_millis(500) && lived < Duration::from_secs(4),
        "{lived:?}"
    );
    // Its reconnect, with the same token, is refused.
    let (status, _) =
        subscribe_status(&hub, "match=x", &[("authorization", &bearer(&token))]).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_its_own_token() {
    let hub = secured(|c| c.admin_token = Some("admin-token-for-tests".into())).await;
    let get = |auth: Option<&str>| {
        let mut request = hub.http.get(format!("{}/v1/stats", hub.url));
        if let Some(auth) = auth {
            request = request.header("authorization", auth.to_owned());
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(get(None).await.1["error"], "unauthorized");
    let (status, json) = get(Some("Bearer wrong-token-of-some-length")).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("invalid_token"))
    );
    // A publisher token is not an admin credential.
    let publisher = bearer(&hs256(PUBLISHER_SECRET, publish_everything()));
    assert_eq!(get(Some(&publisher)).await.0, 401);
    let (status, json) = get(Some("Bearer admin-token-for-tests")).await;
    assert_eq!(status, 200);
    assert!(json["connections"].is_u64());
    // The scheme is case-insensitive (RFC 9110), as it is for JWTs.
    assert_eq!(get(Some("bearer admin-token-for-tests")).await.0, 200);
    assert_eq!(get(Some("BEARER  admin-token-for-tests ")).await.0, 200);
}

/// A validly signed token whose `exp` is too far ahead to represent is a
/// token without expiry, not a crash of the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_too_far_ahead_is_no_expiry() {
    let hub = secured(|_| {}).await;
    for exp in [u64::MAX, u64::MAX / 2, i64::MAX as u64] {
        let token = bearer(&hs256(
            PUBLISHER_SECRET,
            json!({"mercure": {"publish": ["*"]}, "exp": exp}),
        ));
        let (status, body, _) = publish_with(&hub, Some(&token), "topic=t&data=x").await;
        assert_eq!(status, 200, "exp {exp}: {body}");
        let subscriber = bearer(&hs256(SUBSCRIBER_SECRET, json!({"exp": exp})));
        let (status, _) =
            subscribe_status(&hub, "match=t", &[("authorization", &subscriber)]).await;
        assert_eq!(status, 200, "exp {exp}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_listed_origins_only_and_never_a_wildcard_with_credentials() {
    let hub = secured(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let preflight = |origin: &str| {
        hub.http
            .request(reqwest::Method::OPTIONS, hub.endpoint())
            .header("origin", origin.to_owned())
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    assert!(
        ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );

    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let json: Value = refused.json().await.unwrap();
    assert_eq!(json["error"], "cors_origin_not_allowed");

    // A simple request from an unlisted origin is not given CORS headers.
    let response = hub
        .http
        .get(format!("{}/healthz", hub.url))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let response = hub
        .http
        .get(format!("{}/healthz", hub.url))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );

    // `*` means any origin, and then never with credentials.
    let open = secured(|c| c.cors_origins = vec!["*".into()]).await;
    let response = open
        .http
        .request(reqwest::Method::OPTIONS, open.endpoint())
        .header("origin", "https://anyone.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-credentials")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_limit_answers_429_with_a_json_error() {
    let alice = hs256(SUBSCRIBER_SECRET, json!({"sub": "alice"}));
    for (tweak, headers, code) in [
        (
            (|c: &mut ssehub::config::Config| c.max_connections = 2)
                as fn(&mut ssehub::config::Config),
            None,
            "too_many_connections",
        ),
        (
            |c| c.max_connections_per_address = 2,
            None,
            "too_many_connections_from_address",
        ),
        (
            |c| c.max_connections_per_subject = 2,
            Some(&alice),
            "too_many_connections_for_subject",
        ),
    ] {
        let hub = secured(tweak).await;
        let open = |hub: &TestHub| {
            let mut request = hub.http.get(format!("{}?match=t", hub.endpoint()));
            if let Some(token) = headers {
                request = request.header("authorization", bearer(token));
            }
            request.send()
        };
        let first = open(&hub).await.unwrap();
        let second = open(&hub).await.unwrap();
        assert_eq!(
            (first.status().as_u16(), second.status().as_u16()),
            (200, 200)
        );
        let third = open(&hub).await.unwrap();
        assert_eq!(third.status(), 429, "{code}");
        let json: Value = third.json().await.unwrap();
        assert_eq!(json["error"], code);
        // Closing one frees its place.
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let again = open(&hub).await.unwrap();
            if again.status() == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{code}: the place was not released"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_rate_limit_answers_429_with_retry_after() {
    let hub = secured(|c| c.publish_rate = 3).await;
    let token = bearer(&hs256(
        PUBLISHER_SECRET,
        json!({"sub": "backend-1", "mercure": {"publish": ["*"]}}),
    ));
    for _ in 0..3 {
        assert_eq!(publish_with(&hub, Some(&token), "topic=t").await.0, 200);
    }
    let response = hub
        .http
        .post(hub.endpoint())
        .header("content-type", FORM)
        .header("authorization", &token)
        .body("topic=t")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["error"], "rate_limited");
    // Another publisher has its own budget.
    let other = bearer(&hs256(
        PUBLISHER_SECRET,
        json!({"sub": "backend-2", "mercure": {"publish": ["*"]}}),
    ));
    assert_eq!(publish_with(&hub, Some(&other), "topic=t").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_headers_too_slowly_is_disconnected() {
    let hub = secured(|c| c.header_read_timeout = Duration::from_millis(500)).await;
    let mut stream = tokio::net::TcpStream::connect(hub.server.addr)
        .await
        .unwrap();
    stream
        .write_all(b"GET /.well-known/mercure?match=t HTTP/1.1\r\nHost: hub\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408 answer, then the close
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}
