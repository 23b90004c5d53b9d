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
        spares: 0,
        wanted_spares: 0,
        min_ready: 1,
        drained: false,
        generation: 1,
        deployed_rootfs: None,
        rolling_out: false,
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
            generation: 1,
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

#[test]
fn status_shows_memory_against_the_limit_cpu_recycles_and_drained() {
    let mut status = service(0, WorkerState::Drained);
    status.workers[0].memory_bytes = 12 << 20;
    status.workers[0].memory_limit_bytes = Some(256 << 20);
    status.workers[0].cpu_secs = 1.25;
    status.slots[0].recycles = 2;
    status.slots[0].last_recycle = Some(crate::supervisor::RecycleReason::Lifetime);
    status.scaled_from = Some(3);
    let table = status_table(&[status]);
    assert!(table.contains("12.0M/256.0M"), "{table}");
    assert!(table.contains("1.2s"), "{table}");
    assert!(table.contains("2 lifetime"), "{table}");
    assert!(table.contains("drained by the operator"), "{table}");
    assert!(
        table.contains("(scaled from 3 until the next reload)"),
        "{table}"
    );
}

#[test]
fn wait_progress_prints_each_step_once() {
    let mut status = service(0, WorkerState::Ready);
    let first = recycle_steps(std::slice::from_ref(&status));
    assert_eq!(first, vec!["web/0 worker w7 ready"]);
    assert!(new_steps(None, &first).is_empty(), "nothing moving yet");
    status.workers[0].state = WorkerState::Draining;
    status.workers[0].reason = Some(crate::supervisor::RecycleReason::Manual);
    status.workers[0].active_conns = 3;
    let next = recycle_steps(std::slice::from_ref(&status));
    assert_eq!(
        new_steps(Some(&first), &next),
        vec!["web/0 worker w7 draining (manual, 3 connections)"]
    );
    assert!(new_steps(Some(&next), &next).is_empty());
    assert_eq!(drain_steps(&[status]), vec!["web: 3 active connections"]);
}
