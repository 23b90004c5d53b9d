//! poold's side of the control socket.

use super::{
    ApiError, DeployReply, DeployRequest, DrainReply, DrainRequest, RecycleReply, RecycleRequest,
    ReloadError, ReloadReply, Reloader, ScaleReply, ScaleRequest, SlotDrainReply,
};
use crate::conn_limit::{accept_failed, spawn_http_connection, ConnLimiter};
use crate::supervisor::{PoolError, PoolHandle, ServiceStatus};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use nix::unistd::{chown, Gid};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::info;

/// The pools the API can see, in config order; a reload adds and removes pools while
/// poold runs (the daemon owns the list, the API reads it).
#[derive(Clone, Debug, Default)]
pub struct Pools {
    list: Arc<RwLock<Vec<PoolHandle>>>,
    reloader: Option<Arc<dyn Reloader>>,
    upgrader: Option<super::Upgrader>,
}

impl Pools {
    pub fn new(pools: Vec<PoolHandle>) -> Self {
        Self {
            list: Arc::new(RwLock::new(pools)),
            reloader: None,
            upgrader: None,
        }
    }

    /// What `POST /v1/upgrade` asks.
    pub fn with_upgrader(mut self, upgrader: super::Upgrader) -> Self {
        self.upgrader = Some(upgrader);
        self
    }

    /// What `POST /v1/reload` calls.
    pub fn with_reloader(mut self, reloader: Arc<dyn Reloader>) -> Self {
        self.reloader = Some(reloader);
        self
    }

    /// The pools now, in config order.
    pub fn snapshot(&self) -> Vec<PoolHandle> {
        self.list.read().expect("pools lock").clone()
    }

    pub fn push(&self, pool: PoolHandle) {
        self.list.write().expect("pools lock").push(pool);
    }

    /// Takes service `name` out of the list (it disappears from status); returns its pool.
    pub fn remove(&self, name: &str) -> Option<PoolHandle> {
        let mut list = self.list.write().expect("pools lock");
        let index = list.iter().position(|pool| pool.name == name)?;
        Some(list.remove(index))
    }

    pub fn find(&self, name: &str) -> Option<PoolHandle> {
        self.list
            .read()
            .expect("pools lock")
            .iter()
            .find(|pool| pool.name == name)
            .cloned()
    }
}

type ApiResult<T> = Result<Json<T>, (StatusCode, Json<ApiError>)>;

fn api_error(status: StatusCode, error: String) -> (StatusCode, Json<ApiError>) {
    (status, Json(ApiError { error }))
}

pub fn router(pools: Pools) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/services/{name}/recycle", post(recycle))
        .route("/v1/services/{name}/drain", post(drain_one))
        .route("/v1/services/{name}/undrain", post(undrain_one))
        .route("/v1/drain", post(drain_all))
        .route("/v1/undrain", post(undrain_all))
        .route("/v1/reload", post(reload))
        .route("/v1/upgrade", post(upgrade))
        .route("/v1/services/{name}/deploy", post(deploy))
        .route("/v1/services/{name}/slots/{slot}/drain", post(drain_slot))
        .route(
            "/v1/services/{name}/slots/{slot}/undrain",
            post(undrain_slot),
        )
        .route("/v1/services/{name}/scale", post(scale))
        .with_state(pools)
}

/// A drained service is settled once it has had no active connection this long (IPVS
/// counts a connection being set up as inactive for a moment; upstream checks lag).
pub const DRAIN_SETTLE: Duration = Duration::from_secs(2);
/// How long `drain --wait` waits for the services to settle unless told otherwise.
pub const DRAIN_WAIT_DEFAULT: Duration = Duration::from_secs(300);

fn find_pool(pools: &Pools, name: &str) -> Result<PoolHandle, (StatusCode, Json<ApiError>)> {
    pools
        .find(name)
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, format!("no service named {name:?}")))
}

async fn drain_one(
    State(pools): State<Pools>,
    Path(name): Path<String>,
    request: Result<Json<DrainRequest>, JsonRejection>,
) -> ApiResult<DrainReply> {
    let pool = find_pool(&pools, &name)?;
    set_drained(vec![pool], true, request).await
}

