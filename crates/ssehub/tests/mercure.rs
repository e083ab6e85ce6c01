//! The Mercure protocol as the current draft (draft-dunglas-mercure-08,
//! dunglas/mercure `spec/mercure.md`) writes it, section by section,
//! against the real server; where the 0.x dialect still in wide use reads
//! differently, both. docs/API.md's conformance table points here.

mod common;

use common::{RawStream, start};

const HUB_URL: &str = "https://hub.example.com/.well-known/mercure";

async fn hub() -> common::TestHub {
    start(|c| c.public_url = Some(url::Url::parse(HUB_URL).unwrap())).await
}

async fn status_of(hub: &common::TestHub, query: &str) -> (u16, serde_json::Value) {
    let response = hub
        .http
        .get(format!("{}?{query}", hub.endpoint()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        return (status, serde_json::Value::Null);
    }
    (status, response.json().await.unwrap())
}

/// § Subscription, § Matcher Types: the draft's own example — an exact
/// topic, a relative one, and a URL pattern — on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_the_draft_example_selects_by_exact_topic_and_url_pattern() {
    let hub = hub().await;
    let query = "match=https%3A%2F%2Fexample.com%2Ffoo&match=bar\
                 &match_urlpattern=https%3A%2F%2Fexample.com%2Fbar%2F%3Aid";
    let mut stream = RawStream::open(&format!("{}?{query}", hub.endpoint()), &[]).await;
    stream
        .read_until("the stream's start", |b| b.contains('\n'))
        .await;
    for (topic, data) in [
        ("https://example.com/foo/1", "not exact"),
        ("https://example.com/bar/1/reviews", "not the pattern"),
        ("https://example.com/baz", "neither"),
        ("https://example.com/foo", "exact"),
        ("bar", "relative exact"),
        ("https://example.com/bar/1", "pattern"),
    ] {
        hub.publish(topic, data).await;
    }
    let body = stream
        .read_until("the last matching event", |b| b.contains("data: pattern\n"))
        .await;
    assert_eq!(
        data_of(body),
        ["exact", "relative exact", "pattern"],
        "{body}"
    );
}

/// § Matcher Types: `match_exact` is the explicit spelling of exact; `*`
/// is every topic whatever the matcher type; relative URL patterns and
/// topics resolve against the hub's URL (`--public-url`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matcher_types_exact_wildcard_and_relative_patterns() {
    let hub = hub().await;
    let query = "match_exact=%7Bnot%7D-a-template&match_urlpattern=%2Fbooks%2F%3Aid";
    let mut stream = RawStream::open(&format!("{}?{query}", hub.endpoint()), &[]).await;
    let mut all = RawStream::open(&format!("{}?match_urlpattern=*", hub.endpoint()), &[]).await;
    for (topic, data) in [
        ("{not}-a-template", "exact, braces and all"),
        ("/books/7", "relative topic"),
        ("https://hub.example.com/books/8", "absolute on the hub"),
        ("https://example.com/books/9", "another host"),
        ("/books/10", "last"),
    ] {
        hub.publish(topic, data).await;
    }
    let body = stream
        .read_until("the last event", |b| b.contains("data: last\n"))
        .await
        .to_owned();
    assert_eq!(
        data_of(&body),
        [
            "exact, braces and all",
            "relative topic",
            "absolute on the hub",
            "last"
        ],
        "{body}"
    );
    let everything = all
        .read_until("every event", |b| b.contains("data: last\n"))
        .await;
    assert_eq!(everything.matches("data: ").count(), 5, "{everything}");
}

/// § Subscription: the whole `match` prefix is reserved (ASCII case-blind):
/// an unknown matcher type is a 400, not silently ignored; so are a value
/// with a control or format character, and a malformed URL pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_refuses_unknown_matcher_types_and_invalid_values() {
    let hub = hub().await;
    for (query, code) in [
        ("matchURLPattern=%2Fa", "unknown_matcher_type"),
        ("match_regex=a", "unknown_matcher_type"),
        ("MATCH_exact=a", "unknown_matcher_type"),
        ("matches=a", "unknown_matcher_type"),
        ("match=a&match_uri_template=b", "unknown_matcher_type"),
        // U+200B ZERO WIDTH SPACE and U+202E RIGHT-TO-LEFT OVERRIDE (Cf).
        ("match=a%E2%80%8Bb", "invalid_selector"),
        ("match_urlpattern=%2Fa%E2%80%AE", "invalid_selector"),
        ("match_exact=a%01b", "invalid_selector"),
        ("match=a%C2%85b", "invalid_selector"),
        (
            "match_urlpattern=https%3A%2F%2Fexample.com%2F%3Aid(",
            "invalid_selector",
        ),
    ] {
        let (status, json) = status_of(&hub, query).await;
        assert_eq!(
            (status, json["error"].as_str()),
            (400, Some(code)),
            "{query}: {json}"
        );
    }
    // A bound on URL patterns, which cost the most (docs/BENCHMARKS.md).
    let nine = ["match_urlpattern=%2Fa%2F%3Aid"; 9].join("&");
    let (status, json) = status_of(&hub, &nine).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("too_many_topics")),
        "{json}"
    );
    let (status, _) = status_of(&hub, &["match_urlpattern=%2Fa%2F%3Aid"; 8].join("&")).await;
    assert_eq!(status, 200);
    // Parameters outside the namespace are still ignored.
    let (status, _) = status_of(&hub, "match=a&cache_buster=1&xmatch=2").await;
    assert_eq!(status, 200);
}

