//! Semantic checks that serde cannot express.

use super::{
    BalancerChoice, Config, HealthKind, KeyPath, RootfsSource, ServiceConfig, Upstream, USERNS_IDS,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// IPVS schedulers in Linux 6.x (net/netfilter/ipvs/ip_vs_*.c).
pub const IPVS_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;

pub struct Problem {
    pub key: KeyPath,
    pub message: String,
}

fn problem(key: KeyPath, message: impl Into<String>) -> Problem {
    Problem {
        key,
        message: message.into(),
    }
}

/// Smallest CPU limit: one millicore, the granularity poold gives the cgroup.
const MIN_CPU: f64 = 0.001;
/// Largest CPU limit: the most CPUs a Linux kernel supports (x86-64 `CONFIG_NR_CPUS` with
/// MAXSMP). Fixed rather than this host's count, so a config checks the same everywhere;
/// more than the host has is only warned about.
const MAX_CPU: f64 = 8192.0;

/// Directories poold must never take as its state directory: it creates, empties and
/// restricts (0700) directories there. Exact matches.
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/run/lock",
    "/run/user",
    "/sbin",
    "/snap",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/local",
    "/var/lock",
    "/var/log",
    "/var/mail",
    "/var/opt",
    "/var/run",
    "/var/spool",
    "/var/tmp",
];

/// Trees that hold the system or the kernel's own file systems: nothing under them.
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr",
];

/// The state directory's subdirectories that poold empties at start.
const CLEANED_STATE_DIRS: &[&str] = &["images", "netns", "scratch", "workers"];

