//! I4: acknowledged means stored, and survives `kill -9`. Plus restart,
//! retention and damaged files. The hub runs as a child process here.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ChildHub, spawn_hub, try_spawn_hub};
use ssehub_client::{Hub, Publish, Subscribe};

const TOPICS: [&str; 3] = ["orders/1", "orders/2", "chat/9"];

fn durable_hub(dir: &std::path::Path, extra: &[&str]) -> impl Future<Output = ChildHub> {
    let mut args = vec![
        "--store".to_owned(),
        "durable".to_owned(),
        "--data-dir".to_owned(),
        dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_hub(&args).await
    }
}

/// Every event the hub replays from `earliest`: as many as its history
/// holds (each event here has one topic, so that is the count of events).
async fn all_events(url: &str) -> Vec<(String, String)> {
    let stats: serde_json::Value = reqwest::get(format!("{url}/v1/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let held = stats["history_events"].as_u64().unwrap();
    let mut connection = Hub::new(url)
        .connect(&Subscribe {
            last_event_id: Some("earliest".into()),
            ..Subscribe::topics(TOPICS)
        })
        .await
        .unwrap();
    let mut events = Vec::new();
    for _ in 0..held {
        let event = common::next_event(&mut connection).await;
        events.push((event.last_event_id, event.data));
    }
    events
}

fn seq(id: &str) -> u64 {
    ssehub::hub::ids::EventIds::Sequential.seq_of(id).unwrap()
}

/// Several publishers publish as fast as they can; the hub is killed with
/// SIGKILL mid-load and restarted on the same data directory. Every
/// acknowledged event must be there exactly once, in order, and a client
/// holding an id from before the crash must resume exactly. Five rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i4_acknowledged_events_survive_kill_9_and_resume_is_exact_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked_all: Vec<(String, String)> = Vec::new();
    for round in 0..5 {
        let mut hub = durable_hub(dir.path(), &["--history-size", "100000"]).await;
        let client = Hub::new(&hub.url);

        // A subscriber follows along before the crash; it keeps its position.
        let mut follower = client.connect(&Subscribe::topics(TOPICS)).await.unwrap();

        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let publishers: Vec<_> = (0..8)
            .map(|p| {
                let client = client.clone();
                let acked = acked.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let data = format!("r{round}-p{p}-{i}");
                        let event = Publish::new(TOPICS[(p + i) % 3], data.clone());
                        match client.publish(&event).await {
                            Ok(id) => acked.lock().unwrap().push((id, data)),
                            Err(_) => return, // the hub is gone
                        }
                    }
                })
            })
            .collect();
        // Read a little as a subscriber, then kill the hub while publishing.
        let mut follower_position = String::new();
        for _ in 0..50 {
            let event = common::next_event(&mut follower).await;
            follower_position = event.last_event_id;
        }
        while acked.lock().unwrap().len() < 300 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        hub.child.kill().unwrap(); // SIGKILL
        hub.child.wait().unwrap();
        for publisher in publishers {
            publisher.await.unwrap();
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        acked_all.extend(acked.iter().cloned());

        // Restart on the same directory.
        let hub = durable_hub(dir.path(), &["--history-size", "100000"]).await;
        let client = Hub::new(&hub.url);
        let events = all_events(&hub.url).await;

        // Strictly increasing ids, each event once.
        for pair in events.windows(2) {
            assert!(seq(&pair[0].0) < seq(&pair[1].0), "round {round}: {pair:?}");
        }
        let unique: HashSet<&String> = events.iter().map(|e| &e.1).collect();
        assert_eq!(unique.len(), events.len(), "round {round}: duplicate data");
        // Every acknowledged event, from this round and all before, is there
        // with the id it was acknowledged with.
        let stored: HashMap<&String, &String> =
            events.iter().map(|(id, data)| (data, id)).collect();
        for (id, data) in &acked_all {
            assert_eq!(
                stored.get(data),
                Some(&id),
                "round {round}: acknowledged {data} ({id}) lost"
            );
        }

        // The follower resumes exactly where it was.
        let mut resumed = client
            .connect(&Subscribe {
                last_event_id: Some(follower_position.clone()),
                ..Subscribe::topics(TOPICS)
            })
            .await
            .unwrap();
        let expected: Vec<&(String, String)> = events
            .iter()
            .filter(|(id, _)| seq(id) > seq(&follower_position))
            .collect();
        for want in expected {
            let event = common::next_event(&mut resumed).await;
            assert_eq!(
                (&event.last_event_id, &event.data),
                (&want.0, &want.1),
                "round {round}"
            );
        }

        // Ids continue after the restart; they are never reused.
        let new_id = client
            .publish(&Publish::new(TOPICS[0], format!("after-{round}")))
            .await
            .unwrap();
        assert!(seq(&new_id) > events.iter().map(|e| seq(&e.0)).max().unwrap());
        acked_all.push((new_id, format!("after-{round}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_state_and_finished_topics_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut hub = durable_hub(dir.path(), &[]).await;
        let client = Hub::new(&hub.url);
        let mut state = Publish::new("tasks/1", "half done");
        state.retain = true;
        client.publish(&state).await.unwrap();
        let mut done = Publish::new("tasks/2", "all done");
        done.is_final = true;
        client.publish(&done).await.unwrap();
        // A graceful stop this time.
        hub.terminate();
    }
    let hub = durable_hub(dir.path(), &[]).await;
    let client = Hub::new(&hub.url);
    let mut fresh = client
        .connect(&Subscribe::topics(["tasks/1"]))
        .await
        .unwrap();
    assert_eq!(common::next_event(&mut fresh).await.data, "half done");
    let mut finished = client
        .connect(&Subscribe::topics(["tasks/2"]))
        .await
        .unwrap();
    let events = common::events_until_end(&mut finished).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(kinds, [("message", "all done"), ("complete", "tasks/2")]);
    let refused = client
        .publish(&Publish::new("tasks/2", "late"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("topic_finished"), "{refused}");
}

/// `GET /v1/stats`.
async fn stats(url: &str) -> serde_json::Value {
    reqwest::get(format!("{url}/v1/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Many distinct topics through a small budget: a topic the budget has
/// emptied is forgotten, so the file stops growing with the topic count;
/// and a retained state is never what the budget evicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_bounds_the_file_whatever_the_topic_count_and_keeps_states() {
    let dir = tempfile::tempdir().unwrap();
    let hub = durable_hub(dir.path(), &["--history-max-bytes", "64KiB"]).await;
    let client = Hub::new(&hub.url);
    let mut state = Publish::new("task/1", "state: step 3 of 5");
    state.retain = true;
    client.publish(&state).await.unwrap();
    let mut sizes = Vec::new();
    for round in 0..4 {
        let publishers = (0..8).map(|p| {
            let client = client.clone();
            async move {
                for i in 0..250 {
                    let topic = format!("t/{round}/{p}/{i}");
                    client
                        .publish(&Publish::new(topic, "x".repeat(20)))
                        .await
                        .unwrap();
                }
            }
        });
        futures_util::future::join_all(publishers).await;
        sizes.push(dir_size(dir.path()));
    }
    let stats = stats(&hub.url).await;
    eprintln!("data file after each 2,000 topics: {sizes:?}; {stats}");
    assert!(
        stats["stored_bytes"].as_u64().unwrap() <= 64 * 1024,
        "{stats}"
    );
    // Known topics are those with something stored (one event each here).
    assert!(
        stats["topics"].as_u64() <= stats["stored_events"].as_u64(),
        "{stats}"
    );
    let (first, last) = (sizes[0], *sizes.last().unwrap());
    assert!(
        last <= first + first / 4,
        "the data file kept growing: {sizes:?}"
    );
    // The state published first is still there for a page that loads now.
    let mut page = client
        .connect(&Subscribe::topics(["task/1"]))
        .await
        .unwrap();
    let event = common::next_event(&mut page).await;
    assert_eq!(event.data, "state: step 3 of 5");
}

/// An event larger than the whole budget, or a state the other states
/// leave no room for, is refused with a JSON error; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_history_cannot_hold_is_refused_not_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let hub = durable_hub(dir.path(), &["--history-max-bytes", "64KiB"]).await;
    let http = reqwest::Client::new();
    let publish = |topic: &str, data: String, retain: bool| {
        http.post(format!("{}/.well-known/mercure", hub.url))
            .json(&serde_json::json!({"topic": topic, "data": data, "retain": retain}))
            .send()
    };
    let refused = publish("big", "b".repeat(70 * 1024), false).await.unwrap();
    assert_eq!(refused.status(), 413);
    let json: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(json["error"], "larger_than_history");
    // Six states of 10 KB fit in 64 KiB; a seventh does not.
    for i in 0..6 {
        let ok = publish(&format!("s/{i}"), "s".repeat(10_000), true)
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    let refused = publish("s/6", "s".repeat(10_000), true).await.unwrap();
    assert_eq!(refused.status(), 507);
    let json: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(json["error"], "history_full");
    // A topic's new state replaces its old one: that still fits.
    let ok = publish("s/0", "n".repeat(10_000), true).await.unwrap();
    assert_eq!(ok.status(), 200);
    // And an event that is not a state is still delivered and kept while
    // it fits.
    let ok = publish("plain", "p".repeat(100), false).await.unwrap();
    assert_eq!(ok.status(), 200);
    let stats: serde_json::Value = http
        .get(format!("{}/v1/stats", hub.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["published"], 8, "{stats}");
}

/// Sustained publishing with retention: the data file stops growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_stays_bounded_under_sustained_publishing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = durable_hub(
        dir.path(),
        &["--history-size", "100", "--history-max-bytes", "256KiB"],
    )
    .await;
    let client = Hub::new(&hub.url);
    let payload = "p".repeat(1000);
    let mut sizes = Vec::new();
    // 8 rounds x 2,000 events x ~1 KB = ~16 MB through a 256 KiB budget.
    for round in 0..8 {
        let publishers = (0..16).map(|p| {
            let client = client.clone();
            let payload = payload.clone();
            async move {
                for i in 0..125 {
                    let topic = format!("t{}", (p * 125 + i) % 40);
                    client
                        .publish(&Publish::new(topic, format!("{round}{payload}")))
                        .await
                        .unwrap();
                }
            }
        });
        futures_util::future::join_all(publishers).await;
        sizes.push(dir_size(dir.path()));
    }
    let stats = stats(&hub.url).await;
    assert!(
        stats["stored_bytes"].as_u64().unwrap() <= 256 * 1024,
        "{stats}"
    );
    eprintln!("data directory sizes after each round: {sizes:?}");
    let (early, last) = (sizes[2], *sizes.last().unwrap());
    assert!(
        last < 8 << 20,
        "the data file reached {last} bytes: {sizes:?}"
    );
    assert!(
        last <= early + early / 2,
        "the data file kept growing: {sizes:?}"
    );
}

#[test]
fn a_damaged_data_file_stops_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("history.redb"), vec![0x42; 10_000]).unwrap();
    assert_startup_refused(dir.path(), "a damaged file");
}

/// Starting a hub on `dir` fails, naming the data file and what to do.
fn assert_startup_refused(dir: &std::path::Path, what: &str) {
    let data_dir = dir.display().to_string();
    let Err(error) = try_spawn_hub(&["--store", "durable", "--data-dir", &data_dir]) else {
        panic!("the hub started on {what}");
    };
    assert!(error.contains("history.redb"), "{error}");
    assert!(error.contains("move the file aside"), "{error}");
}

#[test]
fn an_empty_data_file_stops_startup_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("history.redb"), b"").unwrap();
    assert_startup_refused(dir.path(), "an empty file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_data_file_stops_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let hub = durable_hub(dir.path(), &[]).await;
        let client = Hub::new(&hub.url);
        for i in 0..200 {
            client
                .publish(&Publish::new("t", format!("event {i}")))
                .await
                .unwrap();
        }
    }
    let file = dir.path().join("history.redb");
    let len = std::fs::metadata(&file).unwrap().len();
    let handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    handle.set_len(len / 3).unwrap();
    drop(handle);
    // redb refuses a file cut short of the layout it recorded, every time.
    assert_startup_refused(dir.path(), "a truncated file");
}

