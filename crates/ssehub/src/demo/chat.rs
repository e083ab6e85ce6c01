//! Answers streamed in fragments: `start` (the question), `fragment` events,
//! then a final `end` (data `stopped` when the user stopped it, after a
//! `failed` event when it failed). The scripted answerer is deterministic,
//! so an answer interrupted by a restart continues from the fragments
//! already stored: the page, resuming with Last-Event-ID, sees every
//! fragment exactly once. It answers in the question's language (English,
//! Chinese, Japanese, Spanish, French, German) and on its subject.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::DemoSettings;
use crate::hub::{Event, Hub, Publish, Selector};

/// An OpenAI-compatible endpoint to relay.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    /// Base URL such as `http://localhost:11434/v1`, or the full
    /// `.../chat/completions` URL.
    pub url: String,
    /// The model name sent upstream.
    pub model: String,
    /// Sent as `Authorization: Bearer`, when set.
    pub api_key: Option<String>,
}

/// The topic of an answer.
pub fn topic(id: &str) -> String {
    format!("chat/{id}")
}

#[derive(Serialize, Deserialize)]
struct Start {
    question: String,
    answerer: String,
}

/// Publishes the question and starts answering; returns the chat id.
pub async fn ask(
    hub: Arc<Hub>,
    settings: Arc<DemoSettings>,
    question: String,
    shutdown: CancellationToken,
    place: super::TaskPlace,
) -> Result<String, String> {
    let id = super::new_id();
    let answerer = if settings.llm.is_some() {
        "llm"
    } else {
        "scripted"
    };
    let start = Start {
        question: question.clone(),
        answerer: answerer.into(),
    };
    publish(
        &hub,
        &id,
        "start",
        serde_json::to_string(&start).expect("plain struct"),
        false,
    )
    .await?;
    let chat = id.clone();
    let stop = settings.answering(&id, &shutdown);
    tokio::spawn(async move {
        let _place = place;
        let result = match &settings.llm {
            Some(llm) => relay(&hub, &chat, &question, llm, &stop).await,
            None => answer(&hub, &chat, &question, 0, settings.pace, &stop).await,
        };
        finish(&hub, &settings, &chat, result, &shutdown).await;
    });
    Ok(id)
}

/// After an answer's task: what ends it for the page, unless the hub is
/// shutting down (a scripted answer then continues after the restart).
async fn finish(
    hub: &Hub,
    settings: &DemoSettings,
    chat: &str,
    result: Result<(), String>,
    shutdown: &CancellationToken,
) {
    let stopped = settings.answered(chat);
    if let Err(err) = result {
        tracing::warn!(chat = %chat, %err, "demo answer failed");
        let _ = publish(hub, chat, "failed", err, false).await;
        let _ = publish(hub, chat, "end", String::new(), true).await;
    } else if stopped && !shutdown.is_cancelled() {
        // (If it had just ended, the topic is finished and this is refused.)
        let _ = publish(hub, chat, "end", "stopped".into(), true).await;
    }
}

/// After a restart: continue every scripted answer that has a `start` but no
/// final `end`; close relayed ones, which cannot be resumed upstream. What is
/// unfinished is read from history, as a backend would read it (a remote one
/// by subscribing to `chat/{id}` from `earliest`).
pub fn resume_unfinished(
    hub: &Arc<Hub>,
    settings: &Arc<DemoSettings>,
    shutdown: &CancellationToken,
) {
    let every_chat = Selector::parse("chat/{id}").expect("a valid template");
    let mut answers: BTreeMap<String, Vec<Arc<Event>>> = BTreeMap::new();
    let history = hub.history(&[every_chat]).unwrap_or_else(|err| {
        tracing::warn!(%err, "cannot read the chats' history: none is continued");
        Vec::new()
    });
    for event in history {
        for topic in event.topics.iter().filter(|t| t.starts_with("chat/")) {
            answers
                .entry(topic.clone())
                .or_default()
                .push(event.clone());
        }
    }
    for (name, history) in answers {
        if history.iter().any(|e| e.is_final) {
            continue;
        }
        let Some(start) = history
            .iter()
            .find(|e| e.event_type.as_deref() == Some("start"))
            .and_then(|e| serde_json::from_str::<Start>(&e.data).ok())
        else {
            continue;
        };
        let done = history
            .iter()
            .filter(|e| e.event_type.as_deref() == Some("fragment"))
            .count();
        let id = name.trim_start_matches("chat/").to_owned();
        let (hub, settings, shutdown) = (hub.clone(), settings.clone(), shutdown.clone());
        tracing::info!(chat = %id, fragments = done, "continuing an interrupted answer");
        let stop = settings.answering(&id, &shutdown);
        tokio::spawn(async move {
            let result = if start.answerer == "scripted" {
                answer(&hub, &id, &start.question, done, settings.pace, &stop).await
            } else {
                Err("the hub restarted while the model was answering; ask again".into())
            };
            finish(&hub, &settings, &id, result, &shutdown).await;
        });
    }
}