pub fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let daemon = KeyPath::root().key("daemon");
    if let Some(message) = state_dir_problem(&config.daemon.state_dir) {
        problems.push(problem(daemon.clone().key("state_dir"), message));
    }
    let socket = &config.daemon.control_socket;
    if !socket.is_absolute() {
        problems.push(problem(
            daemon.clone().key("control_socket"),
            "must be an absolute path",
        ));
    } else if let Some(message) = control_socket_problem(socket) {
        problems.push(problem(daemon.clone().key("control_socket"), message));
    } else if let Some(cleaned) = std::iter::once(config.daemon.state_dir.clone())
        .chain(
            CLEANED_STATE_DIRS
                .iter()
                .map(|dir| config.daemon.state_dir.join(dir)),
        )
        .find(|dir| socket == dir || (socket.starts_with(dir) && dir != &config.daemon.state_dir))
    {
        problems.push(problem(
            daemon.clone().key("control_socket"),
            format!(
                "{} is inside {}, which poold creates and empties itself; put the socket \
                 elsewhere, e.g. /run/poold/poold.sock",
                socket.display(),
                cleaned.display()
            ),
        ));
    }
    if config.daemon.image_max_size.bytes() < 1 << 20 {
        problems.push(problem(
            daemon.clone().key("image_max_size"),
            format!("{} is below the 1M minimum", config.daemon.image_max_size),
        ));
    }
    let parent = &config.daemon.cgroup_parent;
    if !parent.starts_with("poold")
        || parent.len() > 64
        || !parent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        problems.push(problem(
            daemon.clone().key("cgroup_parent"),
            format!("{parent:?}: use a name starting with \"poold\", up to 64 characters from a-z, A-Z, 0-9, '-' and '_'"),
        ));
    }
    if let Err(error) = config
        .daemon
        .log_level
        .parse::<tracing_subscriber::EnvFilter>()
    {
        problems.push(problem(
            daemon.key("log_level"),
            format!("not a valid log filter: {error}"),
        ));
    }

    if config.daemon.upstream == Upstream::Dr {
        upstream_dr_problems(config, &mut problems);
    }

    let network = KeyPath::root().key("network");
    let bridge = &config.network.bridge;
    if bridge.is_empty() || bridge.len() > MAX_IFNAME_LEN || bridge.contains(['/', ' ', ':']) {
        problems.push(problem(
            network.clone().key("bridge"),
            format!("{bridge:?} is not a valid interface name (1 to {MAX_IFNAME_LEN} bytes, no '/', ':' or spaces)"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (index, port) in config.network.allow_host_ports.iter().enumerate() {
        if *port == 0 {
            problems.push(problem(
                network.clone().key("allow_host_ports"),
                format!("entry {index}: 0 is not a port; use 1 to 65535"),
            ));
        } else if !seen.insert(*port) {
            problems.push(problem(
                network.clone().key("allow_host_ports"),
                format!("entry {index}: port {port} is listed twice"),
            ));
        }
    }
    // Every worker needs an address, twice over during surge recycles, plus room for the
    // allocator to quarantine freed addresses. Warm spares are workers too. The subnet is
    // cut into bridge slices (a bridge takes at most 1,023 ports, a /22 slice 1,021
    // workers), each less its network, gateway and broadcast addresses.
    let spares: u64 = config
        .services
        .iter()
        .map(|s| u64::from(s.recycle.spares))
        .sum();
    let total_workers: u64 = config
        .services
        .iter()
        .map(|s| u64::from(s.workers))
        .sum::<u64>()
        + spares;
    let needed = 4 * total_workers;
    let subnet = config.network.subnet;
    let slices = bridge_slices(subnet);
    let usable = slices.worker_addresses();
    if usable < needed {
        problems.push(problem(
            network.clone().key("subnet"),
            format!(
                "{subnet} has {usable} worker addresses ({}); {total_workers} workers{} need at least {needed} \
                 (2 per worker for surge + 2 per worker of quarantine for freed addresses)",
                slices_note(&slices),
                spares_note(spares)
            ),
        ));
    }
    // Slice i > 0's bridge is `<bridge>-<i>`: the name must leave room for the last one.
    if bridge.len() <= MAX_IFNAME_LEN {
        if let Err(error) = crate::sandbox::check_bridge_names(bridge, &slices) {
            problems.push(problem(network.clone().key("bridge"), error.to_string()));
        }
    }

    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut listens: HashMap<SocketAddr, usize> = HashMap::new();
    for (index, service) in config.services.iter().enumerate() {
        let at = |key: &str| KeyPath::service(index).key(key);
        if let Some(first) = names.insert(service.name.as_str(), index) {
            problems.push(problem(
                at("name"),
                format!(
                    "duplicate service name {:?} (also service[{first}])",
                    service.name
                ),
            ));
        }
        if let Some(first) = listens.insert(service.listen, index) {
            problems.push(problem(
                at("listen"),
                format!(
                    "{} is already the listen address of service[{first}]",
                    service.listen
                ),
            ));
        }
        let metrics = config.daemon.metrics_listen;
        if addresses_overlap(service.listen, metrics) {
            problems.push(problem(
                at("listen"),
                format!(
                    "{} conflicts with daemon.metrics_listen ({metrics}): both would take port {}",
                    service.listen,
                    metrics.port()
                ),
            ));
        }
        validate_service(config, index, service, &mut problems);
    }
    // User-namespace ranges must not overlap: sorted by base, each must end before the next.
    let mut ranges: Vec<(u32, usize)> = config
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| s.user_namespace)
        .filter_map(|(index, s)| Some((s.userns_base?, index)))
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((low, a), (high, b)) = (pair[0], pair[1]);
        if u64::from(high) < u64::from(low) + u64::from(USERNS_IDS) {
            problems.push(problem(
                KeyPath::service(a.max(b)).key("userns_base"),
                format!(
                    "{high}: the range overlaps service[{}]'s {low}..{}; each service needs its own {USERNS_IDS} ids",
                    a.min(b),
                    u64::from(low) + u64::from(USERNS_IDS)
                ),
            ));
        }
    }
    problems
}

/// Behind LVS directors in direct-routing mode the kernel must own the virtual addresses
/// (IPVS, never the proxy's sockets), and the directors must reach `/ready`.
fn upstream_dr_problems(config: &Config, problems: &mut Vec<Problem>) {
    let daemon = KeyPath::root().key("daemon");
    if config.daemon.balancer != BalancerChoice::Ipvs {
        problems.push(problem(
            daemon.clone().key("balancer"),
            format!(
                "{:?} with upstream = \"dr\": directors forward packets for the virtual \
                 addresses to this host's kernel, which only IPVS serves; set balancer = \"ipvs\"",
                config.daemon.balancer.to_string()
            ),
        ));
    }
    let metrics = config.daemon.metrics_listen;
    if metrics.ip().is_loopback() {
        problems.push(problem(
            daemon.key("metrics_listen"),
            format!(
                "{metrics} is loopback, but with upstream = \"dr\" the directors check \
                 GET /ready/SERVICE there; listen on this host's address (or 0.0.0.0)"
            ),
        ));
    }
    // Loopback and wildcard listen addresses are refused for IPVS by validate_service.
}

/// A direct-routing host without a shutdown delay refuses what the directors send it
/// between its shutdown and their next check.
fn upstream_warnings(config: &Config, warnings: &mut Vec<String>) {
    if config.daemon.upstream == Upstream::Dr && config.daemon.shutdown_delay.get().is_zero() {
        warnings.push(
            "upstream = \"dr\" with shutdown_delay = \"0s\": connections the directors send \
             before their next check of /ready are refused at shutdown; set shutdown_delay to \
             a check interval plus its timeout (or drain and wait before stopping poold)"
                .to_owned(),
        );
    }
}

/// Two listeners collide when they share a port and an address, a wildcard address
/// (0.0.0.0, ::) taking the port on every address.
fn addresses_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Why `dir` cannot be poold's state directory, if it cannot: it must be absolute, plainly
/// spelled, not a system directory nor the root of a mounted file system (shared with
/// whatever else lives there), also after following symlinks.
fn state_dir_problem(dir: &Path) -> Option<String> {
    const DEDICATED: &str = "use a directory dedicated to poold, e.g. /var/lib/poold \
                             (poold creates, empties and restricts directories in it)";
    if !dir.is_absolute() {
        return Some(format!(
            "{}: must be an absolute path; {DEDICATED}",
            dir.display()
        ));
    }
    if dir
        .as_os_str()
        .as_bytes()
        .split(|&byte| byte == b'/')
        .any(|part| part == b"." || part == b"..")
    {
        return Some(format!(
            "{}: must not contain '.' or '..' components; {DEDICATED}",
            dir.display()
        ));
    }
    // Drops repeated and trailing slashes.
    let plain: PathBuf = dir.components().collect();
    if let Some(reason) = system_dir(&plain) {
        return Some(format!("{}: {reason}; {DEDICATED}", dir.display()));
    }
    // What exists on this host: where a symlink leads, and mount points.
    if let Ok(real) = std::fs::canonicalize(&plain) {
        if real != plain {
            if let Some(reason) = system_dir(&real) {
                return Some(format!(
                    "{} resolves to {}: {reason}; {DEDICATED}",
                    dir.display(),
                    real.display()
                ));
            }
        }
        if let (Some(parent), Ok(meta)) = (real.parent(), std::fs::metadata(&real)) {
            if std::fs::metadata(parent).is_ok_and(|parent| parent.dev() != meta.dev()) {
                return Some(format!(
                    "{}: the root of a mounted file system, shared with whatever else is on it; \
                     {DEDICATED}, e.g. {}",
                    dir.display(),
                    real.join("poold").display()
                ));
            }
        }
    }
    None
}

/// poold deletes a stale file at the socket's path before binding: the path must not be
/// a file of something else, nor in a system tree.
fn control_socket_problem(socket: &Path) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let plain: PathBuf = socket.components().collect();
    if SYSTEM_TREES.iter().any(|tree| plain.starts_with(tree)) {
        return Some(format!(
            "{}: inside a system directory; poold replaces the file at this path at start, \
             put it under /run, e.g. /run/poold/poold.sock",
            socket.display()
        ));
    }
    match std::fs::symlink_metadata(&plain) {
        Ok(meta) if !meta.file_type().is_socket() => Some(format!(
            "{} exists and is not a socket; poold replaces the file at this path at start, \
             so name a path of its own, e.g. /run/poold/poold.sock",
            socket.display()
        )),
        _ => None,
    }
}

