//! Warm spares (`recycle.spares`) against the real poold: with the in-process proxy (any
//! Linux host, as root) and through kernel IPVS (the VM), where a spare is a real server at
//! weight 0.

mod e2e_support;

#[test]
fn e2e_spare_takes_no_traffic_and_replaces_recycled_and_killed_workers() {
    e2e_support::spares::spare_takes_no_traffic_and_replaces_recycled_and_killed_workers(
        "proxy",
        "127.0.0.1",
    );
}

#[test]
#[ignore = "vm: needs IPVS"]
fn e2e_ipvs_spare_is_a_weight_0_real_server_promoted_on_recycle_and_crash() {
    // Outside the workers' subnet (10.215.x.0/24) and not loopback.
    e2e_support::spares::spare_takes_no_traffic_and_replaces_recycled_and_killed_workers(
        "ipvs",
        "10.212.19.1",
    );
}
