//! The control API: JSON over HTTP on a Unix socket, served by poold and used by poolctl.
//!
//! - `GET  /v1/status` -> `[ServiceStatus]`
//! - `POST /v1/services/{name}/recycle` with `{"slot": N|null, "wait": bool}` -> `RecycleReply`
//! - `POST /v1/services/{name}/drain`, `POST /v1/drain` (every service) with
//!   `{"wait": bool, "timeout_secs": S|null}` -> `DrainReply`
//! - `POST /v1/services/{name}/undrain`, `POST /v1/undrain` -> `DrainReply`
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
