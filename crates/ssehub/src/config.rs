//! Configuration of `ssehub serve`: flags, `SSEHUB_*` environment variables
//! and an optional TOML file, in that order of precedence, over defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::http::auth::AuthSettings;
use crate::http::limits::LimitSettings;
use crate::hub::{HubConfig, TopicLimits};
use crate::store::{DurableStore, MemoryStore, Store, StoreError};

/// Where history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// One file in the data directory; every acknowledged event survives a crash.
    Durable,
    /// In memory: nothing survives a restart.
    Memory,
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// History store.
    pub store: StoreKind,
    /// Directory of the durable store.
    pub data_dir: PathBuf,
    /// Total bytes of stored events before the oldest are dropped.
    pub history_max_bytes: usize,
    /// Anonymous publishing and admin access, for development only.
    pub dev: bool,
    /// Comment line sent on an idle stream this often.
    pub heartbeat: Duration,
    /// Reconnection delay suggested to clients (`retry:`).
    pub retry: Duration,
    /// Streams are ended after this long (clients reconnect and resume).
    pub max_lifetime: Option<Duration>,
    /// Events kept per topic.
    pub history_size: usize,
    /// Events older than this are dropped from history.
    pub history_ttl: Duration,
    /// Largest publish body in bytes.
    pub max_body: usize,
    /// Topics per event, selectors per subscription.
    pub max_topics: usize,
    /// Bytes per topic or selector.
    pub max_topic_length: usize,
    /// Events queued per connection before it counts as slow.
    pub queue_size: usize,
    /// How long shutdown waits for connections to close.
    pub shutdown_timeout: Duration,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Publisher JWT key: an HMAC secret, or a PEM public key (or its file).
    pub publisher_jwt_key: Option<String>,
    /// Subscriber JWT key, same forms.
    pub subscriber_jwt_key: Option<String>,
    /// The JWT algorithm accepted.
    pub jwt_alg: String,
    /// Required `aud`.
    pub jwt_audience: Option<String>,
    /// Required `iss`.
    pub jwt_issuer: Option<String>,
    /// Refuse tokens without `exp`.
    pub jwt_require_exp: bool,
    /// Cookie carrying a subscriber's (or publisher's) token.
    pub cookie_name: String,
    /// Accept tokens in the `authorization` / `access_token` query parameter.
    pub allow_query_token: bool,
    /// Subscribers without a token may receive public updates.
    pub anonymous_subscribers: bool,
    /// Bearer token of the admin API.
    pub admin_token: Option<String>,
    /// Origins allowed by CORS; `*` for any, without credentials.
    pub cors_origins: Vec<String>,
    /// Open streams in all (0: no limit).
    pub max_connections: usize,
    /// Open streams per client address (0: no limit).
    pub max_connections_per_address: usize,
    /// Open streams per token subject (0: no limit).
    pub max_connections_per_subject: usize,
    /// Publishes per second per publisher (0: no limit).
    pub publish_rate: u32,
    /// Serve the demo pages' backend (`/demo/...`).
    pub demos: bool,
    /// Delay between demo steps.
    pub demo_pace: Duration,
    /// OpenAI-compatible endpoint the chat demo relays.
    pub llm_url: Option<String>,
    /// Model name sent to it.
    pub llm_model: String,
    /// Bearer key for it.
    pub llm_api_key: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: StoreKind::Durable,
            data_dir: PathBuf::from("ssehub-data"),
            history_max_bytes: 1 << 30,
            dev: false,
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            history_size: 1000,
            history_ttl: Duration::from_secs(3600),
            max_body: 1024 * 1024,
            max_topics: 32,
            max_topic_length: 1024,
            queue_size: 512,
            shutdown_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            publisher_jwt_key: None,
            subscriber_jwt_key: None,
            jwt_alg: "HS256".into(),
            jwt_audience: None,
            jwt_issuer: None,
            jwt_require_exp: false,
            cookie_name: "mercureAuthorization".into(),
            allow_query_token: false,
            anonymous_subscribers: true,
            admin_token: None,
            cors_origins: Vec::new(),
            max_connections: 100_000,
            max_connections_per_address: 0,
            max_connections_per_subject: 100,
            publish_rate: 0,
            demos: true,
            demo_pace: Duration::from_millis(100),
            llm_url: None,
            llm_model: "gpt-4o-mini".into(),
            llm_api_key: None,
        }
    }
}

