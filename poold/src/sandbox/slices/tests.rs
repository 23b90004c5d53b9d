use std::sync::Mutex;

use super::*;

#[derive(Debug)]
struct FakeClock(Mutex<Instant>);
impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}
impl FakeClock {
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// An allocator over `subnet` in slices of `/slice_prefix`, quarantine `q` seconds.
fn alloc(subnet: &str, slice_prefix: u8, q: u64) -> (AddressAllocator, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock(Mutex::new(Instant::now())));
    (
        AddressAllocator::new(
            Slices::new(net(subnet), slice_prefix),
            Duration::from_secs(q),
            clock.clone(),
        ),
        clock,
    )
}

#[test]
fn a_subnet_is_cut_into_slices_each_with_its_gateway() {
    let s = Slices::new(net("10.160.0.0/20"), DEFAULT_SLICE_PREFIX);
    assert_eq!(s.count(), 4);
    assert_eq!(s.slice(0), net("10.160.0.0/22"));
    assert_eq!(s.slice(3), net("10.160.12.0/22"));
    assert_eq!(s.gateway(0), ip("10.160.0.1"));
    assert_eq!(s.gateway(2), ip("10.160.8.1"));
    assert_eq!(s.index_of(ip("10.160.3.255")), Some(0));
    assert_eq!(s.index_of(ip("10.160.4.0")), Some(1));
    assert_eq!(s.index_of(ip("10.160.15.254")), Some(3));
    assert_eq!(s.index_of(ip("10.160.16.2")), None);
    // A /22 holds 1,021 workers: fewer than a bridge's 1,023 ports.
    assert_eq!(s.worker_addresses_per_slice(), 1021);
    assert_eq!(s.worker_addresses(), 4 * 1021);
    // A subnet smaller than a slice is one slice: the gateway and addresses of before.
    let small = Slices::new(net("10.213.9.0/24"), DEFAULT_SLICE_PREFIX);
    assert_eq!((small.count(), small.slice(0)), (1, net("10.213.9.0/24")));
    assert_eq!(small.gateway(0), ip("10.213.9.1"));
    assert_eq!(small.worker_addresses(), 253);
}

#[test]
fn each_slice_skips_its_network_gateway_and_broadcast() {
    let (mut a, _) = alloc("10.213.9.0/28", 29, 150);
    let got: Vec<_> = (0..10).map(|_| a.allocate().unwrap()).collect();
    let want: Vec<_> = (2..=6)
        .chain(10..=14)
        .map(|i| Ipv4Addr::new(10, 213, 9, i))
        .collect();
    assert_eq!(
        got, want,
        ".7/.8/.9 are slice 0's broadcast, slice 1's network and gateway"
    );
    assert!(matches!(
        a.allocate(),
        Err(SandboxError::AddressesExhausted { quarantined: 0, .. })
    ));
}

/// A pool that fits in slice 0 never touches slice 1, also while it recycles: a released
/// address of slice 0 comes back (after its quarantine) before any of slice 1's.
#[test]
fn the_lowest_slice_with_an_address_available_goes_first() {
    let (mut a, clock) = alloc("10.213.9.0/27", 29, 150);
    let first: Vec<_> = (0..5).map(|_| a.allocate().unwrap()).collect();
    assert!(first.iter().all(|x| a.slices().index_of(*x) == Some(0)));
    a.release(first[0]);
    // Slice 0 has only a quarantined address: slice 1's fresh one goes.
    let spill = a.allocate().unwrap();
    assert_eq!(spill, ip("10.213.9.10"));
    clock.advance(Duration::from_secs(150));
    // Slice 0's quarantine is over: it goes before slice 1's fresh addresses.
    assert_eq!(a.allocate().unwrap(), first[0]);
    assert_eq!(a.allocate().unwrap(), ip("10.213.9.11"));
    // A freed slice-0 address, once rested, is taken before slice 2 is ever touched.
    a.release(first[1]);
    a.release(spill);
    clock.advance(Duration::from_secs(150));
    assert_eq!(a.allocate().unwrap(), first[1]);
    // Slice 1 first hands out its fresh addresses, then its rested one.
    let rest: Vec<_> = (0..3).map(|_| a.allocate().unwrap()).collect();
    assert_eq!(
        rest,
        vec![ip("10.213.9.12"), ip("10.213.9.13"), ip("10.213.9.14")]
    );
    assert_eq!(a.allocate().unwrap(), spill);
    let third = a.allocate().unwrap();
    assert_eq!(a.slices().index_of(third), Some(2));
}

