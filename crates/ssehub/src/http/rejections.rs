//! Every refused request, counted for `/metrics` by why it was refused and
//! logged as one line (target `ssehub::rejected`), whichever transport
//! answered it.
//!
//! The line has the status, the error code and message, the method, the
//! path without its query (a query may carry a token) and the client's
//! address; never a header or a body.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{ApiError, AppState, ConnectionInfo};

/// The broad reason of a refusal, the label an operator alerts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No credential, a bad one, or one that does not allow the request.
    Auth,
    /// A limit of the hub: connections, rates, sizes, replays.
    Limits,
    /// A request the hub cannot take as sent: malformed, unknown, invalid.
    BadInput,
    /// The hub cannot serve it now: the store or the cluster log is down.
    Unavailable,
}

impl Reason {
    /// As the label shows it.
    fn label(self) -> &'static str {
        match self {
            Reason::Auth => "auth",
            Reason::Limits => "limits",
            Reason::BadInput => "bad_input",
            Reason::Unavailable => "unavailable",
        }
    }
}

/// The labels of one count: the reason and the documented error code (a
/// fixed set, so the series are few whatever the traffic).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct Labels {
    /// The broad reason ([`Reason::label`]).
    pub reason: &'static str,
    /// The `error` of the JSON body.
    pub code: &'static str,
}

/// The count of refusals.
#[derive(Default)]
pub struct Rejections {
    /// Per reason and code.
    pub counts: Family<Labels, Counter>,
    /// All of them, for the status page.
    pub total: std::sync::atomic::AtomicU64,
}

impl Rejections {
    /// Counts and logs one refused request.
    pub fn note(&self, error: &ApiError, client: Option<IpAddr>, method: &str, path: &str) {
        self.count(error);
        tracing::info!(
            target: "ssehub::rejected",
            status = error.status.as_u16(),
            code = error.code,
            // Escaped: a message may quote the request (a field name, a
            // topic), and a newline or escape sequence in it must not
            // forge a log line or drive a terminal.
            detail = %error.message.escape_debug(),
            method,
            path,
            client = client.map(|ip| ip.to_string()),
            "request refused"
        );
    }

    /// Counts a refusal without a log line: a connection refused at accept
    /// (those are logged together, every 10 s, as a flood makes many).
    pub fn count(&self, error: &ApiError) {
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.counts
            .get_or_create(&Labels {
                reason: reason(error).label(),
                code: error.code,
            })
            .inc();
    }
}

/// The broad reason of an error answer.
pub fn reason(error: &ApiError) -> Reason {
    use axum::http::StatusCode as S;
    match (error.status, error.code) {
        (S::UNAUTHORIZED | S::FORBIDDEN, _) => Reason::Auth,
        (S::TOO_MANY_REQUESTS | S::PAYLOAD_TOO_LARGE | S::INSUFFICIENT_STORAGE, _) => {
            Reason::Limits
        }
        (S::SERVICE_UNAVAILABLE, "at_capacity" | "replay_busy" | "subscribe_busy") => {
            Reason::Limits
        }
        (status, _) if status.is_server_error() => Reason::Unavailable,
        _ => Reason::BadInput,
    }
}

/// Marks an answer made from an [`ApiError`], for [`middleware`].
#[derive(Clone)]
pub struct Refused(pub ApiError);

/// Counts and logs the refusals of the requests hyper serves, around the
/// CORS answer ([`super::cors::cors`]).
pub async fn middleware(State(app): State<AppState>, request: Request, next: Next) -> Response {
    // (Clones of shared bytes, not copies: this runs for every request.)
    let method = request.method().clone();
    let uri = request.uri().clone();
    let client = request
        .extensions()
        .get::<ConnectionInfo>()
        .map(|conn| app.client(conn, request.headers()).ip);
    let response = super::cors::cors(State(app.clone()), request, next).await;
    if let Some(Refused(error)) = response.extensions().get::<Refused>() {
        app.rejections
            .note(error, client, method.as_str(), uri.path());
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn each_kind_of_refusal_has_its_reason() {
        let e = |status, code| ApiError::new(status, code, "");
        assert_eq!(
            reason(&e(StatusCode::UNAUTHORIZED, "unauthorized")),
            Reason::Auth
        );
        assert_eq!(reason(&e(StatusCode::FORBIDDEN, "forbidden")), Reason::Auth);
        assert_eq!(
            reason(&e(StatusCode::TOO_MANY_REQUESTS, "rate_limited")),
            Reason::Limits
        );
        assert_eq!(
            reason(&e(StatusCode::SERVICE_UNAVAILABLE, "replay_busy")),
            Reason::Limits
        );
        assert_eq!(
            reason(&e(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")),
            Reason::Unavailable
        );
        assert_eq!(
            reason(&e(StatusCode::BAD_REQUEST, "invalid_topic")),
            Reason::BadInput
        );
        assert_eq!(
            reason(&e(StatusCode::NOT_FOUND, "not_found")),
            Reason::BadInput
        );
    }
}
