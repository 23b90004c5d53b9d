//! Health checks of workers: a TCP connect, or an HTTP GET expecting a status.

use crate::config::{HealthConfig, HealthKind, HumanDuration};
use async_trait::async_trait;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

/// Why a health check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum HealthFailure {
    /// The worker did not answer as expected.
    #[error(transparent)]
    Worker(ProbeError),
    /// poold itself is short of a resource (file descriptors, buffers, memory): the check
    /// says nothing about the worker and must not count against it.
    #[error("local error (not the worker's fault): {0}")]
    Local(ProbeError),
}

/// What a probe saw go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{step}: {source}")]
    Io {
        step: ProbeStep,
        source: std::io::Error,
    },
    #[error("no answer within {timeout}")]
    Timeout { timeout: HumanDuration },
    #[error("not an HTTP response: {line:?}")]
    NotHttp { line: String },
    #[error("GET {path} answered {status}, expected {expected}")]
    Status {
        path: String,
        status: u16,
        expected: u16,
    },
}

/// The socket operation a probe was in when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeStep {
    Connect(SocketAddr),
    SendRequest,
    ReadResponse,
}

impl std::fmt::Display for ProbeStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(target) => write!(f, "connect {target}"),
            Self::SendRequest => f.write_str("send request"),
            Self::ReadResponse => f.write_str("read response"),
        }
    }
}

#[async_trait]
pub trait HealthChecker: Send + Sync + 'static {
    /// Ok when healthy; the reason otherwise. Implementations honour `spec.timeout`.
    async fn check(&self, target: SocketAddr, spec: &HealthConfig) -> Result<(), HealthFailure>;
}

/// A failed socket operation: poold's own shortage, or the worker's failure.
fn failed(step: ProbeStep, source: std::io::Error) -> HealthFailure {
    let local = crate::conn_limit::is_local_resource_error(&source);
    let error = ProbeError::Io { step, source };
    if local {
        HealthFailure::Local(error)
    } else {
        HealthFailure::Worker(error)
    }
}

/// Checks over real sockets.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetworkHealthChecker;

#[async_trait]
impl HealthChecker for NetworkHealthChecker {
    async fn check(&self, target: SocketAddr, spec: &HealthConfig) -> Result<(), HealthFailure> {
        match tokio::time::timeout(spec.timeout.get(), probe(target, spec)).await {
            Ok(result) => result,
            Err(_) => Err(HealthFailure::Worker(ProbeError::Timeout {
                timeout: spec.timeout,
            })),
        }
    }
}

async fn probe(target: SocketAddr, spec: &HealthConfig) -> Result<(), HealthFailure> {
    let mut stream = TcpStream::connect(target)
        .await
        .map_err(|e| failed(ProbeStep::Connect(target), e))?;
    if spec.kind == HealthKind::Tcp {
        return Ok(());
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: poold-health\r\nConnection: close\r\n\r\n",
        spec.path
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| failed(ProbeStep::SendRequest, e))?;
    // The status line is all that matters; read until its end.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let read = stream
            .read(&mut buf)
            .await
            .map_err(|e| failed(ProbeStep::ReadResponse, e))?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buf[..read]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            HealthFailure::Worker(ProbeError::NotHttp {
                line: line.to_owned(),
            })
        })?;
    if status == spec.expect_status {
        Ok(())
    } else {
        Err(HealthFailure::Worker(ProbeError::Status {
            path: spec.path.clone(),
            status,
            expected: spec.expect_status,
        }))
    }
}
