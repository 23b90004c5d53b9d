//! A whole fleet in one machine, every tier in its own network namespace: a client behind a
//! router, two keepalived LVS directors (VRRP MASTER/BACKUP for the VIP, IPVS in direct-
//! routing mode with connection sync) and two poold hosts with `upstream = "dr"`, all on one
//! bridge, running the files of config/keepalived/ (see [`HOST_SUBSTITUTIONS`]).
//!
//! ```text
//!  client 10.10.1.2 ── 10.10.1.1 [lan: router + bridge br0 10.10.0.1] ── director 1 .11 (MASTER)
//!                                                                     ├─ director 2 .12 (BACKUP)
//!                                                                     ├─ poold host A .21
//!                                                                     └─ poold host B .22
//! ```
//!
//! Everything is removed by Drop guards, also when the test fails: processes first (they are
//! declared after the namespaces), then the namespaces with their links and IPVS tables.

#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CONFIG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/keepalived");
pub const VIP: &str = "10.10.0.100";
pub const VIP_PORT: u16 = 80;
pub const SERVICE: &str = "web";
pub const METRICS_PORT: u16 = 9460;
const ROUTER: &str = "10.10.0.1";
const WORKERS: u64 = 3;
const IP: &str = "/usr/bin/ip";
const IPVSADM: &str = "/usr/sbin/ipvsadm";
const KEEPALIVED: &str = "/usr/sbin/keepalived";
const WRK: &str = "/usr/bin/wrk";
const TCPDUMP: &str = "/usr/bin/tcpdump";
/// wrk's concurrent connections: at most this many requests are in flight at any moment.
pub const WRK_CONNECTIONS: u64 = 4;

/// What the test replaces in config/keepalived/poold-host.toml (both hosts share one file
/// system and cgroup tree here): (text in the file, what it becomes, with `{dir}` the host's
/// own directory and `{tag}` its letter). Every entry must occur in the file.
pub const HOST_SUBSTITUTIONS: &[(&str, &str)] = &[
    (
        "state_dir = \"/var/lib/poold\"",
        "state_dir = \"{dir}/state\"",
    ),
    (
        "control_socket = \"/run/poold/poold.sock\"",
        "control_socket = \"{dir}/poold.sock\"",
    ),
    (
        "cgroup_parent = \"poold\"",
        "cgroup_parent = \"poold-fleet-{tag}\"",
    ),
    ("rootfs = \"/srv/web/rootfs\"", "rootfs = \"{dir}/rootfs\""),
];

/// poold-host.toml for the host living in `dir`, tagged `tag`.
pub fn host_config(dir: &Path, tag: &str) -> String {
    let file = Path::new(CONFIG_DIR).join("poold-host.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    for (from, to) in HOST_SUBSTITUTIONS {
        assert!(
            text.contains(from),
            "{} no longer contains {from:?}: update HOST_SUBSTITUTIONS",
            file.display()
        );
        let to = to
            .replace("{dir}", &dir.display().to_string())
            .replace("{tag}", tag);
        text = text.replace(from, &to);
    }
    text
}

