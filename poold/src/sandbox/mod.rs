//! Making and destroying containers: a container is a program in its own mount, pid, uts, ipc,
//! cgroup and network namespaces, on a pivot_root'ed overlay root, in its own cgroup, with
//! its own veth and address, running under a minimal init.
//!
//! API in brief (see each item's docs):
//! - [`Sandbox::new`]`(`[`SandboxConfig`]`)`, then [`Sandbox::cleanup_orphans`] once at start.
//! - [`Sandbox::spawn`]`(`[`ContainerSpec`]`) -> `[`Container`]: returns once the program was exec'd.
//! - [`Container::address`], [`Container::signal`], [`Container::wait`], [`Container::stop`] (SIGTERM,
//!   grace, SIGKILL of the whole cgroup), [`Container::usage_reader`] (memory, CPU, OOM kills)
//!   and [`Container::destroy`] (removes everything; Drop does the same, best effort).
//! - Binaries used as the helper must call [`maybe_run_helper`] first thing in main.
//!
//! Every kernel object carries a recognisable name: links `<link_prefix><id>` (prefix `pd`),
//! cgroups `<cgroup_parent>/<id>` (parent `poold`), namespaces
//! `<state_dir>/netns/poold-<id>`, per-container directories `<state_dir>/workers/<id>`.
//! Invariant: `unsafe` lives only in `sys` (and at the calls of its `unsafe fn fork`).

mod cgroup;
mod error;
mod firewall;
mod helper;
mod net;
mod rootfs;
mod seccomp;
mod slices;
mod spec;
pub(crate) mod sys;
#[cfg(test)]
mod test_mount;

pub use sys::limit_malloc_arenas;

pub use cgroup::{CgroupReader, ContainerUsage, UsageReader};
pub use error::{
    AdoptRefusal, CgroupFailure, ControlError, ForeignLink, NetFailure, Result, SandboxError,
};
pub use helper::{
    maybe_run_helper, Call, ContainerExit, HelperError, OpError, RootFacts, RootSwitch,
    FORWARDED as FORWARDED_SIGNALS, HELPER_ARG,
};
pub use net::{neighbour_shortfall, raise_neighbour_limits, NeighbourLimit};
pub use rootfs::{ImageError, DEFAULT_IMAGE_MAX_BYTES};
pub use seccomp::{is_known_syscall, SeccompMode};
pub use slices::{
    bridge_name, check_bridge_names, AddressAllocator, Clock, Slices, SystemClock,
    DEFAULT_SLICE_PREFIX, MAX_LINK_NAME,
};
pub use spec::{
    BindMount, ContainerSpec, IdMap, Limits, NetworkMode, Output, Rlimit, RlimitResource, RootFs,
    Tmpfs,
};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tracing::Instrument;

use cgroup::ContainerCgroup;
use helper::HelperMsg;
use net::{BridgeFound, BridgeOwnership, BridgeWatcher, Bridges, ContainerNet};
use spec::{HelperPlan, NetnsPlan, RootPlan};

/// The bridges containers attach to: one per slice of the subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Slice 0's bridge link name (≤ 15 chars), created when missing, e.g. `pdbr0`; slice
    /// `i > 0`'s is `<name>-<i>`, created when the first container needs it.
    pub name: String,
    /// Service subnet, cut into slices of `/slice_prefix`; each slice's first host address
    /// goes to its bridge (the gateway of the slice's containers).
    pub subnet: Ipv4Net,
    /// The slices' prefix ([`DEFAULT_SLICE_PREFIX`]: 1,021 containers per bridge, below a
    /// bridge's 1,023 ports); a subnet smaller than a slice is one slice.
    pub slice_prefix: u8,
    /// How long a freed container address rests before reuse (≥ 150 s in production).
    pub quarantine: Duration,
    /// Host ports (TCP and UDP) containers may connect to; every other service of the host is
    /// closed to them (nftables table `inet poold_<link_prefix>`, made with the bridge).
    pub allow_host_ports: Vec<u16>,
}

/// Where the sandbox keeps its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Per-container directories and network namespaces (default /run/poold).
    pub state_dir: PathBuf,
    /// Unpacked tarball images (default /run/poold/images).
    pub image_cache: PathBuf,
    /// Largest unpacked size of one image; unpacking stops with an error past it.
    pub image_max_bytes: u64,
    /// cgroup directory holding one cgroup per container (default `poold`).
    pub cgroup_parent: String,
    /// Host veth names are `<link_prefix><8 hex>`; starts with `pd`, at most 7 chars.
    pub link_prefix: String,
    /// The executable re-run as the container helper (default /proc/self/exe); it must call
    /// [`maybe_run_helper`] first thing in main.
    pub helper_exe: PathBuf,
    /// Needed for [`NetworkMode::Bridged`] containers.
    pub bridge: Option<BridgeConfig>,
    /// `Some(MiB)`: each container's writable layer (overlay upper) lives on a tmpfs of at most
    /// this size that only the container's mount namespace sees: RAM charged to the container's
    /// memory cgroup, gone with the container even after a crash, and no per-container host
    /// directories to create or remove (the fast path). `None`: on disk, in
    /// `<state_dir>/workers/<id>`, removed at teardown.
    pub writable_tmpfs_mib: Option<u64>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            state_dir: PathBuf::from("/run/poold"),
            image_cache: PathBuf::from("/run/poold/images"),
            image_max_bytes: DEFAULT_IMAGE_MAX_BYTES,
            cgroup_parent: "poold".into(),
            link_prefix: "pd".into(),
            helper_exe: PathBuf::from("/proc/self/exe"),
            bridge: None,
            writable_tmpfs_mib: Some(1024),
        }
    }
}

/// What [`Sandbox::cleanup_orphans`] removed (names of the objects).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub cgroups: Vec<String>,
    pub links: Vec<String>,
    /// Bridges marked as this instance's (see [`Sandbox::bridge_marker`]).
    pub bridges: Vec<String>,
    pub netns: Vec<PathBuf>,
    pub container_dirs: Vec<PathBuf>,
    pub image_temp_dirs: Vec<PathBuf>,
}

