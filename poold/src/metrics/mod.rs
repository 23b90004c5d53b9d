//! Prometheus metrics: counters bumped by the supervisor where events happen, gauges read
//! from each pool's status snapshot at scrape time, a `process_*` collector, and the HTTP
//! endpoint that serves them (`GET /metrics` at `daemon.metrics_listen`).
//!
//! Naming: one prefix (`poold_`), base units, counters end in `_total`, labels `service`,
//! `slot` (never a pid or worker id: they would grow without bound).

mod process;
mod server;
mod status;
mod text;

#[cfg(test)]
mod tests;

pub use process::ProcessCollector;
pub use server::{serve, MetricsServer};
pub use text::to_prometheus_text;

use crate::balancer::BalancerKind;
use crate::config::ServiceConfig;
use crate::runtime::{ExitStatus, WorkerId};
use crate::supervisor::{PoolObserver, RecycleReason, ServiceStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use status::{StatusCollector, TrackedService};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Upper bounds of the recycle duration histogram, in seconds: a recycle spans a surge
/// start (spawn + health), the drain (bounded by drain_timeout) and the stop.
pub const RECYCLE_DURATION_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics_listen {listen}: cannot listen: {source}")]
    Bind {
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error("encoding the metrics failed")]
    Encode,
}

/// Every `reason` label of `poold_recycles_total`.
const RECYCLE_LABELS: [&str; 8] = [
    "lifetime",
    "connections",
    "memory",
    "oom",
    "health",
    "crash",
    "manual",
    "rollout",
];

/// A worker that exited on its own counts as a recycle with this reason.
const CRASH_LABEL: &str = "crash";