impl Config {
    /// Opens the configured store.
    pub fn open_store(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self.store {
            StoreKind::Durable => Arc::new(DurableStore::open(&self.data_dir)?),
            StoreKind::Memory => Arc::new(MemoryStore),
        })
    }

    /// The JWT part of the configuration.
    pub fn auth_settings(&self) -> AuthSettings {
        AuthSettings {
            publisher_key: self.publisher_jwt_key.clone(),
            subscriber_key: self.subscriber_jwt_key.clone(),
            algorithm: self.jwt_alg.clone(),
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
            require_exp: self.jwt_require_exp,
        }
    }

    /// The demo backend.
    pub fn demo_settings(&self) -> crate::demo::DemoSettings {
        crate::demo::DemoSettings {
            pace: self.demo_pace,
            llm: self
                .llm_url
                .as_ref()
                .map(|url| crate::demo::chat::LlmSettings {
                    url: url.clone(),
                    model: self.llm_model.clone(),
                    api_key: self.llm_api_key.clone(),
                }),
        }
    }

    /// The abuse limits.
    pub fn limit_settings(&self) -> LimitSettings {
        LimitSettings {
            max_connections: self.max_connections,
            max_per_address: self.max_connections_per_address,
            max_per_subject: self.max_connections_per_subject,
            publish_rate: self.publish_rate,
        }
    }

    /// The hub's part of the configuration.
    pub fn hub(&self) -> HubConfig {
        HubConfig {
            history_size: self.history_size,
            history_ttl: self.history_ttl,
            queue_size: self.queue_size,
            history_max_bytes: self.history_max_bytes,
            limits: TopicLimits {
                max_topics: self.max_topics,
                max_topic_length: self.max_topic_length,
            },
            heartbeat: self.heartbeat,
            max_lifetime: self.max_lifetime,
            retry: self.retry,
        }
    }
}

