//! One service's pool: the per-slot, per-worker state machine, driven by events (spawned,
//! exited, health results, torn down, commands) and a tick that polls the balancer's stats
//! (one dump per service per tick) and the workers' resource use.
//!
//! The pool task owns all state; slow work (spawn, health probes, waiting for an exit,
//! teardown) runs in small tasks that report back as events. It makes no syscalls itself.

use super::observer::PoolObserver;
use super::status::{
    RecycleReason, ServiceStatus, SlotState, SlotStatus, WorkerState, WorkerStatus,
};
use crate::balancer::{BackendStats, Balancer, BalancerError, ClientPolicy, VirtualService};
use crate::config::{HumanDuration, OnOom, ServiceConfig};
use crate::health::{HealthChecker, HealthFailure, ProbeError};
use crate::runtime::{
    slot_field, spare_field, AdoptedWorker, ExitStatus, OperatorState, ResourceUsage, RuntimeError,
    SpawnedWorker, StopSignal, WorkerId, WorkerRuntime, WorkerSpec, SPARE_SLOT,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// Failures in a row after which a backing-off slot shows as crash-loop.
pub const CRASH_LOOP_FAILURES: u32 = 3;

/// Events handled together before one pass over the pool.
const EVENT_BATCH: usize = 256;

/// Worker ids are unique across every pool of the daemon.
static NEXT_WORKER_ID: AtomicU64 = AtomicU64::new(1);

/// Knobs that are not user configuration.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// How often stats, usage and deadlines are looked at.
    pub tick: Duration,
    /// After weight 0, connections already being scheduled may still arrive (IPVS counts a
    /// new connection as inactive until established); wait this long before trusting
    /// ActiveConn == 0.
    pub drain_settle: Duration,
    /// Seed of the lifetime jitter.
    pub seed: u64,
    /// Workers the host's subnet holds across every service (`poolctl scale` stays below).
    pub worker_capacity: u64,
    /// Spawns of empty slots in flight at once. A thousand slots spawned together make
    /// every spawn wait on the others (veth creation, rtnl) until start_timeout passes.
    pub max_spawning: usize,
    /// Ready workers whose resource usage (cgroup files) is read per tick, in turn: the
    /// tick's work stays bounded however large the pool is.
    pub usage_reads_per_tick: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            drain_settle: Duration::from_secs(1),
            seed: fastrand::u64(..),
            worker_capacity: u64::MAX,
            max_spawning: 16,
            usage_reads_per_tick: 64,
        }
    }
}

/// Requests to a running pool.
#[derive(Debug)]
pub enum PoolCommand {
    /// Planned recycle of one slot or of all; `done` fires when the old workers are gone and
    /// their slots are ready again.
    Recycle {
        slot: Option<u32>,
        reply: oneshot::Sender<Result<Vec<u32>, PoolError>>,
        done: Option<oneshot::Sender<()>>,
    },
    /// Stop taking connections, drain and stop every worker, remove the service from the
    /// balancer.
    Shutdown { done: oneshot::Sender<()> },
    /// A shutdown under way stops waiting for connections: every draining worker is
    /// stopped now, as at its drain timeout (the operator's second SIGTERM or Ctrl-C).
    HurryShutdown,
    /// An upgrade hands the workers to a new poold: the pool does nothing at all (no probe,
    /// no recycle, no teardown) until `thaw` fires or is dropped; `frozen` says it stopped.
    Freeze {
        frozen: oneshot::Sender<()>,
        thaw: oneshot::Receiver<()>,
    },
    /// Take the service out of (or back into) the fleet: only what the readiness endpoint
    /// says changes; the workers keep serving. `operator`: asked by an operator (kept in
    /// the state record), not by poold's own shutdown.
    SetDrained { drained: bool, operator: bool },
    /// A reloaded config for this service: in-place keys apply at once, the pool resizes
    /// to its `workers`; with `roll` (a key that changes what a worker is) the generation
    /// goes up and every worker is replaced by a surge recycle. Replies the generation.
    Reconfigure {
        config: Arc<ServiceConfig>,
        roll: bool,
        reply: oneshot::Sender<Result<u64, PoolError>>,
    },
    /// Replace every worker with one on `rootfs` (a new generation); the first worker of it
    /// that fails rolls the replaced ones back. `done` says how it ended.
    Deploy {
        rootfs: String,
        reply: oneshot::Sender<Result<u64, PoolError>>,
        done: oneshot::Sender<Result<(), DeployFailure>>,
    },
    /// Take one slot's worker out of rotation (weight 0, kept alive, not replaced) or put it
    /// back.
    DrainSlot {
        slot: u32,
        drained: bool,
        reply: oneshot::Sender<Result<WorkerId, PoolError>>,
    },
    /// Change the desired worker count until the next reload; `others` is what the other
    /// services of the host want, for the subnet's capacity.
    Scale {
        workers: u32,
        others: u64,
        reply: oneshot::Sender<Result<ScaleChange, PoolError>>,
    },
}

/// Why a deploy stopped and was rolled back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "deploy of generation {generation} failed {} (worker {worker}): {failure}; \
     rolled back to generation {rolled_back_to}, the previous workers keep serving",
    slot.map_or("in a warm spare".to_owned(), |slot| format!("at slot {slot}"))
)]
pub struct DeployFailure {
    pub generation: u64,
    /// The slot whose new worker failed; none for a warm spare.
    pub slot: Option<u32>,
    pub worker: WorkerId,
    /// The slot's failure as status shows it.
    pub failure: String,
    pub rolled_back_to: u64,
}

/// What `poolctl scale` changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleChange {
    pub from: u32,
    pub to: u32,
    /// The configured count.
    pub configured: u32,
}

/// Why a pool refused a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("service {service} is not running")]
    NotRunning { service: String },
    #[error("service {service} stopped")]
    Stopped { service: String },
    #[error("service {service} is shutting down")]
    ShuttingDown { service: String },
    #[error(
        "service {service}: a deploy or reload is still rolling out generation {generation}; \
         try again when it has finished"
    )]
    RolloutInFlight { service: String, generation: u64 },
    #[error("service {service} has slots 0 to {last}")]
    NoSuchSlot {
        service: String,
        slot: u32,
        last: u32,
    },
    #[error("{service}/{slot} is already drained")]
    SlotAlreadyDrained { service: String, slot: u32 },
    #[error("{service}/{slot} is not drained")]
    SlotNotDrained { service: String, slot: u32 },
    #[error("{service}/{slot} has no ready worker to drain (slot is {state})")]
    SlotNotReady {
        service: String,
        slot: u32,
        state: SlotState,
    },
    #[error("{service}/{slot} is being recycled; try again when it is done")]
    SlotBusy { service: String, slot: u32 },
    #[error("{service}: {workers} workers is out of range: from 1 to {max} (the subnet holds {capacity} workers, other services want {others}, this one's warm spares {spares})")]
    ScaleOutOfRange {
        service: String,
        workers: u32,
        max: u64,
        capacity: u64,
        others: u64,
        spares: u64,
    },
}

/// A handle to a running pool.
#[derive(Clone, Debug)]
pub struct PoolHandle {
    pub name: String,
    pub commands: mpsc::Sender<PoolCommand>,
    pub status: watch::Receiver<ServiceStatus>,
}

impl PoolHandle {
    /// Queues a planned recycle; returns the slots queued and a receiver that fires when done.
    pub async fn recycle(
        &self,
        slot: Option<u32>,
    ) -> Result<(Vec<u32>, oneshot::Receiver<()>), PoolError> {
        let (reply, answer) = oneshot::channel();
        let (done, finished) = oneshot::channel();
        self.commands
            .send(PoolCommand::Recycle {
                slot,
                reply,
                done: Some(done),
            })
            .await
            .map_err(|_| PoolError::NotRunning {
                service: self.name.clone(),
            })?;
        let slots = answer.await.map_err(|_| PoolError::Stopped {
            service: self.name.clone(),
        })??;
        Ok((slots, finished))
    }

    /// Marks the service drained (or not) for the readiness endpoint.
    pub async fn set_drained(&self, drained: bool) -> Result<(), String> {
        self.commands
            .send(PoolCommand::SetDrained {
                drained,
                operator: true,
            })
            .await
            .map_err(|_| format!("service {} is not running", self.name))
    }

    /// Readiness 503 before a stop: not an operator's drain, so a poold killed during its
    /// stop does not come back drained.
    pub async fn drain_for_shutdown(&self) -> Result<(), String> {
        self.commands
            .send(PoolCommand::SetDrained {
                drained: true,
                operator: false,
            })
            .await
            .map_err(|_| format!("service {} is not running", self.name))
    }

