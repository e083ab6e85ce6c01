//! Every error answer is JSON: `{"error": code, "message": text}`.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::hub::{PublishError, SelectorError, SubscribeError};

/// An error answer. `code` is stable and documented in docs/API.md; the
/// message is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Extra headers, such as `WWW-Authenticate` or `Retry-After`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to the answer.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> ApiError {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((name, value));
        }
        self
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The answer to a body that could not be read: `408 request_timeout`
    /// when it did not arrive in time (and the connection closes, as the
    /// rest of it may still come), else `400 invalid_body`.
    pub fn unreadable_body(error: &(dyn std::error::Error + 'static)) -> ApiError {
        if super::deadline::is_timeout(error) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("{error}"),
            )
            .with_header(header::CONNECTION, "close")
        } else {
            ApiError::bad_request(
                "invalid_body",
                format!("could not read the request body: {error}"),
            )
        }
    }
}

impl ApiError {
    /// The JSON body, the same whichever transport writes it.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.code, "message": self.message }).to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        // For the count and the log line of refusals (`rejections`).
        let refused = super::rejections::Refused(ApiError {
            headers: Vec::new(),
            ..self.clone()
        });
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        response.headers_mut().extend(self.headers);
        response.extensions_mut().insert(refused);
        response
    }
}

impl From<PublishError> for ApiError {
    fn from(err: PublishError) -> ApiError {
        let (status, code) = match &err {
            PublishError::MissingTopic => (StatusCode::BAD_REQUEST, "missing_topic"),
            // Mercure: limits on a publish's size answer 413.
            PublishError::TooManyTopics { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_many_topics")
            }
            PublishError::TopicTooLong { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "topic_too_long"),
            PublishError::InvalidTopic { .. } => (StatusCode::BAD_REQUEST, "invalid_topic"),
            PublishError::InvalidId(_) => (StatusCode::BAD_REQUEST, "invalid_id"),
            PublishError::IdTooLong { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "id_too_long"),
            PublishError::InvalidType(_) => (StatusCode::BAD_REQUEST, "invalid_type"),
            PublishError::DuplicateId(_) => (StatusCode::CONFLICT, "duplicate_id"),
            PublishError::TopicFinished(_) => (StatusCode::CONFLICT, "topic_finished"),
            PublishError::LargerThanHistory { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "larger_than_history")
            }
            PublishError::HistoryFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "history_full"),
            PublishError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            PublishError::OutcomeUnknown(_) => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
            PublishError::NotReplicated { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "not_replicated")
            }
        };
        ApiError::new(status, code, err.to_string())
    }
}

impl From<SubscribeError> for ApiError {
    fn from(err: SubscribeError) -> ApiError {
        let (status, code) = match &err {
            SubscribeError::MissingTopic => (StatusCode::BAD_REQUEST, "missing_topic"),
            SubscribeError::TooManyTopics { .. } => (StatusCode::BAD_REQUEST, "too_many_topics"),
            SubscribeError::SelectorTooLong { .. } => (StatusCode::BAD_REQUEST, "invalid_selector"),
            SubscribeError::ReservedTopic => (StatusCode::FORBIDDEN, "reserved_topic"),
            SubscribeError::InvalidClientId(_) => (StatusCode::BAD_REQUEST, "invalid_client_id"),
            SubscribeError::ReplayBusy { .. }
            | SubscribeError::WildcardsBusy
            | SubscribeError::Reloading => {
                let code = match err {
                    SubscribeError::ReplayBusy { .. } => "replay_busy",
                    SubscribeError::Reloading => "reloading",
                    _ => "subscribe_busy",
                };
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, err.to_string())
                    .with_header(header::RETRY_AFTER, "1");
            }
        };
        ApiError::new(status, code, err.to_string())
    }
}

impl From<SelectorError> for ApiError {
    fn from(err: SelectorError) -> ApiError {
        ApiError::bad_request("invalid_selector", err.to_string())
    }
}
