//! The HTTP edge: routes, error bodies, and a lean connection setup.
//!
//! Requests become hub calls here; the hub never sees an HTTP type.

mod ack;
mod admin;
pub mod auth;
mod connection;
mod cors;
mod deadline;
mod demo;
mod direct;
mod discovery;
mod durable_streams;
mod error;
mod form;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod limits;
mod listen;
mod metrics;
mod pages;
pub mod peers;
mod presence;
mod publish;
mod rejections;
mod status;
mod stream;
mod stream_topics;
mod subscribe;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::ApiError;

use crate::config::Config;
use crate::hub::Hub;

/// What every handler can reach: one `Arc`, so that the clone each
/// middleware and handler takes is one atomic increment, not one per field
/// (with two of them per request, the per-field clones on two cores cost a
/// fifth of the publish rate: docs/BENCHMARKS.md#publishing-durable-against-memory).
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// The hub, its settings and the edge's shared state.
pub struct App {
    hub: Arc<Hub>,
    config: Arc<Config>,
    auth: Arc<auth::Auth>,
    limits: Arc<limits::Limits>,
    proxies: Arc<peers::TrustedProxies>,
    cors: Arc<cors::CorsSettings>,
    /// The hub's URL, which relative URL patterns and topics resolve against.
    hub_url: Arc<url::Url>,
    /// The open streams' subscriptions (with `--subscriptions`).
    presence: Arc<presence::Registry>,
    /// The demo backend's settings; `None` when the demos are off.
    demo: Option<Arc<crate::demo::DemoSettings>>,
    /// Cancelled at shutdown: every stream ends with a retry hint.
    closing: CancellationToken,
    /// Refused requests, counted for `/metrics`.
    rejections: Arc<rejections::Rejections>,
    /// With `--tls-cert`: every connection is HTTPS.
    tls: Option<Arc<tls::Tls>>,
    /// Places of the status page's streams.
    status_watchers: Arc<tokio::sync::Semaphore>,
    /// The Durable Streams; `None` on a node of a cluster.
    streams: Option<Arc<crate::streams::Streams>>,
}

impl App {
    /// The admin API's credential check.
    fn require_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.auth.admin(headers, self.config.dev)
    }

    /// The client of a request on `conn`: its peer, or the client a trusted
    /// proxy forwards for.
    fn client(&self, conn: &ConnectionInfo, headers: &HeaderMap) -> peers::Client {
        self.proxies.client(conn.remote.ip(), headers)
    }
}

/// Per TCP connection: who is on the other end, and, for connections served
/// by hyper, where the stream they carry can be seen killed (see
/// [`stream`]).
#[derive(Clone)]
pub struct ConnectionInfo {
    pub(crate) remote: SocketAddr,
    kill_watch: Option<stream::KillWatch>,
    /// HTTP/2: the connection carries many streams, so each counts against
    /// the per-address limit (as a trusted proxy's forwarded streams do),
    /// not only the connection at accept.
    multiplexed: bool,
}