fn system_dir(dir: &Path) -> Option<&'static str> {
    if SYSTEM_DIRS.iter().any(|system| dir == Path::new(system)) {
        return Some("a system directory");
    }
    if SYSTEM_TREES.iter().any(|tree| dir.starts_with(tree)) {
        return Some("inside a system directory");
    }
    if dir.parent() == Some(Path::new("/home")) {
        return Some("a user's home directory");
    }
    None
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One service's problems, each located by its key (`service[2].health.timeout`).
struct ServiceProblems<'a> {
    index: usize,
    problems: &'a mut Vec<Problem>,
}

impl ServiceProblems<'_> {
    fn at(&self, key: &str) -> KeyPath {
        KeyPath::service(self.index).key(key)
    }

    fn sub(&self, table: &str, key: &str) -> KeyPath {
        KeyPath::service(self.index).key(table).key(key)
    }

    fn push(&mut self, key: KeyPath, message: String) {
        self.problems.push(problem(key, message));
    }
}

/// Every check of one `[[service]]`, step by step.
fn validate_service(
    config: &Config,
    index: usize,
    service: &ServiceConfig,
    problems: &mut Vec<Problem>,
) {
    let mut out = ServiceProblems { index, problems };
    check_identity(&mut out, service);
    check_listen(&mut out, config, service);
    check_program(&mut out, service);
    check_syscalls_and_ids(&mut out, service);
    check_limits(&mut out, service);
    check_health(&mut out, service);
    check_recycle(&mut out, service);
    check_backoff(&mut out, service);
}

