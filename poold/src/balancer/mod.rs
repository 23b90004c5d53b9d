//! Load balancers in front of a service's workers, behind one trait: the in-process TCP
//! proxy ([`proxy::ProxyBalancer`]) and kernel IPVS.

pub mod ipvs;
pub mod proxy;

#[cfg(test)]
pub(crate) mod fake;

pub use crate::config::BackendConnect;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// A virtual service as the balancer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualService {
    pub name: String,
    pub listen: SocketAddr,
    pub scheduler: String,
    /// How the proxy balancer treats the service's clients; IPVS ignores it.
    pub clients: ClientPolicy,
}

/// The proxy balancer's rules for one service's client connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Clients held open at once; beyond, the one idle the longest makes room.
    pub max: usize,
    pub connect: BackendConnect,
}

impl Default for ClientPolicy {
    /// The config's defaults.
    fn default() -> Self {
        Self {
            max: 4096,
            connect: BackendConnect::OnAccept,
        }
    }
}

/// Counters of one backend (IPVS: real server).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackendStats {
    pub weight: u32,
    /// Established connections (IPVS ActiveConn).
    pub active: u64,
    /// Connections closing or not yet established (IPVS InActConn); the proxy has none.
    pub inactive: u64,
    /// Connections served since the backend was added.
    pub total: u64,
    /// Bytes the backend sent to its clients since it was added (IPVS OutBytes; the proxy
    /// counts what it copied from the backend): grows only while the worker answers.
    pub out_bytes: u64,
}

/// Every backend's counters from one dump, sorted by address and found by binary search.
/// The pool reads it twice a second and looks each of its workers up: built as a hash map,
/// building and hashing it showed in poold's idle profile at 1,000 workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendStatsTable(Vec<(SocketAddr, BackendStats)>);

impl BackendStatsTable {
    pub fn get(&self, backend: &SocketAddr) -> Option<&BackendStats> {
        self.0
            .binary_search_by(|(addr, _)| addr.cmp(backend))
            .ok()
            .map(|index| &self.0[index].1)
    }

    pub fn contains_key(&self, backend: &SocketAddr) -> bool {
        self.get(backend).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The backends in address order.
    pub fn iter(&self) -> impl Iterator<Item = (&SocketAddr, &BackendStats)> {
        self.0.iter().map(|(addr, stats)| (addr, stats))
    }
}

/// In any order; of an address given twice the first is kept (a balancer lists each once).
impl FromIterator<(SocketAddr, BackendStats)> for BackendStatsTable {
    fn from_iter<I: IntoIterator<Item = (SocketAddr, BackendStats)>>(iter: I) -> Self {
        let mut backends: Vec<_> = iter.into_iter().collect();
        // Stable: the first of equal addresses stays first, and dedup keeps it.
        backends.sort_by_key(|(addr, _)| *addr);
        backends.dedup_by_key(|(addr, _)| *addr);
        Self(backends)
    }
}

impl<'a> IntoIterator for &'a BackendStatsTable {
    type Item = (&'a SocketAddr, &'a BackendStats);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (SocketAddr, BackendStats)>,
        fn(&'a (SocketAddr, BackendStats)) -> (&'a SocketAddr, &'a BackendStats),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(addr, stats)| (addr, stats))
    }
}

impl std::ops::Index<&SocketAddr> for BackendStatsTable {
    type Output = BackendStats;

    fn index(&self, backend: &SocketAddr) -> &BackendStats {
        self.get(backend)
            .unwrap_or_else(|| panic!("no backend {backend} in the table"))
    }
}

/// Which balancer implementation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BalancerKind {
    Ipvs,
    Proxy,
}

impl fmt::Display for BalancerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipvs => "ipvs",
            Self::Proxy => "proxy",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    #[error("service {service}: cannot listen on {listen}: {source}")]
    Listen {
        service: String,
        listen: SocketAddr,
        source: std::io::Error,
    },
    #[error("service {service} is not configured in the balancer")]
    NoSuchService { service: String },
    #[error("service {service}: backend {backend} is not configured in the balancer")]
    NoSuchBackend {
        service: String,
        backend: SocketAddr,
    },
    #[error("service {service}: backend {backend} already exists")]
    BackendExists {
        service: String,
        backend: SocketAddr,
    },
    #[error("service {service}: {operation}: {message}")]
    Kernel {
        service: String,
        operation: &'static str,
        message: String,
    },
}

impl BalancerError {
    /// `backend` is not one of `service`'s backends.
    pub fn no_such_backend(service: &VirtualService, backend: SocketAddr) -> Self {
        Self::NoSuchBackend {
            service: service.name.clone(),
            backend,
        }
    }
}

/// Where traffic for a service goes. Implementations must be cheap to call once per
/// service per supervisor tick.
#[async_trait]
pub trait Balancer: Send + Sync + 'static {
    fn kind(&self) -> BalancerKind;
    /// The listening sockets a new poold takes over at an upgrade, by name
    /// (`proxy:SERVICE`); none when the kernel listens (IPVS).
    fn handoff_listeners(&self) -> Vec<(String, std::os::fd::RawFd)> {
        Vec::new()
    }
    /// After an upgrade handed the listeners over: accept nothing more (the sockets stay
    /// open in the new poold); open connections continue.
    fn stop_accepting_all(&self) {}
    /// Client connections this process relays (the proxy); 0 when the kernel forwards.
    fn open_connections(&self) -> u64 {
        0
    }
    /// Creates the virtual service, or leaves an identical existing one alone.
    async fn ensure_service(&self, service: &VirtualService) -> Result<(), BalancerError>;
    /// No new connections for the service (shutdown); open ones continue and stats keep
    /// counting them, so the workers can drain before the service is removed.
    async fn stop_accepting(&self, service: &VirtualService) -> Result<(), BalancerError>;
    async fn remove_service(&self, service: &VirtualService) -> Result<(), BalancerError>;
    async fn add_backend(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
        weight: u32,
    ) -> Result<(), BalancerError>;
    /// Weight 0: no new connections; existing ones continue.
    async fn set_weight(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
        weight: u32,
    ) -> Result<(), BalancerError>;
    /// Removes a backend. Callers only remove drained backends: with IPVS's
    /// expire_nodest_conn, connections of a removed real server are reset.
    async fn remove_backend(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
    ) -> Result<(), BalancerError>;
    /// One dump of every backend of the service. A missing service is an error, never an
    /// empty map (an empty GET_DEST dump is also what IPVS returns for a missing service).
    async fn backend_stats(
        &self,
        service: &VirtualService,
    ) -> Result<BackendStatsTable, BalancerError>;
}

#[cfg(test)]
mod tests;
