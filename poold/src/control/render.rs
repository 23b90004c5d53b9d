//! Human output of `poolctl status`, in the spirit of supervisorctl/systemctl.

use crate::supervisor::{ServiceStatus, SlotState, WorkerState};
use std::fmt::Write;

fn age(secs: f64) -> String {
    let secs = secs as u64;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

pub fn status_table(services: &[ServiceStatus]) -> String {
    let mut out = String::new();
    for (index, service) in services.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let healthy = service.ready >= service.desired;
        let _ = writeln!(
            out,
            "{} {}  listen {}  balancer {}  ready {}/{}  generation {}{}{}{}",
            if healthy { "●" } else { "×" },
            service.name,
            service.listen,
            service.balancer,
            service.ready,
            service.desired,
            service.generation,
            if service.rolling_out {
                " (rolling out)"
            } else {
                ""
            },
            service
                .deployed_rootfs
                .as_deref()
                .map(|root| format!("  deployed rootfs {root} (until the next reload)"))
                .unwrap_or_default(),
            if service.drained {
                "  DRAINED (readiness 503)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "  {:<5} {:<9} {:<21} {:>8} {:>9} {:>7} {:>9} {:>4}  NOTE",
            "SLOT", "STATE", "ADDRESS", "PID", "AGE", "CONNS", "SERVED", "GEN"
        );
        for worker in &service.workers {
            // A start that follows failures keeps showing the last one: the slot
            // leaves backoff for each attempt, and the reason must not vanish with it.
            let failed_before = service
                .slots
                .iter()
                .find(|s| s.slot == worker.slot && s.failures > 0);
            let note = match (worker.state, worker.reason, failed_before) {
                (
                    WorkerState::Draining | WorkerState::Stopping | WorkerState::Gone,
                    Some(reason),
                    _,
                ) => reason.to_string(),
                _ if worker.chroot => "root by chroot (initramfs host), not pivot_root".to_owned(),
                (WorkerState::Starting, _, Some(slot)) => format!(
                    "after {} failure{}: {}",
                    slot.failures,
                    if slot.failures == 1 { "" } else { "s" },
                    slot.last_error.as_deref().unwrap_or("-")
                ),
                _ => String::new(),
            };
            let row = format!(
                "  {:<5} {:<9} {:<21} {:>8} {:>9} {:>7} {:>9} {:>4}  {note}",
                worker.slot,
                worker.state.to_string(),
                worker
                    .addr
                    .map_or_else(|| "-".to_owned(), |a| a.to_string()),
                worker.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                age(worker.age_secs),
                worker.active_conns,
                worker.total_conns,
                worker.generation,
            );
            let _ = writeln!(out, "{}", row.trim_end());
        }
        for slot in service.slots.iter().filter(|s| {
            matches!(s.state, SlotState::Backoff | SlotState::CrashLoop)
                    // Between a failure and the next worker's spawn: no row carries it.
                    || (s.failures > 0 && !service.workers.iter().any(|w| w.slot == s.slot))
        }) {
            let _ = writeln!(
                out,
                "  {:<5} {:<9} failures {}, retry in {}: {}",
                slot.slot,
                slot.state.to_string(),
                slot.failures,
                age(slot.retry_in_secs.unwrap_or(0.0)),
                slot.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
