//! The edge is hostile: each test runs an attack in a bounded form and
//! checks that the hub stays responsive (a health check and a legitimate
//! publish-to-subscriber round trip complete while it runs) and that the
//! attack gets the documented answer.

mod common;

use std::time::Duration;

use common::{ChildHub, PATIENCE, next_event, raw_subscribe, spawn_hub_with};
use ssehub_client::{Publish, Subscribe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The hub under attack, in its own process: a hub frozen by an attack must
/// not freeze the test's own clock too.
struct Target {
    hub: ChildHub,
    client: ssehub_client::Hub,
    http: reqwest::Client,
}

impl Target {
    async fn start(args: &[&str]) -> Target {
        Target::start_with(args, None).await
    }

    /// With the hub's open-files limit set to `open_files`.
    async fn start_with(args: &[&str], open_files: Option<u64>) -> Target {
        let hub = spawn_hub_with(args, open_files).await;
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
    let query = format!("topic={}", urlencode(&hostile));
    let mut attackers = Vec::new();
    for _ in 0..20 {
        attackers.push(common::raw_subscribe(target.hub.addr, &query, None).await);
    }
    target.wait_for_connections(20).await;
    target.assert_responsive(0).await;
    for round in 1..=3 {
        for len in [60, 1500, 4000] {
            target.publish(&"x".repeat(len - round), "longer").await;
            // Ending as the template does, the topic passes the quick
            // checks and gets the whole matcher.
            target
                .publish(&format!("{}Q", "x".repeat(len - round - 1)), "matched")
                .await;
        }
        target.assert_responsive(round).await;
    }
    // A template with more expressions than a match may cost is refused.
    let too_many: String = (0..17).map(|i| format!("{{v{i}}}/")).collect();
    let (status, json) = target
        .get(&format!(
            "/.well-known/mercure?topic={}",
            urlencode(&too_many)
        ))
        .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_selector"))
    );
    drop(attackers);
}

/// The opening bytes of an anonymous subscription, up to its position
/// marker (`id: N` and a blank line, last of what the hub sends first).
async fn opening(target: &Target, query: &str, last_event_id: &str) -> String {
    let mut stream = common::RawStream::open(
        &format!("{}/.well-known/mercure?{query}", target.hub.url),
        &[("last-event-id", last_event_id)],
    )
    .await;
    stream
        .read_until("the position marker", |b| {
            b.lines().any(|l| {
                l.strip_prefix("id: ")
                    .and_then(|id| ssehub::hub::ids::EventIds::Sequential.seq_of(id))
                    .is_some()
            }) && b.ends_with("\n\n")
        })
        .await
        .to_owned()
}

/// Private updates stay private around resets: a `reset` names no topic
/// known only from private events, and the id of a private event is, to a
/// subscriber who may not see it, as unknown as an id never used (so no one
/// can probe which private ids exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_reveal_no_private_topic_or_id() {
    let target = Target::start(&[]).await;
    target.publish("news", "public").await;
    let mut secret = Publish::new("payroll/ceo", "salary");
    secret.private = true;
    secret.id = Some("secret-1".into());
    target.client.publish(&secret).await.unwrap();
    let never = opening(&target, "match=*", "no-such-id").await;
    let private = opening(&target, "match=*", "secret-1").await;
    for opening in [&never, &private] {
        assert!(opening.contains("event: reset"), "{opening}");
        assert!(opening.contains("unknown_last_event_id"), "{opening}");
        assert!(opening.contains("\"news\""), "{opening}");
        assert!(!opening.contains("payroll"), "{opening}");
        assert!(!opening.contains("salary"), "{opening}");
    }
    // The same answer but for the id echoed back.
    assert_eq!(
        never.replacen("id: no-such-id\n", "", 1),
        private.replacen("id: secret-1\n", "", 1)
    );
    target.assert_responsive(0).await;
}