    /// Applies a reloaded config (see [`PoolCommand::Reconfigure`]); returns the generation.
    pub async fn reconfigure(
        &self,
        config: Arc<ServiceConfig>,
        roll: bool,
    ) -> Result<u64, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.ask(PoolCommand::Reconfigure {
            config,
            roll,
            reply,
        })
        .await?;
        answer.await.map_err(|_| PoolError::Stopped {
            service: self.name.clone(),
        })?
    }

    /// Drains one slot's worker (weight 0, kept alive) or undrains it; returns its id.
    pub async fn drain_slot(&self, slot: u32, drained: bool) -> Result<WorkerId, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.ask(PoolCommand::DrainSlot {
            slot,
            drained,
            reply,
        })
        .await?;
        answer.await.map_err(|_| PoolError::Stopped {
            service: self.name.clone(),
        })?
    }

    /// Starts a deploy of `rootfs`; returns its generation and a receiver for how it ended.
    pub async fn deploy(
        &self,
        rootfs: String,
    ) -> Result<(u64, oneshot::Receiver<Result<(), DeployFailure>>), PoolError> {
        let (reply, answer) = oneshot::channel();
        let (done, ended) = oneshot::channel();
        self.ask(PoolCommand::Deploy {
            rootfs,
            reply,
            done,
        })
        .await?;
        let generation = answer.await.map_err(|_| PoolError::Stopped {
            service: self.name.clone(),
        })??;
        Ok((generation, ended))
    }

    /// Changes the desired worker count; `others`: what the host's other services want.
    pub async fn scale(&self, workers: u32, others: u64) -> Result<ScaleChange, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.ask(PoolCommand::Scale {
            workers,
            others,
            reply,
        })
        .await?;
        answer.await.map_err(|_| PoolError::Stopped {
            service: self.name.clone(),
        })?
    }

    async fn ask(&self, command: PoolCommand) -> Result<(), PoolError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| PoolError::NotRunning {
                service: self.name.clone(),
            })
    }

    /// Ends the waits of a shutdown under way: draining workers stop now. Does nothing to
    /// a pool that is not shutting down.
    pub async fn hurry_shutdown(&self) {
        let _ = self.commands.send(PoolCommand::HurryShutdown).await;
    }

    /// Freezes the pool (see [`PoolCommand::Freeze`]) and waits until it is frozen; it thaws
    /// when the returned sender fires or is dropped.
    pub async fn freeze(&self) -> Option<oneshot::Sender<()>> {
        let (frozen, stopped) = oneshot::channel();
        let (thaw_tx, thaw) = oneshot::channel();
        self.commands
            .send(PoolCommand::Freeze { frozen, thaw })
            .await
            .ok()?;
        stopped.await.ok()?;
        Some(thaw_tx)
    }

    /// Stops the pool gracefully and waits until every worker is gone (at most about
    /// drain_timeout + stop_timeout).
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self
            .commands
            .send(PoolCommand::Shutdown { done })
            .await
            .is_ok()
        {
            let _ = finished.await;
        }
    }
}

#[derive(Debug)]
enum Event {
    Spawned {
        id: WorkerId,
        result: Result<SpawnedWorker, RuntimeError>,
    },
    Exited {
        id: WorkerId,
        status: ExitStatus,
    },
    Health {
        id: WorkerId,
        result: Result<(), HealthFailure>,
    },
    TornDown {
        id: WorkerId,
    },
}

/// One worker as the pool tracks it. What only some states have lives in its [`Phase`].
#[derive(Debug)]
struct Worker {
    id: WorkerId,
    slot: u32,
    phase: Phase,
    /// When it was asked for; once spawned, when the spawn finished (start_timeout runs
    /// from there: a spawn queued behind others is not the worker's fault).
    spawned_at: Instant,
    /// Balancer counters from the last tick (None: missing from the dump, never "drained").
    stats: Option<BackendStats>,
    usage: ResourceUsage,
    /// Why and since when the worker is being replaced, for the observer's recycle
    /// duration: set once (a retried recycle keeps its first start), from Ready (surge) on.
    recycle_started: Option<(RecycleReason, Instant)>,
    /// The pool's generation when it was spawned.
    generation: u64,
}

/// Where a spawned worker is.
#[derive(Clone, Copy, Debug)]
struct Spawned {
    addr: SocketAddr,
    pid: u32,
    chroot: bool,
}

/// Health probing of a starting or ready worker.
#[derive(Clone, Copy, Debug)]
struct Probe {
    in_flight: bool,
    next_at: Instant,
    /// The balancer's `out_bytes` of the worker when its previous probe ended.
    out_bytes: Option<u64>,
}

/// The state of a worker with the data that state has (see ARCHITECTURE.md, "Slot and
/// worker states"). [`WorkerState`] is what status shows of it.
#[derive(Debug)]
enum Phase {
    /// The runtime is spawning it: no address yet.
    Spawning,
    /// Spawned, probed, not yet healthy; not in the balancer.
    Starting {
        spawned: Spawned,
        probe: Probe,
        ok_streak: u32,
    },
    /// Healthy and in the balancer with the service's weight.
    Ready {
        spawned: Spawned,
        probe: Probe,
        fail_streak: u32,
        ready_at: Instant,
        /// Lifetime deadline (jittered).
        retire_at: Option<Instant>,
        /// OOM kills seen at the first usage reading.
        oom_baseline: Option<u64>,
        /// A surge replacement is starting for this reason; the worker still serves.
        replacing: Option<RecycleReason>,
        /// Out of rotation by the operator (weight 0): kept alive and probed, never
        /// replaced for its lifetime, connections or memory; a recycle or undrain ends it.
        drained: bool,
    },
    /// Weight 0, waiting for its active connections to end.
    Draining {
        spawned: Spawned,
        reason: RecycleReason,
        /// Before this, a new connection may still be on its way (not trusted as drained).
        settled_at: Instant,
        deadline: Instant,
    },
    /// SIGTERM sent; SIGKILL at `kill_at` (None once sent).
    Stopping {
        spawned: Spawned,
        reason: RecycleReason,
        in_balancer: bool,
        kill_at: Option<Instant>,
    },
    /// Exited; being torn down.
    Gone {
        spawned: Spawned,
        reason: Option<RecycleReason>,
    },
}

impl Phase {
    fn state(&self) -> WorkerState {
        match self {
            Self::Spawning | Self::Starting { .. } => WorkerState::Starting,
            Self::Ready { drained: true, .. } => WorkerState::Drained,
            Self::Ready { .. } => WorkerState::Ready,
            Self::Draining { .. } => WorkerState::Draining,
            Self::Stopping { .. } => WorkerState::Stopping,
            Self::Gone { .. } => WorkerState::Gone,
        }
    }

    fn spawned(&self) -> Option<Spawned> {
        match self {
            Self::Spawning => None,
            Self::Starting { spawned, .. }
            | Self::Ready { spawned, .. }
            | Self::Draining { spawned, .. }
            | Self::Stopping { spawned, .. }
            | Self::Gone { spawned, .. } => Some(*spawned),
        }
    }

    /// Why the worker is being replaced, drained or stopped.
    fn reason(&self) -> Option<RecycleReason> {
        match self {
            Self::Spawning | Self::Starting { .. } => None,
            Self::Ready { replacing, .. } => *replacing,
            Self::Draining { reason, .. } | Self::Stopping { reason, .. } => Some(*reason),
            Self::Gone { reason, .. } => *reason,
        }
    }

    fn in_balancer(&self) -> bool {
        match self {
            Self::Ready { .. } | Self::Draining { .. } => true,
            Self::Stopping { in_balancer, .. } => *in_balancer,
            Self::Spawning | Self::Starting { .. } | Self::Gone { .. } => false,
        }
    }

    fn probe_mut(&mut self) -> Option<&mut Probe> {
        match self {
            Self::Starting { probe, .. } | Self::Ready { probe, .. } => Some(probe),
            _ => None,
        }
    }
}

impl Worker {
    fn state(&self) -> WorkerState {
        match self.phase {
            Phase::Ready { .. } if self.is_spare() => WorkerState::Spare,
            _ => self.phase.state(),
        }
    }

    /// A warm spare: no slot yet (see `spares.rs`).
    fn is_spare(&self) -> bool {
        self.slot == SPARE_SLOT
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// The worker serving this slot (or starting to).
    current: Option<WorkerId>,
    recycle: Recycle,
    failures: u32,
    restart_at: Option<Instant>,
    last_error: Option<SlotFailure>,
    /// Workers of this slot replaced so far, and why the last one was.
    recycles: u32,
    last_recycle: Option<RecycleReason>,
}

/// Where a slot is in a planned recycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Recycle {
    #[default]
    Idle,
    /// Queued: waiting for a permit (max_concurrent_recycles), for its worker to be up, or
    /// for a retry after a failed surge replacement.
    Pending(RecycleReason),
    /// In flight (counts against max_concurrent_recycles); with surge, the replacement
    /// while it starts.
    Running { replacement: Option<WorkerId> },
}

impl Recycle {
    fn replacement(self) -> Option<WorkerId> {
        match self {
            Self::Running { replacement } => replacement,
            Self::Idle | Self::Pending(_) => None,
        }
    }

    fn is_running(self) -> bool {
        matches!(self, Self::Running { .. })
    }
}

/// Why a slot lost its worker and backs off; kept typed until status prints it.
#[derive(Debug, thiserror::Error)]
enum SlotFailure {
    #[error("spawn failed: {0}")]
    Spawn(RuntimeError),
    #[error("worker {worker} {status} while {state}{}", last_words.as_ref().map(|line| format!(": {line}")).unwrap_or_default())]
    Exited {
        worker: WorkerId,
        status: ExitStatus,
        state: WorkerState,
        /// The last line it wrote, if known.
        last_words: Option<String>,
    },
    #[error("worker {worker} not healthy within start_timeout {timeout}")]
    StartTimeout {
        worker: WorkerId,
        timeout: HumanDuration,
    },
    #[error("worker {worker} unhealthy: {reason}")]
    Unhealthy {
        worker: WorkerId,
        reason: ProbeError,
    },
    #[error("balancer: {0}")]
    Balancer(BalancerError),
}

/// A deploy under way: what a failure of its generation rolls back to.
#[derive(Debug)]
struct Deploy {
    generation: u64,
    previous: Arc<ServiceConfig>,
    previous_generation: u64,
    previous_rootfs: Option<String>,
    done: Option<oneshot::Sender<Result<(), DeployFailure>>>,
}

#[derive(Debug)]
struct RecycleWaiter {
    old_workers: Vec<(u32, WorkerId)>,
    done: oneshot::Sender<()>,
}

