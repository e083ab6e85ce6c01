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
//!
//! Two profiles, by what the token says it is: an access token of the
//! current Mercure draft (header `typ: at+jwt`, or a draft-08 authorization
//! detail) must carry `exp`, an `aud` naming this hub's resource identifier,
//! and `iss` (RFC 9068); a 0.x token (the `mercure` claim, as Symfony and
//! API Platform issue it) needs them only where the operator asks for them.
//! Refusals carry the `WWW-Authenticate: Bearer` challenge of RFC 6750 with
//! the `resource_metadata` of RFC 9728.

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
    /// The token came in a cookie: the browser sends it on its own, so a
    /// publish with it must come from a trusted page (CSRF).
    pub by_cookie: bool,
    /// Payloads of `subscribe` grants, in the token's order, with the
    /// topics they are for (0.x's `mercure.payload` last, for all).
    pub payloads: Vec<(Vec<Selector>, serde_json::Value)>,
}

impl Grants {
    /// The payload of the first `subscribe` grant that covers a
    /// subscription's matcher, read as a topic (Mercure's active
    /// subscriptions show it).
    pub fn payload_for(&self, matcher: &str) -> Option<&serde_json::Value> {
        self.payloads
            .iter()
            .find(|(selectors, _)| selectors.iter().any(|s| s.matches(matcher)))
            .map(|(_, payload)| payload)
    }

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
    /// The `aud` a draft-08 access token must name.
    resource: String,
    /// Refuse tokens without `exp`.
    require_exp: bool,
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

impl AuthSettings {
    /// The hub's resource identifier, which access tokens name in `aud`:
    /// the required audience when one is set, else the hub's URL.
    pub fn resource(&self) -> String {
        match (&self.audience, &self.hub_url) {
            (Some(audience), _) => audience.clone(),
            (None, Some(url)) => url.to_string(),
            (None, None) => DEFAULT_HUB_URL.to_owned(),
        }
    }

    /// Where the hub's protected resource metadata is (RFC 9728: the
    /// resource identifier's path after `/.well-known/oauth-protected-resource`),
    /// as a URL for challenges and as the path it is served at.
    pub fn metadata_url(&self) -> url::Url {
        let resource = url::Url::parse(&self.resource())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .or_else(|| self.hub_url.clone())
            .unwrap_or_else(|| url::Url::parse(DEFAULT_HUB_URL).expect("a URL"));
        let mut metadata = resource.clone();
        let path = resource.path().trim_end_matches('/');
        metadata.set_path(&format!("{METADATA_PREFIX}{path}"));
        metadata.set_query(None);
        metadata.set_fragment(None);
        metadata
    }
}

/// The well-known prefix of protected resource metadata (RFC 9728).
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

const DEFAULT_HUB_URL: &str = "http://localhost/.well-known/mercure";

impl Verifier {
    /// A verifier for one role.
    pub fn new(key: &str, settings: &AuthSettings) -> Result<Verifier, String> {
        let algorithm = Algorithm::from_str(&settings.algorithm)
            .map_err(|_| format!("unknown JWT algorithm {:?}", settings.algorithm))?;
        let key = decoding_key(key, algorithm)?;
        let mut validation = Validation::new(algorithm);
        // `exp` and `nbf` are checked here (`check_times`): the crate reads
        // them as whole seconds only, and refuses a token with
        // `"exp": 1767225600.5`, which RFC 7519 allows and Symfony's token
        // factory issues.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = HashSet::new();
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
        let hub_url = settings
            .hub_url
            .clone()
            .unwrap_or_else(|| url::Url::parse(DEFAULT_HUB_URL).expect("a URL"));
        Ok(Verifier {
            key,
            validation,
            resource: settings.resource(),
            hub_url,
            require_exp: settings.require_exp,
        })
    }

