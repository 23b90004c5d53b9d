//! poold's side of the control socket.

use super::{ApiError, RecycleReply, RecycleRequest};
use crate::conn_limit::{accept_failed, spawn_http_connection, ConnLimiter};
use crate::supervisor::{PoolHandle, ServiceStatus};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use nix::unistd::{chown, Gid};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// The pools the API can see, in config order.
#[derive(Clone, Debug, Default)]
pub struct Pools(pub Arc<Vec<PoolHandle>>);

impl Pools {
    fn find(&self, name: &str) -> Option<&PoolHandle> {
        self.0.iter().find(|pool| pool.name == name)
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
        .with_state(pools)
}

async fn status(State(pools): State<Pools>) -> Json<Vec<ServiceStatus>> {
    Json(
        pools
            .0
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
    let pool = pools
        .find(&name)
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, format!("no service named {name:?}")))?;
    let (slots, done) = pool
        .recycle(request.slot)
        .await
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, e.to_string()))?;
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
        // 0 descriptors against the shared budget: the control socket's few connections
        // come out of the reserve, so clients of the proxy or /metrics can never starve it.
        let limiter = ConnLimiter::new("control", CONTROL_MAX_CONNECTIONS, CONTROL_MIN_IDLE, 0);
        let router = router(pools);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => match limiter.admit() {
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
