//! A recording fake of [`WorkerRuntime`] for unit tests of what drives it (the supervisor
//! and everything that runs a pool in tests).

use super::*;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug)]
pub struct FakeWorker {
    pub exit: watch::Sender<Option<ExitStatus>>,
    pub usage: ResourceUsage,
    pub torn_down: bool,
    /// What the worker "wrote" last (its stdout/stderr).
    pub last_output: Option<String>,
    /// The service's `rootfs` it was spawned with.
    pub rootfs: String,
    pub slot: u32,
    pub addr: IpAddr,
    pub pid: u32,
    /// The service config it was spawned with.
    pub config: Arc<ServiceConfig>,
}

#[derive(Debug, Default)]
pub struct RuntimeState {
    next_host: u32,
    pub workers: HashMap<WorkerId, FakeWorker>,
    /// Every spawn attempt, with its time.
    pub spawn_attempts: Vec<(u32, Instant)>,
    pub fail_spawns: bool,
    /// Spawns on this root fail (as when it lacks the command).
    pub fail_rootfs: Option<String>,
    /// How long a spawn takes (none: at once).
    pub spawn_delay: Option<std::time::Duration>,
    /// Spawns in progress now, and the most there ever were at once.
    pub spawning: usize,
    pub spawning_max: usize,
    /// Whose usage was read, in order.
    pub usage_reads: Vec<WorkerId>,
    pub ignore_term: bool,
    pub signals: Vec<(WorkerId, StopSignal, Instant)>,
    pub addresses_handed_out: Vec<IpAddr>,
    /// Workers of an earlier run offered for adoption ([`FakeRuntime::restarted`]).
    pub adoptable: Vec<WorkerId>,
    pub highest_adopted: Option<WorkerId>,
    /// Operator state by service, as the pools saved it.
    pub operator: HashMap<String, OperatorState>,
    /// What an earlier run saved, offered once per service ([`FakeRuntime::restarted`]).
    pub operator_restored: HashMap<String, OperatorState>,
}

/// A runtime whose workers are entries in a map. Addresses are never reused, as the real
/// allocator's quarantine guarantees within its window.
#[derive(Debug, Default, Clone)]
pub struct FakeRuntime(pub Arc<Mutex<RuntimeState>>);

impl FakeRuntime {
    pub fn state(&self) -> std::sync::MutexGuard<'_, RuntimeState> {
        self.0.lock().unwrap()
    }
    pub fn exit(&self, id: WorkerId, status: ExitStatus) {
        let state = self.state();
        state.workers[&id].exit.send_replace(Some(status));
    }
    pub fn set_usage(&self, id: WorkerId, usage: ResourceUsage) {
        self.state().workers.get_mut(&id).unwrap().usage = usage;
    }
    /// What a poold started after a crash of the one using this runtime finds: every
    /// worker still running lives on (same id, slot, address, pid) and is offered for
    /// adoption, as the real runtime does from its state record; the rest is gone. The old
    /// runtime is left alone (a pool still running on it acts on it only).
    pub fn restarted(&self) -> FakeRuntime {
        let old = self.state();
        let mut state = RuntimeState {
            next_host: old.next_host,
            operator: old.operator.clone(),
            operator_restored: old.operator.clone(),
            ..RuntimeState::default()
        };
        for (id, worker) in &old.workers {
            if worker.torn_down || worker.exit.borrow().is_some() {
                continue;
            }
            let (exit, _) = watch::channel(None);
            state.workers.insert(
                *id,
                FakeWorker {
                    exit,
                    usage: worker.usage,
                    torn_down: false,
                    last_output: None,
                    rootfs: worker.rootfs.clone(),
                    slot: worker.slot,
                    addr: worker.addr,
                    pid: worker.pid,
                    config: worker.config.clone(),
                },
            );
            state.adoptable.push(*id);
        }
        state.adoptable.sort();
        state.highest_adopted = state.adoptable.last().copied();
        FakeRuntime(Arc::new(Mutex::new(state)))
    }

    pub fn signals_to(&self, id: WorkerId) -> Vec<StopSignal> {
        self.state()
            .signals
            .iter()
            .filter(|(w, _, _)| *w == id)
            .map(|(_, s, _)| *s)
            .collect()
    }
}

