//! [`WorkerRuntime`] over [`crate::sandbox`]: the supervisor's view of real workers.
//!
//! Each worker is owned by a small task that waits for its exit and takes signal and
//! teardown requests meanwhile (`Worker::wait` is cancel-safe, so a request interrupts the
//! wait, is carried out, and the wait resumes).

use super::{
    AdoptedWorker, ExitStatus, OperatorState, ResourceUsage, RuntimeError, RuntimeFailure,
    SpawnedWorker, StopSignal, WorkerId, WorkerRuntime, WorkerSpec,
};
use crate::balancer::ipvs::{IpvsLedger, IpvsRecord};
use crate::config::{Config, RootfsSource, ServiceConfig, SignalName};
use crate::sandbox::{
    self, BridgeConfig, Limits, NetworkMode, Output, RootFs, Sandbox, SandboxConfig, Tmpfs,
    UsageReader,
};
use async_trait::async_trait;
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::worker_output::{self, Capture, Tail};

mod record_writer;
use record_writer::RecordWriter;

/// Longest wait, after a worker's exit, for the rest of its output (its last words).
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// How long a freed worker address rests before reuse: IPVS keeps connection entries of a
/// removed real server for about 120 s (TIME_WAIT); a little more for safety.
pub const ADDRESS_QUARANTINE: Duration = Duration::from_secs(150);

enum Request {
    Signal(Signal),
    Destroy(oneshot::Sender<Result<(), sandbox::SandboxError>>),
    /// An upgrade handed the worker to a new poold, which reads its output from now on.
    DetachOutput,
}

struct Entry {
    requests: mpsc::UnboundedSender<Request>,
    /// What [`StopSignal::Term`] sends: the service's `stop_signal`.
    stop_signal: Signal,
    exit: watch::Receiver<Option<ExitStatus>>,
    reader: Arc<dyn UsageReader>,
    output: Option<Arc<Tail>>,
}

/// The state record's file name in the state directory.
pub const RECORD_FILE: &str = "workers.json";
/// The record's format; a record of another version is not read (nothing adopted).
const RECORD_VERSION: u32 = 1;

/// What poold keeps in `STATE/workers.json`, rewritten (atomically) after spawns and
/// teardowns (by [`RecordWriter`], changes under way together in one write), so that a
/// poold started after a crash finds its live workers and the address quarantine.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct StateRecord {
    version: u32,
    workers: Vec<WorkerRecord>,
    quarantine: Vec<QuarantinedAddress>,
    /// What operators changed at run time, by service (absent in older records).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    operator: BTreeMap<String, OperatorState>,
    /// What the IPVS balancer made in the kernel (absent in older records and with none).
    #[serde(default, skip_serializing_if = "IpvsRecord::is_empty")]
    ipvs: IpvsRecord,
}

/// One live worker: the supervisor's names for it and the sandbox's objects.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct WorkerRecord {
    worker: WorkerId,
    service: String,
    /// [`super::SPARE_SLOT`] for a warm spare (then `spare` says so too, for the reader).
    slot: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    spare: bool,
    generation: u64,
    #[serde(flatten)]
    container: sandbox::ContainerRecord,
    /// The service's config the worker was started with (to tell whether it still matches);
    /// one value shared by the workers started on the same config ([`ConfigValues`]).
    config: Arc<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct QuarantinedAddress {
    address: Ipv4Addr,
    /// Wall-clock end of the quarantine, in milliseconds since the Unix epoch.
    until_unix_ms: u64,
}

