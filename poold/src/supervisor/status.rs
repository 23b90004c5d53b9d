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
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Starting => "starting",
            Self::Recycling => "recycling",
            Self::Backoff => "backoff",
            Self::CrashLoop => "crash-loop",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub slot: u32,
    pub id: WorkerId,
    pub state: WorkerState,
    pub addr: Option<SocketAddr>,
    pub pid: Option<u32>,
    pub age_secs: f64,
    pub active_conns: u64,
    pub total_conns: u64,
    pub memory_bytes: u64,
    /// Why the worker is draining or stopping.
    pub reason: Option<RecycleReason>,
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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub listen: SocketAddr,
    pub balancer: BalancerKind,
    pub desired: u32,
    pub ready: u32,
    pub slots: Vec<SlotStatus>,
    /// Every live worker, including starting replacements and draining old workers.
    pub workers: Vec<WorkerStatus>,
}
