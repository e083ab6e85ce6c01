//! The demo backend over HTTP: the chat relay against a fake
//! OpenAI-compatible upstream, the scripted answer, and the upload task.

mod common;

use std::time::Duration;

use axum::response::IntoResponse;
use common::{PATIENCE, start};
use ssehub_client::Subscribe;

/// A stand-in for `/v1/chat/completions` with `stream: true`: it streams the
/// reply in chunks (split across writes, as real servers do), then `[DONE]`.
async fn fake_model(body: axum::Json<serde_json::Value>) -> axum::response::Response {
    assert_eq!(body["stream"], true);
    assert_eq!(body["model"], "test-model");
    let question = body["messages"][0]["content"].as_str().unwrap().to_owned();
    let tokens = vec![
        "Hello".to_owned(),
        ", ".into(),
        "世界".into(),
        " 🌍".into(),
        "\nline two".into(),
        format!(" ({question})"),
    ];
    let mut frames: Vec<String> =
        vec![r#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#.to_owned() + "\n\n"];
    for token in tokens {
        let chunk = serde_json::json!({"choices": [{"delta": {"content": token}}]});
        frames.push(format!("data: {chunk}\n\n"));
    }
    frames.push("data: [DONE]\n\n".into());
    // Split every frame in two writes, to exercise the incremental parser.
    let pieces: Vec<Result<String, std::io::Error>> = frames
        .into_iter()
        .flat_map(|f| {
            let cut = f.len() / 2;
            let cut = (cut..f.len()).find(|&i| f.is_char_boundary(i)).unwrap();
            [Ok(f[..cut].to_owned()), Ok(f[cut..].to_owned())]
        })
        .collect();
    let stream = futures_util::stream::iter(pieces).then(|piece| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        piece
    });
    (
        [("content-type", "text/event-stream")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

use futures_util::StreamExt;

async fn ask(hub: &common::TestHub, question: &str) -> String {
    let response = hub
        .http
        .post(format!("{}/demo/chat", hub.url))
        .json(&serde_json::json!({ "question": question }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    body["topic"].as_str().unwrap().to_owned()
}

async fn whole_topic(hub: &common::TestHub, topic: &str) -> Vec<(String, String)> {
    let mut stream = hub
        .client
        .connect(&Subscribe {
            last_event_id: Some("earliest".into()),
            ..Subscribe::topics([topic])
        })
        .await
        .unwrap();
    common::events_until_end(&mut stream)
        .await
        .into_iter()
        .map(|e| (e.event_type, e.data))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_demo_relays_a_streaming_openai_compatible_model() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}/v1", upstream.local_addr().unwrap());
    tokio::spawn(async move {
        let app =
            axum::Router::new().route("/v1/chat/completions", axum::routing::post(fake_model));
        axum::serve(upstream, app).await.unwrap();
    });
    let hub = start(|c| {
        c.llm_url = Some(upstream_url);
        c.llm_model = "test-model".into();
    })
    .await;
    let topic = ask(&hub, "q?").await;
    let events = tokio::time::timeout(PATIENCE, whole_topic(&hub, &topic))
        .await
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(&kinds[kinds.len() - 2..], ["end", "complete"]);
    let fragments: Vec<&str> = events
        .iter()
        .filter(|(t, _)| t == "fragment")
        .map(|(_, d)| d.as_str())
        .collect();
    assert_eq!(
        fragments,
        ["Hello", ", ", "世界", " 🌍", "\nline two", " (q?)"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_model_ends_the_answer_with_a_failed_event() {
    let hub = start(|c| c.llm_url = Some("http://127.0.0.1:9/v1".into())).await;
    let topic = ask(&hub, "anyone there?").await;
    let events = tokio::time::timeout(PATIENCE, whole_topic(&hub, &topic))
        .await
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(kinds, ["start", "failed", "end", "complete"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_answer_ends_as_stopped_and_only_a_running_one_can_be_stopped() {
    let hub = start(|c| c.demo_pace = Duration::from_millis(50)).await;
    let topic = ask(&hub, "why?").await;
    let id = topic.trim_start_matches("chat/");
    let path = format!("/demo/chat/{id}/stop");
    let stop = || hub.post(&path, "text/plain", "");
    let (status, body) = stop().await;
    assert_eq!(status, 204, "{body}");
    let events = tokio::time::timeout(PATIENCE, whole_topic(&hub, &topic))
        .await
        .unwrap();
    let all = ssehub::demo::chat::scripted_fragments("why?").len();
    let fragments = events.iter().filter(|(t, _)| t == "fragment").count();
    assert!(
        fragments < all,
        "{fragments} of {all} fragments: not stopped"
    );
    let (kind, data) = &events[events.len() - 2];
    assert_eq!((kind.as_str(), data.as_str()), ("end", "stopped"));
    let (status, body) = stop().await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("answer_not_running"), "{body}");
    let (status, _) = hub.post("/demo/chat/nope/stop", "text/plain", "").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripted_answer_streams_start_fragments_end() {
    let hub = start(|c| c.demo_pace = Duration::from_millis(1)).await;
    let topic = ask(&hub, "why?").await;
    let events = tokio::time::timeout(PATIENCE, whole_topic(&hub, &topic))
        .await
        .unwrap();
    let text: String = events
        .iter()
        .filter(|(t, _)| t == "fragment")
        .map(|(_, d)| d.as_str())
        .collect();
    assert_eq!(
        text,
        ssehub::demo::chat::scripted_fragments("why?").concat()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_endpoints_refuse_bad_input_and_can_be_turned_off() {
    let hub = start(|_| {}).await;
    let (status, body) = hub
        .post("/demo/chat", "application/json", r#"{"question":"   "}"#)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_question"));
    let (status, body) = hub
        .post(
            "/demo/upload",
            "multipart/form-data; boundary=x",
            "--x--\r\n",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no_files"), "{body}");

    let off = start(|c| c.demos = Some(false)).await;
    let (status, body) = off
        .post("/demo/chat", "application/json", r#"{"question":"hi"}"#)
        .await;
    assert_eq!(status, 404, "{body}");
    // The pages are still served: they are the hub's front door.
    assert_eq!(
        reqwest::get(format!("{}/ssehub.js", off.url))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The demo needs no token, so it is off unless asked for (or `--dev`), and
/// bounded when on: at most `MAX_TASKS` tasks at once, uploads of 8 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_are_off_in_production_and_bounded_when_on() {
    let production = start(|c| c.dev = false).await;
    let (status, body) = production
        .post("/demo/chat", "application/json", r#"{"question":"hi"}"#)
        .await;
    assert_eq!(status, 404, "{body}");
    let asked = start(|c| {
        c.dev = false;
        c.demos = Some(true);
    })
    .await;
    let (status, body) = asked
        .post("/demo/chat", "application/json", r#"{"question":"hi"}"#)
        .await;
    assert_eq!(status, 202, "{body}");

    // Answers that take an hour hold their places.
    let busy = start(|c| c.demo_pace = Duration::from_secs(3600)).await;
    for i in 0..ssehub::demo::MAX_TASKS {
        let (status, body) = busy
            .post("/demo/chat", "application/json", r#"{"question":"slow"}"#)
            .await;
        assert_eq!(status, 202, "answer {i}: {body}");
    }
    let response = busy
        .http
        .post(format!("{}/demo/chat", busy.url))
        .header("content-type", "application/json")
        .body(r#"{"question":"one too many"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "5");
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["error"], "demo_busy");
    let big = format!(
        "--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.bin\"\r\n\r\n{}\r\n--x--\r\n",
        "b".repeat(9 << 20)
    );
    let (status, body) = busy
        .post("/demo/upload", "multipart/form-data; boundary=x", big)
        .await;
    assert_eq!(status, 413, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert!(json["error"].is_string(), "{json}");
}