const PUBLISHER_KEY: &str = "publisher-key-for-the-mercure-tests";
const SUBSCRIBER_KEY: &str = "subscriber-key-for-the-mercure-tests";
const DETAIL: &str = "https://mercure.rocks/authorization-detail";

/// Signs `claims` with `key` under a header of `typ` (none: no `typ`).
fn sign(key: &str, typ: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = typ.map(str::to_owned);
    let key = jsonwebtoken::EncodingKey::from_secret(key.as_bytes());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A draft-08 access token as the Mercure hub's own `mercure-token`
/// command builds one: `typ: at+jwt`, and every claim RFC 9068 asks issuers
/// for (`iss`, `aud` naming the hub, `sub`, `client_id`, `iat`, `exp`,
/// `jti`), with these authorization details.
fn token(key: &str, claims: serde_json::Value) -> String {
    let now = in_an_hour() - 3600;
    let mut full = serde_json::json!({
        "iss": "https://example.com",
        "aud": HUB_URL,
        "sub": "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6",
        "client_id": "https://example.com",
        "iat": now,
        "exp": now + 3600,
        "jti": "urn:uuid:e70ff8d7-59d5-4a92-b0b7-505e8f6d09fa",
    });
    for (name, value) in claims.as_object().unwrap() {
        full[name] = value.clone();
    }
    sign(key, Some("at+jwt"), &full)
}

/// A 0.x token as Symfony's Mercure component builds one
/// (`LcobucciFactory`): `typ: JWT`, the `mercure` claim, and an `exp` an
/// hour ahead written with microseconds, a fraction of a second.
fn symfony_token(key: &str, mercure: serde_json::Value) -> String {
    let exp = in_an_hour() as f64 + 0.123456;
    sign(
        key,
        Some("JWT"),
        &serde_json::json!({"exp": exp, "mercure": mercure}),
    )
}

/// A 0.x token as the Mercure documentation's JavaScript examples sign
/// one: no `typ`, no `exp`, only the `mercure` claim.
fn js_example_token(key: &str, mercure: serde_json::Value) -> String {
    sign(key, None, &serde_json::json!({"mercure": mercure}))
}

fn in_an_hour() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

/// § Authorization Details: a draft-08 token — its detail type URI,
/// `match_type` (`exact`, `urlpattern`), an action the hub does not know
/// (ignored, not fatal) — grants publishing and private reading; a
/// private update reaches only the subscriber whose URL pattern covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_draft_08_details_grant_publish_and_private_subscribe() {
    let hub = start(|c| {
        c.dev = false;
        c.public_url = Some(url::Url::parse(HUB_URL).unwrap());
        c.publisher_jwt_key = Some(PUBLISHER_KEY.into());
        c.subscriber_jwt_key = Some(SUBSCRIBER_KEY.into());
    })
    .await;
    let publisher = token(
        PUBLISHER_KEY,
        serde_json::json!({
            "exp": in_an_hour(),
            "authorization_details": [{
                "type": DETAIL,
                "actions": ["publish", "moderate"],
                "topics": [{"match": "https://example.com/books/:id", "match_type": "urlpattern"}],
            }],
        }),
    );
    let reader = |pattern: &str| {
        token(
            SUBSCRIBER_KEY,
            serde_json::json!({
                "exp": in_an_hour(),
                "authorization_details": [{
                    "type": DETAIL,
                    "actions": ["subscribe"],
                    "topics": [{"match": pattern, "match_type": "urlpattern"}],
                }],
            }),
        )
    };
    let query = "match_urlpattern=https%3A%2F%2Fexample.com%2Fbooks%2F*";
    let url = format!("{}?{query}", hub.endpoint());
    let (books, ones) = (
        reader("https://example.com/books/*"),
        reader("https://example.com/books/1"),
    );
    let mut all_books =
        RawStream::open(&url, &[("authorization", &format!("Bearer {books}"))]).await;
    let mut book_1 = RawStream::open(&url, &[("authorization", &format!("Bearer {ones}"))]).await;
    let mut anonymous = RawStream::open(&url, &[]).await;
    let publish = |topic: &str, data: &str, private: bool| {
        let mut form = vec![("topic", topic.to_owned()), ("data", data.to_owned())];
        if private {
            form.push(("private", "on".into()));
        }
        hub.http
            .post(hub.endpoint())
            .bearer_auth(&publisher)
            .form(&form)
            .send()
    };
    // Outside the publisher's grant: refused, nothing stored.
    let refused = publish("https://example.com/authors/1", "no", false)
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    for (topic, data, private) in [
        ("https://example.com/books/2", "private 2", true),
        ("https://example.com/books/1", "private 1", true),
        ("https://example.com/books/3", "public 3", false),
    ] {
        let answer = publish(topic, data, private).await.unwrap();
        assert_eq!(answer.status(), 200, "{topic}");
    }
    assert_eq!(
        received(&mut all_books).await,
        ["private 2", "private 1", "public 3"]
    );
    assert_eq!(received(&mut book_1).await, ["private 1", "public 3"]);
    assert_eq!(received(&mut anonymous).await, ["public 3"]);
}

