//! Configuration of `ssehub serve`.
//!
//! Every setting is declared once, in the [`settings!`] list below: its
//! type, its default as a user would write it, the parser of its values and
//! its help text. From that one line come the flag (`--history-size`), the
//! environment variable (`SSEHUB_HISTORY_SIZE`), the key of the TOML file
//! (`history-size`), the default and the help. One merge step then picks each
//! value by precedence: flag, then environment, then file, then default.
//! Every value, the defaults included, goes through the same parser, so a
//! setting means the same wherever it is written, and a flag can switch off
//! what the file switched on (`--dev=false`).
//!
//! Adding a setting is one line here, plus its row in docs/API.md (a test
//! checks that table against this list).

mod parsers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::http::auth::AuthSettings;
use crate::http::limits::LimitSettings;
use crate::hub::{HubConfig, TopicLimits};
use crate::store::{DurableStore, MemoryStore, Store, StoreError};
pub use parsers::{Parser, parse_duration, parse_size};

/// Where history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// One file in the data directory; every acknowledged event survives a crash.
    Durable,
    /// In memory: nothing survives a restart.
    Memory,
}

/// How log lines are written (on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per record, for a person reading a terminal.
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// What a bare `match=` selector of a subscription means: the two Mercure
/// dialects disagree (`topic=` is always a URI template, `match_exact=` and
/// `match_urlpattern=` always what they say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BareMatch {
    /// The current Mercure draft: the exact topic, byte for byte.
    Exact,
    /// ssehub before the draft: an exact topic, `*`, or a URI template.
    Template,
}

/// Declares the settings: the resolved [`Config`], the list of
/// [`SETTINGS`] that the flags, variables and file keys are made from, and
/// the step that builds a `Config` from chosen values.
///
/// Each entry: doc comment (the help), `name: Type = "default", parser`,
/// then options: `secret` (never shown: not in `--help`'s environment
/// values, not in `Debug`, not printed) and `flag = "..."` (a flag name
/// other than the key).
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $ty:ty = $default:literal, $parser:ident $(, $option:ident $(= $value:literal)?)*;
    )+) => {
        /// Everything `serve` needs, resolved.
        #[derive(Clone)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
        }

        /// Every setting, in the order `ssehub serve --help` lists them.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                field: stringify!($name),
                help: concat!($($doc),+),
                default: $default,
                kind: { let parser: Parser<$ty> = parsers::$parser(); parser.kind },
                value_name: { let parser: Parser<$ty> = parsers::$parser(); parser.value_name },
                options: &[$( (stringify!($option), settings!(@value $($value)?)) ),*],
            },
        )+];

        impl Config {
            /// Builds a configuration from one chosen text per setting.
            fn from_chosen(chosen: &Chosen) -> Result<Config, ConfigError> {
                Ok(Config {
                    $( $name: chosen.parse(stringify!($name), parsers::$parser())?, )+
                })
            }

            /// Each setting's value for [`Debug`]; secrets are never shown.
            fn debug_values(&self) -> Vec<(&'static str, String)> {
                vec![$((stringify!($name), {
                    let value: &$ty = &self.$name;
                    setting(stringify!($name)).shown(format!("{value:?}"))
                })),+]
            }
        }
    };
    (@value) => { "" };
    (@value $value:literal) => { $value };
}

