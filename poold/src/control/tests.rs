//! The control API end to end over a real Unix socket, with a pool on fakes.

use super::client::ControlClient;
use super::server::{serve, Pools};
use super::{render, ControlError, RecycleRequest};
use crate::config::Config;
use crate::supervisor::fakes::{FakeBalancer, FakeHealth, FakeRuntime};
use crate::supervisor::{PoolOptions, ServicePool, WorkerState};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn status_and_recycle_with_wait_over_the_socket() {
    let text = "[[service]]\nname = \"web\"\nlisten = \"10.212.0.1:80\"\nworkers = 2\nport = 8080\n\
                rootfs = \"host\"\ncommand = [\"/bin/app\"]\n[service.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n";
    let service = Config::parse(text, Path::new("t.toml"))
        .unwrap()
        .services
        .remove(0);
    let options = PoolOptions {
        tick: Duration::from_millis(20),
        drain_settle: Duration::from_millis(50),
        seed: 1,
    };
    let pool = ServicePool::start(
        Arc::new(service),
        Arc::new(FakeRuntime::default()),
        Arc::new(FakeBalancer::new(2)),
        Arc::new(FakeHealth::default()),
        options,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/poold.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let socket = socket.clone();
        let pools = Pools(Arc::new(vec![pool.clone()]));
        async move {
            serve(&socket, pools, async move {
                let _ = stopped.await;
            })
            .await
        }
    });
    let client = ControlClient::new(&socket);
    let mut status = None;
    for _ in 0..200 {
        if let Ok(services) = client.status().await {
            if services[0].ready == 2 {
                status = Some(services);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = status.expect("pool became ready and the socket answered");
    let before: Vec<u64> = status[0].workers.iter().map(|w| w.id).collect();
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