/// Publishes `count` events of about 8 KB, `i:` and padding, over
/// `big/0`..`big/2`, from 8 publishers at once.
async fn publish_big(client: &Hub, count: usize) {
    let publishers = (0..8).map(|p| {
        let client = client.clone();
        async move {
            for i in (p..count).step_by(8) {
                let data = format!("{i}:{}", "p".repeat(8000));
                client
                    .publish(&Publish::new(format!("big/{}", i % 3), data))
                    .await
                    .unwrap();
            }
        }
    });
    futures_util::future::join_all(publishers).await;
}

/// A replay of all of `big/*` from `earliest`: every event exactly once, in
/// id order.
async fn assert_exact_replay(url: &str, count: usize, when: &str) {
    let mut connection = Hub::new(url)
        .connect(&Subscribe {
            last_event_id: Some("earliest".into()),
            ..Subscribe::topics(["big/0", "big/1", "big/2"])
        })
        .await
        .unwrap();
    let mut seen = HashSet::new();
    let mut last = 0;
    for _ in 0..count {
        let event = common::next_event(&mut connection).await;
        assert!(seq(&event.last_event_id) > last, "{when}: ids increase");
        last = seq(&event.last_event_id);
        let (i, _) = event.data.split_once(':').unwrap();
        assert!(seen.insert(i.to_owned()), "{when}: {i} twice");
    }
    assert_eq!(seen.len(), count, "{when}");
}

