//! Shared by the end-to-end tests: the real poold binary runs 3 sandboxed busybox httpd
//! workers (a rootfs directory holding only busybox and a page; the "host" rootfs is
//! read-only, with nowhere to put a page in the VM); wrk loads the service while every worker
//! is recycled twice. Zero failed requests, and never fewer than 3 ready workers.
//!
//! Needs root (bridge, veths, namespaces, cgroups) and /usr/bin/wrk.

#![allow(dead_code)]

use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WORKERS: u64 = 3;

/// Stops poold (SIGTERM, then SIGKILL) and checks nothing is left, even if the test failed.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    bridge: String,
}

impl Daemon {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("poold.sock")
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
        // Last resort if poold died without cleaning up.
        let _ = Command::new("/usr/bin/ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn status(socket: &Path) -> Option<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_poolctl"))
        .arg("--socket")
        .arg(socket)
        .args(["status", "--json"])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice::<Value>(&output.stdout)
        .ok()
        .map(|v| v[0].clone())
}

fn worker_ids(status: &Value) -> Vec<u64> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_u64().unwrap())
        .collect()
}

/// Runs poold with `balancer` and the virtual address `listen_ip`, loads it with wrk while
/// recycling every worker twice, and checks: no failed request, never fewer than
/// [`WORKERS`] ready, every worker replaced, nothing left behind.
pub fn recycle_under_load(balancer: &str, listen_ip: &str) {
    assert!(
        Path::new("/usr/bin/wrk").exists(),
        "wrk is required (apt-get install wrk)"
    );
    let dir = tempfile::Builder::new()
        .prefix("poold-e2e")
        .tempdir()
        .unwrap();
    let tag = std::process::id() % 200 + 20;
    let bridge = format!("pde2e{tag}");
    // Its own cgroup parent: other tests (and poolds) may run at the same time.
    let cgroup_parent = format!("poold-e2e-{tag}");
    let port = if listen_ip == "127.0.0.1" {
        free_port()
    } else {
        80
    };
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("www")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::fs::write(rootfs.join("www/index.html"), "hello from a poold worker\n").unwrap();
    let config = format!(
        r#"
[daemon]
state_dir = "{dir}/state"
control_socket = "{dir}/poold.sock"
metrics_listen = "127.0.0.1:0"
balancer = "{balancer}"
log_level = "info"
cgroup_parent = "{cgroup_parent}"

[network]
bridge = "{bridge}"
subnet = "10.215.{tag}.0/24"

[[service]]
name = "e2e"
listen = "{listen_ip}:{port}"
workers = {WORKERS}
port = 8080
rootfs = "{rootfs}"
command = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]

[service.health]
type = "http"
path = "/"
interval = "500ms"
timeout = "500ms"

[service.recycle]
drain_timeout = "10s"
stop_timeout = "3s"
"#,
        dir = dir.path().display(),
        rootfs = rootfs.display()
    );
    let config_path = dir.path().join("poold.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.path().join("poold.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_poold"))
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Daemon {
        child,
        dir,
        bridge: bridge.clone(),
    };
    let log_path = daemon.dir.path().join("poold.log");
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(60);
    let initial = loop {
        if let Some(s) = status(&daemon.socket()) {
            if s["ready"].as_u64() == Some(WORKERS) {
                break s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pool never became ready; log:\n{}",
            log_text()
        );
        assert!(
            daemon.child.try_wait().unwrap().is_none(),
            "poold exited; log:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(initial["balancer"], balancer);
    let first_ids = worker_ids(&initial);

    let wrk = Command::new("/usr/bin/wrk")
        .args([
            "-t2",
            "-c8",
            "-d20s",
            &format!("http://{listen_ip}:{port}/index.html"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Watch readiness from before the first recycle until the last one has finished.
    let socket = daemon.socket();
    let recycles_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = std::thread::spawn({
        let recycles_done = recycles_done.clone();
        move || {
            let mut fewest = u64::MAX;
            let mut samples = 0;
            while !recycles_done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(s) = status(&socket) {
                    fewest = fewest.min(s["ready"].as_u64().unwrap());
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (fewest, samples)
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    for round in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_poolctl"))
            .arg("--socket")
            .arg(daemon.socket())
            .args(["recycle", "e2e", "--wait"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "recycle round {round}: {}\nlog:\n{}",
            String::from_utf8_lossy(&output.stderr),
            log_text()
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "e2e: recycled slots [0, 1, 2]"
        );
    }
    recycles_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (fewest_ready, samples) = watcher.join().unwrap();
    let wrk = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&wrk.stdout).into_owned();

    assert!(
        wrk.status.success(),
        "wrk failed: {report}{}",
        String::from_utf8_lossy(&wrk.stderr)
    );
    let requests: u64 = report
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{report}"));
    assert!(
        requests > 100,
        "wrk made too few requests to prove anything:\n{report}"
    );
    let warnings = || {
        log_text()
            .lines()
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("draining")
                    || l.contains("stopped")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        !report.contains("Socket errors"),
        "wrk saw socket errors:\n{report}\npoold:\n{}",
        warnings()
    );
    assert!(
        !report.contains("Non-2xx"),
        "wrk saw failed responses:\n{report}\npoold:\n{}",
        warnings()
    );
    // Slow machines (the VM under TCG) sample less often; a handful still spans the recycles.
    assert!(samples >= 3, "status sampled only {samples} times");
    assert_eq!(
        fewest_ready, WORKERS,
        "ready dropped below {WORKERS} during recycles"
    );

    let after = status(&daemon.socket()).unwrap();
    let after_ids = worker_ids(&after);
    assert_eq!(after_ids.len() as u64, WORKERS);
    assert!(
        after_ids.iter().all(|id| !first_ids.contains(id)),
        "{first_ids:?} -> {after_ids:?}"
    );
    let served: u64 = after["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["total_conns"].as_u64().unwrap())
        .sum();
    assert!(served > 0, "the new workers served traffic too");

    let exit = daemon.stop();
    assert!(exit.success(), "poold exit {exit:?}; log:\n{}", log_text());
    assert!(!daemon.socket().exists(), "control socket removed");
    let links = Command::new("/usr/bin/ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains(&format!("{bridge}:")),
        "bridge left behind:\n{links}"
    );
    if balancer == "ipvs" {
        let table = Command::new("/usr/sbin/ipvsadm")
            .arg("-Ln")
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&table.stdout);
        assert!(
            !table.contains(listen_ip),
            "IPVS service left behind:\n{table}"
        );
        let vip = Command::new("/usr/bin/ip")
            .args(["-o", "addr", "show"])
            .output()
            .unwrap();
        let vip = String::from_utf8_lossy(&vip.stdout);
        assert!(
            !vip.contains(&format!("{listen_ip}/32")),
            "VIP left bound:\n{vip}"
        );
    }
    let cgroups: Vec<PathBuf> = std::iter::once(PathBuf::from("/sys/fs/cgroup"))
        .chain(
            std::fs::read_dir("/sys/fs/cgroup")
                .unwrap()
                .flatten()
                .map(|e| e.path()),
        )
        .map(|hierarchy| hierarchy.join(&cgroup_parent))
        .filter(|dir| dir.exists())
        .collect();
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    let state_dir = daemon.dir.path().join("state");
    let leftovers: Vec<_> = std::fs::read_dir(&state_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    // The image cache would stay; a rootfs directory makes none.
    assert!(
        leftovers.is_empty(),
        "left in the state directory: {leftovers:?}"
    );
    eprintln!("wrk: {requests} requests, fewest ready {fewest_ready} over {samples} samples");
}
