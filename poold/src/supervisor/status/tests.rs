use super::*;

fn service(ready: u32, min_ready: u32, drained: bool) -> ServiceStatus {
    ServiceStatus {
        name: "web".into(),
        listen: "127.0.0.1:80".parse().unwrap(),
        balancer: BalancerKind::Proxy,
        desired: 4,
        scaled_from: None,
        ready,
        spares: 0,
        wanted_spares: 0,
        min_ready,
        drained,
        generation: 1,
        deployed_rootfs: None,
        rolling_out: false,
        slots: Vec::new(),
        workers: Vec::new(),
    }
}

#[test]
fn readiness_needs_min_ready_workers_and_no_drain() {
    let ok = service(3, 3, false).readiness();
    assert!(ok.ready && ok.reason.is_none(), "{ok:?}");
    // min_ready below desired: a recycle or a crash does not take the host out of rotation.
    assert!(service(3, 2, false).readiness().ready);
    let short = service(1, 2, false).readiness();
    assert!(!short.ready);
    assert_eq!(
        short.reason.as_deref(),
        Some("1 of at least 2 workers ready")
    );
    let drained = service(4, 2, true).readiness();
    assert!(!drained.ready);
    assert_eq!(drained.reason.as_deref(), Some("drained by the operator"));
}
