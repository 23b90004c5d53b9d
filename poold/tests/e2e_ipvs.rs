//! End to end through kernel IPVS: VIP bound to pdvip0, MASQ to the sandboxed workers,
//! a host-local client (wrk).

mod e2e_support;

#[test]
#[ignore = "vm: needs IPVS"]
fn e2e_recycling_under_wrk_load_through_ipvs_loses_no_request() {
    // Outside the workers' subnet (10.215.x.0/24) and not loopback.
    e2e_support::recycle_under_load("ipvs", "10.212.9.1");
}
