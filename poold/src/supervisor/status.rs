//! What the supervisor reports about a service (poolctl status, the control API, metrics).

use crate::balancer::BalancerKind;
use crate::runtime::WorkerId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// Lifecycle of one worker: Starting -> Ready (weight w) -> Draining (weight 0) -> Stopping -> Gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Spawned (or spawning), not yet healthy; not in the balancer.
    Starting,
    /// Healthy and in the balancer with the service's weight.
    Ready,
    /// Taken out of rotation by `poolctl drain SERVICE/SLOT`: weight 0, alive and probed
    /// for inspection, not replaced, until `undrain` or a recycle.
    Drained,
    /// A warm spare (`recycle.spares`): healthy, probed, in the balancer at weight 0 (no
    /// traffic), not counted ready; a recycle or a crash gives it a slot.
    Spare,
    /// Weight 0: no new connections; waiting for active connections to end.
    Draining,
    /// SIGTERM sent (SIGKILL after stop_timeout); waiting for the exit.
    Stopping,
    /// Exited; being removed from the balancer and torn down.
    Gone,
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Drained => "drained",
            Self::Spare => "spare",
            Self::Draining => "draining",
            Self::Stopping => "stopping",
            Self::Gone => "gone",
        })
    }
}

/// Why a worker is being replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecycleReason {
    Lifetime,
    MaxConnections,
    MaxMemory,
    OomKill,
    Manual,
    Unhealthy,
    Shutdown,
    /// A reload or deploy changed what a worker is (a new generation), or a failed deploy
    /// is rolled back.
    Rollout,
}

impl fmt::Display for RecycleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lifetime => "lifetime",
            Self::MaxConnections => "max-connections",
            Self::MaxMemory => "max-memory",
            Self::OomKill => "oom-kill",
            Self::Manual => "manual",
            Self::Unhealthy => "unhealthy",
            Self::Shutdown => "shutdown",
            Self::Rollout => "rollout",
        })
    }
}

/// State of a slot (a place for one ready worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotState {
    /// A ready worker serves the slot.
    Ok,
    /// The slot's worker is starting.
    Starting,
    /// A planned recycle is under way.
    Recycling,
    /// Waiting before the next start after a failure.
    Backoff,
    /// Waiting after several failures in a row: the worker keeps failing.
    CrashLoop,
    /// Its worker was taken out of rotation by the operator (`poolctl drain SERVICE/SLOT`).
    Drained,
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Starting => "starting",
            Self::Recycling => "recycling",
            Self::Backoff => "backoff",
            Self::CrashLoop => "crash-loop",
            Self::Drained => "drained",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its slot; [`crate::runtime::SPARE_SLOT`] for a spare (starting or ready).
    pub slot: u32,
    pub id: WorkerId,
    pub state: WorkerState,
    pub addr: Option<SocketAddr>,
    pub pid: Option<u32>,
    pub age_secs: f64,
    pub active_conns: u64,
    pub total_conns: u64,
    pub memory_bytes: u64,
    /// The worker's memory limit (`limits.memory`), bytes; absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// CPU time its cgroup has used so far, seconds.
    #[serde(default)]
    pub cpu_secs: f64,
    /// Why the worker is draining or stopping.
    pub reason: Option<RecycleReason>,
    /// Its root was entered with chroot (initramfs hosts only), not pivot_root.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chroot: bool,
    /// The service generation (config or deploy) it was started with.
    #[serde(default)]
    pub generation: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot: u32,
    pub state: SlotState,
    /// Failures in a row (crashes, failed starts, unhealthy).
    pub failures: u32,
    pub last_error: Option<String>,
    /// Seconds until the next start attempt while backing off.
    pub retry_in_secs: Option<f64>,
    /// Workers of this slot replaced so far (planned or unhealthy), and the last reason.
    #[serde(default)]
    pub recycles: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recycle: Option<RecycleReason>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub listen: SocketAddr,
    pub balancer: BalancerKind,
    pub desired: u32,
    /// The configured count when `poolctl scale` changed `desired` (until the next reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled_from: Option<u32>,
    pub ready: u32,
    /// Warm spares ready to take a slot (never counted in `ready`).
    #[serde(default)]
    pub spares: u32,
    /// Warm spares the service keeps (`recycle.spares`), ready or not.
    #[serde(default)]
    pub wanted_spares: u32,
    /// Ready workers the service needs to count as ready upstream (`min_ready`, default
    /// `workers`).
    pub min_ready: u32,
    /// Taken out of the fleet by `poolctl drain`: the readiness endpoint answers 503, the
    /// workers keep serving whatever still arrives.
    #[serde(default)]
    pub drained: bool,
    pub slots: Vec<SlotStatus>,
    /// Starts at 1; each applied reload or deploy that replaces workers adds one (a rolled
    /// back deploy returns to the generation before it).
    #[serde(default)]
    pub generation: u64,
    /// The root file system a deploy put in place of the config's (until the next reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_rootfs: Option<String>,
    /// A reload or deploy is replacing workers (another one is refused until it ends).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolling_out: bool,
    /// Every live worker, including starting replacements and draining old workers.
    pub workers: Vec<WorkerStatus>,
}

/// What the readiness endpoint says of a service: whether an upstream balancer should send
/// it traffic, and why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub service: String,
    pub ready: bool,
    pub ready_workers: u32,
    pub min_ready: u32,
    pub drained: bool,
    /// Why the service is not ready; absent when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ServiceStatus {
    pub fn readiness(&self) -> Readiness {
        let reason = if self.drained {
            Some("drained by the operator".to_owned())
        } else if self.ready < self.min_ready {
            Some(format!(
                "{} of at least {} workers ready",
                self.ready, self.min_ready
            ))
        } else {
            None
        };
        Readiness {
            service: self.name.clone(),
            ready: reason.is_none(),
            ready_workers: self.ready,
            min_ready: self.min_ready,
            drained: self.drained,
            reason,
        }
    }

    /// Workers the service claims of the subnet's capacity: its slots and the warm spares
    /// it keeps, whether they are up yet or not (a bound must not depend on timing).
    pub fn claimed_workers(&self) -> u64 {
        u64::from(self.desired) + u64::from(self.wanted_spares)
    }

    /// Connections the service's workers hold now (ready and draining alike).
    pub fn active_conns(&self) -> u64 {
        self.workers.iter().map(|w| w.active_conns).sum()
    }
}

#[cfg(test)]
mod tests;
