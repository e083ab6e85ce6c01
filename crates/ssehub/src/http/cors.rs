//! CORS with an explicit origin allowlist.
//!
//! Credentials (the auth cookie) are allowed for listed origins only, and the
//! answer names that origin: never `*` with credentials, never an origin
//! echoed back unchecked. A preflight from an unlisted origin gets a 403 JSON
//! error; other requests from unlisted origins simply get no CORS headers, so
//! the browser keeps their answers from the page.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// The allowlist. `*` allows any origin, without credentials.
#[derive(Debug, Clone, Default)]
pub struct CorsSettings {
    /// Origins such as `https://app.example.com`, compared exactly.
    pub origins: Vec<String>,
    /// Every origin, as if listed (`--dev` without `--cors-origin`: a hub
    /// that lets anyone publish has nothing to keep from other pages).
    pub any_origin: bool,
}

enum Allowed {
    /// This origin, with credentials.
    Origin(HeaderValue),
    /// Any origin, without credentials.
    Any,
}

impl CorsSettings {
    /// Whether `origin` is listed by name (`*` lists none).
    pub(super) fn lists(&self, origin: &str) -> bool {
        origin != "*" && self.origins.iter().any(|o| o == origin)
    }

    fn allowed(&self, origin: &str) -> Option<Allowed> {
        if self.lists(origin) {
            HeaderValue::from_str(origin).ok().map(Allowed::Origin)
        } else if self.origins.iter().any(|o| o == "*") {
            Some(Allowed::Any)
        } else if self.any_origin {
            HeaderValue::from_str(origin).ok().map(Allowed::Origin)
        } else {
            None
        }
    }
}

/// The middleware.
pub async fn cors(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    // The status page takes Basic credentials, which a browser sends by
    // itself: no other origin may read it (nor /metrics).
    let own_only = request.uri().path().starts_with("/admin") || request.uri().path() == "/metrics";
    let Some(origin) = origin.filter(|_| !own_only) else {
        return next.run(request).await;
    };
    let allowed = app.cors.allowed(&origin);
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let Some(allowed) = allowed else {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cors_origin_not_allowed",
                format!("the origin {origin:?} is not in this hub's --cors-origin list"),
            )
            .into_response();
        };
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        apply(headers, &allowed);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, QUERY"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(concat!(
                "authorization, content-type, last-event-id, cache-control, if-none-match, ",
                // Durable Streams' request headers.
                "stream-seq, stream-ttl, stream-expires-at, stream-closed, producer-id, ",
                "producer-epoch, producer-seq, stream-forked-from, stream-fork-offset, ",
                "stream-fork-sub-offset"
            )),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return response;
    }
    let mut response = next.run(request).await;
    if let Some(allowed) = allowed {
        apply(response.headers_mut(), &allowed);
    }
    response
}

/// The CORS headers for a non-preflight answer to `origin`, for answers
/// written outside the router (see `super::direct`).
pub(super) fn answer_headers(settings: &CorsSettings, origin: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(allowed) = origin.and_then(|o| settings.allowed(o)) {
        apply(&mut headers, &allowed);
    }
    headers
}

/// What a page's fetch may read beyond the simple headers: Mercure's
/// resume answer, discovery links, why a token was refused, and the
/// Durable Streams' answer headers.
const EXPOSED: &str = concat!(
    "mercure-last-event-id, link, www-authenticate, retry-after, etag, location, ",
    "stream-next-offset, stream-cursor, stream-up-to-date, stream-closed, stream-ttl, ",
    "stream-expires-at, stream-sse-data-encoding, producer-epoch, producer-seq, ",
    "producer-expected-seq, producer-received-seq"
);

fn apply(headers: &mut HeaderMap, allowed: &Allowed) {
    match allowed {
        Allowed::Origin(origin) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        Allowed::Any => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// A request that changes something (a publish, an acknowledgement) and is
/// authenticated by a cookie must come from the hub's own origin or one
/// listed in `--cors-origin`, by its `Origin` (or else `Referer`): the
/// browser attaches the cookie to a form another site submits (CSRF), and
/// `SameSite` is not enforced everywhere. Without either header it is
/// refused too.
pub(super) fn from_a_trusted_page(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            let referer = headers.get(header::REFERER)?.to_str().ok()?;
            Some(
                url::Url::parse(referer)
                    .ok()?
                    .origin()
                    .ascii_serialization(),
            )
        });
    let trusted = origin.as_deref().is_some_and(|origin| {
        origin == app.hub_url.origin().ascii_serialization() || app.cors.lists(origin)
    });
    if trusted {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_publish",
            format!(
                "a request authenticated by a cookie must come from a page of the hub's origin or \
                 of a --cors-origin (by its Origin or Referer), not {}",
                origin.as_deref().unwrap_or("a request with neither")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(settings: &CorsSettings, origin: &str) -> Vec<(String, String)> {
        answer_headers(settings, Some(origin))
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn dev_allows_every_origin_and_a_list_only_its_own() {
        let dev = CorsSettings {
            origins: vec![],
            any_origin: true,
        };
        assert_eq!(
            answer(&dev, "http://other.example:8080"),
            [
                ("access-control-allow-origin", "http://other.example:8080"),
                ("access-control-allow-credentials", "true"),
                ("access-control-expose-headers", EXPOSED),
                ("vary", "origin"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let listed = CorsSettings {
            origins: vec!["https://app.example".into()],
            any_origin: false,
        };
        assert!(answer(&listed, "http://other.example:8080").is_empty());
        assert_eq!(answer(&listed, "https://app.example").len(), 4);
        assert!(answer(&CorsSettings::default(), "https://app.example").is_empty());
    }

    /// `*` in the list lets any origin read without credentials; it is no
    /// origin itself, not even when a request says `Origin: *`.
    #[test]
    fn a_star_is_no_origin_with_credentials() {
        let star = CorsSettings {
            origins: vec!["*".into()],
            any_origin: false,
        };
        assert!(!star.lists("*"));
        let headers = answer(&star, "*");
        assert!(headers.contains(&("access-control-allow-origin".into(), "*".into())));
        assert!(
            !headers
                .iter()
                .any(|(k, _)| k == "access-control-allow-credentials")
        );
    }
}
