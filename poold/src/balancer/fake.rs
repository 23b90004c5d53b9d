//! A recording fake of [`Balancer`] for unit tests of what drives it.

use super::*;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

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
        let entry = state
            .backends
            .get_mut(&backend)
            .ok_or_else(|| BalancerError::no_such_backend(service, backend))?;
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
        let removed = state
            .backends
            .remove(&backend)
            .ok_or_else(|| BalancerError::no_such_backend(service, backend))?;
        if removed.active > 0 {
            state.removed_with_active.push(backend);
        }
        state.changed();
        Ok(())
    }
    async fn backend_stats(
        &self,
        service: &VirtualService,
    ) -> Result<BackendStatsTable, BalancerError> {
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
