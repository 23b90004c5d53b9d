//! poold's side of the control socket.

use super::{ApiError, RecycleReply, RecycleRequest};
use crate::supervisor::{PoolHandle, ServiceStatus};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;

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
    Json(request): Json<RecycleRequest>,
) -> ApiResult<RecycleReply> {
    let pool = pools
        .find(&name)
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, format!("no service named {name:?}")))?;
    let (slots, done) = pool
        .recycle(request.slot)
        .await
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, e))?;
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

/// Serves the API on a Unix socket until `shutdown` resolves. Replaces a stale socket file.
pub async fn serve(
    path: &std::path::Path,
    pools: Pools,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), super::ControlError> {
    let socket_error = |source| super::ControlError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(socket_error)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(socket_error(error)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(socket_error)?;
    let result = axum::serve(listener, router(pools))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(socket_error);
    let _ = std::fs::remove_file(path);
    result
}