    /// Checks a token and reads its grants.
    pub fn verify(&self, token: &str) -> Result<Grants, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| describe(&e))?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| describe(&e))?;
        let claims = data.claims;
        claims.check_times(unix_now())?;
        if self.require_exp && claims.exp.is_none() {
            return Err("the token has no exp claim".into());
        }
        let access_token = match header.typ.as_deref() {
            None => false,
            Some(typ) if is_access_token_type(typ) => true,
            Some(typ) if is_plain_jwt_type(typ) => false,
            // An ID token, a security event token...: issued for another
            // purpose, not to be taken for access.
            Some(typ) => {
                return Err(format!(
                    "the token's typ {typ:?} is none of a Mercure token's: at+jwt (or JWT for 0.x)"
                ));
            }
        };
        if access_token || claims.has_draft_detail() {
            self.check_access_token(access_token, &claims)?;
        }
        claims.grants(&self.hub_url)
    }

    /// What RFC 9068 (and so the current Mercure draft) requires of an
    /// access token beyond the signature.
    fn check_access_token(&self, typed: bool, claims: &Claims) -> Result<(), String> {
        if !typed {
            return Err(
                "a token with Mercure draft-08 authorization details must have the header typ \
                 at+jwt (RFC 9068)"
                    .into(),
            );
        }
        if claims.exp.is_none() {
            return Err("an access token (typ at+jwt) must have an exp claim".into());
        }
        if claims.iss.is_none() {
            return Err("an access token (typ at+jwt) must have an iss claim".into());
        }
        let names_this_hub = match &claims.aud {
            Some(serde_json::Value::String(aud)) => *aud == self.resource,
            Some(serde_json::Value::Array(auds)) => {
                auds.iter().any(|a| a.as_str() == Some(&self.resource))
            }
            _ => false,
        };
        if !names_this_hub {
            return Err(format!(
                "an access token (typ at+jwt) must name this hub in aud: {:?} (its resource \
                 identifier: --jwt-audience, else --public-url)",
                self.resource
            ));
        }
        Ok(())
    }
}

/// `at+jwt` or `application/at+jwt`, in any case (RFC 9068, RFC 7515).
fn is_access_token_type(typ: &str) -> bool {
    media_type(typ) == "at+jwt"
}

/// `JWT` (or `application/jwt`), what 0.x token factories write.
fn is_plain_jwt_type(typ: &str) -> bool {
    media_type(typ) == "jwt"
}

/// A `typ` compared as RFC 7515 has it: in any case, `application/` left out.
fn media_type(typ: &str) -> String {
    let typ = typ.to_ascii_lowercase();
    typ.strip_prefix("application/").unwrap_or(&typ).to_owned()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
        // The value is repeated only when it looks like a path: it may be a
        // secret given by mistake (an HMAC secret with an RSA algorithm).
        let looks_like_path =
            key.starts_with(['/', '.', '~']) || key.ends_with(".pem") || key.ends_with(".key");
        let named = if looks_like_path {
            format!(" {key}")
        } else {
            String::new()
        };
        std::fs::read_to_string(key).map_err(|e| {
            format!("the key is no PEM key, and no key file{named} can be read: {e}")
        })?
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
    /// NumericDates may have a fraction (RFC 7519).
    exp: Option<f64>,
    nbf: Option<f64>,
    iss: Option<String>,
    aud: Option<serde_json::Value>,
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
    payload: Option<serde_json::Value>,
}

/// Seconds a token is still accepted after its `exp` (and before its
/// `nbf`): clocks of the issuer and the hub differ a little.
const LEEWAY_SECONDS: u64 = 5;

impl Claims {
    /// `exp` and `nbf` against `now` (seconds), with the leeway.
    fn check_times(&self, now: f64) -> Result<(), String> {
        let leeway = LEEWAY_SECONDS as f64;
        if self.exp.is_some_and(|exp| now > exp + leeway) {
            return Err("the token has expired".into());
        }
        if self.nbf.is_some_and(|nbf| nbf > now + leeway) {
            return Err("the token is not valid yet (nbf)".into());
        }
        Ok(())
    }

    /// Whether it carries an authorization detail of the current draft.
    fn has_draft_detail(&self) -> bool {
        self.authorization_details
            .iter()
            .flatten()
            .any(|d| d.get("type").and_then(|t| t.as_str()) == Some(DETAIL_TYPE))
    }

