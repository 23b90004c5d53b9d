//! End to end through the in-process proxy on loopback (runs on any Linux host as root):
//! recycling under load, a crash loop's backoff, a worker over its memory limit, a worker
//! the kernel OOM-kills.

mod e2e_support;

#[test]
fn e2e_recycling_under_wrk_load_loses_no_request() {
    e2e_support::recycle_under_load("proxy", "127.0.0.1");
}

#[test]
fn e2e_crash_loop_backs_off_as_configured() {
    e2e_support::crash_loop_backs_off();
}

#[test]
fn e2e_worker_over_its_memory_limit_is_replaced() {
    e2e_support::memory_hog_is_replaced();
}

#[test]
fn e2e_oom_killed_worker_is_replaced() {
    e2e_support::oom_killed_worker_is_replaced();
}