/// The service's name, size and weight, its port and scheduler.
fn check_identity(out: &mut ServiceProblems<'_>, service: &ServiceConfig) {
    if !valid_service_name(&service.name) {
        out.push(out.at("name"), format!("{:?}: use 1 to 32 characters from a-z, A-Z, 0-9, '-' and '_' (it names cgroups and links)", service.name));
    }
    if service.workers == 0 {
        out.push(out.at("workers"), "must be at least 1".into());
    }
    if let Some(min_ready) = service.min_ready {
        if min_ready == 0 || min_ready > service.workers {
            out.push(
                out.at("min_ready"),
                format!(
                    "{min_ready} is out of range: from 1 to workers ({})",
                    service.workers
                ),
            );
        }
    }
    if service.weight == 0 || service.weight > 65535 {
        out.push(
            out.at("weight"),
            format!(
                "{} is out of range: a ready worker's weight is 1 to 65535 (0 means drained)",
                service.weight
            ),
        );
    }
    if service.port == 0 {
        out.push(
            out.at("port"),
            "must be a port number from 1 to 65535".into(),
        );
    }
    if !IPVS_SCHEDULERS.contains(&service.scheduler.as_str()) {
        out.push(
            out.at("scheduler"),
            format!(
                "unknown scheduler {:?}; expected one of {}",
                service.scheduler,
                IPVS_SCHEDULERS.join(", ")
            ),
        );
    }
}

/// The virtual address: a concrete IPv4 address and port, outside the worker subnet, and
/// not loopback for IPVS.
fn check_listen(out: &mut ServiceProblems<'_>, config: &Config, service: &ServiceConfig) {
    if service.listen.port() == 0 {
        out.push(
            out.at("listen"),
            format!("{}: the port must be from 1 to 65535", service.listen),
        );
    }
    if service.listen.ip().is_unspecified() {
        out.push(
            out.at("listen"),
            format!(
                "{}: a virtual service needs a concrete address, not 0.0.0.0",
                service.listen
            ),
        );
    }
    if !service.listen.is_ipv4() {
        out.push(
            out.at("listen"),
            format!(
                "{}: only IPv4 virtual addresses are supported",
                service.listen
            ),
        );
    }
    if let IpAddr::V4(ip) = service.listen.ip() {
        if config.network.subnet.contains(&ip) {
            out.push(out.at("listen"),
                format!(
                    "{} is inside the worker subnet {} (network.subnet); pick a virtual address outside it",
                    service.listen, config.network.subnet
                ),
            );
        }
    }
    if config.daemon.balancer == BalancerChoice::Ipvs && is_loopback(service.listen.ip()) {
        out.push(out.at("listen"),
            format!(
                "{} is a loopback address, which cannot be an IPVS virtual address: the kernel drops \
                 loopback-sourced packets that MASQ routes to another network namespace. Use an \
                 address poold can bind as /32 to its dummy device (e.g. 10.212.0.1:{}), or \
                 balancer = \"proxy\"",
                service.listen,
                service.listen.port()
            ),
        );
    }
}