/// History lives in the data file, not in the hub's memory: with 24 MB of
/// history and a 1 MiB cache, the hub's memory grows by far less than the
/// history's size, while publishing and after a restart (which loads the
/// file one event at a time), and a replay of all of it is exact, read from
/// the file as the socket drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lives_in_the_file_not_in_memory() {
    const EVENTS: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--history-size", "100000", "--history-cache", "1MiB"];
    let mut hub = durable_hub(dir.path(), &args).await;
    let started = hub.rss_bytes();
    publish_big(&Hub::new(&hub.url), EVENTS).await;
    let published = hub.rss_bytes();
    assert_exact_replay(&hub.url, EVENTS, "before the restart").await;
    let stats = stats(&hub.url).await;
    assert!(
        stats["cached_bytes"].as_u64().unwrap() <= 1 << 20,
        "{stats}"
    );
    assert!(hub.terminate());
    let hub = durable_hub(dir.path(), &args).await;
    let restored = hub.rss_bytes();
    assert_exact_replay(&hub.url, EVENTS, "after the restart").await;
    let replayed = hub.rss_bytes();
    eprintln!(
        "RSS: {} MiB at start, {} MiB after 24 MB of history, {} MiB after a restart, {} MiB after a replay",
        started >> 20,
        published >> 20,
        restored >> 20,
        replayed >> 20
    );
    // Holding the history whole would take 48 MB (its data and its encoded
    // form) on top of the start; the bound is less than the history itself.
    for (when, rss) in [
        ("publishing", published),
        ("the restart", restored),
        ("the replay", replayed),
    ] {
        let growth = rss.saturating_sub(started);
        assert!(
            growth < 16 << 20,
            "{when}: RSS grew by {} MiB",
            growth >> 20
        );
    }
}

