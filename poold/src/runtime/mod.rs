//! The worker runtime as the supervisor sees it: spawn a sandboxed worker, signal it, learn
//! when it exits, read its resource use, tear it down. [`sandbox::SandboxRuntime`] is the
//! real one (over [`crate::sandbox`]); `fake.rs` records calls for unit tests.
//!
//! These are the supervisor's words: a *worker* is one attempt at filling a slot; the
//! sandbox's own objects (containers) appear only in `sandbox.rs`.

pub mod sandbox;

#[cfg(test)]
pub(crate) mod fake;

use crate::config::ServiceConfig;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// Identifies one worker for its whole life, in the supervisor, the runtime, status and
/// logs (JSON: the bare number). Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub u64);

/// What an operator changed on a service at run time, kept in the state record so that a
/// restart or an upgrade keeps it (the default: nothing changed, nothing recorded).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OperatorState {
    /// `poolctl drain SERVICE` (or `--all`): readiness answers 503.
    pub drained: bool,
    /// `poolctl scale`: the worker count in force, when it is not the config's.
    pub scaled_to: Option<u32>,
    /// The workers `poolctl drain SERVICE/SLOT` put at weight 0.
    pub drained_workers: std::collections::BTreeSet<WorkerId>,
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.0)
    }
}

/// The slot of a warm spare (`recycle.spares`): none yet. A spare is started, probed and
/// kept at weight 0 until a recycle or a crash gives it a slot ([`WorkerRuntime::promoted`]).
pub const SPARE_SLOT: u32 = u32::MAX;

/// `worker.slot` in logs: the slot, none for a spare (which logs [`spare_field`] instead of
/// the [`SPARE_SLOT`] sentinel).
pub fn slot_field(slot: u32) -> Option<u32> {
    (slot != SPARE_SLOT).then_some(slot)
}

/// `worker.spare` in logs: `true` for a spare, absent for a slot's worker.
pub fn spare_field(slot: u32) -> Option<bool> {
    (slot == SPARE_SLOT).then_some(true)
}

/// What to start.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    pub id: WorkerId,
    /// The slot it fills, or [`SPARE_SLOT`].
    pub slot: u32,
    pub service: Arc<ServiceConfig>,
    /// The pool's generation (config or deploy) the worker is started for.
    pub generation: u64,
}

/// A worker an earlier run of poold started that still lives and was taken over at start
/// (see [`WorkerRuntime::take_adopted`]); the runtime watches it like one it spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdoptedWorker {
    pub id: WorkerId,
    /// Its slot, or [`SPARE_SLOT`] for a spare.
    pub slot: u32,
    pub addr: IpAddr,
    pub pid: u32,
    /// Whether it was started on what the service's config says now (else it is rolled).
    pub matches_config: bool,
}

/// A spawned worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpawnedWorker {
    /// The worker's own address (fresh per worker; freed addresses are quarantined).
    pub addr: IpAddr,
    /// Host pid of the worker's init / main process.
    pub pid: u32,
    /// The worker's root was entered with chroot, the weaker fallback allowed only where
    /// the host runs from its initramfs (pivot_root everywhere else).
    pub chroot: bool,
}

/// How a worker's main process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Kill,
}

/// A worker's resource use, from its cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    pub memory_bytes: u64,
    /// OOM kills inside the worker's cgroup since it started.
    pub oom_kills: u64,
    /// CPU time its processes used so far.
    pub cpu_time: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("worker {worker}: {operation}: {source}")]
pub struct RuntimeError {
    pub worker: WorkerId,
    pub operation: &'static str,
    pub source: RuntimeFailure,
}

/// What went wrong in a runtime operation.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeFailure {
    #[error("no such worker")]
    NoSuchWorker,
    #[error("the sandbox gave the worker no address")]
    NoAddress,
    #[error("worker task is gone")]
    TaskGone,
    #[error("worker task ended without an answer")]
    NoAnswer,
    /// Boxed: the sandbox's errors are large, and every runtime call returns this.
    #[error(transparent)]
    Sandbox(Box<crate::sandbox::SandboxError>),
}

impl From<crate::sandbox::SandboxError> for RuntimeFailure {
    fn from(error: crate::sandbox::SandboxError) -> Self {
        Self::Sandbox(Box::new(error))
    }
}

#[async_trait]
pub trait WorkerRuntime: Send + Sync + 'static {
    async fn spawn(&self, spec: &WorkerSpec) -> Result<SpawnedWorker, RuntimeError>;
    /// Resolves when the worker's main process has exited (at once if it already has).
    async fn wait(&self, worker: WorkerId) -> ExitStatus;
    fn signal(&self, worker: WorkerId, signal: StopSignal) -> Result<(), RuntimeError>;
    fn usage(&self, worker: WorkerId) -> Result<ResourceUsage, RuntimeError>;
    /// The last line the worker wrote to stdout or stderr, if it is known (before teardown).
    fn last_output(&self, _worker: WorkerId) -> Option<String> {
        None
    }
    /// Destroys everything the worker had (processes, mounts, cgroup, netns, address).
    async fn teardown(&self, worker: WorkerId) -> Result<(), RuntimeError>;
    /// A spare now serves `slot`: recorded so that a restart adopts it as that slot's
    /// worker, not as a spare.
    async fn promoted(&self, _worker: WorkerId, _slot: u32) {}
    /// The live workers of `service` an earlier run left (once: a second call returns
    /// none). Adopted workers are waited for, signalled and torn down like spawned ones.
    fn take_adopted(&self, _service: &ServiceConfig) -> Vec<AdoptedWorker> {
        Vec::new()
    }
    /// An upgrade handed the workers to a new poold: stop reading their output.
    fn detach_output(&self) {}
    /// Waits until the state record on disk holds every change made so far (before an
    /// upgrade's new poold reads it).
    async fn flush_record(&self) {}
    /// The highest id of any worker adopted at start (of any service): new workers get
    /// higher ones.
    fn highest_adopted(&self) -> Option<WorkerId> {
        None
    }
    /// Stops and tears down the adopted workers no pool took (their service is gone from
    /// the config), once every pool has started.
    async fn stop_unclaimed(&self) {}
    /// Keeps `state` as `service`'s operator state in the state record (written at once).
    fn save_operator_state(&self, _service: &str, _state: &OperatorState) {}
    /// The operator state an earlier run recorded for `service` (once: a second call
    /// returns none).
    fn take_operator_state(&self, _service: &str) -> Option<OperatorState> {
        None
    }
}
