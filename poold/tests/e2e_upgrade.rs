//! `poolctl upgrade` through the proxy on the host: the listening socket and the workers
//! pass to a freshly exec'd poold under wrk load with zero failed requests; a new binary
//! that fails to start leaves the old poold serving.

mod e2e_support;

#[test]
fn e2e_upgrade_under_wrk_load_through_the_proxy_loses_nothing() {
    e2e_support::upgrade::upgrade_under_wrk_load_loses_nothing();
}

#[test]
fn e2e_failed_upgrade_leaves_the_old_poold_serving() {
    e2e_support::upgrade::failed_upgrade_leaves_the_old_poold_serving();
}

#[test]
fn e2e_a_failing_test_after_an_upgrade_leaves_nothing() {
    e2e_support::upgrade::a_failing_test_after_an_upgrade_leaves_nothing();
}
