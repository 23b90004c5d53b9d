//! poold killed with SIGKILL and started again adopts its live workers instead of starting
//! new ones: with the proxy on the host (serving again within a second), with IPVS in the
//! VM under wrk load through the kill and a restart 2 s later (zero failed requests); on a
//! config without some services, those services' workers, operator state and IPVS
//! services go.

mod e2e_support;

#[test]
fn e2e_kill9_and_restart_adopts_the_workers_through_the_proxy() {
    e2e_support::restart::kill9_and_restart_adopts_the_workers("proxy", "127.0.0.1");
}

#[test]
#[ignore = "vm: needs IPVS"]
fn e2e_kill9_under_wrk_load_through_ipvs_loses_no_request_and_adopts_the_workers() {
    // Outside the workers' subnet (10.215.x.0/24) and not loopback.
    e2e_support::restart::kill9_and_restart_adopts_the_workers("ipvs", "10.212.9.1");
}

#[test]
fn e2e_kill9_keeps_a_drained_slot_drained() {
    e2e_support::restart::kill9_keeps_a_drained_slot_drained();
}

#[test]
fn e2e_kill9_and_restart_without_two_services_stops_them_and_forgets_their_state() {
    e2e_support::restart::kill9_and_restart_without_two_services("proxy");
}

#[test]
#[ignore = "vm: needs IPVS"]
fn e2e_kill9_and_restart_without_two_services_removes_their_ipvs_services() {
    e2e_support::restart::kill9_and_restart_without_two_services("ipvs");
}

#[test]
fn e2e_kill9_during_the_spawn_storm_adopts_or_removes_every_worker() {
    e2e_support::restart::kill9_during_the_spawn_storm_adopts_or_removes_every_worker();
}

#[test]
#[ignore = "vm: needs IPVS"]
fn e2e_kill9_with_a_service_in_backoff_and_restart_without_it_removes_its_ipvs_service() {
    e2e_support::restart::kill9_with_a_service_in_backoff_and_restart_without_it();
}

#[test]
#[ignore = "vm: needs IPVS"]
fn e2e_kill9_on_ipvs_and_restart_on_the_proxy_leaves_no_ipvs_entry() {
    e2e_support::restart::kill9_on_ipvs_and_restart_on_the_proxy();
}
