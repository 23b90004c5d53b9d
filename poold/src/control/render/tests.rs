use super::*;
use crate::supervisor::{SlotStatus, WorkerStatus};

fn service(failures: u32, state: WorkerState) -> ServiceStatus {
    ServiceStatus {
        name: "web".into(),
        listen: "127.0.0.1:80".parse().unwrap(),
        balancer: crate::balancer::BalancerKind::Proxy,
        desired: 1,
        scaled_from: None,
        ready: 0,
        min_ready: 1,
        drained: false,
        slots: vec![SlotStatus {
            slot: 0,
            state: SlotState::Starting,
            failures,
            last_error: (failures > 0).then(|| "exit code 1 while starting: boom".into()),
            retry_in_secs: None,
            recycles: 0,
            last_recycle: None,
        }],
        workers: vec![WorkerStatus {
            slot: 0,
            id: crate::runtime::WorkerId(7),
            state,
            addr: None,
            pid: Some(42),
            age_secs: 0.0,
            active_conns: 0,
            total_conns: 0,
            memory_bytes: 0,
            memory_limit_bytes: None,
            cpu_secs: 0.0,
            reason: None,
            chroot: false,
        }],
    }
}

#[test]
fn a_start_after_failures_shows_the_last_failure() {
    let table = status_table(&[service(3, WorkerState::Starting)]);
    assert!(
        table.contains("after 3 failures: exit code 1 while starting: boom"),
        "{table}"
    );
    let first = status_table(&[service(0, WorkerState::Starting)]);
    assert!(!first.contains("after"), "{first}");
    let ready = status_table(&[service(3, WorkerState::Ready)]);
    assert!(!ready.contains("boom"), "{ready}");
    let mut spawning = service(2, WorkerState::Starting);
    spawning.workers.clear();
    let table = status_table(&[spawning]);
    assert!(
        table.contains("failures 2, retry in 0s: exit code 1"),
        "{table}"
    );
}