/// Sends a request head (and the start of its body) on a fresh connection,
/// then trickles a byte every `trickle` (or nothing), and returns what the
/// hub answered once it closed the connection.
async fn held_body(addr: std::net::SocketAddr, head: String, trickle: Option<Duration>) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut buf = [0u8; 4096];
    loop {
        let read = match trickle {
            Some(every) => match tokio::time::timeout(every, socket.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => {
                    // Still open: one more byte of body.
                    let _ = socket.write_all(b"x").await;
                    assert!(tokio::time::Instant::now() < deadline, "still held");
                    continue;
                }
            },
            None => tokio::time::timeout_at(deadline, socket.read(&mut buf))
                .await
                .expect("the hub gave up on the body in time"),
        };
        match read {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&answer).into_owned(),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

/// Requests that declare a body and then send it slowly or not at all:
/// each gets `408 request_timeout` with a JSON body once the body deadline
/// passes, and its connection is closed; nothing is published, and the hub
/// serves everyone else meanwhile. Publishes and the demo's chat (which
/// needs no token) alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_never_arrive_are_given_up_on() {
    let target = Target::start(&["--body-read-timeout", "1s"]).await;
    let publish = "POST /.well-known/mercure HTTP/1.1\r\nHost: hub\r\n\
        Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\n\r\ntopic=t&data=";
    let chat = "POST /demo/chat HTTP/1.1\r\nHost: hub\r\n\
        Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"question\": \"";
    let mut attacks = Vec::new();
    for i in 0..100 {
        let head = if i % 2 == 0 { publish } else { chat }.to_owned();
        let trickle = (i % 4 < 2).then_some(Duration::from_millis(200));
        attacks.push(tokio::spawn(held_body(target.hub.addr, head, trickle)));
    }
    target.assert_responsive(0).await;
    for attack in attacks {
        let answer = attack.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(json["error"], "request_timeout", "{json}");
    }
    let (_, stats) = target.get("/v1/stats").await;
    assert_eq!(
        stats["published"], 1,
        "only the legitimate publish: {stats}"
    );
    target.assert_responsive(1).await;
}

/// A reader too slow to read anything more is dropped with a reset, on
/// both transports, so the kernel frees what was queued for it at once
/// instead of holding full send buffers until it gives up on the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_slow_readers_are_reset() {
    let target = Target::start(&["--queue-size", "8", "--history-size", "100"]).await;
    // The replay alone stalls the writer; live events then fill the queue.
    publish_big_history(&target, "big").await;
    let mut stalled = Vec::new();
    for hyper in [false, true] {
        for _ in 0..6 {
            stalled.push(stalled_reader(&target, "match=big&lastEventID=earliest", hyper).await);
        }
    }
    target.wait_for_connections(12).await;
    for i in 0..12 {
        target.publish("big", &format!("live {i}")).await;
    }
    common::wait_for_stats(&target.http, &target.hub.url, "12 dropped", |s| {
        s["dropped_slow"] == 12 && s["connections"] == 0
    })
    .await;
    for (i, stream) in stalled.iter_mut().enumerate() {
        assert_reset(stream, &format!("reader {i}")).await;
    }
    target.assert_responsive(0).await;
}

/// Opens a subscription from a socket with a small receive buffer that
/// will never be read, on the direct path or (after a first request on the
/// same connection) on hyper's.
async fn stalled_reader(target: &Target, query: &str, hyper: bool) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(target.hub.addr).await.unwrap();
    let mut request = String::new();
    if hyper {
        request.push_str("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n");
    }
    request.push_str(&format!(
        "GET /.well-known/mercure?{query} HTTP/1.1\r\nHost: hub\r\n\r\n"
    ));
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Reads until the hub ends the connection, which must be a reset.
async fn assert_reset(stream: &mut tokio::net::TcpStream, what: &str) {
    let mut sink = vec![0u8; 64 * 1024];
    let end = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(err) => return Err(err.kind()),
            }
        }
    })
    .await
    .expect("the connection ended in time");
    assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset), "{what}");
}

