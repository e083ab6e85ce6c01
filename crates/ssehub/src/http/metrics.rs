//! `GET /metrics`: the hub in Prometheus's (OpenMetrics) text format.
//!
//! Counters and sizes are read from the hub when scraped, the histograms
//! are the hub's own ([`crate::hub::measures`]): nothing is kept per
//! connection, and the series are a fixed set (the rejection codes are the
//! documented ones). On the main listener it needs the admin credential; on
//! `--metrics-listen` it needs none (that address is the operator's).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::{ApiError, AppState};

/// `GET /metrics` on the main listener: behind the admin credential.
pub async fn guarded(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require_admin(&headers)?;
    Ok(open(State(app)).await)
}

/// `GET /metrics` on `--metrics-listen`.
pub async fn open(State(app): State<AppState>) -> Response {
    let mut text = String::new();
    encode(&mut text, &registry(&app)).expect("writing to a String does not fail");
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// Connections the `--metrics-listen` address serves at once; more are
/// closed at accept. A scraper needs one.
const MAX_SCRAPERS: usize = 16;

/// Serves `GET /metrics` (and nothing else) on `--metrics-listen`, with
/// bounds of its own: few connections at once, the head in
/// `--header-read-timeout`, and each connection for at most a minute, so
/// that this address can never take the files the streams need.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: tokio_util::sync::CancellationToken,
) {
    use axum::routing::get;
    use tower::ServiceExt;
    let app = axum::Router::new()
        .route("/metrics", get(open))
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "only /metrics is served here",
            )
        })
        .with_state(state.clone());
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout);
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => {
                    // Out of files and the like: back off.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            continue; // (closed at once: dropped)
        };
        let app = app.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |request: axum::extract::Request<hyper::body::Incoming>| {
                    app.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            let connection = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), connection).await;
            drop(place);
        });
    }
}

/// A registry of what the hub shows now; built per scrape (a few dozen
/// series), so no value is ever stale or kept twice.
fn registry(app: &AppState) -> Registry {
    let hub = &app.hub;
    let stats = hub.stats();
    let mut r = Registry::with_prefix("ssehub");
    let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    let counter = ConstCounter::new;

    let info: Family<Vec<(&'static str, &'static str)>, prometheus_client::metrics::gauge::Gauge> =
        Family::default();
    info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
        .set(1);
    r.register("build_info", "The hub's version (always 1)", info);

    r.register(
        "connections",
        "Open client connections (TCP), streams and requests alike",
        gauge(app.limits.open_sockets() as u64),
    );
    r.register(
        "streams",
        "Open subscriber streams",
        gauge(stats.connections),
    );
    r.register(
        "subscriptions",
        "Topic selectors across all open streams",
        gauge(stats.subscriptions),
    );
    r.register(
        "clients",
        "Open streams with a client id",
        gauge(stats.clients),
    );
    r.register(
        "topics",
        "Topics the hub knows: with history, a retained state or subscribers",
        gauge(stats.topics),
    );
    r.register(
        "history_events",
        "Events the store holds, in a history or as a retained state",
        gauge(stats.stored_events),
    );
    r.register_with_unit(
        "history",
        "Size of the stored events, as counted against --history-max-bytes",
        Unit::Bytes,
        gauge(stats.stored_bytes),
    );
    r.register_with_unit(
        "history_cache",
        "Newest events held whole in memory (--history-cache)",
        Unit::Bytes,
        gauge(stats.cached_bytes),
    );
    r.register(
        "replay_backlog_events",
        "Events waiting to be replayed to streams that are catching up",
        gauge(stats.replay_backlog),
    );
    r.register(
        "ready",
        "1 while the store can be written and (on a node) the shared log reached, else 0",
        gauge(u64::from(hub.store_failure().is_none())),
    );

    r.register(
        "events_published",
        "Events published (acknowledged, or applied from the shared log) since start",
        counter(stats.published),
    );
    r.register(
        "events_delivered",
        "Events handed to subscriber streams since start",
        counter(stats.delivered),
    );
    r.register(
        "events_replayed",
        "Events put into replays for streams that resumed or started from an earlier point",
        counter(stats.replayed),
    );
    r.register(
        "streams_opened",
        "Subscriber streams opened since start",
        counter(stats.opened),
    );
    r.register(
        "streams_dropped_slow",
        "Streams dropped because their reader did not keep up",
        counter(stats.dropped_slow),
    );
    r.register(
        "requests_rejected",
        "Requests and connections refused, by reason (auth, limits, bad_input, unavailable) and error code",
        app.rejections.counts.clone(),
    );

    let measures = hub.measures();
    r.register_with_unit(
        "publish_duration",
        "From a publish's arrival to its acknowledgement (stored and delivered)",
        Unit::Seconds,
        measures.publish_seconds.clone(),
    );
    r.register_with_unit(
        "store_commit_duration",
        "One write (group commit) of the durable store",
        Unit::Seconds,
        measures.commit_seconds.clone(),
    );
    r.register(
        "store_commit_events",
        "Events in one write of the durable store",
        measures.commit_events.clone(),
    );
    if let Some(streams) = &app.streams {
        r.register(
            "durable_streams",
            "Durable Streams held (deleted ones kept for their forks included)",
            gauge(streams.count() as u64),
        );
        r.register_with_unit(
            "durable_streams_data",
            "Data of the Durable Streams, as counted against --streams-max-bytes",
            Unit::Bytes,
            gauge(streams.bytes()),
        );
        r.register(
            "durable_streams_appends",
            "Appends to Durable Streams that added data, since start",
            counter(streams.appends()),
        );
    }
    if let Some(position) = hub.log_position() {
        r.register(
            "cluster_log_position",
            "The seq of the newest event of the shared log this node applied",
            gauge(position),
        );
        r.register_with_unit(
            "cluster_log_lag",
            "From an event's publish (on any node) to its apply on this node",
            Unit::Seconds,
            measures.log_lag_seconds.clone(),
        );
    }
    r
}