#[async_trait]
impl WorkerRuntime for FakeRuntime {
    async fn spawn(&self, spec: &WorkerSpec) -> Result<SpawnedWorker, RuntimeError> {
        let delay = {
            let mut state = self.state();
            state.spawning += 1;
            state.spawning_max = state.spawning_max.max(state.spawning);
            state.spawn_delay
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.state();
        state.spawning -= 1;
        state.spawn_attempts.push((spec.slot, Instant::now()));
        if state.fail_spawns || state.fail_rootfs.as_ref() == Some(&spec.service.rootfs) {
            return Err(RuntimeError {
                worker: spec.id,
                operation: "spawn",
                source: crate::sandbox::SandboxError::InvalidSpec {
                    field: "command",
                    reason: "exec failed".into(),
                }
                .into(),
            });
        }
        state.next_host += 1;
        let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + state.next_host));
        state.addresses_handed_out.push(addr);
        let (exit, _) = watch::channel(None);
        let pid = 1000 + state.next_host;
        state.workers.insert(
            spec.id,
            FakeWorker {
                exit,
                usage: ResourceUsage::default(),
                last_output: None,
                torn_down: false,
                rootfs: spec.service.rootfs.clone(),
                slot: spec.slot,
                addr,
                pid,
                config: spec.service.clone(),
            },
        );
        Ok(SpawnedWorker {
            addr,
            pid,
            chroot: false,
        })
    }

    async fn wait(&self, worker: WorkerId) -> ExitStatus {
        let mut exit = self.state().workers[&worker].exit.subscribe();
        let status = *exit
            .wait_for(Option::is_some)
            .await
            .expect("sender lives in the map");
        status.expect("waited for Some")
    }

    fn signal(&self, worker: WorkerId, signal: StopSignal) -> Result<(), RuntimeError> {
        let mut state = self.state();
        state.signals.push((worker, signal, Instant::now()));
        let exit = match signal {
            StopSignal::Term if state.ignore_term => None,
            StopSignal::Term => Some(ExitStatus::Signal(15)),
            StopSignal::Kill => Some(ExitStatus::Signal(9)),
        };
        if let Some(status) = exit {
            state.workers[&worker]
                .exit
                .send_if_modified(|current| current.is_none() && current.replace(status).is_none());
        }
        Ok(())
    }

    fn usage(&self, worker: WorkerId) -> Result<ResourceUsage, RuntimeError> {
        let mut state = self.state();
        state.usage_reads.push(worker);
        Ok(state.workers[&worker].usage)
    }

    fn last_output(&self, worker: WorkerId) -> Option<String> {
        self.state().workers.get(&worker)?.last_output.clone()
    }

    fn save_operator_state(&self, service: &str, state: &OperatorState) {
        let mut runtime = self.state();
        if *state == OperatorState::default() {
            runtime.operator.remove(service);
        } else {
            runtime.operator.insert(service.to_owned(), state.clone());
        }
    }

    fn take_operator_state(&self, service: &str) -> Option<OperatorState> {
        self.state().operator_restored.remove(service)
    }

    fn take_adopted(&self, service: &ServiceConfig) -> Vec<AdoptedWorker> {
        let mut state = self.state();
        let ids = std::mem::take(&mut state.adoptable);
        let (mine, others): (Vec<WorkerId>, Vec<WorkerId>) = ids
            .into_iter()
            .partition(|id| state.workers[id].config.name == service.name);
        state.adoptable = others;
        mine.into_iter()
            .map(|id| {
                let worker = &state.workers[&id];
                let was = serde_json::to_value(&*worker.config).unwrap();
                AdoptedWorker {
                    id,
                    slot: worker.slot,
                    addr: worker.addr,
                    pid: worker.pid,
                    matches_config: crate::config::rolling_keys(&was, service).is_empty(),
                }
            })
            .collect()
    }

    fn highest_adopted(&self) -> Option<WorkerId> {
        self.state().highest_adopted
    }

    async fn promoted(&self, worker: WorkerId, slot: u32) {
        if let Some(entry) = self.state().workers.get_mut(&worker) {
            entry.slot = slot;
        }
    }

    async fn teardown(&self, worker: WorkerId) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let entry = state.workers.get_mut(&worker).unwrap();
        assert!(
            entry.exit.borrow().is_some(),
            "teardown of a running worker"
        );
        assert!(!entry.torn_down, "double teardown");
        entry.torn_down = true;
        Ok(())
    }
}
