//! Who may publish, subscribe and administer.
//!
//! Publishers and subscribers present JWTs as Mercure defines them: in an
//! `Authorization: Bearer` header, in a cookie (for `EventSource`, which cannot
//! set headers), or — only when enabled — in the query string. The algorithm
//! and key come from configuration, never from the token: a token whose `alg`
//! differs (including `none`, or HS256 signed with an RSA public key) is
//! refused before any signature check. Grants are read from the `mercure`
//! claim or from `authorization_details`; a malformed grant rejects the whole
//! token rather than silently narrowing it.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::hub::Selector;

/// Most `mercure` authorization details, topics per detail, and bytes per
/// topic pattern a token may carry.
const MAX_DETAILS: usize = 32;
const MAX_TOPICS: usize = 256;
const MAX_PATTERN: usize = 2048;

/// What a valid token allows.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// The `sub` claim.
    pub subject: Option<String>,
    /// Topics it may publish to.
    pub publish: Vec<Selector>,
    /// Topics whose private updates it may receive.
    pub subscribe: Vec<Selector>,
    /// The `exp` claim.
    pub expires_at: Option<SystemTime>,
}

impl Grants {
    /// Whether the token may publish to every one of `topics`.
    pub fn may_publish(&self, topics: &[String]) -> Result<(), String> {
        match topics
            .iter()
            .find(|t| !self.publish.iter().any(|s| s.matches(t)))
        {
            Some(topic) => Err(topic.clone()),
            None => Ok(()),
        }
    }
}

/// Checks tokens for one role with a fixed algorithm and key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// What relative URL patterns in grants resolve against.
    hub_url: url::Url,
}

/// Settings of the auth layer.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// HMAC secret, or a PEM public key (inline, or a path to a file).
    pub publisher_key: Option<String>,
    /// Same, for subscribers.
    pub subscriber_key: Option<String>,
    /// The one algorithm accepted, e.g. `HS256`, `RS256`, `ES256`.
    pub algorithm: String,
    /// Required `aud` value, when set.
    pub audience: Option<String>,
    /// Required `iss` value, when set.
    pub issuer: Option<String>,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// The hub's URL (`--public-url`), for URL patterns in grants.
    pub hub_url: Option<url::Url>,
}

impl Verifier {
    /// A verifier for one role.
    pub fn new(key: &str, settings: &AuthSettings) -> Result<Verifier, String> {
        let algorithm = Algorithm::from_str(&settings.algorithm)
            .map_err(|_| format!("unknown JWT algorithm {:?}", settings.algorithm))?;
        let key = decoding_key(key, algorithm)?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.required_spec_claims = HashSet::new();
        if settings.require_exp {
            validation.required_spec_claims.insert("exp".to_owned());
        }
        match &settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                // A token without `aud` (or with `aud: null`) is for no
                // audience in particular, so not for this one.
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        let hub_url = settings.hub_url.clone().unwrap_or_else(|| {
            url::Url::parse("http://localhost/.well-known/mercure").expect("a URL")
        });
        Ok(Verifier {
            key,
            validation,
            hub_url,
        })
    }

    /// Checks a token and reads its grants.
    pub fn verify(&self, token: &str) -> Result<Grants, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| describe(&e))?;
        data.claims.grants(&self.hub_url)
    }
}

fn decoding_key(key: &str, algorithm: Algorithm) -> Result<DecodingKey, String> {
    use Algorithm::*;
    if matches!(algorithm, HS256 | HS384 | HS512) {
        if key.len() < 16 {
            return Err("an HMAC secret must be at least 16 bytes".into());
        }
        return Ok(DecodingKey::from_secret(key.as_bytes()));
    }
    let pem = if key.trim_start().starts_with("-----BEGIN") {
        key.to_owned()
    } else {
        std::fs::read_to_string(key).map_err(|e| format!("cannot read the key file {key}: {e}"))?
    };
    let parsed = match algorithm {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem.as_bytes()),
        ES256 | ES384 => DecodingKey::from_ec_pem(pem.as_bytes()),
        EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
        HS256 | HS384 | HS512 => unreachable!("handled above"),
    };
    parsed.map_err(|e| format!("the key is not a PEM public key for {algorithm:?}: {e}"))
}