settings! {
    /// Address to listen on.
    listen: SocketAddr = "127.0.0.1:8080", address;
    /// Connections the kernel may hold for the hub before it accepts them (the listen
    /// backlog); capped by the kernel's net.core.somaxconn.
    listen_backlog: u32 = "65535", count;
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain; reloaded on SIGHUP and
    /// when the file changes, without dropping streams. Needs --tls-key.
    tls_cert: Option<PathBuf> = "", optional_path;
    /// The PEM private key of --tls-cert.
    tls_key: Option<PathBuf> = "", optional_path;
    /// Also accept cleartext HTTP/2 (h2c, with prior knowledge) on a listener without TLS, for
    /// a proxy in front that speaks it.
    h2c: bool = "false", switch;
    /// Serve Prometheus metrics at /metrics on this address, without a credential (on the main
    /// listener, /metrics needs the admin credential).
    metrics_listen: Option<SocketAddr> = "", optional_address;
    /// Log lines as text or json (one object per line), on stderr; RUST_LOG filters them.
    log_format: LogFormat = "text", log_format;
    /// The hub's URL as clients reach it, e.g. https://hub.example.com/.well-known/mercure:
    /// relative URL patterns and topics resolve against it (default: http://LISTEN/.well-known/mercure).
    public_url: Option<url::Url> = "", optional_url;
    /// What a bare match= selector means: exact (the current Mercure draft: the topic, byte for
    /// byte) or template (a URI template like books/{id}, as topic= always is).
    bare_match: BareMatch = "exact", bare_match;
    /// Active subscriptions (Mercure): publish an event when a subscription starts or ends, and
    /// list them at /.well-known/mercure/subscriptions.
    subscriptions: bool = "false", switch;
    /// Where history is kept: durable (one file in the data directory; every acknowledged
    /// event survives a crash) or memory (nothing survives a restart).
    store: StoreKind = "durable", store;
    /// Directory of the durable store.
    data_dir: PathBuf = "ssehub-data", path;
    /// Make this hub a node of a cluster whose nodes share one event log in Redis, e.g.
    /// redis://10.0.0.5:6379/0 (a password as redis://:PASSWORD@HOST): the log assigns the ids,
    /// every node fans out to its own subscribers. Replaces --store.
    redis_url: Option<String> = "", optional_text, secret;
    /// Prefix of the cluster's Redis keys (one hash tag, {PREFIX}); clusters sharing a Redis
    /// need different prefixes.
    redis_prefix: String = "ssehub", text;
    /// How long a call to Redis may take before the publish waiting on it is refused (503).
    redis_timeout: Duration = "2s", positive_duration;
    /// Redis replicas that must confirm a publish (WAIT) before it is acknowledged; one that
    /// they do not confirm within half of --redis-timeout is answered 503 not_replicated.
    redis_wait_replicas: u32 = "0", count;
    /// Total size of stored events, e.g. 512MiB; the oldest go first.
    history_max_bytes: usize = "1GiB", size;
    /// Memory for the newest events of history, replayed without reading the data file (the
    /// durable store; with the memory store all history is in memory).
    history_cache: usize = "32MiB", size;
    /// Allow anonymous publishing and admin access. Never in production.
    dev: bool = "false", switch;
    /// Heartbeat interval on idle streams.
    heartbeat: Duration = "15s", positive_duration;
    /// Reconnection delay suggested to clients.
    retry: Duration = "3s", duration;
    /// Streams the hub ends together (at shutdown; at the maximum lifetime of streams opened
    /// together) are told to come back spread over this window, so a restart does not bring
    /// every client back in the same second; 0 for no spread.
    reconnect_spread: Duration = "5s", duration;
    /// End streams after this long so clients reconnect and resume; 0 for never.
    max_lifetime: Option<Duration> = "30m", lifetime;
    /// Events kept per topic.
    history_size: usize = "1000", positive_count;
    /// Age after which events leave history.
    history_ttl: Duration = "1h", positive_duration;
    /// Largest publish body, e.g. 1MiB or 65536.
    max_body: usize = "1MiB", size;
    /// Topics per event and selectors per subscription.
    max_topics: usize = "32", positive_count;
    /// Bytes per topic or selector.
    max_topic_length: usize = "1024", positive_count;
    /// Events queued per connection before it is dropped as slow.
    queue_size: usize = "512", positive_count;
    /// Events waiting to be replayed across all streams (8 bytes each), an eighth of it per
    /// client address; a subscription that would exceed either while others replay is refused
    /// with 503 replay_busy.
    max_replay: usize = "4000000", positive_count;
    /// Client ids whose acknowledged position (POST /v1/ack) is kept; the longest
    /// unacknowledged is forgotten first.
    max_acks: usize = "100000", positive_count;
    /// How long shutdown waits for connections; how long a stream the hub ends may take to
    /// deliver its last bytes, and a replaying stream may go without taking any, before its
    /// connection is reset.
    shutdown_timeout: Duration = "10s", duration;
    /// How long a client may take to send request headers.
    header_read_timeout: Duration = "10s", positive_duration;
    /// How long a client may take to send a request body, counted from its headers.
    body_read_timeout: Duration = "30s", positive_duration;
    /// Publisher JWT key: an HMAC secret, or a PEM public key or the path of its file.
    publisher_jwt_key: Option<String> = "", optional_text, secret;
    /// Subscriber JWT key: an HMAC secret, or a PEM public key or the path of its file.
    subscriber_jwt_key: Option<String> = "", optional_text, secret;
    /// The one JWT algorithm accepted: HS256, HS384, HS512, RS256, ..., ES256, ES384, PS256,
    /// ..., EdDSA.
    jwt_alg: String = "HS256", jwt_algorithm;
    /// Require this `aud` in tokens.
    jwt_audience: Option<String> = "", optional_text;
    /// Require this `iss` in tokens.
    jwt_issuer: Option<String> = "", optional_text;
    /// Refuse tokens without `exp`.
    jwt_require_exp: bool = "false", switch;
    /// A secret (at least 16 characters) that makes the hub's event ids opaque: the order of
    /// events encrypted, so ids disclose no counts or timing (the same secret on every restart).
    event_id_key: Option<String> = "", admin_token, secret;
    /// Name of the cookie carrying the token.
    cookie_name: String = "mercureAuthorization", text;
    /// Accept tokens in the `authorization` or `access_token` query parameter (they end up in
    /// logs).
    allow_query_token: bool = "false", switch;
    /// Whether subscribers without a token receive public updates.
    anonymous_subscribers: bool = "true", switch;
    /// Bearer token for the admin API (/v1/...), at least 16 characters.
    admin_token: Option<String> = "", admin_token, secret;
    /// Origin allowed by CORS, e.g. https://app.example.com (repeat, or separate with commas;
    /// `*` for any, without cookies).
    cors_origins: Vec<String> = "", origins, flag = "cors-origin";
    /// Open streams in all; 0 for no limit.
    max_connections: usize = "100000", count;
    /// Open connections per client address, per /64 for IPv6 (counted from accept; on HTTP/2,
    /// each stream too; behind a trusted proxy, the streams of each address it forwards); 0 for
    /// no limit.
    max_connections_per_address: usize = "1000", count;
    /// Proxies whose forwarding header names the client, as addresses or networks (e.g.
    /// 10.0.0.0/8; repeat, or separate with commas); none by default.
    trusted_proxies: Vec<ipnet::IpNet> = "", proxies;
    /// The header the trusted proxies set: x-forwarded-for or forwarded (the other is ignored:
    /// a proxy passes it through as the client wrote it).
    trusted_proxy_header: crate::http::peers::ForwardingHeader = "x-forwarded-for", forwarding_header;
    /// Open streams per token subject; 0 for no limit.
    max_connections_per_subject: usize = "100", count;
    /// Publishes per second per publisher; 0 for no limit.
    publish_rate: u32 = "0", count;
    /// Path under which the Durable Streams protocol is served: a stream is PREFIX/NAME.
    streams_prefix: String = "/v1/stream", streams_prefix;
    /// Total size of the Durable Streams' data (all of it is in memory; with the durable store
    /// also on disk); an append past it is refused with 507.
    streams_max_bytes: usize = "1GiB", size;
    /// Largest body of one append to (or create of) a durable stream.
    stream_max_append: usize = "16MiB", size;
    /// Durable streams in all; a create past it is refused with 507.
    max_streams: usize = "100000", positive_count;
    /// Idempotent producers (Producer-Id) per durable stream, whose state is kept as long as the
    /// stream; a new one past it is refused with 507.
    stream_max_producers: usize = "256", positive_count;
    /// How long a long-poll read of a durable stream waits for data before answering 204.
    stream_long_poll: Duration = "30s", positive_duration;
    /// How long an SSE read of a durable stream lasts before the hub ends it (the client goes
    /// on from its last offset; the protocol asks for about a minute, for CDN collapsing).
    stream_sse_lifetime: Duration = "60s", positive_duration;
    /// Serve the demo backend behind the pages at / (anyone may use it, with no token) [default:
    /// with --dev only].
    demos: Option<bool> = "", optional_switch;
    /// Delay between demo steps (file slices, answer fragments).
    demo_pace: Duration = "100ms", duration;
    /// Relay this OpenAI-compatible endpoint in the chat demo, e.g. http://localhost:11434/v1.
    llm_url: Option<String> = "", optional_text, secret;
    /// Model name for --llm-url.
    llm_model: String = "gpt-4o-mini", text;
    /// API key for --llm-url.
    llm_api_key: Option<String> = "", optional_text, secret;
}

