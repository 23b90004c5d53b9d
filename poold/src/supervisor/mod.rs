//! The supervisor: keeps each service's pool of workers at its desired size, replaces
//! workers that crash, fail health checks or reach a recycle limit, and drains before it
//! stops (surge: the replacement is ready before the old worker loses traffic).
//!
//! It drives [`crate::runtime`], [`crate::balancer`] and [`crate::health`] through their
//! traits and reports through [`PoolObserver`]; it knows nothing above it (metrics, control).

mod observer;
mod pool;
pub mod status;

pub use observer::{NoObserver, PoolObserver};
pub use pool::{
    DeployFailure, PoolCommand, PoolError, PoolHandle, PoolOptions, ScaleChange, ServicePool,
    CRASH_LOOP_FAILURES,
};
pub use status::{
    Readiness, RecycleReason, ServiceStatus, SlotState, SlotStatus, WorkerState, WorkerStatus,
};

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
