//! poolctl's side of the control socket: HTTP/1.1 over a Unix stream (hyper).

use super::{
    ApiError, ControlError, DeployReply, DeployRequest, DrainReply, DrainRequest, RecycleReply,
    RecycleRequest, ReloadReply, ScaleReply, ScaleRequest, SlotDrainReply,
};
use crate::supervisor::ServiceStatus;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A poold that does not accept within this is stuck or gone; say so rather than hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct ControlClient {
    socket: PathBuf,
}

impl ControlClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn status(&self) -> Result<Vec<ServiceStatus>, ControlError> {
        self.call("GET", "/v1/status", None).await
    }

    pub async fn recycle(
        &self,
        service: &str,
        request: &RecycleRequest,
    ) -> Result<RecycleReply, ControlError> {
        let body = serde_json::to_vec(request).expect("request serializes");
        self.call(
            "POST",
            &format!("/v1/services/{service}/recycle"),
            Some(body),
        )
        .await
    }

    /// Drains `service`, or every service when `None`, for the readiness endpoint.
    pub async fn drain(
        &self,
        service: Option<&str>,
        request: &DrainRequest,
    ) -> Result<DrainReply, ControlError> {
        let body = serde_json::to_vec(request).expect("request serializes");
        let path = match service {
            Some(service) => format!("/v1/services/{service}/drain"),
            None => "/v1/drain".to_owned(),
        };
        self.call("POST", &path, Some(body)).await
    }

    pub async fn undrain(&self, service: Option<&str>) -> Result<DrainReply, ControlError> {
        let path = match service {
            Some(service) => format!("/v1/services/{service}/undrain"),
            None => "/v1/undrain".to_owned(),
        };
        self.call("POST", &path, None).await
    }

    pub async fn upgrade(&self) -> Result<super::UpgradeReply, ControlError> {
        self.call("POST", "/v1/upgrade", None).await
    }

    pub async fn reload(&self) -> Result<ReloadReply, ControlError> {
        self.call("POST", "/v1/reload", None).await
    }

    pub async fn deploy(
        &self,
        service: &str,
        request: &DeployRequest,
    ) -> Result<DeployReply, ControlError> {
        let body = serde_json::to_vec(request).expect("request serializes");
        self.call(
            "POST",
            &format!("/v1/services/{service}/deploy"),
            Some(body),
        )
        .await
    }

    /// Drains one slot's worker (weight 0, kept alive) or undrains it.
    pub async fn drain_slot(
        &self,
        service: &str,
        slot: u32,
        drained: bool,
    ) -> Result<SlotDrainReply, ControlError> {
        let verb = if drained { "drain" } else { "undrain" };
        self.call(
            "POST",
            &format!("/v1/services/{service}/slots/{slot}/{verb}"),
            None,
        )
        .await
    }

    pub async fn scale(&self, service: &str, workers: u32) -> Result<ScaleReply, ControlError> {
        let body = serde_json::to_vec(&ScaleRequest { workers }).expect("request serializes");
        self.call("POST", &format!("/v1/services/{service}/scale"), Some(body))
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ControlError> {
        let socket = self.socket.display().to_string();
        let connect = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::UnixStream::connect(&self.socket),
        );
        let stream = match connect.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) if source.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(ControlError::PermissionDenied { path: socket });
            }
            Ok(Err(source))
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ControlError::NotRunning {
                    path: socket,
                    source,
                });
            }
            Ok(Err(source)) => {
                return Err(ControlError::Socket {
                    path: socket,
                    source,
                })
            }
            Err(_) => {
                return Err(ControlError::Socket {
                    path: socket,
                    source: std::io::ErrorKind::TimedOut.into(),
                })
            }
        };
        let http = |e: hyper::Error| ControlError::Http {
            path: socket.clone(),
            message: e.to_string(),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "poold")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("valid request");
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ControlError::Api {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ControlError::Decode {
            path: socket,
            message: e.to_string(),
        })
    }
}
