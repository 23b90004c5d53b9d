//! `poolctl upgrade` with the proxy: a fresh poold takes over the listening socket and the
//! workers while wrk runs (zero failed requests, the same worker pids, a new poold pid, the
//! old one exits 0, a clean stop of the new one leaves nothing); and a new binary that
//! fails to start changes nothing (the old poold keeps serving, poolctl fails with one line).

use super::restart::{alive, time_until_serving, worker_pids};
use super::*;

const UPGRADE_WORKERS: u64 = 3;

/// wrk, killed when the test ends however it ends (it runs for 30 minutes otherwise).
struct Wrk(Option<std::process::Child>);

impl Wrk {
    /// Stops wrk with SIGINT (it prints its report then) and returns the report.
    fn finish(mut self) -> String {
        let wrk = self.0.take().expect("wrk runs");
        let pid = nix::unistd::Pid::from_raw(wrk.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let out = wrk.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        if let Some(mut wrk) = self.0.take() {
            let _ = wrk.kill();
            let _ = wrk.wait();
        }
    }
}

/// The pid of the poold a SIGUSR2 hand-over logged in `log`.
fn handed_over_to(log: &str) -> Option<u32> {
    log.split("new_pid=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok())
}

/// `poolctl --json upgrade`, which must succeed; the harness follows the new poold. Returns
/// poolctl's reply (`old_pid`, `new_pid`).
fn upgrade_by_poolctl(daemon: &mut Daemon) -> Value {
    let out = daemon.poolctl(&["--json", "upgrade"]);
    assert!(
        out.status.success(),
        "poolctl upgrade failed: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    daemon.follow_upgrade(reply["new_pid"].as_u64().unwrap() as u32);
    reply
}

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

/// With the proxy on loopback (`listen_ip` 127.0.0.1), or with IPVS on a VIP in the VM,
/// where the kernel forwards throughout and only the metrics listener and the lock pass.
pub fn upgrade_under_wrk_load_loses_nothing(balancer: &str, listen_ip: &str) {
    let port = if balancer == "proxy" { free_port() } else { 80 };
    let addr = format!("{listen_ip}:{port}");
    let service = http_service("e2e", &addr, UPGRADE_WORKERS, "");
    let mut daemon = Daemon::start(balancer, &service);
    let before = daemon.wait_ready("e2e", UPGRADE_WORKERS);
    let pids = worker_pids(&before);
    let old_pid = daemon.pid();
    let wrk = Wrk(Some(
        Command::new("/usr/bin/wrk")
            .args(["-t2", "-c8", "-d30m", "--timeout", "10s"])
            .arg(format!("http://{addr}/index.html"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk (apt-get install wrk)"),
    ));
    // Load before the upgrade, so connections are open when the sockets change hands.
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let reply = upgrade_by_poolctl(&mut daemon);
    let took = started.elapsed();
    let new_pid = reply["new_pid"].as_u64().unwrap() as u32;
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
    let third_pid = handed_over_to(&second_run)
        .unwrap_or_else(|| panic!("no hand-over logged after SIGUSR2:\n{second_run}"));
    daemon.follow_upgrade(third_pid);
    assert!(alive(u64::from(third_pid)), "{second_run}");
    let after = daemon.wait_ready("e2e", UPGRADE_WORKERS);
    time_until_serving(&addr, Instant::now(), Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let report = wrk.finish();
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
    if balancer == "proxy" {
        assert!(
            log.contains("listening socket inherited from the previous poold"),
            "the proxy listener was bound anew, not inherited; log:\n{log}"
        );
    }
    // A clean stop of the newest poold removes everything.
    daemon.stop_and_check_clean(listen_ip);
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

/// What a daemon could leave behind, named so that it can be checked after the Daemon is
/// gone (its Drop ran).
struct Footprint {
    bridge: String,
    tag: u32,
    link_prefix: String,
    links_before: BTreeSet<String>,
    cgroups_before: BTreeSet<PathBuf>,
    /// The daemon's cgroup parent: other poold instances' cgroups are not its own.
    cgroup_parent: String,
    dir: String,
}

impl Footprint {
    fn of(daemon: &Daemon) -> Self {
        Self {
            bridge: daemon.bridge.clone(),
            tag: daemon.tag,
            link_prefix: daemon.link_prefix.clone(),
            links_before: daemon.links_before.clone(),
            cgroups_before: daemon.cgroups_before.clone(),
            cgroup_parent: format!("poold-e2e-{}", daemon.tag),
            dir: daemon.dir().display().to_string(),
        }
    }

    /// Everything of this daemon still there: links, cgroups, mounts, route, nft table.
    fn left(&self) -> Vec<String> {
        let mut left: Vec<String> = links_with_prefix(&self.link_prefix)
            .difference(&self.links_before)
            .map(|l| format!("link {l}"))
            .collect();
        if link_exists(&self.bridge) {
            left.push(format!("bridge {}", self.bridge));
        }
        left.extend(
            poold_cgroups()
                .difference(&self.cgroups_before)
                .filter(|c| {
                    c.components()
                        .any(|part| part.as_os_str() == self.cgroup_parent.as_str())
                })
                .map(|c| format!("cgroup {}", c.display())),
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        left.extend(
            mounts
                .lines()
                .filter(|l| l.contains(&self.dir))
                .map(|l| format!("mount {l}")),
        );
        let routes = ip(&["route", "show", &format!("10.215.{}.0/24", self.tag)]);
        left.extend(routes.lines().map(|r| format!("route {r}")));
        let table = poold::sandbox::firewall_table(&self.link_prefix);
        let tables = Command::new("/usr/sbin/nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        let tables = String::from_utf8_lossy(&tables.stdout);
        if tables.lines().any(|l| l.ends_with(&format!(" {table}"))) {
            left.push(format!("nft table {table}"));
        }
        left
    }
}

/// Runs `scenario` on a fresh daemon that is upgraded once, expects it to panic, and
/// returns what the daemon's Drop left behind, with the pids it must have ended.
fn after_a_failing_test(
    scenario: impl FnOnce(&mut Daemon, u32),
) -> (Vec<String>, u32, std::collections::BTreeMap<u64, u64>) {
    let addr = format!("127.0.0.1:{}", free_port());
    let service = http_service("e2e", &addr, UPGRADE_WORKERS, "");
    let mut footprint = None;
    let mut pids = None;
    let mut new_pid = None;
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut daemon = Daemon::start("proxy", &service);
        footprint = Some(Footprint::of(&daemon));
        pids = Some(worker_pids(&daemon.wait_ready("e2e", UPGRADE_WORKERS)));
        let out = daemon.poolctl(&["--json", "upgrade"]);
        assert!(out.status.success(), "{}", daemon.log());
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        let pid = reply["new_pid"].as_u64().unwrap() as u32;
        new_pid = Some(pid);
        scenario(&mut daemon, pid);
    }));
    assert!(failed.is_err(), "the scenario was meant to fail");
    let footprint = footprint.expect("the daemon started");
    (
        footprint.left(),
        new_pid.expect("the upgrade happened"),
        pids.expect("the workers were ready"),
    )
}

pub fn a_failing_test_after_an_upgrade_leaves_nothing() {
    // The test panics before it learnt the new poold's pid: Drop finds it by the state lock.
    let (left, new_pid, workers) = after_a_failing_test(|_, _| panic!("failing on purpose"));
    assert!(
        !alive(u64::from(new_pid)),
        "the upgraded poold {new_pid} runs on"
    );
    for (id, pid) in &workers {
        assert!(!alive(*pid), "worker w{id} (pid {pid}) outlived the test");
    }
    assert!(left.is_empty(), "left behind: {left:#?}");

    // The upgraded poold dies by kill -9 (no teardown of its own), then the test panics:
    // Drop kills the workers and removes their kernel objects itself.
    let (left, new_pid, workers) = after_a_failing_test(|daemon, new_pid| {
        daemon.follow_upgrade(new_pid);
        let deadline = Instant::now() + Duration::from_secs(60);
        while daemon.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the old poold did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(new_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        panic!("failing on purpose after a kill -9");
    });
    assert!(!alive(u64::from(new_pid)));
    for (id, pid) in &workers {
        assert!(!alive(*pid), "worker w{id} (pid {pid}) outlived the test");
    }
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// systemd's side of an upgrade (`Type=notify`), with a datagram socket standing in for
/// systemd's NOTIFY_SOCKET: poold says READY=1 once it serves; at `poolctl upgrade` the old
/// poold names the new one as MAINPID (without it systemd would take the old one's exit for
/// the service's end and stop the new one with it); the new one says STOPPING=1 at its stop.
pub fn service_manager_follows_the_upgrade() {
    let addr = format!("127.0.0.1:{}", free_port());
    let service = http_service("e2e", &addr, 1, "");
    let manager_dir = tempfile::Builder::new()
        .prefix("poold-notify")
        .tempdir()
        .unwrap();
    let socket = manager_dir.path().join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = manager
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification within 60 s: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut daemon = Daemon::start_wrapped(
        "proxy",
        &service,
        &format!("export NOTIFY_SOCKET={}", socket.display()),
    );
    let started = next();
    assert!(started.lines().any(|l| l == "READY=1"), "{started}");
    daemon.wait_ready("e2e", 1);
    let new_pid = upgrade_by_poolctl(&mut daemon)["new_pid"].as_u64().unwrap() as u32;
    // The new poold reports ready to the old one, not to systemd: the next message is the
    // old one's hand-over.
    let handed = next();
    assert_eq!(handed.trim(), format!("MAINPID={new_pid}"));
    daemon.stop_and_check_clean("127.0.0.1");
    let stopping = next();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
}