/// History larger than a socket's send buffer grows to (4 MiB here): a
/// replay of it stalls the writer of a reader that does not read.
async fn publish_big_history(target: &Target, topic: &str) {
    let payload = "r".repeat(100 * 1024);
    for i in 0..50 {
        target.publish(topic, &format!("{i}:{payload}")).await;
    }
}

/// A stalled reader the hub ends — by an admin disconnect, by a newer
/// connection with its client id, because its topic finished, or at its
/// maximum lifetime — cannot deliver its last bytes; after
/// `--shutdown-timeout` its connection is reset, on both transports, and
/// it no longer counts against the limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_the_hub_ends_are_closed() {
    let target = Target::start(&["--history-size", "100", "--shutdown-timeout", "1s"]).await;
    publish_big_history(&target, "big").await;
    publish_big_history(&target, "ending").await;
    let mut stalled = Vec::new();
    for hyper in [false, true] {
        for kind in ["gone", "replaced", "done"] {
            let query = match kind {
                "done" => "match=ending&lastEventID=earliest".to_owned(),
                client => format!("match=big&client_id={client}{hyper}&lastEventID=earliest"),
            };
            stalled.push((kind, hyper, stalled_reader(&target, &query, hyper).await));
            target.wait_for_connections(stalled.len() as u64).await;
        }
    }
    for hyper in [false, true] {
        let url = format!("{}/v1/clients/gone{hyper}", target.hub.url);
        assert_eq!(target.http.delete(url).send().await.unwrap().status(), 204);
    }
    let mut replacements = Vec::new();
    for hyper in [false, true] {
        let options = Subscribe {
            client_id: Some(format!("replaced{hyper}")),
            ..Subscribe::topics(["elsewhere"])
        };
        replacements.push(target.client.connect(&options).await.unwrap());
    }
    let mut done = Publish::new("ending", "finished");
    done.is_final = true;
    target.client.publish(&done).await.unwrap();
    common::wait_for_stats(
        &target.http,
        &target.hub.url,
        "only the replacements",
        |s| s["connections"] == 2,
    )
    .await;
    for (kind, hyper, stream) in &mut stalled {
        assert_reset(stream, &format!("{kind} (hyper: {hyper})")).await;
    }
    drop(replacements);
    target.assert_responsive(0).await;

    let lifetimes = Target::start(&[
        "--history-size",
        "100",
        "--shutdown-timeout",
        "1s",
        "--max-lifetime",
        "1s",
    ])
    .await;
    publish_big_history(&lifetimes, "big").await;
    let mut direct = stalled_reader(&lifetimes, "match=big&lastEventID=earliest", false).await;
    let mut hyper = stalled_reader(&lifetimes, "match=big&lastEventID=earliest", true).await;
    common::wait_for_stats(&lifetimes.http, &lifetimes.hub.url, "lifetimes over", |s| {
        s["opened"] == 2 && s["connections"] == 0
    })
    .await;
    assert_reset(&mut direct, "lifetime (direct)").await;
    assert_reset(&mut hyper, "lifetime (hyper)").await;
}

