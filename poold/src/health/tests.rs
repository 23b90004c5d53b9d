//! The probes against real sockets on loopback.

use super::*;
use crate::config::HumanDuration;
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
    assert!(checker.check(ok, &http("/")).await.is_ok());
    let error = checker.check(broken, &http("/healthz")).await.unwrap_err();
    assert!(
        matches!(
            &error,
            HealthFailure::Worker(ProbeError::Status {
                status: 503,
                expected: 200,
                ..
            })
        ),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "GET /healthz answered 503, expected 200");
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
    assert!(checker.check(addr, &HealthConfig::default()).await.is_ok());
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
        failed(ProbeStep::SendRequest, emfile),
        HealthFailure::Local(_)
    ));
    let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
    assert!(matches!(
        failed(ProbeStep::SendRequest, refused),
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
    assert!(
        matches!(&error, HealthFailure::Worker(ProbeError::Timeout { .. })),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "no answer within 200ms");
    drop(listener);
}