/// Makes and destroys containers. Cheap to clone; share one per poold.
#[derive(Debug, Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SandboxConfig,
    addresses: Option<Mutex<AddressAllocator>>,
    images: rootfs::ImageCache,
    bridges: Option<Bridges>,
    /// The slices whose bridges this run needs (a container was placed on it, or adopted on
    /// it), each `Some` once its bridge was made or taken over in this run (None: check it
    /// again). Grows until the bridges are removed: the firewall covers every one listed.
    bridge_state: Mutex<BTreeMap<u32, Option<BridgeOwnership>>>,
    /// The slice of each live container's host veth, to put a detached one back on its bridge.
    ports: Mutex<HashMap<String, u32>>,
    /// Repairs the bridge on link events while set ([`Sandbox::watch_bridge`]).
    watcher: Mutex<Option<BridgeWatcher>>,
    /// Whether repairs are wanted (set before the watcher starts, cleared before removal).
    watching: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn bridge_state(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Option<BridgeOwnership>>> {
        self.bridge_state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes or takes over the bridge of `slice` unless done already in this run.
    fn ensure_bridge(&self, slice: u32) -> Result<()> {
        let Some(bridges) = &self.bridges else {
            return Ok(());
        };
        let mut state = self.bridge_state();
        if state.get(&slice).is_none_or(Option::is_none) {
            let ownership = setup_bridge(bridges, slice, &mut state)?;
            state.insert(slice, Some(ownership));
        }
        Ok(())
    }

    fn remove_bridge(&self) -> Result<()> {
        let Some(bridges) = &self.bridges else {
            return Ok(());
        };
        // Stop repairs first; taking the state lock waits out one in progress, and a repair
        // already queued behind the lock sees `watching` cleared (without this it made the
        // bridge, route and firewall again right after their removal).
        drop(
            self.watcher
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        self.watching.store(false, Ordering::SeqCst);
        let mut state = self.bridge_state();
        let mut removed = Ok(());
        for (slice, ownership) in std::mem::take(&mut *state) {
            removed = removed.and(net::remove_bridge(&bridges.spec(slice), ownership));
        }
        // A slice bridge an earlier run made and this one never needed (nothing adopted on it).
        let leftovers = net::delete_marked_bridges(&bridges.marker).map(|_| ());
        let route = net::delete_unreachable_route(bridges.slices.subnet());
        let firewall = firewall::remove(&bridges.firewall_table);
        removed.and(leftovers).and(route).and(firewall)
    }

    /// The watcher's check: makes a bridge again when it is missing, down or without its
    /// address, restores the unreachable route and the firewall table when they are gone,
    /// and puts live containers' host veths back on their bridges. Containers keep running:
    /// their namespaces, addresses and routes are untouched by the loss of a bridge, and the
    /// bridge comes back with the same MAC, so their neighbour caches stay valid.
    fn repair_bridge(&self) {
        let Some(bridges) = &self.bridges else {
            return;
        };
        let started = std::time::Instant::now();
        let mut state = self.bridge_state();
        if !self.watching.load(Ordering::SeqCst) {
            return; // removed meanwhile
        }
        // Slice 0's bridge is always there while watched; the others once a container needed one.
        let mut slices: Vec<u32> = state.keys().copied().collect();
        if !slices.contains(&0) {
            slices.insert(0, 0);
        }
        let mut problems: Vec<(u32, &'static str)> = Vec::new();
        for &slice in &slices {
            let spec = bridges.spec(slice);
            match net::check_bridge(&spec, net::PortScan::UnlessOurs) {
                Ok(BridgeFound::Missing) => problems.push((slice, "missing")),
                Ok(BridgeFound::Usable { up: false, .. }) => problems.push((slice, "down")),
                Ok(BridgeFound::Usable {
                    has_gateway: false, ..
                }) => problems.push((slice, "gateway address missing")),
                Ok(BridgeFound::Usable { .. }) => {}
                Err(error) => {
                    tracing::error!(bridge = %spec.name, %error, "the bridge cannot be repaired");
                }
            }
        }
        // Someone may have removed the route, or flushed the ruleset (a host firewall reload
        // does that): either would open the host or let traffic leave it. Setting up slice 0's
        // bridge again restores both.
        if problems.is_empty() {
            match net::has_unreachable_route(bridges.slices.subnet()) {
                Ok(false) => problems.push((0, "unreachable route missing")),
                _ if !firewall::exists(&bridges.firewall_table) => {
                    problems.push((0, "firewall table missing"))
                }
                _ => {}
            }
        }
        for &(slice, problem) in &problems {
            state.insert(slice, None);
            match setup_bridge(bridges, slice, &mut state) {
                Ok(ownership) => {
                    state.insert(slice, Some(ownership));
                }
                Err(error) => {
                    tracing::error!(bridge = %bridges.name(slice), problem, %error, "repairing the bridge failed");
                }
            }
        }
        drop(state);
        let ports = self.ports().clone();
        let reattached = match net::reattach_ports(bridges, ports, !problems.is_empty()) {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(bridge = %bridges.bridge, %error, "reattaching container veths failed");
                return;
            }
        };
        for &(slice, problem) in &problems {
            tracing::warn!(
                bridge = %bridges.name(slice),
                problem,
                reattached = reattached.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "bridge repaired"
            );
        }
        if problems.is_empty() && !reattached.is_empty() {
            tracing::warn!(
                bridge = %bridges.bridge,
                problem = "container veths detached",
                reattached = reattached.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "bridge repaired"
            );
        }
    }
}

/// The nftables table of the instance whose container links start with `link_prefix`.
pub fn firewall_table(link_prefix: &str) -> String {
    format!("poold_{link_prefix}")
}

/// Sets up the bridge of `slice` on the host: checks the link under its name (refusing a
/// foreign one before touching anything), installs the firewall for it and every bridge
/// already in `state` (before the bridge exists, so no container ever runs without it; the
/// slice joins `state`), then makes or takes over the bridge.
fn setup_bridge(
    bridges: &Bridges,
    slice: u32,
    state: &mut BTreeMap<u32, Option<BridgeOwnership>>,
) -> Result<BridgeOwnership> {
    let spec = bridges.spec(slice);
    net::check_bridge(&spec, net::PortScan::Always)?;
    state.entry(slice).or_insert(None);
    let names: Vec<String> = state.keys().map(|i| bridges.name(*i)).collect();
    firewall::install(&bridges.firewall_table, &names, &bridges.allow_host_ports)?;
    net::ensure_bridge(&spec)
}

/// The `ifalias` poold puts on a bridge it makes: `poold:<state dir>` (hashed when the
/// path is too long for an alias), so each instance recognises its own bridge.
fn bridge_marker(state_dir: &Path) -> String {
    let marker = format!("poold:{}", state_dir.display());
    if marker.len() < 128 {
        return marker;
    }
    let h = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    let hex: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("poold:sha256:{hex}")
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The first 8 bytes of sha256(`s`), in hex.
fn hex_digest(s: &str) -> String {
    Sha256::digest(s)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A container's id: 8 hex chars, unique per poold run, part of every kernel object's name
/// (links `<link_prefix><id>`, cgroups `<cgroup_parent>/<id>`, `netns/poold-<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ContainerId(String);

impl ContainerId {
    fn new_unique() -> Self {
        let h = Sha256::digest(format!("{}-{}", std::process::id(), unique_suffix()));
        ContainerId(h[..4].iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Sandbox {
    /// Checks the config; creates nothing yet.
    pub fn new(config: SandboxConfig) -> Result<Self> {
        let bad = |field, reason: &str| SandboxError::InvalidConfig {
            field,
            reason: reason.into(),
        };
        if !config.link_prefix.starts_with("pd") || config.link_prefix.len() > 7 {
            return Err(bad(
                "link_prefix",
                "must start with `pd` and have at most 7 chars",
            ));
        }
        if config.cgroup_parent.is_empty() || config.cgroup_parent.starts_with('/') {
            return Err(bad(
                "cgroup_parent",
                "must be a non-empty relative cgroup path",
            ));
        }
        if !config.state_dir.is_absolute() || !config.image_cache.is_absolute() {
            return Err(bad(
                "state_dir",
                "state_dir and image_cache must be absolute",
            ));
        }
        let addresses = match &config.bridge {
            Some(b) => {
                if b.name.is_empty() || b.name.len() > 15 {
                    return Err(bad("bridge.name", "must have 1..=15 chars"));
                }
                if b.subnet.prefix_len() > 29 {
                    return Err(bad("bridge.subnet", "needs a prefix of /29 or shorter"));
                }
                // A /30 slice holds one container (tests use them to span many bridges).
                if !(1..=30).contains(&b.slice_prefix) {
                    return Err(bad("bridge.slice_prefix", "must be 1 to 30"));
                }
                let slices = Slices::new(b.subnet, b.slice_prefix);
                check_bridge_names(&b.name, &slices)?;
                Some(Mutex::new(AddressAllocator::new(
                    slices,
                    b.quarantine,
                    Arc::new(SystemClock),
                )))
            }
            None => None,
        };
        let bridges = config.bridge.as_ref().map(|b| Bridges {
            bridge: b.name.clone(),
            slices: Slices::new(b.subnet, b.slice_prefix),
            marker: bridge_marker(&config.state_dir),
            port_prefix: config.link_prefix.clone(),
            firewall_table: firewall_table(&config.link_prefix),
            allow_host_ports: b.allow_host_ports.clone(),
        });
        Ok(Sandbox {
            inner: Arc::new(Inner {
                images: rootfs::ImageCache::new(config.image_cache.clone(), config.image_max_bytes),
                config,
                addresses,
                bridges,
                bridge_state: Mutex::new(BTreeMap::new()),
                ports: Mutex::new(HashMap::new()),
                watcher: Mutex::new(None),
                watching: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Starts a container; returns when its program has been exec'd (or with the reason it was
    /// not). Nothing is left behind on error.
    pub async fn spawn(&self, spec: ContainerSpec) -> Result<Container> {
        spec.validate()?;
        let id = ContainerId::new_unique();
        let span =
            tracing::info_span!("sandbox.spawn", container.name = %spec.name, container.id = %id);
        let inner = self.inner.clone();
        async move {
            let (id2, spec2) = (id.clone(), spec.clone());
            let (plan, resources) =
                tokio::task::spawn_blocking(move || prepare(inner, id2, &spec2))
                    .await
                    .map_err(|source| SandboxError::Task {
                        action: "preparing the container",
                        source,
                    })??;
            start(resources, plan, &spec).await
        }
        .instrument(span)
        .await
    }

    /// Takes over a container an earlier run of this instance started (after a crash or a
    /// `kill -9` of poold), when it still is what `record` says: the helper process with
    /// that pid and start time, in the container's cgroup. It is watched with a pidfd (it is
    /// not our child), its address is marked in use and its output FIFOs are read again.
    /// Anything else is [`SandboxError::NotAdoptable`]; nothing is changed then (its
    /// leftovers are orphans for [`Sandbox::cleanup_orphans_except`]).
    pub fn adopt(&self, record: &ContainerRecord) -> Result<Container> {
        let cfg = &self.inner.config;
        let refuse = |reason| SandboxError::NotAdoptable {
            container: record.id.clone(),
            reason,
        };
        // What the record names must be this instance's objects for this id: a record is
        // trusted no further than the names poold would have given.
        let expected_cgroup = format!("{}/{}", cfg.cgroup_parent, record.id);
        let expected_netns = cfg
            .state_dir
            .join("netns")
            .join(format!("poold-{}", record.id));
        let expected_veth = format!("{}{}", cfg.link_prefix, record.id);
        let mismatch = |field, found: String, expected: String| {
            refuse(AdoptRefusal::Mismatch {
                field,
                found,
                expected,
            })
        };
        if record.cgroup.as_deref() != Some(expected_cgroup.as_str()) {
            return Err(mismatch(
                "cgroup",
                format!("{:?}", record.cgroup),
                expected_cgroup,
            ));
        }
        if record.netns.as_ref().is_some_and(|n| *n != expected_netns) {
            return Err(mismatch(
                "netns",
                format!("{:?}", record.netns),
                expected_netns.display().to_string(),
            ));
        }
        if record.veth.as_ref().is_some_and(|v| *v != expected_veth) {
            return Err(mismatch(
                "veth",
                format!("{:?}", record.veth),
                expected_veth,
            ));
        }
        let pid = record.pid;
        let pidfd = sys::pidfd_open(pid).map_err(|_| refuse(AdoptRefusal::Gone { pid }))?;
        // Read after the pidfd is open: if the start time still matches, the pidfd is that
        // process and no later one that got its pid.
        let found = process_start_time(pid).ok_or(refuse(AdoptRefusal::Gone { pid }))?;
        if found != record.start_time {
            return Err(refuse(AdoptRefusal::PidReused {
                pid,
                recorded: record.start_time,
                found,
            }));
        }
        let cgroup = ContainerCgroup::open(&cfg.cgroup_parent, record.id.as_str());
        if !cgroup.procs().contains(&u64::from(pid)) {
            return Err(refuse(AdoptRefusal::NotInCgroup {
                pid,
                cgroup: cgroup.name().to_owned(),
            }));
        }
        let dir = run_dir(cfg, &record.id);
        let output = if record.piped {
            Some(open_output(&dir)?)
        } else {
            None
        };
        let pidfd = sys::watch_pidfd(pidfd).map_err(|e| {
            SandboxError::io("watch the pidfd of", Path::new(&format!("/proc/{pid}")), e)
        })?;
        if let (Some(address), Some(alloc)) = (record.address, &self.inner.addresses) {
            alloc
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reserve(address);
        }
        // Its bridge is its address's slice's: needed again (made, watched, in the firewall)
        // and the one its veth goes back to when detached.
        let slice = match (&self.inner.bridges, record.address) {
            (Some(bridges), Some(address)) => bridges.slices.index_of(address),
            _ => None,
        };
        if let (Some(slice), Some(veth)) = (slice, &record.veth) {
            self.inner.bridge_state().entry(slice).or_insert(None);
            self.inner.ports().insert(veth.clone(), slice);
        }
        let cgroup = Arc::new(cgroup);
        let res = Resources {
            id: record.id.clone(),
            inner: self.inner.clone(),
            dir: Some(dir.clone()),
            cgroup: Some(cgroup.clone()),
            net: match (&record.netns, &record.veth) {
                (Some(netns), Some(veth)) => Some(ContainerNet {
                    netns: netns.clone(),
                    host_link: veth.clone(),
                }),
                _ => None,
            },
            address: record.address,
        };
        tracing::info!(
            container.id = %record.id,
            container.name = %record.name,
            container.pid = pid,
            address = ?record.address,
            "container adopted"
        );
        Ok(Container {
            id: record.id.clone(),
            name: record.name.clone(),
            address: record.address,
            pid,
            start_time: record.start_time,
            root_switch: RootSwitch::PivotRoot,
            reader: Some(cgroup.reader()),
            child: None,
            lines: None,
            pidfd: Some(pidfd),
            output,
            exit_file: dir.join(EXIT_FILE),
            exit: None,
            res,
        })
    }

    /// The quarantined container addresses and how long each still rests.
    pub fn quarantine(&self) -> Vec<(Ipv4Addr, Duration)> {
        match &self.inner.addresses {
            Some(a) => a.lock().unwrap_or_else(|e| e.into_inner()).quarantined(),
            None => Vec::new(),
        }
    }

    /// Puts addresses back into quarantine for what is left of it (after a restart).
    pub fn restore_quarantine(&self, addresses: &[(Ipv4Addr, Duration)]) {
        if let Some(a) = &self.inner.addresses {
            let mut alloc = a.lock().unwrap_or_else(|e| e.into_inner());
            for (addr, left) in addresses {
                alloc.quarantine_for(*addr, *left);
            }
        }
    }

    /// Removes everything a previous run left under this config: kills and removes every
    /// cgroup under `cgroup_parent`, deletes links named `<link_prefix><8 hex>`, unmounts and removes
    /// namespaces under `<state_dir>/netns`, removes container directories and half-unpacked
    /// images, and the cgroup parent itself once empty. Call once at start, before spawning:
    /// it does not spare live containers.
    pub async fn cleanup_orphans(&self) -> Result<CleanupReport> {
        self.cleanup_orphans_except(HashSet::new()).await
    }

    /// [`Sandbox::cleanup_orphans`] sparing the objects of the containers in `keep` (adopted
    /// after a restart); while any is kept, the bridge, its route, the firewall table and the
    /// cgroup parent stay too (the kept containers use them).
    pub async fn cleanup_orphans_except(
        &self,
        keep: HashSet<ContainerId>,
    ) -> Result<CleanupReport> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || cleanup_orphans_blocking(&inner.config, &keep))
            .await
            .map_err(|source| SandboxError::Task {
                action: "removing orphans",
                source,
            })?
    }

    /// Blocking [`Sandbox::cleanup_orphans`], for Drop guards and non-async callers.
    pub fn cleanup_orphans_blocking(&self) -> Result<CleanupReport> {
        cleanup_orphans_blocking(&self.inner.config, &HashSet::new())
    }

    /// Blocking [`Sandbox::remove_bridge`], for Drop guards and non-async callers.
    pub fn remove_bridge_blocking(&self) -> Result<()> {
        self.inner.remove_bridge()
    }

    /// The `ifalias` that marks a bridge as made by this instance (same state dir).
    pub fn bridge_marker(&self) -> Option<&str> {
        self.inner.bridges.as_ref().map(|b| b.marker.as_str())
    }

    /// The name of the bridge that carries `address` (its slice's).
    pub fn bridge_of(&self, address: Ipv4Addr) -> Option<String> {
        let bridges = self.inner.bridges.as_ref()?;
        Some(bridges.name(bridges.slices.index_of(address)?))
    }

    /// Makes the bridge of slice 0 and of every slice an adopted container is on, or takes
    /// over an existing one poold may use (poold's own from an earlier run, or an empty
    /// bridge); a foreign link is refused with [`SandboxError::ForeignBridge`] and left as it
    /// was. Spawning does this too (the bridges of further slices are made when a container
    /// first needs one); call it at start so a bad bridge fails the start rather than every
    /// spawn.
    pub async fn ensure_bridge(&self) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let needed: Vec<u32> = inner.bridge_state().keys().copied().collect();
            inner.ensure_bridge(0)?;
            needed
                .into_iter()
                .try_for_each(|slice| inner.ensure_bridge(slice))
        })
        .await
        .map_err(|source| SandboxError::Task {
            action: "ensuring the bridge",
            source,
        })?
    }

    /// Watches the bridge from now on (rtnetlink link events, in a task of the current
    /// runtime): when it vanishes, goes down or loses its address, it is made again and live
    /// containers' host veths are put back on it, within moments, with a warning in the log.
    /// Stops at [`Sandbox::remove_bridge`]. Needs a tokio runtime.
    pub fn watch_bridge(&self) -> Result<()> {
        let Some(bridges) = &self.inner.bridges else {
            return Ok(());
        };
        let weak = Arc::downgrade(&self.inner);
        let check = Arc::new(move || {
            if let Some(inner) = weak.upgrade() {
                inner.repair_bridge();
            }
        });
        self.inner.watching.store(true, Ordering::SeqCst);
        let watcher = BridgeWatcher::start(bridges.bridge.clone(), Duration::from_secs(5), check)?;
        *self.inner.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
        Ok(())
    }

    /// Whether the configured bridge name, and each slice bridge name a link already has,
    /// is free or a bridge poold may use, changing nothing (for `poold check`):
    /// `Err(ForeignBridge)` names what is wrong with the first that is not.
    pub fn check_bridge_blocking(&self) -> Result<()> {
        let Some(bridges) = &self.inner.bridges else {
            return Ok(());
        };
        net::check_bridge(&bridges.spec(0), net::PortScan::Always)?;
        let prefix = format!("{}-", bridges.bridge);
        for name in net::links_with_prefix(&prefix)? {
            let slice = slices::slice_of_bridge(&bridges.bridge, &name)
                .filter(|i| u64::from(*i) < bridges.slices.count());
            if let Some(slice) = slice {
                net::check_bridge(&bridges.spec(slice), net::PortScan::Always)?;
            }
        }
        Ok(())
    }

    /// Removes the cgroup parent from every hierarchy where it is empty (at shutdown, after
    /// every container is destroyed). A parent that still has child cgroups is left alone.
    pub async fn remove_cgroup_parent(&self) -> Result<()> {
        let parent = self.inner.config.cgroup_parent.clone();
        tokio::task::spawn_blocking(move || remove_cgroup_parent(&parent))
            .await
            .map_err(|source| SandboxError::Task {
                action: "removing the cgroup parent",
                source,
            })?
    }

    /// Removes the state directory's empty working directories (netns, scratch, containers) and
    /// the state directory itself if nothing else is in it, at shutdown after every container is
    /// destroyed. Anything not empty (the image cache) stays.
    pub fn remove_empty_state_dirs(&self) {
        let state = &self.inner.config.state_dir;
        for dir in ["netns", "scratch", "workers"]
            .iter()
            .map(|d| state.join(d))
            .chain(std::iter::once(state.clone()))
        {
            // rmdir refuses a directory in use (not empty, or a mount point): that stays.
            let _ = std::fs::remove_dir(&dir);
        }
    }

    /// Removes what poold put there (for shutdown and tests): the bridge if poold made it,
    /// else only the address poold added to a borrowed bridge. Never a foreign link, also
    /// not after a failed start; a missing bridge is fine.
    pub async fn remove_bridge(&self) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.remove_bridge())
            .await
            .map_err(|source| SandboxError::Task {
                action: "deleting the bridge",
                source,
            })?
    }
}

/// Kernel objects and directories of one container; torn down exactly once (Drop as fallback).
#[derive(Debug)]
struct Resources {
    id: ContainerId,
    inner: Arc<Inner>,
    dir: Option<PathBuf>,
    cgroup: Option<Arc<ContainerCgroup>>,
    net: Option<ContainerNet>,
    address: Option<Ipv4Addr>,
}

impl Resources {
    fn teardown(&mut self) -> Result<()> {
        let mut failures = Vec::new();
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.destroy() {
                failures.push(e);
                // The run directory is what marks the cgroup as this instance's: kept, the
                // next start's orphan cleanup tries the cgroup again.
                self.dir = None;
            }
        }
        if let Some(n) = self.net.take() {
            self.inner.ports().remove(&n.host_link);
            if let Err(e) = net::teardown_container_net(&n) {
                failures.push(e);
            }
        }
        if let (Some(a), Some(alloc)) = (self.address.take(), &self.inner.addresses) {
            alloc.lock().unwrap_or_else(|e| e.into_inner()).release(a);
        }
        if let Some(d) = self.dir.take() {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    failures.push(SandboxError::io("remove", &d, e));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(SandboxError::Teardown {
                subject: format!("container {}", self.id),
                failures,
            })
        }
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(container.id = %self.id, error = %e, "teardown on drop incomplete");
        }
    }
}

fn read_host_file(path: &str) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// A container's /etc/hosts, as Docker writes it: loopback names and the container's own address
/// (127.0.1.1 without one, as Debian does) with its hostname, so resolving the hostname
/// (Python's getfqdn, many servers at start) never asks a DNS server the container may not reach.
fn container_hosts(address: Option<Ipv4Addr>, hostname: &str) -> Vec<u8> {
    let me = address.map_or_else(|| "127.0.1.1".to_owned(), |a| a.to_string());
    format!(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n\
         {me}\t{hostname}\n"
    )
    .into_bytes()
}

/// The blocking half of spawn: image, user, command, dirs, cgroup, network.
fn prepare(
    inner: Arc<Inner>,
    id: ContainerId,
    spec: &ContainerSpec,
) -> Result<(HelperPlan, Resources)> {
    let cfg = &inner.config;
    let lower = image_root(&inner, &spec.rootfs)?;
    let user = spec::resolve_user(spec.user.as_deref(), &lower)?;
    let argv0 = spec::resolve_command(spec, &lower)?;
    if let Some(map) = spec.user_namespace {
        check_ids_in_user_namespace(&user, map)?;
    }
    let seccomp = match spec.seccomp {
        SeccompMode::Default => {
            seccomp::container_filters(&spec.capabilities, &spec.seccomp_allow)?
        }
        SeccompMode::Unconfined => Vec::new(),
    };
    if spec.network == NetworkMode::Bridged && cfg.bridge.is_none() {
        return Err(SandboxError::spec(
            "network",
            "bridged needs a bridge in the sandbox config",
        ));
    }
    // From here on, what is made is recorded in `res` and removed if a later step fails.
    let mut res = Resources {
        id: id.clone(),
        inner: inner.clone(),
        dir: None,
        cgroup: None,
        net: None,
        address: None,
    };
    let run = run_files(cfg, &id, &spec.output, &mut res)?;
    let layer = writable_layer(cfg, &id, &mut res)?;
    res.cgroup = Some(Arc::new(ContainerCgroup::create(
        &cfg.cgroup_parent,
        id.as_str(),
        &spec.limits,
    )?));
    let netns = network(&inner, spec.network, &id, &mut res)?;
    let plan = HelperPlan {
        container: id,
        root: match spec.rootfs {
            RootFs::Host => RootPlan::Host,
            _ => RootPlan::Overlay {
                lower: lower.clone(),
                upper: layer.upper,
                work: layer.work,
            },
        },
        merged: layer.merged,
        scratch_tmpfs: cfg.writable_tmpfs_mib.map(|mib| (layer.base.clone(), mib)),
        private_dir: layer.base,
        read_only_root: spec.read_only_root,
        argv: std::iter::once(argv0)
            .chain(spec.args.iter().cloned())
            .collect(),
        env: container_env(spec),
        workdir: spec.workdir.clone(),
        user,
        hostname: spec.hostname().to_string(),
        rlimits: spec.rlimits.clone(),
        mounts: spec.mounts.clone(),
        tmpfs: spec.tmpfs.clone(),
        capabilities: spec.capabilities.clone(),
        userns: spec.user_namespace,
        userns_copy: userns_copy_dir(cfg, spec.user_namespace, &lower),
        seccomp,
        netns,
        resolv_conf: read_host_file("/etc/resolv.conf"),
        hosts: container_hosts(res.address, spec.hostname()),
        keep_open: run.fifos,
        exit_file: run.exit_file,
    };
    Ok((plan, res))
}

/// A container's run files: its output FIFOs (with [`Output::Piped`]) and exit file.
struct RunFiles {
    fifos: Vec<PathBuf>,
    exit_file: PathBuf,
}

/// `<state_dir>/workers/<id>` (recorded in `res`): the output FIFOs and the exit file, what
/// a restarted poold needs to read a container it did not start.
fn run_files(
    cfg: &SandboxConfig,
    id: &ContainerId,
    output: &Output,
    res: &mut Resources,
) -> Result<RunFiles> {
    let dir = run_dir(cfg, id);
    std::fs::create_dir_all(&dir).map_err(|e| SandboxError::io("create", &dir, e))?;
    res.dir = Some(dir.clone());
    let mut fifos = Vec::new();
    if *output == Output::Piped {
        for name in OUTPUT_FIFOS {
            let path = dir.join(name);
            nix::unistd::mkfifo(
                &path,
                nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
            )
            .map_err(|e| SandboxError::io("mkfifo", &path, e.into()))?;
            fifos.push(path);
        }
    }
    Ok(RunFiles {
        fifos,
        exit_file: dir.join(EXIT_FILE),
    })
}

/// The program's stdout and stderr FIFOs in its run directory.
const OUTPUT_FIFOS: [&str; 2] = ["stdout", "stderr"];
/// Where the init writes the program's [`ContainerExit`].
const EXIT_FILE: &str = "exit";
/// Each output FIFO's buffer: what a worker may write while no poold reads (a restart)
/// before its writes block.
const OUTPUT_PIPE_BYTES: i32 = 1 << 20;

fn run_dir(cfg: &SandboxConfig, id: &ContainerId) -> PathBuf {
    cfg.state_dir.join("workers").join(id.as_str())
}

/// The read ends of a container's output FIFOs.
pub type OutputPipes = (
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Receiver,
);

/// Opens the read ends of the output FIFOs in `dir` (nonblocking, so no writer is needed).
fn open_output(dir: &Path) -> Result<OutputPipes> {
    let open = |name: &str| {
        let path = dir.join(name);
        tokio::net::unix::pipe::OpenOptions::new()
            .open_receiver(&path)
            .map_err(|e| SandboxError::io("open", &path, e))
    };
    Ok((open(OUTPUT_FIFOS[0])?, open(OUTPUT_FIFOS[1])?))
}

/// The start time of process `pid` (clock ticks after boot, field 22 of /proc/PID/stat):
/// with the pid, it names one process for the host's uptime. None when there is no such
/// process or it has ended (a zombie whose parent has not reaped it yet).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// How the program ended as its init wrote it; none written (the init was killed): SIGKILL.
fn read_exit_file(path: &Path) -> ContainerExit {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(ContainerExit::Signal(libc::SIGKILL))
}

/// The image directory: as given, unpacked from the tarball (cached), or the host's `/`.
fn image_root(inner: &Inner, rootfs: &RootFs) -> Result<PathBuf> {
    Ok(match rootfs {
        RootFs::Dir(p) => p.clone(),
        RootFs::Tarball(t) => inner.images.prepare(t)?,
        RootFs::Host => PathBuf::from("/"),
    })
}

/// Every id the program runs with must exist inside the user namespace.
fn check_ids_in_user_namespace(user: &spec::ResolvedUser, map: IdMap) -> Result<()> {
    let outside = std::iter::once(user.uid)
        .chain(std::iter::once(user.gid))
        .chain(user.groups.iter().copied())
        .find(|id| *id >= map.count);
    match outside {
        Some(id) => Err(SandboxError::spec(
            "user",
            format!("id {id} is outside the user namespace's {} ids", map.count),
        )),
        None => Ok(()),
    }
}

/// Where the copy of the image with shifted owners goes, for filesystems that cannot idmap
/// (one per image and id range, shared by their containers).
fn userns_copy_dir(cfg: &SandboxConfig, map: Option<IdMap>, lower: &Path) -> PathBuf {
    cfg.image_cache.join(format!(
        "userns-{}-{}",
        map.map_or(0, |m| m.host_first),
        hex_digest(&lower.to_string_lossy())
    ))
}

/// The directories of a container's writable overlay layer.
struct WritableLayer {
    /// Holds upper, work and merged; the container's private directory.
    base: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

/// With a writable tmpfs, a shared mount point (each container mounts its own tmpfs there,
/// privately); else a directory of the container's own on disk, recorded in `res`.
fn writable_layer(
    cfg: &SandboxConfig,
    id: &ContainerId,
    res: &mut Resources,
) -> Result<WritableLayer> {
    let base = match cfg.writable_tmpfs_mib {
        Some(_) => cfg.state_dir.join("scratch"),
        None => cfg.state_dir.join("workers").join(id.as_str()),
    };
    let layer = WritableLayer {
        upper: base.join("upper"),
        work: base.join("work"),
        merged: base.join("merged"),
        base,
    };
    if cfg.writable_tmpfs_mib.is_some() {
        std::fs::create_dir_all(&layer.base)
            .map_err(|e| SandboxError::io("create", &layer.base, e))?;
    } else {
        res.dir = Some(layer.base.clone());
        for d in [&layer.upper, &layer.work, &layer.merged] {
            std::fs::create_dir_all(d).map_err(|e| SandboxError::io("create", d, e))?;
        }
    }
    Ok(layer)
}

/// The container's network namespace; a bridged one gets its address, veth and namespace
/// here (recorded in `res`).
fn network(
    inner: &Inner,
    mode: NetworkMode,
    id: &ContainerId,
    res: &mut Resources,
) -> Result<NetnsPlan> {
    let (bridges, addresses) = match mode {
        NetworkMode::Host => return Ok(NetnsPlan::Host),
        NetworkMode::Isolated => return Ok(NetnsPlan::New),
        NetworkMode::Bridged => match (inner.bridges.as_ref(), inner.addresses.as_ref()) {
            (Some(b), Some(a)) => (b, a),
            _ => unreachable!("checked by prepare"),
        },
    };
    let addr = addresses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .allocate()?;
    // From here the teardown releases (quarantines) the address.
    res.address = Some(addr);
    let slice = bridges
        .slices
        .index_of(addr)
        .expect("the allocator hands out addresses of the subnet");
    inner.ensure_bridge(slice)?;
    let cfg = &inner.config;
    let path = cfg.state_dir.join("netns").join(format!("poold-{id}"));
    let link = format!("{}{id}", cfg.link_prefix);
    // Known before the veth exists: the watcher never finds it detached without its bridge.
    inner.ports().insert(link.clone(), slice);
    match net::setup_container_net(&path, &link, &bridges.spec(slice), addr) {
        Ok(n) => res.net = Some(n),
        Err(e) => {
            inner.ports().remove(&link);
            // The bridge may have been removed behind our back: check it next time.
            inner.bridge_state().insert(slice, None);
            return Err(e);
        }
    }
    Ok(NetnsPlan::Join(path))
}

/// The spec's environment, with a default PATH unless it sets one.
fn container_env(spec: &ContainerSpec) -> Vec<String> {
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !spec.env.iter().any(|(k, _)| k == "PATH") {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    env
}

/// The helper's stdout and stderr; with [`Output::Piped`] also the read ends of the FIFOs
/// in `dir` (opened first: opening a write end needs a reader).
fn output_stdio(o: &Output, dir: &Path) -> Result<(Stdio, Stdio, Option<OutputPipes>)> {
    if *o == Output::Piped {
        let pipes = open_output(dir)?;
        let writer = |name: &str| {
            let path = dir.join(name);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| SandboxError::io("open", &path, e))?;
            // Best effort: a smaller buffer only blocks a chatty worker sooner while poold
            // is away.
            let _ = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_BYTES));
            Ok::<_, SandboxError>(Stdio::from(file))
        };
        return Ok((
            writer(OUTPUT_FIFOS[0])?,
            writer(OUTPUT_FIFOS[1])?,
            Some(pipes),
        ));
    }
    let (out, err) = match o {
        Output::Inherit => (Stdio::inherit(), Stdio::inherit()),
        Output::Null => (Stdio::null(), Stdio::null()),
        Output::Piped => unreachable!("handled above"),
        Output::File(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| SandboxError::io("open output", p, e))?;
            let g = f
                .try_clone()
                .map_err(|e| SandboxError::io("dup output", p, e))?;
            (Stdio::from(f), Stdio::from(g))
        }
    };
    Ok((out, err, None))
}

type CtlLines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;
/// The read buffer of a container's control socket (longer lines still arrive whole).
const CTL_BUFFER: usize = 256;

/// The async half of spawn: start the helper, put it in the cgroup, send the plan, wait for
/// Ready.
async fn start(res: Resources, plan: HelperPlan, spec: &ContainerSpec) -> Result<Container> {
    let id = res.id.clone();
    let ctl_err = |source: ControlError| SandboxError::Control {
        container: id.clone(),
        source,
    };
    let io = |action| move |source| ctl_err(ControlError::Io { action, source });
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(io("socketpair"))?;
    let run_dir = res
        .dir
        .clone()
        .unwrap_or_else(|| run_dir(&res.inner.config, &id));
    let (out, err, output) = output_stdio(&spec.output, &run_dir)?;
    let exe = &res.inner.config.helper_exe;
    let child = tokio::process::Command::new(exe)
        .arg(HELPER_ARG)
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| SandboxError::HelperSpawn {
            exe: exe.clone(),
            source: e,
        })?;
    let pid = child.id().unwrap_or(0);
    let mut container = Container {
        id: id.clone(),
        name: spec.name.clone(),
        address: res.address,
        pid,
        start_time: process_start_time(pid).unwrap_or(0),
        root_switch: RootSwitch::PivotRoot,
        reader: res.cgroup.as_ref().map(|c| c.reader()),
        child: Some(child),
        lines: None,
        pidfd: None,
        output,
        exit_file: run_dir.join(EXIT_FILE),
        exit: None,
        res,
    };
    if let Some(cg) = &container.res.cgroup {
        cg.attach(pid)?;
    }
    ours.set_nonblocking(true).map_err(io("set_nonblocking"))?;
    let stream = tokio::net::UnixStream::from_std(ours).map_err(io("register"))?;
    let (rd, mut wr) = stream.into_split();
    let mut line =
        serde_json::to_string(&plan).map_err(|e| ctl_err(ControlError::EncodePlan(e)))?;
    line.push('\n');
    wr.write_all(line.as_bytes())
        .await
        .map_err(io("sending the plan"))?;
    drop(wr);
    // Kept for the container's life and read only for a few short lines: a small buffer
    // (the default 8 KiB was 8 MiB of poold's memory at 1,000 workers).
    let mut lines = BufReader::with_capacity(CTL_BUFFER, rd).lines();
    let reply = lines.next_line().await;
    let msg = match &reply {
        Ok(Some(line)) => serde_json::from_str::<HelperMsg>(line).ok(),
        _ => None,
    };
    if let Some(HelperMsg::Ready { root_switch }) = msg {
        container.root_switch = root_switch;
        container.lines = Some(lines);
        log_started(&container);
        return Ok(container);
    }
    let status = container.kill_and_reap().await;
    Err(match (reply, msg) {
        (_, Some(HelperMsg::Failed(source))) => SandboxError::Setup {
            container: id,
            source,
        },
        (Ok(Some(line)), _) => ctl_err(ControlError::Unexpected { line }),
        (Ok(None), _) => ctl_err(ControlError::HelperExited { status }),
        (Err(source), _) => ctl_err(ControlError::Io {
            action: "reading",
            source,
        }),
    })
}