/// A disk that fills up, then gets room again (here the hub's file-size
/// limit, lowered and raised from outside with prlimit: writes beyond it
/// fail with EFBIG, as they would with ENOSPC): publishes are refused with
/// a JSON 503 and `/readyz` says so while the store cannot be written (while
/// `/healthz`, liveness, stays 200: the hub must not be restarted); once
/// it can, the hub writes again by itself, without a restart, and nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_recovered_from_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    let hub = common::spawn_hub_prepared(&["--store", "durable", "--data-dir", &data_dir], || {
        unsafe extern "C" {
            fn signal(signal: i32, handler: usize) -> usize;
        }
        // SIGXFSZ (25) would kill the hub at the limit; ignored, the
        // write fails with EFBIG instead. SAFETY: signal(2) is
        // async-signal-safe and SIG_IGN (1) is a valid disposition.
        unsafe { signal(25, 1) };
        Ok(())
    })
    .await;
    let client = Hub::new(&hub.url);
    let http = reqwest::Client::new();
    let health = || async {
        let response = http
            .get(format!("{}/readyz", hub.url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap())
    };
    let mut acknowledged = Vec::new();
    let id = client
        .publish(&Publish::new("disk", "before"))
        .await
        .unwrap();
    acknowledged.push(id);
    let pid = hub.child.id() as i32;
    let size = std::fs::metadata(dir.path().join("history.redb"))
        .unwrap()
        .len();
    // (The soft limit only: raising it again needs no privilege.)
    rlimit::prlimit(
        pid,
        rlimit::Resource::FSIZE,
        Some((size, rlimit::INFINITY)),
        None,
    )
    .unwrap();
    // Large events until the file must grow.
    let mut refused = None;
    for i in 0..100 {
        match client
            .publish(&Publish::new(
                "disk",
                format!("{i}:{}", "f".repeat(200_000)),
            ))
            .await
        {
            Ok(id) => acknowledged.push(id),
            Err(err) => {
                refused = Some(err.to_string());
                break;
            }
        }
    }
    let refused = refused.expect("a publish is refused once the file cannot grow");
    assert!(refused.contains("store_unavailable"), "{refused}");
    let (status, body) = health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "store_unavailable", "{body}");
    let alive = http
        .get(format!("{}/healthz", hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), 200, "liveness does not depend on the store");
    // Room again: the hub finds out by itself.
    rlimit::prlimit(
        pid,
        rlimit::Resource::FSIZE,
        Some((rlimit::INFINITY, rlimit::INFINITY)),
        None,
    )
    .unwrap();
    common::wait_until("healthy again", || async {
        (health().await.0 == 200).then_some(())
    })
    .await;
    acknowledged.push(
        client
            .publish(&Publish::new("disk", "after"))
            .await
            .unwrap(),
    );
    // Everything acknowledged is there, once, in order.
    let mut replay = client
        .connect(&Subscribe {
            last_event_id: Some("earliest".into()),
            ..Subscribe::topics(["disk"])
        })
        .await
        .unwrap();
    for id in &acknowledged {
        assert_eq!(&common::next_event(&mut replay).await.last_event_id, id);
    }
}