/// The `key = value` lines of config/keepalived/director-sysctl.conf (`sysctl -p` format).
pub fn director_sysctls() -> Vec<(String, String)> {
    let file = Path::new(CONFIG_DIR).join("director-sysctl.conf");
    std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not `key = value`: {l}", file.display()));
            (key.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// Runs `command`, which must succeed; returns its stdout.
pub fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A named network namespace, deleted on drop (with its links, addresses and IPVS table).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Self {
        run(Command::new(IP).args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NS program args...`
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(IP);
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// `ip -n NS args`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new(IP).args(["-n", &self.name]).args(args))
    }

    pub fn sysctl_write(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run(self
            .command("/bin/sh")
            .args(["-c", &format!("echo {value} > {path}")]));
    }

    pub fn sysctl(&self, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run(self.command("/bin/cat").arg(path)).trim().to_owned()
    }

    /// Whether `address`/32 is bound in the namespace.
    pub fn has_address(&self, address: &str) -> bool {
        self.ip(&["-o", "addr", "show"])
            .contains(&format!(" {address}/32 "))
    }

    /// `ipvsadm ARGS` in the namespace.
    pub fn ipvsadm(&self, args: &[&str]) -> String {
        run(self.command(IPVSADM).args(args))
    }

    /// Weight of each real server of the VIP in this namespace's IPVS table.
    pub fn weights(&self) -> Vec<(String, u64)> {
        let vip = format!("{VIP}:{VIP_PORT}");
        let output = self
            .command(IPVSADM)
            .args(["-Ln", "-t", &vip])
            .output()
            .unwrap();
        if !output.status.success() {
            return Vec::new();
        }
        // "  -> 10.10.0.21:80                 Route   1      0          0"
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("-> "))
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let server = words.next()?.to_owned();
                let weight = words.nth(1)?.parse().ok()?;
                Some((server, weight))
            })
            .collect()
    }

    /// The real server `host`'s weight for the VIP here, if it is listed.
    pub fn weight_of(&self, host: &str) -> Option<u64> {
        let server = format!("{host}:{VIP_PORT}");
        self.weights()
            .into_iter()
            .find(|(s, _)| *s == server)
            .map(|(_, w)| w)
    }

    /// MAC address of `link`.
    pub fn mac(&self, link: &str) -> String {
        let shown = self.ip(&["-o", "link", "show", link]);
        shown
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC in {shown}"))
            .to_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(IP)
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A process started in a namespace, killed (SIGKILL) on drop if still running.
pub struct Process {
    pub child: Child,
    pub what: String,
}

impl Process {
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(self.pid(), signal);
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit status (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
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

impl Drop for Process {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every 100 ms until it returns Some, failing with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`wait_for`] while wrk runs: on a timeout, prints a [`snapshot`] of `namespaces` with
/// packet captures first (the load is still on, so they show where connections hang).
pub fn wait_under_load<T>(
    what: &str,
    timeout: Duration,
    namespaces: &[String],
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "{what}: not within {timeout:?}\n{}",
                snapshot(namespaces, true)
            );
            panic!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A poold host: its namespace address, directory and daemon.
pub struct Host {
    pub name: &'static str,
    pub address: &'static str,
    pub dir: PathBuf,
    pub daemon: Option<Process>,
}

impl Host {
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("poold.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("poold.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("poold.log")).unwrap_or_default()
    }

    /// Starts poold in `ns` with `ip netns exec`. That gives it a mount namespace with a
    /// fresh /sys (for the namespace's links), without the cgroup2 mount: mount it again.
    pub fn start(&mut self, ns: &Netns) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("poold.log"))
            .unwrap();
        let child = ns
            .command("/bin/sh")
            .arg("-c")
            .arg("/bin/mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_poold"))
            .arg("--config")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(Process {
            child,
            what: format!("poold {}", self.name),
        });
    }

    /// `poolctl --socket SOCKET args`.
    pub fn poolctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_poolctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    /// `poolctl ARGS`, which must succeed; its stdout.
    pub fn poolctl_ok(&self, args: &[&str]) -> String {
        let output = self.poolctl(args);
        assert!(
            output.status.success(),
            "host {}: poolctl {args:?}: {}\nlog:\n{}",
            self.name,
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The service's `poolctl status --json` entry.
    pub fn status(&self) -> Option<Value> {
        let output = self.poolctl(&["status", "--json"]);
        if !output.status.success() {
            return None;
        }
        let services: Value = serde_json::from_slice(&output.stdout).ok()?;
        services
            .as_array()?
            .iter()
            .find(|s| s["name"] == SERVICE)
            .cloned()
    }

    /// Connections the current workers have served.
    pub fn served(&self) -> u64 {
        self.status()
            .map(|s| {
                s["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w["total_conns"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if self
                .status()
                .is_some_and(|s| s["ready"].as_u64() == Some(WORKERS))
            {
                return;
            }
            let daemon = self.daemon.as_mut().expect("poold started");
            assert!(
                daemon.running(),
                "poold {} exited; log:\n{}",
                self.name,
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "host {}: never {WORKERS} ready workers; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops poold (SIGTERM) and checks it exited cleanly and left nothing in its namespace:
    /// no VIP, no pdvip0, no IPVS service, ARP sysctls back to `arp_before`, no worker links,
    /// no cgroup parent.
    pub fn stop_and_check_clean(&mut self, ns: &Netns, arp_before: &(String, String)) {
        let mut daemon = self.daemon.take().expect("poold running");
        let exit = daemon.stop(Duration::from_secs(120));
        assert!(
            exit.success(),
            "poold {} exit {exit:?}; log:\n{}",
            self.name,
            self.log()
        );
        assert!(!ns.has_address(VIP), "host {}: VIP left bound", self.name);
        let links = ns.ip(&["-o", "link", "show"]);
        let names: Vec<&str> = links
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| *n == "lo" || *n == "eth0"),
            "host {}: links left behind: {names:?}",
            self.name
        );
        let table = ns.ipvsadm(&["-Ln"]);
        let entries = table.lines().filter(|l| {
            let l = l.trim_start();
            l.starts_with("TCP") || l.starts_with("UDP") || l.starts_with("-> 1")
        });
        assert!(
            entries.count() == 0,
            "host {}: IPVS entries left behind:\n{table}",
            self.name
        );
        assert_eq!(
            &arp_sysctls(ns),
            arp_before,
            "host {}: ARP sysctls not restored",
            self.name
        );
        let cgroup = Path::new("/sys/fs/cgroup").join(format!("poold-fleet-{}", self.name));
        assert!(
            !cgroup.exists(),
            "host {}: {} left behind",
            self.name,
            cgroup.display()
        );
    }
}

impl Drop for Host {
    /// A failed test still stops poold gracefully: its cgroups are global, not the namespace's.
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            if daemon.running() {
                daemon.stop(Duration::from_secs(60));
            }
        }
    }
}

/// (arp_ignore, arp_announce) of `all` in `ns`.
pub fn arp_sysctls(ns: &Netns) -> (String, String) {
    (
        ns.sysctl("net.ipv4.conf.all.arp_ignore"),
        ns.sysctl("net.ipv4.conf.all.arp_announce"),
    )
}

/// A keepalived director: its namespace and the three processes of a keepalived.
pub struct Director {
    pub name: &'static str,
    pub address: &'static str,
    pub conf: &'static str,
    pub dir: PathBuf,
    pub keepalived: Option<Process>,
}

impl Director {
    fn pid_file(&self, which: &str) -> PathBuf {
        self.dir.join(format!("{}-{which}.pid", self.name))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}-keepalived.log", self.name)))
            .unwrap_or_default()
    }

    /// keepalived in the foreground, in `ns`, with its own pid files.
    pub fn start(&mut self, ns: &Netns) {
        let log =
            std::fs::File::create(self.dir.join(format!("{}-keepalived.log", self.name))).unwrap();
        let child = ns
            .command(KEEPALIVED)
            .args([
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
            ])
            .args(["--no_bfd", "--use-file"])
            .arg(Path::new(CONFIG_DIR).join(self.conf))
            .arg("--pid")
            .arg(self.pid_file("main"))
            .arg("--vrrp_pid")
            .arg(self.pid_file("vrrp"))
            .arg("--checkers_pid")
            .arg(self.pid_file("checkers"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.keepalived = Some(Process {
            child,
            what: format!("keepalived {}", self.name),
        });
    }

    /// The pids of its children (VRRP, checkers), from their pid files.
    pub fn child_pids(&self) -> Vec<i32> {
        ["vrrp", "checkers"]
            .iter()
            .filter_map(|which| std::fs::read_to_string(self.pid_file(which)).ok())
            .filter_map(|text| text.trim().parse().ok())
            .collect()
    }

    /// SIGKILL to keepalived and its children: no goodbye advert, no cleanup.
    pub fn kill_keepalived(&mut self) {
        let Some(mut process) = self.keepalived.take() else {
            return;
        };
        let children = self.child_pids();
        process.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = process.child.wait();
        for pid in children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        self.kill_keepalived();
    }
}

/// Each namespace's addresses, neighbours, IPVS table and connections, and conntrack
/// table; with `capture`, also 3 s of packets on every interface of each namespace (taken
/// while the load still runs, so a black hole shows where packets stop).
pub fn snapshot(namespaces: &[String], capture: bool) -> String {
    let shell = |ns: &str, script: &str| {
        let output = Command::new(IP)
            .args(["netns", "exec", ns, "/bin/sh", "-c", script])
            .output();
        output
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_else(|e| e.to_string())
    };
    let mut text = String::new();
    let mut captures = Vec::new();
    if capture {
        for ns in namespaces {
            let child = Command::new(IP)
                .args(["netns", "exec", ns, "/bin/busybox", "timeout", "3"])
                .args([
                    TCPDUMP,
                    "-Z",
                    "root",
                    "-i",
                    "any",
                    "-nn",
                    "-c",
                    "60",
                    "-l",
                    "tcp port 80 or icmp",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            captures.push((ns.clone(), child));
        }
    }
    for ns in namespaces {
        text += &format!(
            "=== {ns}\n{}",
            shell(
                ns,
                "/usr/bin/ip -o addr show; /usr/bin/ip neigh; /usr/sbin/ipvsadm -Ln --stats; \
                 echo 'IPVS connections by state and destination:'; \
                 /usr/sbin/ipvsadm -Lnc | awk 'NR > 2 { print $3, $6 }' | sort | uniq -c; \
                 /usr/sbin/ipvsadm -Lnc | grep -v -e TIME_WAIT -e FIN_WAIT | head -20; \
                 echo -n 'conntrack entries: '; /usr/sbin/conntrack -C 2>&1; \
                 /usr/sbin/conntrack -L 2>/dev/null | grep -v TIME_WAIT | head -20; \
                 echo 'TCP sockets by state (hex, /proc/net/tcp):'; \
                 awk 'NR > 1 { print $4 }' /proc/net/tcp | sort | uniq -c; \
                 awk 'NR > 1 && $4 != \"0A\" && $4 != \"06\"' /proc/net/tcp | head -8"
            )
        );
    }
    for (ns, child) in captures {
        let packets = child
            .and_then(|c| c.wait_with_output())
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_else(|e| e.to_string());
        text += &format!("=== {ns}: 3 s of TCP port 80 and ICMP\n{packets}");
    }
    text
}

/// When the test panics, prints [`snapshot`] and the tails of the daemons' logs (the
/// temporary directory goes with the test).
pub struct PanicReport {
    pub namespaces: Vec<String>,
    pub logs: Vec<PathBuf>,
}

impl Drop for PanicReport {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!("{}", snapshot(&self.namespaces, false));
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("=== {} (last 40 lines)\n{tail}", log.display());
        }
    }
}

/// Seconds since the epoch, to line events up with tcpdump's `-tt` time stamps.
pub fn mark(event: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    eprintln!("{:.6} {event}", now.as_secs_f64());
}

/// tcpdump in `ns` writing `filter`'s packets (with link addresses) to `file`.
pub fn capture(ns: &Netns, filter: &str, file: &Path) -> Process {
    let out = std::fs::File::create(file).unwrap();
    let child = ns
        .command(TCPDUMP)
        // -Z root: the VM has no `tcpdump` user to drop privileges to.
        .args(["-Z", "root", "-i", "any", "-e", "-nn", "-l", "-tt", filter])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Process {
        child,
        what: format!("tcpdump in {}", ns.name),
    }
}

/// Every running process whose executable is keepalived.
pub fn keepalived_processes() -> BTreeSet<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe == Path::new(KEEPALIVED))
        })
        .collect()
}

/// One wrk run in the client namespace: one step of the scenario. The next step's run
/// starts before this one stops, so the VIP is under load throughout.
pub struct Load {
    pub step: &'static str,
    /// Taken by [`Load::stop`]; killed on drop otherwise.
    child: Option<Child>,
    started: Instant,
}

/// What a step's wrk run reported.
#[derive(Debug)]
pub struct StepReport {
    pub step: &'static str,
    pub requests: u64,
    pub failed: u64,
    pub seconds: f64,
    pub report: String,
}

impl Load {
    pub fn start(client: &Netns, step: &'static str) -> Self {
        mark(&format!("step: {step}"));
        assert!(
            Path::new(WRK).exists(),
            "wrk is required (apt-get install wrk)"
        );
        // One connection per request (busybox httpd closes each), 4 at a time on the 2
        // emulated CPUs of the test VM; a 10 s timeout: under qemu TCG a request can take
        // seconds without failing.
        let child = client
            .command(WRK)
            .args(["-t1", "-d30m", "--timeout", "10s"])
            .arg(format!("-c{WRK_CONNECTIONS}"))
            .arg(format!("http://{VIP}:{VIP_PORT}/index.html"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Load {
            step,
            child: Some(child),
            started: Instant::now(),
        }
    }

    /// Stops wrk (SIGINT: it prints its report) and counts the failed requests.
    pub fn stop(mut self) -> StepReport {
        let mut child = self.child.take().unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "wrk of step {} ended early: the load was not continuous",
            self.step
        );
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let seconds = self.started.elapsed().as_secs_f64();
        let output = child.wait_with_output().unwrap();
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "wrk ({}) failed: {report}{}",
            self.step,
            String::from_utf8_lossy(&output.stderr)
        );
        StepReport {
            step: self.step,
            requests: wrk_requests(&report),
            failed: wrk_failures(&report),
            seconds,
            report,
        }
    }
}

impl Drop for Load {
    /// Kills wrk; when the test fails, prints its report first (SIGINT: wrk reports).
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if std::thread::panicking() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            if let Ok(output) = child.wait_with_output() {
                eprintln!(
                    "=== wrk of step {}\n{}",
                    self.step,
                    String::from_utf8_lossy(&output.stdout)
                );
            }
            return;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub use crate::e2e_support::wrk_requests;

/// Failed requests in wrk's report: socket errors (connect, read, write, timeout) and
/// responses other than 2xx/3xx.
pub fn wrk_failures(report: &str) -> u64 {
    let mut failed = 0;
    for line in report.lines().map(str::trim) {
        if let Some(errors) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 3, write 0, timeout 0"
            failed += errors
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            failed += count.trim().parse::<u64>().unwrap();
        }
    }
    failed
}
