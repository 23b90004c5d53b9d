//! The in-process TCP proxy balancer: listens on each service's listen address and splices
//! every client connection to a backend chosen by weighted least-connection.
//!
//! Weight 0 takes a backend out of scheduling while its open connections continue. Removing
//! a backend (its worker is stopped or gone: after the drain, or at the drain timeout)
//! closes its remaining connections on purpose, like IPVS with expire_nodest_conn; a
//! backend that closes its side ends the client's connection too. Either way no client
//! stays connected to a worker that is gone, and no backend socket lingers in CLOSE-WAIT.
//! Counts are exact: `active` is the number of spliced (or connecting) connections, `total`
//! the connections ever established, `out_bytes` what the backend sent, as it is copied.
//!
//! Each service holds at most `max_client_connections` clients; beyond, the client idle the
//! longest makes room ([`crate::conn_limit`]). With `backend_connect = "on-client-data"` a
//! client is connected to a worker only once it has sent something, so idle connections
//! (a flood of them, or a browser's speculative preconnects) never reach the workers.
//! Both apply at once when changed (a reload calls `ensure_service` again).
//!
//! A client that finds no backend at all (after a restart or an upgrade the listener accepts
//! before the pool has added its adopted workers) waits up to [`FIRST_BACKEND_WAIT`] for a
//! first one, woken when a backend is added or weighted, and is closed only after that.
//!
//! Connections run on the proxy's own threads, one per CPU, each with a current-thread tokio
//! runtime and its own epoll instance ([`Shards`]), as haproxy's threads do: every thread
//! accepts from every listening socket and keeps the connections it accepted, so a
//! connection's reads, writes and wake-ups stay on one thread (no work stealing, no
//! cross-thread wake-ups; profiled against the daemon's multi-thread runtime in
//! tests/bench/README.md). The daemon's runtime only changes backends and reads counters.