/// Every place in `file` where `marker` is, overwritten with bytes that are
/// not UTF-8 (copy-on-write may have left older copies too).
fn damage(file: &std::path::Path, marker: &[u8]) -> usize {
    let mut bytes = std::fs::read(file).unwrap();
    let mut found = 0;
    let mut at = 0;
    while let Some(offset) = bytes[at..].windows(marker.len()).position(|w| w == marker) {
        let start = at + offset;
        bytes[start..start + marker.len()].fill(0xff);
        found += 1;
        at = start + marker.len();
    }
    std::fs::write(file, bytes).unwrap();
    found
}

/// A record damaged in the data file while the hub runs: a replay that
/// reaches it is cut there, and the event leaves history, so the client,
/// resuming, is told with a `reset` that it missed it and gets the rest,
/// instead of being cut at the same place on every reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_damaged_while_running_becomes_a_reset_not_a_reconnect_loop() {
    let dir = tempfile::tempdir().unwrap();
    let hub = durable_hub(
        dir.path(),
        &["--history-size", "10000", "--history-cache", "64KiB"],
    )
    .await;
    let client = Hub::new(&hub.url);
    let mut ids = Vec::new();
    // 8 MB: more than redb's page cache, so the record is read from disk.
    for i in 0..800 {
        let data = format!("marker-{i}-end:{}", "d".repeat(10_000));
        ids.push(
            client
                .publish(&Publish::new("damaged", data))
                .await
                .unwrap(),
        );
    }
    assert!(damage(&dir.path().join("history.redb"), b"marker-5-end") > 0);
    let from_earliest = Subscribe {
        last_event_id: Some("earliest".into()),
        ..Subscribe::topics(["damaged"])
    };
    // Each stream on a connection of its own: the publishes' connection,
    // idle in the client's pool, may be closed by the hub's idle timeout
    // (`--header-read-timeout`) just as a request is sent on it.
    let connect = |options| {
        let client = Hub::new(&hub.url);
        async move {
            tokio::time::timeout(common::PATIENCE, client.connect(&options))
                .await
                .expect("a connection in time")
                .unwrap()
        }
    };
    let mut first = connect(from_earliest).await;
    let mut received = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(common::PATIENCE, first.next_event()).await {
        match event {
            Ok(event) => received.push(event.last_event_id),
            Err(_) => break,
        }
        if received.len() == ids.len() {
            break;
        }
    }
    // Cut at the damaged record (or at the start of its piece).
    assert!(ids[..5].starts_with(&received), "{received:?}");
    assert!(received.len() >= 3, "{received:?}");
    let mut resumed = connect(Subscribe {
        last_event_id: Some(received.last().unwrap().clone()),
        ..Subscribe::topics(["damaged"])
    })
    .await;
    let reset = common::next_event(&mut resumed).await;
    assert_eq!(reset.event_type, "reset", "{reset:?}");
    let next = common::next_event(&mut resumed).await;
    assert_eq!(next.last_event_id, ids[6]);
}