/// Publishes a raw form `body` with `publisher`'s token; it must be taken.
async fn publish_form(hub: &common::TestHub, publisher: &str, body: &str) {
    let answer = hub
        .http
        .post(hub.endpoint())
        .bearer_auth(publisher)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{body}");
}

/// The data of every event on `stream` up to the one with `public 3`.
async fn received(stream: &mut RawStream) -> Vec<String> {
    let body = stream
        .read_until("the public event", |b| b.contains("data: public 3\n"))
        .await;
    data_of(body).into_iter().map(str::to_owned).collect()
}

/// The `data:` of every event in a stream's text.
fn data_of(body: &str) -> Vec<&str> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

/// § Publication: the presence of `private` marks an update private,
/// whatever its value — an empty one, or even `off` — so no value a
/// publisher sends can leak it to subscribers who may not read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_private_by_presence_whatever_its_value() {
    let hub = start(|c| {
        c.dev = false;
        c.publisher_jwt_key = Some(PUBLISHER_KEY.into());
        c.subscriber_jwt_key = Some(SUBSCRIBER_KEY.into());
    })
    .await;
    let publisher = symfony_token(PUBLISHER_KEY, serde_json::json!({"publish": ["*"]}));
    let reader = symfony_token(SUBSCRIBER_KEY, serde_json::json!({"subscribe": ["*"]}));
    let url = format!("{}?topic=p", hub.endpoint());
    let mut anonymous = RawStream::open(&url, &[]).await;
    let mut authorized =
        RawStream::open(&url, &[("authorization", &format!("Bearer {reader}"))]).await;
    for body in [
        "topic=p&data=empty&private=",
        "topic=p&data=bare&private",
        "topic=p&data=off&private=off",
        "topic=p&data=false&private=false",
        "topic=p&data=public%203",
    ] {
        publish_form(&hub, &publisher, body).await;
    }
    assert_eq!(received(&mut anonymous).await, ["public 3"]);
    assert_eq!(
        received(&mut authorized).await,
        ["empty", "bare", "off", "false", "public 3"]
    );
}

/// § Subscription: a bare `match` is the exact topic (braces are text), as
/// the draft has it; `topic=` is 0.x's selector, a URI template; and
/// `--bare-match template` gives `match` 0.x's meaning back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_bare_match_is_exact_and_topic_a_template_in_either_dialect() {
    for (setting, template_by_match) in [
        (ssehub::config::BareMatch::Exact, false),
        (ssehub::config::BareMatch::Template, true),
    ] {
        let hub = start(|c| c.bare_match = setting).await;
        let endpoint = hub.endpoint();
        let mut by_match =
            RawStream::open(&format!("{endpoint}?match=books%2F%7Bid%7D"), &[]).await;
        let mut by_topic =
            RawStream::open(&format!("{endpoint}?topic=books%2F%7Bid%7D"), &[]).await;
        hub.publish("books/1", "a book").await;
        hub.publish("books/{id}", "braces").await;
        hub.publish("end", "end").await;
        let mut end =
            RawStream::open(&format!("{endpoint}?match=end&last_event_id=earliest"), &[]).await;
        end.read_until("the last event", |b| b.contains("data: end\n"))
            .await;
        let wanted = |b: &str| b.contains("data: braces\n");
        let matched = data_of(by_match.read_until("braces", wanted).await).join(",");
        let templated = data_of(by_topic.read_until("braces", wanted).await).join(",");
        let expected = if template_by_match {
            "a book,braces"
        } else {
            "braces"
        };
        assert_eq!(matched, expected, "match= with {setting:?}");
        assert_eq!(templated, "a book,braces", "topic= with {setting:?}");
    }
}

/// § Reconciliation: `Mercure-Last-Event-ID` answers every request that
/// carried a last event id (header or query): the id itself when the
/// stream goes on after it, `earliest` when it cannot (unknown, or
/// `earliest` asked for); no such field without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_mercure_last_event_id_says_where_the_stream_goes_on() {
    let hub = hub().await;
    let first = hub.publish("r", "one").await;
    // A hub id is a fragment (`#1`): in a URL it is percent-encoded.
    let encoded = first.replace('#', "%23");
    hub.publish("r", "two").await;
    let endpoint = hub.endpoint();
    let field = |stream: &RawStream| {
        stream
            .response
            .headers()
            .get("mercure-last-event-id")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, Option<&'a str>);
    let cases: [Case; 5] = [
        (format!("{endpoint}?match=r"), vec![], None),
        (
            format!("{endpoint}?match=r&last_event_id={encoded}"),
            vec![],
            Some(first.as_str()),
        ),
        (
            format!("{endpoint}?match=r"),
            vec![("last-event-id", first.as_str())],
            Some(first.as_str()),
        ),
        (
            format!("{endpoint}?match=r&last_event_id=nope"),
            vec![],
            Some("earliest"),
        ),
        (
            format!("{endpoint}?match=r&last_event_id=earliest"),
            vec![],
            Some("earliest"),
        ),
    ];
    for (url, headers, expected) in cases {
        let mut stream = RawStream::open(&url, &headers).await;
        assert_eq!(field(&stream).as_deref(), expected, "{url} {headers:?}");
        if expected == Some(first.as_str()) {
            let body = stream
                .read_until("two", |b| b.contains("data: two\n"))
                .await;
            assert_eq!(data_of(body), ["two"], "{body}");
        }
    }
}

