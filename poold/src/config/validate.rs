//! Semantic checks that serde cannot express.

use super::{BalancerChoice, Config, HealthKind, KeyPath, RootfsSource, ServiceConfig};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

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

pub fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let daemon = KeyPath::root().key("daemon");
    if !config.daemon.state_dir.is_absolute() {
        problems.push(problem(
            daemon.clone().key("state_dir"),
            "must be an absolute path",
        ));
    }
    if !config.daemon.control_socket.is_absolute() {
        problems.push(problem(
            daemon.clone().key("control_socket"),
            "must be an absolute path",
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
    // The bridge takes one address; every worker needs one, twice over during surge
    // recycles, plus room for the allocator to quarantine freed addresses.
    let total_workers: u64 = config.services.iter().map(|s| u64::from(s.workers)).sum();
    let needed = 1 + 4 * total_workers;
    let subnet = config.network.subnet;
    let usable = (1u64 << (32 - u32::from(subnet.prefix_len()))).saturating_sub(2);
    if usable < needed {
        problems.push(problem(
            network.key("subnet"),
            format!(
                "{subnet} has {usable} host addresses; {total_workers} workers need at least {needed} \
                 (bridge + 2 per worker for surge + 2 per worker of quarantine for freed addresses)"
            ),
        ));
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
        validate_service(config, index, service, &mut problems);
    }
    problems
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn validate_service(
    config: &Config,
    index: usize,
    service: &ServiceConfig,
    problems: &mut Vec<Problem>,
) {
    let at = |key: &str| KeyPath::service(index).key(key);
    let sub = |table: &str, key: &str| KeyPath::service(index).key(table).key(key);
    let mut push = |key: KeyPath, message: String| problems.push(problem(key, message));

    if !valid_service_name(&service.name) {
        push(at("name"), format!("{:?}: use 1 to 32 characters from a-z, A-Z, 0-9, '-' and '_' (it names cgroups and links)", service.name));
    }
    if service.workers == 0 {
        push(at("workers"), "must be at least 1".into());
    }
    if service.weight == 0 || service.weight > 65535 {
        push(
            at("weight"),
            format!(
                "{} is out of range: a ready worker's weight is 1 to 65535 (0 means drained)",
                service.weight
            ),
        );
    }
    if service.port == 0 {
        push(at("port"), "must be a port number from 1 to 65535".into());
    }
    if service.listen.port() == 0 {
        push(
            at("listen"),
            format!("{}: the port must be from 1 to 65535", service.listen),
        );
    }
    if service.listen.ip().is_unspecified() {
        push(
            at("listen"),
            format!(
                "{}: a virtual service needs a concrete address, not 0.0.0.0",
                service.listen
            ),
        );
    }
    if !service.listen.is_ipv4() {
        push(
            at("listen"),
            format!(
                "{}: only IPv4 virtual addresses are supported",
                service.listen
            ),
        );
    }
    if let IpAddr::V4(ip) = service.listen.ip() {
        if config.network.subnet.contains(&ip) {
            push(
                at("listen"),
                format!(
                    "{} is inside the worker subnet {} (network.subnet); pick a virtual address outside it",
                    service.listen, config.network.subnet
                ),
            );
        }
    }
    if config.daemon.balancer == BalancerChoice::Ipvs && is_loopback(service.listen.ip()) {
        push(
            at("listen"),
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
    if !super::validate::IPVS_SCHEDULERS.contains(&service.scheduler.as_str()) {
        push(
            at("scheduler"),
            format!(
                "unknown scheduler {:?}; expected one of {}",
                service.scheduler,
                IPVS_SCHEDULERS.join(", ")
            ),
        );
    }
    match service.rootfs_source() {
        RootfsSource::Host => {}
        RootfsSource::Directory(path) | RootfsSource::Tarball(path) => {
            if !path.is_absolute() {
                push(at("rootfs"), format!("{:?}: expected \"host\" or an absolute path to a directory or a .tar/.tar.gz/.tgz archive", service.rootfs));
            }
        }
    }
    if service.command.is_empty() || service.command[0].is_empty() {
        push(at("command"), "must name the program to run, e.g. [\"/usr/bin/python3\", \"-m\", \"http.server\", \"8080\"]".into());
    }
    for key in service.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            push(
                sub("env", key),
                "environment variable names must be non-empty without '=' or NUL".into(),
            );
        }
    }
    if let Some(user) = &service.user {
        if user.is_empty() {
            push(
                at("user"),
                "must be a user name or uid[:gid]; leave it out to run as root".into(),
            );
        }
    }

    let limits = &service.limits;
    if let Some(memory) = limits.memory {
        if memory.bytes() < 4 << 20 {
            push(
                sub("limits", "memory"),
                format!("{memory} is below the 4M minimum"),
            );
        }
    }
    if let Some(cpu) = limits.cpu {
        if !(cpu.is_finite() && cpu > 0.0) {
            push(
                sub("limits", "cpu"),
                format!("{cpu} cores: must be a positive number (0.5 = half a core)"),
            );
        }
    }
    if limits.pids == Some(0) {
        push(sub("limits", "pids"), "must be at least 1".into());
    }

    let health = &service.health;
    if health.interval.get().is_zero() {
        push(sub("health", "interval"), "must be longer than 0s".into());
    }
    if health.timeout.get().is_zero() || health.timeout > health.interval {
        push(
            sub("health", "timeout"),
            format!(
                "{} must be longer than 0s and at most the interval ({})",
                health.timeout, health.interval
            ),
        );
    }
    if health.healthy_threshold == 0 {
        push(
            sub("health", "healthy_threshold"),
            "must be at least 1".into(),
        );
    }
    if health.unhealthy_threshold == 0 {
        push(
            sub("health", "unhealthy_threshold"),
            "must be at least 1".into(),
        );
    }
    if health.start_timeout < health.interval {
        push(
            sub("health", "start_timeout"),
            format!(
                "{} is shorter than the health interval ({})",
                health.start_timeout, health.interval
            ),
        );
    }
    if health.kind == HealthKind::Http {
        if !health.path.starts_with('/') {
            push(
                sub("health", "path"),
                format!("{:?} must start with '/'", health.path),
            );
        }
        if !(100..=599).contains(&health.expect_status) {
            push(
                sub("health", "expect_status"),
                format!(
                    "{} is not an HTTP status (100 to 599)",
                    health.expect_status
                ),
            );
        }
    }

    let recycle = &service.recycle;
    if let Some(max_lifetime) = recycle.max_lifetime {
        if recycle.min_lifetime > max_lifetime {
            push(
                sub("recycle", "min_lifetime"),
                format!(
                    "{} is longer than max_lifetime ({max_lifetime})",
                    recycle.min_lifetime
                ),
            );
        }
        if recycle.lifetime_jitter > max_lifetime {
            push(
                sub("recycle", "lifetime_jitter"),
                format!(
                    "{} is longer than max_lifetime ({max_lifetime})",
                    recycle.lifetime_jitter
                ),
            );
        }
    }
    if recycle.max_connections == Some(0) {
        push(
            sub("recycle", "max_connections"),
            "must be at least 1 (leave it out for no limit)".into(),
        );
    }
    if let (Some(max_memory), Some(limit)) = (recycle.max_memory, limits.memory) {
        if max_memory >= limit {
            push(sub("recycle", "max_memory"), format!("{max_memory} is not below limits.memory ({limit}): the kernel would OOM-kill before poold recycles"));
        }
    }
    if recycle.stop_timeout.get().is_zero() {
        push(
            sub("recycle", "stop_timeout"),
            "must be longer than 0s".into(),
        );
    }
    if recycle.max_concurrent_recycles == 0 {
        push(
            sub("recycle", "max_concurrent_recycles"),
            "must be at least 1".into(),
        );
    }

    let backoff = &service.backoff;
    if backoff.initial.get().is_zero() {
        push(sub("backoff", "initial"), "must be longer than 0s".into());
    }
    if backoff.max < backoff.initial {
        push(
            sub("backoff", "max"),
            format!(
                "{} is shorter than initial ({})",
                backoff.max, backoff.initial
            ),
        );
    }
    if !(backoff.multiplier.is_finite() && backoff.multiplier >= 1.0) {
        push(
            sub("backoff", "multiplier"),
            format!("{} must be a number >= 1.0", backoff.multiplier),
        );
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

pub fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for service in &config.services {
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