use super::{
    BackendConnect, BackendStats, BackendStatsTable, Balancer, BalancerError, BalancerKind,
    ClientPolicy, VirtualService,
};
use crate::conn_limit::{accept_failed, Admission, ConnLimiter, FdLease};
use async_trait::async_trait;
use nix::sys::socket::{setsockopt, sockopt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How long to wait for a backend to accept before trying another.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client that finds no backend at all waits for a first one before it is
/// closed: after a restart or an upgrade the listener accepts before the pool has added the
/// workers it adopted (milliseconds on a host, ~0.4 s in the VM).
const FIRST_BACKEND_WAIT: Duration = CONNECT_TIMEOUT;

#[derive(Debug)]
struct Backend {
    addr: SocketAddr,
    weight: AtomicU32,
    active: AtomicU64,
    total: AtomicU64,
    out_bytes: AtomicU64,
    /// Set when the backend is removed: its connections close.
    removed: watch::Sender<bool>,
}

/// A service's backends, and a signal for the clients waiting for a first one.
#[derive(Debug, Default)]
struct Backends {
    list: Mutex<Vec<Arc<Backend>>>,
    /// Sent when a backend is added or given a weight: a client that found none tries again.
    schedulable: watch::Sender<()>,
}

impl Backends {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Backend>>> {
        self.list.lock().expect("proxy backends lock")
    }

    /// Weighted least-connection: the lowest active/weight among weighted backends not yet
    /// tried; counts the connection as active before releasing the lock so that concurrent
    /// accepts spread out.
    fn choose(&self, tried: &[SocketAddr]) -> Option<ActiveGuard> {
        let backends = self.lock();
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

    /// The first choice for a new client: when no backend can take it yet, waits up to
    /// [`FIRST_BACKEND_WAIT`] for one to be added or weighted (no polling) instead of
    /// closing the client at once.
    async fn choose_first(&self) -> Option<ActiveGuard> {
        let deadline = tokio::time::Instant::now() + FIRST_BACKEND_WAIT;
        // Subscribed before looking: a backend added from now on wakes this client.
        let mut changed = self.schedulable.subscribe();
        loop {
            if let Some(guard) = self.choose(&[]) {
                return Some(guard);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                // The deadline passed (or the service is gone with its sender).
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

#[derive(Debug)]
struct ProxyService {
    listen: SocketAddr,
    backends: Arc<Backends>,
    limiter: ConnLimiter,
    wait_for_data: Arc<AtomicBool>,
    /// Kept for an upgrade (handed to the new poold) until this poold stops accepting: then
    /// it closes with the acceptors' descriptors, and a client that comes is refused rather
    /// than left in a backlog nobody accepts from (the new poold holds its own descriptor).
    listener: Mutex<Option<std::net::TcpListener>>,
    /// One accept loop per proxy thread, each on its own descriptor of the listening socket:
    /// the socket closes when the last one ends.
    acceptors: Vec<JoinHandle<()>>,
}

impl ProxyService {
    /// New clients follow `policy` from now on; a lower limit makes room as clients come.
    fn set_client_policy(&self, policy: ClientPolicy) {
        self.limiter.set_max(policy.max);
        self.wait_for_data.store(
            policy.connect == BackendConnect::OnClientData,
            Ordering::Relaxed,
        );
    }

    fn stop_accepting(&self) {
        for acceptor in &self.acceptors {
            acceptor.abort();
        }
        drop(self.listener.lock().expect("proxy listener lock").take());
    }
}

impl Drop for ProxyService {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}

/// The proxy's threads: one current-thread runtime each. Dropping this ends them, and with
/// their runtimes every connection they hold.
#[derive(Debug)]
struct Shards {
    handles: Vec<tokio::runtime::Handle>,
    /// Dropped with the balancer: each thread's `block_on` returns and its runtime drops.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Shards {
    fn start() -> std::io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let mut handles = Vec::with_capacity(threads);
        let mut stop = Vec::with_capacity(threads);
        for index in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("proxy-{index}"))
                .spawn(move || {
                    // Ends when the balancer is dropped (the sender with it).
                    let _ = runtime.block_on(stop_rx);
                })?;
            stop.push(stop_tx);
        }
        debug!(threads, "proxy threads started");
        Ok(Self {
            handles,
            _stop: stop,
        })
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
    /// Started with the first service.
    shards: OnceLock<Shards>,
}

/// A client idle at least this long may be closed to make room for a new one at the limit.
pub const CLIENT_MIN_IDLE: Duration = Duration::from_secs(1);

impl ProxyBalancer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Clients waiting for a first backend look again (nothing to do without them).
    fn wake_waiting_clients(&self, service: &VirtualService) {
        if let Some(entry) = self
            .services
            .lock()
            .expect("proxy services lock")
            .get(&service.name)
        {
            entry.backends.schedulable.send_replace(());
        }
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
        let mut backends = entry.backends.lock();
        f(&mut backends)
    }

    fn shards(&self) -> std::io::Result<&Shards> {
        if let Some(shards) = self.shards.get() {
            return Ok(shards);
        }
        let started = Shards::start()?;
        // Only the supervisor's task adds services; a lost race just drops the spare threads.
        Ok(self.shards.get_or_init(|| started))
    }
}

async fn serve_client(
    service: String,
    client: TcpStream,
    peer: SocketAddr,
    backends: Arc<Backends>,
    admission: Admission,
    wait_for_data: bool,
) {
    if wait_for_data {
        // Until its first bytes the client is idle (evictable) and no worker is involved.
        let mut first = [0u8; 1];
        tokio::select! {
            peeked = client.peek(&mut first) => match peeked {
                Ok(0) => {
                    debug!(service = %service, client = %peer, "closed before sending anything");
                    return;
                }
                Ok(_) => {}
                Err(error) => {
                    debug!(service = %service, client = %peer, %error, "failed before sending anything");
                    return;
                }
            },
            () = admission.evicted() => {
                debug!(service = %service, client = %peer, "closed before sending anything, to make room for a new client");
                return;
            }
        }
    }
    let mut tried = Vec::new();
    loop {
        let chosen = if tried.is_empty() {
            tokio::select! {
                chosen = backends.choose_first() => chosen,
                () = admission.evicted() => {
                    debug!(service = %service, client = %peer, "closed while waiting for a backend, to make room for a new client");
                    return;
                }
            }
        } else {
            backends.choose(&tried)
        };
        let Some(guard) = chosen else {
            warn!(service = %service, client = %peer, tried = tried.len(), "no backend available; closing the connection");
            return;
        };
        let backend = guard.0.addr;
        // Subscribed before connecting: a removal from now on is seen.
        let removed = guard.0.removed.subscribe();
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend));
        // A worker slow to accept must not keep an evicted client's descriptors.
        let connected = tokio::select! {
            connected = connect => connected,
            () = admission.evicted() => {
                debug!(service = %service, client = %peer, %backend, "closed while connecting, to make room for a new client");
                return;
            }
        };
        match connected {
            Ok(Ok(upstream)) => {
                guard.0.total.fetch_add(1, Ordering::SeqCst);
                // The client's socket has TCP_NODELAY from the listening socket.
                let _ = upstream.set_nodelay(true);
                let ended = splice(client, upstream, &guard.0, &admission, removed).await;
                debug!(service = %service, client = %peer, %backend, %ended, "connection closed");
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

/// Why a spliced connection was closed.
#[derive(Debug)]
enum SpliceEnd {
    /// The backend closed its side (or failed): nothing more can come, so the client's
    /// connection closes too instead of lingering half-open.
    BackendDone(std::io::Result<u64>),
    /// The client's connection failed.
    ClientFailed(std::io::Error),
    /// The backend was removed from the service (its worker is stopped or gone).
    BackendRemoved,
    /// The service's connection limit made room for a new client.
    Evicted,
}

impl std::fmt::Display for SpliceEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BackendDone(Ok(bytes)) => write!(f, "backend closed after {bytes} bytes"),
            Self::BackendDone(Err(error)) => write!(f, "backend failed: {error}"),
            Self::ClientFailed(error) => write!(f, "client failed: {error}"),
            Self::BackendRemoved => f.write_str("backend removed"),
            Self::Evicted => f.write_str("closed to make room for a new client"),
        }
    }
}

/// Copies both ways until one of the [`SpliceEnd`]s, then drops (closes) both sockets. A
/// client that closes its sending side (half-close) still gets the rest of the answer.
async fn splice(
    mut client: TcpStream,
    mut upstream: TcpStream,
    backend: &Arc<Backend>,
    admission: &Admission,
    mut removed: watch::Receiver<bool>,
) -> SpliceEnd {
    let ended = {
        let (mut client_read, mut client_write) = client.split();
        let (mut upstream_read, mut upstream_write) = upstream.split();
        let client_activity = admission.activity();
        let upstream_activity = admission.activity();
        let to_backend = async {
            let sent = relay(&mut client_read, &mut upstream_write, |_| {
                client_activity.touch()
            });
            match sent.await {
                Ok(_) => {
                    let _ = upstream_write.shutdown().await;
                    std::future::pending().await
                }
                Err(error) => error,
            }
        };
        let to_client = relay(&mut upstream_read, &mut client_write, |bytes| {
            backend.out_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            upstream_activity.touch();
        });
        tokio::select! {
            copied = to_client => SpliceEnd::BackendDone(copied.map(|relayed| relayed.bytes)),
            error = to_backend => SpliceEnd::ClientFailed(error),
            _ = removed.wait_for(|removed| *removed) => SpliceEnd::BackendRemoved,
            () = admission.evicted() => SpliceEnd::Evicted,
        }
    };
    if matches!(ended, SpliceEnd::BackendDone(Ok(_))) {
        // The worker closed first and all it sent has been relayed: end our side with a
        // reset rather than a FIN it would have to acknowledge (haproxy's `option nolinger`
        // on the server side): one packet instead of a FIN and the ACK it needs, and the
        // worker's socket leaves TIME_WAIT at once.
        let _ = upstream.set_zero_linger();
    }
    ended
}

/// The buffer a direction is copied through (tokio's `io::copy` uses the same size): one
/// read that fills it means more is waiting than one buffer holds.
const RELAY_BUFFER: usize = 8 * 1024;
/// At most this much per splice(2) into the pipe: the default pipe capacity (16 pages).
const PIPE_CHUNK: usize = 64 * 1024;

/// What one direction relayed until the sender's EOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Relayed {
    bytes: u64,
    /// Of `bytes`, how many went through the pipe (kernel to kernel, never copied to poold).
    spliced: u64,
}

/// Relays `from` to `to` until `from`'s EOF, calling `on_read` with each amount read.
/// Small messages (HTTP requests and short answers) go through a userspace buffer: one read
/// and one write each, as few syscalls as a message can take. Once a read fills the buffer
/// (a large body) the rest of the direction goes through a pipe with splice(2), so the
/// pages move from one socket to the other without being copied into poold and out again;
/// if no pipe can be had (descriptor budget or limit), copying continues.
async fn relay(
    from: &mut tokio::net::tcp::ReadHalf<'_>,
    to: &mut tokio::net::tcp::WriteHalf<'_>,
    mut on_read: impl FnMut(usize),
) -> std::io::Result<Relayed> {
    use nix::fcntl::OFlag;
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; RELAY_BUFFER];
    let mut bytes = 0u64;
    // One attempt: without a pipe the first time, the connection copies to its end.
    let mut may_splice = true;
    loop {
        // Through `AsyncRead`: a short read clears the readiness, so no read ends in EAGAIN.
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return Ok(Relayed { bytes, spliced: 0 });
        }
        on_read(read);
        to.write_all(&buffer[..read]).await?;
        bytes += read as u64;
        if !(may_splice && read == buffer.len()) {
            continue;
        }
        may_splice = false;
        // The pipe's two descriptors count against the connections' budget.
        let Some(lease) = FdLease::take(2) else {
            debug!("descriptor budget full; copying a large transfer");
            continue;
        };
        match nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) {
            Ok(pipe) => {
                drop(buffer);
                let spliced = splice_through(from.as_ref(), to.as_ref(), pipe, on_read).await?;
                drop(lease);
                return Ok(Relayed {
                    bytes: bytes + spliced,
                    spliced,
                });
            }
            Err(errno) => debug!(%errno, "no pipe for a large transfer; copying it"),
        }
    }
}

