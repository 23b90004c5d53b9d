//! The operator's verbs against the real poold: `poolctl drain`/`undrain` of a service and
//! of the whole host, and the readiness endpoint upstream balancers check.

use super::{http_service, served, Daemon};
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
    // Not a terminal: plain progress lines, then the answer.
    assert_eq!(
        out.lines().last(),
        Some("web: drained, no active connections"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.ends_with("s  web: no active connections")),
        "no progress line: {out}"
    );

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

/// `status` of one service, with `--json`.
fn service_status(daemon: &Daemon, service: &str) -> Value {
    let (ok, out, err) = text(&daemon.poolctl(&["--json", "status", service]));
    assert!(ok, "{err}");
    let mut services: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(services.len(), 1, "{out}");
    services.remove(0)
}

/// Polls `service`'s status until `done` holds (two minutes at most).
fn wait_for(daemon: &Daemon, service: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = service_status(daemon, service);
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: {status}; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One failing poolctl: non-zero, one line on stderr containing `expected`.
fn refused(daemon: &Daemon, args: &[&str], expected: &str) {
    let (ok, out, err) = text(&daemon.poolctl(args));
    assert!(!ok, "{args:?} succeeded: {out}");
    assert!(
        err.starts_with("poolctl: ") && err.contains(expected) && err.lines().count() == 1,
        "{args:?}: expected one line with {expected:?}, got: {err}"
    );
}

/// One worker out of rotation and back, recycle by SERVICE/SLOT with progress, scale up and
/// down, status of one service with memory, CPU and recycles, and every error of these.
pub fn slot_drain_scale_and_recycle() {
    let web = format!("127.0.0.1:{}", super::free_port());
    let api = format!("127.0.0.1:{}", super::free_port());
    let services = format!(
        "{}{}",
        http_service("web", &web, 2, "[service.limits]\nmemory = \"64M\"\n"),
        http_service("api", &api, 1, "")
    );
    let mut daemon = Daemon::start("proxy", &services);
    daemon.wait_ready("web", 2);
    daemon.wait_ready("api", 1);

    // status SERVICE: that service only, with the new per-worker columns.
    let (ok, out, err) = text(&daemon.poolctl(&["status", "api"]));
    assert!(ok, "{err}");
    assert!(out.contains("api") && !out.contains("web"), "{out}");
    assert!(out.contains("MEMORY") && out.contains("RECYCLED"), "{out}");
    let (ok, out, _) = text(&daemon.poolctl(&["status", "web"]));
    assert!(
        ok && out.contains("/64.0M"),
        "memory against its limit: {out}"
    );
    let status = service_status(&daemon, "web");
    let worker = &status["workers"][0];
    assert_eq!(worker["memory_limit_bytes"], 64 << 20, "{worker}");
    assert!(worker["cpu_secs"].as_f64().is_some(), "{worker}");
    assert_eq!(status["slots"][0]["recycles"], 0, "{status}");
    refused(&daemon, &["status", "nope"], "no service named \"nope\"");

    // drain web/1: out of rotation, alive, not replaced; web/0 serves.
    let drained_pid = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["slot"] == 1)
        .unwrap()["pid"]
        .clone();
    let (ok, out, err) = text(&daemon.poolctl(&["drain", "web/1"]));
    assert!(ok, "{err}");
    assert!(
        out.starts_with("web/1: worker w")
            && out.ends_with("drained (weight 0, kept alive, no replacement)"),
        "{out}"
    );
    let status = service_status(&daemon, "web");
    assert_eq!(status["ready"], 1, "{status}");
    assert_eq!(status["slots"][1]["state"], "drained", "{status}");
    let drained: Vec<&Value> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "drained")
        .collect();
    assert_eq!(drained.len(), 1, "{status}");
    assert_eq!(drained[0]["pid"], drained_pid, "the drained worker is kept");
    for _ in 0..4 {
        assert!(served(&web), "web/0 must serve while web/1 is drained");
    }
    let (ok, out, _) = text(&daemon.poolctl(&["status", "web"]));
    assert!(ok && out.contains("drained by the operator"), "{out}");
    refused(&daemon, &["drain", "web/1"], "web/1 is already drained");
    refused(&daemon, &["drain", "web/5"], "service web has slots 0 to 1");
    refused(&daemon, &["undrain", "web/0"], "web/0 is not drained");
    refused(&daemon, &["drain", "nope/0"], "no service named \"nope\"");
    refused(
        &daemon,
        &["drain", "web/1", "--wait"],
        "--wait is for a whole service",
    );
    let (ok, _, err) = text(&daemon.poolctl(&["drain", "web/x"]));
    assert!(!ok && err.contains("SERVICE/SLOT"), "{err}");
    // A few health intervals later it is still the same worker, still drained.
    std::thread::sleep(Duration::from_secs(3));
    let status = service_status(&daemon, "web");
    assert_eq!(
        status["workers"].as_array().unwrap().len(),
        2,
        "no replacement: {status}"
    );
    assert_eq!(status["slots"][1]["state"], "drained", "{status}");

    let (ok, out, err) = text(&daemon.poolctl(&["undrain", "web/1"]));
    assert!(ok, "{err}");
    assert!(out.ends_with("undrained (back in rotation)"), "{out}");
    assert_eq!(service_status(&daemon, "web")["ready"], 2);

    // recycle SERVICE/SLOT --wait replaces a drained worker, printing its steps.
    assert!(text(&daemon.poolctl(&["drain", "web/1"])).0);
    let (ok, out, err) = text(&daemon.poolctl(&["recycle", "web/1", "--wait"]));
    assert!(ok, "{err}");
    assert_eq!(out.lines().last(), Some("web: recycled slots [1]"), "{out}");
    // Progress is sampled from status: a replacement that starts between two samples
    // shows up first as ready (seen on a quiet host: "0.5s  web/1 worker w4 ready").
    assert!(
        out.lines().any(|l| l.contains("s  web/1 worker w")
            && (l.contains(" starting") || l.ends_with(" ready"))),
        "no progress line for the replacement: {out}"
    );
    let status = service_status(&daemon, "web");
    assert_eq!(status["slots"][1]["state"], "ok", "{status}");
    assert_eq!(
        (
            &status["slots"][1]["recycles"],
            &status["slots"][1]["last_recycle"]
        ),
        (&1.into(), &"manual".into()),
        "{status}"
    );
    assert!(status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["pid"] != drained_pid));
    // The old spelling still works.
    let (ok, out, err) = text(&daemon.poolctl(&["recycle", "web", "--slot", "0", "--wait"]));
    assert!(ok, "{err}");
    assert_eq!(out.lines().last(), Some("web: recycled slots [0]"), "{out}");
    refused(
        &daemon,
        &["recycle", "web/0", "--slot", "1"],
        "two different slots",
    );
    refused(
        &daemon,
        &["recycle", "web/7"],
        "service web has slots 0 to 1",
    );
    refused(&daemon, &["recycle", "nope"], "no service named \"nope\"");
    // An operation in flight on the slot: a queued recycle refuses a drain.
    assert!(text(&daemon.poolctl(&["recycle", "web/0"])).0);
    refused(&daemon, &["drain", "web/0"], "web/0 is being recycled");
    wait_for(&daemon, "web", "done recycling web/0", |s| {
        s["slots"][0]["recycles"] == 2
            && s["slots"][0]["state"] == "ok"
            && s["workers"].as_array().unwrap().len() == 2
    });

    // scale up and back down: surge-safe, status says so.
    let (ok, out, err) = text(&daemon.poolctl(&["scale", "web", "3"]));
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "web: scaled from 2 to 3 workers (configured 2; until the next reload)"
    );
    daemon.wait_ready("web", 3);
    let (_, out, _) = text(&daemon.poolctl(&["status", "web"]));
    assert!(
        out.contains("ready 3/3 (scaled from 2 until the next reload)"),
        "{out}"
    );
    assert_eq!(service_status(&daemon, "web")["scaled_from"], 2);
    let (ok, out, err) = text(&daemon.poolctl(&["scale", "web", "2"]));
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "web: scaled from 3 to 2 workers (the configured count)"
    );
    let status = wait_for(&daemon, "web", "back at 2 workers", |s| {
        s["workers"].as_array().unwrap().len() == 2 && s["ready"] == 2
    });
    assert!(status.get("scaled_from").is_none(), "{status}");
    assert!(status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["slot"].as_u64() < Some(2)));
    refused(
        &daemon,
        &["scale", "web", "100000"],
        "out of range: from 1 to",
    );
    refused(
        &daemon,
        &["scale", "nope", "2"],
        "no service named \"nope\"",
    );
    let (ok, _, err) = text(&daemon.poolctl(&["scale", "web", "0"]));
    assert!(!ok && err.contains("error:"), "{err}");

    // poold not running: one line, non-zero.
    let missing = daemon.dir().join("missing.sock");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_poolctl"))
        .arg("--socket")
        .arg(&missing)
        .arg("status")
        .output()
        .unwrap();
    let (ok, _, err) = text(&run);
    assert!(
        !ok && err.starts_with("poolctl: poold is not running") && err.lines().count() == 1,
        "{err}"
    );

    daemon.stop_and_check_clean("127.0.0.1");
}

