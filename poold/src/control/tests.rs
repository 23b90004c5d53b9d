//! The control API end to end over a real Unix socket, with a pool on fakes.

use super::client::ControlClient;
use super::server::{serve, Pools, ServeOptions};
use super::{render, ControlError, RecycleRequest};
use crate::config::ServiceConfig;
use crate::runtime::WorkerId;
use crate::supervisor::testing::{web_service, Harness};
use crate::supervisor::{PoolHandle, PoolOptions, WorkerState};
use std::path::Path;
use std::time::Duration;

/// A pool of `service` on the fakes, in real time with a short tick.
async fn fake_pool(service: ServiceConfig) -> PoolHandle {
    let options = PoolOptions {
        tick: Duration::from_millis(20),
        drain_settle: Duration::from_millis(50),
        seed: 1,
        worker_capacity: u64::MAX,
        ..PoolOptions::default()
    };
    Harness::builder(service)
        .options(options)
        .start()
        .await
        .pool
}

/// Two workers probed every 100 ms, so the fake pool is ready at once.
fn fast_health_web_service() -> ServiceConfig {
    crate::supervisor::testing::web_service(
        2,
        "[service.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n",
    )
}

#[tokio::test]
async fn status_and_recycle_with_wait_over_the_socket() {
    let service = fast_health_web_service();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/poold.sock");
    let (pool, server, stop) = serve_fake_pool(service, &socket).await;
    let client = ControlClient::new(&socket);
    let status = client.status().await.expect("the socket answers");
    assert_eq!(status[0].ready, 2, "pool became ready: {status:?}");
    let before: Vec<WorkerId> = status[0].workers.iter().map(|w| w.id).collect();
    let table = render::status_table(&status);
    assert!(
        table.contains("web  listen 10.212.0.1:80  balancer proxy  ready 2/2"),
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("  ") && l.contains(" ready "))
            .count(),
        2,
        "{table}"
    );

    let json = serde_json::to_value(&status).unwrap();
    for key in ["name", "desired", "ready", "balancer", "workers"] {
        assert!(json[0].get(key).is_some(), "{key} in {json}");
    }
    for key in ["slot", "state", "addr", "pid", "age_secs", "active_conns"] {
        assert!(json[0]["workers"][0].get(key).is_some(), "{key} in {json}");
    }

    let reply = client
        .recycle(
            "web",
            &RecycleRequest {
                slot: Some(1),
                wait: true,
            },
        )
        .await
        .unwrap();
    assert_eq!((reply.slots, reply.finished), (vec![1], true));
    let after = client.status().await.unwrap();
    let slot1: Vec<_> = after[0].workers.iter().filter(|w| w.slot == 1).collect();
    assert_eq!(slot1.len(), 1);
    assert_eq!(slot1[0].state, WorkerState::Ready);
    assert!(!before.contains(&slot1[0].id), "slot 1 has a new worker");

    let missing = client
        .recycle("nope", &RecycleRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, ControlError::Api { status: 404, message } if message.contains("\"nope\"")),
        "{missing}"
    );
    let bad_slot = client
        .recycle(
            "web",
            &RecycleRequest {
                slot: Some(9),
                wait: false,
            },
        )
        .await
        .unwrap_err();
    assert!(bad_slot.to_string().contains("slots 0 to 1"), "{bad_slot}");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!socket.exists(), "socket file removed on shutdown");
    pool.shutdown().await;
}

