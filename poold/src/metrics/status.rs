//! Gauges read from each pool's status snapshot at scrape time, so they can never disagree
//! with `poolctl status`.
//!
//! A slot can hold two workers for a while (a surge replacement starting next to the old
//! one, or a new worker starting while an unhealthy one drains). Per-slot series therefore
//! aggregate the slot's live workers: memory is the largest (each worker has its own
//! limit), active connections the sum, age that of the newest ready worker, and the
//! connection counter accumulates what every worker of the slot has served.

use crate::config::ServiceConfig;
use crate::runtime::{WorkerId, SPARE_SLOT};
use crate::supervisor::{ServiceStatus, SlotState, WorkerState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

const WORKER_STATES: [WorkerState; 6] = [
    WorkerState::Starting,
    WorkerState::Ready,
    WorkerState::Drained,
    WorkerState::Draining,
    WorkerState::Stopping,
    WorkerState::Gone,
];

const SLOT_STATES: [SlotState; 6] = [
    SlotState::Ok,
    SlotState::Starting,
    SlotState::Recycling,
    SlotState::Backoff,
    SlotState::CrashLoop,
    SlotState::Drained,
];

#[derive(Debug)]
pub(super) struct TrackedService {
    config: Arc<ServiceConfig>,
    status: watch::Receiver<ServiceStatus>,
    /// Connections counted so far per slot, and the last total seen per worker id.
    served_by_slot: BTreeMap<u32, u64>,
    last_total_by_worker: HashMap<WorkerId, u64>,
}

impl TrackedService {
    pub(super) fn new(config: Arc<ServiceConfig>, status: watch::Receiver<ServiceStatus>) -> Self {
        Self {
            config,
            status,
            served_by_slot: BTreeMap::new(),
            last_total_by_worker: HashMap::new(),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.config.name
    }

    pub(super) fn set_config(&mut self, config: Arc<ServiceConfig>) {
        self.config = config;
    }

    pub(super) fn readiness(&self) -> crate::supervisor::Readiness {
        self.status.borrow().readiness()
    }

    /// Adds what each worker served since the last scrape to its slot's counter.
    fn account_connections(&mut self, status: &ServiceStatus) {
        let mut seen = HashMap::new();
        // A spare takes no connections; once promoted it counts for its slot.
        for worker in status.workers.iter().filter(|w| w.slot != SPARE_SLOT) {
            let last = self
                .last_total_by_worker
                .get(&worker.id)
                .copied()
                .unwrap_or(0);
            // A smaller total means the balancer forgot the backend and started again.
            let delta = if worker.total_conns >= last {
                worker.total_conns - last
            } else {
                worker.total_conns
            };
            *self.served_by_slot.entry(worker.slot).or_default() += delta;
            seen.insert(worker.id, worker.total_conns);
        }
        for slot in 0..status.desired {
            self.served_by_slot.entry(slot).or_default();
        }
        self.last_total_by_worker = seen;
    }
}

#[derive(Debug)]
pub(super) struct StatusCollector {
    services: Arc<Mutex<Vec<TrackedService>>>,
}

impl StatusCollector {
    pub(super) fn new(services: Arc<Mutex<Vec<TrackedService>>>) -> Self {
        Self { services }
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: its samples are collected first, then written in one go.
struct Series {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, f64)>,
}

impl Series {
    fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            kind: MetricType::Gauge,
            samples: Vec::new(),
        }
    }

    fn counter(name: &'static str, help: &'static str) -> Self {
        Self {
            kind: MetricType::Counter,
            ..Self::gauge(name, help)
        }
    }

    fn push(&mut self, labels: Labels, value: f64) {
        self.samples.push((labels, value));
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (labels, value) in &self.samples {
            let sample = metric.encode_family(labels)?;
            match self.kind {
                MetricType::Counter => ConstCounter::new(*value as u64).encode(sample)?,
                _ => ConstGauge::new(*value).encode(sample)?,
            }
        }
        Ok(())
    }
}

fn service_labels(service: &str) -> Labels {
    vec![("service", service.to_string())]
}

fn slot_labels(service: &str, slot: u32) -> Labels {
    vec![("service", service.to_string()), ("slot", slot.to_string())]
}

fn with_state(mut labels: Labels, state: impl ToString) -> Labels {
    labels.push(("state", state.to_string()));
    labels
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut desired = Series::gauge(
            "poold_service_workers_desired",
            "Workers the service is configured to run",
        );
        let mut ready = Series::gauge(
            "poold_service_workers_ready",
            "Ready workers in the balancer with the service's weight",
        );
        let mut spares = Series::gauge(
            "poold_spare_workers",
            "Warm spares ready to take a slot (recycle.spares; weight 0, not counted ready)",
        );
        let mut memory_limit = Series::gauge(
            "poold_service_memory_limit_bytes",
            "Cgroup memory limit of each worker (limits.memory)",
        );
        let mut recycle_memory = Series::gauge(
            "poold_service_recycle_memory_bytes",
            "Memory use above which a worker is recycled (recycle.max_memory)",
        );
        let mut drain_timeout = Series::gauge(
            "poold_service_drain_timeout_seconds",
            "Longest wait for a draining worker's connections (recycle.drain_timeout)",
        );
        let mut slot_state = Series::gauge(
            "poold_slot_state",
            "1 for the slot's current state (ok, starting, recycling, backoff, crash-loop)",
        );
        let mut slot_failures = Series::gauge(
            "poold_slot_failures",
            "Failures in a row of the slot's workers (crashes, failed starts, unhealthy)",
        );
        let mut worker_state = Series::gauge(
            "poold_worker_state",
            "Workers of the slot in each state (starting, ready, draining, stopping, gone)",
        );
        let mut memory = Series::gauge(
            "poold_worker_memory_bytes",
            "Memory use of the slot's workers (the largest, when two share the slot)",
        );
        let mut active = Series::gauge(
            "poold_worker_active_connections",
            "Active connections of the slot's workers, draining ones included",
        );
        let mut served = Series::counter(
            "poold_worker_connections",
            "Connections the slot's workers have been given by the balancer",
        );
        let mut age = Series::gauge(
            "poold_worker_age_seconds",
            "Age of the slot's newest ready worker",
        );

        let mut services = self.services.lock().map_err(|_| std::fmt::Error)?;
        for tracked in services.iter_mut() {
            let status = tracked.status.borrow().clone();
            tracked.account_connections(&status);
            let name = status.name.as_str();
            desired.push(service_labels(name), f64::from(status.desired));
            ready.push(service_labels(name), f64::from(status.ready));
            spares.push(service_labels(name), f64::from(status.spares));
            if let Some(limit) = tracked.config.limits.memory {
                memory_limit.push(service_labels(name), limit.bytes() as f64);
            }
            if let Some(limit) = tracked.config.recycle.max_memory {
                recycle_memory.push(service_labels(name), limit.bytes() as f64);
            }
            drain_timeout.push(
                service_labels(name),
                tracked.config.recycle.drain_timeout.get().as_secs_f64(),
            );
            for slot in &status.slots {
                for state in SLOT_STATES {
                    let value = if slot.state == state { 1.0 } else { 0.0 };
                    slot_state.push(with_state(slot_labels(name, slot.slot), state), value);
                }
                slot_failures.push(slot_labels(name, slot.slot), f64::from(slot.failures));
            }
            for (&slot, &count) in &tracked.served_by_slot {
                served.push(slot_labels(name, slot), count as f64);
            }
            let mut slots: BTreeMap<u32, Vec<_>> = BTreeMap::new();
            for slot in 0..status.desired {
                slots.entry(slot).or_default();
            }
            for worker in status.workers.iter().filter(|w| w.slot != SPARE_SLOT) {
                slots.entry(worker.slot).or_default().push(worker);
            }
            for (slot, workers) in slots {
                for state in WORKER_STATES {
                    let count = workers.iter().filter(|w| w.state == state).count();
                    worker_state.push(with_state(slot_labels(name, slot), state), count as f64);
                }
                let live = || workers.iter().filter(|w| w.state != WorkerState::Gone);
                if let Some(bytes) = live().map(|w| w.memory_bytes).max() {
                    memory.push(slot_labels(name, slot), bytes as f64);
                }
                active.push(
                    slot_labels(name, slot),
                    live().map(|w| w.active_conns).sum::<u64>() as f64,
                );
                let newest_ready = workers
                    .iter()
                    .filter(|w| w.state == WorkerState::Ready)
                    .map(|w| w.age_secs)
                    .reduce(f64::min);
                if let Some(seconds) = newest_ready {
                    age.push(slot_labels(name, slot), seconds);
                }
            }
        }
        drop(services);

        for series in [
            &desired,
            &ready,
            &spares,
            &memory_limit,
            &recycle_memory,
            &drain_timeout,
            &slot_state,
            &slot_failures,
            &worker_state,
            &memory,
            &active,
            &served,
            &age,
        ] {
            series.encode(&mut encoder)?;
        }
        Ok(())
    }
}
