//! Warm spares against the real poold (issue 12, part 3), with the proxy or IPVS: an idle
//! spare takes no request, `poolctl recycle web --slot 0` makes the former spare's process
//! serve the slot, and a worker killed with SIGKILL is replaced by the next spare.

use super::{http_service, served, Daemon};
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};

/// A spare's slot in status JSON (`runtime::SPARE_SLOT`).
const SPARE_SLOT: u64 = u32::MAX as u64;

fn text(output: &Output) -> (bool, String, String) {
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    )
}

/// Polls web's status until `done` holds (two minutes at most).
fn wait_for(daemon: &Daemon, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // None while poold (started again) does not answer yet.
        let status = daemon.status("web");
        if let Some(status) = status.as_ref().filter(|s| done(s)) {
            return status.clone();
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: {status:?}; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn workers(status: &Value) -> Vec<Value> {
    status["workers"].as_array().unwrap().clone()
}

/// The one ready spare, once the service has `ready` ready workers and no other worker.
fn settled(ready: u64) -> impl Fn(&Value) -> bool {
    move |s| {
        s["ready"] == ready
            && s["spares"] == 1
            && workers(s)
                .iter()
                .all(|w| w["state"] == "ready" || w["state"] == "spare")
    }
}

fn spare(status: &Value) -> Value {
    let spares: Vec<Value> = workers(status)
        .into_iter()
        .filter(|w| w["state"] == "spare")
        .collect();
    assert_eq!(spares.len(), 1, "{status}");
    assert_eq!(spares[0]["slot"], SPARE_SLOT, "{status}");
    spares[0].clone()
}

fn slot_worker(status: &Value, slot: u64) -> Value {
    workers(status)
        .into_iter()
        .find(|w| w["slot"] == slot && w["state"] == "ready")
        .unwrap_or_else(|| panic!("slot {slot} has no ready worker: {status}"))
}

/// Connections the balancer gave worker `id` (status `total_conns`, read at each tick).
fn served_by(status: &Value, id: &Value) -> u64 {
    workers(status)
        .iter()
        .find(|w| &w["id"] == id)
        .and_then(|w| w["total_conns"].as_u64())
        .unwrap_or(0)
}

/// The program a worker runs (busybox httpd) under its helper (helper, init, program): the
/// first descendant running httpd (its own children are short-lived request handlers).
fn program_pid(helper: u64) -> u64 {
    let mut pid = helper;
    loop {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("httpd") {
            return pid;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        pid = children
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no httpd under worker helper {helper}"))
            .parse()
            .unwrap();
    }
}

/// With `balancer` ("proxy" or "ipvs") and the service on `listen_ip` (loopback for the
/// proxy; with IPVS a VIP outside the workers' subnet, port 80).
pub fn spare_takes_no_traffic_and_replaces_recycled_and_killed_workers(
    balancer: &str,
    listen_ip: &str,
) {
    let port = if listen_ip == "127.0.0.1" {
        super::free_port()
    } else {
        80
    };
    let web = format!("{listen_ip}:{port}");
    let services = http_service("web", &web, 1, "[service.recycle]\nspares = 1\n");
    let mut daemon = Daemon::start(balancer, &services);
    daemon.wait_ready("web", 1);
    let status = wait_for(&daemon, "one ready spare", settled(1));
    let first_spare = spare(&status);
    let worker = slot_worker(&status, 0);

    // Idle, the spare takes no request: every one goes to slot 0's worker.
    for _ in 0..20 {
        assert!(served(&web), "web must serve");
    }
    let status = wait_for(&daemon, "20 requests counted", |s| {
        served_by(s, &worker["id"]) >= 20
    });
    assert_eq!(served_by(&status, &first_spare["id"]), 0, "{status}");
    assert_eq!(
        status["ready"], 1,
        "a spare is never counted ready: {status}"
    );
    let (ok, out, err) = text(&daemon.poolctl(&["status", "web"]));
    assert!(ok, "{err}");
    assert!(
        out.contains("ready 1/1  spares 1")
            && out
                .lines()
                .any(|l| l.trim_start().starts_with("spare ") && l.contains("warm spare")),
        "{out}"
    );
    let metrics = daemon.scrape_metrics();
    assert!(
        metrics.contains("poold_spare_workers{service=\"web\"} 1")
            && metrics.contains("poold_service_workers_ready{service=\"web\"} 1"),
        "{metrics}"
    );
    if balancer == "ipvs" {
        // The spare is a real server of the virtual service at weight 0.
        let table = std::process::Command::new("/usr/sbin/ipvsadm")
            .args(["-Ln", "-t", &web])
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&table.stdout);
        let spare_addr = first_spare["addr"].as_str().unwrap();
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.contains(spare_addr))
            .unwrap_or_else(|| panic!("no real server {spare_addr}:\n{table}"))
            .split_whitespace()
            .collect();
        assert_eq!(row.get(3), Some(&"0"), "spare's weight:\n{table}");
    }
    let (code, body) = daemon.http_get("/ready/web");
    assert!(
        code == 200 && body.contains("\"ready_workers\":1"),
        "{code} {body}"
    );

    // recycle --slot 0: the former spare's process serves the slot at once.
    let (ok, _, err) = text(&daemon.poolctl(&["recycle", "web", "--slot", "0"]));
    assert!(ok, "{err}");
    let status = wait_for(&daemon, "the spare in slot 0", |s| {
        workers(s)
            .iter()
            .any(|w| w["id"] == first_spare["id"] && w["slot"] == 0 && w["state"] == "ready")
    });
    assert_eq!(slot_worker(&status, 0)["pid"], first_spare["pid"]);
    for _ in 0..10 {
        assert!(served(&web), "web must serve after the promotion");
    }
    wait_for(&daemon, "the former spare serving", |s| {
        served_by(s, &first_spare["id"]) >= 10
    });
    // The old worker drains and goes; a new spare starts in the background.
    let status = wait_for(&daemon, "a new spare", |s| {
        settled(1)(s) && workers(s).iter().all(|w| w["id"] != worker["id"])
    });
    let second_spare = spare(&status);
    assert_ne!(second_spare["id"], first_spare["id"]);

    // SIGKILL to the serving worker's program: the next spare takes its slot.
    let victim = program_pid(first_spare["pid"].as_u64().unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = wait_for(&daemon, "the second spare in slot 0", |s| {
        workers(s)
            .iter()
            .any(|w| w["id"] == second_spare["id"] && w["slot"] == 0 && w["state"] == "ready")
    });
    assert_eq!(
        status["slots"][0]["failures"], 1,
        "the crash counts: {status}"
    );
    for _ in 0..10 {
        assert!(served(&web), "web must serve after the crash");
    }
    wait_for(&daemon, "the second spare serving", |s| {
        served_by(s, &second_spare["id"]) >= 10
    });
    let before = wait_for(&daemon, "a third spare", settled(1));

    // poold killed and started again: the record marks the spare, which is adopted as a
    // spare (weight 0, no traffic), and the promoted one as slot 0's worker; none started.
    let record = std::fs::read_to_string(daemon.record_path()).unwrap();
    let recorded: Value = serde_json::from_str(&record).unwrap();
    let spares = recorded["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["spare"] == true)
        .count();
    assert_eq!(spares, 1, "{record}");
    let third_spare = spare(&before);
    daemon.kill9();
    let log_before_restart = daemon.log().len();
    daemon.start_again();
    let after = wait_for(&daemon, "the pool adopted", settled(1));
    assert_eq!(spare(&after)["id"], third_spare["id"], "{after}");
    assert_eq!(slot_worker(&after, 0)["id"], second_spare["id"], "{after}");
    let second_run = daemon.log()[log_before_restart..].to_owned();
    assert!(
        !second_run.contains("worker spawned") && second_run.matches("worker adopted").count() == 2,
        "{second_run}"
    );
    for _ in 0..10 {
        assert!(served(&web), "web must serve after the restart");
    }
    let status = wait_for(&daemon, "10 requests counted after the restart", |s| {
        served_by(s, &second_spare["id"]) >= 10
    });
    assert_eq!(served_by(&status, &third_spare["id"]), 0, "{status}");
    let log = daemon.log();
    assert!(
        !log.contains(&format!("worker.slot={SPARE_SLOT}")) && log.contains("worker.spare=true"),
        "a spare logged with its sentinel as a slot:\n{log}"
    );

    daemon.stop_and_check_clean(listen_ip);
}
