//! A Mercure publish to a durable stream's topic (its URL on the hub) is an
//! append to the stream: the stream's readers and the topic's subscribers
//! see it alike, under the offset the stream gives it.

use axum::http::StatusCode;

use super::{ApiError, AppState, durable_streams};
use crate::hub::Publish;
use crate::streams::{Append, AppendKind, Info, content, topic};

/// The stream `publish` goes to (its name and what it is), if one of its
/// topics is a stream's URL.
/// Those URLs are the streams': a publish to one where no stream is (never
/// created, or deleted) is refused, not taken as a plain event the next
/// stream there would drop.
pub(super) async fn target(
    app: &AppState,
    publish: &Publish,
) -> Result<Option<(String, Info)>, ApiError> {
    let Some(streams) = app.streams.as_ref() else {
        return Ok(None);
    };
    let base = topic::of(&app.hub_url, &app.config.streams_prefix, "");
    for candidate in &publish.topics {
        let Some(name) = candidate.strip_prefix(&base) else {
            continue;
        };
        if name.is_empty()
            || topic::of(&app.hub_url, &app.config.streams_prefix, name) != *candidate
        {
            continue;
        }
        return match streams.info(name).await {
            Ok(info) => Ok(Some((name.to_owned(), info))),
            Err(error) => Err(durable_streams::refusal(error)),
        };
    }
    Ok(None)
}

/// Appends a publish to the stream `name` (`Stream-Closed` when final);
/// answers the event's id, as a publish does.
pub(super) async fn append(
    app: &AppState,
    (name, info): (String, Info),
    publish: Publish,
) -> Result<String, ApiError> {
    let streams = app.streams.as_ref().expect("a stream was found");
    let refuse = |what: &str| {
        ApiError::bad_request(
            "not_a_stream_field",
            format!(
                "the topic is the durable stream {name:?}: {what} (the stream gives each event \
                 its offset as id, and keeps data only)"
            ),
        )
    };
    if publish.topics.len() > 1 {
        return Err(refuse("publish to it alone"));
    }
    if publish.id.is_some() {
        return Err(refuse("an event on it takes no id"));
    }
    if publish.event_type.is_some() || publish.retry.is_some() || publish.retain {
        return Err(refuse("an event on it has no type, retry or retain"));
    }
    if !content::is_text(&info.content_type) {
        return Err(ApiError::bad_request(
            "binary_stream",
            format!(
                "the durable stream {name:?} holds {}: append its bytes with a POST to its URL \
                 (a Mercure event's data is text)",
                info.content_type
            ),
        ));
    }
    if publish.data.is_empty() && !publish.is_final {
        return Err(ApiError::bad_request(
            "empty_data",
            "an event on a durable stream's topic needs data (or is final)",
        ));
    }
    let appended = streams
        .append(
            &name,
            Append {
                content_type: Some(info.content_type.clone()),
                body: publish.data.into(),
                close: publish.is_final,
                ..Append::default()
            },
        )
        .await
        .map_err(|error| match error {
            crate::streams::StreamError::Closed { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "topic_finished",
                format!("the durable stream {name:?} is closed: its topic is finished"),
            ),
            other => durable_streams::refusal(other),
        })?;
    let adds_data = appended.kind != AppendKind::Closed;
    Ok(topic::event_id(info.id, appended.tail, adds_data))
}
