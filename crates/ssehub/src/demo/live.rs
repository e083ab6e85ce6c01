//! Live data for the live page: a clock, prices, log lines and the hub's own
//! figures. Each is published only while someone is subscribed to it, so an
//! idle hub writes nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, Publish};

/// Topics the live page listens to.
pub const CLOCK: &str = "live/clock";
/// Prices, a random walk.
pub const PRICES: &str = "live/prices";
/// Log lines.
pub const LOGS: &str = "live/logs";
/// The hub's figures.
pub const HUB: &str = "live/hub";

/// Ticks every 250 ms until shutdown.
pub async fn run(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut prices = [("BTC", 64_000.0_f64), ("ETH", 3_100.0), ("SSE", 42.0)];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    // Published count at the previous hub-stats tick; `None` while nobody
    // listens, so an idle hub does not take the stats (a pass over every
    // subscriber under the hub's lock) every second.
    let mut last_published: Option<u64> = None;
    // The number of the last log line.
    let mut order: u128 = 0;
    for n in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if n % 4 == 0 && listened(&hub, CLOCK) {
            let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
            emit(&hub, CLOCK, "clock", now, true).await;
        }
        if n % 2 == 0 && listened(&hub, PRICES) {
            for (_, price) in prices.iter_mut() {
                // xorshift: a random walk without a random-number crate.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let step = (seed % 2001) as f64 / 1000.0 - 1.0;
                *price *= 1.0 + step * 0.002;
            }
            let data = serde_json::json!(prices
                .iter()
                .map(|(symbol, price)| serde_json::json!({"symbol": symbol, "price": (price * 100.0).round() / 100.0}))
                .collect::<Vec<_>>());
            emit(&hub, PRICES, "prices", data.to_string(), true).await;
        }
        if n % 3 == 0 && listened(&hub, LOGS) {
            let levels = ["INFO", "INFO", "INFO", "WARN", "DEBUG"];
            // Numbered by the time (one every 750 ms), not from the start of
            // this run: after a restart, lines still go on in order.
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() / 750);
            order = now.max(order + 1);
            let line = format!(
                "{} order #{order} processed in {} ms",
                levels[(order % 5) as usize],
                5 + (order * 7919) % 120
            );
            emit(&hub, LOGS, "log", line, false).await;
        }
        if n % 4 == 0 {
            if !listened(&hub, HUB) {
                last_published = None;
            } else {
                let stats = hub.stats();
                let per_second =
                    last_published.map_or(0, |last| stats.published.saturating_sub(last));
                last_published = Some(stats.published);
                let data = serde_json::json!({
                    "connections": stats.connections,
                    "topics": stats.topics,
                    "published": stats.published,
                    "delivered": stats.delivered,
                    "events_per_second": per_second,
                });
                emit(&hub, HUB, "stats", data.to_string(), true).await;
            }
        }
    }
}

/// Whether someone listens to `topic`, as a backend embedding the hub asks.
fn listened(hub: &Hub, topic: &str) -> bool {
    hub.subscriber_count(topic) > 0
}

async fn emit(hub: &Hub, topic: &str, event_type: &str, data: String, retain: bool) {
    let result = hub
        .publish(Publish {
            topics: vec![topic.into()],
            data,
            event_type: Some(event_type.into()),
            retain,
            ..Publish::default()
        })
        .await;
    if let Err(err) = result {
        tracing::debug!(topic, %err, "live demo publish failed");
    }
}
