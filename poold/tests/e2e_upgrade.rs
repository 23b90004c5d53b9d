//! `poolctl upgrade` under wrk load with zero failed requests: through the proxy on the host
//! (the listening socket and the workers pass to a freshly exec'd poold) and through IPVS in
//! the VM (the kernel forwards throughout); a new binary that fails to start leaves the old
//! poold serving; a test that fails after an upgrade leaves nothing behind.

mod e2e_support;

#[test]
fn e2e_upgrade_under_wrk_load_through_the_proxy_loses_nothing() {
    e2e_support::upgrade::upgrade_under_wrk_load_loses_nothing("proxy", "127.0.0.1");
}

#[test]
#[ignore = "vm: needs IPVS"]
fn e2e_upgrade_under_wrk_load_through_ipvs_loses_nothing() {
    // Outside the workers' subnet (10.215.x.0/24) and not loopback.
    e2e_support::upgrade::upgrade_under_wrk_load_loses_nothing("ipvs", "10.212.9.1");
}

#[test]
fn e2e_failed_upgrade_leaves_the_old_poold_serving() {
    e2e_support::upgrade::failed_upgrade_leaves_the_old_poold_serving();
}

#[test]
fn e2e_a_failing_test_after_an_upgrade_leaves_nothing() {
    e2e_support::upgrade::a_failing_test_after_an_upgrade_leaves_nothing();
}

#[test]
fn e2e_systemd_is_told_ready_the_new_main_pid_and_stopping() {
    e2e_support::upgrade::service_manager_follows_the_upgrade();
}