    fn grants(self, hub_url: &url::Url) -> Result<Grants, String> {
        let mut grants = Grants {
            subject: self.sub,
            // Honoured as long as it is accepted (the leeway included): a
            // token accepted a second after `exp` must not open a stream
            // that ends at once and is reopened with the same token. An
            // expiry too far ahead to represent is none.
            // (It is accepted through the whole second `exp + leeway`.)
            // (A float cast saturates: an `exp` past u64 seconds is none.)
            expires_at: self
                .exp
                .map(|s| s.max(0.0).ceil() as u64)
                .and_then(|s| s.checked_add(LEEWAY_SECONDS + 1))
                .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s))),
            ..Grants::default()
        };
        let mut classic_payload = None;
        if let Some(mercure) = self.mercure {
            classic_payload = mercure.payload;
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
        if let Some(payload) = classic_payload {
            grants.payloads.push((vec![Selector::All], payload));
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
        // The type is checked even for `*`: a type the hub does not know
        // invalidates the token, whatever the pattern.
        let selector = match kind.map(|t| t.as_str()) {
            None | Some(Some("exact" | "Exact")) if pattern == "*" => Selector::All,
            Some(Some("urlpattern" | "URLPattern")) if pattern == "*" => Selector::All,
            None | Some(Some("exact" | "Exact")) => Selector::Exact(pattern.to_owned()),
            Some(Some("urlpattern" | "URLPattern")) => {
                Selector::url_pattern(pattern, hub_url).map_err(|e| bad(&e.to_string()))?
            }
            _ => return Err(bad("match_type must be exact or urlpattern")),
        };
        selectors.push(selector);
    }
    let payload = match detail.get("payload") {
        None => None,
        Some(payload) if payload.is_object() => Some(payload),
        Some(_) => return Err(bad("payload must be an object")),
    };
    for action in actions {
        match action.as_str() {
            Some("publish") => grants.publish.extend(selectors.iter().cloned()),
            Some("subscribe") => {
                grants.subscribe.extend(selectors.iter().cloned());
                if let Some(payload) = payload {
                    grants.payloads.push((selectors.clone(), payload.clone()));
                }
            }
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
    /// The challenge's `resource_metadata` parameter.
    metadata: String,
    /// The hub's protected resource metadata document (RFC 9728).
    metadata_document: serde_json::Value,
}

/// The cookie name the current Mercure draft recommends; read besides the
/// configured one (`mercureAuthorization` by default, 0.x's).
pub const DRAFT_COOKIE: &str = "__Secure-mercure_access_token";

/// 0.x's cookie name, `--cookie-name`'s default.
pub const CLASSIC_COOKIE: &str = "mercureAuthorization";

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
            metadata: format!("resource_metadata=\"{}\"", settings.metadata_url()),
            metadata_document: serde_json::json!({
                "resource": settings.resource(),
                "bearer_methods_supported": ["header"],
                "authorization_details_types_supported": [DETAIL_TYPE],
                // The draft's cookie name, unless the operator chose one.
                "mercure_cookie": if cookie_name == CLASSIC_COOKIE { DRAFT_COOKIE } else { &cookie_name },
                "mercure_matcher_types_supported": ["exact", "urlpattern"],
            }),
            cookie_name,
            allow_query_token,
            admin_token,
        })
    }

    /// The protected resource metadata document: what a client puts in a
    /// token's `aud`, how it presents the token, what grants mean here.
    pub fn metadata_document(&self) -> &serde_json::Value {
        &self.metadata_document
    }

    /// Whether publishers can authenticate at all.
    pub fn has_publisher_key(&self) -> bool {
        self.publisher.is_some()
    }

    /// The token presented, by Mercure's precedence: header, query, cookie
    /// (the configured name first, then the draft's); and whether it came
    /// in a cookie.
    fn token<'a>(
        &self,
        credentials: &'a Credentials<'_>,
    ) -> Result<Option<(&'a str, bool)>, ApiError> {
        if let Some(presented) = bearer(credentials.headers) {
            // RFC 6750's `invalid_request`: the presentation is malformed.
            return presented.map(|t| Some((t, false))).ok_or_else(|| {
                self.challenge(
                    ApiError::bad_request(
                        "invalid_request",
                        "the Authorization header is not a Bearer token",
                    ),
                    Some("invalid_request"),
                )
            });
        }
        if self.allow_query_token
            && let Some((_, token)) = credentials
                .query
                .iter()
                .find(|(name, _)| name == "authorization" || name == "access_token")
        {
            return Ok(Some((token, false)));
        }
        let cookie = |wanted: &str| {
            credentials
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == wanted)
                .map(|(_, value)| (value, true))
        };
        Ok(cookie(&self.cookie_name).or_else(|| cookie(DRAFT_COOKIE)))
    }

    /// `error` with the hub's Bearer challenge: its `error` code (none when
    /// no token was presented) and where its metadata is.
    fn challenge(&self, error: ApiError, code: Option<&str>) -> ApiError {
        let value = match code {
            Some(code) => format!("Bearer error=\"{code}\", {}", self.metadata),
            None => format!("Bearer {}", self.metadata),
        };
        error.with_header(header::WWW_AUTHENTICATE, &value)
    }

    /// 401 for a request that needs a token and has none.
    pub fn unauthorized(&self, message: &str) -> ApiError {
        self.challenge(
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message),
            None,
        )
    }

    fn invalid_token(&self, reason: &str) -> ApiError {
        let error = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            format!("invalid token: {reason}"),
        );
        self.challenge(error, Some("invalid_token"))
    }

    /// 403 for a valid token that does not cover the request.
    pub fn insufficient_scope(&self, message: String) -> ApiError {
        let error = ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", message);
        self.challenge(error, Some("insufficient_scope"))
    }

    /// A token's grants, or why it is refused.
    fn grants(
        &self,
        verifier: &Verifier,
        token: &str,
        by_cookie: bool,
    ) -> Result<Grants, ApiError> {
        let mut grants = verifier.verify(token).map_err(|e| self.invalid_token(&e))?;
        grants.by_cookie = by_cookie;
        Ok(grants)
    }

    /// A publisher's grants: `Ok(None)` for an anonymous publisher, allowed
    /// only in dev mode without a token.
    pub fn publisher(
        &self,
        credentials: &Credentials<'_>,
        dev: bool,
    ) -> Result<Option<Grants>, ApiError> {
        match (self.token(credentials)?, &self.publisher) {
            (Some((token, by_cookie)), Some(verifier)) => {
                self.grants(verifier, token, by_cookie).map(Some)
            }
            (Some(_), None) if dev => Ok(None),
            (Some(_), None) => Err(self.invalid_token("this hub has no publisher key configured")),
            (None, _) if dev => Ok(None),
            (None, _) => {
                Err(self.unauthorized("publishing needs a token (Authorization: Bearer ...)"))
            }
        }
    }

    /// A subscriber's grants; `Ok(None)` for an anonymous subscriber.
    pub fn subscriber(
        &self,
        credentials: &Credentials<'_>,
        anonymous_allowed: bool,
    ) -> Result<Option<Grants>, ApiError> {
        match (self.token(credentials)?, &self.subscriber) {
            (Some((token, by_cookie)), Some(verifier)) => {
                self.grants(verifier, token, by_cookie).map(Some)
            }
            (Some(_), None) => Err(self.invalid_token("this hub has no subscriber key configured")),
            (None, _) if anonymous_allowed => Ok(None),
            (None, _) => {
                Err(self.unauthorized("subscribing needs a token (cookie or Authorization header)"))
            }
        }
    }

    /// The admin API: `Authorization: Bearer <admin token>`; open in dev mode
    /// when no admin token is set.
    pub fn admin(&self, headers: &HeaderMap, dev: bool) -> Result<(), ApiError> {
        let Some(expected) = &self.admin_token else {
            return if dev {
                Ok(())
            } else {
                Err(admin_unauthorized(
                    "the admin API needs --admin-token (or --dev)",
                ))
            };
        };
        let presented = bearer(headers).flatten().unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else if presented.is_empty() {
            Err(admin_unauthorized(
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

impl Auth {
    /// The admin credential for a page a person opens in a browser, which
    /// cannot send a Bearer header: also HTTP Basic with the admin token as
    /// the password (any user name), and a Basic challenge when none is
    /// given, so that the browser asks for it (and then sends it with the
    /// page's own requests, its `EventSource` included).
    pub fn admin_in_browser(&self, headers: &HeaderMap, dev: bool) -> Result<(), ApiError> {
        if bearer(headers).is_some_and(|t| t.is_some()) || self.admin_token.is_none() {
            return self.admin(headers, dev);
        }
        let expected = self.admin_token.as_deref().unwrap_or_default();
        match basic_password(headers) {
            Some(given) if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
            given => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                if given.is_some() {
                    "invalid_token"
                } else {
                    "unauthorized"
                },
                "the status page needs the admin token, as the password of HTTP Basic (any user)",
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"ssehub admin\", charset=\"UTF-8\"",
            )),
        }
    }
}

/// The password of an `Authorization: Basic` header.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_owned())
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

/// The admin API's own credential is no OAuth token: a plain challenge.
fn admin_unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        .with_header(header::WWW_AUTHENTICATE, "Bearer")
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
            serde_json::json!({"type": "https://mercure.rocks/authorization-detail", "actions": ["publish"], "topics": [{"match": "*", "match_type": "nonsense"}]}),
            serde_json::json!({"type": "https://mercure.rocks/authorization-detail", "actions": ["subscribe"], "topics": [{"match": "*"}], "payload": "not an object"}),
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

    const KEY: &str = "a-secret-of-enough-length";

    fn verifier(configure: impl FnOnce(&mut AuthSettings)) -> Verifier {
        let mut settings = AuthSettings {
            algorithm: "HS256".into(),
            hub_url: Some(hub()),
            ..AuthSettings::default()
        };
        configure(&mut settings);
        Verifier::new(KEY, &settings).unwrap()
    }

    fn sign(typ: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.typ = typ.map(str::to_owned);
        let key = jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    fn soon() -> f64 {
        unix_now() + 600.0
    }

    /// RFC 9068's profile for tokens that say they are access tokens (or
    /// carry the draft's details): `typ`, `exp`, `iss`, and an `aud` naming
    /// this hub.
    #[test]
    fn access_tokens_must_name_the_hub_expire_and_say_who_issued_them() {
        let verifier = verifier(|_| {});
        let detail = serde_json::json!([{
            "type": DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "*"}]
        }]);
        let full = serde_json::json!({
            "iss": "https://example.com", "aud": hub().as_str(), "exp": soon(),
            "sub": "s", "authorization_details": detail,
        });
        for typ in ["at+jwt", "application/at+jwt", "AT+JWT"] {
            assert!(
                verifier.verify(&sign(Some(typ), full.clone())).is_ok(),
                "{typ}"
            );
        }
        let mut listed = full.clone();
        listed["aud"] = serde_json::json!(["other", hub().as_str()]);
        assert!(verifier.verify(&sign(Some("at+jwt"), listed)).is_ok());
        for (typ, without, or_with) in [
            (Some("JWT"), None, None),
            (None, None, None),
            (Some("at+jwt"), Some("exp"), None),
            (Some("at+jwt"), Some("iss"), None),
            (Some("at+jwt"), Some("aud"), None),
            (
                Some("at+jwt"),
                None,
                Some(serde_json::json!(
                    "https://other.example/.well-known/mercure"
                )),
            ),
            (Some("at+jwt"), None, Some(serde_json::json!(["a", "b"]))),
        ] {
            let mut claims = full.clone();
            if let Some(claim) = without {
                claims.as_object_mut().unwrap().remove(claim);
            }
            if let Some(aud) = or_with {
                claims["aud"] = aud;
            }
            let refused = verifier.verify(&sign(typ, claims.clone()));
            assert!(refused.is_err(), "{typ:?} {claims}");
        }
        // Tokens typed for another purpose are refused, whatever they carry.
        for typ in ["id_token+jwt", "secevent+jwt", " at+jwt", "JOSE"] {
            let claims = serde_json::json!({"mercure": {"subscribe": ["*"]}});
            assert!(verifier.verify(&sign(Some(typ), claims)).is_err(), "{typ}");
        }
        for typ in ["JWT", "jwt", "application/jwt"] {
            let claims = serde_json::json!({"mercure": {"subscribe": ["*"]}});
            assert!(verifier.verify(&sign(Some(typ), claims)).is_ok(), "{typ}");
        }
        // `typ: at+jwt` alone holds a 0.x-shaped token to the profile too.
        let classic = serde_json::json!({"mercure": {"subscribe": ["*"]}});
        assert!(
            verifier
                .verify(&sign(Some("at+jwt"), classic.clone()))
                .is_err()
        );
        assert!(verifier.verify(&sign(None, classic)).is_ok());
    }

    /// RFC 7519 NumericDates may have fractions; Symfony's token factory
    /// writes `exp` with microseconds.
    #[test]
    fn fractional_times_are_read() {
        let verifier = verifier(|_| {});
        let claims = |exp: f64| serde_json::json!({"exp": exp, "mercure": {"publish": ["*"]}});
        assert!(
            verifier
                .verify(&sign(Some("JWT"), claims(soon() + 0.25)))
                .is_ok()
        );
        let expired = verifier.verify(&sign(Some("JWT"), claims(unix_now() - 60.5)));
        assert_eq!(expired.unwrap_err(), "the token has expired");
        let early = serde_json::json!({"nbf": soon() + 0.5, "mercure": {"publish": ["*"]}});
        assert!(verifier.verify(&sign(None, early)).is_err());
    }

    #[test]
    fn the_metadata_is_where_rfc_9728_puts_it() {
        let settings = AuthSettings {
            hub_url: Some(hub()),
            ..AuthSettings::default()
        };
        assert_eq!(
            settings.metadata_url().as_str(),
            "https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure"
        );
        assert_eq!(settings.resource(), hub().as_str());
        let named = AuthSettings {
            audience: Some("urn:example:hub".into()),
            ..settings
        };
        assert_eq!(named.resource(), "urn:example:hub");
        assert!(
            named
                .metadata_url()
                .as_str()
                .starts_with("https://hub.example.com/")
        );
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
