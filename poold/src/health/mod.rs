//! Health checks of workers: a TCP connect, or an HTTP GET expecting a status.

use crate::config::{HealthConfig, HealthKind, HumanDuration};
use async_trait::async_trait;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a health check did not pass.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HealthFailure {
    /// The worker did not answer as expected (refused, reset, a wrong answer).
    #[error("{0}")]
    Worker(String),
    /// The worker did not answer within the check's timeout: dead, or only slow (a worker
    /// starved of CPU is slow). The supervisor tells the two apart by the balancer's counters.
    #[error("no answer within {0}")]
    Timeout(HumanDuration),
    /// poold itself is short of a resource (file descriptors, buffers, memory): the check
    /// says nothing about the worker and must not count against it.
    #[error("local error (not the worker's fault): {0}")]
    Local(String),
}

#[async_trait]
pub trait HealthChecker: Send + Sync + 'static {
    /// Ok when healthy; the reason otherwise. Implementations honour `spec.timeout`.
    async fn check(&self, target: SocketAddr, spec: &HealthConfig) -> Result<(), HealthFailure>;
}

/// A failed socket operation: poold's own shortage, or the worker's failure.
fn failed(what: String, error: &std::io::Error) -> HealthFailure {
    if crate::conn_limit::is_local_resource_error(error) {
        HealthFailure::Local(format!("{what}: {error}"))
    } else {
        HealthFailure::Worker(format!("{what}: {error}"))
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
            Err(_) => Err(HealthFailure::Timeout(spec.timeout)),
        }
    }
}

async fn probe(target: SocketAddr, spec: &HealthConfig) -> Result<(), HealthFailure> {
    let mut stream = TcpStream::connect(target)
        .await
        .map_err(|e| failed(format!("connect {target}"), &e))?;
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
        .map_err(|e| failed("send request".to_owned(), &e))?;
    // The status line is all that matters; read until its end.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let read = stream
            .read(&mut buf)
            .await
            .map_err(|e| failed("read response".to_owned(), &e))?;
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
        .ok_or_else(|| HealthFailure::Worker(format!("not an HTTP response: {line:?}")))?;
    if status == spec.expect_status {
        Ok(())
    } else {
        Err(HealthFailure::Worker(format!(
            "GET {} answered {status}, expected {}",
            spec.path, spec.expect_status
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn http_server(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    fn http(path: &str) -> HealthConfig {
        HealthConfig {
            kind: HealthKind::Http,
            path: path.into(),
            ..HealthConfig::default()
        }
    }

    #[tokio::test]
    async fn http_status_is_compared() {
        let ok = http_server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let broken = http_server("HTTP/1.0 503 Service Unavailable\r\n\r\n").await;
        let garbage = http_server("SSH-2.0-OpenSSH\r\n").await;
        let checker = NetworkHealthChecker;
        assert_eq!(checker.check(ok, &http("/")).await, Ok(()));
        let error = checker.check(broken, &http("/healthz")).await.unwrap_err();
        assert_eq!(
            error,
            HealthFailure::Worker("GET /healthz answered 503, expected 200".into())
        );
        let error = checker.check(garbage, &http("/")).await.unwrap_err();
        assert!(
            error.to_string().contains("not an HTTP response"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn tcp_check_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let checker = NetworkHealthChecker;
        assert_eq!(checker.check(addr, &HealthConfig::default()).await, Ok(()));
        drop(listener);
        let refused = checker.check(addr, &HealthConfig::default()).await;
        assert!(
            matches!(refused, Err(HealthFailure::Worker(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn poolds_own_shortages_are_local_errors() {
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(matches!(
            failed("connect".into(), &emfile),
            HealthFailure::Local(_)
        ));
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(matches!(
            failed("connect".into(), &refused),
            HealthFailure::Worker(_)
        ));
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spec = HealthConfig {
            timeout: HumanDuration::from_millis(200),
            ..http("/")
        };
        let error = NetworkHealthChecker.check(addr, &spec).await.unwrap_err();
        assert_eq!(
            error,
            HealthFailure::Timeout(HumanDuration::from_millis(200))
        );
        assert_eq!(error.to_string(), "no answer within 200ms");
        drop(listener);
    }
}