/// `ssehub serve` flags. Each also reads `SSEHUB_<NAME>`; unset ones come
/// from the config file, then from the defaults shown.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys as the flag names).
    #[arg(long, env = "SSEHUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SSEHUB_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where history is kept [default: durable].
    #[arg(long, env = "SSEHUB_STORE")]
    pub store: Option<StoreKind>,
    /// Directory of the durable store [default: ./ssehub-data].
    #[arg(long, env = "SSEHUB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Total size of stored events, e.g. 512MiB; the oldest go first [default: 1GiB].
    #[arg(long, env = "SSEHUB_HISTORY_MAX_BYTES", value_parser = parse_size)]
    pub history_max_bytes: Option<usize>,
    /// Allow anonymous publishing and admin access. Never in production.
    #[arg(long, env = "SSEHUB_DEV")]
    pub dev: bool,
    /// Heartbeat interval on idle streams [default: 15s].
    #[arg(long, env = "SSEHUB_HEARTBEAT", value_parser = parse_duration)]
    pub heartbeat: Option<Duration>,
    /// Reconnection delay suggested to clients [default: 3s].
    #[arg(long, env = "SSEHUB_RETRY", value_parser = parse_duration)]
    pub retry: Option<Duration>,
    /// End streams after this long so clients reconnect and resume; 0 for never [default: 30m].
    #[arg(long, env = "SSEHUB_MAX_LIFETIME", value_parser = parse_duration)]
    pub max_lifetime: Option<Duration>,
    /// Events kept per topic [default: 1000].
    #[arg(long, env = "SSEHUB_HISTORY_SIZE")]
    pub history_size: Option<usize>,
    /// Age after which events leave history [default: 1h].
    #[arg(long, env = "SSEHUB_HISTORY_TTL", value_parser = parse_duration)]
    pub history_ttl: Option<Duration>,
    /// Largest publish body, e.g. 1MiB or 65536 [default: 1MiB].
    #[arg(long, env = "SSEHUB_MAX_BODY", value_parser = parse_size)]
    pub max_body: Option<usize>,
    /// Topics per event and selectors per subscription [default: 32].
    #[arg(long, env = "SSEHUB_MAX_TOPICS")]
    pub max_topics: Option<usize>,
    /// Bytes per topic or selector [default: 1024].
    #[arg(long, env = "SSEHUB_MAX_TOPIC_LENGTH")]
    pub max_topic_length: Option<usize>,
    /// Events queued per connection before it is dropped as slow [default: 512].
    #[arg(long, env = "SSEHUB_QUEUE_SIZE")]
    pub queue_size: Option<usize>,
    /// How long shutdown waits for connections [default: 10s].
    #[arg(long, env = "SSEHUB_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// How long a client may take to send request headers [default: 10s].
    #[arg(long, env = "SSEHUB_HEADER_READ_TIMEOUT", value_parser = parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// Publisher JWT key: an HMAC secret, or a PEM public key or the path of its file.
    #[arg(long, env = "SSEHUB_PUBLISHER_JWT_KEY", hide_env_values = true)]
    pub publisher_jwt_key: Option<String>,
    /// Subscriber JWT key: an HMAC secret, or a PEM public key or the path of its file.
    #[arg(long, env = "SSEHUB_SUBSCRIBER_JWT_KEY", hide_env_values = true)]
    pub subscriber_jwt_key: Option<String>,
    /// The one JWT algorithm accepted: HS256, HS384, HS512, RS256, ..., ES256, ES384, PS256, ..., EdDSA [default: HS256].
    #[arg(long, env = "SSEHUB_JWT_ALG")]
    pub jwt_alg: Option<String>,
    /// Require this `aud` in tokens.
    #[arg(long, env = "SSEHUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Require this `iss` in tokens.
    #[arg(long, env = "SSEHUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Refuse tokens without `exp`.
    #[arg(long, env = "SSEHUB_JWT_REQUIRE_EXP")]
    pub jwt_require_exp: bool,
    /// Name of the cookie carrying the token [default: mercureAuthorization].
    #[arg(long, env = "SSEHUB_COOKIE_NAME")]
    pub cookie_name: Option<String>,
    /// Accept tokens in the `authorization` or `access_token` query parameter (they end up in logs).
    #[arg(long, env = "SSEHUB_ALLOW_QUERY_TOKEN")]
    pub allow_query_token: bool,
    /// Whether subscribers without a token receive public updates [default: true].
    #[arg(long, env = "SSEHUB_ANONYMOUS_SUBSCRIBERS")]
    pub anonymous_subscribers: Option<bool>,
    /// Bearer token for the admin API (/v1/...).
    #[arg(long, env = "SSEHUB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Origin allowed by CORS, e.g. https://app.example.com (repeat; `*` for any, without cookies).
    #[arg(
        long = "cors-origin",
        env = "SSEHUB_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Open streams in all; 0 for no limit [default: 100000].
    #[arg(long, env = "SSEHUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open streams per client address; 0 for no limit [default: 0].
    #[arg(long, env = "SSEHUB_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Open streams per token subject; 0 for no limit [default: 100].
    #[arg(long, env = "SSEHUB_MAX_CONNECTIONS_PER_SUBJECT")]
    pub max_connections_per_subject: Option<usize>,
    /// Publishes per second per publisher; 0 for no limit [default: 0].
    #[arg(long, env = "SSEHUB_PUBLISH_RATE")]
    pub publish_rate: Option<u32>,
    /// Serve the demo backend behind the pages at / [default: true].
    #[arg(long, env = "SSEHUB_DEMOS")]
    pub demos: Option<bool>,
    /// Delay between demo steps (file slices, answer fragments) [default: 100ms].
    #[arg(long, env = "SSEHUB_DEMO_PACE", value_parser = parse_duration)]
    pub demo_pace: Option<Duration>,
    /// Relay this OpenAI-compatible endpoint in the chat demo, e.g. http://localhost:11434/v1.
    #[arg(long, env = "SSEHUB_LLM_URL")]
    pub llm_url: Option<String>,
    /// Model name for --llm-url [default: gpt-4o-mini].
    #[arg(long, env = "SSEHUB_LLM_MODEL")]
    pub llm_model: Option<String>,
    /// API key for --llm-url.
    #[arg(long, env = "SSEHUB_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
}

