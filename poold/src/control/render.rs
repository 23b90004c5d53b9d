//! Human output of `poolctl status`, in the spirit of supervisorctl/systemctl.

use crate::runtime::SPARE_SLOT;
use crate::supervisor::{ServiceStatus, SlotState, WorkerState, WorkerStatus};
use std::fmt::Write;

fn age(secs: f64) -> String {
    let secs = secs as u64;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Bytes as the operator reads them: 512K, 12.5M, 1.0G.
fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return format!("{:.1}{unit}", n as f64 / size as f64);
        }
    }
    format!("{n}B")
}

/// Memory in use, against the limit when there is one: `12.0M/256.0M`.
fn memory(worker: &WorkerStatus) -> String {
    match (worker.state, worker.memory_limit_bytes) {
        (WorkerState::Starting, _) => "-".to_owned(),
        (_, Some(limit)) => format!("{}/{}", bytes(worker.memory_bytes), bytes(limit)),
        (_, None) => bytes(worker.memory_bytes),
    }
}

/// A worker's slot as status shows it: the number, or `spare`.
fn slot_name(slot: u32) -> String {
    if slot == SPARE_SLOT {
        "spare".to_owned()
    } else {
        slot.to_string()
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
            "{} {}  listen {}  balancer {}  ready {}/{}{}{}  generation {}{}{}{}",
            if healthy { "●" } else { "×" },
            service.name,
            service.listen,
            service.balancer,
            service.ready,
            service.desired,
            service
                .scaled_from
                .map_or_else(String::new, |configured| format!(
                    " (scaled from {configured} until the next reload)"
                )),
            if service.workers.iter().any(|w| w.slot == SPARE_SLOT) {
                format!("  spares {}", service.spares)
            } else {
                String::new()
            },
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
            "  {:<5} {:<9} {:<21} {:>8} {:>9} {:>7} {:>9} {:>15} {:>8} {:>9} {:>4}  NOTE",
            "SLOT",
            "STATE",
            "ADDRESS",
            "PID",
            "AGE",
            "CONNS",
            "SERVED",
            "MEMORY",
            "CPU",
            "RECYCLED",
            "GEN"
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
                (WorkerState::Drained, _, _) => {
                    "drained by the operator (out of rotation, kept alive)".to_owned()
                }
                (WorkerState::Spare, _, _) => {
                    "warm spare (weight 0, takes a slot at its next recycle or crash)".to_owned()
                }
                _ if worker.chroot => "root by chroot (initramfs host), not pivot_root".to_owned(),
                (WorkerState::Starting, _, Some(slot)) => format!(
                    "after {} failure{}: {}",
                    slot.failures,
                    if slot.failures == 1 { "" } else { "s" },
                    slot.last_error.as_deref().unwrap_or("-")
                ),
                _ => String::new(),
            };
            let recycled = service
                .slots
                .iter()
                .find(|s| s.slot == worker.slot)
                .map_or_else(String::new, |s| match s.last_recycle {
                    Some(reason) if s.recycles > 0 => format!("{} {reason}", s.recycles),
                    _ => s.recycles.to_string(),
                });
            let slot = slot_name(worker.slot);
            let row = format!(
                "  {:<5} {:<9} {:<21} {:>8} {:>9} {:>7} {:>9} {:>15} {:>7.1}s {:>9} {:>4}  {note}",
                slot,
                worker.state.to_string(),
                worker
                    .addr
                    .map_or_else(|| "-".to_owned(), |a| a.to_string()),
                worker.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                age(worker.age_secs),
                worker.active_conns,
                worker.total_conns,
                memory(worker),
                worker.cpu_secs,
                recycled,
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

/// A recycle's steps as `--wait` shows them: one line per worker that is not simply
/// serving, `web/0 worker 12 draining (manual, 3 connections)`.
pub fn recycle_steps(services: &[ServiceStatus]) -> Vec<String> {
    services
        .iter()
        .flat_map(|service| {
            service.workers.iter().map(move |worker| {
                let mut step = format!(
                    "{}/{} worker {} {}",
                    service.name,
                    slot_name(worker.slot),
                    worker.id,
                    worker.state
                );
                match (worker.state, worker.reason) {
                    (WorkerState::Draining, Some(reason)) => {
                        let _ = write!(step, " ({reason}, {} connections)", worker.active_conns);
                    }
                    (WorkerState::Stopping | WorkerState::Gone, Some(reason)) => {
                        let _ = write!(step, " ({reason})");
                    }
                    _ => {}
                }
                step
            })
        })
        .collect()
}

/// A service drain's steps: the connections each service still holds.
pub fn drain_steps(services: &[ServiceStatus]) -> Vec<String> {
    services
        .iter()
        .map(|service| match service.active_conns() {
            0 => format!("{}: no active connections", service.name),
            n => format!("{}: {n} active connections", service.name),
        })
        .collect()
}

/// The steps to print: those not shown before; at first, all but workers simply ready.
pub fn new_steps<'a>(shown: Option<&[String]>, steps: &'a [String]) -> Vec<&'a String> {
    steps
        .iter()
        .filter(|step| match shown {
            Some(shown) => !shown.contains(step),
            None => !step.ends_with(" ready"),
        })
        .collect()
}

#[cfg(test)]
mod tests;