#[test]
fn quarantine_spans_slices_and_survives_a_restart() {
    let (mut before, clock) = alloc("10.213.9.0/28", 29, 150);
    let all: Vec<_> = (0..10).map(|_| before.allocate().unwrap()).collect();
    let (zero, one) = (all[0], all[7]);
    before.release(zero);
    clock.advance(Duration::from_secs(50));
    before.release(one);
    let mut saved = before.quarantined();
    saved.sort();
    assert_eq!(
        saved,
        vec![
            (zero, Duration::from_secs(100)),
            (one, Duration::from_secs(150))
        ]
    );
    let e = before.allocate().unwrap_err();
    assert!(
        matches!(e, SandboxError::AddressesExhausted { quarantined: 2, .. }),
        "{e}"
    );
    // The next run restores both, each in its own slice, with what was left.
    let (mut after, clock) = alloc("10.213.9.0/28", 29, 150);
    for x in all.iter().filter(|x| ![zero, one].contains(x)) {
        after.reserve(*x);
    }
    for (addr, left) in &saved {
        after.quarantine_for(*addr, *left);
    }
    after.quarantine_for(ip("10.9.9.9"), Duration::from_secs(1)); // not ours: ignored
    assert!(
        after.allocate().is_err(),
        "both quarantined after the restart"
    );
    clock.advance(Duration::from_secs(100));
    assert_eq!(after.allocate().unwrap(), zero);
    assert!(after.allocate().is_err());
    clock.advance(Duration::from_secs(50));
    assert_eq!(after.allocate().unwrap(), one);
}

#[test]
fn fresh_addresses_go_before_quarantined_ones_in_a_slice() {
    let (mut a, clock) = alloc("10.213.9.0/28", 22, 150);
    let x = a.allocate().unwrap();
    a.release(x);
    clock.advance(Duration::from_secs(1000));
    let y = a.allocate().unwrap();
    assert_ne!(
        x, y,
        "a never-used address comes first even after the quarantine"
    );
    a.reserve(x);
    assert!((0..11).all(|_| a.allocate().map(|n| n != x).unwrap_or(true)));
}

#[test]
fn slice_bridges_are_named_after_the_configured_bridge() {
    assert_eq!(bridge_name("pdbr0", 0), "pdbr0");
    assert_eq!(bridge_name("pdbr0", 3), "pdbr0-3");
    for i in [0, 1, 9, 10, 63] {
        assert_eq!(slice_of_bridge("pdbr0", &bridge_name("pdbr0", i)), Some(i));
    }
    // Another instance's bridge that merely starts with the name is not a slice.
    for other in [
        "pdbr01", "pdbr0-", "pdbr0-01", "pdbr0-+1", "pdbr0-x", "pdbr",
    ] {
        assert_eq!(slice_of_bridge("pdbr0", other), None, "{other}");
    }
}

#[test]
fn a_bridge_name_must_leave_room_for_its_slices() {
    let fifteen = "pdbr-fifteen-ch";
    assert_eq!(fifteen.len(), 15);
    // One slice: the name is used as it is.
    check_bridge_names(fifteen, &Slices::new(net("10.213.0.0/22"), 22)).unwrap();
    // 64 slices: up to "<name>-63".
    let slices = Slices::new(net("10.213.0.0/16"), 22);
    check_bridge_names("pdbr0", &slices).unwrap();
    check_bridge_names("pdbr-twelve", &slices).unwrap();
    let e = check_bridge_names("pdbr-thirteen", &slices).unwrap_err();
    assert_eq!(
        e.to_string(),
        "bridge name \"pdbr-thirteen\" is too long for 10.213.0.0/16: its 64 slices need \
         bridges up to \"pdbr-thirteen-63\" (16 bytes; a link name has at most 15); shorten the \
         name or the subnet"
    );
}
