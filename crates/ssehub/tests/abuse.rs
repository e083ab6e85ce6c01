//! The edge is hostile: each test runs an attack in a bounded form and
//! checks that the hub stays responsive (a health check and a legitimate
//! publish-to-subscriber round trip complete while it runs) and that the
//! attack gets the documented answer.

mod common;

use common::{ChildHub, PATIENCE, next_event, spawn_hub};
use ssehub_client::{Publish, Subscribe};

/// The hub under attack, in its own process: a hub frozen by an attack must
/// not freeze the test's own clock too.
struct Target {
    hub: ChildHub,
    client: ssehub_client::Hub,
    http: reqwest::Client,
}

impl Target {
    async fn start(args: &[&str]) -> Target {
        let hub = spawn_hub(args).await;
        Target {
            client: ssehub_client::Hub::new(&hub.url),
            http: reqwest::Client::new(),
            hub,
        }
    }

    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = tokio::time::timeout(
            PATIENCE,
            self.http.get(format!("{}{path}", self.hub.url)).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("GET {path} answered in time"))
        .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    async fn publish(&self, topic: &str, data: &str) {
        tokio::time::timeout(PATIENCE, self.client.publish(&Publish::new(topic, data)))
            .await
            .expect("a publish in time")
            .expect("publish");
    }

    async fn wait_for_connections(&self, count: u64) {
        common::wait_for_stats(&self.http, &self.hub.url, "connections", |s| {
            s["connections"] == count
        })
        .await;
    }

    /// A health check and a legitimate round trip, each within [`PATIENCE`].
    async fn assert_responsive(&self, round: usize) {
        assert_eq!(self.get("/healthz").await.0, 200, "round {round}");
        let topic = format!("legit/{round}");
        let mut reader = tokio::time::timeout(
            PATIENCE,
            self.client.connect(&Subscribe::topics([topic.as_str()])),
        )
        .await
        .expect("a subscription in time")
        .expect("subscribe");
        self.publish(&topic, "still here").await;
        assert_eq!(next_event(&mut reader).await.data, "still here");
    }
}

/// Templates built to make a backtracking matcher exponential
/// (`{+a}x{+b}x...xQ`) against long topics of `x`: subscribing while the
/// topics exist, and publishing to them while such subscribers listen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_template_selectors_do_not_freeze_the_hub() {
    let target = Target::start(&["--max-topic-length", "4096"]).await;
    let hostile: String = (0..14).map(|i| format!("{{+v{i}}}x")).collect::<String>() + "Q";
    for len in [50, 1000, 4000] {
        target.publish(&"x".repeat(len), "long").await;
    }
    let query = format!("match={}", urlencode(&hostile));
    let mut attackers = Vec::new();
    for _ in 0..20 {
        attackers.push(common::raw_subscribe(target.hub.addr, &query, None).await);
    }
    target.wait_for_connections(20).await;
    target.assert_responsive(0).await;
    for round in 1..=3 {
        for len in [60, 1500, 4000] {
            target.publish(&"x".repeat(len - round), "longer").await;
        }
        target.assert_responsive(round).await;
    }
    // A template with more expressions than a match may cost is refused.
    let too_many: String = (0..17).map(|i| format!("{{v{i}}}/")).collect();
    let (status, json) = target
        .get(&format!(
            "/.well-known/mercure?match={}",
            urlencode(&too_many)
        ))
        .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_selector"))
    );
    drop(attackers);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
