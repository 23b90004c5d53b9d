//! The operator's verbs against the real poold: `poolctl drain`/`undrain` of a service and
//! of the whole host, and the readiness endpoint upstream balancers check.

use super::{http_service, Daemon};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Output;
use std::time::{Duration, Instant};

fn text(output: &Output) -> (bool, String, String) {
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    )
}

/// `GET /ready...`: the code and the JSON body.
fn ready(daemon: &Daemon, path: &str) -> (u16, Value) {
    let (code, body) = daemon.http_get(path);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"));
    (code, json)
}

/// One request through the service's listener, answered by a worker.
fn served(listen: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(listen) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.") && response.contains("hello from a poold worker")
}

/// Service drain and host drain: /ready goes 503 at once with the reason while the workers
/// keep serving, `drain --wait` waits for held connections and gives up at its timeout,
/// undrain restores 200, and every error is one line with a non-zero exit.
pub fn drain_and_readiness() {
    let web_port = super::free_port();
    let api_port = super::free_port();
    let web = format!("127.0.0.1:{web_port}");
    let api = format!("127.0.0.1:{api_port}");
    // min_ready belongs to [[service]], before the [service.health] table http_service writes.
    let services = format!(
        "{}{}",
        http_service("web", &web, 2, "").replacen(
            "workers = 2\n",
            "workers = 2\nmin_ready = 2\n",
            1
        ),
        http_service("api", &api, 1, "")
    );
    let mut daemon = Daemon::start("proxy", &services);
    daemon.wait_ready("web", 2);
    daemon.wait_ready("api", 1);

    let (code, body) = ready(&daemon, "/ready");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["services"].as_array().unwrap().len(), 2, "{body}");
    let (code, body) = ready(&daemon, "/ready/web");
    assert_eq!(
        (code, &body["ready_workers"], &body["min_ready"]),
        (200, &2.into(), &2.into()),
        "{body}"
    );
    let (code, body) = ready(&daemon, "/ready/nope");
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"nope\""),
        "{body}"
    );

    // Drain one service: 503 at once, the other service and the host's other checks stay.
    let (ok, out, err) = text(&daemon.poolctl(&["drain", "web"]));
    assert!(ok, "{err}");
    assert_eq!(out, "web: drained (readiness 503)");
    let (code, body) = ready(&daemon, "/ready/web");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["reason"], "drained by the operator", "{body}");
    assert_eq!(ready(&daemon, "/ready/api").0, 200);
    assert_eq!(ready(&daemon, "/ready").0, 503);
    assert!(
        served(&web),
        "a drained service must keep serving what still arrives"
    );
    let status = daemon.status("web").unwrap();
    assert_eq!(status["drained"], true, "{status}");

    // A held connection keeps `drain --wait` from settling; it gives up at --timeout.
    let mut held = TcpStream::connect(&web).unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(); // headers never end
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.status("web").unwrap()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["active_conns"].as_u64().unwrap())
        .sum::<u64>()
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the held connection never showed as active"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let (ok, out, err) = text(&daemon.poolctl(&["drain", "web", "--wait", "--timeout", "3s"]));
    assert!(!ok, "drain --wait settled with a connection held: {out}");
    assert!(
        err.starts_with("poolctl: ")
            && err.contains("active connections remain")
            && err.contains("web has 1"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(started.elapsed() >= Duration::from_secs(3), "gave up early");
    drop(held);
    let (ok, out, err) = text(&daemon.poolctl(&["drain", "web", "--wait"]));
    assert!(ok, "{err}");
    assert_eq!(out, "web: drained, no active connections");

    let (ok, out, err) = text(&daemon.poolctl(&["undrain", "web"]));
    assert!(ok, "{err}");
    assert_eq!(out, "web: undrained (back in rotation)");
    assert_eq!(ready(&daemon, "/ready/web").0, 200);
    assert_eq!(ready(&daemon, "/ready").0, 200);

    // The whole host, with --json.
    let (ok, out, err) = text(&daemon.poolctl(&["--json", "drain", "--all"]));
    assert!(ok, "{err}");
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        reply["services"],
        serde_json::json!(["web", "api"]),
        "{reply}"
    );
    assert_eq!(reply["drained"], true, "{reply}");
    let (code, body) = ready(&daemon, "/ready");
    assert_eq!(code, 503, "{body}");
    assert!(
        body["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["drained"] == true),
        "{body}"
    );
    let (ok, _, err) = text(&daemon.poolctl(&["undrain", "--all"]));
    assert!(ok, "{err}");
    assert_eq!(ready(&daemon, "/ready").0, 200);

    // Errors: one line, non-zero.
    for (args, expected) in [
        (&["drain", "nope"][..], "no service named \"nope\""),
        (&["undrain", "nope"][..], "no service named \"nope\""),
    ] {
        let (ok, _, err) = text(&daemon.poolctl(args));
        assert!(
            !ok && err.contains(expected) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    for args in [
        &["drain"][..],
        &["drain", "web", "--all"][..],
        &["drain", "web", "--timeout", "3s"][..],
    ] {
        let (ok, _, err) = text(&daemon.poolctl(args));
        assert!(
            !ok && err.contains("error:"),
            "{args:?} must be refused: {err}"
        );
    }

    // Shutdown: /ready answers 503 (drained) before the workers go.
    daemon.stop_and_check_clean("127.0.0.1");
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("readiness drain changed")
            && l.contains("drained=true")
            && l.contains("service=api")),
        "shutdown did not drain readiness first; log:\n{log}"
    );
}
