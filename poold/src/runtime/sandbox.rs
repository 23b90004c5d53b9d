//! [`WorkerRuntime`] over [`crate::sandbox`]: the supervisor's view of real workers.
//!
//! Each worker is owned by a small task that waits for its exit and takes signal and
//! teardown requests meanwhile (`Worker::wait` is cancel-safe, so a request interrupts the
//! wait, is carried out, and the wait resumes).

use super::{
    ExitStatus, ResourceUsage, RuntimeError, RuntimeFailure, SpawnedWorker, StopSignal, WorkerId,
    WorkerRuntime, WorkerSpec,
};
use crate::config::{Config, RootfsSource, ServiceConfig};
use crate::sandbox::{
    self, BridgeConfig, Limits, NetworkMode, Output, RootFs, Sandbox, SandboxConfig, Tmpfs,
    UsageReader,
};
use async_trait::async_trait;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::worker_output::{self, Capture, Tail};

/// Longest wait, after a worker's exit, for the rest of its output (its last words).
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How long a freed worker address rests before reuse: IPVS keeps connection entries of a
/// removed real server for about 120 s (TIME_WAIT); a little more for safety.
pub const ADDRESS_QUARANTINE: Duration = Duration::from_secs(150);

enum Request {
    Signal(Signal),
    Destroy(oneshot::Sender<Result<(), sandbox::SandboxError>>),
}

struct Entry {
    requests: mpsc::UnboundedSender<Request>,
    exit: watch::Receiver<Option<ExitStatus>>,
    reader: Arc<dyn UsageReader>,
    output: Option<Arc<Tail>>,
}

/// Real workers: namespaces, overlay root, cgroup, veth on the bridge, own address.
pub struct SandboxRuntime {
    sandbox: Sandbox,
    workers: Mutex<HashMap<WorkerId, Entry>>,
}

impl std::fmt::Debug for SandboxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxRuntime")
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

/// The sandbox configuration for a poold config.
///
/// The link prefix carries a tag of the state directory, so that orphan cleanup at start
/// removes only the veths an earlier run of *this* instance left, never the live workers of
/// another poold on the same host (each instance has its own state directory; two instances
/// also need their own `daemon.cgroup_parent`).
pub fn sandbox_config(config: &Config) -> SandboxConfig {
    let state_dir = config.daemon.state_dir.clone();
    let tag = instance_tag(&state_dir);
    SandboxConfig {
        image_cache: state_dir.join("images"),
        image_max_bytes: config.daemon.image_max_size.bytes(),
        link_prefix: format!("pd{tag}"),
        bridge: Some(BridgeConfig {
            name: config.network.bridge.clone(),
            subnet: config.network.subnet,
            quarantine: ADDRESS_QUARANTINE,
            allow_host_ports: config.network.allow_host_ports.clone(),
        }),
        state_dir,
        cgroup_parent: config.daemon.cgroup_parent.clone(),
        ..SandboxConfig::default()
    }
}

/// Four hex digits of FNV-1a over the state directory's path: stable across restarts, and
/// short enough that `pd` + tag + an 8-hex worker id fits a 15-byte link name.
fn instance_tag(state_dir: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let hash = state_dir
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0x811c_9dc5_u32, |h, &b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
    format!("{:04x}", (hash ^ (hash >> 16)) & 0xffff)
}

/// What `poold check` can see on this host about `config` without changing anything: a
/// link under `network.bridge` that poold may not use (e.g. `bridge = "eth0"`).
pub fn host_problems(config: &Config) -> Vec<(crate::config::KeyPath, String)> {
    let Ok(sandbox) = Sandbox::new(sandbox_config(config)) else {
        return Vec::new();
    };
    match sandbox.check_bridge_blocking() {
        Err(sandbox::SandboxError::ForeignBridge { bridge, problem }) => vec![(
            crate::config::KeyPath::root().key("network").key("bridge"),
            format!(
                "{bridge:?} {problem}; poold uses only a bridge it made itself or an empty one"
            ),
        )],
        // Not being able to look (e.g. no netlink here) is no problem of the file.
        _ => Vec::new(),
    }
}

