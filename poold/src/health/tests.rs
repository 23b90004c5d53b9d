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

/// Accepts one connection; for HTTP reads the request and answers `response`; then reports
/// how the probe left: a read's result after the answer (Ok(0): a FIN; an error: a reset).
async fn one_connection(
    response: Option<&'static str>,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Receiver<std::io::Result<usize>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        if let Some(response) = response {
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the probe closed before its request was complete");
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(response.as_bytes()).await.unwrap();
        }
        let _ = tx.send(stream.read(&mut buf).await);
    });
    (addr, rx)
}

#[tokio::test]
async fn probes_reset_their_connection_once_answered() {
    // A reset, not a FIN: no TIME_WAIT or LAST_ACK socket on either side per probe.
    let (ok, left) = one_connection(Some("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
    assert!(NetworkHealthChecker.check(ok, &http("/")).await.is_ok());
    let after = left.await.unwrap();
    assert!(
        matches!(&after, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "HTTP probe: {after:?}"
    );
    let (tcp, left) = one_connection(None).await;
    assert!(NetworkHealthChecker
        .check(tcp, &HealthConfig::default())
        .await
        .is_ok());
    let after = left.await.unwrap();
    assert!(
        matches!(&after, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "TCP probe: {after:?}"
    );
}

#[tokio::test]
async fn probe_sockets_linger_zero_and_defer_the_handshake_ack() {
    let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let http_socket = probe_socket(target, HealthKind::Http).unwrap();
    let socket = socket2::SockRef::from(&http_socket);
    assert_eq!(socket.linger().unwrap(), Some(std::time::Duration::ZERO));
    assert!(
        !socket.tcp_quickack().unwrap(),
        "the request carries the ACK"
    );
    // A TCP check sends nothing after the handshake: its ACK goes at once.
    let tcp_socket = probe_socket(target, HealthKind::Tcp).unwrap();
    let socket = socket2::SockRef::from(&tcp_socket);
    assert_eq!(socket.linger().unwrap(), Some(std::time::Duration::ZERO));
    assert!(socket.tcp_quickack().unwrap());
}

#[tokio::test]
async fn a_status_line_arriving_in_pieces_is_read_whole() {
    // The probe peeks at the answer; a status line not complete at the first look is read.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        stream.write_all(b"HTTP/1.1 20").await.unwrap();
        stream.flush().await.unwrap();
        // Not a timing assertion: whichever way the pieces arrive, the answer is a 200.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let _ = stream.write_all(b"0 OK\r\nContent-Length: 0\r\n\r\n").await;
    });
    let result = NetworkHealthChecker.check(addr, &http("/")).await;
    assert!(result.is_ok(), "{result:?}");
}
