//! What a stream carries over its life: the start, heartbeats, retained
//! state, final events, the lifetime limit, client channels and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{
    PATIENCE, RawStream, data_of, events_until_end, next_event, spawn_hub, start, wait_for_position,
};
use ssehub_client::{Publish, Subscribe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_has_the_right_headers_and_starts_with_a_retry_hint() {
    let hub = start(|c| c.retry = Duration::from_millis(1500)).await;
    let mut stream = RawStream::open(&format!("{}?match=h", hub.endpoint()), &[]).await;
    let header = |name: &str| stream.response.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "text/event-stream");
    assert_eq!(header("cache-control"), "no-cache");
    assert_eq!(header("x-accel-buffering"), "no");
    let body = stream
        .read_until("the first line", |b| b.contains('\n'))
        .await;
    assert!(body.starts_with("retry: 1500\n"), "{body:?}");
}

/// Heartbeats come, and not more often than the interval: three of them
/// take at least the two intervals between them and most of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_come_at_the_configured_interval_when_idle() {
    let interval = Duration::from_millis(200);
    let hub = start(|c| c.heartbeat = interval).await;
    let started = Instant::now();
    let mut stream = RawStream::open(&format!("{}?match=hb", hub.endpoint()), &[]).await;
    let body = stream
        .read_until("three heartbeats", |b| b.matches(":\n").count() >= 3)
        .await
        .to_owned();
    let elapsed = started.elapsed();
    // The hub's clock ticks every quarter interval, and a stream quiet for
    // four ticks gets a heartbeat: the first may come up to a tick early
    // (the stream opened between two ticks), the others come an interval
    // apart.
    assert!(
        elapsed >= interval * 5 / 2,
        "3 heartbeats within {elapsed:?}: {body:?}"
    );
    assert_eq!(body.matches(":\n").count(), 3, "{body:?}");
}

