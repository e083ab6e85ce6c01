//! I5 (a slow subscriber never delays others; its memory is bounded) and I6
//! (no leaks after clients go away).

mod common;

use std::time::Duration;

use common::{PATIENCE, next_event, raw_subscribe, spawn_hub, start, wait_for_stats};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i5_a_subscriber_that_never_reads_does_not_delay_100_others_and_is_dropped() {
    // A queue of 64 events of 16 KiB. The readers share two threads with the
    // hub, the publisher and the other tests of this file, so the publisher
    // waits for them every 16 events: a reader that keeps up is never that
    // far behind (unpaced, one sometimes was, and was rightly dropped as
    // slow). The stalled reader still fills its queue long before the 400
    // events are out, and waiting for it would time the rounds out.
    let hub = start(|c| {
        c.queue_size = 64;
        c.history_size = 10;
    })
    .await;
    // Never reads, with a tiny receive buffer so the hub's writes block soon.
    let mut stalled = raw_subscribe(hub.server.addr, "match=fast", Some(4096)).await;
    let mut readers = Vec::new();
    for _ in 0..100 {
        readers.push(hub.connect(&["fast"], None).await);
    }
    hub.wait_for_stat("connections", 101).await;

    const EVENTS: usize = 400;
    const ROUND: usize = 16;
    let payload = "x".repeat(16 * 1024);
    // Every fast reader gets every event while the stalled one holds still.
    let rounds = async {
        for round in (0..EVENTS).step_by(ROUND) {
            let publishing = async {
                for i in round..round + ROUND {
                    hub.publish("fast", &format!("{i}:{payload}")).await;
                }
            };
            let reading =
                futures_util::future::join_all(readers.iter_mut().map(|reader| async move {
                    for i in round..round + ROUND {
                        let event = next_event(reader).await;
                        assert!(
                            event.data.starts_with(&format!("{i}:")),
                            "reader got {}",
                            &event.data[..8]
                        );
                    }
                }));
            futures_util::future::join(publishing, reading).await;
        }
    };
    tokio::time::timeout(PATIENCE * 3, rounds)
        .await
        .expect("fast readers were delayed");

    let stats = hub.stats().await;
    assert_eq!(stats["dropped_slow"], 1, "{stats}");
    hub.wait_for_stat("connections", 100).await;
    // The hub closed the stalled connection: reading drains what the kernel
    // held, then ends.
    let mut sink = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match stalled.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled connection was not closed");
}

/// The hub runs as its own process here so its memory can be read alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i5_memory_held_for_a_stalled_subscriber_is_bounded() {
    let hub = spawn_hub(&["--queue-size", "16", "--history-size", "10"]).await;
    let _stalled = raw_subscribe(hub.addr, "match=m", Some(4096)).await;
    let client = ssehub_client::Hub::new(&hub.url);
    let mut reader = client
        .connect(&ssehub_client::Subscribe::topics(["m"]))
        .await
        .unwrap();
    let payload = "z".repeat(16 * 1024);
    // Warm up allocator and buffers before the baseline.
    for i in 0..50 {
        client
            .publish(&ssehub_client::Publish::new("m", format!("{i}:{payload}")))
            .await
            .unwrap();
        next_event(&mut reader).await;
    }
    let before = hub.rss_bytes();
    // 2,000 x 16 KiB = 32 MiB pass the stalled subscriber.
    for i in 0..2000 {
        client
            .publish(&ssehub_client::Publish::new("m", format!("{i}:{payload}")))
            .await
            .unwrap();
        next_event(&mut reader).await;
    }
    let growth = hub.rss_bytes().saturating_sub(before);
    assert!(growth < 8 << 20, "hub memory grew by {growth} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i5_a_dropped_slow_subscriber_resumes_from_history() {
    let hub = start(|c| c.queue_size = 4).await;
    let mut stalled = raw_subscribe(hub.server.addr, "match=r", Some(4096)).await;
    let payload = "y".repeat(32 * 1024);
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(hub.publish("r", &format!("{i}:{payload}")).await);
        if hub.stats().await["dropped_slow"] == 1 {
            break;
        }
    }
    assert_eq!(hub.stats().await["dropped_slow"], 1);
    // Its writer, blocked on a socket that does not drain, lets go of it.
    hub.wait_for_stat("connections", 0).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, stalled.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the stalled connection is closed");
    // It returns with the id of the first event and gets all the rest.
    let mut back = hub.connect(&["r"], Some(&ids[0])).await;
    for (i, id) in ids.iter().enumerate().skip(1) {
        let event = next_event(&mut back).await;
        assert_eq!(&event.last_event_id, id);
        assert!(event.data.starts_with(&format!("{i}:")));
    }
}

/// The hub runs as its own process so the runtime's task count is the hub's
/// alone, and the test's clients keep no pooled connections: every task
/// left at the end is one the hub failed to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_counts_return_to_zero_after_1000_connect_disconnect_cycles() {
    let data_dir = tempfile::tempdir().unwrap();
    let dir = data_dir.path().display().to_string();
    let store: &[&str] = match std::env::var("SSEHUB_TEST_STORE").as_deref() {
        Ok("durable") => &["--store", "durable", "--data-dir", &dir],
        _ => &[],
    };
    let hub = spawn_hub(store).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let client = ssehub_client::Hub::new(&hub.url).with_http_client(http.clone());
    // Stats once `field` is at most `at_most`.
    let stats_with = |field: &'static str, at_most: u64| {
        let wanted = format!("{field} at most {at_most}");
        let (http, url) = (&http, &hub.url);
        async move {
            wait_for_stats(http, url, &wanted, |s| {
                s[field].as_u64().unwrap() <= at_most
            })
            .await
        }
    };
    let publish = |topic: &'static str, data: String| {
        let client = client.clone();
        async move {
            client
                .publish(&ssehub_client::Publish::new(topic, data))
                .await
                .expect("publish")
        }
    };
    publish("warm-up", String::new()).await;
    // The hub's own tasks, plus the connection asking; a connection the
    // client just closed may still be winding down, so take the lowest.
    let mut baseline = u64::MAX;
    for _ in 0..5 {
        let now = stats_with("tasks", u64::MAX).await;
        baseline = baseline.min(now["tasks"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = hub.addr;
    for batch in 0..20 {
        let cycles = (0..50).map(|i| async move {
            let query = match i % 3 {
                0 => format!("match=t{i}&match=shared"),
                1 => format!("topic=books/{{id}}&client_id=c{batch}-{i}"),
                _ => "match=shared&lastEventID=earliest".to_owned(),
            };
            let mut stream = raw_subscribe(addr, &query, None).await;
            let mut first = [0u8; 16];
            let _ = stream.read(&mut first).await.unwrap();
            // Dropped here: the client goes away without a word.
        });
        futures_util::future::join_all(cycles).await;
        publish("shared", format!("batch {batch}")).await;
    }
    let stats = stats_with("connections", 0).await;
    assert_eq!(stats["subscriptions"], 0, "{stats}");
    assert_eq!(stats["clients"], 0, "{stats}");
    // Topics named only by departed subscribers are gone; "shared" and
    // "warm-up" have history.
    assert_eq!(stats["topics"], 2, "{stats}");
    // Connection tasks end too.
    stats_with("tasks", baseline).await;
}