fn unix_ms(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The service configs live workers were started with, each kept once: a config as a JSON
/// value is ~5 KB, and a copy per worker was 5 MB of poold's memory at 1,000 workers.
#[derive(Debug, Default)]
struct ConfigValues(Vec<Arc<serde_json::Value>>);

impl ConfigValues {
    /// The shared copy of `value` (a new one if no live worker has it).
    fn intern(&mut self, value: serde_json::Value) -> Arc<serde_json::Value> {
        // Only the configs some record still holds are kept; there are a few at most
        // (services × generations in flight), so a linear search is fine.
        self.0.retain(|v| Arc::strong_count(v) > 1);
        if let Some(known) = self.0.iter().find(|v| ***v == value) {
            return known.clone();
        }
        let value = Arc::new(value);
        self.0.push(value.clone());
        value
    }
}

/// Real workers: namespaces, overlay root, cgroup, veth on the bridge, own address.
pub struct SandboxRuntime {
    sandbox: Sandbox,
    workers: Mutex<HashMap<WorkerId, Entry>>,
    /// The state directory the record lives in; the record of every live worker.
    state_dir: PathBuf,
    records: Arc<Mutex<BTreeMap<WorkerId, WorkerRecord>>>,
    configs: Mutex<ConfigValues>,
    /// Workers adopted at start that no pool has taken yet.
    adopted: Mutex<Vec<WorkerRecord>>,
    highest_adopted: Option<WorkerId>,
    /// Operator state by service, as the pools saved it (written with the record).
    operator: Arc<Mutex<BTreeMap<String, OperatorState>>>,
    /// Writes the record off the runtime's threads; set once the runtime is built.
    writer: Option<RecordWriter>,
    /// What the record held at start, offered once to each service's pool.
    operator_restored: Mutex<BTreeMap<String, OperatorState>>,
    /// What this run's IPVS balancer made, as it last recorded.
    ipvs_owned: Arc<Mutex<IpvsRecord>>,
    /// What earlier runs' balancers recorded that no cleanup has removed yet.
    ipvs_left: Arc<Mutex<IpvsRecord>>,
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
            slice_prefix: sandbox::DEFAULT_SLICE_PREFIX,
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
    let slot = if slot == super::SPARE_SLOT {
        "spare".to_owned()
    } else {
        slot.to_string()
    };
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
    /// Sets up the sandbox, adopts the live workers the state record names (an earlier run
    /// that crashed or was killed) and removes everything else an earlier run left behind.
    pub async fn start(config: &Config) -> Result<Self, sandbox::SandboxError> {
        let sandbox = Sandbox::new(sandbox_config(config))?;
        let state_dir = config.daemon.state_dir.clone();
        let record = read_record(&state_dir);
        let now = std::time::SystemTime::now();
        let quarantine: Vec<(Ipv4Addr, Duration)> = record
            .quarantine
            .iter()
            .filter_map(|q| {
                let left = q.until_unix_ms.checked_sub(unix_ms(now))?;
                Some((q.address, Duration::from_millis(left)))
            })
            .collect();
        sandbox.restore_quarantine(&quarantine);
        let mut operator = record.operator;
        // A service gone from the config keeps nothing an operator changed on it.
        operator.retain(|service, _| config.services.iter().any(|s| s.name == *service));
        let mut runtime = Self {
            sandbox,
            workers: Mutex::default(),
            state_dir,
            records: Arc::default(),
            configs: Mutex::default(),
            adopted: Mutex::default(),
            highest_adopted: None,
            operator: Arc::new(Mutex::new(operator.clone())),
            operator_restored: Mutex::new(operator),
            ipvs_owned: Arc::default(),
            ipvs_left: Arc::new(Mutex::new(record.ipvs)),
            writer: None,
        };
        runtime.writer = Some(runtime.start_writer().map_err(|e| {
            sandbox::SandboxError::io("start the state record writer", &runtime.state_dir, e)
        })?);
        let mut kept = HashSet::new();
        for mut worker in record.workers {
            worker.config = runtime
                .configs_lock()
                .intern(Arc::unwrap_or_clone(worker.config));
            match runtime.sandbox.adopt(&worker.container) {
                Ok(container) => {
                    kept.insert(worker.container.id.clone());
                    // The program's own stop signal: from the config it was started with.
                    let stop_signal = worker
                        .config
                        .get("stop_signal")
                        .and_then(|name| name.as_str()?.parse::<SignalName>().ok())
                        .unwrap_or_default();
                    runtime.own(
                        worker.worker,
                        &worker.service,
                        worker.slot,
                        stop_signal.0,
                        container,
                    );
                    runtime.records_lock().insert(worker.worker, worker.clone());
                    runtime.adopted_lock().push(worker);
                }
                Err(error) => {
                    tracing::info!(service = %worker.service, worker.slot = super::slot_field(worker.slot),
                        worker.spare = super::spare_field(worker.slot), worker.id = %worker.worker, %error, "recorded worker not adopted; its leftovers are removed");
                }
            }
        }
        let highest = runtime.records_lock().keys().next_back().copied();
        runtime.highest_adopted = highest;
        runtime.sandbox.cleanup_orphans_except(kept).await?;
        raise_neighbour_limits(config);
        // Before any worker: a foreign link under the bridge's name fails the start here.
        runtime.sandbox.ensure_bridge().await?;
        // Repairs the bridge if it vanishes or goes down (stopped by `shutdown`).
        runtime.sandbox.watch_bridge()?;
        runtime.writer().flush().await;
        Ok(runtime)
    }

    fn records_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<WorkerId, WorkerRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn configs_lock(&self) -> std::sync::MutexGuard<'_, ConfigValues> {
        self.configs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn adopted_lock(&self) -> std::sync::MutexGuard<'_, Vec<WorkerRecord>> {
        self.adopted.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> &RecordWriter {
        self.writer
            .as_ref()
            .expect("the writer starts with the runtime")
    }

    /// The record writer's thread: each write saves every live worker, the quarantine, the
    /// operator state and what the IPVS balancers recorded, as they are when it starts. A failure is logged: it costs
    /// adoption after a crash, not the running pool.
    fn start_writer(&self) -> std::io::Result<RecordWriter> {
        let (state_dir, records, operator, sandbox) = (
            self.state_dir.clone(),
            self.records.clone(),
            self.operator.clone(),
            self.sandbox.clone(),
        );
        let (ipvs_left, ipvs_owned) = (self.ipvs_left.clone(), self.ipvs_owned.clone());
        RecordWriter::start(move || {
            let operator = operator.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let now = std::time::SystemTime::now();
            let quarantine = sandbox
                .quarantine()
                .into_iter()
                .map(|(address, left)| QuarantinedAddress {
                    address,
                    until_unix_ms: unix_ms(now + left),
                })
                .collect();
            let ipvs = lock(&ipvs_left).union(&lock(&ipvs_owned));
            let written = write_record_file(&state_dir, &records, quarantine, &operator, &ipvs);
            if let Err(error) = written {
                error!(path = %state_dir.join(RECORD_FILE).display(), %error,
                    "writing the state record failed: a restart cannot adopt the workers");
            }
        })
    }

    /// Asks for the record to be written again (a change not worth waiting for).
    fn record_changed(&self) -> u64 {
        self.writer().request()
    }

    /// Starts the task that owns `container` and registers the worker.
    fn own(
        &self,
        id: WorkerId,
        service: &str,
        slot: u32,
        stop_signal: Signal,
        mut container: sandbox::Container,
    ) {
        let capture = container.take_output().map(|(stdout, stderr)| {
            let labels = worker_output::Labels {
                service: service.to_owned(),
                slot: super::slot_field(slot),
                worker: id.to_string(),
            };
            Capture::start(labels, stdout, stderr)
        });
        let output = capture.as_ref().map(|c| c.tail.clone());
        let reader = container.usage_reader();
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(own_worker(id, container, requests_rx, exit_tx, capture));
        self.workers.lock().expect("workers lock").insert(
            id,
            Entry {
                requests,
                stop_signal,
                exit,
                reader,
                output,
            },
        );
    }

    /// Removes the bridge, the (empty) cgroup parent, the state record and the empty state
    /// directories, at shutdown after every worker is gone; all are tried, the first error
    /// is returned.
    pub async fn shutdown(&self) -> Result<(), sandbox::SandboxError> {
        // Nothing pending may write the file again after it is removed.
        self.writer().flush().await;
        let ipvs_left = !lock(&self.ipvs_left).is_empty() || !lock(&self.ipvs_owned).is_empty();
        if !self.records_lock().is_empty() {
            warn!("workers left at shutdown: the state record stays for the next start");
        } else if ipvs_left {
            warn!("IPVS entries left at shutdown: the state record stays for the next start");
        } else {
            let _ = std::fs::remove_file(self.state_dir.join(RECORD_FILE));
        }
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
            Some(Request::DetachOutput) => {
                if let Some(output) = output.take() {
                    output.abort();
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
        let worker = self
            .sandbox
            .spawn(worker_spec(&spec.service, spec.slot, spec.id))
            .await
            .map_err(|e| error(e.into()))?;
        let Some(addr) = worker.address() else {
            let _ = worker.destroy().await;
            return Err(error(RuntimeFailure::NoAddress));
        };
        let pid = worker.pid();
        let chroot = worker.root_switch() == sandbox::RootSwitch::Chroot;
        if chroot {
            warn!(service = %spec.service.name, worker.slot = super::slot_field(spec.slot),
                worker.spare = super::spare_field(spec.slot), worker.id = %spec.id,
                "worker root entered with chroot (the initramfs fallback), not pivot_root");
        }
        let record = WorkerRecord {
            worker: spec.id,
            service: spec.service.name.clone(),
            slot: spec.slot,
            spare: spec.slot == super::SPARE_SLOT,
            generation: spec.generation,
            container: worker.record(),
            config: self
                .configs_lock()
                .intern(serde_json::to_value(&*spec.service).unwrap_or_default()),
        };
        let stop_signal = spec.service.stop_signal.0;
        self.own(spec.id, &spec.service.name, spec.slot, stop_signal, worker);
        self.records_lock().insert(spec.id, record);
        // The pool serves the worker once this returns: on disk first, so that a poold
        // killed from then on adopts it (a worker not on disk is removed as an orphan).
        let ticket = self.record_changed();
        self.writer().written(ticket).await;
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
        self.entry(worker, "signal", |e| {
            let signal = match signal {
                StopSignal::Term => e.stop_signal,
                StopSignal::Kill => Signal::SIGKILL,
            };
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
        let result = Self::destroy(worker, entry).await;
        // Gone (or its teardown failed, and orphan cleanup at the next start finishes it):
        // either way nothing to adopt; its address is in quarantine now.
        self.records_lock().remove(&worker);
        // Not waited for: a restart refuses a recorded worker that is gone (its pid and
        // start time no longer match) and removes what is left of it.
        self.record_changed();
        result
    }

    async fn flush_record(&self) {
        self.writer().flush().await;
    }

    fn detach_output(&self) {
        for entry in self.workers.lock().expect("workers lock").values() {
            let _ = entry.requests.send(Request::DetachOutput);
        }
    }

    async fn promoted(&self, worker: WorkerId, slot: u32) {
        let changed = match self.records_lock().get_mut(&worker) {
            Some(record) => {
                record.slot = slot;
                record.spare = false;
                true
            }
            None => false,
        };
        if changed {
            let ticket = self.record_changed();
            self.writer().written(ticket).await;
        }
    }

    fn take_adopted(&self, service: &ServiceConfig) -> Vec<AdoptedWorker> {
        let mut adopted = self.adopted_lock();
        let (mine, others) = std::mem::take(&mut *adopted)
            .into_iter()
            .partition::<Vec<_>, _>(|w| w.service == service.name);
        *adopted = others;
        mine.into_iter()
            .filter_map(|w| {
                let stale = crate::config::rolling_keys(&w.config, service);
                if !stale.is_empty() {
                    tracing::info!(service = %service.name, worker.id = %w.worker, changed = ?stale,
                        "adopted worker does not match the config; it is rolled");
                }
                Some(AdoptedWorker {
                    id: w.worker,
                    slot: if w.spare { super::SPARE_SLOT } else { w.slot },
                    addr: IpAddr::V4(w.container.address?),
                    pid: w.container.pid,
                    matches_config: stale.is_empty(),
                })
            })
            .collect()
    }

    fn highest_adopted(&self) -> Option<WorkerId> {
        self.highest_adopted
    }

    fn save_operator_state(&self, service: &str, state: &OperatorState) {
        {
            let mut operator = self.operator.lock().unwrap_or_else(|e| e.into_inner());
            if *state == OperatorState::default() {
                operator.remove(service);
            } else {
                operator.insert(service.to_owned(), state.clone());
            }
        }
        // Waited for, as before (rare: an operator's command): on disk when poolctl returns.
        let ticket = self.record_changed();
        self.writer().wait_blocking(ticket);
    }

    fn take_operator_state(&self, service: &str) -> Option<OperatorState> {
        self.operator_restored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(service)
    }

    async fn stop_unclaimed(&self) {
        let unclaimed = std::mem::take(&mut *self.adopted_lock());
        for worker in unclaimed {
            tracing::info!(service = %worker.service, worker.id = %worker.worker,
                "adopted worker of a service no longer configured: stopping it");
            let _ = self.signal(worker.worker, StopSignal::Term);
            let stopped =
                tokio::time::timeout(UNCLAIMED_STOP_GRACE, self.wait(worker.worker)).await;
            if stopped.is_err() {
                let _ = self.signal(worker.worker, StopSignal::Kill);
            }
            if let Err(error) = WorkerRuntime::teardown(self, worker.worker).await {
                error!(worker.id = %worker.worker, %error, "teardown failed");
            }
        }
    }
}

/// `mutex`'s value, poisoned or not (a panic elsewhere must not stop the record).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl IpvsLedger for SandboxRuntime {
    fn record_owned(&self, owned: IpvsRecord) {
        *lock(&self.ipvs_owned) = owned;
        // On disk before the balancer makes what it recorded.
        let ticket = self.record_changed();
        self.writer().wait_blocking(ticket);
    }

    fn left_by_earlier_runs(&self) -> IpvsRecord {
        lock(&self.ipvs_left).clone()
    }

    fn set_left_by_earlier_runs(&self, left: IpvsRecord) {
        *lock(&self.ipvs_left) = left;
        let ticket = self.record_changed();
        self.writer().wait_blocking(ticket);
    }
}

/// How long an adopted worker of a removed service has to end after SIGTERM.
const UNCLAIMED_STOP_GRACE: Duration = Duration::from_secs(10);

/// Writes the state record: streamed to the file, nothing of the records copied (a copy of
/// 1,000 records each time left poold's heap fragmented). The records stay locked while
/// they are serialised, not during the fsyncs.
fn write_record_file(
    state_dir: &std::path::Path,
    workers: &Mutex<BTreeMap<WorkerId, WorkerRecord>>,
    quarantine: Vec<QuarantinedAddress>,
    operator: &BTreeMap<String, OperatorState>,
    ipvs: &IpvsRecord,
) -> std::io::Result<()> {
    /// [`StateRecord`] by reference.
    #[derive(serde::Serialize)]
    struct Borrowed<'a> {
        version: u32,
        workers: Vec<&'a WorkerRecord>,
        quarantine: Vec<QuarantinedAddress>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        operator: &'a BTreeMap<String, OperatorState>,
        #[serde(skip_serializing_if = "IpvsRecord::is_empty")]
        ipvs: &'a IpvsRecord,
    }
    crate::state_dir::write_atomic_with(state_dir, RECORD_FILE, |out| {
        let workers = workers.lock().unwrap_or_else(|e| e.into_inner());
        let record = Borrowed {
            version: RECORD_VERSION,
            workers: workers.values().collect(),
            quarantine,
            operator,
            ipvs,
        };
        serde_json::to_writer(out, &record).map_err(std::io::Error::other)
    })
}

/// The record an earlier run left; none (or an unreadable one, logged) is an empty record.
fn read_record(state_dir: &std::path::Path) -> StateRecord {
    let path = state_dir.join(RECORD_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return StateRecord::default(),
        Err(error) => {
            warn!(path = %path.display(), %error, "reading the state record failed: nothing adopted");
            return StateRecord::default();
        }
    };
    match serde_json::from_slice::<StateRecord>(&bytes) {
        Ok(record) if record.version == RECORD_VERSION => record,
        Ok(record) => {
            warn!(path = %path.display(), version = record.version, "state record of another version: nothing adopted");
            StateRecord::default()
        }
        Err(error) => {
            warn!(path = %path.display(), %error, "state record unreadable: nothing adopted");
            StateRecord::default()
        }
    }
}

impl SandboxRuntime {
    async fn destroy(worker: WorkerId, entry: Entry) -> Result<(), RuntimeError> {
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