/// A short reason, for the error message and the log.
fn describe(err: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match err.kind() {
        ExpiredSignature => "the token has expired".into(),
        ImmatureSignature => "the token is not valid yet (nbf)".into(),
        InvalidAudience => "the token is for another audience (aud)".into(),
        InvalidIssuer => "the token is from another issuer (iss)".into(),
        InvalidSignature => "the signature does not verify".into(),
        InvalidAlgorithm => "the token's algorithm is not the one configured".into(),
        MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        InvalidToken | Base64(_) | Json(_) | Utf8(_) => "the token is malformed".into(),
        _ => "the token is not valid".into(),
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    mercure: Option<MercureClaim>,
    authorization_details: Option<Vec<serde_json::Value>>,
}

/// The classic Mercure claim: topic selectors per action.
#[derive(Deserialize)]
struct MercureClaim {
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

/// Seconds a token is still accepted after its `exp` (and before its
/// `nbf`): clocks of the issuer and the hub differ a little.
const LEEWAY_SECONDS: u64 = 5;

impl Claims {
    fn grants(self, hub_url: &url::Url) -> Result<Grants, String> {
        let mut grants = Grants {
            subject: self.sub,
            // Honoured as long as it is accepted (the leeway included): a
            // token accepted a second after `exp` must not open a stream
            // that ends at once and is reopened with the same token. An
            // expiry too far ahead to represent is none.
            // (It is accepted through the whole second `exp + leeway`.)
            expires_at: self
                .exp
                .and_then(|s| s.checked_add(LEEWAY_SECONDS + 1))
                .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s))),
            ..Grants::default()
        };
        if let Some(mercure) = self.mercure {
            if mercure.publish.len() + mercure.subscribe.len() > MAX_TOPICS {
                return Err("the mercure claim lists too many topics".into());
            }
            for (list, target) in [
                (mercure.publish, &mut grants.publish),
                (mercure.subscribe, &mut grants.subscribe),
            ] {
                for selector in list {
                    target.push(
                        Selector::parse(&selector)
                            .map_err(|e| format!("the mercure claim has an {e}"))?,
                    );
                }
            }
        }
        if let Some(details) = self.authorization_details {
            // The draft's type, and the one of the drafts before it.
            let mercure: Vec<&serde_json::Value> = details
                .iter()
                .filter(|d| {
                    let kind = d.get("type").and_then(|t| t.as_str());
                    kind == Some(DETAIL_TYPE) || kind == Some("mercure")
                })
                .collect();
            if mercure.len() > MAX_DETAILS {
                return Err("too many mercure authorization details".into());
            }
            for detail in mercure {
                read_detail(detail, &mut grants, hub_url)?;
            }
        }
        Ok(grants)
    }
}

/// The authorization detail type of draft-dunglas-mercure-08.
const DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";

/// One Mercure authorization detail: `{"type", "actions": [...],
/// "topics": [{"match", "match_type"}]}` (earlier drafts: `matchType`,
/// `Exact` / `URLPattern`).
fn read_detail(
    detail: &serde_json::Value,
    grants: &mut Grants,
    hub_url: &url::Url,
) -> Result<(), String> {
    let bad = |why: &str| format!("a mercure authorization detail is invalid: {why}");
    let actions = detail
        .get("actions")
        .and_then(|a| a.as_array())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| bad("actions must be a non-empty array"))?;
    let topics = detail
        .get("topics")
        .and_then(|t| t.as_array())
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOPICS)
        .ok_or_else(|| bad("topics must be a non-empty array of at most 256 matchers"))?;
    let mut selectors = Vec::with_capacity(topics.len());
    for topic in topics {
        let pattern = topic
            .get("match")
            .and_then(|m| m.as_str())
            .filter(|m| !m.is_empty() && m.len() <= MAX_PATTERN)
            .ok_or_else(|| bad("each topic needs a non-empty match string"))?;
        let kind = topic.get("match_type").or_else(|| topic.get("matchType"));
        let selector = match kind.map(|t| t.as_str()) {
            _ if pattern == "*" => Selector::All,
            None | Some(Some("exact" | "Exact")) => Selector::Exact(pattern.to_owned()),
            Some(Some("urlpattern" | "URLPattern")) => {
                Selector::url_pattern(pattern, hub_url).map_err(|e| bad(&e.to_string()))?
            }
            _ => return Err(bad("match_type must be exact or urlpattern")),
        };
        selectors.push(selector);
    }
    for action in actions {
        match action.as_str() {
            Some("publish") => grants.publish.extend(selectors.iter().cloned()),
            Some("subscribe") => grants.subscribe.extend(selectors.iter().cloned()),
            // Actions of later specifications grant nothing here, and do not
            // invalidate the token (the draft says so).
            Some(_) => {}
            None => return Err(bad("actions must be strings")),
        }
    }
    Ok(())
}