/// `POST /v1/ack` for a client id: the backend reads the position, it
/// survives a restart, and a connection with that client id and no
/// `Last-Event-ID` (a page load) resumes after it. Bad input is refused
/// and records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_position_survives_a_restart_and_a_page_load_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let ack = |url: String, body: String| async move {
        let response = reqwest::Client::new()
            .post(format!("{url}/v1/ack"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    };
    let position = |url: String| async move {
        let response = reqwest::get(format!("{url}/v1/clients/reader/ack"))
            .await
            .unwrap();
        let status = response.status().as_u16();
        let json: serde_json::Value = response.json().await.unwrap();
        (status, json)
    };
    let mut ids = Vec::new();
    {
        let mut hub = durable_hub(dir.path(), &[]).await;
        let (status, json) = position(hub.url.clone()).await;
        assert_eq!(
            (status, json["error"].as_str()),
            (404, Some("ack_not_found"))
        );
        let client = Hub::new(&hub.url);
        for i in 0..3 {
            ids.push(
                client
                    .publish(&Publish::new("inbox", format!("note {i}")))
                    .await
                    .unwrap(),
            );
        }
        for (body, status, code) in [
            ("client_id=reader".to_owned(), 400, "missing_field"),
            (
                format!("client_id=a%20b&last_event_id={}", ids[0]),
                400,
                "invalid_client_id",
            ),
            (
                "client_id=reader&last_event_id=a%0Ab".to_owned(),
                400,
                "invalid_last_event_id",
            ),
            // The hub's own marker: a page load must not resume as "replaced".
            (
                "client_id=reader&last_event_id=urn:ssehub:replaced".to_owned(),
                400,
                "invalid_last_event_id",
            ),
            (
                format!("client_id=reader&last_event_id={}", "x".repeat(257)),
                400,
                "invalid_last_event_id",
            ),
            (
                format!("client_id=reader&last_event_id={}", "x".repeat(5000)),
                413,
                "body_too_large",
            ),
        ] {
            let (got, text) = ack(hub.url.clone(), body).await;
            assert_eq!(got, status, "{text}");
            assert!(text.contains(code), "{text}");
        }
        let json = reqwest::Client::new()
            .post(format!("{}/v1/ack", hub.url))
            .json(&serde_json::json!({"client_id": "reader", "last_event_id": ids[0]}))
            .send()
            .await
            .unwrap();
        assert_eq!(json.status(), 415);
        assert_eq!(position(hub.url.clone()).await.0, 404);
        let (status, text) = ack(
            hub.url.clone(),
            format!("client_id=reader&last_event_id={}", ids[1]),
        )
        .await;
        assert_eq!(status, 204, "{text}");
        let (status, json) = position(hub.url.clone()).await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(json["last_event_id"], ids[1].as_str());
        assert_eq!(json["client_id"], "reader");
        assert!(json["acknowledged_at"].as_str().unwrap().ends_with('Z'));
        hub.terminate();
    }
    let hub = durable_hub(dir.path(), &[]).await;
    let (_, json) = position(hub.url.clone()).await;
    assert_eq!(json["last_event_id"], ids[1].as_str(), "{json}");
    let mut page_load = Hub::new(&hub.url)
        .connect(&Subscribe {
            client_id: Some("reader".into()),
            ..Subscribe::topics(["inbox"])
        })
        .await
        .unwrap();
    let next = common::next_event(&mut page_load).await;
    assert_eq!(
        (next.data.as_str(), &next.last_event_id),
        ("note 2", &ids[2])
    );
}