fn router(state: AppState) -> Router {
    // Where RFC 9728 puts the metadata of the hub's URL; and of the default
    // one, for a hub behind a proxy that serves it under another path.
    let metadata = state.config.auth_settings().metadata_url();
    let default_metadata = "/.well-known/oauth-protected-resource/.well-known/mercure";
    let mut router = Router::new();
    if metadata.path() != default_metadata {
        router = router.route(metadata.path(), get(discovery::metadata));
    }
    router
        .route(default_metadata, get(discovery::metadata))
        .route(
            "/.well-known/mercure",
            get(subscribe::subscribe)
                .post(publish::publish)
                .fallback(other_method),
        )
        .route("/.well-known/mercure/subscriptions", get(presence::list))
        .route(
            "/.well-known/mercure/subscriptions/{*rest}",
            get(presence::list),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::guarded))
        .route("/admin", get(status::page))
        .route("/admin/", get(status::page))
        .route("/admin/events", get(status::events))
        .route("/v1/stats", get(admin::stats))
        .route("/v1/clients", get(admin::list_clients))
        .route("/v1/ack", post(ack::acknowledge))
        .route("/v1/clients/{client_id}/ack", get(ack::position))
        .route("/v1/clients/{client_id}", delete(admin::disconnect_client))
        .route(
            "/v1/clients/{client_id}/events",
            post(admin::push_to_client),
        )
        .route("/", get(pages::index))
        .route("/upload", get(pages::upload))
        .route("/chat", get(pages::chat))
        .route("/live", get(pages::live))
        .route("/ssehub.js", get(pages::helper))
        .route("/ssehub.mjs", get(pages::helper_module))
        .route("/ssehub.d.mts", get(pages::helper_types))
        .route("/favicon.svg", get(pages::icon))
        .route("/favicon.ico", get(pages::icon))
        .route("/style.css", get(pages::style))
        .route(
            "/demo/upload",
            post(demo::upload).layer(axum::extract::DefaultBodyLimit::max(demo::MAX_UPLOAD)),
        )
        .route(
            &format!("{}/{{*name}}", state.config.streams_prefix),
            axum::routing::any(durable_streams::handle),
        )
        .route("/demo/chat", post(demo::ask))
        .route("/demo/chat/{id}/stop", post(demo::stop))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One layer for CORS and the count of refusals: each layer costs
        // every request a boxed future.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rejections::middleware,
        ))
        .with_state(state)
}

/// Removes expired durable streams, every second, until shutdown.
async fn sweep_streams(streams: Arc<crate::streams::Streams>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => streams.sweep().await,
            () = stop.cancelled() => return,
        }
    }
}

/// Alive: the process answers. It says nothing of the store or the
/// cluster log, so an orchestrator does not restart a hub that is waiting
/// for its disk or for Redis to come back (see [`readyz`]).
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Ready unless the store cannot be written to or, on a node of a cluster,
/// the shared log cannot be reached: a hub that refuses every publish must
/// be taken out of service, not reported as fine.
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if let Some(reason) = state.hub.degraded() {
        // A node of a cluster without its log still serves its streams
        // (with heartbeats), but publishes are refused.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded",
            format!(
                "the shared log cannot be reached ({reason}): streams stay open, publishes are \
                 refused until it is back"
            ),
        ));
    }
    match state.hub.store_failure() {
        None => Ok(axum::Json(serde_json::json!({ "status": "ready" }))),
        Some(reason) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the store cannot be written to: {reason}"),
        )),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The hub URL's methods beyond `GET` and `POST`: `QUERY` subscribes with