/// The auth layer: verifiers per role and where tokens may come from.
pub struct Auth {
    publisher: Option<Verifier>,
    subscriber: Option<Verifier>,
    cookie_name: String,
    allow_query_token: bool,
    admin_token: Option<String>,
}

/// Where a token may be found on a request.
pub struct Credentials<'a> {
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Decoded query fields.
    pub query: &'a [(String, String)],
}

impl Auth {
    /// Builds the layer; errors name the setting to fix.
    pub fn new(
        settings: &AuthSettings,
        cookie_name: String,
        allow_query_token: bool,
        admin_token: Option<String>,
    ) -> Result<Auth, String> {
        let verifier = |key: &Option<String>, role: &str| {
            key.as_deref()
                .map(|k| Verifier::new(k, settings).map_err(|e| format!("--{role}-jwt-key: {e}")))
                .transpose()
        };
        Ok(Auth {
            publisher: verifier(&settings.publisher_key, "publisher")?,
            subscriber: verifier(&settings.subscriber_key, "subscriber")?,
            cookie_name,
            allow_query_token,
            admin_token,
        })
    }

    /// Whether publishers can authenticate at all.
    pub fn has_publisher_key(&self) -> bool {
        self.publisher.is_some()
    }

    /// The token presented, by Mercure's precedence: header, query, cookie.
    fn token<'a>(&self, credentials: &'a Credentials<'_>) -> Result<Option<&'a str>, ApiError> {
        if let Some(presented) = bearer(credentials.headers) {
            return presented
                .map(Some)
                .ok_or_else(|| invalid_token("the Authorization header is not a Bearer token"));
        }
        if self.allow_query_token
            && let Some((_, token)) = credentials
                .query
                .iter()
                .find(|(name, _)| name == "authorization" || name == "access_token")
        {
            return Ok(Some(token));
        }
        Ok(credentials
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie_name)
            .map(|(_, value)| value))
    }

    /// A publisher's grants: `Ok(None)` for an anonymous publisher, allowed
    /// only in dev mode without a token.
    pub fn publisher(
        &self,
        credentials: &Credentials<'_>,
        dev: bool,
    ) -> Result<Option<Grants>, ApiError> {
        match (self.token(credentials)?, &self.publisher) {
            (Some(token), Some(verifier)) => verifier
                .verify(token)
                .map(Some)
                .map_err(|e| invalid_token(&e)),
            (Some(_), None) if dev => Ok(None),
            (Some(_), None) => Err(invalid_token("this hub has no publisher key configured")),
            (None, _) if dev => Ok(None),
            (None, _) => Err(unauthorized(
                "publishing needs a token (Authorization: Bearer ...)",
            )),
        }
    }

    /// A subscriber's grants; `Ok(None)` for an anonymous subscriber.
    pub fn subscriber(
        &self,
        credentials: &Credentials<'_>,
        anonymous_allowed: bool,
    ) -> Result<Option<Grants>, ApiError> {
        match (self.token(credentials)?, &self.subscriber) {
            (Some(token), Some(verifier)) => verifier
                .verify(token)
                .map(Some)
                .map_err(|e| invalid_token(&e)),
            (Some(_), None) => Err(invalid_token("this hub has no subscriber key configured")),
            (None, _) if anonymous_allowed => Ok(None),
            (None, _) => Err(unauthorized(
                "subscribing needs a token (cookie or Authorization header)",
            )),
        }
    }

    /// The admin API: `Authorization: Bearer <admin token>`; open in dev mode
    /// when no admin token is set.
    pub fn admin(&self, headers: &HeaderMap, dev: bool) -> Result<(), ApiError> {
        let Some(expected) = &self.admin_token else {
            return if dev {
                Ok(())
            } else {
                Err(unauthorized("the admin API needs --admin-token (or --dev)"))
            };
        };
        let presented = bearer(headers).flatten().unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else if presented.is_empty() {
            Err(unauthorized(
                "the admin API needs Authorization: Bearer <admin token>",
            ))
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the admin token is wrong",
            )
            .with_header(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""))
        }
    }
}

/// The token of an `Authorization: Bearer` header (the scheme in any case,
/// as RFC 9110 has it): `None` without the header, `Some(None)` when it is
/// not a Bearer token.
fn bearer(headers: &HeaderMap) -> Option<Option<&str>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .map(|(_, token)| token.trim());
    Some(token)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        .with_header(header::WWW_AUTHENTICATE, "Bearer")
}