/// Logs the new container; a chroot'ed one (a weaker root, only on an initramfs) as a
/// warning.
fn log_started(c: &Container) {
    match c.root_switch {
        RootSwitch::PivotRoot => tracing::info!(
            container.id = %c.id,
            container.name = %c.name,
            container.pid = c.pid,
            address = ?c.address,
            root_switch = "pivot_root",
            "container started"
        ),
        RootSwitch::Chroot => tracing::warn!(
            container.id = %c.id,
            container.name = %c.name,
            container.pid = c.pid,
            address = ?c.address,
            root_switch = "chroot",
            "container started in a chroot: pivot_root is impossible on the initramfs root, \
             so the container's root is escapable with CAP_SYS_CHROOT"
        ),
    }
}

/// A running (or ended but not yet destroyed) container. Dropping it tears it down (best
/// effort, blocking); prefer [`Container::destroy`].
#[derive(Debug)]
pub struct Container {
    id: ContainerId,
    name: String,
    address: Option<Ipv4Addr>,
    pid: u32,
    /// The helper's start time, which with `pid` tells it from a later process on that pid.
    start_time: u64,
    root_switch: RootSwitch,
    reader: Option<CgroupReader>,
    /// The helper, when this poold started it (else `pidfd`).
    child: Option<tokio::process::Child>,
    lines: Option<CtlLines>,
    /// The helper of an adopted container (not our child): readable once it exited.
    pidfd: Option<tokio::io::unix::AsyncFd<OwnedFd>>,
    output: Option<OutputPipes>,
    exit_file: PathBuf,
    exit: Option<ContainerExit>,
    res: Resources,
}