/// § Publication: what the draft makes a 400 whatever the token — the
/// wildcard `*` as a topic, a topic in the hub's own namespace however it
/// is spelled, format characters, `type=mercure`, ids starting with `#` or
/// `earliest` — and the 413s for limits; unknown fields are ignored.
/// Nothing refused is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_refuses_what_the_draft_reserves_and_ignores_unknown_fields() {
    let hub = start(|c| {
        c.public_url = Some(url::Url::parse(HUB_URL).unwrap());
        c.max_topics = 3;
    })
    .await;
    let form = "application/x-www-form-urlencoded";
    let long_id = format!("topic=t&id={}", "i".repeat(257));
    for (body, status, code) in [
        ("topic=*", 400, "invalid_topic"),
        ("topic=a&topic=*", 400, "invalid_topic"),
        ("topic=a%E2%80%8Bb", 400, "invalid_topic"),
        (
            "topic=%2F.well-known%2Fmercure%2Fsubscriptions%2Fexact%2Fa%2Fb",
            400,
            "reserved_topic",
        ),
        (
            "topic=https%3A%2F%2Fhub.example.com%2F.well-known%2Fmercure",
            400,
            "reserved_topic",
        ),
        (
            "topic=https%3A%2F%2Fother.example%2F.well-known%2F%256Dercure%2Fx",
            400,
            "reserved_topic",
        ),
        (
            "topic=ok&topic=%2Fa%2F..%2F.well-known%2Fmercure%2Fx",
            400,
            "reserved_topic",
        ),
        ("topic=t&type=mercure", 400, "invalid_type"),
        ("topic=t&type=a%E2%80%AEb", 400, "invalid_type"),
        ("topic=t&id=%231", 400, "invalid_id"),
        ("topic=t&id=earliest", 400, "invalid_id"),
        ("topic=t&id=a%EF%BB%BFb", 400, "invalid_id"),
        ("topic=t&retry=1.5", 400, "invalid_retry"),
        ("topic=a&topic=b&topic=c&topic=d", 413, "too_many_topics"),
        // Spaces around an id: HTTP would strip them from a Last-Event-ID.
        ("topic=t&id=%20earliest", 400, "invalid_id"),
        ("topic=t&id=%232%20", 400, "invalid_id"),
        (long_id.as_str(), 413, "id_too_long"),
    ] {
        let (got, text) = hub
            .post("/.well-known/mercure", form, body.to_owned())
            .await;
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (got, json["error"].as_str()),
            (status, Some(code)),
            "{body}: {text}"
        );
    }
    let (got, id) = hub
        .post(
            "/.well-known/mercure",
            form,
            "topic=t&data=kept&colour=red&x-later=1",
        )
        .await;
    assert_eq!(got, 200, "{id}");
    // Only that one event was stored.
    let mut all = RawStream::open(
        &format!("{}?match=*&last_event_id=earliest", hub.endpoint()),
        &[],
    )
    .await;
    let body = all
        .read_until("the kept event", |b| b.contains("data: kept\n"))
        .await;
    assert_eq!(data_of(body), ["kept"], "{body}");
}

/// A hub with both keys, at [`HUB_URL`], not in dev mode.
async fn secured_hub() -> common::TestHub {
    start(|c| {
        c.dev = false;
        c.public_url = Some(url::Url::parse(HUB_URL).unwrap());
        c.publisher_jwt_key = Some(PUBLISHER_KEY.into());
        c.subscriber_jwt_key = Some(SUBSCRIBER_KEY.into());
    })
    .await
}

const METADATA_URL: &str =
    "https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure";

/// Publishes `topic` with `authorization` (a whole header value, or none);
/// status, `WWW-Authenticate`, body.
async fn publish_as(
    hub: &common::TestHub,
    authorization: Option<&str>,
    topic: &str,
) -> (u16, Option<String>, String) {
    let mut request = hub.http.post(hub.endpoint()).form(&[("topic", topic)]);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let answer = request.send().await.unwrap();
    let challenge = answer
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        answer.status().as_u16(),
        challenge,
        answer.text().await.unwrap(),
    )
}

