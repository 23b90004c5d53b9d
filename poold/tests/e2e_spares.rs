//! Warm spares (`recycle.spares`) against the real poold with the in-process proxy (runs on
//! any Linux host as root).

mod e2e_support;

#[test]
fn e2e_spare_takes_no_traffic_and_replaces_recycled_and_killed_workers() {
    e2e_support::spares::spare_takes_no_traffic_and_replaces_recycled_and_killed_workers();
}