/// Readers that replay all of history (`match=*`, `earliest`) and never
/// read hold no copy of it: the replay is taken in pieces as each socket
/// drains. Once they have taken nothing for `--shutdown-timeout` they are
/// reset, and what they held waiting is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_replays_of_all_history_hold_no_copy_of_it() {
    let target = Target::start(&["--history-size", "1000", "--shutdown-timeout", "2s"]).await;
    // 20 MiB of history.
    let payload = "h".repeat(100 * 1024);
    for i in 0..200 {
        target
            .publish(&format!("t/{}", i % 10), &format!("{i}:{payload}"))
            .await;
    }
    let before = target.hub.rss_bytes();
    let mut stalled = Vec::new();
    for i in 0..20 {
        stalled.push(stalled_reader(&target, "match=*&lastEventID=earliest", i % 2 == 1).await);
    }
    target.wait_for_connections(20).await;
    target.assert_responsive(0).await;
    // A copy each would be 400 MiB; pieces in flight are 64 KiB each.
    let growth = target.hub.rss_bytes().saturating_sub(before);
    eprintln!("RSS growth with 20 stalled replays: {} KiB", growth >> 10);
    assert!(growth < 64 << 20, "RSS grew by {} MiB", growth >> 20);
    common::wait_for_stats(
        &target.http,
        &target.hub.url,
        "stalled replays dropped",
        |s| s["connections"] == 0 && s["replay_backlog"] == 0 && s["dropped_slow"] == 20,
    )
    .await;
    for (i, stream) in stalled.iter_mut().enumerate() {
        assert_reset(stream, &format!("replay {i}")).await;
    }
    target.assert_responsive(1).await;
}

/// A reader that takes its replay slowly but steadily (64 KB/s, a slow
/// mobile link) is not mistaken for a stalled one, however large the send
/// buffer the kernel grew for it: it is still reading well past
/// `--shutdown-timeout`. (Before the hub limited unsent data per socket, it
/// took a piece only once megabytes had drained, and dropped such a reader.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_replay_reader_is_not_dropped() {
    let target = Target::start(&["--history-size", "2000", "--shutdown-timeout", "3s"]).await;
    // 8 MB of 4 KiB events: far more than it reads.
    let payload = "s".repeat(4096);
    for i in 0..2000 {
        target.publish("big", &format!("{i}:{payload}")).await;
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut stream = socket.connect(target.hub.addr).await.unwrap();
    stream
        .write_all(b"GET /.well-known/mercure?match=big&lastEventID=earliest HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut read = 0;
    // 8 KiB every 125 ms. (On loopback, whose segments are 64 KiB, the
    // reader's window reopens only once it has read that much: every
    // second here.)
    let mut buf = [0u8; 8192];
    while started.elapsed() < Duration::from_secs(8) {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("bytes in time")
            .expect("the connection is not reset");
        assert!(n > 0, "the hub closed the stream after {read} bytes");
        read += n;
        tokio::time::sleep(Duration::from_millis(125)).await;
    }
    let (_, stats) = target.get("/v1/stats").await;
    assert_eq!(stats["dropped_slow"], 0, "{stats}");
    assert_eq!(stats["connections"], 1, "{stats}");
}

/// Replays waiting across the hub are bounded: beyond `--max-replay`, a
/// subscription that would add to them is refused with a JSON 503 and a
/// `Retry-After`, while one with nothing to replay still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_beyond_the_hub_wide_bound_are_refused() {
    let target = Target::start(&["--max-replay", "10", "--shutdown-timeout", "30s"]).await;
    publish_big_history(&target, "big").await;
    let _stalled = stalled_reader(&target, "match=big&lastEventID=earliest", false).await;
    // Its socket holds a few MiB; the rest of its 5 MiB waits.
    common::wait_for_stats(&target.http, &target.hub.url, "a replay waiting", |s| {
        s["connections"] == 1 && s["replay_backlog"].as_u64() > Some(0)
    })
    .await;
    let url = format!(
        "{}/.well-known/mercure?match=big&lastEventID=earliest",
        target.hub.url
    );
    let refused = target.http.get(url).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let json: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(json["error"], "replay_busy");
    target.assert_responsive(0).await;
}

