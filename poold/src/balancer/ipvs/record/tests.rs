use super::*;

fn service(listen: &str) -> RecordedService {
    RecordedService {
        listen: listen.parse().unwrap(),
        protocol: Protocol::Tcp,
    }
}

fn vip(address: &str) -> RecordedVip {
    RecordedVip {
        address: address.parse().unwrap(),
        device: VIP_DEVICE.into(),
    }
}

/// An earlier run made `a` (10.212.9.1:80), `b` (10.212.9.1:81) and `c` (10.212.9.2:80).
fn recorded() -> IpvsRecord {
    IpvsRecord {
        services: [
            service("10.212.9.1:80"),
            service("10.212.9.1:81"),
            service("10.212.9.2:80"),
        ]
        .into(),
        vips: [vip("10.212.9.1"), vip("10.212.9.2")].into(),
    }
}

#[test]
fn an_ipvs_run_removes_the_recorded_services_it_does_not_make_and_their_unused_addresses() {
    // This run keeps only `a`: `b` goes but its address stays (a's), `c` goes with its own.
    let this_run = ThisRun {
        ipvs_services: [service("10.212.9.1:80")].into(),
        addresses: ["10.212.9.1".parse().unwrap()].into(),
    };
    let removal = plan_removal(&recorded(), &this_run);
    assert_eq!(
        removal.services,
        [service("10.212.9.1:81"), service("10.212.9.2:80")]
    );
    assert_eq!(removal.vips, [vip("10.212.9.2")]);
    // Its own balancer records 10.212.9.1 again: nothing is kept for it.
    assert!(removal.kept.is_empty(), "{:?}", removal.kept);
}

#[test]
fn a_proxy_run_removes_every_recorded_service_and_keeps_only_the_addresses_it_listens_on() {
    let this_run = ThisRun {
        ipvs_services: BTreeSet::new(),
        addresses: ["10.212.9.2".parse().unwrap(), "127.0.0.1".parse().unwrap()].into(),
    };
    let removal = plan_removal(&recorded(), &this_run);
    assert_eq!(removal.services.len(), 3);
    assert_eq!(removal.vips, [vip("10.212.9.1")]);
    // Still poold's: recorded until a run no longer listens on it.
    assert_eq!(removal.kept.vips, [vip("10.212.9.2")].into());
    assert!(removal.kept.services.is_empty());
}

#[test]
fn nothing_recorded_removes_nothing() {
    let this_run = ThisRun::default();
    assert_eq!(
        plan_removal(&IpvsRecord::default(), &this_run),
        Removal::default()
    );
}

#[test]
fn a_record_reads_back_what_was_written_and_an_empty_one_is_compact() {
    let text = serde_json::to_string(&recorded()).unwrap();
    assert_eq!(
        serde_json::from_str::<IpvsRecord>(&text).unwrap(),
        recorded()
    );
    assert_eq!(serde_json::to_string(&IpvsRecord::default()).unwrap(), "{}");
}