/// its parameters in the body; any other is refused.
async fn other_method(
    state: axum::extract::State<AppState>,
    conn: axum::extract::Extension<ConnectionInfo>,
    method: axum::http::Method,
    headers: HeaderMap,
    query: axum::extract::RawQuery,
    body: axum::body::Body,
) -> Result<axum::response::Response, ApiError> {
    if method.as_str() == "QUERY" {
        subscribe::subscribe_by_query(state, conn, headers, query, body).await
    } else {
        Err(method_not_allowed().await)
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A setting is unusable (a key that does not load, ...).
    #[error("{0}")]
    Config(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running hub server.
pub struct Server {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    /// The address of `--metrics-listen`, as bound.
    pub metrics_addr: Option<SocketAddr>,
    https: bool,
    /// The hub behind it.
    pub hub: Arc<Hub>,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the store, binds and starts serving in the background.
    pub async fn start(mut config: Config) -> Result<Server, StartError> {
        let listener = listen::bind(config.listen, config.listen_backlog).map_err(|source| {
            StartError::Bind {
                addr: config.listen,
                source,
            }
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        if config.public_url.is_none() {
            // The hub's URL, unless told: the address it listens on, as
            // bound (a port 0 is the one the system chose).
            let scheme = if config.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            config.public_url =
                url::Url::parse(&format!("{scheme}://{addr}/.well-known/mercure")).ok();
        }
        let auth = auth::Auth::new(
            &config.auth_settings(),
            config.cookie_name.clone(),
            config.allow_query_token,
            config.admin_token.clone(),
        )
        .map_err(StartError::Config)?;
        if !config.dev && !auth.has_publisher_key() {
            tracing::warn!("no --publisher-jwt-key and no --dev: nobody can publish to this hub");
        }
        let mut streams = None;
        let hub = match &config.redis_url {
            Some(url) => {
                let ids = config.hub().event_ids;
                let log = crate::store::RedisLog::new(
                    url,
                    &config.redis_prefix,
                    config.redis_timeout,
                    Box::new(move |seq| ids.name(seq)),
                )?
                .waiting_for(config.redis_wait_replicas);
                let log = Arc::new(log);
                let hub_config = config.hub();
                // It loads the log, over the network: off the async threads.
                tokio::task::spawn_blocking(move || Hub::open_cluster(hub_config, log))
                    .await
                    .expect("the load does not panic")?
            }
            None => {
                let store = config.open_store()?;
                let hub = Hub::open(config.hub(), store.clone())?;
                let settings = crate::streams::Settings {
                    max_bytes: config.streams_max_bytes as u64,
                    max_streams: config.max_streams,
                    max_producers: config.stream_max_producers,
                };
                let topics = crate::streams::topic::Topics {
                    hub: hub.clone(),
                    hub_url: config.hub_url(),
                    prefix: config.streams_prefix.clone(),
                    private: !config.dev,
                };
                streams = Some(Arc::new(crate::streams::Streams::open(
                    store,
                    settings,
                    Some(topics),
                )?));
                hub
            }
        };
        let shutdown = CancellationToken::new();
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = tls::Tls::load(cert, key).map_err(StartError::Config)?;
                tls.clone()
                    .watch(shutdown.clone())
                    .map_err(|e| StartError::Config(format!("cannot watch for SIGHUP: {e}")))?;
                Some(tls)
            }
            (None, None) => {
                ignore_hangups(shutdown.clone())
                    .map_err(|e| StartError::Config(format!("cannot watch for SIGHUP: {e}")))?;
                None
            }
            _ => {
                return Err(StartError::Config(
                    "--tls-cert and --tls-key go together: give both, or neither".into(),
                ));
            }
        };
        let state = AppState(Arc::new(App {
            auth: Arc::new(auth),
            limits: limits::Limits::new(limits::LimitSettings {
                open_files: open_files_limit(),
                ..config.limit_settings()
            }),
            proxies: Arc::new(peers::TrustedProxies::new(
                config.trusted_proxies.clone(),
                config.trusted_proxy_header,
            )),
            cors: Arc::new(cors::CorsSettings {
                origins: config.cors_origins.clone(),
                any_origin: config.dev && config.cors_origins.is_empty(),
            }),
            hub_url: Arc::new(config.hub_url()),
            presence: Arc::default(),
            demo: config.demos_on().then(|| Arc::new(config.demo_settings())),
            hub: hub.clone(),
            config: Arc::new(config),
            closing: shutdown.clone(),
            rejections: Arc::default(),
            tls,
            status_watchers: status::watchers(),
            streams,
        }));
        if let Some(streams) = &state.streams {
            tokio::spawn(sweep_streams(streams.clone(), shutdown.clone()));
        }
        if let Some(demo) = &state.demo {
            crate::demo::start(hub.clone(), demo.clone(), shutdown.clone());
        }
        let mut metrics_addr = None;
        if let Some(addr) = state.config.metrics_listen {
            let listener =
                listen::bind(addr, 128).map_err(|source| StartError::Bind { addr, source })?;
            metrics_addr = listener.local_addr().ok();
            tokio::spawn(metrics::serve(listener, state.clone(), shutdown.clone()));
        }
        let https = state.tls.is_some();
        let done = tokio::spawn(accept_loop(listener, state, shutdown.clone()));
        Ok(Server {
            addr,
            metrics_addr,
            https,
            hub,
            shutdown,
            done,
        })
    }

    /// Stops accepting, ends every stream with a retry hint, and waits for
    /// connections to close, at most the configured shutdown timeout.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.done.await;
    }

    /// Whether it serves HTTPS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Waits until the server stops (after [`Server::shutdown`] from a clone
    /// of the trigger, or never).
    pub fn shutdown_trigger(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for the accept loop and all connections to finish.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Without TLS there is nothing to reload, but a SIGHUP must not kill the
/// hub (its default): `systemctl reload` sends one (deploy/ssehub.service).
fn ignore_hangups(stop: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: nothing to reload (no --tls-cert); still serving");
                }
            }
        }
    });
    Ok(())
}