/// § Token Validation, § Error Responses: a draft-08 access token must be
/// `typ: at+jwt`, unexpired (and past `nbf`), with `exp`, `iss` and an
/// `aud` naming this hub, signed by the configured key with the configured
/// algorithm; every failure is one `401` with `error="invalid_token"`, no
/// token a `401` without an error code, a token that does not cover the
/// topic a `403 insufficient_scope`, a malformed header a `400
/// invalid_request`; each challenge points to the metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_validation_holds_access_tokens_to_rfc_9068() {
    let hub = secured_hub().await;
    let grant = serde_json::json!([{
        "type": DETAIL,
        "actions": ["publish"],
        "topics": [{"match": "https://example.com/books/:id", "match_type": "urlpattern"}],
    }]);
    let good = token(
        PUBLISHER_KEY,
        serde_json::json!({"authorization_details": grant}),
    );
    let (status, _, id) = publish_as(
        &hub,
        Some(&format!("Bearer {good}")),
        "https://example.com/books/1",
    )
    .await;
    assert_eq!(status, 200, "{id}");
    // Any case of the scheme (RFC 9110).
    let (status, _, _) = publish_as(
        &hub,
        Some(&format!("bEARER {good}")),
        "https://example.com/books/2",
    )
    .await;
    assert_eq!(status, 200);

    let claims = |changes: serde_json::Value| {
        let mut claims = serde_json::json!({"authorization_details": grant});
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    let now = in_an_hour() - 3600;
    // `token` fills in the other RFC 9068 claims.
    let full = |changes| token(PUBLISHER_KEY, claims(changes));
    let unsigned = {
        use base64::Engine;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.",
            b64(serde_json::json!({"alg": "none", "typ": "at+jwt"})),
            b64(
                serde_json::json!({"iss": "x", "aud": HUB_URL, "exp": now + 60, "authorization_details": grant})
            )
        )
    };
    let bad = [
        (
            "not at+jwt",
            sign(
                PUBLISHER_KEY,
                Some("JWT"),
                &claims(serde_json::json!({"iss": "x", "aud": HUB_URL, "exp": now + 60})),
            ),
        ),
        (
            "no typ",
            sign(
                PUBLISHER_KEY,
                None,
                &claims(serde_json::json!({"iss": "x", "aud": HUB_URL, "exp": now + 60})),
            ),
        ),
        (
            "no exp",
            sign(
                PUBLISHER_KEY,
                Some("at+jwt"),
                &claims(serde_json::json!({"iss": "x", "aud": HUB_URL})),
            ),
        ),
        (
            "no iss",
            sign(
                PUBLISHER_KEY,
                Some("at+jwt"),
                &claims(serde_json::json!({"aud": HUB_URL, "exp": now + 60})),
            ),
        ),
        (
            "no aud",
            sign(
                PUBLISHER_KEY,
                Some("at+jwt"),
                &claims(serde_json::json!({"iss": "x", "exp": now + 60})),
            ),
        ),
        (
            "another hub",
            full(serde_json::json!({"aud": "https://other.example/.well-known/mercure"})),
        ),
        ("expired", full(serde_json::json!({"exp": now - 60}))),
        ("not yet", full(serde_json::json!({"nbf": now + 600}))),
        (
            "another key",
            token(SUBSCRIBER_KEY, claims(serde_json::json!({}))),
        ),
        ("alg none", unsigned),
        (
            "bad detail",
            full(
                serde_json::json!({"authorization_details": [{"type": DETAIL, "actions": ["publish"], "topics": [{"match": "a", "match_type": "regex"}]}]}),
            ),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (why, token) in bad {
        let (status, challenge, body) = publish_as(
            &hub,
            Some(&format!("Bearer {token}")),
            "https://example.com/books/3",
        )
        .await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(
            challenge.as_deref(),
            Some(
                format!("Bearer error=\"invalid_token\", resource_metadata=\"{METADATA_URL}\"")
                    .as_str()
            ),
            "{why}"
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "invalid_token", "{why}");
    }
    let (status, challenge, _) = publish_as(&hub, None, "https://example.com/books/3").await;
    assert_eq!(
        (status, challenge.as_deref()),
        (
            401,
            Some(format!("Bearer resource_metadata=\"{METADATA_URL}\"").as_str())
        )
    );
    let (status, challenge, _) = publish_as(
        &hub,
        Some(&format!("Bearer {good}")),
        "https://example.com/authors/1",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        challenge
            .unwrap()
            .starts_with("Bearer error=\"insufficient_scope\", resource_metadata=")
    );
    let (status, challenge, _) =
        publish_as(&hub, Some("Basic YTpi"), "https://example.com/books/3").await;
    assert_eq!(status, 400);
    assert!(
        challenge
            .unwrap()
            .starts_with("Bearer error=\"invalid_request\"")
    );
    // Only the two good publishes were stored.
    let mut all = RawStream::open(
        &format!("{}?match=*&last_event_id=earliest", hub.endpoint()),
        &[],
    )
    .await;
    let body = all
        .read_until("the position marker", |b| b.contains("\n\n"))
        .await;
    assert_eq!(body.matches("data:").count(), 2, "{body}");
}

/// § Discovery (Protected Resource Metadata): served where RFC 9728 puts
/// it for the hub's URL, naming the resource identifier tokens must carry
/// in `aud`, the header method, the draft's detail type, the cookie, and
/// both matcher types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_protected_resource_metadata() {
    let hub = secured_hub().await;
    let (status, document) = hub
        .get_json("/.well-known/oauth-protected-resource/.well-known/mercure")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        document,
        serde_json::json!({
            "resource": HUB_URL,
            "bearer_methods_supported": ["header"],
            "authorization_details_types_supported": [DETAIL],
            "mercure_cookie": "__Secure-mercure_access_token",
            "mercure_matcher_types_supported": ["exact", "urlpattern"],
        })
    );
}