/// What runs: the root filesystem, the command, its environment, user and isolation
/// settings.
fn check_program(out: &mut ServiceProblems<'_>, service: &ServiceConfig) {
    match service.rootfs_source() {
        RootfsSource::Host => {}
        RootfsSource::Directory(path) | RootfsSource::Tarball(path) => {
            if !path.is_absolute() {
                out.push(out.at("rootfs"), format!("{:?}: expected \"host\" or an absolute path to a directory or a .tar/.tar.gz/.tgz archive", service.rootfs));
            }
        }
    }
    match service.command.first() {
        None => out.push(out.at("command"), "must name the program to run, e.g. [\"/usr/bin/python3\", \"-m\", \"http.server\", \"8080\"]".into()),
        Some(program) if program.is_empty() => out.push(out.at("command"), "must name the program to run, e.g. [\"/usr/bin/python3\", \"-m\", \"http.server\", \"8080\"]".into()),
        // No PATH search: the program that runs is the one the config names.
        Some(program) if !program.starts_with('/') => out.push(out.at("command"),
            format!(
                "{program:?} is not an absolute path: name the program by its full path inside \
                 the root filesystem, e.g. \"/usr/bin/{}\"",
                program.rsplit('/').next().unwrap_or(program)
            ),
        ),
        Some(_) => {}
    }
    for key in service.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            out.push(
                out.sub("env", key),
                "environment variable names must be non-empty without '=' or NUL".into(),
            );
        }
    }
    for (key, message) in super::isolation::problems(out.index, service) {
        out.push(key, message);
    }
    if let Some(user) = &service.user {
        if user.is_empty() {
            out.push(
                out.at("user"),
                "must be a user name or uid[:gid]; leave it out to run as root".into(),
            );
        }
    }
}

/// The seccomp allow-list and the user namespace's ids.
fn check_syscalls_and_ids(out: &mut ServiceProblems<'_>, service: &ServiceConfig) {
    for (index, name) in service.seccomp_allow.iter().enumerate() {
        if !crate::sandbox::is_known_syscall(name) {
            out.push(
                out.at("seccomp_allow").index(index),
                format!(
                    "{name:?} is not a syscall name on {}",
                    std::env::consts::ARCH
                ),
            );
        }
    }
    if service.seccomp == crate::sandbox::SeccompMode::Unconfined
        && !service.seccomp_allow.is_empty()
    {
        out.push(
            out.at("seccomp_allow"),
            "has no effect with seccomp = \"unconfined\"".into(),
        );
    }

    match (service.user_namespace, service.userns_base) {
        (true, None) => out.push(
            out.at("user_namespace"),
            "needs userns_base, the first of the 65536 host ids the workers get".into(),
        ),
        (true, Some(base)) if !(USERNS_IDS..=u32::MAX - USERNS_IDS).contains(&base) => out.push(
            out.at("userns_base"),
            format!(
                "{base}: expected {USERNS_IDS} ..= {} (above the host's own users, \
                 and room for {USERNS_IDS} ids below 2^32 - 1)",
                u32::MAX - USERNS_IDS
            ),
        ),
        (false, Some(_)) => out.push(
            out.at("userns_base"),
            "has no effect without user_namespace = true".into(),
        ),
        _ => {}
    }
}