/// While events flow faster than the heartbeat interval, no heartbeat is
/// sent between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_wait_while_events_flow() {
    let hub = start(|c| c.heartbeat = Duration::from_millis(300)).await;
    let mut stream = RawStream::open(&format!("{}?match=busy", hub.endpoint()), &[]).await;
    stream
        .read_until("the stream's first bytes", |b| b.contains("\n\n"))
        .await;
    for i in 0..16 {
        // An event every 50 ms for 800 ms: without events, that would be
        // two heartbeats.
        tokio::time::sleep(Duration::from_millis(50)).await;
        hub.publish("busy", &i.to_string()).await;
    }
    let body = stream
        .read_until("all 16 events", |b| b.contains("data: 15\n"))
        .await;
    for i in 0..16 {
        assert!(
            body.contains(&format!("data: {i}\n")),
            "event {i} missing: {body:?}"
        );
    }
    let first = body.find("data: 0\n").unwrap();
    let between = &body[first..];
    // One heartbeat is allowed for a machine that stalls the publisher for
    // a whole interval; a clock that ignored events would send two.
    assert!(between.matches(":\n").count() <= 1, "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ends_at_max_lifetime_and_the_client_resumes_exactly() {
    let hub = start(|c| {
        c.max_lifetime = Some(Duration::from_millis(400));
        c.retry = Duration::from_millis(100);
    })
    .await;
    let started = Instant::now();
    let mut first = hub.connect(&["life"], None).await;
    hub.publish("life", "before").await;
    let events = events_until_end(&mut first).await;
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(350) && lived < PATIENCE,
        "{lived:?}"
    );
    assert_eq!(data_of(&events), ["before"]);
    let position = first.last_event_id().to_owned();
    hub.publish("life", "between").await;
    let mut second = hub.connect(&["life"], Some(&position)).await;
    assert_eq!(next_event(&mut second).await.data, "between");

    // The reconnecting client does the same by itself. (It connects lazily,
    // so it starts from `earliest` to not race the first publish.)
    let mut subscription = hub.client.subscribe(Subscribe {
        last_event_id: Some("earliest".into()),
        ..Subscribe::topics(["life2"])
    });
    let publisher = async {
        for i in 0..10 {
            hub.publish("life2", &i.to_string()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let reader = async {
        let mut seen = Vec::new();
        while seen.len() < 10 {
            seen.push(subscription.next().await.unwrap().unwrap().data);
        }
        seen
    };
    let (_, seen) = tokio::time::timeout(PATIENCE, futures_util::future::join(publisher, reader))
        .await
        .unwrap();
    assert_eq!(seen, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
}

/// A stream at the end of its lifetime has done nothing wrong: its last
/// words ask for a reconnect within a second, not after the full delay
/// (spread by stream, so streams opened together do not all come back at
/// once), while a shutdown keeps the full delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_end_asks_for_a_reconnect_within_a_second() {
    let hub = start(|c| {
        c.max_lifetime = Some(Duration::from_millis(300));
        c.retry = Duration::from_secs(3);
    })
    .await;
    let mut retries = Vec::new();
    for _ in 0..3 {
        let mut stream = RawStream::open(&format!("{}?match=life", hub.endpoint()), &[]).await;
        let body = stream
            .read_until("the lifetime's last words", |b| {
                b.contains("maximum connection lifetime reached")
            })
            .await;
        assert!(body.starts_with("retry: 3000\n"), "{body:?}");
        let last = body.rsplit("retry: ").next().unwrap();
        let millis: u64 = last.split('\n').next().unwrap().parse().unwrap();
        assert!(millis < 1000, "{body:?}");
        retries.push(millis);
    }
    retries.dedup();
    assert!(retries.len() > 1, "not spread: {retries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_state_comes_first_for_new_subscribers() {
    let hub = start(|_| {}).await;
    let mut state = Publish::new("tasks/42", r#"{"step":1}"#);
    state.retain = true;
    hub.publish_with(state.clone()).await;
    state.data = r#"{"step":2}"#.into();
    hub.publish_with(state).await;
    hub.publish("tasks/42", "a passing note, not state").await;
    let mut stream = hub.connect(&["tasks/42", "other"], None).await;
    assert_eq!(next_event(&mut stream).await.data, r#"{"step":2}"#);
    hub.publish("tasks/42", "live").await;
    assert_eq!(next_event(&mut stream).await.data, "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_event_completes_current_and_later_subscribers() {
    let hub = start(|_| {}).await;
    let mut only = hub.connect(&["job"], None).await;
    let mut both = hub.connect(&["job", "elsewhere"], None).await;
    hub.publish("job", "working").await;
    let mut done = Publish::new("job", "done");
    done.is_final = true;
    hub.publish_with(done).await;

    // Only this topic: the event, `complete`, then the stream ends.
    let events = events_until_end(&mut only).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("message", "working"),
            ("message", "done"),
            ("complete", "job")
        ]
    );

    // Another topic still open: `complete`, and the stream stays.
    for expected in ["working", "done", "job"] {
        assert_eq!(next_event(&mut both).await.data, expected);
    }
    hub.publish("elsewhere", "still here").await;
    assert_eq!(next_event(&mut both).await.data, "still here");

    // Later subscribers: the final state and `complete` at once, then the end.
    let mut later = hub.connect(&["job"], None).await;
    let events = events_until_end(&mut later).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(kinds, [("message", "done"), ("complete", "job")]);

    // The reconnecting client stops instead of reconnecting.
    let mut subscription = hub.client.subscribe(Subscribe::topics(["job"]));
    let mut seen = Vec::new();
    while let Some(event) = tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .unwrap()
    {
        seen.push(event.unwrap().event_type);
    }
    assert_eq!(seen, ["message", "complete"]);

    // The topic is closed to publishers.
    let (status, body) = hub
        .post(
            "/.well-known/mercure",
            "application/x-www-form-urlencoded",
            "topic=job&data=late",
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("topic_finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_client_id_replaces_the_first() {
    let hub = start(|_| {}).await;
    let with_id = |id: &str| Subscribe {
        topics: vec!["news".into()],
        client_id: Some(id.into()),
        ..Subscribe::default()
    };
    let mut first = hub.client.connect(&with_id("alice")).await.unwrap();
    hub.wait_for_stat("clients", 1).await;
    let mut second = hub.client.connect(&with_id("alice")).await.unwrap();
    // The first stream is told, and ends; the second stays.
    let last = events_until_end(&mut first).await;
    let told = last.last().expect("a last event");
    assert_eq!(
        (told.event_type.as_str(), told.data.as_str()),
        ("replaced", r#"{"client_id":"alice"}"#)
    );
    hub.wait_for_stat("connections", 1).await;
    // Its automatic reconnect (EventSource sends the event's id back) is
    // refused with a status EventSource does not retry, and takes nothing.
    let refused = hub
        .http
        .get(format!(
            "{}/.well-known/mercure?match=news&client_id=alice",
            hub.url
        ))
        .header("last-event-id", first.last_event_id())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let json: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(json["error"], "connection_replaced");
    // A reconnecting client stops there too, and the newer one stays.
    let reconnecting = hub.client.clone();
    let replaced = tokio::spawn(async move {
        let mut dave = reconnecting.subscribe(with_id("dave"));
        let mut seen = Vec::new();
        while let Some(event) = dave.next().await {
            seen.push(event.unwrap().event_type);
        }
        seen
    });
    hub.wait_for_stat("clients", 2).await;
    let newer = hub.client.connect(&with_id("dave")).await.unwrap();
    let seen = tokio::time::timeout(PATIENCE, replaced)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, ["replaced"]);
    hub.wait_for_stat("connections", 2).await;
    let (_, list) = hub.get_json("/v1/clients").await;
    assert_eq!(list["clients"][1]["client_id"], "dave");
    drop(newer);
    hub.wait_for_stat("clients", 1).await;
    assert_eq!(hub.stats().await["clients"], 1);

    let (_, list) = hub.get_json("/v1/clients").await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["clients"][0]["client_id"], "alice");
    assert_eq!(list["clients"][0]["topics"], serde_json::json!(["news"]));

    // Push to one client: only that client gets it.
    let mut bob = hub.client.connect(&with_id("bob")).await.unwrap();
    let (status, body) = hub
        .post(
            "/v1/clients/alice/events",
            "application/json",
            r#"{"data":"for alice","type":"dm"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let pushed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(pushed["connected"], true);
    let event = next_event(&mut second).await;
    assert_eq!(
        (event.event_type.as_str(), event.data.as_str()),
        ("dm", "for alice")
    );
    hub.publish("news", "for everyone").await;
    assert_eq!(next_event(&mut bob).await.data, "for everyone");

    // Disconnect a client.
    let disconnect = || async {
        let url = format!("{}/v1/clients/alice", hub.url);
        hub.http.delete(url).send().await.unwrap()
    };
    assert_eq!(disconnect().await.status(), 204);
    let rest = events_until_end(&mut second).await;
    assert_eq!(data_of(&rest), ["for everyone"]);
    let response = disconnect().await;
    assert_eq!(response.status(), 404);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["error"], "client_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_reconnecting_client_is_not_lost() {
    let hub = start(|_| {}).await;
    let options = Subscribe {
        topics: vec!["x".into()],
        client_id: Some("carol".into()),
        ..Subscribe::default()
    };
    let mut stream = hub.client.connect(&options).await.unwrap();
    let position = wait_for_position(&mut stream).await;
    drop(stream);
    hub.wait_for_stat("clients", 0).await;
    let (status, body) = hub
        .post(
            "/v1/clients/carol/events",
            "application/x-www-form-urlencoded",
            "data=while+away",
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("\"connected\":false"), "{body}");
    let mut back = hub
        .client
        .connect(&Subscribe {
            last_event_id: Some(position),
            ..options
        })
        .await
        .unwrap();
    assert_eq!(next_event(&mut back).await.data, "while away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dev_publishing_and_admin_are_refused() {
    let hub = start(|c| c.dev = false).await;
    let (status, body) = hub
        .post(
            "/.well-known/mercure",
            "application/x-www-form-urlencoded",
            "topic=t&data=x",
        )
        .await;
    assert_eq!(status, 401);
    assert!(body.contains("\"unauthorized\""));
    let (status, json) = hub.get_json("/v1/stats").await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = hub.get_json("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_with_a_retry_hint_and_exits_in_bounded_time() {
    let mut hub = spawn_hub(&["--retry", "750ms", "--shutdown-timeout", "3s"]).await;
    let url = format!("{}/.well-known/mercure?match=s", hub.url);
    let mut stream = RawStream::open(&url, &[]).await;
    stream
        .read_until("the stream's first bytes", |b| b.contains("\n\n"))
        .await;
    let signalled = Instant::now();
    common::send_signal(hub.child.id(), 15);
    let body = stream.read_to_end().await;
    assert!(
        body.ends_with("\n: the hub is shutting down; reconnect to resume\n"),
        "{body:?}"
    );
    // --retry, plus the stream's point in --reconnect-spread (5 s).
    let retry: u64 = body
        .lines()
        .filter_map(|l| l.strip_prefix("retry: "))
        .next_back()
        .unwrap()
        .parse()
        .unwrap();
    assert!((750..5_750).contains(&retry), "{body:?}");
    let status = tokio::task::spawn_blocking(move || hub.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "{:?}",
        signalled.elapsed()
    );
}
