//! `kill -9` of poold and a start again on the same config: the workers live on and are
//! adopted (same ids and pids, none started twice, none killed, no orphan), the service
//! serves again, and a clean stop afterwards leaves nothing, the state record included.
//! With IPVS the kernel keeps forwarding while poold is away: wrk runs through the kill
//! and a restart 2 s later with zero failed requests. A start on a config without some of
//! the services stops their workers and removes what poold kept for them (operator state,
//! IPVS services, virtual addresses no other service uses), workers or not, and a start
//! on the proxy balancer removes every IPVS entry of an IPVS run.

use super::*;

const RESTART_WORKERS: u64 = 3;

impl Daemon {
    /// SIGKILLs poold and reaps it: nothing of poold's own shutdown runs.
    pub(super) fn kill9(&mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "poold ended with {status:?}"
        );
    }

    /// Starts poold again on the same config and state directory (its log appended).
    pub(super) fn start_again(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("poold.log"))
            .unwrap();
        self.child = Command::new(env!("CARGO_BIN_EXE_poold"))
            .arg("--config")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
    }

    pub(super) fn record_path(&self) -> PathBuf {
        self.dir.path().join("state/workers.json")
    }
}

/// Worker id -> pid, from a status.
pub(super) fn worker_pids(status: &Value) -> std::collections::BTreeMap<u64, u64> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["id"].as_u64().unwrap(), w["pid"].as_u64().unwrap()))
        .collect()
}

/// Running (a zombie no longer counts: who reaps an orphan depends on the host's pid 1).
pub(super) fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Polls `GET /index.html` on `addr` until a worker answers; how long that took.
pub(super) fn time_until_serving(addr: &str, since: Instant, deadline: Duration) -> Duration {
    use std::io::{Read, Write};
    loop {
        let answered = std::net::TcpStream::connect(addr).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            write!(s, "GET /index.html HTTP/1.0\r\n\r\n").ok()?;
            let mut response = String::new();
            s.read_to_string(&mut response).ok()?;
            response
                .starts_with("HTTP/1.0 200")
                .then_some(())
                .or_else(|| response.starts_with("HTTP/1.1 200").then_some(()))
        });
        if answered.is_some() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < deadline,
            "{addr} not serving {deadline:?} after the restart"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The scenario; with IPVS under wrk load and a 2 s pause before the restart, with the