/// `[service.limits]`.
fn check_limits(out: &mut ServiceProblems<'_>, service: &ServiceConfig) {
    let limits = &service.limits;
    if let Some(memory) = limits.memory {
        if memory.bytes() < 4 << 20 {
            out.push(
                out.sub("limits", "memory"),
                format!("{memory} is below the 4M minimum"),
            );
        }
    }
    if let Some(cpu) = limits.cpu {
        // NaN fails both comparisons.
        if !(MIN_CPU..=MAX_CPU).contains(&cpu) {
            out.push(
                out.sub("limits", "cpu"),
                format!(
                    "{cpu:?} cores: must be a number from {MIN_CPU} (one millicore) to {MAX_CPU} \
                     (the most CPUs Linux supports); 0.5 = half a core"
                ),
            );
        }
    }
    if limits.pids == Some(0) {
        out.push(out.sub("limits", "pids"), "must be at least 1".into());
    }
}

/// `[service.health]`.
fn check_health(out: &mut ServiceProblems<'_>, service: &ServiceConfig) {
    let health = &service.health;
    if health.interval.get().is_zero() {
        out.push(
            out.sub("health", "interval"),
            "must be longer than 0s".into(),
        );
    }
    if health.timeout.get().is_zero() || health.timeout > health.interval {
        out.push(
            out.sub("health", "timeout"),
            format!(
                "{} must be longer than 0s and at most the interval ({})",
                health.timeout, health.interval
            ),
        );
    }
    if health.healthy_threshold == 0 {
        out.push(
            out.sub("health", "healthy_threshold"),
            "must be at least 1".into(),
        );
    }
    if health.unhealthy_threshold == 0 {
        out.push(
            out.sub("health", "unhealthy_threshold"),
            "must be at least 1".into(),
        );
    }
    if health.start_timeout < health.interval {
        out.push(
            out.sub("health", "start_timeout"),
            format!(
                "{} is shorter than the health interval ({})",
                health.start_timeout, health.interval
            ),
        );
    }
    if health.kind == HealthKind::Http {
        if !health.path.starts_with('/') {
            out.push(
                out.sub("health", "path"),
                format!("{:?} must start with '/'", health.path),
            );
        }
        if !(100..=599).contains(&health.expect_status) {
            out.push(
                out.sub("health", "expect_status"),
                format!(
                    "{} is not an HTTP status (100 to 599)",
                    health.expect_status
                ),
            );
        }
    }
}

/// `[service.recycle]` (max_memory against limits.memory).
fn check_recycle(out: &mut ServiceProblems<'_>, service: &ServiceConfig) {
    let recycle = &service.recycle;
    if let Some(max_lifetime) = recycle.max_lifetime {
        if recycle.min_lifetime > max_lifetime {
            out.push(
                out.sub("recycle", "min_lifetime"),
                format!(
                    "{} is longer than max_lifetime ({max_lifetime})",
                    recycle.min_lifetime
                ),
            );
        }
        if recycle.lifetime_jitter > max_lifetime {
            out.push(
                out.sub("recycle", "lifetime_jitter"),
                format!(
                    "{} is longer than max_lifetime ({max_lifetime})",
                    recycle.lifetime_jitter
                ),
            );
        }
    }
    if recycle.max_connections == Some(0) {
        out.push(
            out.sub("recycle", "max_connections"),
            "must be at least 1 (leave it out for no limit)".into(),
        );
    }
    if let (Some(max_memory), Some(limit)) = (recycle.max_memory, service.limits.memory) {
        if max_memory >= limit {
            out.push(out.sub("recycle", "max_memory"), format!("{max_memory} is not below limits.memory ({limit}): the kernel would OOM-kill before poold recycles"));
        }
    }
    if recycle.stop_timeout.get().is_zero() {
        out.push(
            out.sub("recycle", "stop_timeout"),
            "must be longer than 0s".into(),
        );
    }
    if recycle.max_concurrent_recycles == 0 {
        out.push(
            out.sub("recycle", "max_concurrent_recycles"),
            "must be at least 1".into(),
        );
    }
    // More spares than slots would never all be taken, yet each costs a whole worker.
    if recycle.spares > service.workers {
        out.push(
            out.sub("recycle", "spares"),
            format!(
                "{} is more than workers ({}): a spare only ever replaces one of the service's workers",
                recycle.spares, service.workers
            ),
        );
    }
}

