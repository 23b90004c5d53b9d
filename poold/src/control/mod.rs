//! The control API: JSON over HTTP on a Unix socket, served by poold and used by poolctl.
//!
//! - `GET  /v1/status` -> `[ServiceStatus]`
//! - `POST /v1/services/{name}/recycle` with `{"slot": N|null, "wait": bool}` -> `RecycleReply`
//! - `POST /v1/services/{name}/drain`, `POST /v1/drain` (every service) with
//!   `{"wait": bool, "timeout_secs": S|null}` -> `DrainReply`
//! - `POST /v1/services/{name}/undrain`, `POST /v1/undrain` -> `DrainReply`
//! - `POST /v1/reload` -> `ReloadReply` (re-reads the config file, applies the difference)
//! - `POST /v1/upgrade` -> `UpgradeReply` (execs a new poold and hands everything over)
//! - `POST /v1/services/{name}/deploy` with `{"rootfs": "...", "wait": bool}` -> `DeployReply`
//! - `POST /v1/services/{name}/slots/{slot}/drain` and `.../undrain` -> `SlotDrainReply`
//! - `POST /v1/services/{name}/scale` with `{"workers": N}` -> `ScaleReply`

pub mod client;
pub mod render;
pub mod server;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecycleRequest {
    pub slot: Option<u32>,
    /// Answer only when the old workers are gone and their slots are ready again.
    #[serde(default)]
    pub wait: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecycleReply {
    pub service: String,
    pub slots: Vec<u32>,
    pub finished: bool,
}

/// Take services out of the fleet: the readiness endpoint answers 503 at once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Answer only when the services have had no active connection for
    /// [`server::DRAIN_SETTLE`].
    #[serde(default)]
    pub wait: bool,
    /// Give up waiting after this long (default [`server::DRAIN_WAIT_DEFAULT`]).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    pub services: Vec<String>,
    pub drained: bool,
    /// With `wait`: the services had no active connection for the settle period.
    pub settled: bool,
}

/// The old and the new poold's pids after a successful upgrade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReply {
    pub old_pid: u32,
    pub new_pid: u32,
}

/// Asks the daemon for an upgrade; the answer is the reply or the reason it failed.
pub type Upgrader =
    tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<UpgradeReply, String>>>;

/// What a reload applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<ServiceReload>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReload {
    pub service: String,
    /// Keys applied without replacing workers.
    pub in_place: Vec<String>,
    /// Keys that change what a worker is: every worker is being replaced.
    pub rolling: Vec<String>,
    /// The service's generation after the reload.
    pub generation: u64,
}

/// Why a reload changed nothing (or, for `Pool`/`Start`, stopped part way).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}\nreload refused: nothing changed")]
    Invalid(#[from] crate::config::ConfigError),
    #[error(
        "{}\nreload refused: nothing changed",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    )]
    Refused(Vec<crate::config::Refusal>),
    #[error("{0}\nreload refused: nothing changed")]
    InFlight(crate::supervisor::PoolError),
    #[error("service {service}: {source}")]
    Pool {
        service: String,
        source: crate::supervisor::PoolError,
    },
    #[error("service {service}: starting its pool failed: {source}")]
    Start {
        service: String,
        source: crate::balancer::BalancerError,
    },
    #[error("reload is not available here")]
    Unavailable,
}

/// Re-reads and applies the config file; provided by the daemon, which owns the pools.
#[async_trait::async_trait]
pub trait Reloader: Send + Sync + std::fmt::Debug {
    async fn reload(&self) -> Result<ReloadReply, ReloadError>;
}

/// Replace every worker of a service with one on a new root file system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// `host`, an absolute directory or a .tar/.tar.gz/.tgz archive (as `rootfs` in the
    /// config).
    pub rootfs: String,
    /// Answer only when every worker runs the new root, or the deploy was rolled back.
    #[serde(default)]
    pub wait: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployReply {
    pub service: String,
    pub generation: u64,
    pub finished: bool,
}

/// One slot's worker out of rotation (or back): `poolctl drain SERVICE/SLOT`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotDrainReply {
    pub service: String,
    pub slot: u32,
    pub worker: crate::runtime::WorkerId,
    pub drained: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub workers: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleReply {
    pub service: String,
    pub from: u32,
    pub to: u32,
    /// The count in the config file; it comes back at the next reload.
    pub configured: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("poold is not running (control socket {path}: {source})")]
    NotRunning {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "control socket {path}: permission denied: only root and members of \
         daemon.control_group may use it"
    )]
    PermissionDenied { path: String },
    #[error("control socket {path}: HTTP: {message}")]
    Http { path: String, message: String },
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("control socket {path}: bad reply: {message}")]
    Decode { path: String, message: String },
}

#[cfg(test)]
mod tests;
