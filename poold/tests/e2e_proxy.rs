//! End to end through the in-process proxy on loopback (runs on any Linux host as root).

mod e2e_support;

#[test]
fn recycling_under_wrk_load_loses_no_request() {
    e2e_support::recycle_under_load("proxy", "127.0.0.1");
}