/// What a restarted poold needs to find a container again ([`Sandbox::adopt`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerRecord {
    pub id: ContainerId,
    pub name: String,
    /// The helper's host pid and start time (clock ticks after boot).
    pub pid: u32,
    pub start_time: u64,
    pub cgroup: Option<String>,
    pub netns: Option<PathBuf>,
    pub veth: Option<String>,
    pub address: Option<Ipv4Addr>,
    /// Whether its output goes to FIFOs poold reads.
    pub piped: bool,
}

impl Container {
    /// Sandbox-assigned id (8 hex chars), part of every kernel object's name.
    pub fn id(&self) -> &ContainerId {
        &self.id
    }

    /// The read ends of the program's stdout and stderr with [`Output::Piped`] (once). Read
    /// them steadily: a full pipe blocks the program.
    pub fn take_output(&mut self) -> Option<OutputPipes> {
        self.output.take()
    }

    /// What [`Sandbox::adopt`] needs to take this container over after a restart.
    pub fn record(&self) -> ContainerRecord {
        ContainerRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            pid: self.pid,
            start_time: self.start_time,
            cgroup: self.cgroup().map(str::to_owned),
            netns: self.res.net.as_ref().map(|n| n.netns.clone()),
            veth: self.res.net.as_ref().map(|n| n.host_link.clone()),
            address: self.address,
            piped: self
                .res
                .dir
                .as_ref()
                .is_some_and(|d| d.join(OUTPUT_FIFOS[0]).exists()),
        }
    }

    /// The spec's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's address (bridged containers only).
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.address
    }

    /// How the container's init entered its root: [`RootSwitch::PivotRoot`] everywhere
    /// but on an initramfs host root, where only [`RootSwitch::Chroot`] is possible.
    pub fn root_switch(&self) -> RootSwitch {
        self.root_switch
    }

    /// Host pid of the container's helper process (signals sent to it reach the program).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Name of the container's cgroup (relative to the hierarchy root).
    pub fn cgroup(&self) -> Option<&str> {
        self.res.cgroup.as_deref().map(ContainerCgroup::name)
    }

    /// Host-side veth name and network namespace path (bridged containers only).
    pub fn net_objects(&self) -> Option<(&str, &Path)> {
        self.res
            .net
            .as_ref()
            .map(|n| (n.host_link.as_str(), n.netns.as_path()))
    }

    /// Reader of this container's cgroup usage (memory, CPU time, OOM kills).
    pub fn usage_reader(&self) -> Arc<dyn UsageReader> {
        match &self.reader {
            Some(r) => Arc::new(r.clone()),
            None => Arc::new(cgroup::CgroupReader::empty()),
        }
    }

    /// Sends `signal` to the program (SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 are
    /// forwarded by the helper and the init; SIGKILL kills the helper, whose death SIGKILLs
    /// the init through its parent-death signal, which ends the whole pid namespace).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), signal).map_err(|e| {
            SandboxError::Signal {
                container: self.id.clone(),
                signal: signal.to_string(),
                source: e,
            }
        })
    }

    /// Waits until the program ends (cancel-safe).
    pub async fn wait(&mut self) -> Result<ContainerExit> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        let mut status = None;
        if let Some(lines) = &mut self.lines {
            while let Ok(Some(l)) = lines.next_line().await {
                if let Ok(HelperMsg::Exited(s)) = serde_json::from_str(&l) {
                    status = Some(s);
                }
            }
        }
        self.lines = None;
        if let Some(pidfd) = &self.pidfd {
            // Not our child: the pidfd says when it ended, the init's file how.
            let _ = pidfd.readable().await;
            status = Some(read_exit_file(&self.exit_file));
        }
        let helper = match &mut self.child {
            Some(c) => c.wait().await.ok(),
            None => None,
        };
        let exit = status.unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            match helper.and_then(|h| {
                h.code()
                    .map(ContainerExit::Code)
                    .or(h.signal().map(ContainerExit::Signal))
            }) {
                Some(s) => s,
                None => ContainerExit::Signal(libc::SIGKILL),
            }
        });
        tracing::info!(container.id = %self.id, ?exit, "container ended");
        self.exit = Some(exit);
        Ok(exit)
    }

    /// SIGTERM, then after `grace` SIGKILL to every process of the container; returns how it
    /// ended.
    pub async fn stop(&mut self, grace: Duration) -> Result<ContainerExit> {
        if self.exit.is_none() {
            match self.signal(Signal::SIGTERM) {
                // Already gone: wait() collects the status.
                Err(SandboxError::Signal {
                    source: nix::errno::Errno::ESRCH,
                    ..
                }) => {}
                other => other?,
            }
            if let Ok(r) = tokio::time::timeout(grace, self.wait()).await {
                return r;
            }
            self.kill_all().await?;
        }
        self.wait().await
    }

    async fn kill_all(&self) -> Result<()> {
        match self.res.cgroup.clone() {
            Some(cg) => tokio::task::spawn_blocking(move || cg.kill_all())
                .await
                .map_err(|source| SandboxError::Task {
                    action: "killing the container",
                    source,
                })?,
            None => Ok(()),
        }
    }

    async fn kill_and_reap(&mut self) -> Option<std::process::ExitStatus> {
        let _ = self.kill_all().await;
        let mut c = self.child.take()?;
        let _ = c.start_kill();
        c.wait().await.ok()
    }

    /// Kills what is left of the container and removes its cgroup, veth, namespace, address
    /// lease (into quarantine) and directories.
    pub async fn destroy(mut self) -> Result<()> {
        if self.exit.is_none() {
            self.kill_all().await?;
            self.wait().await?;
        }
        let placeholder = Resources::detached(&self.res);
        let mut res = std::mem::replace(&mut self.res, placeholder);
        drop(self);
        tokio::task::spawn_blocking(move || res.teardown())
            .await
            .map_err(|source| SandboxError::Task {
                action: "tearing the container down",
                source,
            })?
    }
}