/// The config file: the same settings, kebab-case keys, durations and sizes
/// as strings (`heartbeat = "5s"`, `max-body = "64KiB"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<SocketAddr>,
    store: Option<StoreKind>,
    data_dir: Option<PathBuf>,
    history_max_bytes: Option<String>,
    dev: Option<bool>,
    heartbeat: Option<String>,
    retry: Option<String>,
    max_lifetime: Option<String>,
    history_size: Option<usize>,
    history_ttl: Option<String>,
    max_body: Option<String>,
    max_topics: Option<usize>,
    max_topic_length: Option<usize>,
    queue_size: Option<usize>,
    shutdown_timeout: Option<String>,
    header_read_timeout: Option<String>,
    publisher_jwt_key: Option<String>,
    subscriber_jwt_key: Option<String>,
    jwt_alg: Option<String>,
    jwt_audience: Option<String>,
    jwt_issuer: Option<String>,
    jwt_require_exp: Option<bool>,
    cookie_name: Option<String>,
    allow_query_token: Option<bool>,
    anonymous_subscribers: Option<bool>,
    admin_token: Option<String>,
    cors_origins: Option<Vec<String>>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    max_connections_per_subject: Option<usize>,
    publish_rate: Option<u32>,
    demos: Option<bool>,
    demo_pace: Option<String>,
    llm_url: Option<String>,
    llm_model: Option<String>,
    llm_api_key: Option<String>,
}

