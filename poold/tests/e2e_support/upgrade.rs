//! `poolctl upgrade` with the proxy: a fresh poold takes over the listening socket and the
//! workers while wrk runs (zero failed requests, the same worker pids, a new poold pid, the
//! old one exits 0, a clean stop of the new one leaves nothing); and a new binary that
//! fails to start changes nothing (the old poold keeps serving, poolctl fails with one line).

use super::restart::{alive, time_until_serving, worker_pids};
use super::*;

const UPGRADE_WORKERS: u64 = 3;

/// SIGTERMs the poold an upgrade started (not the test's child) when dropped, so a failed
/// assertion does not leave it running; the Daemon's own Drop then checks nothing else.
struct Upgraded(u32);

impl Upgraded {
    /// Stops it as an operator would and waits until it is gone (it is not our child).
    fn stop(&self) {
        let pid = nix::unistd::Pid::from_raw(self.0 as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while alive(u64::from(self.0)) {
            assert!(
                Instant::now() < deadline,
                "upgraded poold {} did not stop",
                self.0
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Upgraded {
    fn drop(&mut self) {
        if alive(u64::from(self.0)) {
            self.stop();
        }
    }
}

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

pub fn upgrade_under_wrk_load_loses_nothing() {
    let addr = format!("127.0.0.1:{}", free_port());
    let service = http_service("e2e", &addr, UPGRADE_WORKERS, "");
    let mut daemon = Daemon::start("proxy", &service);
    let before = daemon.wait_ready("e2e", UPGRADE_WORKERS);
    let pids = worker_pids(&before);
    let old_pid = daemon.pid();
    let wrk = Command::new("/usr/bin/wrk")
        .args(["-t2", "-c8", "-d30m", "--timeout", "10s"])
        .arg(format!("http://{addr}/index.html"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk (apt-get install wrk)");
    // Load before the upgrade, so connections are open when the sockets change hands.
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let out = daemon.poolctl(&["--json", "upgrade"]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "poolctl upgrade failed: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_pid = reply["new_pid"].as_u64().unwrap() as u32;
    let _first = Upgraded(new_pid);
    assert_eq!(reply["old_pid"].as_u64(), Some(u64::from(old_pid)));
    assert_ne!(new_pid, old_pid);
    assert_eq!(exe_of(new_pid), PathBuf::from(env!("CARGO_BIN_EXE_poold")));
    // The old poold finishes its connections and exits 0 on its own.
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the old poold did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        exit.success(),
        "old poold exit {exit:?}; log:\n{}",
        daemon.log()
    );
    eprintln!(
        "upgrade: poolctl answered after {took:?}; old poold gone after {:?}",
        started.elapsed()
    );
    // Serving on through the new one while wrk still runs.
    daemon.wait_ready("e2e", UPGRADE_WORKERS);
    time_until_serving(&addr, Instant::now(), Duration::from_secs(10));
    // The upgraded poold can itself be upgraded, by SIGUSR2 this time (same binary path
    // and arguments; the sockets pass on again), still under load.
    let log_before = daemon.log().len();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid as i32),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(u64::from(new_pid)) {
        assert!(
            Instant::now() < deadline,
            "SIGUSR2 did not hand over; log:\n{}",
            &daemon.log()[log_before..]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second_run = daemon.log()[log_before..].to_owned();
    let third_pid: u32 = second_run
        .split("new_pid=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no hand-over logged after SIGUSR2:\n{second_run}"));
    let upgraded = Upgraded(third_pid);
    assert!(alive(u64::from(third_pid)), "{second_run}");
    let after = daemon.wait_ready("e2e", UPGRADE_WORKERS);
    time_until_serving(&addr, Instant::now(), Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let pid = nix::unistd::Pid::from_raw(wrk.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let wrk_out = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&wrk_out.stdout);
    let log = daemon.log();
    assert!(wrk_requests(&report) > 0, "{report}");
    assert!(
        !report.contains("Socket errors") && !report.contains("Non-2xx"),
        "wrk saw failed requests across the upgrade:\n{report}\npoold:\n{log}"
    );
    eprintln!("wrk across the upgrade:\n{report}");
    assert_eq!(
        worker_pids(&after),
        pids,
        "not the same workers; log:\n{log}"
    );
    assert_eq!(
        log.matches("worker spawned").count() as u64,
        UPGRADE_WORKERS,
        "a worker was started by the upgrade; log:\n{log}"
    );
    assert_eq!(
        log.matches("worker adopted").count() as u64,
        2 * UPGRADE_WORKERS,
        "log:\n{log}"
    );
    assert!(
        log.contains("listening socket inherited from the previous poold"),
        "the proxy listener was bound anew, not inherited; log:\n{log}"
    );
    // A clean stop of the new poold removes everything.
    upgraded.stop();
    daemon.stop_and_check_clean("127.0.0.1");
    for (id, pid) in &pids {
        assert!(!alive(*pid), "worker w{id} (pid {pid}) outlived the stop");
    }
}

pub fn failed_upgrade_leaves_the_old_poold_serving() {
    let addr = format!("127.0.0.1:{}", free_port());
    let service = http_service("e2e", &addr, UPGRADE_WORKERS, "");
    let broken = tempfile::Builder::new()
        .prefix("poold-broken")
        .tempdir()
        .unwrap();
    let fake = broken.path().join("poold");
    std::fs::write(&fake, "#!/bin/sh\necho 'broken poold' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut daemon = Daemon::start_wrapped(
        "proxy",
        &service,
        &format!("export POOLD_UPGRADE_EXEC={}", fake.display()),
    );
    let before = daemon.wait_ready("e2e", UPGRADE_WORKERS);
    let pids = worker_pids(&before);
    let out = daemon.poolctl(&["upgrade"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "poolctl upgrade succeeded with a broken binary"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    assert!(
        stderr.contains("exited before it was ready") && stderr.contains("keeps running"),
        "{stderr}"
    );
    daemon.assert_running();
    time_until_serving(&addr, Instant::now(), Duration::from_secs(10));
    // Still supervising: the pools thawed (a recycle runs to its end).
    let recycled = daemon.poolctl(&["recycle", "e2e/0", "--wait"]);
    assert!(
        recycled.status.success(),
        "{}",
        String::from_utf8_lossy(&recycled.stderr)
    );
    let after = daemon.wait_ready("e2e", UPGRADE_WORKERS);
    let kept: Vec<_> = pids
        .values()
        .filter(|p| worker_pids(&after).values().any(|q| q == *p))
        .collect();
    assert_eq!(kept.len() as u64, UPGRADE_WORKERS - 1, "{after}");
    daemon.stop_and_check_clean("127.0.0.1");
}