/// One setting, as declared.
#[derive(Debug)]
pub struct Setting {
    /// The field of [`Config`].
    pub field: &'static str,
    /// The help text.
    pub help: &'static str,
    /// The default, as a user would write it; empty for none.
    pub default: &'static str,
    /// How the flag takes its value.
    pub kind: Kind,
    /// What the flag's value is called in `--help`.
    pub value_name: &'static str,
    options: &'static [(&'static str, &'static str)],
}

/// How a setting's flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--name VALUE`.
    Value,
    /// `--name` alone means true; `--name=false` and `--name false` are accepted.
    Switch,
    /// May be repeated; a value may also list several, separated by commas.
    List,
}

impl Setting {
    /// The TOML key: the field with dashes.
    pub fn key(&self) -> String {
        self.field.replace('_', "-")
    }

    /// The flag, without its dashes.
    pub fn flag(&self) -> String {
        self.option("flag")
            .map_or_else(|| self.key(), str::to_owned)
    }

    /// The environment variable.
    pub fn env(&self) -> String {
        format!("SSEHUB_{}", self.field.to_ascii_uppercase())
    }

    /// Whether the value must never be shown.
    pub fn is_secret(&self) -> bool {
        self.option("secret").is_some()
    }

    fn option(&self, name: &str) -> Option<&'static str> {
        self.options
            .iter()
            .find(|(option, _)| *option == name)
            .map(|(_, value)| *value)
    }

    /// A value as it may be shown: secrets become `<redacted>` when set.
    fn shown(&self, value: String) -> String {
        if self.is_secret() && value != "None" && !value.is_empty() {
            "<redacted>".to_owned()
        } else {
            value
        }
    }
}