/// How many of the workers counted in the sizing checks are warm spares.
fn spares_note(spares: u64) -> String {
    if spares == 0 {
        String::new()
    } else {
        format!(" (of which {spares} warm spares)")
    }
}

/// `[service.backoff]`.
fn check_backoff(out: &mut ServiceProblems<'_>, service: &ServiceConfig) {
    let backoff = &service.backoff;
    if backoff.initial.get().is_zero() {
        out.push(
            out.sub("backoff", "initial"),
            "must be longer than 0s".into(),
        );
    }
    if backoff.max < backoff.initial {
        out.push(
            out.sub("backoff", "max"),
            format!(
                "{} is shorter than initial ({})",
                backoff.max, backoff.initial
            ),
        );
    }
    if !(backoff.multiplier.is_finite() && backoff.multiplier >= 1.0) {
        out.push(
            out.sub("backoff", "multiplier"),
            format!("{} must be a number >= 1.0", backoff.multiplier),
        );
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

pub fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    upstream_warnings(config, &mut warnings);
    let host_cpus = std::thread::available_parallelism().map_or(1, usize::from);
    for service in &config.services {
        if let Some(cpu) = service.limits.cpu {
            if cpu > host_cpus as f64 {
                warnings.push(format!(
                    "service {:?}: limits.cpu = {cpu} is more than this host's {host_cpus} CPUs: no limit here",
                    service.name
                ));
            }
        }
        if config.daemon.balancer == BalancerChoice::Auto && is_loopback(service.listen.ip()) {
            warnings.push(format!(
                "service {:?}: listen {} is a loopback address; with balancer = \"auto\" poold uses the \
                 in-process proxy for every service when any listen address is loopback (IPVS cannot \
                 serve 127/8 virtual addresses)",
                service.name, service.listen
            ));
        }
        if config.daemon.balancer == BalancerChoice::Proxy
            && !matches!(service.scheduler.as_str(), "wlc" | "lc")
        {
            warnings.push(format!(
                "service {:?}: scheduler {:?} is ignored by the proxy balancer, which always does weighted least-connection",
                service.name, service.scheduler
            ));
        }
        if let Some(max_lifetime) = service.recycle.max_lifetime {
            if service.recycle.lifetime_jitter.get().is_zero() && service.workers > 1 {
                warnings.push(format!(
                    "service {:?}: max_lifetime {max_lifetime} without lifetime_jitter: workers started together \
                     reach their lifetime together (recycles are still capped by max_concurrent_recycles)",
                    service.name
                ));
            }
        }
    }
    warnings
}

/// How the daemon cuts `subnet` into bridge slices.
fn bridge_slices(subnet: ipnet::Ipv4Net) -> crate::sandbox::Slices {
    crate::sandbox::Slices::new(subnet, crate::sandbox::DEFAULT_SLICE_PREFIX)
}

/// "one bridge, less its network, gateway and broadcast addresses", or the slices.
fn slices_note(slices: &crate::sandbox::Slices) -> String {
    let less = "less its network, gateway and broadcast addresses";
    match slices.count() {
        1 => format!("one bridge, {less}"),
        n => format!(
            "{n} bridges, one per /{} slice, each {less}",
            crate::sandbox::DEFAULT_SLICE_PREFIX
        ),
    }
}

/// Workers `subnet` holds across every service, by the rule [`validate`] checks: 4 addresses
/// per worker (surge and quarantine) of the subnet's bridge slices. `poolctl scale` stays
/// below.
pub fn worker_capacity(subnet: ipnet::Ipv4Net) -> u64 {
    bridge_slices(subnet).worker_addresses() / 4
}
