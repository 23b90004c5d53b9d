//! Health checks of workers: a TCP connect, or an HTTP GET expecting a status.

use crate::config::{HealthConfig, HealthKind, HumanDuration};
use async_trait::async_trait;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

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

/// The start of the answer, up to the end of its status line (or 4 KiB, or its end).
///
/// Peeked first, not read: a read that empties the socket makes the kernel acknowledge
/// the answer at once (one more packet, and the worker's side of it runs on poold's time),
/// while data left unread costs nothing before the reset. Only a status line that has not
/// fully arrived yet is read in the usual way (peeking again would spin).
async fn status_head(stream: &mut TcpStream) -> Result<Vec<u8>, HealthFailure> {
    let failed_read = |e| failed(ProbeStep::ReadResponse, e);
    let mut peeked = [0u8; 512];
    let n = stream.peek(&mut peeked).await.map_err(failed_read)?;
    if n == 0 || peeked[..n].contains(&b'\n') {
        return Ok(peeked[..n].to_vec());
    }
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let read = stream.read(&mut buf).await.map_err(failed_read)?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buf[..read]);
    }
    Ok(head)
}

/// A probe's socket, set up so a probe costs as few packets as it can: at 1,000 workers
/// most of poold's idle CPU is the kernel's work for probe packets, both ends' (the
/// worker's side of a packet poold sends runs in poold's softirq context).
///
/// - `SO_LINGER` 0: dropping the socket once the answer is in resets the connection
///   instead of closing it, so neither end goes through the FIN exchange, poold's side
///   holds no LAST_ACK or TIME_WAIT socket and the worker's none in TIME_WAIT (as HAProxy
///   closes its checks). The probe's meaning is unchanged: the answer was read first.
/// - HTTP: `TCP_QUICKACK` off before connecting delays the handshake's last ACK, which
///   then rides on the request sent right after (one packet less); off again once the
///   request is sent, and the answer peeked ([`status_head`]): no ACK for the answer
///   before the reset.
fn probe_socket(target: SocketAddr, kind: HealthKind) -> std::io::Result<TcpSocket> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_zero_linger()?;
    if kind == HealthKind::Http {
        socket2::SockRef::from(&socket).set_tcp_quickack(false)?;
    }
    Ok(socket)
}

async fn probe(target: SocketAddr, spec: &HealthConfig) -> Result<(), HealthFailure> {
    let connect = |e| failed(ProbeStep::Connect(target), e);
    let mut stream = probe_socket(target, spec.kind)
        .map_err(connect)?
        .connect(target)
        .await
        .map_err(connect)?;
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
    // Delayed ACKs again (the kernel left that mode when the handshake ended): the answer's
    // segments are not acknowledged one by one before the reset (an error here costs only
    // those packets).
    let _ = socket2::SockRef::from(&stream).set_tcp_quickack(false);
    let head = status_head(&mut stream).await?;
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