/// Unsent bytes a connection's socket holds at most (`TCP_NOTSENT_LOWAT`).
const UNSENT_LIMIT: u32 = 16 * 1024;

/// The process's open-files limit, 0 when there is none.
fn open_files_limit() -> usize {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) if soft != rlimit::INFINITY => usize::try_from(soft).unwrap_or(0),
        _ => 0,
    }
}

/// Something that can happen at every accept (a failure, a refusal), logged
/// at most once per interval with how often it happened: at the open-files
/// limit every attempt fails, and a line per attempt flooded the log.
struct EveryInterval {
    what: &'static str,
    since_logged: u64,
    last_logged: Option<std::time::Instant>,
}

impl EveryInterval {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn new(what: &'static str) -> EveryInterval {
        EveryInterval {
            what,
            since_logged: 0,
            last_logged: None,
        }
    }

    fn note(&mut self, detail: &dyn std::fmt::Display) {
        self.since_logged += 1;
        let now = std::time::Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= Self::INTERVAL)
        {
            tracing::warn!(
                %detail,
                times = self.since_logged,
                "{} (logged at most every 10 s)",
                self.what
            );
            self.since_logged = 0;
            self.last_logged = Some(now);
        }
    }
}

async fn accept_loop(listener: TcpListener, state: AppState, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    let serving = Arc::new(connection::Serving::new(
        state.clone(),
        router(state.clone()),
        shutdown.clone(),
        connections.clone(),
    ));
    let mut accept_failures = EveryInterval::new("accepting connections fails");
    let mut refusals = EveryInterval::new("connections refused at accept");
    let refusing = Arc::new(tokio::sync::Semaphore::new(direct::REFUSING_AT_ONCE));
    loop {
        let (stream, remote) = tokio::select! {
            // Connections first: the queue of a burst is drained before
            // anything else is looked at.
            biased;
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep
                    // serving, and say so once in a while, not per attempt.
                    accept_failures.note(&err);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let peer = remote.ip();
        let place = match state.limits.connect(peer, state.proxies.contains(peer)) {
            Ok(place) => place,
            Err(refusal) => {
                refusals.note(&format_args!("{peer}: {}", refusal.code));
                state.rejections.count(&refusal);
                direct::refuse(stream, &refusal, &refusing);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // At most this much unsent data waits in the kernel for a reader
        // (data in flight is not limited, so throughput is not): its writer
        // is woken as soon as the reader has taken some of it (not when a
        // third of a send buffer grown to megabytes has drained), which
        // keeps a slow reader's replay moving and what a stalled one costs
        // the kernel small.
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(UNSENT_LIMIT);
        let serving = serving.clone();
        connections.spawn(async move { serving.serve(stream, remote, place).await });
    }
    drop(listener);
    state.hub.shut_down_streams();
    connections.close();
    let _ = tokio::time::timeout(state.config.shutdown_timeout, connections.wait()).await;
    // Acknowledged positions from the last moments, not yet written.
    state.hub.write_pending(Duration::from_secs(2)).await;
}