/// Moves everything `from` sends into `to` through `pipe` (read end, write end) with
/// splice(2), until `from`'s EOF; returns the bytes moved. The pipe is emptied into `to`
/// before the next splice from `from`, so a slow receiver holds back the sender (TCP flow
/// control), as with a buffer.
async fn splice_through(
    from: &TcpStream,
    to: &TcpStream,
    (pipe_out, pipe_in): (std::os::fd::OwnedFd, std::os::fd::OwnedFd),
    mut on_read: impl FnMut(usize),
) -> std::io::Result<u64> {
    use nix::fcntl::{splice, SpliceFFlags};
    use tokio::io::Interest;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut moved = 0u64;
    loop {
        let filled = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(from, None, &pipe_in, None, PIPE_CHUNK, flags).map_err(std::io::Error::from)
            }) {
                Ok(filled) => break filled,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        };
        if filled == 0 {
            return Ok(moved);
        }
        on_read(filled);
        let mut left = filled;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&pipe_out, None, to, None, left, flags).map_err(std::io::Error::from)
            }) {
                Ok(drained) => left -= drained,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        }
        moved += filled as u64;
    }
}

/// Accepts on one proxy thread; each client is served by a task on the same thread.
async fn accept_loop(
    name: String,
    listener: std::net::TcpListener,
    backends: Arc<Backends>,
    limiter: ConnLimiter,
    wait_for_data: Arc<AtomicBool>,
) {
    // Registered with this thread's epoll.
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            warn!(service = %name, %error, "proxy thread cannot poll the listening socket");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let Some(admission) = limiter.admit().await else {
                    debug!(service = %name, client = %peer, "client limit reached, nothing idle to close; refusing");
                    continue;
                };
                tokio::spawn(serve_client(
                    name.clone(),
                    client,
                    peer,
                    backends.clone(),
                    admission,
                    wait_for_data.load(Ordering::Relaxed),
                ));
            }
            Err(error) => accept_failed("proxy", &error).await,
        }
    }
}