/// The scripted answer, in fragments: words (with their following space),
/// and at most four characters of text that has no spaces (such as Chinese).
pub fn scripted_fragments(question: &str) -> Vec<String> {
    let text = super::script::answer(question.trim());
    let mut fragments = Vec::new();
    for word in text.split_inclusive([' ', '\n']) {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() <= 8 || chars.iter().any(char::is_ascii_alphabetic) {
            fragments.push(word.to_owned());
        } else {
            fragments.extend(chars.chunks(4).map(|c| c.iter().collect::<String>()));
        }
    }
    fragments
}

async fn answer(
    hub: &Hub,
    id: &str,
    question: &str,
    from: usize,
    pace: Duration,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    for fragment in scripted_fragments(question).into_iter().skip(from) {
        tokio::select! {
            _ = tokio::time::sleep(pace) => {}
            // Stop between fragments; the next start continues from here.
            _ = shutdown.cancelled() => return Ok(()),
        }
        publish(hub, id, "fragment", fragment, false).await?;
    }
    publish(hub, id, "end", String::new(), true).await
}

#[derive(Serialize)]
struct CompletionRequest<'a> {
    model: &'a str,
    stream: bool,
    messages: [Message<'a>; 1],
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
}

/// Streams a model's tokens from an OpenAI-compatible `chat/completions`
/// endpoint, one `fragment` per non-empty delta.
async fn relay(
    hub: &Hub,
    id: &str,
    question: &str,
    llm: &LlmSettings,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let url = if llm.url.trim_end_matches('/').ends_with("/chat/completions") {
        llm.url.clone()
    } else {
        format!("{}/chat/completions", llm.url.trim_end_matches('/'))
    };
    let body = CompletionRequest {
        model: &llm.model,
        stream: true,
        messages: [Message {
            role: "user",
            content: question,
        }],
    };
    let mut request = reqwest::Client::new()
        .post(&url)
        .header("accept", "text/event-stream")
        .json(&body);
    if let Some(key) = &llm.api_key {
        request = request.bearer_auth(key);
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| format!("the model did not answer: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(format!(
            "the model answered {status}: {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    let mut parser = sse_codec::Parser::new();
    loop {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk.map_err(|e| format!("the model's stream broke: {e}"))?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let Some(chunk) = chunk else { break };
        for item in parser.feed(&chunk) {
            let sse_codec::Item::Event(event) = item else {
                continue;
            };
            if event.data.trim() == "[DONE]" {
                return publish(hub, id, "end", String::new(), true).await;
            }
            let chunk: Chunk = serde_json::from_str(&event.data)
                .map_err(|e| format!("the model sent an unexpected chunk ({e})"))?;
            for content in chunk.choices.into_iter().filter_map(|c| c.delta.content) {
                if !content.is_empty() {
                    publish(hub, id, "fragment", content, false).await?;
                }
            }
        }
    }
    publish(hub, id, "end", String::new(), true).await
}

async fn publish(
    hub: &Hub,
    id: &str,
    event_type: &str,
    data: String,
    is_final: bool,
) -> Result<(), String> {
    hub.publish(Publish {
        topics: vec![topic(id)],
        data,
        event_type: Some(event_type.into()),
        is_final,
        ..Publish::default()
    })
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_rebuild_the_answer_and_split_unspaced_text() {
        let fragments = scripted_fragments("why SSE?");
        let text: String = fragments.concat();
        assert!(text.starts_with("You asked: “why SSE?”\n"), "{text}");
        let chinese: String = scripted_fragments("为什么断线后不会丢消息？").concat();
        assert!(chinese.contains("不会丢失"));
        assert!(
            fragments.iter().all(|f| f.chars().count() <= 16),
            "{fragments:?}"
        );
        assert!(fragments.len() > 40);
        // Deterministic, which is what resuming after a restart relies on.
        assert_eq!(fragments, scripted_fragments("why SSE?"));
    }
}