/// Every worker is bridged: the host's neighbour table must hold two entries per worker
/// (issue 12: at 1,000 workers the default limit of 1,024 made probes fail).
fn bridged_containers(config: &Config) -> u64 {
    config.services.iter().map(|s| u64::from(s.workers)).sum()
}

/// What `poold check` tells about the host beside the file: the neighbour-table limits
/// poold will raise at start for this many workers.
pub fn host_notes(config: &Config) -> Vec<String> {
    sandbox::neighbour_shortfall(bridged_containers(config))
        .into_iter()
        .map(|limit| {
            format!(
                "net.ipv4.neigh.default.{} is {}; {} bridged workers need {} \
                 (two neighbour entries each, room for surge): poold raises it at start",
                limit.sysctl,
                limit.current,
                bridged_containers(config),
                limit.wanted
            )
        })
        .collect()
}

/// Raises the host's neighbour-table limits for the configured workers (never lowers
/// them; they stay raised after poold stops, as kube-proxy's and Calico's do).
fn raise_neighbour_limits(config: &Config) {
    let containers = bridged_containers(config);
    match sandbox::raise_neighbour_limits(containers) {
        Ok(raised) => {
            for limit in raised {
                info!(sysctl = %format!("net.ipv4.neigh.default.{}", limit.sysctl), from = limit.current, to = limit.wanted, workers = containers, "raised the neighbour table limit for the pool");
            }
        }
        Err(error) => {
            warn!(%error, workers = containers, "cannot raise the neighbour table limits: a large pool may fail its probes (No route to host)")
        }
    }
}

/// The RLIMIT_NOFILE poold was started with, before it raised its own: workers keep that.
static WORKER_NOFILE: std::sync::OnceLock<crate::conn_limit::NofileLimits> =
    std::sync::OnceLock::new();

/// Records the limits poold started with, for the workers it spawns from now on.
pub fn set_worker_nofile(limits: crate::conn_limit::NofileLimits) {
    let _ = WORKER_NOFILE.set(limits);
}

/// The sandbox's spec for one worker of `service`.
pub fn worker_spec(service: &ServiceConfig, slot: u32, id: WorkerId) -> sandbox::ContainerSpec {
    let rootfs = match service.rootfs_source() {
        RootfsSource::Host => RootFs::Host,
        RootfsSource::Directory(path) => RootFs::Dir(path),
        RootfsSource::Tarball(path) => RootFs::Tarball(path),
    };
    let (program, args) = service
        .command
        .split_first()
        .map_or((String::new(), &[][..]), |(p, a)| (p.clone(), a));
    let mut spec =
        sandbox::ContainerSpec::new(format!("{}-{slot}-{}", service.name, id.0), rootfs, program);
    spec.args = args.to_vec();
    spec.env = service
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    spec.user = service.user.clone();
    spec.seccomp = service.seccomp;
    spec.seccomp_allow = service.seccomp_allow.clone();
    if let (true, Some(base)) = (service.user_namespace, service.userns_base) {
        spec.user_namespace = Some(sandbox::IdMap {
            host_first: base,
            count: crate::config::USERNS_IDS,
        });
    }
    spec.limits = Limits {
        memory_bytes: service.limits.memory.map(|m| m.bytes()),
        cpu_millicores: service
            .limits
            .cpu
            .map(|cores| (cores * 1000.0).round() as u64),
        pids: service.limits.pids,
    };
    spec.network = NetworkMode::Bridged;
    if let Some(limits) = WORKER_NOFILE.get() {
        spec.rlimits.push(sandbox::Rlimit {
            resource: sandbox::RlimitResource::Nofile,
            soft: limits.original_soft,
            hard: limits.hard,
        });
    }
    spec.capabilities = service.kept_capabilities();
    spec.read_only_root = service.read_only_root;
    spec.tmpfs = service
        .tmpfs_mounts()
        .into_iter()
        .map(|t| Tmpfs {
            target: t.target,
            size_bytes: t.size_bytes,
        })
        .collect();
    spec.output = Output::Piped;
    spec
}