/// The pool task's state.
pub struct ServicePool {
    config: Arc<ServiceConfig>,
    service: VirtualService,
    options: PoolOptions,
    /// Slots to keep filled: `config.workers` unless `poolctl scale` changed it. Slots at
    /// or beyond it are being scaled away and go once their workers are gone.
    desired: u32,
    runtime: Arc<dyn WorkerRuntime>,
    balancer: Arc<dyn Balancer>,
    health: Arc<dyn HealthChecker>,
    slots: Vec<Slot>,
    workers: BTreeMap<WorkerId, Worker>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    commands: mpsc::Receiver<PoolCommand>,
    status: watch::Sender<ServiceStatus>,
    waiters: Vec<RecycleWaiter>,
    rng: fastrand::Rng,
    shutdown: Option<Vec<oneshot::Sender<()>>>,
    observer: Arc<dyn PoolObserver>,
    /// Which config or deploy new workers get; workers of another one are rolled.
    generation: u64,
    deploy: Option<Deploy>,
    /// The root a deploy put in place of the config's, until the next reload.
    deployed_rootfs: Option<String>,
    /// Due probes by time. An entry whose worker no longer waits for a probe at that time
    /// is stale and skipped when it comes up; each probe costs O(log n), not a pass over
    /// the pool.
    probe_queue: BTreeSet<(Instant, WorkerId)>,
    /// The last worker whose usage was read; the next tick goes on after it.
    usage_cursor: WorkerId,
    /// Spreads the probes of ready workers over the interval (apart from `rng`, so the
    /// lifetime jitter does not depend on probing).
    probe_rng: fastrand::Rng,
    /// The earliest drain settle to act on at once rather than at the next tick (a
    /// recycle's old worker stops as soon as it may).
    wake_at: Option<Instant>,
    /// The operator state last kept in the runtime's record (saved again when it changes).
    operator_saved: std::sync::Mutex<OperatorState>,
    /// `poolctl drain SERVICE` (the readiness drain before a stop is not the operator's).
    operator_drained: bool,
    /// Failures of warm spares and when the next may start (`spares.rs`).
    spares: spares::SpareBackoff,
}