/// proxy without load (its listener dies with poold) and an immediate restart.
pub fn kill9_and_restart_adopts_the_workers(balancer: &str, listen_ip: &str) {
    let port = if listen_ip == "127.0.0.1" {
        free_port()
    } else {
        80
    };
    let addr = format!("{listen_ip}:{port}");
    let service = http_service("e2e", &addr, RESTART_WORKERS, "");
    let mut daemon = Daemon::start(balancer, &service);
    let before = daemon.wait_ready("e2e", RESTART_WORKERS);
    let pids = worker_pids(&before);
    assert_eq!(pids.len() as u64, RESTART_WORKERS, "{before}");
    assert!(
        daemon.record_path().exists(),
        "no state record while running"
    );

    let under_load = balancer == "ipvs";
    let wrk = under_load.then(|| {
        Command::new("/usr/bin/wrk")
            .args([
                "-t2",
                "-c8",
                "-d30m",
                "--timeout",
                "10s",
                &format!("http://{addr}/index.html"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk (apt-get install wrk)")
    });
    if under_load {
        // Load before the kill, so connections are open when poold dies.
        std::thread::sleep(Duration::from_secs(2));
    }
    daemon.kill9();
    for (id, pid) in &pids {
        assert!(alive(*pid), "worker w{id} (pid {pid}) died with poold");
    }
    if under_load {
        // poold is away 2 s: the kernel's table keeps forwarding.
        std::thread::sleep(Duration::from_secs(2));
    }
    let log_before_restart = daemon.log().len();
    let restarted = Instant::now();
    daemon.start_again();
    let serving_after = time_until_serving(&addr, restarted, Duration::from_secs(60));
    eprintln!("restart: serving {serving_after:?} after poold was started again");
    let after = daemon.wait_ready("e2e", RESTART_WORKERS);
    let log = daemon.log();
    let second_run = &log[log_before_restart..];

    assert_eq!(
        worker_pids(&after),
        pids,
        "not the same workers after the restart; log:\n{second_run}"
    );
    assert!(
        !second_run.contains("worker spawned"),
        "a worker was started after the restart; log:\n{second_run}"
    );
    assert_eq!(
        second_run.matches("worker adopted").count() as u64,
        RESTART_WORKERS,
        "log:\n{second_run}"
    );
    // No duplicate, no orphan: one veth and one run directory per worker.
    let links: Vec<_> = links_with_prefix(&daemon.link_prefix)
        .difference(&daemon.links_before)
        .cloned()
        .collect();
    assert_eq!(links.len() as u64, RESTART_WORKERS, "{links:?}");
    let run_dirs = std::fs::read_dir(daemon.dir.path().join("state/workers"))
        .unwrap()
        .count() as u64;
    assert_eq!(run_dirs, RESTART_WORKERS);
    if under_load {
        let vip: std::net::SocketAddr = addr.parse().unwrap();
        let mut client = ipvs::Client::new().expect("IPVS netlink client");
        let key = ipvs::ServiceKey::tcp(vip.ip(), vip.port());
        let destinations = client.destinations(&key).unwrap();
        assert_eq!(
            destinations.len() as u64,
            RESTART_WORKERS,
            "{destinations:?}"
        );
        assert!(
            destinations.iter().all(|d| d.weight == 1),
            "a real server not at its weight: {destinations:?}"
        );
    }
    if let Some(wrk) = wrk {
        let pid = nix::unistd::Pid::from_raw(wrk.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let out = wrk.wait_with_output().unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(wrk_requests(&report) > 0, "{report}");
        assert!(
            !report.contains("Socket errors") && !report.contains("Non-2xx"),
            "wrk saw failed requests across the kill -9 and restart:\n{report}\npoold:\n{second_run}"
        );
        eprintln!("wrk across the restart:\n{report}");
    } else {
        // The proxy listens again as soon as poold has adopted its workers: within a
        // second on a host (about 60 ms seen); qemu TCG runs everything 10 to 20 times
        // slower (3.5 s seen), so the VM gets ten.
        let bound = if std::env::var_os("POOLD_IN_VM").is_some() {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(1)
        };
        assert!(
            serving_after < bound,
            "serving only {serving_after:?} after the restart; log:\n{second_run}"
        );
    }
    daemon.stop_and_check_clean(listen_ip);
    assert!(
        !daemon.record_path().exists(),
        "state record left after a clean stop"
    );
    for (id, pid) in &pids {
        assert!(!alive(*pid), "worker w{id} (pid {pid}) outlived the stop");
    }
}

/// `poolctl drain SERVICE/SLOT`, then `kill -9` of poold and a start again: the adopted
/// worker of that slot is still drained and the proxy sends it no new connection.
pub fn kill9_keeps_a_drained_slot_drained() {
    let addr = format!("127.0.0.1:{}", free_port());
    let service = http_service("e2e", &addr, RESTART_WORKERS, "");
    let mut daemon = Daemon::start("proxy", &service);
    daemon.wait_ready("e2e", RESTART_WORKERS);
    let out = daemon.poolctl(&["drain", "e2e/1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = daemon.wait_ready("e2e", RESTART_WORKERS - 1);
    let drained = before["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["slot"] == 1)
        .unwrap()["id"]
        .clone();

    daemon.kill9();
    let log_before_restart = daemon.log().len();
    daemon.start_again();
    // Every worker adopted (the drained one is not counted ready).
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        if let Some(status) = daemon.status("e2e") {
            let workers = status["workers"].as_array().unwrap();
            if workers.len() as u64 == RESTART_WORKERS
                && workers.iter().all(|w| w["state"] != "starting")
            {
                break status;
            }
        }
        assert!(Instant::now() < deadline, "log:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let second_run = daemon.log()[log_before_restart..].to_owned();
    let slot1 = after["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["slot"] == 1)
        .unwrap()
        .clone();
    assert_eq!(slot1["id"], drained, "{after}");
    assert_eq!(
        slot1["state"], "drained",
        "the slot drain was forgotten: {after}\nlog:\n{second_run}"
    );
    // Weight 0: new connections go to the two other workers only.
    const REQUESTS: u64 = 20;
    for _ in 0..REQUESTS {
        time_until_serving(&addr, Instant::now(), Duration::from_secs(10));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = daemon.status("e2e").unwrap();
        let workers = status["workers"].as_array().unwrap();
        let total = |drained_one: bool| -> u64 {
            workers
                .iter()
                .filter(|w| (w["id"] == drained) == drained_one)
                .map(|w| w["total_conns"].as_u64().unwrap())
                .sum()
        };
        assert_eq!(
            total(true),
            0,
            "the drained worker got connections: {status}"
        );
        if total(false) >= REQUESTS {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = daemon.poolctl(&["undrain", "e2e/1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.wait_ready("e2e", RESTART_WORKERS);
    daemon.stop_and_check_clean("127.0.0.1");
}

/// The services the restart in [`kill9_and_restart_without_two_services`] drops, and what
/// a failed run of it may leave in the kernel: their IPVS services and `c`'s own address.
struct RemovedServices {
    listens: Vec<std::net::SocketAddr>,
    own_address: Option<std::net::IpAddr>,
}

impl Drop for RemovedServices {
    fn drop(&mut self) {
        if let Ok(mut client) = ipvs::Client::new() {
            for listen in &self.listens {
                let _ = client.delete_service(&ipvs::ServiceKey::tcp(listen.ip(), listen.port()));
            }
        }
        if let Some(ip) = self.own_address {
            let _ = Command::new("/usr/bin/ip")
                .args(["addr", "del", &format!("{ip}/32"), "dev"])
                .arg(poold::balancer::ipvs::VIP_DEVICE)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The TCP virtual services in the kernel's IPVS table whose address starts with `prefix`.
fn ipvs_services(prefix: &str) -> BTreeSet<std::net::SocketAddr> {
    let mut client = ipvs::Client::new().expect("IPVS netlink client");
    client
        .services()
        .unwrap()
        .into_iter()
        .filter_map(|service| match service.key {
            ipvs::ServiceKey::Inet { addr, port, .. } => {
                Some(std::net::SocketAddr::new(addr, port))
            }
            _ => None,
        })
        .filter(|listen| listen.ip().to_string().starts_with(prefix))
        .collect()
}

/// `kill -9` of poold and a start again on a config without two of its three services: `b`
/// (on `a`'s address, another port, scaled by the operator) and `c` (on an address of its
/// own). Their adopted workers stop, `b`'s operator state leaves the state record, and with
/// IPVS their virtual services go while `a`'s stays, with `a`'s address still bound and
/// `c`'s unbound.
pub fn kill9_and_restart_without_two_services(balancer: &str) {
    let ipvs = balancer == "ipvs";
    let (a, b, c) = if ipvs {
        // Outside the workers' subnet (10.215.x.0/24) and not loopback.
        (
            "10.212.9.1:80".to_owned(),
            "10.212.9.1:81".to_owned(),
            "10.212.9.2:80".to_owned(),
        )
    } else {
        let local = || format!("127.0.0.1:{}", free_port());
        (local(), local(), local())
    };
    let services = format!(
        "{}{}{}",
        http_service("a", &a, 1, ""),
        http_service("b", &b, 1, ""),
        http_service("c", &c, 1, "")
    );
    let mut daemon = Daemon::start(balancer, &services);
    let _removed = RemovedServices {
        listens: [&b, &c].iter().map(|l| l.parse().unwrap()).collect(),
        own_address: ipvs.then(|| c.parse::<std::net::SocketAddr>().unwrap().ip()),
    };
    daemon.wait_ready("a", 1);
    daemon.wait_ready("c", 1);
    let scaled = daemon.poolctl(&["scale", "b", "2"]);
    assert!(
        scaled.status.success(),
        "{}",
        String::from_utf8_lossy(&scaled.stderr)
    );
    let mut removed_pids = worker_pids(&daemon.wait_ready("b", 2));
    removed_pids.extend(worker_pids(&daemon.status("c").unwrap()));
    let record: Value =
        serde_json::from_slice(&std::fs::read(daemon.record_path()).unwrap()).unwrap();
    assert_eq!(record["operator"]["b"]["scaled_to"], 2, "{record}");

    daemon.kill9();
    super::reload::rewrite_services(&daemon, &http_service("a", &a, 1, ""));
    let log_before_restart = daemon.log().len();
    daemon.start_again();
    daemon.wait_ready("a", 1);
    let second_run = || daemon.log()[log_before_restart..].to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while removed_pids.values().any(|pid| alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "workers of the removed services still run: {removed_pids:?}; log:\n{}",
            second_run()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if ipvs {
        // Removed once their workers are gone.
        let only_a = BTreeSet::from([a.parse().unwrap()]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let table = ipvs_services("10.212.9.");
            if table == only_a {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "IPVS services of the removed services left: {table:?}; log:\n{}",
                second_run()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let bound = ip(&[
            "-o",
            "addr",
            "show",
            "dev",
            poold::balancer::ipvs::VIP_DEVICE,
        ]);
        assert!(
            bound.contains("10.212.9.1/32"),
            "a's address, which b shared, was unbound:\n{bound}"
        );
        assert!(
            !bound.contains("10.212.9.2/32"),
            "c's address left bound:\n{bound}"
        );
    }
    let record: Value =
        serde_json::from_slice(&std::fs::read(daemon.record_path()).unwrap()).unwrap();
    assert!(
        record["operator"]["b"].is_null(),
        "the operator state of the removed service b is still recorded: {record}"
    );
    assert!(served(&a), "a does not serve; log:\n{}", second_run());
    let listen_ip = a.rsplit_once(':').unwrap().0.to_owned();
    daemon.stop_and_check_clean(&listen_ip);
}

/// `kill -9` in the middle of the start's spawn storm (more slots than spawn at once), then
/// a start again: every worker the pool knew of before the kill (a pid in its status: its
/// spawn had returned, so the state record named it) is adopted with the same pid; those
/// whose spawn was under way are removed as orphans; the pool fills up and nothing is left
/// over (one veth, one netns and one run directory per worker).
pub fn kill9_during_the_spawn_storm_adopts_or_removes_every_worker() {
    const STORM: u64 = 24;
    let addr = format!("127.0.0.1:{}", free_port());
    let service = http_service("e2e", &addr, STORM, "");
    let mut daemon = Daemon::start("proxy", &service);
    let spawned = |status: &Value| -> std::collections::BTreeMap<u64, u64> {
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| Some((w["id"].as_u64()?, w["pid"].as_u64()?)))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let before = loop {
        if let Some(status) = daemon.status("e2e") {
            let known = spawned(&status);
            if known.len() >= 4 {
                break known;
            }
        }
        assert!(Instant::now() < deadline, "log:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(5));
    };
    daemon.kill9();
    let log_before_restart = daemon.log().len();
    daemon.start_again();
    let after = worker_pids(&daemon.wait_ready("e2e", STORM));
    let second_run = daemon.log()[log_before_restart..].to_owned();
    for (id, pid) in &before {
        assert_eq!(
            after.get(id),
            Some(pid),
            "worker w{id} (pid {pid}) was spawned before the kill but not adopted: {after:?}\n\
             before the kill: {before:?}\nlog:\n{second_run}"
        );
    }
    eprintln!(
        "spawn storm: {} workers known before the kill, {} adopted after it",
        before.len(),
        second_run.matches("worker adopted").count()
    );
    let links: Vec<_> = links_with_prefix(&daemon.link_prefix)
        .difference(&daemon.links_before)
        .cloned()
        .collect();
    assert_eq!(links.len() as u64, STORM, "{links:?}\nlog:\n{second_run}");
    for dir in ["state/workers", "state/netns"] {
        let entries = std::fs::read_dir(daemon.dir.path().join(dir))
            .unwrap()
            .count() as u64;
        assert_eq!(entries, STORM, "{dir}\nlog:\n{second_run}");
    }
    daemon.stop_and_check_clean("127.0.0.1");
}

/// A service whose program exits at once: its slot is always in backoff, so no worker of
/// it is ever recorded for long.
fn failing_service(name: &str, listen: &str) -> String {
    format!(
        r#"
[[service]]
name = "{name}"
listen = "{listen}"
workers = 1
port = 8080
rootfs = "{{rootfs}}"
command = ["/bin/busybox", "false"]
"#
    )
}

/// Polls until the kernel's IPVS services under `prefix` are `wanted`.
fn wait_for_ipvs_services(
    daemon: &Daemon,
    prefix: &str,
    wanted: &BTreeSet<std::net::SocketAddr>,
    since_log: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let table = ipvs_services(prefix);
        if table == *wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "IPVS services under {prefix}: {table:?}, wanted {wanted:?}; log:\n{}",
            &daemon.log()[since_log..]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn vip_bound(ip: &str) -> bool {
    let bound = ip_or_empty(poold::balancer::ipvs::VIP_DEVICE);
    bound.contains(&format!("{ip}/32"))
}

/// The IPv4 addresses on `device` (`ip -o addr` lines), empty if it does not exist.
fn ip_or_empty(device: &str) -> String {
    let out = Command::new("/usr/bin/ip")
        .args(["-o", "-4", "addr", "show", "dev", device])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kill -9` of poold (IPVS) while service `dead`'s program exits at once, so its slot is
/// in backoff and the state record names no worker of it, then a start on a config
/// without `dead`: its virtual service and its address are gone; `a`'s stay.
pub fn kill9_with_a_service_in_backoff_and_restart_without_it() {
    let (a, dead) = ("10.212.10.1:80", "10.212.10.2:80");
    let services = format!(
        "{}{}",
        http_service("a", a, 1, ""),
        failing_service("dead", dead)
    );
    let mut daemon = Daemon::start("ipvs", &services);
    let _removed = RemovedServices {
        listens: vec![dead.parse().unwrap()],
        own_address: Some("10.212.10.2".parse().unwrap()),
    };
    daemon.wait_ready("a", 1);
    wait_for_ipvs_services(
        &daemon,
        "10.212.10.",
        &BTreeSet::from([a.parse().unwrap(), dead.parse().unwrap()]),
        0,
    );
    // Kill while the slot waits out a long backoff (after 3 failures: crash-loop).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = daemon.status("dead");
        let slot = status.as_ref().map(|s| s["slots"][0].clone());
        let waiting = slot.as_ref().is_some_and(|slot| {
            slot["state"] == "crash-loop" && slot["retry_in_secs"].as_f64().unwrap_or(0.0) >= 2.0
        });
        if waiting {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead never in a long backoff: {slot:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.kill9();
    let record: Value =
        serde_json::from_slice(&std::fs::read(daemon.record_path()).unwrap()).unwrap();
    let dead_workers = record["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["service"] == "dead")
        .count();
    assert_eq!(
        dead_workers, 0,
        "the record names a worker of dead: {record}"
    );
    assert!(
        vip_bound("10.212.10.2"),
        "dead's address is not bound before the restart"
    );

    super::reload::rewrite_services(&daemon, &http_service("a", a, 1, ""));
    let log_before_restart = daemon.log().len();
    daemon.start_again();
    daemon.wait_ready("a", 1);
    wait_for_ipvs_services(
        &daemon,
        "10.212.10.",
        &BTreeSet::from([a.parse().unwrap()]),
        log_before_restart,
    );
    assert!(vip_bound("10.212.10.1"), "a's address was unbound");
    assert!(!vip_bound("10.212.10.2"), "dead's address left bound");
    assert!(served(a), "a does not serve");
    daemon.stop_and_check_clean("10.212.10.1");
}

/// `kill -9` of poold on IPVS, then a start with `balancer = "proxy"` and only `a`: no
/// IPVS service of the first run is left; `a`'s address stays bound while the proxy
/// listens on it and goes at the clean stop, with poold's VIP device.
pub fn kill9_on_ipvs_and_restart_on_the_proxy() {
    let (a, b) = ("10.212.11.1:80", "10.212.11.1:81");
    let services = format!("{}{}", http_service("a", a, 1, ""), failing_service("b", b));
    let mut daemon = Daemon::start("ipvs", &services);
    let _removed = RemovedServices {
        listens: vec![a.parse().unwrap(), b.parse().unwrap()],
        own_address: Some("10.212.11.1".parse().unwrap()),
    };
    daemon.wait_ready("a", 1);
    wait_for_ipvs_services(
        &daemon,
        "10.212.11.",
        &BTreeSet::from([a.parse().unwrap(), b.parse().unwrap()]),
        0,
    );
    daemon.kill9();

    super::reload::rewrite_services(&daemon, &http_service("a", a, 1, ""));
    let config = std::fs::read_to_string(daemon.config_path()).unwrap();
    assert!(config.contains("balancer = \"ipvs\""), "{config}");
    std::fs::write(
        daemon.config_path(),
        config.replace("balancer = \"ipvs\"", "balancer = \"proxy\""),
    )
    .unwrap();
    let log_before_restart = daemon.log().len();
    daemon.start_again();
    daemon.wait_ready("a", 1);
    wait_for_ipvs_services(&daemon, "10.212.11.", &BTreeSet::new(), log_before_restart);
    assert!(
        vip_bound("10.212.11.1"),
        "the address the proxy listens on was unbound"
    );
    assert!(served(a), "a does not serve through the proxy");
    // No IPVS entry or address of the first run, and no pdvip0 either.
    daemon.stop_and_check_clean("10.212.11.1");
}
