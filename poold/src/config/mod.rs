//! poold.toml: the daemon's configuration, its parsing and its validation.
//!
//! Every error names the file, the line and column, and the key it is about
//! (`poold.toml:12:1: service[0].workers: must be at least 1`).

mod diff;
mod isolation;
mod locate;
mod units;
mod validate;

pub use diff::{rolling_keys, ConfigDiff, Refusal, ServiceChange};
pub use isolation::{TmpfsMount, DOCKER_DEFAULT, DOCKER_DEFAULT_CAPS};
pub use locate::KeyPath;
pub use units::{ByteSize, HumanDuration};
pub use validate::worker_capacity;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole poold.toml.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
}

/// `[daemon]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Where poold keeps worker root filesystems, unpacked images and runtime state.
    pub state_dir: PathBuf,
    /// The Unix socket poolctl talks to.
    pub control_socket: PathBuf,
    /// Address of the Prometheus /metrics endpoint.
    pub metrics_listen: SocketAddr,
    pub balancer: BalancerChoice,
    /// How client packets reach the virtual addresses: directly, or from LVS directors.
    pub upstream: Upstream,
    /// At shutdown, how long poold keeps serving after marking every service drained, so
    /// upstream health checks take the host out of rotation before its workers stop.
    pub shutdown_delay: HumanDuration,
    /// A tracing-subscriber filter ("info", "poold=debug,info"); RUST_LOG overrides it.
    pub log_level: String,
    /// The cgroup (in every hierarchy) holding one cgroup per worker. Everything under it
    /// is poold's: it is emptied at start and removed at shutdown. Two poolds on one host
    /// need different ones.
    pub cgroup_parent: String,
    /// Largest unpacked size of one tarball image; unpacking stops with an error past it.
    pub image_max_size: ByteSize,
    /// Members of this group (name or gid) may use the control socket too; unset: root only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_group: Option<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/poold"),
            control_socket: PathBuf::from("/run/poold/poold.sock"),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9460)),
            balancer: BalancerChoice::Auto,
            upstream: Upstream::None,
            shutdown_delay: HumanDuration::from_secs(0),
            log_level: "info".to_owned(),
            cgroup_parent: "poold".to_owned(),
            image_max_size: ByteSize(crate::sandbox::DEFAULT_IMAGE_MAX_BYTES),
            control_group: None,
        }
    }
}

/// Which load balancer fronts the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BalancerChoice {
    /// Kernel IPVS (MASQ to the workers). Fails to start without IPVS.
    Ipvs,
    /// poold's in-process TCP proxy (weighted least-connection).
    Proxy,
    /// IPVS when the kernel has it, else the proxy (with a warning).
    Auto,
}

impl fmt::Display for BalancerChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipvs => "ipvs",
            Self::Proxy => "proxy",
            Self::Auto => "auto",
        })
    }
}

/// Who sends client packets to this host's virtual addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upstream {
    /// Clients (or their routers) reach the virtual addresses on this host.
    #[default]
    None,
    /// LVS directors in direct-routing mode (keepalived `lb_kind DR`) forward packets for
    /// the virtual addresses unchanged: this host accepts them but must not answer ARP
    /// for them (`arp_ignore=1`, `arp_announce=2`), or it would steal them from the director.
    Dr,
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Dr => "dr",
        })
    }
}

/// `[network]`: the bridge the workers' veths hang off and the subnet their addresses come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Host bridge name (at most 15 bytes).
    pub bridge: String,
    /// Worker subnet; the bridge takes the first host address.
    pub subnet: Ipv4Net,
    /// Host ports (TCP and UDP) workers may open connections to; every other service on
    /// the host is closed to them.
    pub allow_host_ports: Vec<u16>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            bridge: "pdbr0".to_owned(),
            subnet: "10.213.0.0/16".parse().expect("valid default subnet"),
            allow_host_ports: Vec::new(),
        }
    }
}

