//! Bounds on the connections poold's listeners hold open (metrics, control socket, the
//! proxy's client side), and on the file descriptors they may take all together.
//!
//! Each listener has a [`ConnLimiter`]: at its limit, a new connection takes the place of the
//! open connection that has been idle the longest (no bytes read either way, no request in
//! flight), provided that one has been idle at least `min_idle`; otherwise the new
//! connection is closed at once. Busy clients therefore keep working while thousands of idle
//! connections come and go. A new connection is never refused only because the connections
//! evicted for it have not closed yet: it waits for them (see [`ConnLimiter::admit`]). All limiters also share one process-wide descriptor budget
//! ([`set_fd_budget`]): the rest of the `RLIMIT_NOFILE` stays free for health checks,
//! workers, netlink and the control socket.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

/// Descriptors held by admitted connections, all limiters together.
static FDS_IN_USE: AtomicUsize = AtomicUsize::new(0);
/// Most descriptors connections may hold; `usize::MAX` until [`set_fd_budget`] is called.
static FD_BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Descriptors kept free for everything that is not a proxy or /metrics client: health
/// checks, workers, netlink, logs and the control socket's connections (which do not count
/// against the budget, so no flood elsewhere can lock the operator out). At least this
/// many, or a tenth of the limit if that is more.
pub const MIN_FD_RESERVE: u64 = 256;

/// The soft `RLIMIT_NOFILE` poold was started with and the one it runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimits {
    pub original_soft: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and sets the connection budget to it
/// minus a reserve. Returns the limits, so workers can be given the original soft limit.
pub fn raise_nofile_limit() -> nix::Result<NofileLimits> {
    let (original_soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if original_soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let reserve = MIN_FD_RESERVE.max(hard / 10);
    let budget = hard.saturating_sub(reserve);
    set_fd_budget(usize::try_from(budget).unwrap_or(usize::MAX));
    info!(
        nofile.was = original_soft,
        nofile = hard,
        fd_budget = budget,
        fd_reserve = reserve,
        "raised RLIMIT_NOFILE to its hard limit"
    );
    Ok(NofileLimits {
        original_soft,
        soft: hard,
        hard,
    })
}

/// Caps the descriptors all admitted connections may hold together.
pub fn set_fd_budget(fds: usize) {
    FD_BUDGET.store(fds, Ordering::SeqCst);
}

/// Takes `fds` from the process-wide budget, or none if that would exceed it.
fn take_fds(fds: usize) -> bool {
    let budget = FD_BUDGET.load(Ordering::SeqCst);
    FDS_IN_USE
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
            (used + fds <= budget).then_some(used + fds)
        })
        .is_ok()
}

fn give_back_fds(fds: usize) {
    FDS_IN_USE.fetch_sub(fds, Ordering::SeqCst);
}

/// Descriptors an admitted connection opens besides its sockets (the proxy's splice pipe),
/// taken from the same budget so that they cannot eat into the reserve; given back on drop.
#[derive(Debug)]
pub struct FdLease(usize);

impl FdLease {
    /// `None` when the budget has no room for `fds` more: do without them.
    pub fn take(fds: usize) -> Option<Self> {
        take_fds(fds).then_some(Self(fds))
    }
}

impl Drop for FdLease {
    fn drop(&mut self) {
        give_back_fds(self.0);
    }
}

/// Connections of one limiter told to close that have not closed yet. Their descriptors
/// already count for the connections that replaced them, so this bounds how far the
/// process can go past the budget (into the reserve) while a flood of new connections
/// evicts faster than the evicted tasks run; beyond it, admissions wait.
pub(crate) const MAX_PENDING_EVICTIONS: usize = 32;

/// What one admitted connection shares with its limiter.
#[derive(Debug)]
struct Conn {
    /// Told to close (and out of the map): its drop ends a pending eviction.
    was_evicted: std::sync::atomic::AtomicBool,
    /// Milliseconds since the limiter's epoch of the last byte read on either side.
    last_active_ms: AtomicU64,
    /// Requests in flight (HTTP listeners): a connection waiting for its answer is not idle.
    busy: AtomicU32,
    evicted: Notify,
}