impl Resources {
    /// An empty placeholder (nothing to tear down).
    fn detached(r: &Resources) -> Resources {
        Resources {
            id: r.id.clone(),
            inner: r.inner.clone(),
            dir: None,
            cgroup: None,
            net: None,
            address: None,
        }
    }
}

fn remove_cgroup_parent(parent: &str) -> Result<()> {
    let removed = cgroup::remove_parent(parent)?;
    if !removed.is_empty() {
        tracing::debug!(?removed, "removed the empty cgroup parent");
    }
    Ok(())
}

fn cleanup_orphans_blocking(
    cfg: &SandboxConfig,
    keep: &HashSet<ContainerId>,
) -> Result<CleanupReport> {
    let mut report = CleanupReport::default();
    let mut failures = Vec::new();
    let kept = |id: &str| keep.iter().any(|k| k.as_str() == id);
    let workers_dir = cfg.state_dir.join("workers");
    for child in cgroup::list_children(&cfg.cgroup_parent) {
        if kept(&child) {
            continue;
        }
        // A container's run directory is made before its cgroup and removed after it: a
        // cgroup without one in this state directory is another instance's (two poolds
        // may share a cgroup parent by mistake), never removed with its live workers.
        if !workers_dir.join(&child).is_dir() {
            tracing::warn!(cgroup_parent = %cfg.cgroup_parent, cgroup = %child,
                "a cgroup under the parent is not this instance's: left alone (give each poold its own daemon.cgroup_parent)");
            continue;
        }
        let cg = ContainerCgroup::open(&cfg.cgroup_parent, &child);
        match cg.destroy() {
            Ok(()) => report.cgroups.push(cg.name().to_string()),
            Err(e) => failures.push(e),
        }
    }
    if keep.is_empty() {
        if let Err(e) = remove_cgroup_parent(&cfg.cgroup_parent) {
            failures.push(e);
        }
    }
    match net::links_with_prefix(&cfg.link_prefix) {
        Ok(links) => {
            // Only `<prefix><8 hex>`: a shorter prefix never matches a longer one's links.
            let ours = |l: &String| {
                l.strip_prefix(&cfg.link_prefix).is_some_and(|id| {
                    id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !kept(id)
                })
            };
            for l in links.into_iter().filter(ours) {
                match net::delete_link(&l) {
                    Ok(()) => report.links.push(l),
                    Err(e) => failures.push(e),
                }
            }
        }
        Err(e) => failures.push(e),
    }
    if let Some(b) = cfg.bridge.as_ref().filter(|_| keep.is_empty()) {
        match net::delete_marked_bridges(&bridge_marker(&cfg.state_dir)) {
            Ok(bridges) => report.bridges = bridges,
            Err(e) => failures.push(e),
        }
        if let Err(e) = net::delete_unreachable_route(b.subnet.trunc()) {
            failures.push(e);
        }
        if let Err(e) = firewall::remove(&firewall_table(&cfg.link_prefix)) {
            failures.push(e);
        }
    }
    let list = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for ns in list(&cfg.state_dir.join("netns")) {
        let name = ns
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("poold-") && !kept(&name["poold-".len()..]) {
            match net::delete_netns(&ns) {
                Ok(()) => report.netns.push(ns),
                Err(e) => failures.push(e),
            }
        }
    }
    for d in list(&cfg.state_dir.join("workers")) {
        if d.file_name().is_some_and(|n| kept(&n.to_string_lossy())) {
            continue;
        }
        let _ = nix::mount::umount2(&d.join("merged"), nix::mount::MntFlags::MNT_DETACH);
        match std::fs::remove_dir_all(&d) {
            Ok(()) => report.container_dirs.push(d),
            Err(e) => failures.push(SandboxError::io("remove", &d, e)),
        }
    }
    for d in list(&cfg.image_cache) {
        if d.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(rootfs::TMP_PREFIX))
        {
            match std::fs::remove_dir_all(&d) {
                Ok(()) => report.image_temp_dirs.push(d),
                Err(e) => failures.push(SandboxError::io("remove", &d, e)),
            }
        }
    }
    if !failures.is_empty() {
        return Err(SandboxError::Teardown {
            subject: "orphans".into(),
            failures,
        });
    }
    if report != CleanupReport::default() {
        tracing::info!(?report, "removed orphans of an earlier run");
    }
    Ok(report)
}
