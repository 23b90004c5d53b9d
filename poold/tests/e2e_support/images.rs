//! Real Debian images through the real poold (issue 11): nginx as root with Docker's default
//! capabilities, a Python server as `nobody` with none, both under wrk while each is recycled
//! twice; and nginx without capabilities, whose reason for failing shows in `poolctl status`.
//!
//! The images are built by `cargo xtask images` (also run by `cargo xtask test` and
//! `vm-test`) into /var/cache/poold-test-images.

use super::*;

const IMAGES: &str = "/var/cache/poold-test-images";
const NGINX_WORKERS: u64 = 2;
const PYTHON_WORKERS: u64 = 2;
const RECYCLES: usize = 2;

/// Docker's default capability set as /proc/PID/status shows it (CapEff).
const DOCKER_DEFAULT_MASK: u64 = 0x0000_0000_a804_25fb;

/// A single-threaded HTTP/1.1 server on the socket module alone (python3-minimal has no
/// http.server): one response per connection.
const PYTHON_SERVER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(256)
body = b"hello from python\n"
while True:
    c, _ = s.accept()
    try:
        c.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            more = c.recv(4096)
            if not more:
                break
            data += more
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    except OSError:
        pass
    finally:
        c.close()
"#;

fn image(name: &str) -> PathBuf {
    let path = Path::new(IMAGES).join(format!("{name}.tar.gz"));
    assert!(
        path.exists(),
        "{} is missing: build the test images with `cargo xtask images`",
        path.display()
    );
    path
}

/// `(uid, CapEff)` of a process, from the host's /proc.
fn uid_and_caps(pid: u32) -> (u32, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    (
        field("Uid:").parse().unwrap(),
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
    )
}

/// Every descendant of `pid`, with its command line.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut parents = std::collections::BTreeMap::<u32, Vec<u32>>::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The fields after the parenthesised command: state, ppid.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split_whitespace().nth(1).unwrap().parse().unwrap();
        parents.entry(ppid).or_default().push(child);
    }
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for &child in parents.get(&p).into_iter().flatten() {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            out.push((child, cmdline.trim().to_owned()));
            queue.push(child);
        }
    }
    out
}

/// The processes of every ready worker of `status` whose command line contains `needle`.
fn worker_processes(status: &Value, needle: &str) -> Vec<(u32, String)> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "ready")
        .flat_map(|w| descendants(w["pid"].as_u64().unwrap() as u32))
        .filter(|(_, cmd)| cmd.contains(needle))
        .collect()
}

/// Room for the first unpacking of both images (about 100 MiB each; minutes under qemu TCG).
fn wait_ready(daemon: &mut Daemon, service: &str, workers: u64) -> Value {
    daemon.wait_ready_within(service, workers, Duration::from_secs(900))
}