/// One `[[service]]`: a pool of identical workers behind one virtual address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// Virtual address:port clients connect to.
    pub listen: SocketAddr,
    #[serde(default)]
    pub protocol: Protocol,
    /// IPVS scheduler name; the proxy balancer always does weighted least-connection.
    #[serde(default = "defaults::scheduler")]
    pub scheduler: String,
    /// Desired number of ready workers.
    pub workers: u32,
    /// Ready workers below which the readiness endpoint answers 503 (default: `workers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready: Option<u32>,
    /// Balancer weight of each ready worker.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// Client connections the proxy balancer holds open for this service; beyond, the one
    /// idle the longest makes room (IPVS does not apply it).
    #[serde(default = "defaults::max_client_connections")]
    pub max_client_connections: u32,
    /// When the proxy balancer connects a client to a worker (IPVS does not apply it).
    #[serde(default)]
    pub backend_connect: BackendConnect,
    /// The port the workers listen on inside their namespaces.
    pub port: u16,
    /// "host", a directory, or a .tar / .tar.gz / .tgz archive.
    pub rootfs: String,
    /// argv of the worker's main process.
    pub command: Vec<String>,
    /// The signal that asks the program to stop gracefully (after its drain); SIGKILL
    /// follows after `recycle.stop_timeout`.
    #[serde(default)]
    pub stop_signal: SignalName,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// User name or uid[:gid] to run as; unset keeps root (inside the sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Syscall filter: "default" (Docker's default profile) or "unconfined" (none).
    #[serde(default)]
    pub seccomp: crate::sandbox::SeccompMode,
    /// Syscalls allowed on top of the default filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seccomp_allow: Vec<String>,
    /// Run workers in a user namespace: their root is the unprivileged host uid `userns_base`.
    #[serde(default)]
    pub user_namespace: bool,
    /// First host uid/gid of the service's 65536 ids (needed with `user_namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_base: Option<u32>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub recycle: RecycleConfig,
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Capabilities workers keep: names as in capabilities(7) ("CAP_CHOWN") or the preset
    /// "docker-default". Empty (the default): none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Mount the worker's root read-only (writable: /tmp, `tmpfs` paths, bind mounts).
    #[serde(default)]
    pub read_only_root: bool,
    /// Empty tmpfs mounts in each worker: "PATH" or "PATH:SIZE" ("/run:16M").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
}

/// Ids a user-namespace worker gets (uid and gid 0..65536 inside).
pub const USERNS_IDS: u32 = 65536;

impl ServiceConfig {
    /// Where the worker file system comes from.
    pub fn rootfs_source(&self) -> RootfsSource {
        RootfsSource::parse(&self.rootfs)
    }
}

/// A worker's graceful stop signal: one the sandbox forwards to the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalName(pub nix::sys::signal::Signal);

impl Default for SignalName {
    fn default() -> Self {
        Self(nix::sys::signal::Signal::SIGTERM)
    }
}

impl std::str::FromStr for SignalName {
    type Err = String;

    /// "SIGQUIT" or "QUIT".
    fn from_str(name: &str) -> Result<Self, String> {
        let full = if name.starts_with("SIG") {
            name.to_owned()
        } else {
            format!("SIG{name}")
        };
        let allowed = crate::sandbox::FORWARDED_SIGNALS;
        full.parse::<nix::sys::signal::Signal>()
            .ok()
            .filter(|signal| allowed.contains(signal))
            .map(Self)
            .ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown stop signal {name:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl Serialize for SignalName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// When the proxy balancer picks a worker for a new client and connects to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendConnect {
    /// As soon as the client is accepted: right for every protocol, including those where
    /// the server speaks first (SMTP, MySQL).
    #[default]
    OnAccept,
    /// Once the client has sent its first bytes (HTTP and other client-first protocols):
    /// a client that connects and says nothing costs the proxy one descriptor and a worker
    /// nothing, so a flood of idle connections never reaches the workers.
    OnClientData,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
}

/// The three kinds of root file system a worker can have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootfsSource {
    /// The host's own `/`, mounted read-only.
    Host,
    Directory(PathBuf),
    /// A `docker export`-style tarball (.tar, .tar.gz, .tgz).
    Tarball(PathBuf),
}

impl RootfsSource {
    pub fn parse(text: &str) -> Self {
        if text == "host" {
            return Self::Host;
        }
        let path = PathBuf::from(text);
        if [".tar", ".tar.gz", ".tgz"]
            .iter()
            .any(|ext| text.ends_with(ext))
        {
            Self::Tarball(path)
        } else {
            Self::Directory(path)
        }
    }
}

/// `[service.limits]`: cgroup limits per worker. Unset means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// CPU cores (0.5 = half a core).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// A TCP connect to the worker's port.
    #[default]
    Tcp,
    /// An HTTP/1.1 GET of `path`, expecting `expect_status`.
    Http,
}

/// `[service.health]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    #[serde(rename = "type")]
    pub kind: HealthKind,
    /// HTTP only.
    pub path: String,
    /// HTTP only.
    pub expect_status: u16,
    pub interval: HumanDuration,
    pub timeout: HumanDuration,
    /// Consecutive successes before a starting worker gets traffic.
    pub healthy_threshold: u32,
    /// Consecutive failures before a ready worker is replaced.
    pub unhealthy_threshold: u32,
    /// A worker not healthy this long after spawning counts as a failed start.
    pub start_timeout: HumanDuration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            kind: HealthKind::Tcp,
            path: "/".to_owned(),
            expect_status: 200,
            interval: HumanDuration::from_secs(2),
            timeout: HumanDuration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            start_timeout: HumanDuration::from_secs(60),
        }
    }
}

/// What to do when the kernel OOM-kills a process inside a worker that keeps running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOom {
    #[default]
    Recycle,
    Ignore,
}