#[async_trait]
impl Balancer for ProxyBalancer {
    fn kind(&self) -> BalancerKind {
        BalancerKind::Proxy
    }

    fn handoff_listeners(&self) -> Vec<(String, std::os::fd::RawFd)> {
        use std::os::fd::AsRawFd;
        let services = self.services.lock().expect("proxy services lock");
        services
            .iter()
            .filter_map(|(name, s)| {
                let listener = s.listener.lock().expect("proxy listener lock");
                Some((format!("proxy:{name}"), listener.as_ref()?.as_raw_fd()))
            })
            .collect()
    }

    fn stop_accepting_all(&self) {
        for service in self.services.lock().expect("proxy services lock").values() {
            service.stop_accepting();
        }
    }

    fn open_connections(&self) -> u64 {
        let services = self.services.lock().expect("proxy services lock");
        // Every admitted client, spliced or still waiting for its first bytes.
        services.values().map(|s| s.limiter.open() as u64).sum()
    }

    async fn ensure_service(&self, service: &VirtualService) -> Result<(), BalancerError> {
        if let Some(existing) = self
            .services
            .lock()
            .expect("proxy services lock")
            .get(&service.name)
        {
            if existing.listen == service.listen {
                existing.set_client_policy(service.clients);
                return Ok(());
            }
        }
        let listen_error = |source| BalancerError::Listen {
            service: service.name.clone(),
            listen: service.listen,
            source,
        };
        let shards = self.shards().map_err(listen_error)?;
        // Bound here (tokio's backlog of 1024), then one descriptor per proxy thread; after
        // an upgrade the previous poold's socket, never closed.
        let inherited =
            crate::upgrade::take_listener(&format!("proxy:{}", service.name), service.listen);
        let listener = match inherited {
            Some(listener) => listener,
            None => TcpListener::bind(service.listen)
                .await
                .and_then(TcpListener::into_std)
                .map_err(listen_error)?,
        };
        listener.set_nonblocking(true).map_err(listen_error)?;
        // Accepted sockets inherit it: one setsockopt per service, not per client.
        setsockopt(&listener, sockopt::TcpNoDelay, &true)
            .map_err(|errno| listen_error(errno.into()))?;
        let backends: Arc<Backends> = Arc::default();
        // Two descriptors per client: its own socket and the one to the worker.
        let limiter = ConnLimiter::new("proxy", service.clients.max, CLIENT_MIN_IDLE, 2);
        let wait_for_data = Arc::new(AtomicBool::new(
            service.clients.connect == BackendConnect::OnClientData,
        ));
        let mut acceptors = Vec::with_capacity(shards.handles.len());
        for shard in &shards.handles {
            let listener = listener.try_clone().map_err(listen_error)?;
            acceptors.push(shard.spawn(accept_loop(
                service.name.clone(),
                listener,
                backends.clone(),
                limiter.clone(),
                wait_for_data.clone(),
            )));
        }
        info!(service = %service.name, listen = %service.listen, "proxy listening");
        self.services.lock().expect("proxy services lock").insert(
            service.name.clone(),
            ProxyService {
                listen: service.listen,
                backends,
                limiter,
                wait_for_data,
                listener: Mutex::new(Some(listener)),
                acceptors,
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
        // Ending the acceptors closes the listening socket; spliced connections are tasks
        // of their own and continue.
        entry.stop_accepting();
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
                out_bytes: AtomicU64::new(0),
                removed: watch::Sender::new(false),
            }));
            Ok(())
        })?;
        self.wake_waiting_clients(service);
        Ok(())
    }

    async fn set_weight(
        &self,
        service: &VirtualService,
        backend: SocketAddr,
        weight: u32,
    ) -> Result<(), BalancerError> {
        self.with_backends(service, |backends| {
            let entry = backends
                .iter()
                .find(|b| b.addr == backend)
                .ok_or_else(|| BalancerError::no_such_backend(service, backend))?;
            entry.weight.store(weight, Ordering::SeqCst);
            Ok(())
        })?;
        if weight > 0 {
            self.wake_waiting_clients(service);
        }
        Ok(())
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
                .ok_or_else(|| BalancerError::no_such_backend(service, backend))?;
            // Its worker is stopped or about to be destroyed: close what is left on purpose
            // rather than leave clients talking to an address that is gone.
            let removed = backends.remove(position);
            removed.removed.send_replace(true);
            Ok(())
        })
    }

    async fn backend_stats(
        &self,
        service: &VirtualService,
    ) -> Result<BackendStatsTable, BalancerError> {
        self.with_backends(service, |backends| {
            Ok(backends
                .iter()
                .map(|b| {
                    let stats = BackendStats {
                        weight: b.weight.load(Ordering::SeqCst),
                        active: b.active.load(Ordering::SeqCst),
                        inactive: 0,
                        total: b.total.load(Ordering::SeqCst),
                        out_bytes: b.out_bytes.load(Ordering::SeqCst),
                    };
                    (b.addr, stats)
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests;