/// A configuration that cannot be used, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl ServeArgs {
    /// Merges flags and environment (already in `self`), the config file and
    /// the defaults.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let duration = |key: &str,
                        value: &Option<String>|
         -> Result<Option<Duration>, ConfigError> {
            value
                .as_deref()
                .map(|v| parse_duration(v).map_err(|e| ConfigError::Invalid(format!("{key}: {e}"))))
                .transpose()
        };
        let size = |key: &str, value: &Option<String>| -> Result<Option<usize>, ConfigError> {
            value
                .as_deref()
                .map(|v| parse_size(v).map_err(|e| ConfigError::Invalid(format!("{key}: {e}"))))
                .transpose()
        };
        let max_lifetime = self
            .max_lifetime
            .or(duration("max-lifetime", &file.max_lifetime)?);
        let config = Config {
            listen: self.listen.or(file.listen).unwrap_or(d.listen),
            store: self.store.or(file.store).unwrap_or(d.store),
            data_dir: self
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(d.data_dir),
            history_max_bytes: self
                .history_max_bytes
                .or(size("history-max-bytes", &file.history_max_bytes)?)
                .unwrap_or(d.history_max_bytes),
            dev: self.dev || file.dev.unwrap_or(d.dev),
            heartbeat: self
                .heartbeat
                .or(duration("heartbeat", &file.heartbeat)?)
                .unwrap_or(d.heartbeat),
            retry: self
                .retry
                .or(duration("retry", &file.retry)?)
                .unwrap_or(d.retry),
            max_lifetime: match max_lifetime {
                Some(Duration::ZERO) => None,
                Some(limit) => Some(limit),
                None => d.max_lifetime,
            },
            history_size: self
                .history_size
                .or(file.history_size)
                .unwrap_or(d.history_size),
            history_ttl: self
                .history_ttl
                .or(duration("history-ttl", &file.history_ttl)?)
                .unwrap_or(d.history_ttl),
            max_body: self
                .max_body
                .or(size("max-body", &file.max_body)?)
                .unwrap_or(d.max_body),
            max_topics: self.max_topics.or(file.max_topics).unwrap_or(d.max_topics),
            max_topic_length: self
                .max_topic_length
                .or(file.max_topic_length)
                .unwrap_or(d.max_topic_length),
            queue_size: self.queue_size.or(file.queue_size).unwrap_or(d.queue_size),
            shutdown_timeout: self
                .shutdown_timeout
                .or(duration("shutdown-timeout", &file.shutdown_timeout)?)
                .unwrap_or(d.shutdown_timeout),
            header_read_timeout: self
                .header_read_timeout
                .or(duration("header-read-timeout", &file.header_read_timeout)?)
                .unwrap_or(d.header_read_timeout),
            publisher_jwt_key: self.publisher_jwt_key.clone().or(file.publisher_jwt_key),
            subscriber_jwt_key: self.subscriber_jwt_key.clone().or(file.subscriber_jwt_key),
            jwt_alg: self.jwt_alg.clone().or(file.jwt_alg).unwrap_or(d.jwt_alg),
            jwt_audience: self.jwt_audience.clone().or(file.jwt_audience),
            jwt_issuer: self.jwt_issuer.clone().or(file.jwt_issuer),
            jwt_require_exp: self.jwt_require_exp || file.jwt_require_exp.unwrap_or(false),
            cookie_name: self
                .cookie_name
                .clone()
                .or(file.cookie_name)
                .unwrap_or(d.cookie_name),
            allow_query_token: self.allow_query_token || file.allow_query_token.unwrap_or(false),
            anonymous_subscribers: self
                .anonymous_subscribers
                .or(file.anonymous_subscribers)
                .unwrap_or(d.anonymous_subscribers),
            admin_token: self.admin_token.clone().or(file.admin_token),
            cors_origins: if self.cors_origins.is_empty() {
                file.cors_origins.unwrap_or_default()
            } else {
                self.cors_origins.clone()
            },
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            max_connections_per_address: self
                .max_connections_per_address
                .or(file.max_connections_per_address)
                .unwrap_or(d.max_connections_per_address),
            max_connections_per_subject: self
                .max_connections_per_subject
                .or(file.max_connections_per_subject)
                .unwrap_or(d.max_connections_per_subject),
            publish_rate: self
                .publish_rate
                .or(file.publish_rate)
                .unwrap_or(d.publish_rate),
            demos: self.demos.or(file.demos).unwrap_or(d.demos),
            demo_pace: self
                .demo_pace
                .or(duration("demo-pace", &file.demo_pace)?)
                .unwrap_or(d.demo_pace),
            llm_url: self.llm_url.clone().or(file.llm_url),
            llm_model: self
                .llm_model
                .clone()
                .or(file.llm_model)
                .unwrap_or(d.llm_model),
            llm_api_key: self.llm_api_key.clone().or(file.llm_api_key),
        };
        if let Some(token) = &config.admin_token
            && token.len() < 16
        {
            return Err(ConfigError::Invalid(
                "admin-token must be at least 16 characters".into(),
            ));
        }
        for (name, value) in [
            ("heartbeat", config.heartbeat),
            ("history-ttl", config.history_ttl),
            ("header-read-timeout", config.header_read_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        for (name, value) in [
            ("history-size", config.history_size),
            ("queue-size", config.queue_size),
            ("max-topics", config.max_topics),
            ("max-topic-length", config.max_topic_length),
            ("max-body", config.max_body),
            ("history-max-bytes", config.history_max_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        Ok(config)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// `500ms`, `15s`, `30m`, `1h`, `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 15s, 30m or 1h ({e})"))
}

/// `65536`, `64KiB`, `1MiB`, `1MB` (binary units are powers of 1024, decimal
/// ones of 1000).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("{text:?} is not a size like 65536, 64KiB or 1MiB")),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?} is not a size like 65536, 64KiB or 1MiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("1 furlong").is_err());
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("ssehub-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ssehub.toml");
        std::fs::write(
            &path,
            "heartbeat = \"5s\"\nhistory-size = 7\nmax-lifetime = \"0\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            history_size: Some(9),
            ..ServeArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.heartbeat, Duration::from_secs(5));
        assert_eq!(config.history_size, 9);
        assert_eq!(config.max_lifetime, None);
        assert_eq!(config.retry, Duration::from_secs(3));

        std::fs::write(&path, "heartbeet = \"5s\"\n").unwrap();
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("unknown field `heartbeet`"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
