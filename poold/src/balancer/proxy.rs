//! The in-process TCP proxy balancer: listens on each service's listen address and splices
//! every client connection to a backend chosen by weighted least-connection.
//!
//! Weight 0 takes a backend out of scheduling while its open connections continue; removing
//! a backend does not cut its open connections either. Counts are exact: `active` is the
//! number of spliced (or connecting) connections, `total` the connections ever established.

use super::{BackendStats, Balancer, BalancerError, BalancerKind, VirtualService};
use async_trait::async_trait;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How long to wait for a backend to accept before trying another.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
struct Backend {
    addr: SocketAddr,
    weight: AtomicU32,
    active: AtomicU64,
    total: AtomicU64,
}

#[derive(Debug)]
struct ProxyService {
    listen: SocketAddr,
    backends: Arc<Mutex<Vec<Arc<Backend>>>>,
    acceptor: JoinHandle<()>,
}

impl Drop for ProxyService {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Decrements a backend's active count when the connection ends, however it ends.
struct ActiveGuard(Arc<Backend>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
pub struct ProxyBalancer {
    services: Mutex<HashMap<String, ProxyService>>,
}

impl ProxyBalancer {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_backends<T>(
        &self,
        service: &VirtualService,
        f: impl FnOnce(&mut Vec<Arc<Backend>>) -> Result<T, BalancerError>,
    ) -> Result<T, BalancerError> {
        let services = self.services.lock().expect("proxy services lock");
        let entry = services
            .get(&service.name)
            .ok_or_else(|| BalancerError::NoSuchService {
                service: service.name.clone(),
            })?;
        let mut backends = entry.backends.lock().expect("proxy backends lock");
        f(&mut backends)
    }
}

/// Weighted least-connection: the lowest active/weight among weighted backends not yet
/// tried; counts the connection as active before releasing the lock so that concurrent
/// accepts spread out.
fn choose(backends: &Mutex<Vec<Arc<Backend>>>, tried: &[SocketAddr]) -> Option<ActiveGuard> {
    let backends = backends.lock().expect("proxy backends lock");
    let best = backends
        .iter()
        .filter(|b| b.weight.load(Ordering::SeqCst) > 0 && !tried.contains(&b.addr))
        .min_by(|a, b| {
            // a.active / a.weight < b.active / b.weight, without division.
            let left = u128::from(a.active.load(Ordering::SeqCst))
                * u128::from(b.weight.load(Ordering::SeqCst));
            let right = u128::from(b.active.load(Ordering::SeqCst))
                * u128::from(a.weight.load(Ordering::SeqCst));
            left.cmp(&right)
        })?;
    best.active.fetch_add(1, Ordering::SeqCst);
    Some(ActiveGuard(best.clone()))
}

async fn serve_client(
    service: String,
    mut client: TcpStream,
    peer: SocketAddr,
    backends: Arc<Mutex<Vec<Arc<Backend>>>>,
) {
    let mut tried = Vec::new();
    loop {
        let Some(guard) = choose(&backends, &tried) else {
            warn!(service = %service, client = %peer, tried = tried.len(), "no backend available; closing the connection");
            return;
        };
        let backend = guard.0.addr;
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(mut upstream)) => {
                guard.0.total.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                {
                    debug!(service = %service, client = %peer, %backend, %error, "connection ended with an error");
                }
                drop(guard);
                return;
            }
            Ok(Err(error)) => {
                warn!(service = %service, %backend, %error, "backend refused; trying another")
            }
            Err(_) => {
                warn!(service = %service, %backend, "backend connect timed out; trying another")
            }
        }
        tried.push(backend);
    }
}

#[async_trait]
impl Balancer for ProxyBalancer {
    fn kind(&self) -> BalancerKind {
        BalancerKind::Proxy
    }

    async fn ensure_service(&self, service: &VirtualService) -> Result<(), BalancerError> {
        if let Some(existing) = self
            .services
            .lock()
            .expect("proxy services lock")
            .get(&service.name)
        {
            if existing.listen == service.listen {
                return Ok(());
            }
        }
        let listener =
            TcpListener::bind(service.listen)
                .await
                .map_err(|source| BalancerError::Listen {
                    service: service.name.clone(),
                    listen: service.listen,
                    source,
                })?;
        let backends: Arc<Mutex<Vec<Arc<Backend>>>> = Arc::default();
        let name = service.name.clone();
        let accept_backends = backends.clone();
        let acceptor = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((client, peer)) => {
                        tokio::spawn(serve_client(
                            name.clone(),
                            client,
                            peer,
                            accept_backends.clone(),
                        ));
                    }
                    Err(error) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        warn!(service = %name, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        info!(service = %service.name, listen = %service.listen, "proxy listening");
        self.services.lock().expect("proxy services lock").insert(
            service.name.clone(),
            ProxyService {
                listen: service.listen,
                backends,
                acceptor,
            },
        );
        Ok(())
    }

    async fn stop_accepting(&self, service: &VirtualService) -> Result<(), BalancerError> {
        let services = self.services.lock().expect("proxy services lock");
        let entry = services
            .get(&service.name)
            .ok_or_else(|| BalancerError::NoSuchService {
                service: service.name.clone(),
            })?;
        // Ending the acceptor closes the listening socket; spliced connections are tasks
        // of their own and continue.
        entry.acceptor.abort();
        info!(service = %service.name, listen = %service.listen, "proxy stopped accepting");
        Ok(())
    }

    async fn remove_service(&self, service: &VirtualService) -> Result<(), BalancerError> {
        self.services
            .lock()
            .expect("proxy services lock")
            .remove(&service.name)
            .map(drop)
            .ok_or_else(|| BalancerError::NoSuchService {
                service: service.name.clone(),
            })
    }

    async fn add_backend(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
        weight: u32,
    ) -> Result<(), BalancerError> {
        self.with_backends(service, |backends| {
            if backends.iter().any(|b| b.addr == backend) {
                return Err(BalancerError::BackendExists {
                    service: service.name.clone(),
                    backend,
                });
            }
            backends.push(Arc::new(Backend {
                addr: backend,
                weight: AtomicU32::new(weight),
                active: AtomicU64::new(0),
                total: AtomicU64::new(0),
            }));
            Ok(())
        })
    }

    async fn set_weight(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
        weight: u32,
    ) -> Result<(), BalancerError> {
        self.with_backends(service, |backends| {
            let entry = backends.iter().find(|b| b.addr == backend).ok_or_else(|| {
                BalancerError::NoSuchBackend {
                    service: service.name.clone(),
                    backend,
                }
            })?;
            entry.weight.store(weight, Ordering::SeqCst);
            Ok(())
        })
    }

    async fn remove_backend(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
    ) -> Result<(), BalancerError> {
        self.with_backends(service, |backends| {
            let position = backends
                .iter()
                .position(|b| b.addr == backend)
                .ok_or_else(|| BalancerError::NoSuchBackend {
                    service: service.name.clone(),
                    backend,
                })?;
            // Open connections hold their own reference and continue.
            backends.remove(position);
            Ok(())
        })
    }

    async fn backend_stats(
        &self,
        service: &VirtualService,
    ) -> Result<HashMap<SocketAddr, BackendStats>, BalancerError> {
        self.with_backends(service, |backends| {
            Ok(backends
                .iter()
                .map(|b| {
                    let stats = BackendStats {
                        weight: b.weight.load(Ordering::SeqCst),
                        active: b.active.load(Ordering::SeqCst),
                        inactive: 0,
                        total: b.total.load(Ordering::SeqCst),
                    };
                    (b.addr, stats)
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests;