/// The `reason` label of a supervisor recycle; a shutdown replaces nothing, so it has none.
fn recycle_label(reason: RecycleReason) -> Option<&'static str> {
    Some(match reason {
        RecycleReason::Lifetime => "lifetime",
        RecycleReason::MaxConnections => "connections",
        RecycleReason::MaxMemory => "memory",
        RecycleReason::OomKill => "oom",
        RecycleReason::Manual => "manual",
        RecycleReason::Rollout => "rollout",
        RecycleReason::Unhealthy => "health",
        RecycleReason::Shutdown => return None,
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecycleLabels {
    service: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BalancerLabels {
    balancer: String,
}

type HistogramFamily = Family<ServiceLabels, Histogram, fn() -> Histogram>;

fn recycle_histogram() -> Histogram {
    Histogram::new(RECYCLE_DURATION_BUCKETS)
}

/// The daemon's metrics: one registry, shared by the HTTP endpoint and every pool.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    services: Arc<Mutex<Vec<TrackedService>>>,
    recycles: Family<RecycleLabels, Counter>,
    crashes: Family<ServiceLabels, Counter>,
    oom_kills: Family<ServiceLabels, Counter>,
    health_failures: Family<ServiceLabels, Counter>,
    recycle_duration: HistogramFamily,
}

impl Metrics {
    /// A registry with every poold metric and the process collector.
    pub fn new(balancer: BalancerKind) -> Self {
        let mut registry = Registry::default();
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        // Gauges set to 1 rather than OpenMetrics `info`: the classic text format (promtool,
        // older scrapers) has no info type, and the series are the same either way.
        registry.register("poold_build_info", "poold build; the value is 1", build);
        let balancer_info = Family::<BalancerLabels, Gauge>::default();
        balancer_info
            .get_or_create(&BalancerLabels {
                balancer: balancer.to_string(),
            })
            .set(1);
        registry.register(
            "poold_balancer_info",
            "Balancer in use (ipvs or proxy); the value is 1",
            balancer_info,
        );
        let recycles = Family::<RecycleLabels, Counter>::default();
        registry.register(
            "poold_recycles",
            "Workers replaced, by reason (lifetime, connections, memory, oom, health, crash, manual)",
            recycles.clone(),
        );
        let crashes = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "poold_worker_crashes",
            "Workers that exited while starting or ready (not asked to stop)",
            crashes.clone(),
        );
        let oom_kills = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "poold_worker_oom_kills",
            "OOM kills inside ready workers' cgroups",
            oom_kills.clone(),
        );
        let health_failures = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "poold_health_check_failures",
            "Failed health checks of ready workers",
            health_failures.clone(),
        );
        let recycle_duration: HistogramFamily = Family::new_with_constructor(recycle_histogram);
        registry.register(
            "poold_recycle_duration_seconds",
            "From the start of a recycle (or of an unhealthy worker's drain) until the old worker exited",
            recycle_duration.clone(),
        );
        let services = Arc::new(Mutex::new(Vec::new()));
        registry.register_collector(Box::new(StatusCollector::new(services.clone())));
        registry.register_collector(Box::new(ProcessCollector));
        Self {
            inner: Arc::new(Inner {
                registry,
                services,
                recycles,
                crashes,
                oom_kills,
                health_failures,
                recycle_duration,
            }),
        }
    }

    /// Reports `status` (a pool's status channel) as gauges at every scrape.
    pub fn track(&self, config: Arc<ServiceConfig>, status: watch::Receiver<ServiceStatus>) {
        self.inner
            .services
            .lock()
            .expect("metrics lock")
            .push(TrackedService::new(config, status));
    }

    /// Stops reporting service `name` (removed by a reload); returns whether it was tracked.
    pub fn untrack(&self, name: &str) -> bool {
        let mut services = self.inner.services.lock().expect("metrics lock");
        let before = services.len();
        services.retain(|tracked| tracked.name() != name);
        services.len() != before
    }

    /// Reports service `config.name` under its reloaded config (limits, drain timeout).
    pub fn retrack(&self, config: Arc<ServiceConfig>) {
        let mut services = self.inner.services.lock().expect("metrics lock");
        if let Some(tracked) = services.iter_mut().find(|t| t.name() == config.name) {
            tracked.set_config(config);
        }
    }

    /// The event hooks of service `service` (its pool's observer). Every per-service
    /// counter starts at 0 so `rate()` sees the first event.
    pub fn pool_metrics(&self, service: &str) -> PoolMetrics {
        let service = service.to_string();
        let labels = ServiceLabels {
            service: service.clone(),
        };
        let inner = &self.inner;
        let recycles = RECYCLE_LABELS.map(|reason| {
            inner.recycles.get_or_create_owned(&RecycleLabels {
                service: service.clone(),
                reason,
            })
        });
        PoolMetrics {
            recycles,
            crashes: inner.crashes.get_or_create_owned(&labels),
            oom_kills: inner.oom_kills.get_or_create_owned(&labels),
            health_failures: inner.health_failures.get_or_create_owned(&labels),
            recycle_duration: inner.recycle_duration.get_or_create_owned(&labels),
        }
    }

    /// What the readiness endpoint says of every tracked service, in config order.
    pub fn readiness(&self) -> Vec<crate::supervisor::Readiness> {
        let services = self.inner.services.lock().expect("metrics lock");
        services.iter().map(|s| s.readiness()).collect()
    }

    /// The OpenMetrics text exposition (what `GET /metrics` serves to Prometheus).
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .map_err(|_| MetricsError::Encode)?;
        Ok(out)
    }

    /// Every sample name poold exports (counters with `_total`, histograms with `_bucket`,
    /// `_sum`, `_count`): what dashboards and alert rules may refer to.
    pub fn exported_names() -> Result<Vec<String>, MetricsError> {
        // A family shows up once it has a series: give every per-service one a service.
        let metrics = Metrics::new(BalancerKind::Proxy);
        let _hooks = metrics.pool_metrics("any");
        let mut names = Vec::new();
        for line in metrics.encode()?.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let Some((name, kind)) = rest.split_once(' ') else {
                continue;
            };
            match kind {
                "counter" => names.push(format!("{name}_total")),
                "histogram" => {
                    for suffix in ["bucket", "sum", "count"] {
                        names.push(format!("{name}_{suffix}"));
                    }
                }
                "info" => names.push(format!("{name}_info")),
                _ => names.push(name.to_string()),
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}

/// One pool's event hooks: the [`PoolObserver`] daemon.rs gives its pool. Cheap: each
/// handle shares its series with the registry.
#[derive(Debug)]
pub struct PoolMetrics {
    recycles: [Counter; 8],
    crashes: Counter,
    oom_kills: Counter,
    health_failures: Counter,
    recycle_duration: Histogram,
}

impl PoolMetrics {
    fn recycles(&self, label: &str) -> &Counter {
        let index = RECYCLE_LABELS
            .iter()
            .position(|l| *l == label)
            .expect("RECYCLE_LABELS lists every label");
        &self.recycles[index]
    }
}

impl PoolObserver for PoolMetrics {
    fn recycle_started(&self, _worker: WorkerId, reason: RecycleReason) {
        if let Some(label) = recycle_label(reason) {
            self.recycles(label).inc();
        }
    }

    fn recycle_finished(&self, _worker: WorkerId, reason: RecycleReason, duration: Duration) {
        if recycle_label(reason).is_some() {
            self.recycle_duration.observe(duration.as_secs_f64());
        }
    }

    fn worker_crashed(&self, _worker: WorkerId, _status: ExitStatus) {
        self.crashes.inc();
        self.recycles(CRASH_LABEL).inc();
    }

    fn health_check_failed(&self, _worker: WorkerId) {
        self.health_failures.inc();
    }

    fn oom_killed(&self, _worker: WorkerId, kills: u64) {
        self.oom_kills.inc_by(kills);
    }
}