fn invalid_token(reason: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        format!("invalid token: {reason}"),
    )
    .with_header(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")
}

/// 403 for a valid token that does not cover the request.
pub fn insufficient_scope(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", message).with_header(
        header::WWW_AUTHENTICATE,
        "Bearer error=\"insufficient_scope\"",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> url::Url {
        url::Url::parse("https://hub.example.com/.well-known/mercure").unwrap()
    }

    #[test]
    fn both_claim_shapes_give_grants() {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "sub": "alice",
            "mercure": {"publish": ["a/{id}"], "subscribe": ["*"]},
            "authorization_details": [
                {"type": "mercure", "actions": ["subscribe"], "topics": [{"match": "b/:id", "matchType": "URLPattern"}]},
                {"type": "other", "whatever": true}
            ]
        }))
        .unwrap();
        let grants = claims.grants(&hub()).unwrap();
        assert_eq!(grants.subject.as_deref(), Some("alice"));
        assert!(grants.may_publish(&["a/1".into()]).is_ok());
        assert_eq!(
            grants.may_publish(&["a/1".into(), "b".into()]),
            Err("b".into())
        );
        assert_eq!(grants.subscribe.len(), 2);
    }

    /// draft-08's shape: its detail type URI, `match_type` in lower case,
    /// URL patterns as the standard has them; actions it does not know are
    /// ignored.
    #[test]
    fn draft_08_details_grant_what_they_say() {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "authorization_details": [
                {
                    "type": "https://mercure.rocks/authorization-detail",
                    "actions": ["publish", "subscribe", "moderate"],
                    "topics": [
                        {"match": "https://example.com/books/:id(\\d+)", "match_type": "urlpattern"},
                        {"match": "news", "match_type": "exact"},
                        {"match": "/relative/*", "match_type": "urlpattern"}
                    ]
                },
                {"type": "https://mercure.rocks/authorization-detail", "actions": ["archive"], "topics": [{"match": "*"}]}
            ]
        }))
        .unwrap();
        let grants = claims.grants(&hub()).unwrap();
        assert!(
            grants
                .may_publish(&["https://example.com/books/12".into()])
                .is_ok()
        );
        assert!(
            grants
                .may_publish(&["https://example.com/books/x".into()])
                .is_err()
        );
        assert!(grants.may_publish(&["news".into()]).is_ok());
        assert!(
            grants
                .may_publish(&["https://hub.example.com/relative/a".into()])
                .is_ok()
        );
        // The unknown action granted nothing, not even with `*`.
        assert!(grants.may_publish(&["elsewhere".into()]).is_err());
        assert_eq!(grants.subscribe.len(), 3);
    }

    #[test]
    fn a_malformed_detail_rejects_the_whole_token() {
        for detail in [
            serde_json::json!({"type": "mercure", "actions": [], "topics": [{"match": "a"}]}),
            serde_json::json!({"type": "mercure", "actions": [1], "topics": [{"match": "a"}]}),
            serde_json::json!({"type": "mercure", "actions": ["publish"], "topics": []}),
            serde_json::json!({"type": "mercure", "actions": ["publish"], "topics": ["a"]}),
            serde_json::json!({"type": "mercure", "actions": ["publish"], "topics": [{"match": "a", "matchType": "Regex"}]}),
            serde_json::json!({"type": "https://mercure.rocks/authorization-detail", "actions": ["publish"], "topics": [{"match": "a", "match_type": "URLPattern "}]}),
            serde_json::json!({"type": "https://mercure.rocks/authorization-detail", "actions": ["publish"], "topics": [{"match": "/a/:id(", "match_type": "urlpattern"}]}),
        ] {
            let claims: Claims = serde_json::from_value(serde_json::json!({
                "authorization_details": [
                    {"type": "mercure", "actions": ["publish"], "topics": [{"match": "*"}]},
                    detail.clone()
                ]
            }))
            .unwrap();
            assert!(claims.grants(&hub()).is_err(), "{detail}");
        }
    }

    #[test]
    fn short_hmac_secrets_are_refused() {
        let settings = AuthSettings {
            algorithm: "HS256".into(),
            ..AuthSettings::default()
        };
        assert!(Verifier::new("short", &settings).is_err());
        assert!(Verifier::new("a-secret-of-enough-length", &settings).is_ok());
    }
}