pub(super) fn start_wrk(url: &str) -> Child {
    let (threads, connections) = if std::env::var_os("POOLD_IN_VM").is_some() {
        ("-t1", "-c2")
    } else {
        ("-t1", "-c4")
    };
    // One request per connection, as in the busybox scenarios: a drain waits for
    // connections to end, and a keep-alive connection to nginx (keepalive_timeout 65 s)
    // outlasts the drain timeout, then dies with the worker (seen in the VM: 2 read errors).
    Command::new("/usr/bin/wrk")
        .args([threads, connections, "-d30m", "--timeout", "10s"])
        .args(["-H", "Connection: close", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stops wrk (SIGINT makes it print its report) and checks it saw no failure.
pub(super) fn finish_wrk(wrk: Child, what: &str, daemon: &Daemon) -> u64 {
    let mut wrk = wrk;
    assert!(
        wrk.try_wait().unwrap().is_none(),
        "wrk on {what} ended early"
    );
    let pid = nix::unistd::Pid::from_raw(wrk.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let out = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk on {what} failed: {report}");
    let requests = super::wrk_requests(&report);
    assert!(requests > 20, "too few requests on {what}:\n{report}");
    for bad in ["Socket errors", "Non-2xx"] {
        assert!(
            !report.contains(bad),
            "wrk on {what}: {bad}\n{report}\npoold:\n{}",
            daemon.log()
        );
    }
    eprintln!("wrk on {what}: {requests} requests\n{report}");
    requests
}

fn recycle(daemon: &Daemon, service: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_poolctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["recycle", service, "--wait"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "recycle {service}: {}\nlog:\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
}

fn services(nginx_port: u16, python_port: u16, broken_port: u16) -> String {
    let nginx = image("nginx").display().to_string();
    let python = image("python").display().to_string();
    let python_cmd = serde_json::to_string(PYTHON_SERVER).unwrap();
    format!(
        r#"
[[service]]
name = "nginx"
listen = "127.0.0.1:{nginx_port}"
workers = {NGINX_WORKERS}
port = 80
rootfs = "{nginx}"
command = ["/usr/sbin/nginx", "-g", "daemon off; error_log stderr;"]
capabilities = ["docker-default"]
read_only_root = true
tmpfs = ["/run:16M", "/var/lib/nginx", "/var/log/nginx:16M"]
[service.health]
type = "http"
path = "/"
interval = "2s"
timeout = "2s"
unhealthy_threshold = 5
[service.recycle]
drain_timeout = "10s"
stop_timeout = "5s"

[[service]]
name = "python"
listen = "127.0.0.1:{python_port}"
workers = {PYTHON_WORKERS}
port = 8080
rootfs = "{python}"
command = ["/usr/bin/python3", "-c", {python_cmd}]
user = "nobody"
read_only_root = true
[service.health]
type = "http"
path = "/"
interval = "2s"
timeout = "2s"
unhealthy_threshold = 5
[service.recycle]
drain_timeout = "10s"
stop_timeout = "5s"

[[service]]
name = "nocaps"
listen = "127.0.0.1:{broken_port}"
workers = 1
port = 80
rootfs = "{nginx}"
command = ["/usr/sbin/nginx", "-g", "daemon off; error_log stderr;"]
read_only_root = true
tmpfs = ["/run", "/var/lib/nginx", "/var/log/nginx"]
[service.backoff]
initial = "1s"
max = "2s"
"#
    )
}

pub fn real_images_serve_and_explain_failures() {
    assert!(
        Path::new("/usr/bin/wrk").exists(),
        "wrk is required (apt-get install wrk)"
    );
    let (nginx_port, python_port, broken_port) = (free_port(), free_port(), free_port());
    let started = Instant::now();
    let mut daemon = Daemon::start("proxy", &services(nginx_port, python_port, broken_port));
    let nginx = wait_ready(&mut daemon, "nginx", NGINX_WORKERS);
    let python = wait_ready(&mut daemon, "python", PYTHON_WORKERS);
    eprintln!(
        "both images unpacked and serving after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // nginx: the master stays root with Docker's set, its workers switch to www-data.
    let masters = worker_processes(&nginx, "nginx: master");
    assert_eq!(masters.len() as u64, NGINX_WORKERS, "{masters:?}");
    for (pid, cmd) in &masters {
        assert_eq!(uid_and_caps(*pid), (0, DOCKER_DEFAULT_MASK), "{pid} {cmd}");
    }
    let workers = worker_processes(&nginx, "nginx: worker");
    assert!(!workers.is_empty(), "no nginx worker processes");
    for (pid, cmd) in &workers {
        assert_eq!(
            uid_and_caps(*pid),
            (33, 0),
            "{pid} {cmd}: www-data, no caps"
        );
    }
    // Python: nobody, no capabilities.
    let servers = worker_processes(&python, "python3");
    assert_eq!(servers.len() as u64, PYTHON_WORKERS, "{servers:?}");
    for (pid, cmd) in &servers {
        assert_eq!(uid_and_caps(*pid), (65534, 0), "{pid} {cmd}");
    }

    let wrk_nginx = start_wrk(&format!("http://127.0.0.1:{nginx_port}/"));
    let wrk_python = start_wrk(&format!("http://127.0.0.1:{python_port}/"));
    std::thread::sleep(Duration::from_secs(1));
    let recycles_started = Instant::now();
    for _ in 0..RECYCLES {
        recycle(&daemon, "nginx");
        recycle(&daemon, "python");
    }
    let recycle_secs = recycles_started.elapsed().as_secs_f64();
    finish_wrk(wrk_nginx, "nginx", &daemon);
    finish_wrk(wrk_python, "python", &daemon);

    // nginx without capabilities: the slot fails, and status says why.
    let deadline = Instant::now() + Duration::from_secs(300);
    let reason = loop {
        let slot = daemon
            .status("nocaps")
            .map(|s| s["slots"][0].clone())
            .unwrap_or(Value::Null);
        if let Some(error) = slot["last_error"].as_str() {
            if error.contains("while starting") {
                break error.to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "nocaps never failed to start: {slot}; log:\n{}",
            daemon.log()
        );
        daemon.assert_running();
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        reason.contains("exit code 1 while starting: ")
            && reason
                .contains("chown(\"/var/lib/nginx/body\", 33) failed (1: Operation not permitted)"),
        "{reason}"
    );
    let text = Command::new(env!("CARGO_BIN_EXE_poolctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("Operation not permitted"), "{text}");
    // The worker's lines are in poold's log, tagged with service, slot and worker.
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("[emerg]")
            && l.contains("service=nocaps")
            && l.contains("worker.slot=0")
            && l.contains("worker.id=w")
            && l.contains("stream=\"stderr\"")),
        "untagged or missing worker output; log:\n{log}"
    );

    daemon.stop_and_check_clean("127.0.0.1");
    eprintln!(
        "real images: {RECYCLES} recycles of each service under load in {recycle_secs:.1} s; \
         total {:.1} s; nocaps: {reason}",
        started.elapsed().as_secs_f64()
    );
}
