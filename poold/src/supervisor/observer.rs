//! What a pool tells whoever watches it about the events it decides on (metrics counts
//! them). The supervisor knows no observer: daemon.rs hands one to each pool, and a pool
//! started with [`NoObserver`] reports to nobody.

use super::RecycleReason;
use crate::runtime::{ExitStatus, WorkerId};
use std::time::Duration;

/// Event hooks of one pool, called from its task where the supervisor decides. Each has a
/// no-op default, so an observer implements only what it counts. Calls must not block.
pub trait PoolObserver: Send + Sync + 'static {
    /// A worker for `slot` is being spawned.
    fn worker_spawned(&self, _slot: u32, _worker: WorkerId) {}
    /// The replacement of `worker` began: a planned recycle (surge start or drain) or an
    /// unhealthy worker's drain. Called once per worker, however often its recycle is retried.
    fn recycle_started(&self, _worker: WorkerId, _reason: RecycleReason) {}
    /// A worker whose recycle had started exited, `duration` after that start.
    fn recycle_finished(&self, _worker: WorkerId, _reason: RecycleReason, _duration: Duration) {}
    /// A worker's main process exited (asked to or not).
    fn worker_exited(&self, _worker: WorkerId, _status: ExitStatus) {}
    /// A worker exited while starting or ready, without being asked to.
    fn worker_crashed(&self, _worker: WorkerId, _status: ExitStatus) {}
    /// A health check of a ready worker failed.
    fn health_check_failed(&self, _worker: WorkerId) {}
    /// `kills` new OOM kills inside a ready worker's cgroup.
    fn oom_killed(&self, _worker: WorkerId, _kills: u64) {}
}

/// Reports to nobody.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl PoolObserver for NoObserver {}
