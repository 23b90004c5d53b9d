//! The supervisor's state machine against recording fakes, in paused tokio time.

use super::testing::{wait, web_service, Harness};
use super::*;
use crate::balancer::fake::FakeBalancer;
use crate::config::{ByteSize, HumanDuration, OnOom, ServiceConfig};
use crate::runtime::{ExitStatus, ResourceUsage, StopSignal, WorkerId};
use std::sync::Arc;

fn service(workers: u32) -> ServiceConfig {
    web_service(workers, "")
}

#[tokio::test(start_paused = true)]
async fn fills_the_pool_with_fresh_addresses() {
    let h = Harness::start(service(3)).await;
    wait(2).await;
    let status = h.status();
    assert_eq!((status.desired, status.ready), (3, 3));
    assert!(
        status.slots.iter().all(|s| s.state == SlotState::Ok),
        "{:?}",
        status.slots
    );
    assert_eq!(h.balancer.weighted_backends().len(), 3);
    let addrs = h.runtime.state().addresses_handed_out.clone();
    assert_eq!(addrs.len(), 3);
}

/// Issue 11: the operator sees why a worker died, not only its exit code.
#[tokio::test(start_paused = true)]
async fn a_crash_reports_the_workers_last_output_line() {
    let h = Harness::start(service(1)).await;
    wait(2).await;
    let victim = h.ready_worker(0).id;
    h.runtime
        .state()
        .workers
        .get_mut(&victim)
        .unwrap()
        .last_output = Some("[emerg] chown(\"/var/lib/nginx/body\", 33) failed".into());
    h.runtime.exit(victim, ExitStatus::Code(1));
    wait(1).await;
    let slot = &h.status().slots[0];
    assert_eq!(
        slot.last_error.as_deref(),
        Some(&*format!(
            "worker {victim} exit code 1 while ready: [emerg] chown(\"/var/lib/nginx/body\", 33) failed"
        )),
        "{slot:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn crash_is_replaced_with_exponential_backoff_and_crash_loop_shows() {
    let h = Harness::start(service(2)).await;
    wait(2).await;
    let victim = h.ready_worker(1);
    h.runtime.state().fail_spawns = true;
    h.runtime.exit(victim.id, ExitStatus::Code(1));
    wait(1).await;
    let status = h.status();
    assert_eq!(status.ready, 1);
    assert!(!status
        .workers
        .iter()
        .any(|w| w.id == victim.id && w.state != WorkerState::Gone));
    assert!(
        !h.balancer
            .state()
            .backends
            .contains_key(&victim.addr.unwrap()),
        "crashed backend removed"
    );
    assert!(h.runtime.state().workers[&victim.id].torn_down);

    wait(60).await;
    let attempts: Vec<_> = h
        .runtime
        .state()
        .spawn_attempts
        .iter()
        .filter(|(slot, _)| *slot == 1)
        .map(|(_, at)| *at)
        .collect();
    // Initial spawn, then retries after 1s, 2s, 4s, 8s, 16s (+ tick granularity).
    assert!(attempts.len() >= 5, "{attempts:?}");
    let gaps: Vec<f64> = attempts
        .windows(2)
        .skip(1)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    for pair in gaps.windows(2) {
        assert!(pair[1] > pair[0] * 1.5, "backoff grows: {gaps:?}");
    }
    let slot = &h.status().slots[1];
    assert_eq!(slot.state, SlotState::CrashLoop, "{slot:?}");
    assert!(slot.failures >= CRASH_LOOP_FAILURES);
    assert!(
        slot.last_error
            .as_deref()
            .unwrap()
            .contains("spawn failed: "),
        "{slot:?}"
    );
    assert_eq!(h.status().slots[0].state, SlotState::Ok);

    // Recovery: the slot refills, and its failure count resets after backoff.max of readiness.
    h.runtime.state().fail_spawns = false;
    wait(70).await;
    assert_eq!(h.status().ready, 2);
    assert_eq!(h.status().slots[1].state, SlotState::Ok);
    wait(61).await;
    assert_eq!(h.status().slots[1].failures, 0);
}

/// Lifetime recycles: jittered, never below min_lifetime, one at a time, surge keeps capacity.
#[tokio::test(start_paused = true)]
async fn lifetime_recycles_are_staggered_and_keep_capacity() {
    let mut config = service(4);
    config.recycle.max_lifetime = Some(HumanDuration::from_secs(120));
    config.recycle.lifetime_jitter = HumanDuration::from_secs(40);
    config.recycle.min_lifetime = HumanDuration::from_secs(90);
    let h = Harness::start(config).await;
    wait(2).await;
    let first: Vec<WorkerId> = h
        .workers_in(WorkerState::Ready)
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(first.len(), 4);
    wait(85).await;
    assert_eq!(
        h.workers_in(WorkerState::Ready)
            .iter()
            .map(|w| w.id)
            .collect::<Vec<_>>(),
        first,
        "min_lifetime holds"
    );

    let mut most_in_flight = 0;
    for _ in 0..80 {
        wait(1).await;
        let status = h.status();
        let in_flight = status
            .slots
            .iter()
            .filter(|s| s.state == SlotState::Recycling)
            .count();
        most_in_flight = most_in_flight.max(in_flight);
        assert!(status.ready >= 4, "ready dropped below desired: {status:?}");
    }
    let now: Vec<WorkerId> = h
        .workers_in(WorkerState::Ready)
        .iter()
        .map(|w| w.id)
        .collect();
    assert!(
        now.iter().all(|id| !first.contains(id)),
        "every worker recycled by 165s: {first:?} -> {now:?}"
    );
    assert_eq!(most_in_flight, 1, "max_concurrent_recycles = 1");
    let balancer = h.balancer.state();
    assert_eq!(balancer.min_weighted_after_full, Some(4));
    assert!(
        balancer.max_backends <= 5,
        "at most one surge worker at a time"
    );
    assert!(balancer.removed_with_active.is_empty());
    // Recycles were spread out, not all at one instant.
    let signals = h.runtime.state().signals.clone();
    let terms: Vec<_> = signals
        .iter()
        .filter(|(_, s, _)| *s == StopSignal::Term)
        .map(|(_, _, at)| *at)
        .collect();
    assert_eq!(terms.len(), 4);
    assert!(terms.windows(2).all(|w| w[1] > w[0]));
}

/// Surge order: the replacement is ready and weighted before the old worker gets weight 0;
/// the old one is stopped only when its active connections reach 0.
#[tokio::test(start_paused = true)]
async fn manual_recycle_drains_before_stopping() {
    let h = Harness::start(service(2)).await;
    wait(2).await;
    let old = h.ready_worker(0);
    let old_addr = old.addr.unwrap();
    h.balancer.set_active(old_addr, 5);
    let (slots, done) = h.pool.recycle(Some(0)).await.unwrap();
    assert_eq!(slots, vec![0]);
    wait(10).await;
    let draining = h.workers_in(WorkerState::Draining);
    assert_eq!(draining.len(), 1);
    assert_eq!(draining[0].id, old.id);
    assert_eq!(draining[0].reason, Some(RecycleReason::Manual));
    assert_eq!(h.balancer.state().backends[&old_addr].weight, 0);
    assert_eq!(h.status().ready, 2, "replacement is ready");
    assert!(
        h.runtime.signals_to(old.id).is_empty(),
        "not stopped while connections are active"
    );

    h.balancer.set_active(old_addr, 0);
    wait(2).await;
    assert_eq!(h.runtime.signals_to(old.id), vec![StopSignal::Term]);
    assert!(!h.balancer.state().backends.contains_key(&old_addr));
    done.await.expect("recycle finished");
    assert!(h.balancer.state().removed_with_active.is_empty());
    assert_eq!(h.balancer.state().min_weighted_after_full, Some(2));
}

#[tokio::test(start_paused = true)]
async fn drain_timeout_then_sigterm_then_sigkill() {
    let mut config = service(1);
    config.recycle.drain_timeout = HumanDuration::from_secs(20);
    config.recycle.stop_timeout = HumanDuration::from_secs(5);
    let h = Harness::start(config).await;
    wait(2).await;
    let old = h.ready_worker(0);
    h.balancer.set_active(old.addr.unwrap(), 3);
    h.runtime.state().ignore_term = true;
    h.pool.recycle(None).await.unwrap();
    wait(15).await;
    assert!(h.runtime.signals_to(old.id).is_empty());
    wait(7).await;
    assert_eq!(h.runtime.signals_to(old.id), vec![StopSignal::Term]);
    assert_eq!(h.workers_in(WorkerState::Stopping).len(), 1);
    wait(6).await;
    assert_eq!(
        h.runtime.signals_to(old.id),
        vec![StopSignal::Term, StopSignal::Kill]
    );
    wait(1).await;
    assert!(h.status().workers.iter().all(|w| w.id != old.id));
}

/// A dump without the backend (or a failed dump) is not "drained": wait for the timeout.
#[tokio::test(start_paused = true)]
async fn missing_stats_are_never_read_as_drained() {
    let mut config = service(1);
    config.recycle.drain_timeout = HumanDuration::from_secs(20);
    let h = Harness::start(config).await;
    wait(2).await;
    let old = h.ready_worker(0);
    h.balancer.state().hidden.insert(old.addr.unwrap());
    h.pool.recycle(None).await.unwrap();
    wait(10).await;
    assert!(
        h.runtime.signals_to(old.id).is_empty(),
        "hidden backend is not drained"
    );
    h.balancer.state().hidden.clear();
    h.balancer.state().fail_stats = true;
    wait(5).await;
    assert!(
        h.runtime.signals_to(old.id).is_empty(),
        "failed dump is not drained"
    );
    wait(8).await;
    assert_eq!(h.runtime.signals_to(old.id), vec![StopSignal::Term]);
}

#[tokio::test(start_paused = true)]
async fn max_connections_recycles() {
    let mut config = service(2);
    config.recycle.max_connections = Some(1000);
    let h = Harness::start(config).await;
    wait(2).await;
    let busy = h.ready_worker(1);
    let calm = h.ready_worker(0);
    h.balancer
        .state()
        .backends
        .get_mut(&busy.addr.unwrap())
        .unwrap()
        .total = 999;
    wait(5).await;
    assert!(h.runtime.signals_to(busy.id).is_empty());
    h.balancer
        .state()
        .backends
        .get_mut(&busy.addr.unwrap())
        .unwrap()
        .total = 1000;
    wait(5).await;
    assert_eq!(h.runtime.signals_to(busy.id), vec![StopSignal::Term]);
    assert!(h.runtime.signals_to(calm.id).is_empty());
    assert_eq!(h.status().ready, 2);
}

#[tokio::test(start_paused = true)]
async fn max_memory_and_oom_kill_recycle() {
    let mut config = service(3);
    config.recycle.max_memory = Some(ByteSize::mib(100));
    let h = Harness::start(config).await;
    wait(2).await;
    let (fat, oom, fine) = (h.ready_worker(0), h.ready_worker(1), h.ready_worker(2));
    h.runtime.set_usage(
        fat.id,
        ResourceUsage {
            memory_bytes: 101 << 20,
            oom_kills: 0,
            ..Default::default()
        },
    );
    h.runtime.set_usage(
        fine.id,
        ResourceUsage {
            memory_bytes: 99 << 20,
            oom_kills: 0,
            ..Default::default()
        },
    );
    h.runtime.set_usage(
        oom.id,
        ResourceUsage {
            memory_bytes: 10 << 20,
            oom_kills: 1,
            ..Default::default()
        },
    );
    wait(10).await;
    assert_eq!(h.runtime.signals_to(fat.id), vec![StopSignal::Term]);
    assert_eq!(h.runtime.signals_to(oom.id), vec![StopSignal::Term]);
    assert!(h.runtime.signals_to(fine.id).is_empty());
    assert_eq!(h.balancer.state().min_weighted_after_full, Some(3));
}

#[tokio::test(start_paused = true)]
async fn oom_kill_ignored_when_configured() {
    let mut config = service(1);
    config.recycle.on_oom = OnOom::Ignore;
    let h = Harness::start(config).await;
    wait(2).await;
    let worker = h.ready_worker(0);
    h.runtime.set_usage(
        worker.id,
        ResourceUsage {
            memory_bytes: 1,
            oom_kills: 4,
            ..Default::default()
        },
    );
    wait(10).await;
    assert!(h.runtime.signals_to(worker.id).is_empty());
}

/// An unhealthy worker loses traffic at once (no waiting for a replacement) and is replaced.
#[tokio::test(start_paused = true)]
async fn failed_health_checks_replace_the_worker() {
    let h = Harness::start(service(2)).await;
    wait(2).await;
    let sick = h.ready_worker(0);
    h.health.set_unhealthy(sick.addr.unwrap().ip(), true);
    // Interval 2s, threshold 3: weight 0 after about 6s.
    wait(3).await;
    assert_eq!(
        h.balancer.state().backends[&sick.addr.unwrap()].weight,
        1,
        "not yet: threshold is 3"
    );
    wait(5).await;
    assert!(h
        .balancer
        .state()
        .backends
        .get(&sick.addr.unwrap())
        .is_none_or(|b| b.weight == 0));
    wait(5).await;
    assert_eq!(h.status().ready, 2);
    assert!(
        h.status().workers.iter().all(|w| w.id != sick.id),
        "sick worker is gone"
    );
    assert_eq!(h.status().slots[0].failures, 1);
}

/// Issue 9: under CPU starvation a worker's probes time out while it keeps answering its
/// clients. Such a worker is slow, not dead: timeouts while its byte count in the balancer
/// grows are never counted against it. Once nothing flows, the same timeouts replace it.
#[tokio::test(start_paused = true)]
async fn probe_timeouts_of_a_worker_answering_its_clients_do_not_count() {
    let h = Harness::start(service(2)).await;
    wait(2).await;
    let busy = h.ready_worker(0);
    let addr = busy.addr.unwrap();
    h.health.set_timing_out(addr.ip(), true);
    // Interval 2s, threshold 3: replaced within about 8s if the timeouts counted.
    for _ in 0..30 {
        h.balancer.add_out_bytes(addr, 1500);
        wait(1).await;
    }
    let status = h.status();
    assert_eq!(status.ready, 2);
    assert_eq!(
        h.ready_worker(0).id,
        busy.id,
        "a serving worker was replaced"
    );
    assert_eq!(h.balancer.state().backends[&addr].weight, 1);
    assert_eq!(status.slots[0].failures, 0, "{:?}", status.slots);

    // It stops answering anyone: now the timeouts count.
    wait(20).await;
    let status = h.status();
    assert!(
        status.workers.iter().all(|w| w.id != busy.id),
        "a silent worker whose probes time out was kept: {:?}",
        status.workers
    );
    assert_eq!(status.ready, 2);
    assert_eq!(status.slots[0].failures, 1, "{:?}", status.slots);
}

/// Bytes flowing excuse only timeouts: a worker that refuses its probes (or answers them
/// wrongly) is replaced even while it sends something to its clients.
#[tokio::test(start_paused = true)]
async fn refused_probes_count_even_while_the_worker_answers_clients() {
    let h = Harness::start(service(2)).await;
    wait(2).await;
    let sick = h.ready_worker(0);
    let addr = sick.addr.unwrap();
    h.health.set_unhealthy(addr.ip(), true);
    for _ in 0..20 {
        h.balancer.add_out_bytes(addr, 1500);
        wait(1).await;
    }
    let status = h.status();
    assert!(
        status.workers.iter().all(|w| w.id != sick.id),
        "{:?}",
        status.workers
    );
    assert_eq!(status.slots[0].failures, 1, "{:?}", status.slots);
}

/// poold out of file descriptors is poold's problem: checks that cannot even run never
/// count against the workers, however long it lasts.
#[tokio::test(start_paused = true)]
async fn local_errors_of_health_checks_never_replace_a_worker() {
    let h = Harness::start(service(2)).await;
    wait(2).await;
    let before: Vec<WorkerId> = h.status().workers.iter().map(|w| w.id).collect();
    h.health.all_local_errors(true);
    wait(60).await;
    let status = h.status();
    assert_eq!(status.ready, 2);
    let after: Vec<WorkerId> = status.workers.iter().map(|w| w.id).collect();
    assert_eq!(
        before, after,
        "a worker was replaced for poold's own shortage"
    );
    assert!(
        status.slots.iter().all(|s| s.failures == 0),
        "{:?}",
        status.slots
    );
    h.health.all_local_errors(false);
}

#[tokio::test(start_paused = true)]
async fn worker_never_healthy_fails_its_start() {
    let mut config = service(1);
    config.health.start_timeout = HumanDuration::from_secs(10);
    let h = Harness::start(config).await;
    h.health.all_unhealthy();
    wait(11).await;
    let status = h.status();
    assert_eq!(status.ready, 0);
    assert_eq!(status.slots[0].state, SlotState::Backoff, "{status:?}");
    assert!(status.slots[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("start_timeout"));
    assert!(
        h.balancer.state().backends.is_empty(),
        "never added to the balancer"
    );
}

/// A replacement that fails to start leaves the old worker serving; the recycle is retried.
#[tokio::test(start_paused = true)]
async fn failed_surge_replacement_keeps_the_old_worker() {
    let h = Harness::start(service(1)).await;
    wait(2).await;
    let old = h.ready_worker(0);
    h.runtime.state().fail_spawns = true;
    h.pool.recycle(None).await.unwrap();
    wait(5).await;
    assert_eq!(h.ready_worker(0).id, old.id);
    assert!(h.runtime.signals_to(old.id).is_empty());
    h.runtime.state().fail_spawns = false;
    wait(10).await;
    assert_ne!(h.ready_worker(0).id, old.id);
    assert_eq!(h.runtime.signals_to(old.id), vec![StopSignal::Term]);
    assert_eq!(h.balancer.state().min_weighted_after_full, Some(1));
}

#[tokio::test(start_paused = true)]
async fn recycle_all_with_wait_replaces_every_worker_one_at_a_time() {
    let h = Harness::start(service(3)).await;
    wait(2).await;
    let before: Vec<WorkerId> = h
        .workers_in(WorkerState::Ready)
        .iter()
        .map(|w| w.id)
        .collect();
    let (slots, done) = h.pool.recycle(None).await.unwrap();
    assert_eq!(slots, vec![0, 1, 2]);
    done.await.unwrap();
    let after: Vec<WorkerId> = h
        .workers_in(WorkerState::Ready)
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(|id| !before.contains(id)));
    assert!(h
        .status()
        .workers
        .iter()
        .all(|w| w.state == WorkerState::Ready));
    {
        let balancer = h.balancer.state();
        assert_eq!(balancer.min_weighted_after_full, Some(3));
        assert_eq!(balancer.max_backends, 4);
    }
    let error = h.pool.recycle(Some(3)).await.unwrap_err();
    assert!(
        matches!(
            error,
            PoolError::NoSuchSlot {
                slot: 3,
                last: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "service web has slots 0 to 2");
}

/// Without surge the old worker drains and stops before its replacement starts.
#[tokio::test(start_paused = true)]
async fn without_surge_drain_comes_first() {
    let mut config = service(2);
    config.recycle.surge = false;
    let h = Harness::start(config).await;
    wait(2).await;
    let old = h.ready_worker(0);
    let (_, done) = h.pool.recycle(Some(0)).await.unwrap();
    done.await.unwrap();
    let state = h.runtime.state();
    let term_at = state
        .signals
        .iter()
        .find(|(w, _, _)| *w == old.id)
        .unwrap()
        .2;
    let respawn_at = state
        .spawn_attempts
        .iter()
        .filter(|(slot, _)| *slot == 0)
        .nth(1)
        .unwrap()
        .1;
    assert!(
        respawn_at >= term_at,
        "replacement spawned after the old worker was stopped"
    );
    assert_eq!(h.balancer.state().max_backends, 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_everything_and_removes_the_service() {
    let h = Harness::start(service(3)).await;
    wait(2).await;
    h.pool.shutdown().await;
    let state = h.runtime.state();
    assert_eq!(state.workers.len(), 3);
    assert!(state.workers.values().all(|w| w.torn_down));
    assert!(!h.balancer.state().service);
    assert!(h.pool.status.borrow().workers.is_empty());
}

/// Graceful shutdown: no new connections, then each worker drains (ActiveConn 0) before its
/// SIGTERM; an idle worker stops at once.
#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_active_connections_to_end() {
    let mut config = service(2);
    config.recycle.drain_timeout = HumanDuration::from_secs(60);
    let h = Harness::start(config).await;
    wait(2).await;
    let (busy, idle) = (h.ready_worker(0), h.ready_worker(1));
    let busy_addr = busy.addr.unwrap();
    h.balancer.set_active(busy_addr, 2);
    let pool = h.pool.clone();
    let shutdown = tokio::spawn(async move { pool.shutdown().await });
    wait(10).await;
    assert!(
        !h.balancer.state().accepting,
        "new connections stopped first"
    );
    assert_eq!(h.balancer.state().backends[&busy_addr].weight, 0);
    assert!(
        h.runtime.signals_to(busy.id).is_empty(),
        "not stopped while connections are active"
    );
    assert_eq!(h.runtime.signals_to(idle.id), vec![StopSignal::Term]);
    assert!(!shutdown.is_finished());

    h.balancer.set_active(busy_addr, 0);
    wait(2).await;
    assert_eq!(h.runtime.signals_to(busy.id), vec![StopSignal::Term]);
    shutdown.await.unwrap();
    assert!(h.balancer.state().removed_with_active.is_empty());
    assert!(!h.balancer.state().service);
    assert!(h.runtime.state().workers.values().all(|w| w.torn_down));
}

/// Connections that never end hold shutdown up for drain_timeout, not longer.
#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_draining_at_drain_timeout() {
    let mut config = service(1);
    config.recycle.drain_timeout = HumanDuration::from_secs(20);
    let h = Harness::start(config).await;
    wait(2).await;
    let busy = h.ready_worker(0);
    h.balancer.set_active(busy.addr.unwrap(), 3);
    let pool = h.pool.clone();
    let shutdown = tokio::spawn(async move { pool.shutdown().await });
    wait(15).await;
    assert!(h.runtime.signals_to(busy.id).is_empty());
    assert!(!shutdown.is_finished());
    wait(7).await;
    assert_eq!(h.runtime.signals_to(busy.id), vec![StopSignal::Term]);
    shutdown.await.unwrap();
    assert!(!h.balancer.state().service);
}

/// A second signal hurries the shutdown: connections that would hold it up for the whole
/// drain_timeout are cut at once; a hurry before any shutdown changes nothing.
#[tokio::test(start_paused = true)]
async fn hurrying_a_shutdown_stops_draining_workers_at_once() {
    let mut config = service(2);
    config.recycle.drain_timeout = HumanDuration::from_secs(300);
    let h = Harness::start(config).await;
    wait(2).await;
    let (busy, other) = (h.ready_worker(0), h.ready_worker(1));
    h.balancer.set_active(busy.addr.unwrap(), 3);
    h.balancer.set_active(other.addr.unwrap(), 1);
    h.pool.hurry_shutdown().await;
    wait(2).await;
    assert_eq!(h.balancer.state().backends[&busy.addr.unwrap()].weight, 1);
    assert!(h.runtime.signals_to(busy.id).is_empty());

    let pool = h.pool.clone();
    let shutdown = tokio::spawn(async move { pool.shutdown().await });
    wait(10).await;
    assert!(h.runtime.signals_to(busy.id).is_empty(), "still draining");
    assert!(!shutdown.is_finished());
    h.pool.hurry_shutdown().await;
    wait(2).await;
    assert_eq!(h.runtime.signals_to(busy.id), vec![StopSignal::Term]);
    assert_eq!(h.runtime.signals_to(other.id), vec![StopSignal::Term]);
    shutdown.await.unwrap();
    assert!(!h.balancer.state().service);
    assert!(h.runtime.state().workers.values().all(|w| w.torn_down));
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_stops_the_pool() {
    let h = Harness::start(service(2)).await;
    wait(2).await;
    let Harness {
        runtime,
        balancer,
        pool,
        ..
    } = h;
    let mut status = pool.status.clone();
    drop(pool);
    // The pool stops its workers and publishes an empty status before it ends.
    status.wait_for(|s| s.workers.is_empty()).await.unwrap();
    wait(1).await;
    assert!(runtime.state().workers.values().all(|w| w.torn_down));
    assert!(!balancer.state().service);
}

/// poolctl and scripts read this JSON: the worker id stays a bare number, the rest as it was.
#[test]
fn worker_status_json_is_stable() {
    let status = WorkerStatus {
        slot: 1,
        id: WorkerId(7),
        state: WorkerState::Draining,
        addr: Some("10.0.0.2:8080".parse().unwrap()),
        pid: Some(42),
        age_secs: 1.5,
        active_conns: 3,
        total_conns: 40,
        memory_bytes: 1024,
        memory_limit_bytes: Some(1 << 20),
        cpu_secs: 0.25,
        reason: Some(RecycleReason::MaxMemory),
        chroot: false,
        generation: 1,
    };
    let json = serde_json::to_string(&status).unwrap();
    assert_eq!(
        json,
        r#"{"slot":1,"id":7,"state":"draining","addr":"10.0.0.2:8080","pid":42,"age_secs":1.5,"active_conns":3,"total_conns":40,"memory_bytes":1024,"memory_limit_bytes":1048576,"cpu_secs":0.25,"reason":"max-memory","generation":1}"#
    );
    let back: WorkerStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(back, status);
}

// ----- reload and deploy -------------------------------------------------------------------

/// Waits (paused time, 100 ms steps, at most `secs`) until `done` holds of the status.
async fn until(h: &Harness, secs: u64, done: impl Fn(&ServiceStatus) -> bool) -> ServiceStatus {
    for _ in 0..secs * 10 {
        let status = h.status();
        if done(&status) {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not reached within {secs}s: {:#?}", h.status());
}

/// `future`'s output, or a panic after two minutes (paused time).
async fn deadline<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(120), future)
        .await
        .expect("finished within 120s")
}

fn all_ready_at(generation: u64) -> impl Fn(&ServiceStatus) -> bool {
    move |status| {
        status.generation == generation
            && !status.rolling_out
            && status.workers.len() == status.desired as usize
            && status
                .workers
                .iter()
                .all(|w| w.state == WorkerState::Ready && w.generation == generation)
    }
}

#[tokio::test(start_paused = true)]
async fn a_rolling_reload_replaces_every_worker_one_at_a_time_surge_first() {
    let h = Harness::start(service(3)).await;
    let before = until(&h, 5, all_ready_at(1)).await;
    let mut changed = service(3);
    changed.command = vec!["/bin/app".into(), "--v2".into()];
    let generation = h.pool.reconfigure(Arc::new(changed), true).await.unwrap();
    assert_eq!(generation, 2);
    // One rollout at a time per service.
    let second = h.pool.reconfigure(Arc::new(service(3)), true).await;
    assert!(
        matches!(second, Err(PoolError::RolloutInFlight { .. })),
        "{second:?}"
    );
    let mut most_recycling = 0;
    for _ in 0..600 {
        let status = h.status();
        most_recycling = most_recycling.max(
            status
                .slots
                .iter()
                .filter(|s| s.state == SlotState::Recycling)
                .count(),
        );
        if all_ready_at(2)(&status) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = until(&h, 1, all_ready_at(2)).await;
    assert_eq!(most_recycling, 1, "one worker at a time");
    let old: Vec<_> = before.workers.iter().map(|w| w.id).collect();
    assert!(after.workers.iter().all(|w| !old.contains(&w.id)));
    assert_eq!(
        h.balancer.state().min_weighted_after_full,
        Some(3),
        "never fewer than 3 serving"
    );
}

#[tokio::test(start_paused = true)]
async fn an_in_place_reload_changes_weights_and_scales_without_a_new_generation() {
    let h = Harness::start(service(3)).await;
    let before = until(&h, 5, all_ready_at(1)).await;
    let mut changed = service(1);
    changed.weight = 5;
    let generation = h.pool.reconfigure(Arc::new(changed), false).await.unwrap();
    assert_eq!(generation, 1);
    let after = until(&h, 30, |s| s.workers.len() == 1 && s.ready == 1).await;
    assert_eq!((after.desired, after.min_ready), (1, 1));
    let kept = &after.workers[0];
    assert_eq!(kept.id, before.workers[0].id, "slot 0 keeps its worker");
    let weights: Vec<u32> = h
        .balancer
        .state()
        .backends
        .values()
        .map(|b| b.weight)
        .collect();
    assert_eq!(weights, vec![5]);
}

#[tokio::test(start_paused = true)]
async fn a_deploy_replaces_every_worker_with_one_on_the_new_root() {
    let h = Harness::start(service(2)).await;
    until(&h, 5, all_ready_at(1)).await;
    let (generation, done) = h.pool.deploy("/srv/v2".into()).await.unwrap();
    assert_eq!(generation, 2);
    let refused = h.pool.deploy("/srv/v3".into()).await;
    assert!(
        matches!(refused, Err(PoolError::RolloutInFlight { .. })),
        "{refused:?}"
    );
    deadline(done).await.unwrap().unwrap();
    let after = until(&h, 1, all_ready_at(2)).await;
    assert_eq!(after.deployed_rootfs.as_deref(), Some("/srv/v2"));
    {
        let state = h.runtime.state();
        for worker in &after.workers {
            assert_eq!(state.workers[&worker.id].rootfs, "/srv/v2");
        }
    }
    // The next reload brings the config's root back.
    h.pool
        .reconfigure(Arc::new(service(2)), false)
        .await
        .unwrap();
    let back = until(&h, 60, all_ready_at(3)).await;
    assert_eq!(back.deployed_rootfs, None);
    let state = h.runtime.state();
    assert!(back
        .workers
        .iter()
        .all(|w| state.workers[&w.id].rootfs == "host"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_deploy_rolls_the_replaced_workers_back() {
    let h = Harness::start(service(3)).await;
    let before = until(&h, 5, all_ready_at(1)).await;
    let (_, done) = h.pool.deploy("/srv/broken".into()).await.unwrap();
    // The first new worker serves; then the new root turns out broken.
    until(&h, 30, |s| {
        s.workers
            .iter()
            .any(|w| w.generation == 2 && w.state == WorkerState::Ready)
    })
    .await;
    h.runtime.state().fail_rootfs = Some("/srv/broken".into());
    let failure = deadline(done).await.unwrap().unwrap_err();
    assert_eq!((failure.generation, failure.rolled_back_to), (2, 1));
    assert!(failure.failure.contains("spawn failed"), "{failure}");
    let after = until(&h, 60, all_ready_at(1)).await;
    assert_eq!(after.deployed_rootfs, None);
    // Two of the original workers never stopped; the replaced one was rolled back.
    let original: Vec<_> = before.workers.iter().map(|w| w.id).collect();
    let kept = after
        .workers
        .iter()
        .filter(|w| original.contains(&w.id))
        .count();
    assert_eq!(kept, 2, "{after:#?}");
    let state = h.runtime.state();
    assert!(after
        .workers
        .iter()
        .all(|w| state.workers[&w.id].rootfs == "host"));
    drop(state);
    assert_eq!(h.balancer.state().min_weighted_after_full, Some(3));
}

/// `poolctl drain web/0`: weight 0, kept alive and not replaced, not counted ready; errors
/// for an unknown or already drained slot; `undrain` restores the weight.
#[tokio::test(start_paused = true)]
async fn drained_slot_stays_out_of_rotation_until_undrain() {
    let mut config = service(2);
    config.recycle.max_lifetime = Some(HumanDuration::from_secs(60));
    let h = Harness::start(config).await;
    wait(2).await;
    let worker = h.ready_worker(0);
    let addr = worker.addr.unwrap();
    assert_eq!(h.pool.drain_slot(0, true).await, Ok(worker.id));
    assert_eq!(h.balancer.state().backends[&addr].weight, 0);
    let status = h.status();
    assert_eq!(status.ready, 1, "a drained worker is not ready");
    assert_eq!(status.slots[0].state, SlotState::Drained);
    assert_eq!(h.workers_in(WorkerState::Drained)[0].id, worker.id);

    assert_eq!(
        h.pool.drain_slot(0, true).await.unwrap_err().to_string(),
        "web/0 is already drained"
    );
    assert_eq!(
        h.pool.drain_slot(2, true).await.unwrap_err().to_string(),
        "service web has slots 0 to 1"
    );
    assert_eq!(
        h.pool.drain_slot(1, false).await.unwrap_err().to_string(),
        "web/1 is not drained"
    );

    // Past its lifetime and failing probes: kept for inspection, no replacement started.
    h.health.set_unhealthy(addr.ip(), true);
    wait(120).await;
    assert!(h.runtime.signals_to(worker.id).is_empty());
    let status = h.status();
    assert_eq!(status.slots[0].state, SlotState::Drained, "{status:?}");
    assert_eq!(status.workers.iter().filter(|w| w.slot == 0).count(), 1);

    // Undrained, the deferred lifetime recycle replaces it (surge: capacity kept).
    h.health.set_unhealthy(addr.ip(), false);
    assert_eq!(h.pool.drain_slot(0, false).await, Ok(worker.id));
    wait(5).await;
    let status = h.status();
    assert_eq!(status.ready, 2);
    assert_eq!(status.slots[0].state, SlotState::Ok);
    assert_eq!(status.slots[0].last_recycle, Some(RecycleReason::Lifetime));
    assert!(status.workers.iter().all(|w| w.id != worker.id));
}

/// A recycle replaces a drained worker like any other: the replacement serves, the
/// drained one drains and stops, the slot counts the recycle.
#[tokio::test(start_paused = true)]
async fn recycling_a_drained_slot_replaces_it() {
    let h = Harness::start(service(2)).await;
    wait(2).await;
    let worker = h.ready_worker(1);
    let addr = worker.addr.unwrap();
    h.pool.drain_slot(1, true).await.unwrap();
    h.pool.drain_slot(1, false).await.unwrap();
    assert_eq!(h.balancer.state().backends[&addr].weight, 1, "undrained");
    assert_eq!(h.status().ready, 2);
    h.pool.drain_slot(1, true).await.unwrap();
    let (_, done) = h.pool.recycle(Some(1)).await.unwrap();
    done.await.expect("recycle finished");
    let status = h.status();
    assert_eq!(status.ready, 2);
    assert_eq!(status.slots[1].state, SlotState::Ok);
    assert_eq!(
        (status.slots[1].recycles, status.slots[1].last_recycle),
        (1, Some(RecycleReason::Manual))
    );
    assert_eq!(h.runtime.signals_to(worker.id), vec![StopSignal::Term]);
    assert!(status.workers.iter().all(|w| w.id != worker.id));
}

/// A slot being recycled cannot be drained meanwhile.
#[tokio::test(start_paused = true)]
async fn a_slot_being_recycled_refuses_drain() {
    let h = Harness::start(service(1)).await;
    wait(2).await;
    h.pool.recycle(Some(0)).await.unwrap();
    assert_eq!(
        h.pool.drain_slot(0, true).await.unwrap_err().to_string(),
        "web/0 is being recycled; try again when it is done"
    );
}

/// `poolctl scale`: up starts new slots at once, down drains the highest slots (weight 0
/// until their connections end) before stopping them; status says what was configured.
#[tokio::test(start_paused = true)]
async fn scale_up_then_down_drains_the_highest_slots_first() {
    let h = Harness::start(service(2)).await;
    wait(2).await;
    let change = h.pool.scale(4, 0).await.unwrap();
    assert_eq!((change.from, change.to, change.configured), (2, 4, 2));
    wait(2).await;
    let status = h.status();
    assert_eq!((status.desired, status.ready), (4, 4));
    assert_eq!(status.scaled_from, Some(2));
    assert_eq!(status.min_ready, 4, "readiness wants the new count");
    assert_eq!(status.slots.len(), 4);

    let (two, three) = (h.ready_worker(2), h.ready_worker(3));
    h.balancer.set_active(three.addr.unwrap(), 2);
    h.pool.scale(2, 0).await.unwrap();
    wait(3).await;
    assert_eq!(h.balancer.state().backends[&three.addr.unwrap()].weight, 0);
    assert!(
        h.runtime.signals_to(three.id).is_empty(),
        "still has connections"
    );
    assert_eq!(h.runtime.signals_to(two.id), vec![StopSignal::Term]);
    let status = h.status();
    assert_eq!(
        (status.desired, status.ready, status.slots.len()),
        (2, 2, 2)
    );
    assert_eq!(status.scaled_from, None, "back at the configured count");
    assert_eq!(status.min_ready, 2);

    h.balancer.set_active(three.addr.unwrap(), 0);
    wait(3).await;
    assert!(h.status().workers.iter().all(|w| w.slot < 2));
    assert!(h.balancer.state().removed_with_active.is_empty());
    wait(10).await;
    assert_eq!(
        h.runtime.state().addresses_handed_out.len(),
        4,
        "nothing respawned"
    );
}

/// Scale stays within 1 and what the subnet holds besides the other services.
#[tokio::test(start_paused = true)]
async fn scale_refuses_out_of_range_counts() {
    let mut options = Harness::builder(service(1)).options_default();
    options.worker_capacity = 10;
    let h = Harness::builder(service(1)).options(options).start().await;
    assert_eq!(
        h.pool.scale(0, 3).await.unwrap_err().to_string(),
        "web: 0 workers is out of range: from 1 to 7 (the subnet holds 10 workers, other services want 3, this one's warm spares 0)"
    );
    assert!(h.pool.scale(8, 3).await.is_err());
    assert!(h.pool.scale(7, 3).await.is_ok());
    assert_eq!(h.status().min_ready, 7);
}

/// A service's warm spares take addresses too: scale leaves room for them.
#[tokio::test(start_paused = true)]
async fn scale_leaves_room_for_the_warm_spares() {
    let config = web_service(2, "[service.recycle]\nspares = 2\n");
    let mut options = Harness::builder(config.clone()).options_default();
    options.worker_capacity = 10;
    let h = Harness::builder(config).options(options).start().await;
    assert_eq!(
        h.pool.scale(6, 3).await.unwrap_err().to_string(),
        "web: 6 workers is out of range: from 1 to 5 (the subnet holds 10 workers, other services want 3, this one's warm spares 2)"
    );
    assert!(h.pool.scale(5, 3).await.is_ok());
}

/// A worker still being spawned when its slot is scaled away stops once spawned, rather
/// than serving from a slot that no longer exists.
#[tokio::test(start_paused = true)]
async fn a_worker_spawning_for_a_scaled_away_slot_is_stopped() {
    let h = Harness::start(service(1)).await;
    wait(2).await;
    h.runtime.state().spawn_delay = Some(std::time::Duration::from_secs(1));
    h.pool.scale(2, 0).await.unwrap();
    h.pool.scale(1, 0).await.unwrap();
    wait(10).await;
    let status = h.status();
    assert_eq!(status.slots.len(), 1, "{status:?}");
    assert!(status.workers.iter().all(|w| w.slot == 0), "{status:?}");
    assert_eq!(h.runtime.state().spawn_attempts.len(), 2);
}

// ----- reload and deploy with scale and slot drain -------------------------------------------

/// `poolctl scale` lasts until the next reload: the configured count comes back.
#[tokio::test(start_paused = true)]
async fn a_reload_brings_a_scaled_count_back() {
    let h = Harness::start(service(2)).await;
    until(&h, 5, all_ready_at(1)).await;
    h.pool.scale(4, 0).await.unwrap();
    let scaled = until(&h, 30, all_ready_at(1)).await;
    assert_eq!((scaled.desired, scaled.scaled_from), (4, Some(2)));
    h.pool
        .reconfigure(Arc::new(service(2)), false)
        .await
        .unwrap();
    let back = until(&h, 60, all_ready_at(1)).await;
    assert_eq!((back.desired, back.scaled_from), (2, None), "{back:#?}");
    assert_eq!(back.workers.len(), 2);
}

/// A rollout replaces a drained slot's worker too (as `recycle` does): the rollout ends and
/// the new worker serves.
#[tokio::test(start_paused = true)]
async fn a_rollout_replaces_a_drained_worker() {
    let h = Harness::start(service(2)).await;
    let before = until(&h, 5, all_ready_at(1)).await;
    let drained = before.workers.iter().find(|w| w.slot == 0).unwrap().id;
    h.pool.drain_slot(0, true).await.unwrap();
    let mut changed = service(2);
    changed.command = vec!["/bin/app".into(), "--v2".into()];
    h.pool.reconfigure(Arc::new(changed), true).await.unwrap();
    let after = until(&h, 60, all_ready_at(2)).await;
    assert!(after.workers.iter().all(|w| w.id != drained), "{after:#?}");
}

// ----- adoption after a restart (issue 9, section 3) ------------------------------------

/// A balancer as an earlier run left it: `backends` at their weights.
fn left_balancer(desired: usize, backends: &[(std::net::SocketAddr, u32)]) -> FakeBalancer {
    let balancer = FakeBalancer::new(desired);
    {
        let mut state = balancer.state();
        state.service = true;
        for (addr, weight) in backends {
            state.backends.insert(
                *addr,
                crate::balancer::BackendStats {
                    weight: *weight,
                    ..Default::default()
                },
            );
        }
    }
    balancer
}

fn pids_by_id(status: &ServiceStatus) -> std::collections::BTreeMap<WorkerId, Option<u32>> {
    status
        .workers
        .iter()
        .filter(|w| w.state != WorkerState::Gone)
        .map(|w| (w.id, w.pid))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_restarted_pool_adopts_its_live_workers_and_starts_only_what_died() {
    let first = Harness::start(service(3)).await;
    wait(2).await;
    let before = first.status();
    assert_eq!(before.ready, 3);
    // Worker of slot 2 dies while poold is down; slot 0's was being drained (weight 0).
    let dead = first.ready_worker(2);
    first.runtime.exit(dead.id, ExitStatus::Signal(9));
    let drained = first.ready_worker(0);
    let runtime = first.runtime.restarted();
    let stale: std::net::SocketAddr = "10.99.0.9:8080".parse().unwrap();
    let balancer = left_balancer(
        3,
        &before
            .workers
            .iter()
            .map(|w| (w.addr.unwrap(), if w.id == drained.id { 0 } else { 1 }))
            .chain([(stale, 1)])
            .collect::<Vec<_>>(),
    );

    let second = Harness::builder(service(3))
        .runtime(runtime.clone())
        .balancer(balancer.clone())
        .start()
        .await;
    wait(2).await;
    let after = second.status();
    assert_eq!(after.ready, 3, "{after:?}");
    let adopted: Vec<_> = before.workers.iter().filter(|w| w.id != dead.id).collect();
    for worker in &adopted {
        let now = after.workers.iter().find(|w| w.id == worker.id);
        assert_eq!(
            now.map(|w| (w.state, w.pid, w.slot)),
            Some((WorkerState::Ready, worker.pid, worker.slot)),
            "{after:?}"
        );
        assert!(
            runtime.signals_to(worker.id).is_empty(),
            "adopted worker signalled"
        );
    }
    // Only the dead worker's slot got a new one, with an id none of the earlier run had.
    let spawned: Vec<u32> = runtime
        .state()
        .spawn_attempts
        .iter()
        .map(|(slot, _)| *slot)
        .collect();
    assert_eq!(spawned, vec![2]);
    let new = second.ready_worker(2);
    assert!(before.workers.iter().all(|w| w.id < new.id), "{new:?}");
    // The balancer: every worker at its weight, the dead and stale backends gone.
    let backends = balancer.state().backends.clone();
    assert_eq!(backends.len(), 3, "{backends:?}");
    assert!(backends.values().all(|b| b.weight == 1), "{backends:?}");
    assert!(!backends.contains_key(&stale));
    assert!(!backends.contains_key(&dead.addr.unwrap()));
}

#[tokio::test(start_paused = true)]
async fn a_restarted_pool_keeps_the_operators_drains_and_scale() {
    let first = Harness::start(service(3)).await;
    wait(2).await;
    first.pool.scale(4, 0).await.unwrap();
    wait(2).await;
    let drained = first.pool.drain_slot(1, true).await.unwrap();
    first.pool.set_drained(true).await.unwrap();
    wait(1).await;
    let before = first.status();
    assert_eq!(before.workers.len(), 4, "{before:?}");
    let runtime = first.runtime.restarted();
    // A fresh proxy after a kill -9: no backend at all until the pool adds them.
    let balancer = FakeBalancer::new(4);

    let second = Harness::builder(service(3))
        .runtime(runtime.clone())
        .balancer(balancer.clone())
        .start()
        .await;
    wait(2).await;
    let after = second.status();
    assert_eq!(
        (after.desired, after.scaled_from),
        (4, Some(3)),
        "{after:?}"
    );
    assert!(after.drained, "the service drain was forgotten: {after:?}");
    let slot1 = after.workers.iter().find(|w| w.id == drained).unwrap();
    assert_eq!(slot1.state, WorkerState::Drained, "{after:?}");
    // Every worker adopted (slot 3 too: no scale-down to the config's 3), none started.
    assert!(runtime.state().spawn_attempts.is_empty(), "{after:?}");
    for worker in &before.workers {
        assert!(
            runtime.signals_to(worker.id).is_empty(),
            "{worker:?} signalled"
        );
    }
    // The drained worker added at weight 0, the others at 1.
    let backends = balancer.state().backends.clone();
    assert_eq!(backends.len(), 4, "{backends:?}");
    for (addr, backend) in &backends {
        let expected = if Some(*addr) == slot1.addr { 0 } else { 1 };
        assert_eq!(backend.weight, expected, "{addr}: {backends:?}");
    }

    // Undone by the operator, it is gone from the record: the next restart restores nothing.
    second.pool.drain_slot(1, false).await.unwrap();
    second.pool.set_drained(false).await.unwrap();
    second.pool.scale(3, 0).await.unwrap();
    wait(1).await;
    assert!(
        runtime.state().operator.is_empty(),
        "{:?}",
        runtime.state().operator
    );
}

#[tokio::test(start_paused = true)]
async fn the_readiness_drain_before_a_stop_is_not_kept_as_the_operators() {
    let pool = Harness::start(service(2)).await;
    wait(2).await;
    pool.pool.drain_for_shutdown().await.unwrap();
    wait(1).await;
    assert!(pool.status().drained);
    // A poold killed during its stop comes back undrained.
    assert!(pool.runtime.state().operator.is_empty());
    pool.pool.set_drained(true).await.unwrap();
    wait(1).await;
    assert!(pool.runtime.state().operator["web"].drained);
}

#[tokio::test(start_paused = true)]
async fn an_adopted_worker_that_no_longer_matches_the_config_is_rolled_not_killed() {
    let first = Harness::start(service(2)).await;
    wait(2).await;
    let before = first.status();
    let runtime = first.runtime.restarted();
    let mut changed = service(2);
    changed.command = vec!["/bin/app2".into()];
    let balancer = left_balancer(
        2,
        &before
            .workers
            .iter()
            .map(|w| (w.addr.unwrap(), 1))
            .collect::<Vec<_>>(),
    );
    let second = Harness::builder(changed)
        .runtime(runtime.clone())
        .balancer(balancer.clone())
        .start()
        .await;
    wait(1).await;
    // Adopted first, serving, before the rollout replaces them one by one (surge).
    let adopted = second.status();
    assert!(
        before.workers.iter().all(|w| adopted
            .workers
            .iter()
            .any(|a| a.id == w.id && a.generation == 0)),
        "{adopted:?}"
    );
    assert_eq!(balancer.state().min_weighted_after_full, Some(2));
    wait(60).await;
    let after = second.status();
    assert_eq!(after.ready, 2, "{after:?}");
    assert!(
        pids_by_id(&after)
            .keys()
            .all(|id| before.workers.iter().all(|w| w.id != *id)),
        "{after:?}"
    );
    for worker in &before.workers {
        assert_eq!(runtime.signals_to(worker.id), vec![StopSignal::Term]);
    }
    // Never fewer than 2 serving while they were replaced.
    assert_eq!(balancer.state().min_weighted_after_full, Some(2));
}

#[tokio::test(start_paused = true)]
async fn of_two_adopted_workers_of_one_slot_the_newest_serves_and_the_other_drains() {
    let first = Harness::start(service(2)).await;
    wait(2).await;
    let before = first.status();
    let (older, newer) = (first.ready_worker(0), first.ready_worker(1));
    let runtime = first.runtime.restarted();
    // As if poold died in a surge recycle of slot 0: both workers of that slot live.
    runtime.state().workers.get_mut(&newer.id).unwrap().slot = 0;
    let balancer = left_balancer(
        2,
        &before
            .workers
            .iter()
            .map(|w| (w.addr.unwrap(), 1))
            .collect::<Vec<_>>(),
    );
    let second = Harness::builder(service(2))
        .runtime(runtime.clone())
        .balancer(balancer.clone())
        .start()
        .await;
    wait(10).await;
    let after = second.status();
    assert_eq!(after.ready, 2, "{after:?}");
    assert_eq!(second.ready_worker(0).id, newer.id);
    assert_eq!(runtime.signals_to(older.id), vec![StopSignal::Term]);
    assert!(runtime.signals_to(newer.id).is_empty());
    let spawned: Vec<u32> = runtime
        .state()
        .spawn_attempts
        .iter()
        .map(|(slot, _)| *slot)
        .collect();
    assert_eq!(spawned, vec![1], "only the emptied slot is filled");
}

#[tokio::test(start_paused = true)]
async fn adopted_workers_beyond_the_configured_count_drain_and_stop() {
    let first = Harness::start(service(3)).await;
    wait(2).await;
    let before = first.status();
    let extra = first.ready_worker(2);
    let runtime = first.runtime.restarted();
    let second = Harness::builder(service(2))
        .runtime(runtime.clone())
        .balancer(left_balancer(
            2,
            &before
                .workers
                .iter()
                .map(|w| (w.addr.unwrap(), 1))
                .collect::<Vec<_>>(),
        ))
        .start()
        .await;
    wait(10).await;
    let after = second.status();
    assert_eq!(after.ready, 2, "{after:?}");
    assert_eq!(runtime.signals_to(extra.id), vec![StopSignal::Term]);
    assert!(runtime.state().spawn_attempts.is_empty());
    assert!(runtime.state().workers[&extra.id].torn_down);
}

// ----- cost as the pool grows (issue 12) ---------------------------------------------------

/// A thousand slots spawned at once made every spawn wait on the others (veth creation
/// under rtnl) until start_timeout passed: spawns of empty slots are bounded.
#[tokio::test(start_paused = true)]
async fn a_large_pool_spawns_a_few_workers_at_a_time() {
    let h = Harness::builder(service(64))
        .spawn_delay(std::time::Duration::from_millis(100))
        .start()
        .await;
    wait(10).await;
    assert_eq!(h.status().ready, 64);
    let max = h.runtime.state().spawning_max;
    let bound = PoolOptions::default().max_spawning;
    assert!(max <= bound, "{max} spawns at once, more than {bound}");
}

/// A spawn that had to wait (for the others, for the kernel) does not eat the worker's
/// start_timeout: it runs from the end of the spawn.
#[tokio::test(start_paused = true)]
async fn start_timeout_runs_from_the_end_of_the_spawn() {
    let config = web_service(
        2,
        "[service.health]\ninterval = \"1s\"\nstart_timeout = \"2s\"\n",
    );
    let h = Harness::builder(config)
        .spawn_delay(std::time::Duration::from_secs(3))
        .start()
        .await;
    wait(6).await;
    let status = h.status();
    assert_eq!(status.ready, 2, "{:?}", status.slots);
    assert!(
        status.slots.iter().all(|s| s.failures == 0),
        "{:?}",
        status.slots
    );
}

/// Usage is read from cgroup files: a bounded number of workers per tick, in turn, so a
/// large pool's tick does not grow with it, and every worker is still read.
#[tokio::test(start_paused = true)]
async fn usage_is_read_for_a_bounded_number_of_workers_per_tick_in_turn() {
    let h = Harness::start(service(200)).await;
    wait(10).await;
    assert_eq!(h.status().ready, 200);
    h.runtime.state().usage_reads.clear();
    // Four ticks of 500 ms.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let reads = h.runtime.state().usage_reads.clone();
    let per_tick = PoolOptions::default().usage_reads_per_tick;
    assert!(
        reads.len() <= 4 * per_tick,
        "{} usage reads in 4 ticks, more than 4 x {per_tick}",
        reads.len()
    );
    let read: std::collections::HashSet<WorkerId> = reads.into_iter().collect();
    assert_eq!(read.len(), 200, "every ready worker is read in turn");
}

/// Workers that became ready together are not probed together for ever: their probes are
/// spread over the interval.
#[tokio::test(start_paused = true)]
async fn probes_of_workers_started_together_are_spread_over_the_interval() {
    let config = web_service(32, "[service.health]\ninterval = \"2s\"\n");
    let h = Harness::start(config).await;
    wait(10).await;
    assert_eq!(h.status().ready, 32);
    h.health.2.lock().unwrap().clear();
    wait(4).await;
    let instants: std::collections::BTreeSet<tokio::time::Instant> = h
        .health
        .2
        .lock()
        .unwrap()
        .iter()
        .map(|(_, at)| *at)
        .collect();
    assert!(
        instants.len() >= 16,
        "32 workers' probes over two intervals came at only {} instants",
        instants.len()
    );
}

/// A probe that passes no longer runs a pass over the pool; the drain settle wakes the pool
/// itself, so a recycled worker with no connections stops at the settle, not at the next
/// tick (the recycle latency of tests/bench/recycle.sh).
#[tokio::test(start_paused = true)]
async fn a_drained_worker_stops_at_the_settle_not_at_the_next_tick() {
    let h = Harness::builder(service(1));
    let options = PoolOptions {
        tick: std::time::Duration::from_secs(2),
        ..h.options_default()
    };
    let h = h.options(options).start().await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let old = h.ready_worker(0).id;
    let asked = tokio::time::Instant::now();
    let (_, done) = h.pool.recycle(Some(0)).await.unwrap();
    done.await.unwrap();
    let term = h
        .runtime
        .state()
        .signals
        .iter()
        .find(|(w, s, _)| *w == old && *s == StopSignal::Term)
        .map(|(_, _, at)| *at)
        .expect("the old worker got SIGTERM");
    // Replacement ready at once, weight 0, settle 1 s: SIGTERM then, not at the 4 s tick.
    assert!(
        term - asked < std::time::Duration::from_millis(1500),
        "SIGTERM {:?} after the recycle",
        term - asked
    );
}