/// The official ways of building tokens work unchanged: Symfony's
/// (`typ: JWT`, the `mercure` claim, a fractional `exp`), the JavaScript
/// examples' (no `typ`, no `exp`), and the Mercure hub's `mercure-token`
/// (draft-08); subscribers present theirs in either cookie name, and see
/// the private update their grant covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_token_shapes_publish_and_subscribe_unchanged() {
    let hub = secured_hub().await;
    let subscriber_details = serde_json::json!({"authorization_details": [{
        "type": DETAIL, "actions": ["subscribe"], "topics": [{"match": "*"}],
    }]});
    let readers = [
        (
            "mercureAuthorization",
            symfony_token(
                SUBSCRIBER_KEY,
                serde_json::json!({"subscribe": ["books/{id}"]}),
            ),
        ),
        (
            "mercureAuthorization",
            js_example_token(SUBSCRIBER_KEY, serde_json::json!({"subscribe": ["*"]})),
        ),
        (
            "__Secure-mercure_access_token",
            token(SUBSCRIBER_KEY, subscriber_details),
        ),
    ];
    let mut streams = Vec::new();
    for (cookie, reader) in &readers {
        let url = format!("{}?topic=books/{{id}}", hub.endpoint());
        streams.push(RawStream::open(&url, &[("cookie", &format!("{cookie}={reader}"))]).await);
    }
    let publishers = [
        symfony_token(
            PUBLISHER_KEY,
            serde_json::json!({"publish": ["books/{id}"]}),
        ),
        js_example_token(PUBLISHER_KEY, serde_json::json!({"publish": ["*"]})),
        token(
            PUBLISHER_KEY,
            serde_json::json!({"authorization_details": [{
                "type": DETAIL, "actions": ["publish"], "topics": [{"match": "*"}],
            }]}),
        ),
    ];
    for (i, publisher) in publishers.iter().enumerate() {
        let answer = hub
            .http
            .post(hub.endpoint())
            .bearer_auth(publisher)
            .form(&[
                ("topic", format!("books/{i}")),
                ("data", format!("private {i}")),
                ("private", "on".into()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "publisher {i}");
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let body = stream
            .read_until("the last update", |b| b.contains("data: private 2\n"))
            .await;
        assert_eq!(
            data_of(body),
            ["private 0", "private 1", "private 2"],
            "reader {i}"
        );
    }
}

/// § Security Considerations (CSRF): a publish authenticated by a cookie
/// must come from the hub's origin or a `--cors-origin`, by `Origin` or
/// `Referer`; a header token needs neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_publish_must_come_from_a_trusted_page() {
    let hub = start(|c| {
        c.dev = false;
        c.public_url = Some(url::Url::parse(HUB_URL).unwrap());
        c.publisher_jwt_key = Some(PUBLISHER_KEY.into());
        c.subscriber_jwt_key = Some(SUBSCRIBER_KEY.into());
        c.cors_origins = vec!["https://app.example".into()];
    })
    .await;
    let publisher = symfony_token(PUBLISHER_KEY, serde_json::json!({"publish": ["*"]}));
    let cookie = format!("mercureAuthorization={publisher}");
    for (headers, expected) in [
        (vec![], 403),
        (vec![("origin", "https://evil.example")], 403),
        (vec![("referer", "https://evil.example/page")], 403),
        (vec![("origin", "null")], 403),
        (vec![("origin", "https://hub.example.com")], 200),
        (vec![("origin", "https://app.example")], 200),
        (vec![("referer", "https://app.example/orders?x=1")], 200),
    ] {
        let mut request = hub
            .http
            .post(hub.endpoint())
            .header("cookie", &cookie)
            .form(&[("topic", "t")]);
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap();
        assert_eq!(status, expected, "{headers:?}: {body}");
        if expected == 403 {
            assert!(body.contains("cross_site_publish"), "{body}");
        }
    }
    let (status, _, _) = publish_as(&hub, Some(&format!("Bearer {publisher}")), "t").await;
    assert_eq!(status, 200);
    // Moving a client's acknowledged position is a change too.
    let reader = symfony_token(SUBSCRIBER_KEY, serde_json::json!({"subscribe": ["*"]}));
    for (origin, expected) in [("https://evil.example", 403), ("https://app.example", 204)] {
        let answer = hub
            .http
            .post(format!("{}/v1/ack", hub.url))
            .header("cookie", format!("mercureAuthorization={reader}"))
            .header("origin", origin)
            .form(&[("client_id", "victim"), ("last_event_id", "#1")])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), expected, "{origin}");
    }
}

