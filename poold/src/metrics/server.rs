//! `GET /metrics` over HTTP at `daemon.metrics_listen`.

use super::text::{to_prometheus_text, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use super::{Metrics, MetricsError};
use crate::conn_limit::{accept_failed, spawn_http_connection, ConnLimiter};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{error, info};

/// Scrapers the endpoint serves at once (Prometheus needs one per server scraping); beyond,
/// the connection idle the longest (at least [`METRICS_MIN_IDLE`]) makes room. Header read
/// and keep-alive idle time are bounded by [`crate::conn_limit::HTTP_HEADER_TIMEOUT`].
pub const METRICS_MAX_CONNECTIONS: usize = 64;
pub const METRICS_MIN_IDLE: Duration = Duration::from_secs(1);

/// The running endpoint; dropping it stops serving.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
    /// The listening socket, for handing over at an upgrade.
    listener: std::net::TcpListener,
}

impl MetricsServer {
    /// The bound address (tells the port when `metrics_listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listening socket (a new poold takes it over at an upgrade).
    pub fn listener(&self) -> &std::net::TcpListener {
        &self.listener
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/ready", get(ready_all))
        .route("/ready/{service}", get(ready_one))
        .with_state(metrics)
}

fn ready_status(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `GET /ready`: 200 when every service is ready (see [`ready_one`]), else 503; the body
/// lists each service's readiness.
async fn ready_all(State(metrics): State<Metrics>) -> Response {
    let services = metrics.readiness();
    // No service yet: poold is still starting.
    let ready = !services.is_empty() && services.iter().all(|s| s.ready);
    let body = serde_json::json!({ "ready": ready, "services": services });
    (ready_status(ready), axum::Json(body)).into_response()
}

/// `GET /ready/SERVICE`: 200 while the service has `min_ready` ready workers and is not
/// drained, 503 otherwise, 404 for an unknown service; the body says why.
async fn ready_one(State(metrics): State<Metrics>, Path(service): Path<String>) -> Response {
    match metrics
        .readiness()
        .into_iter()
        .find(|s| s.service == service)
    {
        Some(readiness) => (ready_status(readiness.ready), axum::Json(readiness)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": format!("no service named {service:?}") })),
        )
            .into_response(),
    }
}

async fn scrape(State(metrics): State<Metrics>, headers: HeaderMap) -> Response {
    let openmetrics = match metrics.encode() {
        Ok(text) => text,
        Err(error) => {
            error!(%error, "encoding the metrics failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
    };
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
            openmetrics,
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
            to_prometheus_text(&openmetrics),
        )
            .into_response()
    }
}

/// Binds `listen` (an error now, before any worker starts, if it is taken) and serves
/// `/metrics` in the background until the returned server is dropped.
pub async fn serve(listen: SocketAddr, metrics: Metrics) -> Result<MetricsServer, MetricsError> {
    let bind_error = |source| MetricsError::Bind { listen, source };
    let std_listener = match crate::upgrade::take_listener("metrics", listen) {
        Some(inherited) => inherited,
        None => tokio::net::TcpListener::bind(listen)
            .await
            .and_then(tokio::net::TcpListener::into_std)
            .map_err(bind_error)?,
    };
    std_listener.set_nonblocking(true).map_err(bind_error)?;
    let handoff = std_listener.try_clone().map_err(bind_error)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_error)?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { listen, source })?;
    info!(metrics.listen = %local_addr, "serving /metrics");
    let task = tokio::spawn(async move {
        let limiter = ConnLimiter::new("metrics", METRICS_MAX_CONNECTIONS, METRICS_MIN_IDLE, 1);
        let router = router(metrics);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match limiter.admit().await {
                    Some(admission) => {
                        spawn_http_connection("metrics", stream, router.clone(), admission)
                    }
                    // Over the limit with nothing idle to evict: closed at once.
                    None => drop(stream),
                },
                Err(error) => accept_failed("metrics", &error).await,
            }
        }
    });
    Ok(MetricsServer {
        local_addr,
        task,
        listener: handoff,
    })
}