#[derive(Debug)]
struct Inner {
    what: &'static str,
    /// Changed at run time by a reload.
    max: AtomicUsize,
    min_idle: Duration,
    /// Descriptors one connection holds (the proxy: client and backend socket).
    fds_per_conn: usize,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Evicted connections whose task has not dropped them yet.
    pending_evictions: AtomicUsize,
    /// Told when an evicted connection has closed: admissions waiting for one try again.
    eviction_closed: Notify,
}

impl Inner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The connection limit of one listener. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConnLimiter {
    inner: Arc<Inner>,
}

impl ConnLimiter {
    /// `what` names the listener in logs; `fds_per_conn` counts against the process budget.
    pub fn new(what: &'static str, max: usize, min_idle: Duration, fds_per_conn: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                what,
                max: AtomicUsize::new(max.max(1)),
                min_idle,
                fds_per_conn,
                epoch: Instant::now(),
                next_id: AtomicU64::new(0),
                open: Mutex::default(),
                pending_evictions: AtomicUsize::new(0),
                eviction_closed: Notify::new(),
            }),
        }
    }

    /// A new limit for the connections admitted from now on; connections beyond it stay
    /// until they close or are evicted by new ones.
    pub fn set_max(&self, max: usize) {
        self.inner.max.store(max.max(1), Ordering::SeqCst);
    }

    /// Connections currently admitted.
    pub fn open(&self) -> usize {
        self.inner.open.lock().expect("conn limiter lock").len()
    }

    /// Admits a new connection: at once below the limit, else in place of the connection
    /// idle the longest if it has been idle at least `min_idle`. `None`: close the new one.
    ///
    /// While [`MAX_PENDING_EVICTIONS`] evicted connections have not closed yet, waits until
    /// one has. Their tasks only need to run, but a burst of accepts at the limit evicts
    /// faster than they do (they may share the accepting thread, or wait for a CPU on a
    /// loaded host): refusing then would close a legitimate client while idle ones could
    /// make room. The accept loop waits instead, and the burst waits in the kernel's
    /// backlog.
    pub async fn admit(&self) -> Option<Admission> {
        loop {
            let closed = self.inner.eviction_closed.notified();
            let mut closed = std::pin::pin!(closed);
            // Registered before looking: an eviction that closes from now on wakes us.
            closed.as_mut().enable();
            match self.try_admit() {
                Admit::Admitted(admission) => return Some(admission),
                Admit::Refused => return None,
                Admit::EvictionsPending => {
                    debug!(
                        listener = self.inner.what,
                        "evicted connections have not closed yet; waiting for one"
                    );
                    closed.await;
                }
            }
        }
    }

    fn try_admit(&self) -> Admit {
        let inner = &self.inner;
        let mut open = inner.open.lock().expect("conn limiter lock");
        let over_limit = open.len() >= inner.max.load(Ordering::SeqCst);
        let fds_taken = !over_limit && take_fds(inner.fds_per_conn);
        if !fds_taken {
            if inner.pending_evictions.load(Ordering::SeqCst) >= MAX_PENDING_EVICTIONS {
                return Admit::EvictionsPending;
            }
            let now = inner.now_ms();
            let min_idle = u64::try_from(inner.min_idle.as_millis()).unwrap_or(u64::MAX);
            let victim = open
                .iter()
                .filter(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
                .map(|(id, c)| {
                    (
                        *id,
                        now.saturating_sub(c.last_active_ms.load(Ordering::SeqCst)),
                    )
                })
                .filter(|(_, idle)| *idle >= min_idle)
                .max_by_key(|(_, idle)| *idle);
            let Some((victim, idle_ms)) = victim else {
                debug!(
                    listener = inner.what,
                    open = open.len(),
                    "connection limit reached, nothing idle to evict; closing the new connection"
                );
                return Admit::Refused;
            };
            // The victim's descriptors pass to the new connection: its task closes them
            // as soon as it is woken.
            let conn = open.remove(&victim).expect("victim is open");
            conn.was_evicted.store(true, Ordering::SeqCst);
            inner.pending_evictions.fetch_add(1, Ordering::SeqCst);
            conn.evicted.notify_one();
            debug!(
                listener = inner.what,
                idle_ms, "connection limit reached; closing the connection idle the longest"
            );
        }
        let id = inner.next_id.fetch_add(1, Ordering::SeqCst);
        let conn = Arc::new(Conn {
            was_evicted: std::sync::atomic::AtomicBool::new(false),
            last_active_ms: AtomicU64::new(inner.now_ms()),
            busy: AtomicU32::new(0),
            evicted: Notify::new(),
        });
        open.insert(id, conn.clone());
        Admit::Admitted(Admission {
            id,
            conn,
            inner: inner.clone(),
        })
    }
}

