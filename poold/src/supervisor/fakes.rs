//! Recording fakes of the kernel-facing traits, for the supervisor's unit tests.

use super::runtime::*;
use crate::balancer::{BackendStats, Balancer, BalancerError, BalancerKind, VirtualService};
use crate::config::HealthConfig;
use crate::health::{HealthChecker, HealthFailure};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug)]
pub struct FakeWorker {
    pub exit: watch::Sender<Option<ExitStatus>>,
    pub usage: ResourceUsage,
    pub torn_down: bool,
    /// What the worker "wrote" last (its stdout/stderr).
    pub last_output: Option<String>,
}

#[derive(Debug, Default)]
pub struct RuntimeState {
    next_host: u32,
    pub workers: HashMap<WorkerId, FakeWorker>,
    /// Every spawn attempt, with its time.
    pub spawn_attempts: Vec<(u32, Instant)>,
    pub fail_spawns: bool,
    pub ignore_term: bool,
    pub signals: Vec<(WorkerId, StopSignal, Instant)>,
    pub addresses_handed_out: Vec<IpAddr>,
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
        let mut state = self.state();
        state.spawn_attempts.push((spec.slot, Instant::now()));
        if state.fail_spawns {
            return Err(RuntimeError {
                worker: spec.id,
                operation: "spawn",
                message: "exec failed".into(),
            });
        }
        state.next_host += 1;
        let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + state.next_host));
        state.addresses_handed_out.push(addr);
        let (exit, _) = watch::channel(None);
        state.workers.insert(
            spec.id,
            FakeWorker {
                exit,
                usage: ResourceUsage::default(),
                last_output: None,
                torn_down: false,
            },
        );
        Ok(SpawnedWorker {
            addr,
            pid: 1000 + state.next_host,
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
        Ok(self.state().workers[&worker].usage)
    }

    fn last_output(&self, worker: WorkerId) -> Option<String> {
        self.state().workers.get(&worker)?.last_output.clone()
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

#[derive(Debug, Default)]
pub struct BalancerState {
    pub service: bool,
    /// The service takes new connections (false after stop_accepting).
    pub accepting: bool,
    pub backends: HashMap<SocketAddr, BackendStats>,
    /// Backends hidden from stats dumps (as if the dump came back without them).
    pub hidden: HashSet<SocketAddr>,
    pub fail_stats: bool,
    /// Once `desired` weighted backends existed: the fewest seen after any change.
    pub desired: usize,
    pub min_weighted_after_full: Option<usize>,
    pub max_backends: usize,
    pub removed_with_active: Vec<SocketAddr>,
}

impl BalancerState {
    pub fn weighted(&self) -> usize {
        self.backends.values().filter(|b| b.weight > 0).count()
    }
    fn changed(&mut self) {
        let weighted = self.weighted();
        self.max_backends = self.max_backends.max(self.backends.len());
        if let Some(min) = &mut self.min_weighted_after_full {
            *min = (*min).min(weighted);
        } else if weighted >= self.desired {
            self.min_weighted_after_full = Some(weighted);
        }
    }
}

#[derive(Debug, Clone)]
pub struct FakeBalancer(pub Arc<Mutex<BalancerState>>);

impl FakeBalancer {
    pub fn new(desired: usize) -> Self {
        Self(Arc::new(Mutex::new(BalancerState {
            desired,
            ..Default::default()
        })))
    }
    pub fn state(&self) -> std::sync::MutexGuard<'_, BalancerState> {
        self.0.lock().unwrap()
    }
    pub fn set_active(&self, backend: SocketAddr, active: u64) {
        self.state().backends.get_mut(&backend).unwrap().active = active;
    }
    /// The backend sent `bytes` more to its clients (if it is still there).
    pub fn add_out_bytes(&self, backend: SocketAddr, bytes: u64) {
        if let Some(backend) = self.state().backends.get_mut(&backend) {
            backend.out_bytes += bytes;
        }
    }
    pub fn weighted_backends(&self) -> Vec<SocketAddr> {
        let mut list: Vec<_> = self
            .state()
            .backends
            .iter()
            .filter(|(_, b)| b.weight > 0)
            .map(|(a, _)| *a)
            .collect();
        list.sort();
        list
    }
}

#[async_trait]
impl Balancer for FakeBalancer {
    fn kind(&self) -> BalancerKind {
        BalancerKind::Proxy
    }
    async fn ensure_service(&self, _service: &VirtualService) -> Result<(), BalancerError> {
        let mut state = self.state();
        state.service = true;
        state.accepting = true;
        Ok(())
    }
    async fn stop_accepting(&self, _service: &VirtualService) -> Result<(), BalancerError> {
        self.state().accepting = false;
        Ok(())
    }
    async fn remove_service(&self, _service: &VirtualService) -> Result<(), BalancerError> {
        let mut state = self.state();
        state.service = false;
        state.backends.clear();
        Ok(())
    }
    async fn add_backend(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
        weight: u32,
    ) -> Result<(), BalancerError> {
        let mut state = self.state();
        if state.backends.contains_key(&backend) {
            return Err(BalancerError::BackendExists {
                service: service.name.clone(),
                backend,
            });
        }
        state.backends.insert(
            backend,
            BackendStats {
                weight,
                ..Default::default()
            },
        );
        state.changed();
        Ok(())
    }
    async fn set_weight(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
        weight: u32,
    ) -> Result<(), BalancerError> {
        let mut state = self.state();
        let entry =
            state
                .backends
                .get_mut(&backend)
                .ok_or_else(|| BalancerError::NoSuchBackend {
                    service: service.name.clone(),
                    backend,
                })?;
        entry.weight = weight;
        state.changed();
        Ok(())
    }
    async fn remove_backend(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
    ) -> Result<(), BalancerError> {
        let mut state = self.state();
        let removed =
            state
                .backends
                .remove(&backend)
                .ok_or_else(|| BalancerError::NoSuchBackend {
                    service: service.name.clone(),
                    backend,
                })?;
        if removed.active > 0 {
            state.removed_with_active.push(backend);
        }
        state.changed();
        Ok(())
    }
    async fn backend_stats(
        &self,
        service: &VirtualService,
    ) -> Result<HashMap<SocketAddr, BackendStats>, BalancerError> {
        let state = self.state();
        if state.fail_stats || !state.service {
            return Err(BalancerError::NoSuchService {
                service: service.name.clone(),
            });
        }
        Ok(state
            .backends
            .iter()
            .filter(|(a, _)| !state.hidden.contains(a))
            .map(|(a, b)| (*a, *b))
            .collect())
    }
}

/// Healthy unless told otherwise, per address: refused (field 0) or timing out (field 1).
#[derive(Debug, Default, Clone)]
pub struct FakeHealth(
    pub Arc<Mutex<HashSet<IpAddr>>>,
    pub Arc<Mutex<HashSet<IpAddr>>>,
);

impl FakeHealth {
    /// Checks of `addr` time out (a starved or hung worker), or not.
    pub fn set_timing_out(&self, addr: IpAddr, timing_out: bool) {
        let mut set = self.1.lock().unwrap();
        if timing_out {
            set.insert(addr);
        } else {
            set.remove(&addr);
        }
    }
    pub fn set_unhealthy(&self, addr: IpAddr, unhealthy: bool) {
        let mut set = self.0.lock().unwrap();
        if unhealthy {
            set.insert(addr);
        } else {
            set.remove(&addr);
        }
    }
    /// Every check fails with a local error (poold out of file descriptors), or not.
    pub fn all_local_errors(&self, local: bool) {
        let mut set = self.0.lock().unwrap();
        if local {
            set.insert(IpAddr::V4(Ipv4Addr::BROADCAST));
        } else {
            set.remove(&IpAddr::V4(Ipv4Addr::BROADCAST));
        }
    }
    /// Makes every address unhealthy, including ones not handed out yet.
    pub fn all_unhealthy(&self) {
        self.0
            .lock()
            .unwrap()
            .insert(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
}

#[async_trait]
impl HealthChecker for FakeHealth {
    async fn check(&self, target: SocketAddr, spec: &HealthConfig) -> Result<(), HealthFailure> {
        if self.1.lock().unwrap().contains(&target.ip()) {
            return Err(HealthFailure::Timeout(spec.timeout));
        }
        let set = self.0.lock().unwrap();
        if set.contains(&IpAddr::V4(Ipv4Addr::BROADCAST)) {
            Err(HealthFailure::Local(
                "Too many open files (os error 24)".into(),
            ))
        } else if set.contains(&target.ip()) || set.contains(&IpAddr::V4(Ipv4Addr::UNSPECIFIED)) {
            Err(HealthFailure::Worker("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

/// A one-service config named `web` with `workers` workers; `extra` is appended TOML (for
/// example `[service.recycle]` settings).
pub fn web_service(workers: u32, extra: &str) -> crate::config::ServiceConfig {
    let text = format!(
        "[[service]]\nname = \"web\"\nlisten = \"10.212.0.1:80\"\nworkers = {workers}\nport = 8080\n\
         rootfs = \"host\"\ncommand = [\"/bin/app\"]\n{extra}"
    );
    crate::config::Config::parse(&text, std::path::Path::new("test.toml"))
        .unwrap()
        .services
        .remove(0)
}
