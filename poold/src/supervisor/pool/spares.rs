//! Warm spares (`recycle.spares`): workers kept started, healthy and in the balancer at
//! weight 0, so that a planned recycle or a crash refills its slot with one weight change
//! instead of a spawn, a start and a health check.
//!
//! A spare is a [`Worker`] whose slot is [`SPARE_SLOT`]: spawned and probed like any
//! worker, it joins the balancer at weight 0 once healthy and shows as
//! [`WorkerState::Spare`] (never counted ready). [`ServicePool::promote_spare`] gives it a
//! slot: the service's weight at once, a lifetime from then on. A spare of another
//! generation (reload, deploy, rollback) is stopped and replaced, never promoted.

use super::{
    error, info, warn, Instant, Phase, Probe, RecycleReason, ServicePool, SlotFailure, Spawned,
    WorkerId, SPARE_SLOT,
};

/// Failures of spares in a row and when the next one may start: a spare that cannot start
/// backs off as a slot does, without taking a slot's capacity.
#[derive(Debug, Default)]
pub(super) struct SpareBackoff {
    failures: u32,
    restart_at: Option<Instant>,
}

impl ServicePool {
    /// A ready spare of the current generation that passes its probes, oldest first.
    fn ready_spare(&self) -> Option<WorkerId> {
        self.workers
            .values()
            .find(|w| {
                w.is_spare()
                    && w.generation == self.generation
                    && matches!(w.phase, Phase::Ready { fail_streak: 0, .. })
            })
            .map(|w| w.id)
    }

    /// A starting spare (`become_ready` found it `Starting`, with `spawned` and `probe`)
    /// passed its health checks: into the balancer at weight 0.
    pub(super) async fn become_spare(
        &mut self,
        id: WorkerId,
        generation: u64,
        spawned: Spawned,
        mut probe: Probe,
    ) {
        if generation != self.generation || self.shutdown.is_some() {
            self.begin_stop(id, RecycleReason::Rollout);
            return;
        }
        if let Err(error) = self
            .balancer
            .add_backend(&self.service, spawned.addr, 0)
            .await
        {
            error!(service = %self.service.name, worker.id = %id, %error, "adding a spare to the balancer failed");
            self.begin_stop(id, RecycleReason::Unhealthy);
            self.slot_failed(SPARE_SLOT, id, SlotFailure::Balancer(error));
            return;
        }
        let now = Instant::now();
        self.spread_next_probe(id, &mut probe, now);
        let worker = self.workers.get_mut(&id).expect("checked above");
        worker.phase = Phase::Ready {
            spawned,
            probe,
            fail_streak: 0,
            ready_at: now,
            // Its lifetime starts when it serves.
            retire_at: None,
            oom_baseline: None,
            replacing: None,
            drained: false,
        };
        self.spares.failures = 0;
        info!(service = %self.service.name, worker.spare = true, worker.id = %id, worker.addr = %spawned.addr, "spare ready (weight 0)");
    }

    /// Puts a ready spare in `slot`: the service's weight at once, and it becomes the
    /// slot's current worker. The caller retires whatever served the slot before. None
    /// when no spare is ready (the caller surges or spawns as without spares).
    pub(super) async fn promote_spare(&mut self, slot: u32) -> Option<WorkerId> {
        let id = self.ready_spare()?;
        let Phase::Ready { spawned, .. } = self.workers[&id].phase else {
            return None;
        };
        if let Err(error) = self
            .balancer
            .set_weight(&self.service, spawned.addr, self.config.weight)
            .await
        {
            error!(service = %self.service.name, worker.slot = slot, worker.id = %id, %error, "raising a spare's weight failed; stopping it");
            self.begin_stop(id, RecycleReason::Unhealthy);
            return None;
        }
        let now = Instant::now();
        let lifetime = self.lifetime();
        let worker = self.workers.get_mut(&id).expect("found above");
        worker.slot = slot;
        if let Phase::Ready {
            ready_at,
            retire_at,
            ..
        } = &mut worker.phase
        {
            *ready_at = now;
            *retire_at = lifetime.map(|lifetime| now + lifetime);
        }
        let entry = &mut self.slots[slot as usize];
        entry.current = Some(id);
        entry.restart_at = None;
        info!(service = %self.service.name, worker.slot = slot, worker.id = %id, worker.addr = %spawned.addr, "spare promoted");
        // The state record follows off the path that refills capacity.
        let runtime = self.runtime.clone();
        tokio::spawn(async move { runtime.promoted(id, slot).await });
        Some(id)
    }

    /// Every kept slot left without a worker (a crash, a failed start, an unhealthy worker)
    /// takes a ready spare, backoff or not: the spare is healthy already.
    pub(super) async fn promote_spares(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        for index in 0..self.desired {
            if self.slots[index as usize].current.is_some() {
                continue;
            }
            if self.promote_spare(index).await.is_none() {
                return;
            }
        }
    }

    /// Keeps `recycle.spares` spares of the current generation: stops those of another
    /// generation and those beyond the count (all of them in a shutdown), and starts new
    /// ones in the background (after a spare's backoff, within max_spawning).
    pub(super) fn tend_spares(&mut self, now: Instant) {
        let wanted = if self.shutdown.is_some() {
            0
        } else {
            self.config.recycle.spares as usize
        };
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for worker in self.workers.values().filter(|w| w.is_spare()) {
            let current = worker.generation == self.generation;
            match worker.phase {
                // Stopped (if stale) once spawned: nothing to signal yet.
                Phase::Spawning if current => live.push(worker.id),
                Phase::Starting { .. } | Phase::Ready { .. } if current => live.push(worker.id),
                Phase::Starting { .. } | Phase::Ready { .. } => stale.push(worker.id),
                _ => {}
            }
        }
        for id in stale {
            info!(service = %self.service.name, worker.id = %id, generation = self.generation, "spare of an earlier generation: replacing it");
            self.begin_stop(id, RecycleReason::Rollout);
        }
        // Beyond the count: the newest go first (a spawning one once it is spawned).
        let mut extra = live.len().saturating_sub(wanted);
        for &id in live.iter().rev() {
            if extra == 0 {
                break;
            }
            if !matches!(self.workers[&id].phase, Phase::Spawning) {
                let reason = if self.shutdown.is_some() {
                    RecycleReason::Shutdown
                } else {
                    RecycleReason::Manual
                };
                self.begin_stop(id, reason);
                extra -= 1;
            }
        }
        if live.len() >= wanted || self.spares.restart_at.is_some_and(|at| now < at) {
            return;
        }
        let spawning = self
            .workers
            .values()
            .filter(|w| matches!(w.phase, Phase::Spawning))
            .count();
        let room = self.options.max_spawning.saturating_sub(spawning);
        for _ in 0..(wanted - live.len()).min(room) {
            self.spawn_worker(SPARE_SLOT);
        }
    }

    /// A spare failed to spawn, start or stay up: the next one waits as a slot would.
    pub(super) fn spare_failed(&mut self, id: WorkerId, failure: &SlotFailure) {
        self.spares.failures += 1;
        let failures = self.spares.failures;
        let delay = self.config.backoff.delay(failures);
        self.spares.restart_at = Some(Instant::now() + delay);
        warn!(service = %self.service.name, worker.spare = true, worker.id = %id, failures, retry_in = ?delay, "spare failed: {failure}");
    }
}

#[cfg(test)]
mod tests;