/// A flood of acknowledgements for ever new client ids keeps at most
/// `--max-acks` positions, in memory and in the file: the forgotten ones
/// are gone from the store too, so a restart with a larger bound does not
/// bring them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_acknowledgements_keeps_only_the_newest_positions() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let found = |url: String, client: String| async move {
        reqwest::get(format!("{url}/v1/clients/{client}/ack"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    {
        let mut hub = durable_hub(dir.path(), &["--max-acks", "100"]).await;
        let http = reqwest::Client::new();
        let url = hub.url.clone();
        futures_util::stream::iter(0..3000)
            .map(|i| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let response = http
                        .post(format!("{url}/v1/ack"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(format!("client_id=flood-{i}&last_event_id={i}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 204);
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
        // The last ones are kept; so many older ones cannot all be.
        assert_eq!(found(url.clone(), "flood-2999".into()).await, 200);
        let mut kept = 0;
        for i in (0..3000).step_by(30) {
            if found(url.clone(), format!("flood-{i}")).await == 200 {
                kept += 1;
            }
        }
        assert!(kept <= 5, "{kept} of 100 sampled old positions kept");
        hub.terminate();
    }
    let hub = durable_hub(dir.path(), &["--max-acks", "100000"]).await;
    assert_eq!(found(hub.url.clone(), "flood-2999".into()).await, 200);
    let mut kept = 0;
    for i in (0..3000).step_by(30) {
        if found(hub.url.clone(), format!("flood-{i}")).await == 200 {
            kept += 1;
        }
    }
    assert!(kept <= 5, "{kept} of 100 sampled old positions came back");
}

/// The demo's worker fails, at startup, the tasks a restart interrupted
/// (kill -9 mid-upload): their last state becomes failed and final. Another
/// application's `tasks/...` topics on the same hub are left alone, whatever
/// they hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fails_the_demo_s_interrupted_tasks_and_no_one_else_s() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--demo-pace", "200ms"];
    let mut hub = durable_hub(dir.path(), &args).await;
    let client = Hub::new(&hub.url);
    for (topic, data) in [
        ("tasks/app-1", r#"{"step":2}"#),
        ("tasks/app-2", r#"{"finished":false,"files":[]}"#),
        ("tasks/app-3", "not json"),
    ] {
        let mut state = Publish::new(topic, data);
        state.retain = true;
        state.event_type = Some("state".into());
        client.publish(&state).await.unwrap();
    }
    let upload = "--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.txt\"\r\n\r\n\
                  hello\r\n--x--\r\n";
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/demo/upload", hub.url))
        .header("content-type", "multipart/form-data; boundary=x")
        .body(upload)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let topic = answer["topic"].as_str().unwrap().to_owned();
    hub.child.kill().unwrap(); // SIGKILL, mid-task
    hub.child.wait().unwrap();
    let hub = durable_hub(dir.path(), &args).await;
    let client = Hub::new(&hub.url);
    let mut demo = client.connect(&Subscribe::topics([topic])).await.unwrap();
    let events = common::events_until_end(&mut demo).await;
    let last: serde_json::Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
    assert_eq!(
        (last["failed"].as_bool(), last["finished"].as_bool()),
        (Some(true), Some(true))
    );
    assert!(
        last["error"].as_str().unwrap().contains("restarted"),
        "{last}"
    );
    assert_eq!(events.last().unwrap().event_type, "complete");
    // (Failed together with the demo's task, if they were to be.)
    for (topic, data) in [
        ("tasks/app-1", r#"{"step":2}"#),
        ("tasks/app-2", r#"{"finished":false,"files":[]}"#),
        ("tasks/app-3", "not json"),
    ] {
        let mut stream = client.connect(&Subscribe::topics([topic])).await.unwrap();
        let first = common::next_event(&mut stream).await;
        assert_eq!(first.data, data, "{topic}");
        let published = client.publish(&Publish::new(topic, "still open")).await;
        assert!(published.is_ok(), "{topic} was closed: {published:?}");
        assert_eq!(common::next_event(&mut stream).await.data, "still open");
    }
}

/// I3 across a restart: a topic forgotten (its history evicted by the size
/// limit) and known again by a new event, then the hub killed and started
/// again. A client resuming from inside the forgotten part is told with a
/// `reset`: the topic's own mark of what was forgotten before it came back
/// is not stored, so after a restart what was forgotten before its oldest
/// event counts for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_a_topic_forgotten_and_known_again_still_resets_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let limit = ["--history-max-bytes", "64KiB"];
    let first = {
        let hub = durable_hub(dir.path(), &limit).await;
        let client = Hub::new(&hub.url);
        let first = client
            .publish(&Publish::new("legit/t", "one"))
            .await
            .unwrap();
        client
            .publish(&Publish::new("legit/t", "two"))
            .await
            .unwrap();
        for i in 0..40 {
            let filler = Publish::new(format!("other/{i}"), "x".repeat(4096));
            client.publish(&filler).await.unwrap();
        }
        client
            .publish(&Publish::new("legit/t", "three"))
            .await
            .unwrap();
        first
    };
    let hub = durable_hub(dir.path(), &limit).await;
    let mut resumed = common::RawStream::open(
        &format!("{}/.well-known/mercure?match=legit/t", hub.url),
        &[("last-event-id", &first)],
    )
    .await;
    let body = resumed
        .read_until("a reset, then the event after it", |b| {
            b.contains("data: three")
        })
        .await;
    assert!(body.contains("event: reset"), "{body}");
    assert!(!body.contains("data: two"), "{body}");
}