fn setting(field: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.field == field)
        .expect("a declared setting")
}

/// Where a value came from, for error messages and `--print-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An `SSEHUB_*` environment variable.
    Env,
    /// The config file.
    File(PathBuf),
    /// The built-in default.
    Default,
}

impl Source {
    fn describe(&self, setting: &Setting) -> String {
        match self {
            Source::Flag => format!("--{}", setting.flag()),
            Source::Env => setting.env(),
            Source::File(path) => format!("{}: {}", path.display(), setting.key()),
            Source::Default => format!("the default of --{}", setting.flag()),
        }
    }
}

/// The text chosen for each setting, and where it came from.
struct Chosen {
    values: Vec<Given>,
}

/// A setting's text and where it came from.
type Given = (&'static Setting, String, Source);

impl Chosen {
    /// For each setting, the first of `over`, `under` and its default that
    /// has it.
    fn layered(over: &[Given], under: &[Given]) -> Chosen {
        let values = SETTINGS
            .iter()
            .map(|setting| {
                over.iter()
                    .chain(under)
                    .find(|(s, ..)| s.field == setting.field)
                    .cloned()
                    .unwrap_or_else(|| (setting, setting.default.to_owned(), Source::Default))
            })
            .collect();
        Chosen { values }
    }

    fn parse<T>(&self, field: &str, parser: Parser<T>) -> Result<T, ConfigError> {
        let (setting, text, source) = self
            .values
            .iter()
            .find(|(s, ..)| s.field == field)
            .expect("every setting is chosen");
        let invalid = |message: String| {
            ConfigError::Invalid(format!("{}: {message}", source.describe(setting)))
        };
        // An empty value given on purpose is most likely a variable that
        // expanded to nothing (`--admin-token "$TOKEN"`): refuse it rather
        // than run without the setting. A list may be emptied.
        if *source != Source::Default && setting.kind != Kind::List && text.trim().is_empty() {
            return Err(invalid(
                "is empty (leave the setting out to use its default)".into(),
            ));
        }
        (parser.parse)(text).map_err(invalid)
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::from_chosen(&Chosen::layered(&[], &[])).expect("the defaults are valid")
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Config");
        for (name, value) in self.debug_values() {
            out.field(name, &format_args!("{value}"));
        }
        out.finish()
    }
}

/// `ssehub serve` flags: `--config FILE`, `--print-config`, and one flag per
/// setting. Holds what was given on the command line or in the environment;
/// [`ServeArgs::resolve`] adds the file and the defaults.
#[derive(Debug, Default, Clone)]
pub struct ServeArgs {
    /// The TOML file, if any.
    pub config: Option<PathBuf>,
    /// Print the resolved settings and where each came from, then exit.
    pub print_config: bool,
    given: Vec<Given>,
}

impl ServeArgs {
    /// Sets a setting as if given as a flag (by its key, e.g. `history-size`).
    pub fn with(mut self, key: &str, value: &str) -> ServeArgs {
        let setting = SETTINGS
            .iter()
            .find(|s| s.key() == key)
            .unwrap_or_else(|| panic!("no setting {key:?}"));
        self.given.retain(|(s, ..)| s.field != setting.field);
        self.given.push((setting, value.to_owned(), Source::Flag));
        self
    }

    /// Merges flags and environment (already in `self`), the config file and
    /// the defaults.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        Config::from_chosen(&self.choose()?)
    }

    /// The resolved settings as a TOML file, one line each with where it came
    /// from; a secret that is set is a comment saying so.
    pub fn describe(&self) -> Result<String, ConfigError> {
        let chosen = self.choose()?;
        // Parse first, so an invalid value is an error here too.
        Config::from_chosen(&chosen)?;
        let mut out = String::new();
        for (setting, text, source) in &chosen.values {
            let from = match source {
                Source::Default => "default".to_owned(),
                other => other.describe(setting),
            };
            // A secret that is set is only said to be, and a setting with
            // no value is only named: their lines are comments, so what is
            // printed still loads as a config file.
            let (line, value) = if setting.is_secret() && !text.is_empty() {
                ("# ", "<redacted>")
            } else if text.is_empty() && setting.kind != Kind::List {
                ("# ", "")
            } else {
                ("", text.as_str())
            };
            out.push_str(&format!(
                "{line}{} = {}  # {from}\n",
                setting.key(),
                toml::Value::String(value.to_owned())
            ));
        }
        Ok(out)
    }

    fn choose(&self) -> Result<Chosen, ConfigError> {
        let Some(path) = &self.config else {
            return Ok(Chosen::layered(&self.given, &[]));
        };
        let file: Vec<Given> = read_file(path)?
            .into_iter()
            .map(|(setting, text)| (setting, text, Source::File(path.clone())))
            .collect();
        // Every value in the file must be valid, also one a flag overrides:
        // the file is the operator's, and may be used without the flag.
        Config::from_chosen(&Chosen::layered(&file, &[]))?;
        Ok(Chosen::layered(&self.given, &file))
    }
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut args = ServeArgs {
            config: matches.get_one::<PathBuf>("config").cloned(),
            print_config: matches.get_flag("print_config"),
            given: Vec::new(),
        };
        for setting in SETTINGS {
            let source = match matches.value_source(setting.field) {
                Some(clap::parser::ValueSource::CommandLine) => Source::Flag,
                Some(clap::parser::ValueSource::EnvVariable) => Source::Env,
                _ => continue,
            };
            let values: Vec<&str> = matches
                .get_many::<String>(setting.field)
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            args.given.push((setting, values.join(","), source));
        }
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = ServeArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for ServeArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        use clap::{Arg, ArgAction};
        let command = command
            .arg(
                Arg::new("config")
                    .long("config")
                    .env("SSEHUB_CONFIG")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("TOML file with any of the settings below (keys as the flag names)"),
            )
            .arg(
                Arg::new("print_config")
                    .long("print-config")
                    .action(ArgAction::SetTrue)
                    .help("Print the resolved settings and where each came from, then exit"),
            );
        SETTINGS.iter().fold(command, |command, setting| {
            let help = setting.help.trim().trim_end_matches('.');
            let help = match setting.default {
                "" => help.to_owned(),
                default => format!("{help} [default: {default}]"),
            };
            // Values are kept as text and checked in `resolve`, with the
            // others: its message names where a bad value came from (flag,
            // variable or file), and never repeats a secret.
            let mut arg = Arg::new(setting.field)
                .long(setting.flag())
                .env(setting.env())
                .value_name(setting.value_name)
                .help(help)
                .hide_env_values(setting.is_secret());
            arg = match setting.kind {
                Kind::Value => arg,
                Kind::Switch => arg.num_args(0..=1).default_missing_value("true"),
                Kind::List => arg.action(ArgAction::Append),
            };
            command.arg(arg)
        })
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        ServeArgs::augment_args(command)
    }
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