/// SIGTERM drains: a client holding a connection keeps poold waiting (drain_timeout is
/// 300 s here). A second SIGTERM hurries it: the worker stops with the connection cut,
/// poold exits cleanly and leaves nothing behind.
pub fn second_signal_hurries_shutdown() {
    let port = super::free_port();
    let listen = format!("127.0.0.1:{port}");
    let service = http_service(
        "hurry",
        &listen,
        1,
        "\n[service.recycle]\ndrain_timeout = \"300s\"\nstop_timeout = \"5s\"\n",
    );
    let mut daemon = Daemon::start("proxy", &service);
    daemon.wait_ready("hurry", 1);
    // Half a request: the worker waits for the rest, the connection stays active.
    let mut held = TcpStream::connect(&listen).unwrap();
    held.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.status("hurry").unwrap()["workers"][0]["active_conns"].as_u64() != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the held connection never became active"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon.log().contains("draining worker") {
        assert!(
            Instant::now() < deadline,
            "no drain after SIGTERM:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.assert_running();
    assert!(
        !daemon.log().contains("hurrying"),
        "hurried without a second signal:\n{}",
        daemon.log()
    );
    // stop_and_check_clean sends the second SIGTERM and waits (60 s at most, far below
    // the drain timeout) for a clean exit.
    daemon.stop_and_check_clean("127.0.0.1");
    let log = daemon.log();
    assert!(
        log.contains("second stop signal: hurrying the shutdown")
            && log.contains("drain timeout; stopping with connections open"),
        "the second signal did not hurry the drain:\n{log}"
    );
    let mut rest = Vec::new();
    let _ = held.read_to_end(&mut rest);
}

/// `stop_signal = "SIGQUIT"` (nginx's graceful stop) reaches the program when poold stops
/// it; the default SIGTERM does not come first.
pub fn stop_signal_reaches_the_program() {
    let port = super::free_port();
    let service = format!(
        r#"
[[service]]
name = "quits"
listen = "127.0.0.1:{port}"
workers = 1
port = 8080
rootfs = "{{rootfs}}"
stop_signal = "SIGQUIT"
command = ["/bin/busybox", "sh", "-c", """
trap 'echo stopped by SIGQUIT; exit 0' QUIT
trap 'echo stopped by SIGTERM; exit 3' TERM
/bin/busybox httpd -p 8080 -h /www
echo serving
while :; do /bin/busybox sleep 0.1; done
"""]
"#
    );
    let mut daemon = Daemon::start("proxy", &service);
    daemon.wait_ready("quits", 1);
    daemon.stop_and_check_clean("127.0.0.1");
    let log = daemon.log();
    assert!(
        log.contains("stopped by SIGQUIT") && !log.contains("stopped by SIGTERM"),
        "the worker was not stopped by SIGQUIT:\n{log}"
    );
}