/// § Subscription (`QUERY`): the parameters may come in a form-encoded
/// body; with the query's they make one list, and of `last_event_id` the
/// query's wins (the `Last-Event-ID` header over both). Another body type
/// is a 415, a body too large a 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_by_query_reads_the_body_and_the_query_as_one() {
    let hub = hub().await;
    let one = hub.publish("a", "one").await.replace('#', "%23");
    let two = hub.publish("b", "two").await.replace('#', "%23");
    hub.publish("c", "three").await;
    let query = reqwest::Method::from_bytes(b"QUERY").unwrap();
    let open = |url: String, body: String, header: Option<&str>| {
        let mut request = hub
            .http
            .request(query.clone(), url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(id) = header {
            request = request.header("last-event-id", id);
        }
        request.send()
    };
    let endpoint = hub.endpoint();
    // Selectors from both; the body's position loses to the query's.
    let mut answer = open(
        format!("{endpoint}?match=c&last_event_id={two}"),
        format!("match=a&match=b&last_event_id={one}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    let mut body = String::new();
    while !body.contains("data: three\n") {
        let chunk = answer.chunk().await.unwrap().expect("the stream goes on");
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(data_of(&body), ["three"], "{body}");
    // All of it in the body, and the header's position over the body's.
    let answer = open(
        endpoint.clone(),
        format!("match=a&match=b&last_event_id={two}"),
        Some("#1"),
    )
    .await
    .unwrap();
    assert_eq!(answer.headers()["mercure-last-event-id"], "#1");
    let refused = hub
        .http
        .request(query.clone(), endpoint.clone())
        .header("content-type", "application/json")
        .body(r#"{"match":"a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 415);
    let huge = format!("match={}", "a".repeat(300 * 1024));
    let refused = open(endpoint.clone(), huge, None).await.unwrap();
    assert_eq!(refused.status(), 413);
    // The body's names are held to the same rules as the query's.
    let refused = open(endpoint, "match_nope=a".into(), None).await.unwrap();
    assert_eq!(refused.status(), 400);
}

/// § Active Subscriptions: with `--subscriptions`, each matcher of a stream
/// is a subscription; its start and end are private `mercure` events on
/// `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}`
/// (each percent-encoded once) carrying the draft's document and the
/// token's payload; the API lists them for a token granted `subscribe` on
/// its path, with the cursor in a `Link` header, and `403` for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_subscriptions_events_and_api() {
    let hub = start(|c| {
        c.dev = false;
        c.subscriptions = true;
        c.public_url = Some(url::Url::parse(HUB_URL).unwrap());
        c.publisher_jwt_key = Some(PUBLISHER_KEY.into());
        c.subscriber_jwt_key = Some(SUBSCRIBER_KEY.into());
    })
    .await;
    let watcher = token(
        SUBSCRIBER_KEY,
        serde_json::json!({"authorization_details": [{
            "type": DETAIL, "actions": ["subscribe"],
            "topics": [{"match": "/.well-known/mercure/subscriptions{/*}?", "match_type": "urlpattern"}],
        }]}),
    );
    let subscriber = token(
        SUBSCRIBER_KEY,
        serde_json::json!({"authorization_details": [
            {"type": DETAIL, "actions": ["subscribe"],
             "topics": [{"match": "https://example.com/:selector", "match_type": "urlpattern"}],
             "payload": {"foo": "bar"}},
        ]}),
    );
    let bearer = |t: &str| format!("Bearer {t}");
    let events_url = format!(
        "{}?match_urlpattern=%2F.well-known%2Fmercure%2Fsubscriptions%2F*",
        hub.endpoint()
    );
    let mut events = RawStream::open(&events_url, &[("authorization", &bearer(&watcher))]).await;
    let mut anonymous = RawStream::open(&format!("{}?match=*", hub.endpoint()), &[]).await;
    let url = format!(
        "{}?match_urlpattern=https%3A%2F%2Fexample.com%2F%3Aselector",
        hub.endpoint()
    );
    let stream = RawStream::open(&url, &[("authorization", &bearer(&subscriber))]).await;
    // (The watcher's own subscription is one too: its event may come first.)
    let example = "\"match\":\"https://example.com/:selector\"";
    let body = events
        .read_until("the subscription's start", |b| b.contains(example))
        .await
        .to_owned();
    assert!(body.contains("event: mercure\n"), "{body}");
    let data = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .find(|d| d.contains(example))
        .unwrap();
    let document: serde_json::Value = serde_json::from_str(data).unwrap();
    let subscriber_id = document["subscriber"].as_str().unwrap().to_owned();
    assert!(subscriber_id.starts_with("urn:uuid:"), "{document}");
    let topic = format!(
        "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/{}",
        subscriber_id.replace(':', "%3A")
    );
    assert_eq!(
        document,
        serde_json::json!({
            "id": topic,
            "type": "subscription",
            "match_type": "urlpattern",
            "match": "https://example.com/:selector",
            "subscriber": subscriber_id,
            "active": true,
            "payload": {"foo": "bar"},
        })
    );
    let (_, metadata) = hub
        .get_json("/.well-known/oauth-protected-resource/.well-known/mercure")
        .await;
    assert_eq!(metadata["mercure_subscriptions"], true);
    // The API: the collection, per matcher, the one subscription.
    let get = |path: String, token: Option<String>| {
        let mut request = hub.http.get(format!("{}{path}", hub.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let answer = get(
        "/.well-known/mercure/subscriptions".into(),
        Some(watcher.clone()),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    let link = answer.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(
        link,
        format!(
            "<{HUB_URL}>; rel=\"mercure\"; last-event-id=\"earliest\"; type=\"mercure\"; \
             content-type=\"application/json\""
        )
    );
    // Subscription events are live only: none was stored (so no flood of
    // connections can fill the store or push events out of history).
    assert_eq!(hub.server.hub.stats().published, 0);
    let collection: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(collection["type"], "subscriptions");
    let listed = collection["subscriptions"].as_array().unwrap();
    assert!(listed.contains(&document), "{collection}");
    let one: serde_json::Value = get(topic.clone(), Some(watcher.clone()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one, document);
    let per_matcher = get(
        "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector"
            .into(),
        Some(watcher.clone()),
    )
    .await
    .unwrap();
    let per_matcher: serde_json::Value = per_matcher.json().await.unwrap();
    assert_eq!(per_matcher["subscriptions"], serde_json::json!([document]));
    // Only a token granted the path reads it.
    assert_eq!(
        get(topic.clone(), Some(subscriber.clone()))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(get(topic.clone(), None).await.unwrap().status(), 401);
    // The end: `active: false`, and the API forgets it.
    drop(stream);
    let body = events
        .read_until("the subscription's end", |b| b.contains("\"active\":false"))
        .await
        .to_owned();
    assert!(body.contains(&subscriber_id));
    common::wait_until("the API to forget the subscription", || async {
        let status = get(topic.clone(), Some(watcher.clone()))
            .await
            .unwrap()
            .status();
        (status == 404).then_some(())
    })
    .await;
    // Anonymous subscribers saw none of it: the events are private.
    let publisher = js_example_token(PUBLISHER_KEY, serde_json::json!({"publish": ["*"]}));
    let answer = hub
        .http
        .post(hub.endpoint())
        .bearer_auth(publisher)
        .form(&[("topic", "public"), ("data", "public 3")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let seen = anonymous
        .read_until("the public event", |b| b.contains("data: public 3\n"))
        .await;
    assert!(!seen.contains("subscription"), "{seen}");
}

/// § Reconciliation (opaque ids): with `--event-id-key`, hub ids are `#` and
/// 22 characters that show no order, and resuming from one is as exact as
/// from `#N`; the sequential form means nothing to such a hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_opaque_ids_resume_exactly_and_show_no_order() {
    let hub = start(|c| c.event_id_key = Some("an event id key of enough length".into())).await;
    let ids = [
        hub.publish("o", "one").await,
        hub.publish("o", "two").await,
        hub.publish("o", "three").await,
    ];
    for id in &ids {
        assert!(id.starts_with('#') && id.len() == 23, "{id}");
    }
    assert_ne!(ids[0], ids[1]);
    let url = format!("{}?match=o", hub.endpoint());
    let mut stream = RawStream::open(&url, &[("last-event-id", &ids[0])]).await;
    assert_eq!(
        stream.response.headers()["mercure-last-event-id"],
        ids[0].as_str()
    );
    let body = stream
        .read_until("three", |b| b.contains("data: three\n"))
        .await;
    assert_eq!(data_of(body), ["two", "three"], "{body}");
    assert!(body.contains(&format!("id: {}\n", ids[2])), "{body}");
    let mut sequential = RawStream::open(&url, &[("last-event-id", "#1")]).await;
    assert_eq!(
        sequential.response.headers()["mercure-last-event-id"],
        "earliest"
    );
    let body = sequential
        .read_until("a reset", |b| b.contains("event: reset"))
        .await;
    assert!(body.contains("unknown_last_event_id"), "{body}");
}

/// § Subscribers, the draft's two examples: routing never widens reading —
/// a token for books 1 and 7 listening to every book gets the private
/// update of book 1, not of book 2 — and an alternate topic narrows the
/// audience: a token for `users/42/*` gets the private update of book 1
/// published with the alternate topic `users/42/books/1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_the_drafts_examples_of_routing_and_alternate_topics() {
    let hub = secured_hub().await;
    let reader = |topics: serde_json::Value| {
        token(
            SUBSCRIBER_KEY,
            serde_json::json!({"authorization_details": [{
                "type": DETAIL, "actions": ["subscribe"], "topics": topics,
            }]}),
        )
    };
    let books = reader(serde_json::json!([
        {"match": "https://example.com/books/1", "match_type": "exact"},
        {"match": "https://example.com/books/7", "match_type": "exact"},
    ]));
    let user = reader(serde_json::json!([
        {"match": "https://example.com/users/42/*", "match_type": "urlpattern"},
    ]));
    let url = format!(
        "{}?match_urlpattern=https%3A%2F%2Fexample.com%2Fbooks%2F%3Aid",
        hub.endpoint()
    );
    let mut by_books =
        RawStream::open(&url, &[("authorization", &format!("Bearer {books}"))]).await;
    let mut by_user = RawStream::open(&url, &[("authorization", &format!("Bearer {user}"))]).await;
    let publisher = token(
        PUBLISHER_KEY,
        serde_json::json!({"authorization_details": [{
            "type": DETAIL, "actions": ["publish"], "topics": [{"match": "*"}],
        }]}),
    );
    for body in [
        "topic=https://example.com/books/2&data=book%202&private=on",
        "topic=https://example.com/books/1&topic=https://example.com/users/42/books/1&data=book%201&private=on",
        "topic=https://example.com/books/3&data=public%203",
    ] {
        publish_form(&hub, &publisher, body).await;
    }
    assert_eq!(received(&mut by_books).await, ["book 1", "public 3"]);
    assert_eq!(received(&mut by_user).await, ["book 1", "public 3"]);
}
