//! A durable stream is also a Mercure topic, its URL: appends are events on
//! it (id: the offset after them), the close is its final event, and a
//! Mercure publish to it is an append. Through `kill -9` and re-creation
//! too.

mod common;

use common::{
    ChildHub, create_stream as create, data_of, events_until_end, next_event, spawn_hub, start,
};
use ssehub_client::ParsedEvent;
use ssehub_client::{Hub, Subscribe};

fn stream_url(base: &str, name: &str) -> String {
    format!("{base}/v1/stream/{name}")
}

/// Appends; the offset after it.
async fn append(http: &reqwest::Client, url: &str, content_type: &str, body: &str) -> String {
    let response = http
        .post(url)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "{:?}", response.text().await);
    response.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn close(http: &reqwest::Client, url: &str) -> reqwest::Response {
    http.post(url)
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap()
}

/// A Mercure form publish; status and body.
async fn mercure_publish(hub_url: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{hub_url}/.well-known/mercure"))
        .form(fields)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The offset an event's id names.
fn offset_of(id: &str) -> &str {
    id.split('@').next().unwrap()
}

async fn connect(
    hub_url: &str,
    topic: &str,
    last_event_id: Option<&str>,
) -> ssehub_client::Connection {
    let mut options = Subscribe::topics([topic]);
    options.last_event_id = last_event_id.map(str::to_owned);
    Hub::new(hub_url).connect(&options).await.expect("connect")
}

/// The events until the stream ends, without the hub's `complete`.
async fn ended(connection: &mut ssehub_client::Connection) -> Vec<ParsedEvent> {
    let mut events = events_until_end(connection).await;
    events.retain(|e| e.event_type != "complete");
    events
}

#[tokio::test]
async fn appends_are_events_on_the_topic_and_the_close_is_its_final_event() {
    let hub = start(|_| {}).await;
    let url = stream_url(&hub.url, "answers/1");
    create(&hub.http, &url, "text/plain").await;
    let mut live = connect(&hub.url, &url, None).await;
    let first = append(&hub.http, &url, "text/plain", "Hello").await;
    let event = next_event(&mut live).await;
    assert_eq!(event.data, "Hello");
    assert_eq!(offset_of(&event.last_event_id), first);
    let first_id = event.last_event_id;
    let second = append(&hub.http, &url, "text/plain", ", world\nand more").await;
    let event = next_event(&mut live).await;
    assert_eq!(offset_of(&event.last_event_id), second);
    assert_eq!(event.data, ", world\nand more");
    let closed = close(&hub.http, &url).await;
    assert_eq!(closed.status(), 204);
    let rest = ended(&mut live).await;
    assert_eq!(data_of(&rest), [""], "the close is the final event");
    assert_eq!(
        rest[0].last_event_id,
        format!("{}:closed", event.last_event_id)
    );

    // An event's id names its offset, and a subscriber resumes after it.
    let mut resumed = connect(&hub.url, &url, Some(&first_id)).await;
    let events = ended(&mut resumed).await;
    assert_eq!(data_of(&events), [", world\nand more", ""]);

    // JSON streams' events are arrays of the messages appended, and
    // binary ones are base64, as in the protocol's SSE mode.
    let json = stream_url(&hub.url, "answers/json");
    create(&hub.http, &json, "application/json").await;
    let bytes = stream_url(&hub.url, "answers/bytes");
    create(&hub.http, &bytes, "application/octet-stream").await;
    let mut json_live = connect(&hub.url, &json, None).await;
    let mut bytes_live = connect(&hub.url, &bytes, None).await;
    append(&hub.http, &json, "application/json", r#"[{"a":1}, 2]"#).await;
    append(&hub.http, &bytes, "application/octet-stream", "\u{1}\u{2}").await;
    assert_eq!(next_event(&mut json_live).await.data, r#"[{"a":1},2]"#);
    assert_eq!(next_event(&mut bytes_live).await.data, "AQI=");
}

#[tokio::test]
async fn a_mercure_publish_to_the_topic_is_an_append() {
    let hub = start(|_| {}).await;
    let url = stream_url(&hub.url, "tasks/7");
    create(&hub.http, &url, "text/plain").await;
    let (status, id) = mercure_publish(&hub.url, &[("topic", &url), ("data", "step 1;")]).await;
    assert_eq!(
        (status, offset_of(&id)),
        (200, "0000000000000000_0000000000000007")
    );
    append(&hub.http, &url, "text/plain", "step 2;").await;
    let (status, id) = mercure_publish(
        &hub.url,
        &[("topic", &url), ("data", "done"), ("final", "on")],
    )
    .await;
    assert_eq!(
        (status, offset_of(&id)),
        (200, "0000000000000000_0000000000000018")
    );
    let read = hub
        .http
        .get(format!("{url}?offset=-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.headers()["stream-closed"], "true");
    assert_eq!(read.text().await.unwrap(), "step 1;step 2;done");
    let mut replay = connect(&hub.url, &url, Some("earliest")).await;
    let events = ended(&mut replay).await;
    assert_eq!(data_of(&events), ["step 1;", "step 2;", "done"]);
    assert_eq!(events[2].last_event_id, id);

    // What a stream cannot keep is refused, with a reason, and nothing is
    // appended.
    let other = stream_url(&hub.url, "tasks/8");
    create(&hub.http, &other, "text/plain").await;
    for (fields, code) in [
        (vec![("id", "mine")], "not_a_stream_field"),
        (vec![("type", "progress")], "not_a_stream_field"),
        (vec![("retain", "on")], "not_a_stream_field"),
        (
            vec![("topic", "https://example.com/elsewhere")],
            "not_a_stream_field",
        ),
    ] {
        let mut all = vec![("topic", other.as_str()), ("data", "x")];
        all.extend(fields);
        let (status, body) = mercure_publish(&hub.url, &all).await;
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{all:?}"
        );
    }
    let bytes = stream_url(&hub.url, "tasks/bytes");
    create(&hub.http, &bytes, "application/octet-stream").await;
    let (status, body) = mercure_publish(&hub.url, &[("topic", &bytes), ("data", "x")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("binary_stream"));
    let json = stream_url(&hub.url, "tasks/json");
    create(&hub.http, &json, "application/json").await;
    let (status, body) = mercure_publish(&hub.url, &[("topic", &json), ("data", "{no")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_json"));
    let (status, body) = mercure_publish(&hub.url, &[("topic", &url), ("data", "late")]).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("topic_finished"));
    // A stream's URL where no stream is: refused, not a plain event that
    // the stream created there next would drop.
    let nowhere = stream_url(&hub.url, "tasks/none");
    let (status, body) = mercure_publish(&hub.url, &[("topic", &nowhere), ("data", "x")]).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("stream_not_found"));
    let head = hub.http.head(&other).send().await.unwrap();
    assert_eq!(
        head.headers()["stream-next-offset"],
        "0000000000000000_0000000000000000"
    );
}

/// A stream's topic: exactly what the stream holds, after `kill -9` too,
/// and a stream created again at the same URL starts its topic afresh.
#[tokio::test]
async fn the_topic_follows_its_stream_through_kill_9_and_recreation() {
    let dir = tempfile::tempdir().unwrap();
    // A topic is the stream's URL on the hub: the hub's URL must not change
    // with the port a restart binds.
    let public = "https://hub.example/.well-known/mercure";
    let args = [
        "--store",
        "durable",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--public-url",
        public,
    ];
    let topic = "https://hub.example/v1/stream/answer";
    let http = reqwest::Client::new();
    let mut hub: ChildHub = spawn_hub(&args).await;
    let url = stream_url(&hub.url, "answer");
    create(&http, &url, "text/plain").await;
    let mut live = connect(&hub.url, topic, None).await;
    append(&http, &url, "text/plain", "one ").await;
    let first = next_event(&mut live).await.last_event_id;
    append(&http, &url, "text/plain", "two ").await;
    common::send_signal(hub.child.id(), 9);
    hub.child.wait().unwrap();

    let hub = spawn_hub(&args).await;
    let url = stream_url(&hub.url, "answer");
    let mut resumed = connect(&hub.url, topic, Some(&first)).await;
    let third = append(&http, &url, "text/plain", "three").await;
    let events: Vec<_> = [
        next_event(&mut resumed).await,
        next_event(&mut resumed).await,
    ]
    .into_iter()
    .map(|e| (offset_of(&e.last_event_id).to_owned(), e.data))
    .collect();
    assert_eq!(
        events,
        [
            (
                "0000000000000000_0000000000000008".to_owned(),
                "two ".to_owned()
            ),
            (third, "three".to_owned())
        ]
    );
    drop(resumed);
    // A stream created again at a closed and deleted stream's URL: its
    // topic starts afresh (not finished, no old events), under new ids.
    assert_eq!(close(&http, &url).await.status(), 204);
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 204);
    create(&http, &url, "text/plain").await;
    let mut fresh = connect(&hub.url, topic, Some("earliest")).await;
    let again = append(&http, &url, "text/plain", "anew").await;
    assert_eq!(again, "0000000000000000_0000000000000004");
    let event = next_event(&mut fresh).await;
    assert_eq!(event.data, "anew");
    assert_eq!(offset_of(&event.last_event_id), again);
    assert_ne!(event.last_event_id, first, "another creation, another id");
}

/// Reading a stream needs a grant for its URL: so does receiving its
/// events on the topic (they are private), without `--dev`.
#[tokio::test]
async fn the_events_are_for_subscribers_the_stream_would_let_read() {
    use jsonwebtoken::{EncodingKey, Header};
    let (publisher_key, subscriber_key) = ("publisher-key-for-tests", "subscriber-key-for-tests");
    let hub = start(|c| {
        c.dev = false;
        c.anonymous_subscribers = true;
        c.publisher_jwt_key = Some(publisher_key.into());
        c.subscriber_jwt_key = Some(subscriber_key.into());
    })
    .await;
    let url = stream_url(&hub.url, "secret");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let sign = |key: &str, claims: serde_json::Value| {
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let writer = sign(
        publisher_key,
        serde_json::json!({"exp": exp, "mercure": {"publish": [url]}}),
    );
    let reader = sign(
        subscriber_key,
        serde_json::json!({"exp": exp, "mercure": {"subscribe": [url]}}),
    );
    let created = hub
        .http
        .put(&url)
        .bearer_auth(&writer)
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let mut anonymous = connect(&hub.url, &url, None).await;
    let mut allowed = Hub::new(&hub.url)
        .with_token(reader)
        .connect(&Subscribe::topics([url.as_str()]))
        .await
        .unwrap();
    for data in ["secret", "public"] {
        let mut request = hub.http.post(&url).bearer_auth(&writer);
        request = request.header("content-type", "text/plain").body(data);
        assert_eq!(request.send().await.unwrap().status(), 204);
        if data == "public" {
            // A public event on the anonymous subscriber's topic, to show
            // it would have received the secret one by now.
            hub.server
                .hub
                .publish(ssehub::hub::Publish {
                    topics: vec![url.clone()],
                    data: "plain".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    assert_eq!(next_event(&mut allowed).await.data, "secret");
    assert_eq!(next_event(&mut allowed).await.data, "public");
    assert_eq!(next_event(&mut anonymous).await.data, "plain");
}