/// The file's values, as text: strings as they are, numbers and booleans
/// as written, arrays (for list settings) joined with commas.
fn read_file(path: &Path) -> Result<Vec<(&'static Setting, String)>, ConfigError> {
    let parse_error = |message: String| ConfigError::Parse {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    // The error's own text quotes the offending line, which may hold a
    // secret: say only where it is and what is wrong.
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let at = e.span().map_or(String::new(), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        });
        parse_error(format!("{at}{}", e.message()))
    })?;
    let mut values = Vec::new();
    for (key, value) in table {
        let Some(setting) = SETTINGS.iter().find(|s| s.key() == key) else {
            let known: Vec<String> = SETTINGS.iter().map(Setting::key).collect();
            return Err(parse_error(format!(
                "unknown field `{key}`, expected one of {}",
                known.join(", ")
            )));
        };
        let scalar = |value: &toml::Value| match value {
            toml::Value::String(text) => Some(text.clone()),
            toml::Value::Integer(n) => Some(n.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        };
        let text = match (&value, setting.kind) {
            (toml::Value::Array(items), Kind::List) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<String>>>()
                .map(|items| items.join(",")),
            (value, _) => scalar(value),
        }
        .ok_or_else(|| {
            parse_error(format!(
                "{key}: expected a string, a number or a boolean{}",
                if setting.kind == Kind::List {
                    ", or an array of them"
                } else {
                    ""
                }
            ))
        })?;
        values.push((setting, text));
    }
    Ok(values)
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
            hub_url: Some(self.hub_url()),
        }
    }

    /// Topics per event and bytes per topic.
    pub fn topic_limits(&self) -> TopicLimits {
        TopicLimits {
            max_topics: self.max_topics,
            max_topic_length: self.max_topic_length,
        }
    }

    /// The hub's subscription URL: `--public-url`, or one made of the listen
    /// address.
    pub fn hub_url(&self) -> url::Url {
        self.public_url.clone().unwrap_or_else(|| {
            url::Url::parse(&format!("http://{}/.well-known/mercure", self.listen))
                .expect("an address makes a URL")
        })
    }

    /// Whether the demo backend runs: as asked, or with `--dev` only.
    pub fn demos_on(&self) -> bool {
        self.demos.unwrap_or(self.dev)
    }

    /// The demo backend.
    pub fn demo_settings(&self) -> crate::demo::DemoSettings {
        crate::demo::DemoSettings {
            tasks: Arc::new(tokio::sync::Semaphore::new(crate::demo::MAX_TASKS)),
            answers: Default::default(),
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

    /// The abuse limits (the open-files limit is the process's, read at
    /// startup).
    pub fn limit_settings(&self) -> LimitSettings {
        LimitSettings {
            max_connections: self.max_connections,
            max_per_address: self.max_connections_per_address,
            max_per_subject: self.max_connections_per_subject,
            publish_rate: self.publish_rate,
            open_files: 0,
        }
    }

    /// The hub's part of the configuration.
    pub fn hub(&self) -> HubConfig {
        HubConfig {
            history_size: self.history_size,
            history_ttl: self.history_ttl,
            queue_size: self.queue_size,
            history_max_bytes: self.history_max_bytes,
            history_cache: self.history_cache,
            limits: self.topic_limits(),
            heartbeat: self.heartbeat,
            max_lifetime: self.max_lifetime,
            retry: self.retry,
            reconnect_spread: self.reconnect_spread,
            drain_timeout: self.shutdown_timeout,
            max_replay: self.max_replay,
            max_acks: self.max_acks,
            event_ids: match &self.event_id_key {
                Some(secret) => crate::hub::ids::EventIds::opaque(secret),
                None => crate::hub::ids::EventIds::Sequential,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};

    use super::*;

    /// Parses a command line the way `ssehub serve` does.
    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        let matches =
            command.try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))?;
        ServeArgs::from_arg_matches(&matches)
    }

    fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path.display().to_string())
    }

    #[test]
    fn the_defaults_are_those_documented() {
        let config = Config::default();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.store, StoreKind::Durable);
        assert_eq!(config.history_max_bytes, 1 << 30);
        assert_eq!(config.heartbeat, Duration::from_secs(15));
        assert_eq!(config.max_lifetime, Some(Duration::from_secs(1800)));
        assert!(!config.dev && config.anonymous_subscribers);
        assert!(
            !config.demos_on(),
            "the demos are off in production by default"
        );
        assert_eq!(config.publisher_jwt_key, None);
        assert!(config.cors_origins.is_empty());
        assert_eq!(config.publish_rate, 0);
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let (_dir, path) = temp_file(
            "ssehub.toml",
            "heartbeat = \"5s\"\nhistory-size = 7\nmax-lifetime = \"0\"\ndev = true\n",
        );
        let config = serve(&["--config", &path, "--history-size", "9"])
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(config.heartbeat, Duration::from_secs(5));
        assert_eq!(config.history_size, 9);
        assert_eq!(config.max_lifetime, None);
        assert_eq!(config.retry, Duration::from_secs(3));
        assert!(config.dev);
        // Every boolean can be switched off by a flag, whatever the file says.
        for off in [&["--dev=false"][..], &["--dev", "false"], &["--dev", "0"]] {
            let args = [&["--config", path.as_str()][..], off].concat();
            assert!(!serve(&args).unwrap().resolve().unwrap().dev, "{off:?}");
        }
        // A bare switch means on.
        assert!(
            serve(&["--allow-query-token"])
                .unwrap()
                .resolve()
                .unwrap()
                .allow_query_token
        );
    }

    #[test]
    fn the_file_is_checked_key_by_key() {
        let (_dir, path) = temp_file("bad.toml", "heartbeet = \"5s\"\n");
        let err = serve(&["--config", &path])
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `heartbeet`"), "{err}");
        let (_dir, path) = temp_file("bad.toml", "heartbeat = \"soon\"\n");
        let err = serve(&["--config", &path])
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.toml: heartbeat: \"soon\" is not a duration"),
            "{err}"
        );
        let (_dir, path) = temp_file("bad.toml", "history-size = 0\n");
        let err = serve(&["--config", &path])
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("history-size: must be greater than 0"),
            "{err}"
        );
        let (_dir, path) = temp_file(
            "list.toml",
            "cors-origin = 1\ncors-origins = [\"https://a\", \"https://b\"]\n",
        );
        let err = serve(&["--config", &path])
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `cors-origin`"), "{err}");
        let (_dir, path) = temp_file(
            "list.toml",
            "cors-origins = [\"https://a\", \"https://b\"]\n",
        );
        let config = serve(&["--config", &path]).unwrap().resolve().unwrap();
        assert_eq!(config.cors_origins, ["https://a", "https://b"]);
    }

    #[test]
    fn bad_values_name_their_flag_and_never_repeat_a_secret() {
        let err = |args: &[&str]| serve(args).unwrap().resolve().unwrap_err().to_string();
        let bad = err(&["--heartbeat", "soon"]);
        assert!(
            bad.starts_with("--heartbeat: \"soon\" is not a duration"),
            "{bad}"
        );
        let bad = err(&["--admin-token", "short-secret"]);
        assert_eq!(bad, "--admin-token: must be at least 16 characters");
        let bad = err(&["--store", "floppy"]);
        assert!(bad.contains("durable or memory"), "{bad}");
        let bad = err(&["--max-lifetime", "300000000000years"]);
        assert!(bad.contains("longer than 100 years"), "{bad}");
        let bad = err(&["--jwt-alg", "none"]);
        assert!(bad.contains("is not a JWT algorithm"), "{bad}");
        let (_dir, path) = temp_file("secret.toml", "admin-token = \"unterminated-secret\n");
        let bad = err(&["--config", &path]);
        assert!(bad.contains("line 1, column"), "{bad}");
        assert!(!bad.contains("unterminated-secret"), "{bad}");
    }

    #[test]
    fn an_empty_value_is_refused_and_a_bad_file_value_even_when_overridden() {
        let err = |args: &[&str]| serve(args).unwrap().resolve().unwrap_err().to_string();
        for flag in [
            "--admin-token",
            "--publisher-jwt-key",
            "--heartbeat",
            "--jwt-audience",
        ] {
            assert!(err(&[flag, ""]).contains("is empty"), "{flag}");
        }
        // A list may be emptied.
        let config = serve(&["--cors-origin", ""]).unwrap().resolve().unwrap();
        assert!(config.cors_origins.is_empty());
        let (_dir, path) = temp_file("bogus.toml", "retry = \"bogus\"\n");
        let bad = err(&["--config", &path, "--retry", "1s"]);
        assert!(bad.contains("bogus.toml: retry"), "{bad}");
    }

    #[test]
    fn lists_come_from_repeated_flags_or_commas() {
        let config = serve(&[
            "--cors-origin",
            "https://a",
            "--cors-origin",
            "https://b,https://c",
        ])
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(config.cors_origins, ["https://a", "https://b", "https://c"]);
    }

    #[test]
    fn secrets_are_never_shown() {
        let args = ServeArgs::default()
            .with("admin-token", "0123456789abcdef-secret")
            .with("publisher-jwt-key", "hmac-secret");
        let config = args.resolve().unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("admin_token: <redacted>"), "{debug}");
        let described = args.describe().unwrap();
        assert!(!described.contains("secret"), "{described}");
        assert!(
            described.contains("# admin-token = \"<redacted>\"  # --admin-token"),
            "{described}"
        );
        assert!(
            described.contains("heartbeat = \"15s\"  # default"),
            "{described}"
        );
    }

    /// docs/API.md lists every setting with its flag, variable and default;
    /// the table must say what this list says.
    #[test]
    fn every_setting_is_documented_as_declared() {
        let doc = include_str!("../../../docs/API.md");
        let rows: Vec<Vec<String>> = doc
            .lines()
            .filter(|l| l.starts_with("| `--"))
            .map(|l| {
                l.split('|')
                    .skip(1)
                    .map(|c| c.trim().trim_matches('`').to_owned())
                    .collect()
            })
            .collect();
        for setting in SETTINGS {
            let flag = format!("--{}", setting.flag());
            let row = rows
                .iter()
                .find(|r| r[0] == flag)
                .unwrap_or_else(|| panic!("{flag} is not in docs/API.md's configuration table"));
            let default = if setting.default.is_empty() {
                "—"
            } else {
                setting.default
            };
            assert_eq!(
                (row[1].as_str(), row[2].as_str()),
                (setting.env().as_str(), default),
                "{flag}"
            );
        }
        assert_eq!(
            rows.len(),
            SETTINGS.len(),
            "docs/API.md lists settings that do not exist"
        );
    }
}
