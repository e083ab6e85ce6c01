//! `GET /.well-known/mercure`: a subscriber's event stream. [`open`] turns
//! the request into a hub subscription for either transport (see
//! [`super::stream`]); [`subscribe`] is the hyper one's handler.

use axum::body::Body;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{Credentials, Grants};
use super::presence::{Matcher, Presence};
use super::stream::{self, EventStream};
use super::{ApiError, AppState, ConnectionInfo, form};
use crate::config::BareMatch;
use crate::hub::{Selector, Subscribe, client_topic};

/// Opens a stream for the topics in the query string, served by hyper (most
/// subscriptions are served by [`super::direct`], which shares [`open`]).
pub async fn subscribe(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnectionInfo>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    answer(&app, &conn, &headers, query.as_deref().unwrap_or("")).await
}

/// `QUERY /.well-known/mercure`: a subscription whose parameters (all of
/// them, or those too many for a URL) are in the body, form-encoded, as the
/// current Mercure draft allows. The body's parameters and the query's make
/// one list; of single-valued ones (`last_event_id`), the query's wins (the
/// `Last-Event-ID` header wins over both).
pub async fn subscribe_by_query(
    State(app): State<AppState>,
    Extension(conn): Extension<ConnectionInfo>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_none_or(|essence| {
            essence
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            "a QUERY subscription's body is application/x-www-form-urlencoded",
        ));
    }
    let body = super::publish::read_body(&headers, body, MAX_QUERY_BODY).await?;
    let mut all = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("invalid_utf8", "the body is not UTF-8"))?;
    // Later pairs win for single-valued parameters: the query's come last.
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        all.push('&');
        all.push_str(&query);
    }
    answer(&app, &conn, &headers, &all).await
}

/// The stream for `query`, served by hyper.
async fn answer(
    app: &AppState,
    conn: &ConnectionInfo,
    headers: &HeaderMap,
    query: &str,
) -> Result<Response, ApiError> {
    let (stream, more) = open(app, conn, headers, query).await?;
    if let Some(watch) = &conn.kill_watch {
        watch.watch(stream.kill_signal());
    }
    // CORS headers come from the router's middleware, as for every answer.
    Ok((stream::head(more), Body::from_stream(stream)).into_response())
}

/// Most bytes of a QUERY subscription's body: room for every selector a
/// subscription may have, at their longest, escaped.
const MAX_QUERY_BODY: usize = 256 * 1024;

/// Most URL patterns in one subscription: each is compiled to regular
/// expressions, about 4.7 KB, fourteen times an exact topic
/// (bench/url-pattern-memory).
const MAX_URL_PATTERNS: usize = 8;

/// A matcher's value: no control characters (C0, DEL, C1) and no format
/// characters (Unicode `Cf`: zero-width and direction marks, which make two
/// topics look the same).
fn matcher(value: &str) -> Result<String, ApiError> {
    if value.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_selector",
            "a matcher is empty: no topic is empty",
        ));
    }
    if value.chars().any(crate::hub::is_invisible) {
        return Err(ApiError::bad_request(
            "invalid_selector",
            format!("the matcher {value:?} contains a control or invisible format character"),
        ));
    }
    Ok(value.to_owned())
}

/// Whether these grants may act as `client_id` (open its channel,
/// acknowledge for it): a client channel is private, only its owner may.
pub(super) fn may_be(app: &AppState, grants: &Grants, client_id: &str) -> Result<(), ApiError> {
    if app.config.dev {
        return Ok(());
    }
    let own = client_topic(client_id);
    let owner = grants.subject.as_deref() == Some(client_id)
        || grants.subscribe.iter().any(|s| s.matches(&own));
    if owner {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "client_id_not_allowed",
            "client_id must be the token's subject (sub), or a topic the token may subscribe to",
        ))
    }
}

