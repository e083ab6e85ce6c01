//! I1 (order), I2 (exact resume) and I3 (no silent gap), against a real hub.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{PATIENCE, data_of, next_event, start, wait_for_position};
use ssehub_client::{Publish, Subscribe};

fn seq(id: &str) -> u64 {
    ssehub::hub::ids::EventIds::Sequential
        .seq_of(id)
        .unwrap_or_else(|| panic!("a hub id: {id:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i1_ids_strictly_increase_along_a_multi_topic_stream_under_concurrent_publishers() {
    let hub = Arc::new(start(|_| {}).await);
    let topics = ["a", "b", "c"];
    let mut stream = hub.connect(&topics, None).await;
    let publishers: Vec<_> = (0..6)
        .map(|p| {
            let hub = hub.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let topic = ["a", "b", "c", "other"][(p + i) % 4];
                    hub.publish(topic, &format!("{p}-{i}")).await;
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let expected = 6 * 50 - 6 * 50 / 4; // every fourth went to "other"
    let mut last = 0;
    for _ in 0..expected {
        let event = next_event(&mut stream).await;
        let id = seq(&event.last_event_id);
        assert!(id > last, "id {id} after {last}");
        last = id;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_resume_on_one_topic_gets_exactly_what_was_missed() {
    let hub = start(|_| {}).await;
    let mut first = hub.connect(&["t"], None).await;
    for i in 0..5 {
        hub.publish("t", &format!("e{i}")).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut first).await);
    }
    let resume_from = seen.last().unwrap().last_event_id.clone();
    drop(first);
    for i in 5..8 {
        hub.publish("t", &format!("e{i}")).await;
    }
    let mut second = hub.connect(&["t"], Some(&resume_from)).await;
    for i in 8..10 {
        hub.publish("t", &format!("e{i}")).await;
    }
    for _ in 3..10 {
        seen.push(next_event(&mut second).await);
    }
    let expected: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    assert_eq!(data_of(&seen), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_resume_on_a_multi_topic_connection_has_no_gap_and_no_duplicate() {
    let hub = start(|_| {}).await;
    let topics = ["x", "y", "z"];
    let mut first = hub.connect(&topics, None).await;
    let mut published = Vec::new();
    for i in 0..9 {
        let topic = topics[i % 3];
        hub.publish(topic, &format!("{topic}{i}")).await;
        published.push(format!("{topic}{i}"));
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_event(&mut first).await);
    }
    let resume_from = seen.last().unwrap().last_event_id.clone();
    drop(first);
    for i in 9..15 {
        let topic = topics[i % 3];
        hub.publish(topic, &format!("{topic}{i}")).await;
        published.push(format!("{topic}{i}"));
        hub.publish("unrelated", "noise").await;
    }
    let mut second = hub.connect(&topics, Some(&resume_from)).await;
    while seen.len() < published.len() {
        seen.push(next_event(&mut second).await);
    }
    assert_eq!(data_of(&seen), published);
    // Nothing else arrives before the next live event: no duplicate at the
    // history/live boundary.
    hub.publish(topics[0], "sentinel").await;
    assert_eq!(next_event(&mut second).await.data, "sentinel");
}

/// Publishes race with reconnects: a publisher publishes non-stop while the
/// subscriber drops and resumes its connection over and over. The subscriber
/// must end up with every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_publishes_racing_reconnects_lose_and_repeat_nothing() {
    let hub = Arc::new(start(|_| {}).await);
    const TOTAL: usize = 600;
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..TOTAL {
                let topic = if i % 2 == 0 { "p" } else { "q" };
                ids.push(hub.publish(topic, &i.to_string()).await);
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ids
        })
    };
    let mut received: Vec<usize> = Vec::new();
    let mut last_event_id: Option<String> = Some("earliest".into());
    let mut reconnects = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    while received.len() < TOTAL {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} events",
            received.len()
        );
        let mut connection = hub.connect(&["p", "q"], last_event_id.as_deref()).await;
        reconnects += 1;
        // Read a few events (or until quiet), then drop the connection.
        for _ in 0..(7 + reconnects % 11) {
            match tokio::time::timeout(Duration::from_millis(200), connection.next_event()).await {
                Ok(Some(Ok(event))) => received.push(event.data.parse().unwrap()),
                _ => break,
            }
        }
        let id = connection.last_event_id();
        if !id.is_empty() {
            last_event_id = Some(id.to_owned());
        }
    }
    publisher.await.unwrap();
    assert_eq!(
        received,
        (0..TOTAL).collect::<Vec<_>>(),
        "after {reconnects} reconnects"
    );
    assert!(
        reconnects > 10,
        "the test should reconnect often, did {reconnects}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_earliest_replays_all_history() {
    let hub = start(|_| {}).await;
    for i in 0..3 {
        hub.publish("h", &i.to_string()).await;
    }
    let mut stream = hub.connect(&["h"], Some("earliest")).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut stream).await);
    }
    assert_eq!(data_of(&seen), ["0", "1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_publisher_ids_are_honoured_and_resumable() {
    let hub = start(|_| {}).await;
    let mut event = Publish::new("ids", "first");
    event.id = Some("urn:uuid:first".into());
    assert_eq!(hub.publish_with(event).await, "urn:uuid:first");
    hub.publish("ids", "second").await;
    let mut stream = hub.connect(&["ids"], Some("urn:uuid:first")).await;
    assert_eq!(next_event(&mut stream).await.data, "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_a_fresh_subscriber_gets_a_position_before_any_event() {
    // A client that connects, sees nothing, and drops must still be able to
    // resume: the hub gives it a position at once.
    let hub = start(|_| {}).await;
    hub.publish("quiet", "before").await;
    let mut stream = hub.connect(&["quiet"], None).await;
    let position = wait_for_position(&mut stream).await;
    drop(stream);
    hub.publish("quiet", "while away").await;
    let mut resumed = hub.connect(&["quiet"], Some(&position)).await;
    assert_eq!(next_event(&mut resumed).await.data, "while away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_trimmed_history_gives_a_reset_with_the_retained_state_before_live_events() {
    let hub = start(|c| c.history_size = 3).await;
    let mut state = Publish::new("task", "state-0");
    state.retain = true;
    let old = hub.publish_with(state).await;
    for i in 1..=6 {
        let mut state = Publish::new("task", format!("state-{i}"));
        state.retain = i % 2 == 0;
        hub.publish_with(state).await;
    }
    // History now holds states 4, 5, 6; the retained state is state-6.
    let mut stream = hub.connect(&["task"], Some(&old)).await;
    let reset = next_event(&mut stream).await;
    assert_eq!(reset.event_type, "reset");
    let body: serde_json::Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(body["reason"], "history_trimmed");
    assert_eq!(body["topics"], serde_json::json!(["task"]));
    assert_eq!(next_event(&mut stream).await.data, "state-6");
    hub.publish("task", "live").await;
    assert_eq!(next_event(&mut stream).await.data, "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_an_unknown_id_gives_a_reset_then_the_state() {
    let hub = start(|_| {}).await;
    let mut state = Publish::new("k", "current");
    state.retain = true;
    hub.publish_with(state).await;
    for unknown in ["no-such-id", "999999"] {
        let mut stream = hub.connect(&["k"], Some(unknown)).await;
        let reset = next_event(&mut stream).await;
        assert_eq!(reset.event_type, "reset", "for {unknown}");
        assert!(reset.data.contains("unknown_last_event_id"));
        // The reset keeps the id the client sent, so nothing moves backwards.
        assert_eq!(reset.last_event_id, unknown);
        assert_eq!(next_event(&mut stream).await.data, "current");
    }
}

/// What follows a `reset` is one rule, for a trimmed and an unknown position
/// alike: the topic's retained state, then what history holds after it; with
/// no retained state, all that history holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_after_a_reset_come_the_state_then_the_history_after_it() {
    let hub = start(|c| c.history_size = 3).await;
    hub.publish("plain", "p1").await;
    hub.publish("plain", "p2").await;
    hub.publish("stateful", "before").await;
    let mut state = Publish::new("stateful", "state");
    state.retain = true;
    hub.publish_with(state).await;
    // History keeps the last three: "after", "pushes out", "the end".
    hub.publish("stateful", "after").await;
    hub.publish("stateful", "pushes out").await;
    hub.publish("stateful", "the end").await;
    let expected = [
        ("plain", vec!["p1", "p2"]),
        ("stateful", vec!["state", "after", "pushes out", "the end"]),
    ];
    for (topic, data) in expected {
        // Unknown, or older than what history holds (events 3 and 4 were
        // trimmed from "stateful"'s history).
        let positions: &[&str] = if topic == "plain" {
            &["unknown"]
        } else {
            &["unknown", "1"]
        };
        let mut streams = Vec::new();
        for position in positions {
            let mut stream = hub.connect(&[topic], Some(position)).await;
            let reset = next_event(&mut stream).await;
            assert_eq!(reset.event_type, "reset", "{topic} {position}");
            for want in &data {
                let got = next_event(&mut stream).await;
                assert_eq!(&got.data, want, "{topic} {position}");
            }
            streams.push(stream);
        }
        hub.publish(topic, "live").await;
        for stream in &mut streams {
            assert_eq!(next_event(stream).await.data, "live", "{topic}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_history_expires_by_age_and_then_resume_says_reset() {
    let hub = start(|c| c.history_ttl = Duration::from_millis(300)).await;
    let old = hub.publish("aging", "old").await;
    hub.publish("aging", "newer").await;
    hub.wait_for_stat("history_events", 0).await;
    let mut stream = hub.connect(&["aging"], Some(&old)).await;
    assert_eq!(next_event(&mut stream).await.event_type, "reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_selectors_receive_matching_topics_only() {
    let hub = start(|_| {}).await;
    let mut stream = hub
        .client
        .connect(&Subscribe::topics(["books/{id}"]))
        .await
        .unwrap();
    hub.publish("books/1/reviews", "no").await;
    hub.publish("authors/1", "no").await;
    hub.publish("books/2", "yes").await;
    assert_eq!(next_event(&mut stream).await.data, "yes");
    assert_eq!(hub.stats().await["subscriptions"], 1);
}

/// A hub whose topic `legit/t` (two events) was evicted by the size limit
/// and forgotten; and the id of its first event.
async fn forgotten_legit_topic() -> (common::TestHub, String) {
    let hub = start(|c| c.history_max_bytes = 64 * 1024).await;
    let first = hub.publish("legit/t", "one").await;
    hub.publish("legit/t", "two").await;
    for i in 0..40 {
        hub.publish(&format!("other/{i}"), &"x".repeat(4096)).await;
    }
    (hub, first)
}

/// I3 for a topic the hub forgot (its history evicted by the size limit)
/// and that became known again — by a subscriber holding it open, or by a
/// new event — before a client resumes from inside the forgotten part: the
/// client is told with a `reset`, never given a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_a_forgotten_topic_known_again_still_resets_a_client_from_before() {
    for known_again_by in ["a subscriber", "a new event"] {
        let (hub, first) = forgotten_legit_topic().await;
        let _holder = match known_again_by {
            "a subscriber" => Some(
                common::RawStream::open(&format!("{}?match=legit/t", hub.endpoint()), &[]).await,
            ),
            _ => {
                hub.publish("legit/t", "three").await;
                None
            }
        };
        let mut resumed = common::RawStream::open(
            &format!("{}?match=legit/t", hub.endpoint()),
            &[("last-event-id", &first)],
        )
        .await;
        assert_eq!(
            resumed.response.headers()["mercure-last-event-id"],
            "earliest",
            "{known_again_by}"
        );
        let body = resumed
            .read_until("a reset", |b| b.contains("event: reset"))
            .await;
        assert!(!body.contains("data: two"), "{known_again_by}: {body}");
    }
    // A template or `*` can no longer name a forgotten topic: resuming
    // from before it, they are told too.
    let (hub, first) = forgotten_legit_topic().await;
    for query in [
        "topic=legit%2F%7Bx%7D",
        "match=*",
        "match_urlpattern=legit%2F%3Ax",
    ] {
        let mut resumed = common::RawStream::open(
            &format!("{}?{query}", hub.endpoint()),
            &[("last-event-id", &first)],
        )
        .await;
        assert_eq!(
            resumed.response.headers()["mercure-last-event-id"],
            "earliest",
            "{query}"
        );
        let body = resumed
            .read_until("a reset", |b| b.contains("event: reset"))
            .await;
        assert!(!body.contains("data: two"), "{query}: {body}");
    }
}