/// What [`ConnLimiter::try_admit`] decided.
enum Admit {
    Admitted(Admission),
    /// At the limit with nothing idle long enough: close the new connection.
    Refused,
    /// At the limit, with [`MAX_PENDING_EVICTIONS`] evicted connections still open.
    EvictionsPending,
}

/// One admitted connection; dropping it frees its place (keep it as long as the sockets).
#[derive(Debug)]
pub struct Admission {
    id: u64,
    conn: Arc<Conn>,
    inner: Arc<Inner>,
}

impl Admission {
    /// Resolves when the limiter closed this connection to make room for a new one.
    pub async fn evicted(&self) {
        self.conn.evicted.notified().await;
    }

    /// A handle that marks activity; give one to each stream of the connection.
    pub fn activity(&self) -> Activity {
        Activity {
            conn: self.conn.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.inner.open.lock().expect("conn limiter lock");
        // An evicted connection is already out of the map and its descriptors passed on.
        if open.remove(&self.id).is_some() {
            give_back_fds(self.inner.fds_per_conn);
        } else if self.conn.was_evicted.load(Ordering::SeqCst) {
            self.inner.pending_evictions.fetch_sub(1, Ordering::SeqCst);
            self.inner.eviction_closed.notify_waiters();
        }
    }
}

/// Marks a connection active (bytes read) or busy (a request in flight).
#[derive(Clone, Debug)]
pub struct Activity {
    conn: Arc<Conn>,
    inner: Arc<Inner>,
}

impl Activity {
    pub fn touch(&self) {
        self.conn
            .last_active_ms
            .store(self.inner.now_ms(), Ordering::SeqCst);
    }

    /// The connection is not idle until the returned guard is dropped.
    pub fn busy(&self) -> BusyGuard {
        self.conn.busy.fetch_add(1, Ordering::SeqCst);
        BusyGuard(self.clone())
    }
}

/// See [`Activity::busy`].
#[derive(Debug)]
pub struct BusyGuard(Activity);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.conn.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stream that marks its connection active whenever it reads bytes.
#[derive(Debug)]
pub struct Tracked<S> {
    stream: S,
    activity: Activity,
}

impl<S> Tracked<S> {
    pub fn new(stream: S, activity: Activity) -> Self {
        Self { stream, activity }
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Errors of `accept` that mean poold itself is short of a resource, not that the client
/// did something wrong: back off instead of spinning.
pub fn is_local_resource_error(error: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

/// Logs an accept error and waits a little when it is a resource shortage.
pub async fn accept_failed(listener: &'static str, error: &std::io::Error) {
    if is_local_resource_error(error) {
        warn!(listener, %error, "accept failed: poold is short of a resource; backing off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    } else {
        debug!(listener, %error, "accept failed");
    }
}

/// How long an HTTP client (metrics, control socket) may take to send a request's headers;
/// hyper also applies it while a kept-alive connection waits for its next request, so it is
/// the idle timeout too.
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one admitted HTTP/1 connection with `router` in a task of its own, until the
/// client is done, a timeout passes, or the limiter evicts it.
pub fn spawn_http_connection<S>(
    listener: &'static str,
    stream: S,
    router: axum::Router,
    admission: Admission,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tower::Service;
    let activity = admission.activity();
    let io = hyper_util::rt::TokioIo::new(Tracked::new(stream, activity.clone()));
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            // Not idle while the handler runs (poolctl recycle --wait can take minutes).
            let busy = activity.busy();
            let mut router = router.clone();
            async move {
                let response = router.call(request).await;
                drop(busy);
                response
            }
        });
    tokio::spawn(async move {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HTTP_HEADER_TIMEOUT);
        let connection = builder.serve_connection(io, service);
        tokio::select! {
            result = connection => {
                if let Err(error) = result {
                    debug!(listener, %error, "HTTP connection ended with an error");
                }
            }
            () = admission.evicted() => {}
        }
    });
}

#[cfg(test)]
mod tests;
