//! Warm spares on the fakes, in paused time (issue 12, part 3).

use crate::runtime::{ExitStatus, StopSignal, WorkerId, SPARE_SLOT};
use crate::supervisor::testing::{wait, web_service, Harness};
use crate::supervisor::{ServiceStatus, SlotState, WorkerState, WorkerStatus};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// `workers` workers and `spares` warm spares.
fn service(workers: u32, spares: u32) -> crate::config::ServiceConfig {
    web_service(workers, &format!("[service.recycle]\nspares = {spares}\n"))
}

/// Waits (paused time, 10 ms steps, at most `secs`) until `done` holds of the status.
async fn until(h: &Harness, secs: u64, done: impl Fn(&ServiceStatus) -> bool) -> ServiceStatus {
    for _ in 0..secs * 100 {
        let status = h.status();
        if done(&status) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not reached within {secs}s: {:#?}", h.status());
}

/// Every slot ready and `spares` ready spares.
fn settled(workers: u32, spares: u32) -> impl Fn(&ServiceStatus) -> bool {
    move |s| {
        s.ready == workers
            && s.spares == spares
            && s.workers
                .iter()
                .all(|w| matches!(w.state, WorkerState::Ready | WorkerState::Spare))
    }
}

fn spare_of(status: &ServiceStatus) -> WorkerStatus {
    let spares: Vec<_> = status
        .workers
        .iter()
        .filter(|w| w.state == WorkerState::Spare)
        .collect();
    assert_eq!(spares.len(), 1, "{status:#?}");
    assert_eq!(spares[0].slot, SPARE_SLOT);
    spares[0].clone()
}

fn spawns_for(h: &Harness, slot: u32) -> usize {
    h.runtime
        .state()
        .spawn_attempts
        .iter()
        .filter(|(s, _)| *s == slot)
        .count()
}

fn weight(h: &Harness, addr: SocketAddr) -> Option<u32> {
    h.balancer.state().backends.get(&addr).map(|b| b.weight)
}

#[tokio::test(start_paused = true)]
async fn spares_are_at_weight_0_and_never_counted_ready() {
    let h = Harness::start(service(2, 1)).await;
    let status = until(&h, 10, settled(2, 1)).await;
    let spare = spare_of(&status);
    assert_eq!(
        weight(&h, spare.addr.unwrap()),
        Some(0),
        "in the balancer, no traffic"
    );
    assert_eq!(h.balancer.weighted_backends().len(), 2);
    assert_eq!(status.ready, 2, "{status:#?}");
    assert!(status.readiness().ready);
    assert_eq!(status.slots.len(), 2, "a spare is no slot");
    assert!(status.slots.iter().all(|s| s.state == SlotState::Ok));
    // Probed like any worker.
    let probed = h
        .health
        .2
        .lock()
        .unwrap()
        .iter()
        .filter(|(addr, _)| *addr == spare.addr.unwrap())
        .count();
    wait(5).await;
    let probed_later = h
        .health
        .2
        .lock()
        .unwrap()
        .iter()
        .filter(|(addr, _)| *addr == spare.addr.unwrap())
        .count();
    assert!(probed_later > probed, "{probed} then {probed_later}");
}

#[tokio::test(start_paused = true)]
async fn a_recycle_promotes_a_ready_spare_and_refills_it() {
    let h = Harness::start(service(2, 1)).await;
    let before = until(&h, 10, settled(2, 1)).await;
    let spare = spare_of(&before);
    let old = h.ready_worker(0);
    let (_, done) = h.pool.recycle(Some(0)).await.unwrap();
    // The next pass: the spare serves the slot, no new worker was waited for.
    let promoted = until(&h, 1, |s| {
        s.workers
            .iter()
            .any(|w| w.id == spare.id && w.slot == 0 && w.state == WorkerState::Ready)
    })
    .await;
    assert_eq!(weight(&h, spare.addr.unwrap()), Some(1));
    assert_eq!(
        weight(&h, old.addr.unwrap()),
        Some(0),
        "the old worker drains"
    );
    assert!(
        promoted
            .workers
            .iter()
            .any(|w| w.id == old.id && w.state == WorkerState::Draining),
        "{promoted:#?}"
    );
    assert_eq!(
        spawns_for(&h, 0),
        1,
        "no surge replacement spawned for slot 0"
    );
    assert_eq!(h.balancer.state().min_weighted_after_full, Some(2));
    tokio::time::timeout(Duration::from_secs(30), done)
        .await
        .expect("recycle done")
        .unwrap();
    // A new spare in the background.
    let after = until(&h, 10, settled(2, 1)).await;
    let refill = spare_of(&after);
    assert_ne!(refill.id, spare.id);
    assert_eq!(spawns_for(&h, SPARE_SLOT), 2);
    assert_eq!(h.runtime.signals_to(old.id), vec![StopSignal::Term]);
    assert_eq!(
        h.runtime.state().workers[&spare.id].slot,
        0,
        "promotion recorded"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_promotes_a_spare_at_once() {
    let h = Harness::start(service(2, 1)).await;
    let before = until(&h, 10, settled(2, 1)).await;
    let spare = spare_of(&before);
    let victim = h.ready_worker(1);
    h.runtime.exit(victim.id, ExitStatus::Signal(9));
    let after = until(&h, 1, |s| {
        s.workers
            .iter()
            .any(|w| w.id == spare.id && w.slot == 1 && w.state == WorkerState::Ready)
    })
    .await;
    assert_eq!(after.ready, 2, "{after:#?}");
    assert_eq!(weight(&h, spare.addr.unwrap()), Some(1));
    assert_eq!(
        weight(&h, victim.addr.unwrap()),
        None,
        "the dead backend is removed"
    );
    assert_eq!(spawns_for(&h, 1), 1, "the slot did not wait for a spawn");
    // The crash still counts (crash-loop detection), but the slot serves.
    assert_eq!(after.slots[1].failures, 1);
    assert_eq!(after.slots[1].state, SlotState::Ok);
    let refilled = until(&h, 10, settled(2, 1)).await;
    assert_ne!(spare_of(&refilled).id, spare.id);
}

#[tokio::test(start_paused = true)]
async fn without_a_ready_spare_a_recycle_surges_and_a_sick_spare_is_replaced() {
    let h = Harness::start(service(2, 1)).await;
    let before = until(&h, 10, settled(2, 1)).await;
    let sick = spare_of(&before);
    h.health.set_unhealthy(sick.addr.unwrap().ip(), true);
    // One or two failed probes (interval 2s; threshold 3): still a spare, not promotable.
    wait(3).await;
    assert_eq!(h.status().spares, 1);
    let old = h.ready_worker(0);
    h.pool.recycle(Some(0)).await.unwrap();
    let surged = until(&h, 5, |s| {
        s.workers
            .iter()
            .any(|w| w.slot == 0 && w.state == WorkerState::Ready && w.id != old.id)
    })
    .await;
    assert_eq!(spawns_for(&h, 0), 2, "a surge replacement was spawned");
    assert!(surged
        .workers
        .iter()
        .all(|w| w.id != sick.id || w.slot == SPARE_SLOT));
    assert_eq!(h.balancer.state().min_weighted_after_full, Some(2));
    // The sick spare is replaced by a healthy one; it never took traffic.
    let after = until(&h, 20, |s| {
        settled(2, 1)(s) && s.workers.iter().all(|w| w.id != sick.id)
    })
    .await;
    assert_ne!(spare_of(&after).id, sick.id);
    assert_eq!(h.runtime.signals_to(sick.id), vec![StopSignal::Term]);
}

#[tokio::test(start_paused = true)]
async fn old_generation_spares_are_replaced_on_reload_never_promoted() {
    let h = Harness::start(service(2, 1)).await;
    let before = until(&h, 10, settled(2, 1)).await;
    let old_spare = spare_of(&before);
    let mut changed = service(2, 1);
    changed.command = vec!["/bin/app".into(), "--v2".into()];
    assert_eq!(
        h.pool.reconfigure(Arc::new(changed), true).await.unwrap(),
        2
    );
    let old_addr = old_spare.addr.unwrap();
    for _ in 0..6000 {
        let status = h.status();
        assert!(
            status
                .workers
                .iter()
                .all(|w| w.id != old_spare.id || w.slot == SPARE_SLOT),
            "the old spare took a slot: {status:#?}"
        );
        assert!(
            weight(&h, old_addr).unwrap_or(0) == 0,
            "the old spare got traffic"
        );
        if settled(2, 1)(&status)
            && !status.rolling_out
            && status.workers.iter().all(|w| w.generation == 2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = until(&h, 1, |s| s.workers.iter().all(|w| w.generation == 2)).await;
    assert!(settled(2, 1)(&after), "{after:#?}");
    assert_eq!(h.runtime.signals_to(old_spare.id), vec![StopSignal::Term]);
    let new_spare = spare_of(&after);
    assert_eq!(new_spare.generation, 2);
    assert_eq!(h.balancer.state().min_weighted_after_full, Some(2));
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_spares_and_a_restart_adopts_them_as_spares() {
    let first = Harness::start(service(2, 1)).await;
    let before = until(&first, 10, settled(2, 1)).await;
    let promoted = spare_of(&before);
    first.pool.recycle(Some(0)).await.unwrap();
    let before = until(&first, 30, |s| {
        settled(2, 1)(s) && s.workers.iter().any(|w| w.id == promoted.id && w.slot == 0)
    })
    .await;
    let spare = spare_of(&before);

    // poold crashed: its workers live on and a new one adopts them.
    let runtime = first.runtime.restarted();
    let second = Harness::builder(service(2, 1))
        .runtime(runtime.clone())
        .start()
        .await;
    let after = until(&second, 5, settled(2, 1)).await;
    assert_eq!(
        spare_of(&after).id,
        spare.id,
        "the spare is adopted as a spare"
    );
    assert_eq!(
        second.ready_worker(0).id,
        promoted.id,
        "the promoted one as slot 0's"
    );
    assert_eq!(weight(&second, spare.addr.unwrap()), Some(0));
    assert_eq!(weight(&second, promoted.addr.unwrap()), Some(1));
    assert!(runtime.state().spawn_attempts.is_empty(), "nothing spawned");

    tokio::time::timeout(Duration::from_secs(60), second.pool.shutdown())
        .await
        .expect("shut down");
    let ids: Vec<WorkerId> = after.workers.iter().map(|w| w.id).collect();
    let state = runtime.state();
    assert!(
        ids.iter().all(|id| state.workers[id].torn_down),
        "every worker torn down"
    );
    assert!(state.workers.values().all(|w| w.torn_down));
}

#[tokio::test(start_paused = true)]
async fn scale_and_slot_drain_leave_the_spares_alone() {
    let h = Harness::start(service(2, 1)).await;
    let before = until(&h, 10, settled(2, 1)).await;
    let spare = spare_of(&before);
    h.pool.drain_slot(1, true).await.unwrap();
    h.pool.scale(1, 0).await.unwrap();
    let after = until(&h, 60, |s| s.workers.len() == 2 && s.spares == 1).await;
    assert_eq!(spare_of(&after).id, spare.id, "{after:#?}");
    assert_eq!(weight(&h, spare.addr.unwrap()), Some(0));
    // Scaling up again takes the ready spare for the new slot at once.
    h.pool.scale(2, 0).await.unwrap();
    until(&h, 1, |s| {
        s.workers
            .iter()
            .any(|w| w.id == spare.id && w.slot == 1 && w.state == WorkerState::Ready)
    })
    .await;
}

/// What the pool logged, as text (a subscriber for this thread: paused-time tests run the
/// pool's tasks on it).
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(start_paused = true)]
async fn a_spare_logs_as_a_spare_never_as_the_sentinel_slot() {
    let logs = CapturedLogs::default();
    let _capture = logs.capture();
    let h = Harness::start(service(1, 1)).await;
    until(&h, 10, settled(1, 1)).await;
    let text = logs.text();
    assert!(!text.contains(&SPARE_SLOT.to_string()), "{text}");
    let spawned: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("worker spawned"))
        .collect();
    assert_eq!(spawned.len(), 2, "{text}");
    assert!(
        spawned
            .iter()
            .any(|l| l.contains("worker.spare=true") && !l.contains("worker.slot")),
        "{text}"
    );
    assert!(
        spawned
            .iter()
            .any(|l| l.contains("worker.slot=0") && !l.contains("worker.spare")),
        "{text}"
    );
}

/// A deploy whose new generation fails in a spare rolls back, as one failing in a slot's
/// replacement does.
#[tokio::test(start_paused = true)]
async fn a_deploy_rolls_back_when_a_spare_of_its_generation_fails() {
    let h = Harness::start(service(1, 1)).await;
    until(&h, 10, settled(1, 1)).await;
    let (generation, done) = h.pool.deploy("/srv/v2".into()).await.unwrap();
    assert_eq!(generation, 2);
    let spare = until(&h, 5, |s| {
        s.workers
            .iter()
            .any(|w| w.slot == SPARE_SLOT && w.generation == 2)
    })
    .await
    .workers
    .into_iter()
    .find(|w| w.slot == SPARE_SLOT && w.generation == 2)
    .unwrap();
    // Spawned (the fake knows it), then it dies while starting or as a spare.
    for _ in 0..100 {
        if h.runtime.state().workers.contains_key(&spare.id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.runtime.exit(spare.id, ExitStatus::Code(1));
    let failure = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("the deploy ended")
        .unwrap()
        .expect_err("the deploy rolled back");
    assert_eq!((failure.generation, failure.rolled_back_to), (2, 1));
    assert_eq!(failure.worker, spare.id);
    assert!(failure.to_string().contains("spare"), "{failure}");
    let after = until(&h, 60, |s| {
        settled(1, 1)(s) && !s.rolling_out && s.workers.iter().all(|w| w.generation == 1)
    })
    .await;
    assert_eq!(after.deployed_rootfs, None);
}

/// A spare of a deploy's generation that turns unhealthy rolls the deploy back too (and
/// the next spare waits its backoff).
#[tokio::test(start_paused = true)]
async fn a_deploy_rolls_back_when_a_spare_of_its_generation_turns_unhealthy() {
    let h = Harness::start(service(1, 1)).await;
    until(&h, 10, settled(1, 1)).await;
    // Slot 0's old worker keeps a client: the deploy waits for its drain (30 s).
    h.balancer.set_active(h.ready_worker(0).addr.unwrap(), 1);
    let (_, done) = h.pool.deploy("/srv/v2".into()).await.unwrap();
    let new_spare = |s: &ServiceStatus| {
        s.workers
            .iter()
            .find(|w| w.state == WorkerState::Spare && w.generation == 2)
            .cloned()
    };
    let spare = new_spare(&until(&h, 10, |s| new_spare(s).is_some()).await).unwrap();
    h.health.set_unhealthy(spare.addr.unwrap().ip(), true);
    let failure = tokio::time::timeout(Duration::from_secs(25), done)
        .await
        .expect("the deploy ended before the old worker's drain timeout")
        .unwrap()
        .expect_err("the deploy rolled back");
    assert_eq!((failure.worker, failure.slot), (spare.id, None));
    assert!(failure.failure.contains("unhealthy"), "{failure}");
    until(&h, 60, |s| {
        settled(1, 1)(s) && !s.rolling_out && s.workers.iter().all(|w| w.generation == 1)
    })
    .await;
}