async fn drain_all(
    State(pools): State<Pools>,
    request: Result<Json<DrainRequest>, JsonRejection>,
) -> ApiResult<DrainReply> {
    set_drained(pools.snapshot(), true, request).await
}

async fn undrain_one(
    State(pools): State<Pools>,
    Path(name): Path<String>,
) -> ApiResult<DrainReply> {
    let pool = find_pool(&pools, &name)?;
    set_drained(vec![pool], false, Ok(Json(DrainRequest::default()))).await
}

async fn undrain_all(State(pools): State<Pools>) -> ApiResult<DrainReply> {
    set_drained(pools.snapshot(), false, Ok(Json(DrainRequest::default()))).await
}

async fn set_drained(
    pools: Vec<PoolHandle>,
    drained: bool,
    request: Result<Json<DrainRequest>, JsonRejection>,
) -> ApiResult<DrainReply> {
    let Json(request) =
        request.map_err(|rejection| api_error(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let timeout = match request.timeout_secs {
        None => DRAIN_WAIT_DEFAULT,
        Some(secs) => Duration::try_from_secs_f64(secs).map_err(|_| {
            api_error(
                StatusCode::BAD_REQUEST,
                format!("timeout_secs: {secs} is not a duration in seconds"),
            )
        })?,
    };
    for pool in &pools {
        pool.set_drained(drained)
            .await
            .map_err(|e| api_error(StatusCode::SERVICE_UNAVAILABLE, e))?;
    }
    let services: Vec<String> = pools.iter().map(|p| p.name.clone()).collect();
    let settled = if drained && request.wait {
        wait_settled(&pools, timeout).await?;
        true
    } else {
        false
    };
    Ok(Json(DrainReply {
        services,
        drained,
        settled,
    }))
}

/// Waits until every pool has had no active connection for [`DRAIN_SETTLE`].
async fn wait_settled(
    pools: &[PoolHandle],
    timeout: Duration,
) -> Result<(), (StatusCode, Json<ApiError>)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut idle_since = None;
    loop {
        let now = tokio::time::Instant::now();
        let busy: Vec<(String, u64)> = pools
            .iter()
            .map(|p| (p.name.clone(), p.status.borrow().active_conns()))
            .filter(|(_, conns)| *conns > 0)
            .collect();
        if busy.is_empty() {
            let since = *idle_since.get_or_insert(now);
            if now >= since + DRAIN_SETTLE {
                return Ok(());
            }
        } else {
            idle_since = None;
            if now >= deadline {
                let busy: Vec<String> = busy
                    .iter()
                    .map(|(name, conns)| format!("{name} has {conns}"))
                    .collect();
                return Err(api_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "drained, but active connections remain after {:.0?}: {}",
                        timeout,
                        busy.join(", ")
                    ),
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The HTTP status of a pool's refusal: what the operator asked for is wrong (400, 404), in
/// conflict with what the slot is doing (409), or the service is going away (503).
fn pool_error(error: PoolError) -> (StatusCode, Json<ApiError>) {
    let status = match error {
        PoolError::NoSuchSlot { .. } => StatusCode::NOT_FOUND,
        PoolError::SlotAlreadyDrained { .. }
        | PoolError::SlotNotDrained { .. }
        | PoolError::SlotNotReady { .. }
        | PoolError::SlotBusy { .. }
        | PoolError::RolloutInFlight { .. } => StatusCode::CONFLICT,
        PoolError::ScaleOutOfRange { .. } => StatusCode::BAD_REQUEST,
        PoolError::NotRunning { .. }
        | PoolError::Stopped { .. }
        | PoolError::ShuttingDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    api_error(status, error.to_string())
}

async fn drain_slot(
    State(pools): State<Pools>,
    Path((name, slot)): Path<(String, u32)>,
) -> ApiResult<SlotDrainReply> {
    set_slot_drained(&pools, name, slot, true).await
}

async fn undrain_slot(
    State(pools): State<Pools>,
    Path((name, slot)): Path<(String, u32)>,
) -> ApiResult<SlotDrainReply> {
    set_slot_drained(&pools, name, slot, false).await
}

async fn set_slot_drained(
    pools: &Pools,
    name: String,
    slot: u32,
    drained: bool,
) -> ApiResult<SlotDrainReply> {
    let worker = find_pool(pools, &name)?
        .drain_slot(slot, drained)
        .await
        .map_err(pool_error)?;
    Ok(Json(SlotDrainReply {
        service: name,
        slot,
        worker,
        drained,
    }))
}

async fn scale(
    State(pools): State<Pools>,
    Path(name): Path<String>,
    request: Result<Json<ScaleRequest>, JsonRejection>,
) -> ApiResult<ScaleReply> {
    let Json(request) =
        request.map_err(|rejection| api_error(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let pool = find_pool(&pools, &name)?;
    // What the host's other services claim (workers and warm spares), against the subnet's
    // capacity.
    let others: u64 = pools
        .snapshot()
        .iter()
        .filter(|other| other.name != name)
        .map(|other| other.status.borrow().claimed_workers())
        .sum();
    let change = pool
        .scale(request.workers, others)
        .await
        .map_err(pool_error)?;
    Ok(Json(ScaleReply {
        service: name,
        from: change.from,
        to: change.to,
        configured: change.configured,
    }))
}

async fn status(State(pools): State<Pools>) -> Json<Vec<ServiceStatus>> {
    Json(
        pools
            .snapshot()
            .iter()
            .map(|pool| pool.status.borrow().clone())
            .collect(),
    )
}

async fn recycle(
    State(pools): State<Pools>,
    Path(name): Path<String>,
    request: Result<Json<RecycleRequest>, JsonRejection>,
) -> ApiResult<RecycleReply> {
    // serde's message names the offending field ("unknown field `bogus`, expected ...").
    let Json(request) =
        request.map_err(|rejection| api_error(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let pool = find_pool(&pools, &name)?;
    let (slots, done) = pool.recycle(request.slot).await.map_err(pool_error)?;
    let finished = if request.wait {
        done.await.map_err(|_| {
            api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("service {name} stopped before the recycle finished"),
            )
        })?;
        true
    } else {
        false
    };
    Ok(Json(RecycleReply {
        service: name,
        slots,
        finished,
    }))
}

async fn upgrade(State(pools): State<Pools>) -> ApiResult<super::UpgradeReply> {
    let unavailable = || {
        api_error(
            StatusCode::NOT_IMPLEMENTED,
            "upgrade is not available here".to_owned(),
        )
    };
    let upgrader = pools.upgrader.clone().ok_or_else(unavailable)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    upgrader.send(reply).await.map_err(|_| unavailable())?;
    match answer.await.map_err(|_| unavailable())? {
        Ok(reply) => Ok(Json(reply)),
        Err(error) => Err(api_error(StatusCode::INTERNAL_SERVER_ERROR, error)),
    }
}

async fn reload(State(pools): State<Pools>) -> ApiResult<ReloadReply> {
    let reloader = pools.reloader.clone().ok_or_else(|| {
        api_error(
            StatusCode::NOT_IMPLEMENTED,
            ReloadError::Unavailable.to_string(),
        )
    })?;
    match reloader.reload().await {
        Ok(reply) => Ok(Json(reply)),
        Err(error) => {
            let status = match error {
                ReloadError::Invalid(_) | ReloadError::Refused(_) => StatusCode::BAD_REQUEST,
                ReloadError::InFlight(_) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(api_error(status, error.to_string()))
        }
    }
}

async fn deploy(
    State(pools): State<Pools>,
    Path(name): Path<String>,
    request: Result<Json<DeployRequest>, JsonRejection>,
) -> ApiResult<DeployReply> {
    let Json(request) =
        request.map_err(|rejection| api_error(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let pool = find_pool(&pools, &name)?;
    check_rootfs(&request.rootfs).map_err(|e| api_error(StatusCode::BAD_REQUEST, e))?;
    let (generation, ended) = pool.deploy(request.rootfs).await.map_err(pool_error)?;
    if request.wait {
        match ended.await {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => {
                return Err(api_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("service {name}: {failure}"),
                ))
            }
            Err(_) => {
                return Err(api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("service {name} stopped before the deploy finished"),
                ))
            }
        }
    }
    Ok(Json(DeployReply {
        service: name,
        generation,
        finished: request.wait,
    }))
}

/// The deploy's root as the config reads `rootfs`, and there (as poold sees it).
fn check_rootfs(rootfs: &str) -> Result<(), String> {
    use crate::config::RootfsSource;
    match RootfsSource::parse(rootfs) {
        RootfsSource::Host => Ok(()),
        RootfsSource::Directory(path) | RootfsSource::Tarball(path) => {
            if !path.is_absolute() {
                return Err(format!(
                    "rootfs {rootfs:?}: expected \"host\" or an absolute path to a directory \
                     or a .tar/.tar.gz/.tgz archive"
                ));
            }
            match std::fs::metadata(&path) {
                Ok(_) => Ok(()),
                Err(error) => Err(format!("rootfs {}: {error}", path.display())),
            }
        }
    }
}

/// Connections the control socket holds at once; beyond, the one idle the longest (at least
/// [`CONTROL_MIN_IDLE`]) makes room.
pub const CONTROL_MAX_CONNECTIONS: usize = 64;
pub const CONTROL_MIN_IDLE: Duration = Duration::from_secs(1);

/// Who may use the control socket besides root.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Members of this group may connect too (socket 0660, directories poold makes for it
    /// 0710, owned by the group); `None`: root only (0600 and 0700).
    pub group: Option<Gid>,
    /// The connection limiter to use (the daemon counts open control connections with it
    /// at an upgrade); `None`: a new one.
    pub limiter: Option<ConnLimiter>,
}

/// Serves the API on a Unix socket until `shutdown` resolves. Replaces a stale socket file;
/// creates the missing directories above it (private, whatever the umask) and removes them
/// again, with the socket, when it returns.
pub async fn serve(
    path: &std::path::Path,
    pools: Pools,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), super::ControlError> {
    let socket_error = |source| super::ControlError::Socket {
        path: path.display().to_string(),
        source,
    };
    let created = match path.parent() {
        Some(parent) => create_private_dirs(parent, options.group).map_err(socket_error)?,
        None => Vec::new(),
    };
    let served = async {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(socket_error(error)),
        }
        let listener = bind_private(path, options.group).map_err(socket_error)?;
        info!(socket = %path.display(), group = ?options.group.map(Gid::as_raw), "control socket listening");
        // Last step of a start: a previous poold waiting on an upgrade may hand over now (and
        // tells systemd the new main pid); a poold started by systemd tells it it serves.
        if crate::upgrade::handover_pending() {
            crate::upgrade::report_ready();
        } else {
            crate::service_manager::ready();
        }
        // 0 descriptors against the shared budget: the control socket's few connections
        // come out of the reserve, so clients of the proxy or /metrics can never starve it.
        let limiter = options.limiter.clone().unwrap_or_else(|| {
            ConnLimiter::new("control", CONTROL_MAX_CONNECTIONS, CONTROL_MIN_IDLE, 0)
        });
        let router = router(pools);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => match limiter.admit().await {
                    Some(admission) => {
                        spawn_http_connection("control", stream, router.clone(), admission)
                    }
                    None => drop(stream),
                },
                Err(error) => accept_failed("control", &error).await,
            }
        }
        Ok(())
    }
    .await;
    let _ = std::fs::remove_file(path);
    for dir in created.iter().rev() {
        // Only if empty: something else may have been put there meanwhile.
        let _ = std::fs::remove_dir(dir);
    }
    served
}

/// Creates the missing directories of `dir`, each 0700 (0710 with `group`, owned by it) set
/// explicitly, so the umask plays no part. Returns the ones it created, outermost first.
fn create_private_dirs(dir: &FsPath, group: Option<Gid>) -> std::io::Result<Vec<PathBuf>> {
    let missing: Vec<&FsPath> = dir.ancestors().take_while(|d| !d.exists()).collect();
    let mut created = Vec::new();
    for dir in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            // Made by someone else meanwhile: not ours to set up or remove.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
        created.push(dir.to_owned());
        if let Some(group) = group {
            chown(dir, None, Some(group))?;
        }
        let mode = if group.is_some() { 0o710 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(created)
}

/// Binds `path` and sets its mode (0600, or 0660 and the group) before listening, so that
/// nobody can connect while the umask-derived mode is in place.
fn bind_private(path: &FsPath, group: Option<Gid>) -> std::io::Result<tokio::net::UnixListener> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    if let Some(group) = group {
        chown(path, None, Some(group))?;
    }
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    listen(&fd, Backlog::new(128).map_err(std::io::Error::from)?)?;
    tokio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}