impl SandboxRuntime {
    /// Sets up the sandbox and removes what an earlier run left behind.
    pub async fn start(config: &Config) -> Result<Self, sandbox::SandboxError> {
        let sandbox = Sandbox::new(sandbox_config(config))?;
        sandbox.cleanup_orphans().await?;
        raise_neighbour_limits(config);
        // Before any worker: a foreign link under the bridge's name fails the start here.
        sandbox.ensure_bridge().await?;
        // Repairs the bridge if it vanishes or goes down (stopped by `shutdown`).
        sandbox.watch_bridge()?;
        Ok(Self {
            sandbox,
            workers: Mutex::default(),
        })
    }

    /// Removes the bridge, the (empty) cgroup parent and the empty state directories, at
    /// shutdown after every worker is gone; all are tried, the first error is returned.
    pub async fn shutdown(&self) -> Result<(), sandbox::SandboxError> {
        let bridge = self.sandbox.remove_bridge().await;
        let parent = self.sandbox.remove_cgroup_parent().await;
        self.sandbox.remove_empty_state_dirs();
        bridge.and(parent)
    }

    fn entry<T>(
        &self,
        worker: WorkerId,
        operation: &'static str,
        f: impl FnOnce(&Entry) -> T,
    ) -> Result<T, RuntimeError> {
        let workers = self.workers.lock().expect("workers lock");
        workers.get(&worker).map(f).ok_or(RuntimeError {
            worker,
            operation,
            source: RuntimeFailure::NoSuchWorker,
        })
    }
}

impl From<sandbox::ContainerExit> for ExitStatus {
    fn from(status: sandbox::ContainerExit) -> Self {
        match status {
            sandbox::ContainerExit::Code(code) => Self::Code(code),
            sandbox::ContainerExit::Signal(signal) => Self::Signal(signal),
        }
    }
}

impl From<sandbox::ContainerUsage> for ResourceUsage {
    fn from(usage: sandbox::ContainerUsage) -> Self {
        Self {
            memory_bytes: usage.memory_bytes,
            oom_kills: usage.oom_kills,
            cpu_time: usage.cpu_time,
        }
    }
}

async fn own_worker(
    id: WorkerId,
    mut worker: sandbox::Container,
    mut requests: mpsc::UnboundedReceiver<Request>,
    exit: watch::Sender<Option<ExitStatus>>,
    mut output: Option<Capture>,
) {
    let reply = loop {
        let request = if exit.borrow().is_none() {
            tokio::select! {
                ended = worker.wait() => {
                    let status = ended.map(ExitStatus::from).unwrap_or_else(|error| {
                        error!(worker.id = %id, %error, "waiting for the worker failed; counting it as killed");
                        ExitStatus::Signal(libc::SIGKILL)
                    });
                    // Its last lines explain the exit: read them before reporting it.
                    if let Some(output) = output.take() {
                        output.finish(OUTPUT_DRAIN_LIMIT).await;
                    }
                    exit.send_replace(Some(status));
                    continue;
                }
                request = requests.recv() => request,
            }
        } else {
            requests.recv().await
        };
        match request {
            Some(Request::Signal(signal)) => {
                if let Err(error) = worker.signal(signal) {
                    error!(worker.id = %id, %error, "signal failed");
                }
            }
            Some(Request::Destroy(reply)) => break Some(reply),
            // The runtime forgot the worker: tear it down anyway.
            None => break None,
        }
    };
    let result = worker.destroy().await;
    if let Some(reply) = reply {
        let _ = reply.send(result);
    } else if let Err(error) = result {
        error!(worker.id = %id, %error, "teardown failed");
    }
}

