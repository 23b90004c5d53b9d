//! The supervisor: keeps each service's pool of workers at its desired size, replaces
//! workers that crash, fail health checks or reach a recycle limit, and drains before it
//! stops (surge: the replacement is ready before the old worker loses traffic).

mod pool;
pub mod runtime;
pub mod status;

pub use pool::{PoolCommand, PoolHandle, PoolOptions, ServicePool, CRASH_LOOP_FAILURES};
pub use runtime::{
    ExitStatus, ResourceUsage, RuntimeError, SpawnedWorker, StopSignal, WorkerId, WorkerRuntime,
    WorkerSpec,
};
pub use status::{
    Readiness, RecycleReason, ServiceStatus, SlotState, SlotStatus, WorkerState, WorkerStatus,
};

#[cfg(test)]
pub(crate) mod fakes;
#[cfg(test)]
mod tests;