impl std::fmt::Debug for ServicePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServicePool")
            .field("service", &self.service)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl ServicePool {
    /// Creates the virtual service in the balancer and starts the pool task, which reports
    /// its events to `observer` (`NoObserver`: to nobody).
    pub async fn start(
        config: Arc<ServiceConfig>,
        runtime: Arc<dyn WorkerRuntime>,
        balancer: Arc<dyn Balancer>,
        health: Arc<dyn HealthChecker>,
        options: PoolOptions,
        observer: Arc<dyn PoolObserver>,
    ) -> Result<PoolHandle, BalancerError> {
        let service = VirtualService {
            name: config.name.clone(),
            listen: config.listen,
            scheduler: config.scheduler.clone(),
            clients: client_policy(&config),
        };
        balancer.ensure_service(&service).await?;
        // Before any pool spawns: no new worker may get an adopted worker's id.
        if let Some(highest) = runtime.highest_adopted() {
            NEXT_WORKER_ID.fetch_max(highest.0 + 1, Ordering::Relaxed);
        }
        let mut adopted = runtime.take_adopted(&config);
        adopted.sort_by_key(|a| a.id);
        // What operators changed before a restart or an upgrade holds on.
        let restored = runtime.take_operator_state(&config.name);
        let operator = restored.clone().unwrap_or_default();
        reconcile_backends(
            &*balancer,
            &service,
            &config,
            &adopted,
            &operator.drained_workers,
        )
        .await;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands) = mpsc::channel(16);
        let initial = ServiceStatus {
            name: config.name.clone(),
            listen: config.listen,
            balancer: balancer.kind(),
            desired: config.workers,
            scaled_from: None,
            ready: 0,
            spares: 0,
            wanted_spares: config.recycle.spares,
            min_ready: config.min_ready.unwrap_or(config.workers),
            drained: false,
            generation: 1,
            deployed_rootfs: None,
            rolling_out: false,
            slots: Vec::new(),
            workers: Vec::new(),
        };
        let (status, status_rx) = watch::channel(initial);
        let probe_seed = options.seed.wrapping_add(1);
        let mut pool = ServicePool {
            slots: (0..config.workers).map(|_| Slot::default()).collect(),
            rng: fastrand::Rng::with_seed(options.seed),
            desired: config.workers,
            config,
            service,
            options,
            runtime,
            balancer,
            health,
            workers: BTreeMap::new(),
            events_tx,
            events_rx,
            commands,
            status,
            waiters: Vec::new(),
            shutdown: None,
            observer,
            generation: 1,
            deploy: None,
            deployed_rootfs: None,
            probe_queue: BTreeSet::new(),
            usage_cursor: WorkerId(0),
            probe_rng: fastrand::Rng::with_seed(probe_seed),
            wake_at: None,
            operator_saved: std::sync::Mutex::default(),
            operator_drained: false,
            spares: spares::SpareBackoff::default(),
        };
        if let Some(restored) = &restored {
            info!(service = %pool.service.name, drained = restored.drained, scaled_to = ?restored.scaled_to,
                drained_workers = ?restored.drained_workers, "operator state restored");
            // Before adopting: the workers of slots a scale-up added are kept, not displaced.
            if let Some(workers) = restored.scaled_to {
                pool.set_desired(workers).await;
            }
            pool.operator_drained = restored.drained;
            pool.status
                .send_modify(|status| status.drained = restored.drained);
        }
        for displaced in pool.adopt(&adopted, &operator.drained_workers) {
            pool.retire(displaced, RecycleReason::Manual).await;
        }
        let name = pool.config.name.clone();
        tokio::spawn(pool.run());
        Ok(PoolHandle {
            name,
            commands: commands_tx,
            status: status_rx,
        })
    }

    /// Takes over the workers an earlier run left (sorted by id): each is Ready at once
    /// (it served until the restart; probes go on as for any ready worker) and waited for.
    /// The newest of a slot serves it; returns the others and those of slots beyond the
    /// count, to be drained and stopped. One that does not match the config is of
    /// generation 0, so the next advance rolls it.
    /// Those in `drained` stay drained (weight 0) as `poolctl drain SERVICE/SLOT` left them.
    fn adopt(&mut self, adopted: &[AdoptedWorker], drained: &BTreeSet<WorkerId>) -> Vec<WorkerId> {
        let mut displaced = Vec::new();
        let now = Instant::now();
        for worker in adopted {
            NEXT_WORKER_ID.fetch_max(worker.id.0 + 1, Ordering::Relaxed);
            let addr = SocketAddr::new(worker.addr, self.config.port);
            let retire_at = self.lifetime().map(|lifetime| now + lifetime);
            self.workers.insert(
                worker.id,
                Worker {
                    id: worker.id,
                    slot: worker.slot,
                    phase: Phase::Ready {
                        spawned: Spawned {
                            addr,
                            pid: worker.pid,
                            chroot: false,
                        },
                        probe: Probe {
                            in_flight: false,
                            next_at: now,
                            out_bytes: None,
                        },
                        fail_streak: 0,
                        ready_at: now,
                        retire_at,
                        oom_baseline: None,
                        replacing: None,
                        drained: drained.contains(&worker.id),
                    },
                    spawned_at: now,
                    stats: None,
                    usage: ResourceUsage::default(),
                    recycle_started: None,
                    generation: if worker.matches_config {
                        self.generation
                    } else {
                        0
                    },
                },
            );
            info!(service = %self.service.name, worker.slot = slot_field(worker.slot),
                worker.spare = spare_field(worker.slot), worker.id = %worker.id, worker.addr = %addr, worker.pid = worker.pid, matches_config = worker.matches_config,
                "worker adopted");
            match self.slots.get_mut(worker.slot as usize) {
                Some(slot) => displaced.extend(slot.current.replace(worker.id)),
                // A spare stays a spare (tend_spares stops those beyond the count).
                None if worker.slot == SPARE_SLOT => {}
                None => displaced.push(worker.id),
            }
            let (id, runtime, events) = (worker.id, self.runtime.clone(), self.events_tx.clone());
            tokio::spawn(async move {
                let status = runtime.wait(id).await;
                let _ = events.send(Event::Exited { id, status });
            });
        }
        displaced
    }

    async fn run(mut self) {
        info!(service = %self.service.name, listen = %self.service.listen, workers = self.config.workers, "pool starting");
        let mut tick = tokio::time::interval(self.options.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut handles_alive = true;
        loop {
            // Wake up when the next probe is due, so a health interval shorter than the
            // tick is kept (a new worker whose first probe failed would otherwise wait for
            // the next tick).
            let next_probe = self.probe_queue.first().map(|(at, _)| *at);
            let changed = tokio::select! {
                Some(event) = self.events_rx.recv() => {
                    let mut changed = self.on_event(event).await;
                    // A burst (many probes ending together) makes one pass, not one each.
                    for _ in 0..EVENT_BATCH {
                        let Ok(event) = self.events_rx.try_recv() else { break };
                        changed |= self.on_event(event).await;
                    }
                    changed
                }
                () = sleep_until_some(next_probe) => false,
                () = sleep_until_some(self.wake_at) => {
                    self.wake_at = None;
                    true
                }
                command = self.commands.recv(), if handles_alive => {
                    match command {
                        Some(command) => self.on_command(command).await,
                        // Every handle dropped: nobody can stop us gracefully any more; do
                        // it now.
                        None => {
                            handles_alive = false;
                            self.begin_shutdown(None).await;
                        }
                    }
                    true
                }
                _ = tick.tick() => {
                    self.on_tick().await;
                    true
                }
            };
            self.start_due_probes(Instant::now());
            // A probe that passed (the common case) changes nothing a pass over the pool
            // would act on: the pool's work per health interval stays linear in its size.
            if changed {
                self.advance().await;
            }
            if self.shutdown.is_some() && self.workers.is_empty() {
                break;
            }
        }
        if let Err(error) = self.balancer.remove_service(&self.service).await {
            warn!(service = %self.service.name, %error, "removing the virtual service failed");
        }
        self.publish();
        info!(service = %self.service.name, "pool stopped");
        for done in self.shutdown.take().unwrap_or_default() {
            let _ = done.send(());
        }
    }

    // ----- events ------------------------------------------------------------------------

    /// Handles one event; false when it changed nothing that [`Self::advance`] acts on.
    async fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Spawned { id, result } => self.on_spawned(id, result).await,
            Event::Exited { id, status } => self.on_exited(id, status).await,
            Event::Health { id, result } => return self.on_health(id, result).await,
            Event::TornDown { id } => {
                if let Some(worker) = self.workers.remove(&id) {
                    debug!(service = %self.service.name, worker.slot = slot_field(worker.slot), worker.spare = spare_field(worker.slot), worker.id = %id, "worker torn down");
                }
            }
        }
        true
    }

    async fn on_spawned(&mut self, id: WorkerId, result: Result<SpawnedWorker, RuntimeError>) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        let slot = worker.slot;
        match result {
            Ok(spawned) => {
                let addr = SocketAddr::new(spawned.addr, self.config.port);
                let now = Instant::now();
                worker.spawned_at = now;
                self.probe_queue.insert((now, id));
                worker.phase = Phase::Starting {
                    spawned: Spawned {
                        addr,
                        pid: spawned.pid,
                        chroot: spawned.chroot,
                    },
                    probe: Probe {
                        in_flight: false,
                        next_at: now,
                        out_bytes: None,
                    },
                    ok_streak: 0,
                };
                info!(service = %self.service.name, worker.slot = slot_field(slot), worker.spare = spare_field(slot), worker.id = %id, worker.addr = %addr, worker.pid = spawned.pid, "worker spawned");
                let runtime = self.runtime.clone();
                let events = self.events_tx.clone();
                tokio::spawn(async move {
                    let status = runtime.wait(id).await;
                    let _ = events.send(Event::Exited { id, status });
                });
                if self.shutdown.is_some() {
                    self.begin_stop(id, RecycleReason::Shutdown);
                } else if slot != SPARE_SLOT && self.slot_removed(slot) {
                    // Spawned for a slot that was scaled away meanwhile.
                    self.begin_stop(id, RecycleReason::Manual);
                }
            }
            Err(error) => {
                // The runtime cleans up after a failed spawn; there is nothing to tear down.
                // Forgotten after slot_failed, which looks at the worker's generation.
                self.slot_failed(slot, id, SlotFailure::Spawn(error));
                self.workers.remove(&id);
            }
        }
    }

    async fn on_exited(&mut self, id: WorkerId, status: ExitStatus) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        // Only a spawned worker is waited for.
        let Some(spawned) = worker.phase.spawned() else {
            return;
        };
        let (slot, previous) = (worker.slot, worker.state());
        let in_balancer = worker.phase.in_balancer();
        worker.phase = Phase::Gone {
            spawned,
            reason: worker.phase.reason(),
        };
        if let Some((reason, since)) = worker.recycle_started.take() {
            self.observer
                .recycle_finished(id, reason, Instant::now().duration_since(since));
        }
        self.observer.worker_exited(id, status);
        let expected = previous == WorkerState::Stopping;
        if expected {
            info!(service = %self.service.name, worker.slot = slot_field(slot), worker.spare = spare_field(slot), worker.id = %id, %status, "worker stopped");
        } else {
            warn!(service = %self.service.name, worker.slot = slot_field(slot), worker.spare = spare_field(slot), worker.id = %id, %status, state = %previous, "worker exited unexpectedly");
        }
        // Before teardown, which forgets the worker.
        let last_words = self.runtime.last_output(id);
        if !expected
            && matches!(
                previous,
                WorkerState::Starting | WorkerState::Ready | WorkerState::Spare
            )
        {
            self.observer.worker_crashed(id, status);
            let failure = SlotFailure::Exited {
                worker: id,
                status,
                state: previous,
                last_words,
            };
            self.slot_failed(slot, id, failure);
            // Capacity first: a ready spare takes the slot before the dead worker's
            // backend is removed and its container torn down.
            self.promote_spares().await;
        }
        if in_balancer {
            if let Err(error) = self
                .balancer
                .remove_backend(&self.service, spawned.addr)
                .await
            {
                error!(service = %self.service.name, worker.id = %id, %error, "removing the backend failed");
            }
        }
        self.teardown(id);
    }

    /// A probe's result; true when the worker changed state.
    async fn on_health(&mut self, id: WorkerId, result: Result<(), HealthFailure>) -> bool {
        let Some(worker) = self.workers.get_mut(&id) else {
            return false;
        };
        let out_bytes = worker.stats.map(|stats| stats.out_bytes);
        let mut previous_out_bytes = None;
        if let Some(probe) = worker.phase.probe_mut() {
            probe.in_flight = false;
            probe.next_at = Instant::now() + self.config.health.interval.get();
            previous_out_bytes = std::mem::replace(&mut probe.out_bytes, out_bytes);
            self.probe_queue.insert((probe.next_at, id));
        }
        let answering_clients = matches!(worker.phase, Phase::Ready { .. })
            && out_bytes
                .zip(previous_out_bytes)
                .is_some_and(|(now, before)| now > before);
        let result = match result {
            // poold's own shortage (EMFILE...): no verdict on the worker either way.
            Err(HealthFailure::Local(reason)) => {
                warn!(service = %self.service.name, worker.id = %id, %reason, "health check could not run; not counted against the worker");
                return false;
            }
            // A ready worker that answered its clients since the previous probe is slow (a
            // host starved of CPU), not dead: killing it would only add a replacement's start
            // to the load and cut its open connections at the drain timeout. A refusal or a
            // wrong answer always counts; so does a timeout while nothing flows.
            Err(HealthFailure::Worker(ProbeError::Timeout { timeout })) if answering_clients => {
                self.observer.health_check_failed(id);
                warn!(service = %self.service.name, worker.slot = slot_field(worker.slot), worker.spare = spare_field(worker.slot), worker.id = %id, %timeout, "health check timed out, but the worker is answering its clients; not counted against it");
                return false;
            }
            Err(HealthFailure::Worker(reason)) => Err(reason),
            Ok(()) => Ok(()),
        };
        let slot = worker.slot;
        match (&mut worker.phase, result) {
            (Phase::Starting { ok_streak, .. }, Ok(())) => {
                *ok_streak += 1;
                if *ok_streak >= self.config.health.healthy_threshold {
                    self.become_ready(id).await;
                    return true;
                }
            }
            (Phase::Starting { ok_streak, .. }, Err(_)) => *ok_streak = 0,
            (Phase::Ready { fail_streak, .. }, Ok(())) => *fail_streak = 0,
            (
                Phase::Ready {
                    fail_streak,
                    drained,
                    ..
                },
                Err(reason),
            ) => {
                *fail_streak += 1;
                let streak = *fail_streak;
                let drained = *drained;
                self.observer.health_check_failed(id);
                warn!(service = %self.service.name, worker.slot = slot_field(slot), worker.spare = spare_field(slot), worker.id = %id, %reason, streak, drained, "health check failed");
                // A drained worker serves nobody and is kept for inspection: its failures
                // show in the log and the metrics, but only a recycle or undrain ends it.
                if !drained && streak >= self.config.health.unhealthy_threshold {
                    self.unhealthy(id, reason).await;
                    return true;
                }
            }
            _ => {}
        }
        false
    }

    async fn on_command(&mut self, command: PoolCommand) {
        match command {
            PoolCommand::Recycle { slot, reply, done } => {
                let result = self.manual_recycle(slot, done);
                let _ = reply.send(result);
            }
            PoolCommand::Shutdown { done } => self.begin_shutdown(Some(done)).await,
            PoolCommand::Freeze { frozen, thaw } => {
                let _ = frozen.send(());
                let _ = thaw.await;
                info!(service = %self.service.name, "pool thawed: supervising again");
            }
            PoolCommand::HurryShutdown => self.hurry_shutdown(),
            PoolCommand::SetDrained { drained, operator } => {
                info!(service = %self.service.name, drained, operator, "readiness drain changed");
                self.status.send_modify(|status| status.drained = drained);
                if operator {
                    self.operator_drained = drained;
                    self.save_operator_state();
                }
            }
            PoolCommand::Reconfigure {
                config,
                roll,
                reply,
            } => {
                let result = self.reconfigure(config, roll).await;
                let _ = reply.send(result);
            }
            PoolCommand::Deploy {
                rootfs,
                reply,
                done,
            } => {
                let _ = reply.send(self.start_deploy(rootfs, done));
            }
            PoolCommand::DrainSlot {
                slot,
                drained,
                reply,
            } => {
                let result = self.drain_slot(slot, drained).await;
                let _ = reply.send(result);
            }
            PoolCommand::Scale {
                workers,
                others,
                reply,
            } => {
                let result = self.scale(workers, others).await;
                let _ = reply.send(result);
            }
        }
    }

    // ----- reload and deploy -------------------------------------------------------------

    /// Workers of another generation that still serve or start (or a deploy not finished).
    fn rolling_out(&self) -> bool {
        self.deploy.is_some()
            || self.workers.values().any(|w| {
                w.generation != self.generation
                    && matches!(
                        w.phase,
                        Phase::Spawning | Phase::Starting { .. } | Phase::Ready { .. }
                    )
            })
    }

    fn refuse_busy(&self) -> Result<(), PoolError> {
        let service = self.service.name.clone();
        if self.shutdown.is_some() {
            return Err(PoolError::ShuttingDown { service });
        }
        if self.rolling_out() {
            return Err(PoolError::RolloutInFlight {
                service,
                generation: self.generation,
            });
        }
        Ok(())
    }

    fn check_slot(&self, slot: u32) -> Result<(), PoolError> {
        if self.shutdown.is_some() {
            return Err(PoolError::ShuttingDown {
                service: self.service.name.clone(),
            });
        }
        if slot >= self.desired {
            return Err(PoolError::NoSuchSlot {
                service: self.service.name.clone(),
                slot,
                last: self.desired - 1,
            });
        }
        Ok(())
    }

    async fn reconfigure(
        &mut self,
        config: Arc<ServiceConfig>,
        roll: bool,
    ) -> Result<u64, PoolError> {
        self.refuse_busy()?;
        // A reload ends a deploy: the config's root comes back.
        let roll = self.deployed_rootfs.take().is_some() || roll;
        let old = std::mem::replace(&mut self.config, config);
        let clients = client_policy(&self.config);
        if old.scheduler != self.config.scheduler || clients != self.service.clients {
            self.service.scheduler = self.config.scheduler.clone();
            self.service.clients = clients;
            if let Err(error) = self.balancer.ensure_service(&self.service).await {
                warn!(service = %self.service.name, %error, "changing the scheduler or client policy failed");
            }
        }
        if old.weight != self.config.weight {
            let ready: Vec<SocketAddr> = self
                .workers
                .values()
                .filter_map(|w| match w.phase {
                    // A drained slot stays at weight 0 until `undrain`; a spare until it
                    // is promoted.
                    Phase::Ready {
                        spawned,
                        drained: false,
                        ..
                    } if !w.is_spare() => Some(spawned.addr),
                    _ => None,
                })
                .collect();
            for addr in ready {
                if let Err(error) = self
                    .balancer
                    .set_weight(&self.service, addr, self.config.weight)
                    .await
                {
                    warn!(service = %self.service.name, worker.addr = %addr, %error, "changing the weight failed");
                }
            }
        }
        // The config's count comes back: a reload ends a `poolctl scale`.
        let workers = self.config.workers;
        self.set_desired(workers).await;
        if roll {
            self.generation += 1;
        }
        info!(service = %self.service.name, generation = self.generation, roll, workers, "config reloaded");
        Ok(self.generation)
    }

    fn start_deploy(
        &mut self,
        rootfs: String,
        done: oneshot::Sender<Result<(), DeployFailure>>,
    ) -> Result<u64, PoolError> {
        self.refuse_busy()?;
        let mut config = (*self.config).clone();
        config.rootfs.clone_from(&rootfs);
        let previous = std::mem::replace(&mut self.config, Arc::new(config));
        let previous_rootfs = self.deployed_rootfs.replace(rootfs.clone());
        self.deploy = Some(Deploy {
            generation: self.generation + 1,
            previous,
            previous_generation: self.generation,
            previous_rootfs,
            done: Some(done),
        });
        self.generation += 1;
        info!(service = %self.service.name, generation = self.generation, %rootfs, "deploy started");
        Ok(self.generation)
    }

    /// A worker of the deploy's generation failed: back to the previous config and
    /// generation, so the workers already replaced are rolled back.
    fn roll_back(&mut self, slot: u32, id: WorkerId, failure: &SlotFailure) {
        let Some(deploy) = self.deploy.take() else {
            return;
        };
        self.config = deploy.previous;
        self.generation = deploy.previous_generation;
        self.deployed_rootfs = deploy.previous_rootfs;
        let failure = DeployFailure {
            generation: deploy.generation,
            slot: slot_field(slot),
            worker: id,
            failure: failure.to_string(),
            rolled_back_to: self.generation,
        };
        error!(service = %self.service.name, worker.slot = slot_field(slot), worker.spare = spare_field(slot), worker.id = %id, "{failure}");
        if let Some(done) = deploy.done {
            let _ = done.send(Err(failure));
        }
    }

    /// The deploy is done once every worker is of its generation and every slot is ready.
    fn finish_deploy(&mut self) {
        let Some(deploy) = &self.deploy else {
            return;
        };
        let all_new = self
            .workers
            .values()
            .all(|w| w.generation == deploy.generation);
        let all_ready = self
            .slots
            .iter()
            .take(self.desired as usize)
            .all(|slot| self.is_ready(slot.current));
        if all_new && all_ready {
            info!(service = %self.service.name, generation = deploy.generation, "deploy finished");
            if let Some(done) = self.deploy.take().and_then(|d| d.done) {
                let _ = done.send(Ok(()));
            }
        }
    }

    /// `poolctl drain/undrain SERVICE/SLOT`: the slot's ready worker to weight 0 and out of
    /// rotation (no replacement: capacity drops by one), or back to the service's weight.
    async fn drain_slot(&mut self, slot: u32, drain: bool) -> Result<WorkerId, PoolError> {
        self.check_slot(slot)?;
        let service = self.service.name.clone();
        let entry = &self.slots[slot as usize];
        if entry.recycle != Recycle::Idle {
            return Err(PoolError::SlotBusy { service, slot });
        }
        let state = self.slot_state(slot as usize, Instant::now());
        let worker = entry.current.and_then(|id| self.workers.get_mut(&id));
        let Some(Worker {
            id,
            phase: Phase::Ready {
                spawned, drained, ..
            },
            ..
        }) = worker
        else {
            return Err(if drain {
                PoolError::SlotNotReady {
                    service,
                    slot,
                    state,
                }
            } else {
                PoolError::SlotNotDrained { service, slot }
            });
        };
        match (drain, *drained) {
            (true, true) => return Err(PoolError::SlotAlreadyDrained { service, slot }),
            (false, false) => return Err(PoolError::SlotNotDrained { service, slot }),
            _ => {}
        }
        let (id, addr) = (*id, spawned.addr);
        let weight = if drain { 0 } else { self.config.weight };
        self.balancer
            .set_weight(&self.service, addr, weight)
            .await
            .map_err(|error| {
                error!(service = %service, worker.slot = slot, worker.id = %id, %error, "setting the weight failed");
                PoolError::Stopped {
                    service: service.clone(),
                }
            })?;
        if let Some(Worker {
            phase: Phase::Ready { drained, .. },
            ..
        }) = self.workers.get_mut(&id)
        {
            *drained = drain;
        }
        info!(service = %service, worker.slot = slot, worker.id = %id, drained = drain, "slot drain changed");
        self.publish();
        Ok(id)
    }

    /// `poolctl scale SERVICE N`: more slots start at once; fewer drain their highest slots
    /// (weight 0, until the connections end) before stopping them.
    async fn scale(&mut self, workers: u32, others: u64) -> Result<ScaleChange, PoolError> {
        let service = self.service.name.clone();
        if self.shutdown.is_some() {
            return Err(PoolError::ShuttingDown { service });
        }
        let capacity = self.options.worker_capacity;
        // The service's warm spares take addresses (and bridge ports) too.
        let spares = u64::from(self.config.recycle.spares);
        let max = capacity.saturating_sub(others).saturating_sub(spares);
        if workers == 0 || u64::from(workers) > max {
            return Err(PoolError::ScaleOutOfRange {
                service,
                workers,
                max,
                capacity,
                others,
                spares,
            });
        }
        let from = self.desired;
        self.set_desired(workers).await;
        info!(service = %service, from, to = workers, configured = self.config.workers, "scaled");
        Ok(ScaleChange {
            from,
            to: workers,
            configured: self.config.workers,
        })
    }

    /// Sets the worker count (`poolctl scale`, or a reload's `workers`): more slots start at
    /// once; fewer drain their highest slots (weight 0, until the connections end) before
    /// stopping them.
    async fn set_desired(&mut self, workers: u32) {
        self.desired = workers;
        while self.slots.len() < workers as usize {
            self.slots.push(Slot::default());
        }
        for index in workers as usize..self.slots.len() {
            let entry = &mut self.slots[index];
            entry.restart_at = None;
            let replacement = std::mem::take(&mut entry.recycle).replacement();
            let current = entry.current.take();
            if let Some(id) = replacement {
                self.begin_stop(id, RecycleReason::Manual);
            }
            if let Some(id) = current {
                self.retire(id, RecycleReason::Manual).await;
            }
        }
        // Readiness follows the new count: min_ready when set (never above the count),
        // else every desired worker.
        let min_ready = self
            .config
            .min_ready
            .map_or(workers, |min| min.min(workers));
        let configured = self.config.workers;
        self.status.send_modify(|status| {
            status.desired = workers;
            status.min_ready = min_ready;
            status.scaled_from = (workers != configured).then_some(configured);
        });
    }

    /// A slot that `scale` or a smaller `workers` took away: its workers only drain and stop.
    fn slot_removed(&self, slot: u32) -> bool {
        slot >= self.desired
    }

    /// Forgets the slots beyond `desired` once no worker of theirs is left.
    fn drop_scaled_away_slots(&mut self) {
        while self.slots.len() > self.desired as usize {
            let last = self.slots.len() as u32 - 1;
            if self.workers.values().any(|w| w.slot == last) {
                return;
            }
            self.slots.pop();
        }
    }

    fn manual_recycle(
        &mut self,
        slot: Option<u32>,
        done: Option<oneshot::Sender<()>>,
    ) -> Result<Vec<u32>, PoolError> {
        let service = || self.service.name.clone();
        if self.shutdown.is_some() {
            return Err(PoolError::ShuttingDown { service: service() });
        }
        let slots: Vec<u32> = match slot {
            Some(slot) if slot >= self.desired => {
                return Err(PoolError::NoSuchSlot {
                    service: service(),
                    slot,
                    last: self.desired - 1,
                });
            }
            Some(slot) => vec![slot],
            None => (0..self.desired).collect(),
        };
        let mut old_workers = Vec::new();
        for &slot in &slots {
            let entry = &mut self.slots[slot as usize];
            if let Some(current) = entry.current {
                old_workers.push((slot, current));
            }
            if entry.recycle == Recycle::Idle {
                entry.recycle = Recycle::Pending(RecycleReason::Manual);
            }
        }
        info!(service = %self.service.name, ?slots, "manual recycle queued");
        if let Some(done) = done {
            self.waiters.push(RecycleWaiter { old_workers, done });
        }
        Ok(slots)
    }

    async fn begin_shutdown(&mut self, done: Option<oneshot::Sender<()>>) {
        let first = self.shutdown.is_none();
        self.shutdown.get_or_insert_with(Vec::new).extend(done);
        if !first {
            return;
        }
        info!(service = %self.service.name, "shutting down the pool: no new connections, draining every worker");
        if let Err(error) = self.balancer.stop_accepting(&self.service).await {
            warn!(service = %self.service.name, %error, "stopping new connections failed");
        }
        // Ready workers drain as in a recycle (weight 0, until ActiveConn is 0 or
        // drain_timeout), then stop (SIGTERM, SIGKILL after stop_timeout); draining ones keep
        // their deadline; starting ones serve nobody and stop now (or once spawned).
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in ids {
            let Some(state) = self.workers.get(&id).map(Worker::state) else {
                continue;
            };
            match state {
                WorkerState::Ready | WorkerState::Drained => {
                    self.retire(id, RecycleReason::Shutdown).await
                }
                // A spare serves nobody: it stops at once.
                WorkerState::Starting | WorkerState::Spare => {
                    self.begin_stop(id, RecycleReason::Shutdown)
                }
                WorkerState::Draining | WorkerState::Stopping | WorkerState::Gone => {}
            }
        }
    }

    fn hurry_shutdown(&mut self) {
        if self.shutdown.is_none() {
            return;
        }
        let now = Instant::now();
        let mut hurried = 0;
        for worker in self.workers.values_mut() {
            if let Phase::Draining { deadline, .. } = &mut worker.phase {
                *deadline = (*deadline).min(now);
                hurried += 1;
            }
        }
        info!(service = %self.service.name, workers = hurried, "hurrying the shutdown: draining workers stop now");
    }

    // ----- tick --------------------------------------------------------------------------

    async fn on_tick(&mut self) {
        let in_balancer = self.workers.values().any(|w| w.phase.in_balancer());
        if in_balancer {
            match self.balancer.backend_stats(&self.service).await {
                Ok(stats) => {
                    for worker in self.workers.values_mut() {
                        // A backend missing from the dump has no stats: never "drained".
                        worker.stats = worker
                            .phase
                            .spawned()
                            .and_then(|spawned| stats.get(&spawned.addr).copied());
                    }
                }
                Err(error) => {
                    warn!(service = %self.service.name, %error, "reading balancer stats failed");
                    for worker in self.workers.values_mut() {
                        worker.stats = None;
                    }
                }
            }
        }
        // The next usage_reads_per_tick ready workers after the last one read, in turn.
        let after = self.usage_cursor;
        let ready: Vec<WorkerId> = self
            .workers
            .range((Bound::Excluded(after), Bound::Unbounded))
            .chain(self.workers.range(..=after))
            .filter(|(_, w)| matches!(w.phase, Phase::Ready { .. }))
            .map(|(id, _)| *id)
            .take(self.options.usage_reads_per_tick)
            .collect();
        if let Some(last) = ready.last() {
            self.usage_cursor = *last;
        }
        for id in ready {
            match self.runtime.usage(id) {
                Ok(usage) => {
                    if let Some(worker) = self.workers.get_mut(&id) {
                        if usage.oom_kills > worker.usage.oom_kills {
                            self.observer
                                .oom_killed(id, usage.oom_kills - worker.usage.oom_kills);
                        }
                        worker.usage = usage;
                        if let Phase::Ready { oom_baseline, .. } = &mut worker.phase {
                            oom_baseline.get_or_insert(usage.oom_kills);
                        }
                    }
                }
                Err(error) => {
                    debug!(service = %self.service.name, worker.id = %id, %error, "reading usage failed")
                }
            }
        }
    }

    /// Moves every state machine along: deadlines, health probes, recycles, refills.
    async fn advance(&mut self) {
        let now = Instant::now();
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in ids {
            let Some(worker) = self.workers.get(&id) else {
                continue;
            };
            match worker.phase {
                Phase::Spawning | Phase::Gone { .. } => {}
                Phase::Starting { .. } => {
                    if now >= worker.spawned_at + self.config.health.start_timeout.get() {
                        let slot = worker.slot;
                        let failure = SlotFailure::StartTimeout {
                            worker: id,
                            timeout: self.config.health.start_timeout,
                        };
                        warn!(service = %self.service.name, worker.slot = slot_field(slot), worker.spare = spare_field(slot), worker.id = %id, "{failure}");
                        self.begin_stop(id, RecycleReason::Unhealthy);
                        self.slot_failed(slot, id, failure);
                    }
                }
                Phase::Ready { .. } => {
                    if let Some(reason) = self.planned_recycle_reason(id, now) {
                        let slot = self.workers[&id].slot as usize;
                        let Some(entry) = self.slots.get_mut(slot) else {
                            continue;
                        };
                        if entry.current == Some(id) && entry.recycle == Recycle::Idle {
                            info!(service = %self.service.name, worker.slot = slot, worker.id = %id, %reason, "worker due for recycling");
                            entry.recycle = Recycle::Pending(reason);
                        }
                    }
                }
                Phase::Draining {
                    reason,
                    settled_at,
                    deadline,
                    ..
                } => {
                    let active = worker.stats.map(|stats| stats.active);
                    if now >= settled_at && active == Some(0) {
                        debug!(service = %self.service.name, worker.id = %id, "worker drained");
                        self.begin_stop(id, reason);
                    } else if now >= deadline {
                        warn!(service = %self.service.name, worker.id = %id, active = ?active, "drain timeout; stopping with connections open");
                        self.begin_stop(id, reason);
                    }
                }
                Phase::Stopping {
                    kill_at: Some(kill_at),
                    ..
                } if now >= kill_at => {
                    warn!(service = %self.service.name, worker.id = %id, timeout = %self.config.recycle.stop_timeout, "worker ignored SIGTERM; sending SIGKILL");
                    if let Err(error) = self.runtime.signal(id, StopSignal::Kill) {
                        error!(service = %self.service.name, worker.id = %id, %error, "SIGKILL failed");
                    }
                    if let Some(Worker {
                        phase: Phase::Stopping { kill_at, .. },
                        ..
                    }) = self.workers.get_mut(&id)
                    {
                        *kill_at = None;
                    }
                }
                Phase::Stopping { .. } => {}
            }
        }
        if self.shutdown.is_none() {
            self.reset_failures(now);
            self.promote_spares().await;
            self.start_planned_recycles(now).await;
            self.fill_slots(now);
        }
        self.tend_spares(now);
        self.finish_recycles();
        self.finish_deploy();
        self.drop_scaled_away_slots();
        self.publish();
    }

    fn planned_recycle_reason(&self, id: WorkerId, now: Instant) -> Option<RecycleReason> {
        let worker = &self.workers[&id];
        let Phase::Ready {
            retire_at,
            oom_baseline,
            drained,
            ..
        } = worker.phase
        else {
            return None;
        };
        // A spare is replaced by tend_spares, never recycled.
        if worker.is_spare() {
            return None;
        }
        // A rollout replaces a drained worker too (as `recycle` does; the new one serves).
        if worker.generation != self.generation {
            return Some(RecycleReason::Rollout);
        }
        // A drained worker is kept for inspection: its limits wait until `undrain`.
        if drained {
            return None;
        }
        let recycle = &self.config.recycle;
        if retire_at.is_some_and(|at| now >= at) {
            return Some(RecycleReason::Lifetime);
        }
        if let (Some(limit), Some(stats)) = (recycle.max_connections, worker.stats) {
            if stats.total >= limit {
                return Some(RecycleReason::MaxConnections);
            }
        }
        if let Some(limit) = recycle.max_memory {
            if worker.usage.memory_bytes > limit.bytes() {
                return Some(RecycleReason::MaxMemory);
            }
        }
        if recycle.on_oom == OnOom::Recycle
            && oom_baseline.is_some_and(|base| worker.usage.oom_kills > base)
        {
            return Some(RecycleReason::OomKill);
        }
        None
    }

    /// Starts every probe due by `now` (a starting or ready worker waiting for one).
    fn start_due_probes(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.probe_queue.first() {
            if at > now {
                break;
            }
            self.probe_queue.pop_first();
            self.start_probe(id, at);
        }
    }

    /// Starts the probe of `id` queued for `at`, unless that entry is stale.
    fn start_probe(&mut self, id: WorkerId, at: Instant) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        let Some(addr) = worker.phase.spawned().map(|s| s.addr) else {
            return;
        };
        let Some(probe) = worker.phase.probe_mut() else {
            return;
        };
        if probe.in_flight || probe.next_at != at {
            return;
        }
        probe.in_flight = true;
        let health = self.health.clone();
        // The config's Arc, not a copy of its health section (500 probes a second at 1,000
        // workers, each copy an allocation).
        let config = self.config.clone();
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let result = health.check(addr, &config.health).await;
            let _ = events.send(Event::Health { id, result });
        });
    }

    fn reset_failures(&mut self, now: Instant) {
        let steady = self.config.backoff.max.get();
        for slot in &mut self.slots {
            let ready_since =
                slot.current
                    .and_then(|id| self.workers.get(&id))
                    .and_then(|w| match w.phase {
                        Phase::Ready { ready_at, .. } => Some(ready_at),
                        _ => None,
                    });
            if slot.failures > 0 && ready_since.is_some_and(|at| now >= at + steady) {
                slot.failures = 0;
                slot.last_error = None;
            }
        }
    }

    fn recycles_in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.recycle.is_running())
            .count()
    }

    fn is_ready(&self, id: Option<WorkerId>) -> bool {
        id.and_then(|id| self.workers.get(&id))
            .is_some_and(|w| w.state() == WorkerState::Ready)
    }

    /// Ready, in rotation or drained by the operator: a worker a recycle can replace.
    fn is_up(&self, id: WorkerId) -> bool {
        self.workers
            .get(&id)
            .is_some_and(|w| matches!(w.phase, Phase::Ready { .. }))
    }

    async fn start_planned_recycles(&mut self, now: Instant) {
        let cap = self.config.recycle.max_concurrent_recycles as usize;
        let mut in_flight = self.recycles_in_flight();
        for index in 0..self.desired as usize {
            if in_flight >= cap {
                return;
            }
            let slot = &self.slots[index];
            let Recycle::Pending(reason) = slot.recycle else {
                continue;
            };
            let Some(current) = slot.current else {
                continue;
            };
            // A rollout queued before a rollback that made this worker current again.
            if reason == RecycleReason::Rollout
                && self
                    .workers
                    .get(&current)
                    .is_some_and(|w| w.generation == self.generation)
            {
                self.slots[index].recycle = Recycle::Idle;
                if let Some(worker) = self.workers.get_mut(&current) {
                    worker.recycle_started = None;
                    if let Phase::Ready { replacing, .. } = &mut worker.phase {
                        *replacing = None;
                    }
                }
                continue;
            }
            if !self.is_up(current) || slot.restart_at.is_some_and(|at| now < at) {
                continue;
            }
            self.slots[index].recycle = Recycle::Running { replacement: None };
            in_flight += 1;
            let index = index as u32;
            self.recycle_started(current, reason);
            info!(service = %self.service.name, worker.slot = index, worker.id = %current, %reason, surge = self.config.recycle.surge, "recycling worker");
            // A ready spare serves the slot at once; the old worker drains.
            if self.promote_spare(index).await.is_some() {
                self.retire(current, reason).await;
                continue;
            }
            if self.config.recycle.surge {
                let replacement = self.spawn_worker(index);
                self.slots[index as usize].recycle = Recycle::Running {
                    replacement: Some(replacement),
                };
                // The old worker keeps its reason for when the replacement is ready.
                if let Some(Worker {
                    phase: Phase::Ready { replacing, .. },
                    ..
                }) = self.workers.get_mut(&current)
                {
                    *replacing = Some(reason);
                }
            } else {
                self.slots[index as usize].current = None;
                self.retire(current, reason).await;
            }
        }
    }

    fn fill_slots(&mut self, now: Instant) {
        let mut spawning = self
            .workers
            .values()
            .filter(|w| matches!(w.phase, Phase::Spawning))
            .count();
        for index in 0..self.desired as usize {
            if spawning >= self.options.max_spawning {
                return;
            }
            let slot = &self.slots[index];
            if slot.current.is_some() || slot.restart_at.is_some_and(|at| now < at) {
                continue;
            }
            // Without surge a slot holds one worker at a time: wait until the old one is gone.
            if !self.config.recycle.surge
                && slot.recycle.is_running()
                && self
                    .workers
                    .values()
                    .any(|w| w.slot as usize == index && w.state() != WorkerState::Starting)
            {
                continue;
            }
            let id = self.spawn_worker(index as u32);
            self.slots[index].current = Some(id);
            spawning += 1;
        }
    }

    fn finish_recycles(&mut self) {
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.recycle != (Recycle::Running { replacement: None }) {
                continue;
            }
            let current_ready = self.is_ready(slot.current);
            let old_left = self
                .workers
                .values()
                .any(|w| w.slot as usize == index && Some(w.id) != slot.current);
            if current_ready && !old_left {
                self.slots[index].recycle = Recycle::Idle;
            }
        }
        let mut waiters = std::mem::take(&mut self.waiters);
        waiters.retain(|waiter| !waiter.done.is_closed());
        for waiter in waiters {
            let finished = waiter.old_workers.iter().all(|(slot, old)| {
                !self.workers.contains_key(old)
                    && (*slot >= self.desired
                        || self.is_ready(self.slots.get(*slot as usize).and_then(|s| s.current)))
            });
            if finished {
                let _ = waiter.done.send(());
            } else {
                self.waiters.push(waiter);
            }
        }
    }

    // ----- transitions -------------------------------------------------------------------

    fn spawn_worker(&mut self, slot: u32) -> WorkerId {
        let id = WorkerId(NEXT_WORKER_ID.fetch_add(1, Ordering::Relaxed));
        self.workers.insert(
            id,
            Worker {
                id,
                slot,
                phase: Phase::Spawning,
                spawned_at: Instant::now(),
                stats: None,
                usage: ResourceUsage::default(),
                recycle_started: None,
                generation: self.generation,
            },
        );
        debug!(service = %self.service.name, worker.slot = slot_field(slot), worker.spare = spare_field(slot), worker.id = %id, "spawning worker");
        self.observer.worker_spawned(slot, id);
        let spec = WorkerSpec {
            id,
            slot,
            service: self.config.clone(),
            generation: self.generation,
        };
        let runtime = self.runtime.clone();
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let result = runtime.spawn(&spec).await;
            let _ = events.send(Event::Spawned { id, result });
        });
        id
    }

    /// The replacement of `id` began; reported once per worker, timed from the first time.
    fn recycle_started(&mut self, id: WorkerId, reason: RecycleReason) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        if worker.recycle_started.is_none() {
            worker.recycle_started = Some((reason, Instant::now()));
            self.observer.recycle_started(id, reason);
            if let Some(slot) = self.slots.get_mut(worker.slot as usize) {
                slot.recycles += 1;
                slot.last_recycle = Some(reason);
            }
        }
    }

    /// Workers started together would be probed together for ever: a worker that became
    /// ready (or a spare) has its next probe at a random point of the interval, so probes
    /// come in a steady trickle, not in bursts.
    fn spread_next_probe(&mut self, id: WorkerId, probe: &mut Probe, now: Instant) {
        if !probe.in_flight {
            let interval = self.config.health.interval.get();
            probe.next_at = now + interval.mul_f64(self.probe_rng.f64());
            self.probe_queue.insert((probe.next_at, id));
        }
    }

    async fn become_ready(&mut self, id: WorkerId) {
        let Some(worker) = self.workers.get(&id) else {
            return;
        };
        let Phase::Starting {
            spawned, mut probe, ..
        } = worker.phase
        else {
            return;
        };
        let (slot, addr) = (worker.slot, spawned.addr);
        if slot == SPARE_SLOT {
            let generation = worker.generation;
            self.become_spare(id, generation, spawned, probe).await;
            return;
        }
        if self.slot_removed(slot) {
            self.begin_stop(id, RecycleReason::Shutdown);
            return;
        }
        if let Err(error) = self
            .balancer
            .add_backend(&self.service, addr, self.config.weight)
            .await
        {
            error!(service = %self.service.name, worker.slot = slot, worker.id = %id, %error, "adding the worker to the balancer failed");
            self.begin_stop(id, RecycleReason::Unhealthy);
            self.slot_failed(slot, id, SlotFailure::Balancer(error));
            return;
        }
        let now = Instant::now();
        let lifetime = self.lifetime();
        self.spread_next_probe(id, &mut probe, now);
        let worker = self.workers.get_mut(&id).expect("checked above");
        worker.phase = Phase::Ready {
            spawned,
            probe,
            fail_streak: 0,
            ready_at: now,
            retire_at: lifetime.map(|lifetime| now + lifetime),
            oom_baseline: None,
            replacing: None,
            drained: false,
        };
        info!(service = %self.service.name, worker.slot = slot, worker.id = %id, worker.addr = %addr, lifetime = ?lifetime, "worker ready");

        let entry = &mut self.slots[slot as usize];
        if entry.recycle.replacement() == Some(id) {
            // Surge: the replacement serves; now retire the old worker.
            entry.recycle = Recycle::Running { replacement: None };
            let old = entry.current.replace(id);
            if let Some(old) = old {
                let reason = self
                    .workers
                    .get(&old)
                    .and_then(|w| w.phase.reason())
                    .unwrap_or(RecycleReason::Manual);
                self.retire(old, reason).await;
            }
        }
    }

    /// The worker's lifetime: max_lifetime shortened by up to lifetime_jitter, at least min_lifetime.
    fn lifetime(&mut self) -> Option<Duration> {
        let recycle = &self.config.recycle;
        let max = recycle.max_lifetime?.get();
        let jitter = recycle.lifetime_jitter.get();
        let cut = jitter.mul_f64(self.rng.f64());
        Some(
            max.saturating_sub(cut)
                .max(recycle.min_lifetime.get().min(max)),
        )
    }

    /// Weight 0 and wait for the connections to end (Ready -> Draining).
    async fn retire(&mut self, id: WorkerId, reason: RecycleReason) {
        let Some(worker) = self.workers.get(&id) else {
            return;
        };
        let Phase::Ready { spawned, .. } = worker.phase else {
            self.begin_stop(id, reason);
            return;
        };
        if let Err(error) = self
            .balancer
            .set_weight(&self.service, spawned.addr, 0)
            .await
        {
            error!(service = %self.service.name, worker.id = %id, %error, "setting weight 0 failed");
        }
        let now = Instant::now();
        let settled_at = now + self.options.drain_settle;
        self.wake_at = Some(self.wake_at.map_or(settled_at, |at| at.min(settled_at)));
        let worker = self.workers.get_mut(&id).expect("checked above");
        worker.phase = Phase::Draining {
            spawned,
            reason,
            settled_at,
            deadline: now + self.config.recycle.drain_timeout.get(),
        };
        info!(service = %self.service.name, worker.slot = slot_field(worker.slot), worker.spare = spare_field(worker.slot), worker.id = %id, %reason, "draining worker");
    }

    /// SIGTERM now, SIGKILL after stop_timeout (-> Stopping). A worker already being
    /// replaced keeps its reason.
    fn begin_stop(&mut self, id: WorkerId, reason: RecycleReason) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        let Some(spawned) = worker.phase.spawned() else {
            return;
        };
        if matches!(worker.phase, Phase::Stopping { .. } | Phase::Gone { .. }) {
            return;
        }
        worker.phase = Phase::Stopping {
            spawned,
            reason: worker.phase.reason().unwrap_or(reason),
            in_balancer: worker.phase.in_balancer(),
            kill_at: Some(Instant::now() + self.config.recycle.stop_timeout.get()),
        };
        debug!(service = %self.service.name, worker.id = %id, "sending SIGTERM");
        if let Err(error) = self.runtime.signal(id, StopSignal::Term) {
            error!(service = %self.service.name, worker.id = %id, %error, "SIGTERM failed");
        }
    }

    async fn unhealthy(&mut self, id: WorkerId, reason: ProbeError) {
        let Some(slot) = self.workers.get(&id).map(|w| w.slot) else {
            return;
        };
        let spare = slot == SPARE_SLOT;
        if !spare && self.slot_removed(slot) {
            self.retire(id, RecycleReason::Unhealthy).await;
            return;
        }
        // An unhealthy worker gets no new connections at once, without waiting for a
        // replacement; the slot refills after the backoff (a spare: the next one).
        if !spare {
            if self.slots[slot as usize].current == Some(id) {
                self.slots[slot as usize].current = None;
            }
            self.recycle_started(id, RecycleReason::Unhealthy);
        }
        self.retire(id, RecycleReason::Unhealthy).await;
        self.slot_failed(slot, id, SlotFailure::Unhealthy { worker: id, reason });
    }

    fn teardown(&mut self, id: WorkerId) {
        let runtime = self.runtime.clone();
        let events = self.events_tx.clone();
        let service = self.service.name.clone();
        tokio::spawn(async move {
            if let Err(error) = runtime.teardown(id).await {
                error!(service = %service, worker.id = %id, %error, "teardown failed");
            }
            let _ = events.send(Event::TornDown { id });
        });
    }

    /// A worker of `slot` (or a spare) failed (crash, failed start, unhealthy): back off
    /// before refilling. One of a deploy's generation rolls the deploy back, in a slot or
    /// as a spare alike: either shows that the new workers cannot start.
    fn slot_failed(&mut self, slot: u32, id: WorkerId, failure: SlotFailure) {
        let spare = slot == SPARE_SLOT;
        if !spare && self.slot_removed(slot) {
            return;
        }
        let deploy_failed = self.deploy.as_ref().is_some_and(|deploy| {
            self.workers
                .get(&id)
                .is_some_and(|w| w.generation == deploy.generation)
        });
        if deploy_failed {
            self.roll_back(slot, id, &failure);
        }
        if spare {
            self.spare_failed(id, &failure);
            return;
        }
        let backoff = &self.config.backoff;
        let entry = &mut self.slots[slot as usize];
        if entry.current == Some(id) {
            entry.current = None;
        }
        if entry.recycle.replacement() == Some(id) {
            // The surge replacement failed: the old worker keeps serving; retry the recycle.
            let old_reason = entry
                .current
                .and_then(|old| self.workers.get(&old))
                .and_then(|w| w.phase.reason());
            entry.recycle = Recycle::Pending(old_reason.unwrap_or(RecycleReason::Manual));
        }
        entry.failures += 1;
        let delay = backoff.delay(entry.failures);
        entry.restart_at = Some(Instant::now() + delay);
        let failures = entry.failures;
        if failures >= CRASH_LOOP_FAILURES {
            error!(service = %self.service.name, worker.slot = slot, failures, retry_in = ?delay, "{failure}; slot is crash-looping");
        } else {
            warn!(service = %self.service.name, worker.slot = slot, failures, retry_in = ?delay, "{failure}");
        }
        entry.last_error = Some(failure);
    }

    // ----- status ------------------------------------------------------------------------

    fn slot_state(&self, index: usize, now: Instant) -> SlotState {
        let slot = &self.slots[index];
        let current = slot.current.and_then(|id| self.workers.get(&id));
        let waiting = slot.restart_at.is_some_and(|at| at > now);
        if current.is_none() && waiting {
            if slot.failures >= CRASH_LOOP_FAILURES {
                SlotState::CrashLoop
            } else {
                SlotState::Backoff
            }
        } else if slot.recycle.is_running() {
            SlotState::Recycling
        } else {
            match current.map(Worker::state) {
                Some(WorkerState::Ready) => SlotState::Ok,
                Some(WorkerState::Drained) => SlotState::Drained,
                _ => SlotState::Starting,
            }
        }
    }

    fn publish(&self) {
        let now = Instant::now();
        let mut workers: Vec<WorkerStatus> = self
            .workers
            .values()
            .map(|w| {
                let spawned = w.phase.spawned();
                WorkerStatus {
                    slot: w.slot,
                    id: w.id,
                    state: w.state(),
                    addr: spawned.map(|s| s.addr),
                    pid: spawned.map(|s| s.pid),
                    age_secs: now.duration_since(w.spawned_at).as_secs_f64(),
                    active_conns: w.stats.map_or(0, |s| s.active),
                    total_conns: w.stats.map_or(0, |s| s.total),
                    memory_bytes: w.usage.memory_bytes,
                    memory_limit_bytes: self.config.limits.memory.map(|limit| limit.bytes()),
                    cpu_secs: w.usage.cpu_time.as_secs_f64(),
                    reason: w.phase.reason(),
                    chroot: spawned.is_some_and(|s| s.chroot),
                    generation: w.generation,
                }
            })
            .collect();
        let slots = self
            .slots
            .iter()
            .enumerate()
            .take(self.desired as usize)
            .map(|(index, slot)| SlotStatus {
                slot: index as u32,
                state: self.slot_state(index, now),
                failures: slot.failures,
                last_error: slot.last_error.as_ref().map(ToString::to_string),
                retry_in_secs: slot
                    .restart_at
                    .filter(|at| *at > now)
                    .map(|at| (at - now).as_secs_f64()),
                recycles: slot.recycles,
                last_recycle: slot.last_recycle,
            })
            .collect();
        workers.sort_by_key(|w| (w.slot, w.id));
        let ready = workers
            .iter()
            .filter(|w| w.state == WorkerState::Ready)
            .count() as u32;
        let spares = workers
            .iter()
            .filter(|w| w.state == WorkerState::Spare)
            .count() as u32;
        let (generation, deployed_rootfs) = (self.generation, self.deployed_rootfs.clone());
        let rolling_out = self.rolling_out();
        let wanted_spares = self.config.recycle.spares;
        self.status.send_modify(|status| {
            status.generation = generation;
            status.wanted_spares = wanted_spares;
            status.deployed_rootfs = deployed_rootfs;
            status.rolling_out = rolling_out;
            status.ready = ready;
            status.spares = spares;
            status.workers = workers;
            status.slots = slots;
        });
        self.save_operator_state();
    }

    /// What operators changed on this service: the service drain, a scale, drained slots.
    fn operator_state(&self) -> OperatorState {
        OperatorState {
            drained: self.operator_drained,
            scaled_to: (self.desired != self.config.workers).then_some(self.desired),
            drained_workers: self
                .workers
                .values()
                .filter(|w| matches!(w.phase, Phase::Ready { drained: true, .. }))
                .map(|w| w.id)
                .collect(),
        }
    }

    /// Keeps the operator state in the runtime's record when it changed, so that a restart
    /// or an upgrade restores it. Not while shutting down: a stop ends it (the record goes).
    fn save_operator_state(&self) {
        if self.shutdown.is_some() {
            return;
        }
        let state = self.operator_state();
        let mut saved = self
            .operator_saved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *saved != state {
            self.runtime.save_operator_state(&self.service.name, &state);
            *saved = state;
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
/// At start: the adopted workers' backends at the service's weight (an interrupted drain
/// or stop may have left one at 0, or a fresh proxy has none), every other backend removed
/// (workers of an earlier run that are gone).
async fn reconcile_backends(
    balancer: &dyn Balancer,
    service: &VirtualService,
    config: &ServiceConfig,
    adopted: &[AdoptedWorker],
    drained: &BTreeSet<WorkerId>,
) {
    let present = balancer.backend_stats(service).await.unwrap_or_default();
    let wanted: Vec<SocketAddr> = adopted
        .iter()
        .map(|a| SocketAddr::new(a.addr, config.port))
        .collect();
    // A spare takes no traffic, and an operator's slot drain holds across the restart: their
    // backends stay at 0.
    let weight_of = |backend: &SocketAddr| {
        let out_of_rotation = adopted.iter().any(|a| {
            SocketAddr::new(a.addr, config.port) == *backend
                && (a.slot == SPARE_SLOT || drained.contains(&a.id))
        });
        if out_of_rotation {
            0
        } else {
            config.weight
        }
    };
    for (backend, stats) in &present {
        if !wanted.contains(backend) {
            info!(service = %service.name, %backend, "removing a backend of an earlier run whose worker is gone");
            if let Err(error) = balancer.remove_backend(service, *backend).await {
                warn!(service = %service.name, %backend, %error, "removing a stale backend failed");
            }
        } else if stats.weight != weight_of(backend) {
            let weight = weight_of(backend);
            info!(service = %service.name, %backend, weight = stats.weight, to = weight,
                "putting an adopted worker's backend back at its weight");
            if let Err(error) = balancer.set_weight(service, *backend, weight).await {
                warn!(service = %service.name, %backend, %error, "setting the weight failed");
            }
        }
    }
    for backend in wanted.iter().filter(|b| !present.contains_key(b)) {
        if let Err(error) = balancer
            .add_backend(service, *backend, weight_of(backend))
            .await
        {
            warn!(service = %service.name, %backend, %error, "adding an adopted worker failed");
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The proxy balancer's rules for the service's clients, from its config.
fn client_policy(config: &ServiceConfig) -> ClientPolicy {
    ClientPolicy {
        max: usize::try_from(config.max_client_connections).unwrap_or(usize::MAX),
        connect: config.backend_connect,
    }
}

mod spares;