/// `[service.recycle]`: when workers are replaced, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecycleConfig {
    /// Replace a worker after this long; unset = never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<HumanDuration>,
    /// Each worker's lifetime is shortened by a random amount up to this, so workers
    /// started together do not recycle together.
    pub lifetime_jitter: HumanDuration,
    /// Lower bound of a jittered lifetime.
    pub min_lifetime: HumanDuration,
    /// Replace a worker after it has served this many connections; unset = never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Replace a worker whose memory use exceeds this; unset = never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<ByteSize>,
    pub on_oom: OnOom,
    /// Longest wait for a draining worker's active connections to reach 0.
    pub drain_timeout: HumanDuration,
    /// Time between SIGTERM and SIGKILL.
    pub stop_timeout: HumanDuration,
    /// Start the replacement and wait until it is ready before draining the old worker.
    pub surge: bool,
    /// Planned recycles (lifetime, connections, memory, OOM, manual) in flight at once.
    pub max_concurrent_recycles: u32,
    /// Warm spares: workers kept started, healthy and at weight 0 (no traffic); a recycle
    /// or a crash puts one in the slot at once instead of waiting for a new worker.
    pub spares: u32,
}

impl Default for RecycleConfig {
    fn default() -> Self {
        Self {
            max_lifetime: None,
            lifetime_jitter: HumanDuration::from_secs(0),
            min_lifetime: HumanDuration::from_secs(60),
            max_connections: None,
            max_memory: None,
            on_oom: OnOom::Recycle,
            drain_timeout: HumanDuration::from_secs(30),
            stop_timeout: HumanDuration::from_secs(10),
            surge: true,
            max_concurrent_recycles: 1,
            spares: 0,
        }
    }
}

/// `[service.backoff]`: delay before refilling a slot whose worker failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    pub initial: HumanDuration,
    pub max: HumanDuration,
    pub multiplier: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: HumanDuration::from_secs(1),
            max: HumanDuration::from_secs(60),
            multiplier: 2.0,
        }
    }
}

impl BackoffConfig {
    /// Delay before the attempt that follows `failures` consecutive failures (>= 1).
    pub fn delay(&self, failures: u32) -> std::time::Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let secs = self.initial.get().as_secs_f64() * self.multiplier.powi(exponent);
        std::time::Duration::from_secs_f64(secs.min(self.max.get().as_secs_f64()))
    }
}

/// One problem found in a config file, located as precisely as the parser allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// 1-based line and column.
    pub line_col: Option<(usize, usize)>,
    /// e.g. `service[0].limits.memory`; empty for the whole document.
    pub key: String,
    pub message: String,
}

/// Problems with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_issues(path, issues))]
    Invalid {
        path: PathBuf,
        issues: Vec<ConfigIssue>,
    },
}

fn render_issues(path: &Path, issues: &[ConfigIssue]) -> String {
    let mut out = String::new();
    for (index, issue) in issues.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        out.push_str(&issue.render(path));
    }
    out
}

impl ConfigIssue {
    /// An issue about `key`, located in the file's `text` (for checks made elsewhere).
    pub fn at_key(text: &str, key: KeyPath, message: impl Into<String>) -> Self {
        locate::Locator::new(text).issue_at_key(key, message.into())
    }

    pub fn render(&self, path: &Path) -> String {
        let location = match self.line_col {
            Some((line, col)) => format!("{}:{line}:{col}", path.display()),
            None => path.display().to_string(),
        };
        if self.key.is_empty() {
            format!("{location}: {}", self.message)
        } else {
            format!("{location}: {}: {}", self.key, self.message)
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        match std::str::from_utf8(&bytes) {
            Ok(text) => Self::parse(text, path),
            Err(error) => Err(ConfigError::Invalid {
                path: path.to_owned(),
                issues: vec![locate::issue_from_invalid_utf8(&bytes, &error)],
            }),
        }
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |issues| ConfigError::Invalid {
            path: path.to_owned(),
            issues,
        };
        let config: Config = match toml::from_str(text) {
            Ok(config) => config,
            Err(error) => return Err(invalid(vec![locate::issue_from_toml(text, &error)])),
        };
        let locator = locate::Locator::new(text);
        let mut issues = validate::validate(&config)
            .into_iter()
            .map(|problem| locator.issue_at_key(problem.key, problem.message))
            .collect::<Vec<_>>();
        // In file order, as a reader goes through the file.
        issues.sort_by_key(|issue| issue.line_col.unwrap_or((usize::MAX, 0)));
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(invalid(issues))
        }
    }

    /// Non-fatal remarks about a valid config (printed by `poold check` and logged at start).
    pub fn warnings(&self) -> Vec<String> {
        validate::warnings(self)
    }
}

mod defaults {
    pub fn scheduler() -> String {
        "wlc".to_owned()
    }
    pub fn weight() -> u32 {
        1
    }
    /// Two descriptors each (client and worker side): 8192 of them, well inside the usual
    /// hard RLIMIT_NOFILE; the workers of a prefork pool rarely serve more at once.
    pub fn max_client_connections() -> u32 {
        4096
    }
}

#[cfg(test)]
mod tests;
