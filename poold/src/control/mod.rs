//! The control API: JSON over HTTP on a Unix socket, served by poold and used by poolctl.
//!
//! - `GET  /v1/status` -> `[ServiceStatus]`
//! - `POST /v1/services/{name}/recycle` with `{"slot": N|null, "wait": bool}` -> `RecycleReply`

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
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