/// Checks credentials and limits, registers the subscriber, and returns its
/// stream and the headers of its answer beyond [`stream::head`]'s; or the
/// error to answer.
pub(super) async fn open(
    app: &AppState,
    conn: &ConnectionInfo,
    headers: &HeaderMap,
    query: &str,
) -> Result<(EventStream, HeaderMap), ApiError> {
    let fields = form::parse(query.as_bytes())
        .map_err(|e| ApiError::bad_request("invalid_utf8", e.to_string()))?;
    let credentials = Credentials {
        headers,
        query: &fields,
    };
    let grants = app
        .auth
        .subscriber(&credentials, app.config.anonymous_subscribers)?
        .unwrap_or_default();
    let client = app.client(conn, headers);
    let mut request = Subscribe {
        // What the admin API shows: the client's address (and, when it
        // connects directly, its port).
        remote: Some(match client.forwarded {
            true => std::net::SocketAddr::new(client.ip, 0),
            false => conn.remote,
        }),
        private: grants.subscribe.clone(),
        expires_at: grants.expires_at,
        ..Subscribe::default()
    };
    let mut patterns = 0;
    // As the subscriber wrote them, for active subscriptions.
    let mut matchers = Vec::new();
    let template = |value: &str| {
        if value.contains('{') {
            "template"
        } else {
            "exact"
        }
    };
    for (name, value) in fields {
        let match_type = match name.as_str() {
            "topic" => template(&value),
            "match" if app.config.bare_match == BareMatch::Template => template(&value),
            "match" | "match_exact" => "exact",
            "match_urlpattern" => "urlpattern",
            _ => "",
        };
        let known = |m: &Matcher| m.match_type == match_type && m.value == value;
        if !match_type.is_empty() && app.config.subscriptions && !matchers.iter().any(known) {
            matchers.push(Matcher {
                match_type,
                value: value.clone(),
            });
        }
        match name.as_str() {
            // Mercure 0.x: an exact topic, `*` or a URI template.
            "topic" => request.selectors.push(Selector::parse(&matcher(&value)?)?),
            "match" if app.config.bare_match == BareMatch::Template => {
                request.selectors.push(Selector::parse(&matcher(&value)?)?);
            }
            // The current draft: the exact topic (`*` is every topic, for
            // any matcher type).
            "match" | "match_exact" => request.selectors.push(match matcher(&value)?.as_str() {
                "*" => Selector::All,
                exact => Selector::Exact(exact.to_owned()),
            }),
            "match_urlpattern" => {
                patterns += 1;
                if patterns > MAX_URL_PATTERNS {
                    return Err(ApiError::bad_request(
                        "too_many_topics",
                        format!("a subscription may have at most {MAX_URL_PATTERNS} URL patterns"),
                    ));
                }
                request
                    .selectors
                    .push(Selector::url_pattern(&matcher(&value)?, &app.hub_url)?);
            }
            // The draft reserves every name that starts with `match`: a
            // misspelled matcher type fails loudly.
            other if other.len() >= 5 && other.as_bytes()[..5].eq_ignore_ascii_case(b"match") => {
                return Err(ApiError::bad_request(
                    "unknown_matcher_type",
                    format!(
                        "{other:?} is no matcher type: use match or match_exact (the exact \
                         topic), match_urlpattern (a URL pattern) or topic (a URI template)"
                    ),
                ));
            }
            // Mercure spells it lastEventID; both are accepted.
            "last_event_id" | "lastEventID" => request.last_event_id = Some(value),
            "client_id" => request.client_id = Some(value),
            // Other parameters (cache busters, tokens of later versions) are ignored.
            _ => {}
        }
    }
    if let Some(value) = headers.get("last-event-id") {
        // The header wins over the query: it is what EventSource sends on
        // reconnect, and it is newer than the URL the page was opened with.
        let value = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            ApiError::bad_request("invalid_last_event_id", "Last-Event-ID is not valid UTF-8")
        })?;
        request.last_event_id = Some(value.to_owned());
    }
    if request.last_event_id.as_deref() == Some(crate::frames::REPLACED_ID) {
        // A replaced stream's automatic reconnect: `EventSource` does not
        // retry this answer, so it stops instead of taking the connection
        // back from the newer one.
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "connection_replaced",
            "a newer connection with this client_id replaced this one; open a new \
             connection (without this Last-Event-ID) to take it back",
        ));
    }
    if let Some(client_id) = &request.client_id {
        may_be(app, &grants, client_id)?;
    }
    let counted = super::peers::Client {
        forwarded: client.forwarded || conn.multiplexed,
        ..client
    };
    let admission = app.limits.admit(counted, grants.subject.as_deref())?;
    // (Boxed: what it holds while it waits is not part of every stream's
    // task.)
    let subscription = Box::pin(app.hub.subscribe_async(request)).await?;
    let presence =
        (!matchers.is_empty()).then(|| Box::new(Presence::start(app, &matchers, &grants)));
    Ok(EventStream::new(subscription, admission, presence))
}