#[async_trait]
impl WorkerRuntime for SandboxRuntime {
    async fn spawn(&self, spec: &WorkerSpec) -> Result<SpawnedWorker, RuntimeError> {
        let error = |source: RuntimeFailure| RuntimeError {
            worker: spec.id,
            operation: "spawn",
            source,
        };
        let mut worker = self
            .sandbox
            .spawn(worker_spec(&spec.service, spec.slot, spec.id))
            .await
            .map_err(|e| error(e.into()))?;
        let capture = worker.take_output().map(|(stdout, stderr)| {
            let labels = worker_output::Labels {
                service: spec.service.name.clone(),
                slot: spec.slot,
                worker: spec.id.to_string(),
            };
            Capture::start(labels, stdout, stderr)
        });
        let output = capture.as_ref().map(|c| c.tail.clone());
        let Some(addr) = worker.address() else {
            let _ = worker.destroy().await;
            return Err(error(RuntimeFailure::NoAddress));
        };
        let pid = worker.pid();
        let chroot = worker.root_switch() == sandbox::RootSwitch::Chroot;
        if chroot {
            warn!(service = %spec.service.name, worker.slot = spec.slot, worker.id = %spec.id,
                "worker root entered with chroot (the initramfs fallback), not pivot_root");
        }
        let reader = worker.usage_reader();
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(own_worker(spec.id, worker, requests_rx, exit_tx, capture));
        self.workers.lock().expect("workers lock").insert(
            spec.id,
            Entry {
                requests,
                exit,
                reader,
                output,
            },
        );
        Ok(SpawnedWorker {
            addr: IpAddr::V4(addr),
            pid,
            chroot,
        })
    }

    async fn wait(&self, worker: WorkerId) -> ExitStatus {
        let Ok(mut exit) = self.entry(worker, "wait", |e| e.exit.clone()) else {
            return ExitStatus::Signal(libc::SIGKILL);
        };
        let status = match exit.wait_for(Option::is_some).await {
            Ok(status) => status.expect("waited for Some"),
            Err(_) => ExitStatus::Signal(libc::SIGKILL),
        };
        status
    }

    fn signal(&self, worker: WorkerId, signal: StopSignal) -> Result<(), RuntimeError> {
        let signal = match signal {
            StopSignal::Term => Signal::SIGTERM,
            StopSignal::Kill => Signal::SIGKILL,
        };
        self.entry(worker, "signal", |e| {
            e.requests.send(Request::Signal(signal)).is_ok()
        })?;
        Ok(())
    }

    fn usage(&self, worker: WorkerId) -> Result<ResourceUsage, RuntimeError> {
        let reader = self.entry(worker, "usage", |e| e.reader.clone())?;
        let usage = reader.usage().map_err(|e| RuntimeError {
            worker,
            operation: "usage",
            source: e.into(),
        })?;
        Ok(usage.into())
    }

    fn last_output(&self, worker: WorkerId) -> Option<String> {
        self.entry(worker, "last_output", |e| e.output.clone())
            .ok()
            .flatten()
            .and_then(|tail| tail.last())
    }

    async fn teardown(&self, worker: WorkerId) -> Result<(), RuntimeError> {
        let entry = self.workers.lock().expect("workers lock").remove(&worker);
        let Some(entry) = entry else { return Ok(()) };
        let (reply, result) = oneshot::channel();
        let error = |source: RuntimeFailure| RuntimeError {
            worker,
            operation: "teardown",
            source,
        };
        entry
            .requests
            .send(Request::Destroy(reply))
            .map_err(|_| error(RuntimeFailure::TaskGone))?;
        result
            .await
            .map_err(|_| error(RuntimeFailure::NoAnswer))?
            .map_err(|e| error(e.into()))
    }
}

#[cfg(test)]
mod tests;