/// `match=*` subscriptions opened all at once, against many topics: they
/// register one at a time, and those that would wait more than 5 s for
/// their turn are refused with a JSON 503 and `Retry-After` (work for
/// clients that may be long gone is bounded). The hub stays responsive
/// throughout, and a wildcard subscription after the burst gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_wildcard_subscriptions_is_bounded() {
    let target = Target::start(&["--max-connections-per-address", "0"]).await;
    let long = "x".repeat(500);
    let publishers = (0..8).map(|p| {
        let client = target.client.clone();
        let long = long.clone();
        async move {
            for i in (p..16_000).step_by(8) {
                client
                    .publish(&Publish::new(format!("{long}/{i}"), "d"))
                    .await
                    .unwrap();
            }
        }
    });
    futures_util::future::join_all(publishers).await;
    // More than 5 s of registrations, in a debug build on any machine.
    let burst = (0..400).map(|_| async {
        let mut stream = tokio::net::TcpStream::connect(target.hub.addr)
            .await
            .unwrap();
        stream
            .write_all(b"GET /.well-known/mercure?match=* HTTP/1.1\r\nHost: hub\r\n\r\n")
            .await
            .unwrap();
        stream
    });
    let streams = futures_util::future::join_all(burst).await;
    target.assert_responsive(0).await;
    let mut refused = 0;
    for mut stream in streams {
        // The first bytes: a stream's head, or the whole refusal.
        let mut first = [0u8; 12];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut first))
            .await
            .expect("an answer in time")
            .unwrap();
        if first.starts_with(b"HTTP/1.1 503") {
            let answer = String::from_utf8_lossy(&first).into_owned() + &answer(&mut stream).await;
            assert_refused(&answer, "503", "subscribe_busy");
            assert!(
                answer.to_ascii_lowercase().contains("retry-after: 1"),
                "{answer}"
            );
            refused += 1;
        } else {
            assert!(first.starts_with(b"HTTP/1.1 200"), "{first:?}");
        }
    }
    assert!(refused > 0, "no registration waited 5 s");
    eprintln!("{refused} of 400 refused");
    target.assert_responsive(1).await;
    let after = target
        .http
        .get(format!("{}/.well-known/mercure?match=*", target.hub.url))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
}

/// A connection from `from` to the hub that has sent part of a request
/// head and nothing more.
async fn half_open(target: &Target, from: &str) -> tokio::net::TcpStream {
    let mut stream = connect_from(target, from).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    stream
}

/// A connection to the hub from the local address `from`.
async fn connect_from(target: &Target, from: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(target.hub.addr).await.unwrap()
}

/// Everything the hub sends on `stream` until it closes it.
async fn answer(stream: &mut tokio::net::TcpStream) -> String {
    let mut bytes = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut bytes))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Asserts a raw answer has `status` and the JSON error `code`.
fn assert_refused(answer: &str, status: &str, code: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{answer}"
    );
    let body = &answer[answer.find("\r\n\r\n").expect("a head") + 4..];
    let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(json["error"], code, "{answer}");
}