/// A pool of `service` (two workers) on fakes, served on `socket` and ready; returns the
/// pool, the server task and the sender that stops it.
async fn serve_fake_pool(
    service: ServiceConfig,
    socket: &Path,
) -> (
    PoolHandle,
    tokio::task::JoinHandle<Result<(), ControlError>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let pool = fake_pool(service).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let socket = socket.to_owned();
        let pools = Pools::new(vec![pool.clone()]);
        async move {
            serve(&socket, pools, ServeOptions::default(), async move {
                let _ = stopped.await;
            })
            .await
        }
    });
    let client = ControlClient::new(socket);
    for _ in 0..200 {
        if client.status().await.is_ok_and(|s| s[0].ready == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (pool, server, stop)
}

/// POSTs `body` to `path` over the socket as is; returns the status and the body.
async fn raw_post(socket: &Path, path: &str, body: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("host", "poold")
        .header("content-type", "application/json")
        .body(Full::new(hyper::body::Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn unknown_request_fields_are_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("poold.sock");
    let (pool, server, stop) = serve_fake_pool(web_service(2, ""), &socket).await;
    let before = ControlClient::new(&socket).status().await.unwrap();
    let (status, body) = raw_post(&socket, "/v1/services/web/recycle", r#"{"bogus":1}"#).await;
    assert_eq!(status, 400, "{body}");
    let error: super::ApiError =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(error.error.contains("unknown field `bogus`"), "{body}");
    // Nothing was recycled: the same workers, none draining.
    let after = ControlClient::new(&socket).status().await.unwrap();
    let ids = |s: &[crate::supervisor::ServiceStatus]| -> Vec<WorkerId> {
        s[0].workers.iter().map(|w| w.id).collect()
    };
    assert_eq!(ids(&before), ids(&after));
    assert!(after[0]
        .workers
        .iter()
        .all(|w| w.state == WorkerState::Ready));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    pool.shutdown().await;
}

#[tokio::test]
async fn socket_and_its_new_directory_are_private_and_removed_at_shutdown() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl");
    let socket = ctl.join("poold.sock");
    let (pool, server, stop) = serve_fake_pool(web_service(2, ""), &socket).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&socket), 0o600, "socket mode");
    assert_eq!(
        mode(&ctl),
        0o700,
        "mode of the directory poold made for the socket"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    pool.shutdown().await;
    assert!(!socket.exists(), "socket left behind");
    assert!(
        !ctl.exists(),
        "the socket's directory poold made is left behind"
    );
    assert!(
        dir.path().exists(),
        "a directory poold did not make was removed"
    );
}

/// The HTTP status and message of a refusal.
fn status_of<T: std::fmt::Debug>(result: Result<T, ControlError>) -> (u16, String) {
    match result {
        Err(ControlError::Api { status, message }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Slot drain and scale over the socket: each refusal with the HTTP status of its cause.
#[tokio::test]
async fn slot_drain_and_scale_refusals_carry_their_status() {
    let service = fast_health_web_service();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("poold.sock");
    let (_pool, server, stop) = serve_fake_pool(service, &socket).await;
    let client = ControlClient::new(&socket);

    let reply = client.drain_slot("web", 1, true).await.unwrap();
    assert_eq!((reply.slot, reply.drained), (1, true));
    assert_eq!(
        status_of(client.drain_slot("web", 1, true).await),
        (409, "web/1 is already drained".to_owned())
    );
    assert_eq!(status_of(client.drain_slot("web", 2, true).await).0, 404);
    assert_eq!(status_of(client.drain_slot("api", 0, true).await).0, 404);
    assert!(client.drain_slot("web", 1, false).await.is_ok());

    let reply = client.scale("web", 3).await.unwrap();
    assert_eq!((reply.from, reply.to, reply.configured), (2, 3, 2));
    assert_eq!(status_of(client.scale("web", 0).await).0, 400);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// `poolctl scale` bounds the count by the subnet beside the other services, counting the
/// warm spares they keep whether or not those are ready yet: the bound does not depend on
/// timing.
#[tokio::test]
async fn scale_counts_the_spares_other_services_keep_ready_or_not() {
    let mut api = web_service(2, "[service.recycle]\nspares = 2\n");
    api.name = "api".into();
    api.listen = "10.212.0.2:80".parse().unwrap();
    // Its workers never finish spawning: none of its spares is ever ready.
    let api = Harness::builder(api)
        .spawn_delay(Duration::from_secs(3600))
        .start()
        .await
        .pool;
    let web = Harness::builder(fast_health_web_service());
    let options = PoolOptions {
        worker_capacity: 10,
        ..web.options_default()
    };
    let web = web.options(options).start().await.pool;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("poold.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let socket = socket.clone();
        let pools = Pools::new(vec![web, api]);
        async move {
            serve(&socket, pools, ServeOptions::default(), async move {
                let _ = stopped.await;
            })
            .await
        }
    });
    let client = ControlClient::new(&socket);
    for _ in 0..200 {
        if client.status().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The subnet holds 10 workers; api claims 2 and its 2 spares.
    assert_eq!(client.scale("web", 6).await.unwrap().to, 6);
    let (code, message) = status_of(client.scale("web", 7).await);
    assert_eq!(code, 400, "{message}");
    assert!(message.contains("other services want 4"), "{message}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