/// Half-open connections from one address count against the per-address
/// limit from accept: past it, each new one is answered `429` at once
/// (before anything is read) while other addresses are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_from_one_address_stop_at_its_limit() {
    let target = Target::start(&["--max-connections-per-address", "50"]).await;
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(half_open(&target, "127.0.0.2").await);
    }
    for _ in 0..5 {
        // Answered on accept, before it sends a byte.
        let mut refused = connect_from(&target, "127.0.0.2").await;
        let answer = answer(&mut refused).await;
        assert_refused(&answer, "429", "too_many_connections_from_address");
    }
    target.assert_responsive(0).await;
    drop(held);
    // Their places are free again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut again = connect_from(&target, "127.0.0.2").await;
        let request =
            again.write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n");
        let answer = match request.await {
            Ok(()) => answer(&mut again).await,
            Err(_) => String::new(),
        };
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Behind a trusted proxy, streams count by the address it forwards, and
/// the admin API shows that address; from any other peer the forwarding
/// headers are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_are_counted_by_forwarded_address() {
    let target = Target::start(&[
        "--max-connections-per-address",
        "2",
        "--trusted-proxies",
        "127.0.0.1",
    ])
    .await;
    let via = |from: &str, forwarded: &str, query: &str| {
        let http = reqwest::Client::builder()
            .local_address(Some(from.parse().unwrap()))
            .build()
            .unwrap();
        http.get(format!("{}/.well-known/mercure?{query}", target.hub.url))
            .header("x-forwarded-for", forwarded)
            .send()
    };
    // The proxy, 127.0.0.1, is not limited itself: five streams through it.
    let mut open = Vec::new();
    for (client, query) in [
        ("6.6.6.6, 198.51.100.1", "match=a&client_id=first"),
        ("198.51.100.1", "match=a"),
        ("198.51.100.2", "match=a"),
        ("198.51.100.2", "match=a"),
        ("198.51.100.3", "match=a"),
    ] {
        let response = via("127.0.0.1", client, query).await.unwrap();
        assert_eq!(response.status(), 200, "{client}");
        open.push(response);
    }
    let refused = via("127.0.0.1", "198.51.100.1", "match=a").await.unwrap();
    assert_eq!(refused.status(), 429);
    // A limit of connections: worth trying again soon (ssehub.js does).
    assert_eq!(refused.headers()["retry-after"], "5");
    let json: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(json["error"], "too_many_connections_from_address");
    // A Forwarded header the client wrote (which the proxy passed through)
    // does not replace the X-Forwarded-For the proxy set.
    let http = reqwest::Client::new();
    let spoofed = http
        .get(format!("{}/.well-known/mercure?match=a", target.hub.url))
        .header("forwarded", "for=10.9.9.9")
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 429);
    let (_, clients) = target.get("/v1/clients").await;
    assert_eq!(
        clients["clients"][0]["remote_addr"], "198.51.100.1",
        "{clients}"
    );
    // From a peer that is not trusted, its own address counts.
    for _ in 0..2 {
        open.push(via("127.0.0.2", "198.51.100.9", "match=a").await.unwrap());
    }
    let refused = via("127.0.0.2", "198.51.100.10", "match=a").await.unwrap();
    assert_eq!(refused.status(), 429);
    target.assert_responsive(0).await;
    // Entries that cannot be read (and requests with none) share the
    // proxy's own place.
    for junk in ["zzz", "unknown"] {
        open.push(via("127.0.0.1", junk, "match=a").await.unwrap());
    }
    let refused = via("127.0.0.1", "6.6.6.6, _hidden", "match=a")
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(target.get("/healthz").await.0, 200);
}

/// Near the open-files limit, streams stop a reserve short of it, so a
/// health check and a publish still get in; connections past the limit
/// itself get `503 at_capacity` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_cannot_take_the_last_connections() {
    // 256 files: 192 connections, of which streams may take 160.
    let target = Target::start_with(&["--max-lifetime", "0"], Some(256)).await;
    let mut streams = Vec::new();
    for _ in 0..160 {
        streams.push(raw_subscribe(target.hub.addr, "match=full", None).await);
    }
    target.wait_for_connections(160).await;
    let (status, json) = target.get("/.well-known/mercure?match=full").await;
    assert_eq!(
        (status, json["error"].as_str()),
        (429, Some("too_many_connections"))
    );
    assert_eq!(target.get("/healthz").await.0, 200);
    target.publish("full", "still publishing").await;
    // Past the limit itself, even a health check is answered at once.
    let mut held = Vec::new();
    let refused = loop {
        // A refused one is answered as soon as its request begins.
        let mut stream = half_open(&target, "127.0.0.3").await;
        let mut first = [0u8; 12];
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {
                break [&first[..n], &answer(&mut stream).await.into_bytes()].concat();
            }
            _ => held.push(stream),
        }
        assert!(held.len() <= 40, "no refusal after 40 more connections");
    };
    assert_refused(&String::from_utf8_lossy(&refused), "503", "at_capacity");
    drop(held);
    assert_eq!(target.get("/healthz").await.0, 200);
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
