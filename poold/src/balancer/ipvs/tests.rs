//! IPVS for real, in a fresh network namespace per test (VM only: this host has no IPVS).

use super::*;
use crate::balancer::ClientPolicy;
use std::process::Command;

#[test]
fn loopback_vip_is_refused_with_the_reason() {
    let reason = vip_problem("127.0.0.1:80".parse().unwrap()).unwrap();
    assert!(
        reason.contains("loopback") && reason.contains("MASQ"),
        "{reason}"
    );
    assert!(vip_problem("10.212.0.1:80".parse().unwrap()).is_none());
    assert!(vip_problem("0.0.0.0:80".parse().unwrap()).is_some());
}

/// Runs `body` on a thread in a new network namespace with a current-thread runtime; the
/// namespace disappears with the thread (nothing to clean up).
fn in_fresh_netns<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F + Send + 'static) {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(body());
    })
    .join()
    .expect("test thread");
}

/// Runs `program args`, which must succeed (a failing tool must never read as "not listed").
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().expect(program);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ipvsadm_listing() -> String {
    run("/usr/sbin/ipvsadm", &["-Ln"])
}

fn addresses_of(device: &str) -> String {
    run("/usr/bin/ip", &["-o", "-4", "addr", "show", "dev", device])
}

/// Whether `ip link show NAME` succeeds.
fn link_exists(name: &str) -> bool {
    Command::new("/usr/bin/ip")
        .args(["link", "show", name])
        .output()
        .expect("ip")
        .status
        .success()
}

#[test]
#[ignore = "vm: needs IPVS"]
fn service_lifecycle_in_the_kernel() {
    in_fresh_netns(|| async {
        let balancer = IpvsBalancer::new().await.expect("IPVS available in the VM");
        for (path, value) in SYSCTLS {
            assert_eq!(
                std::fs::read_to_string(format!("/proc/sys/{path}"))
                    .unwrap()
                    .trim(),
                *value,
                "{path}"
            );
        }
        let service = VirtualService {
            name: "web".into(),
            listen: "10.212.0.1:80".parse().unwrap(),
            scheduler: "wlc".into(),
            clients: ClientPolicy::default(),
        };
        balancer.ensure_service(&service).await.unwrap();
        balancer.ensure_service(&service).await.unwrap(); // idempotent
        let device = balancer.vip_device().to_owned();
        assert_eq!(device, VIP_DEVICE, "the VM kernel has dummy links");
        assert!(link_exists(VIP_DEVICE));
        assert!(
            addresses_of(&device).contains("10.212.0.1/32"),
            "{}",
            addresses_of(&device)
        );

        let backend: SocketAddr = "10.215.0.2:8080".parse().unwrap();
        balancer.add_backend(&service, backend, 3).await.unwrap();
        let error = balancer
            .add_backend(&service, backend, 3)
            .await
            .unwrap_err();
        assert!(
            matches!(error, BalancerError::BackendExists { .. }),
            "{error}"
        );
        let stats = balancer.backend_stats(&service).await.unwrap();
        assert_eq!(
            stats[&backend],
            BackendStats {
                weight: 3,
                active: 0,
                inactive: 0,
                total: 0,
                out_bytes: 0
            }
        );
        let listing = ipvsadm_listing();
        assert!(listing.contains("TCP  10.212.0.1:80 wlc"), "{listing}");
        assert!(
            listing.contains("-> 10.215.0.2:8080              Masq    3"),
            "{listing}"
        );

        // Shutdown: every real server to weight 0, still listed (its connections drain).
        balancer.stop_accepting(&service).await.unwrap();
        assert_eq!(
            balancer.backend_stats(&service).await.unwrap()[&backend].weight,
            0
        );
        balancer.set_weight(&service, backend, 3).await.unwrap();
        balancer.set_weight(&service, backend, 0).await.unwrap();
        assert_eq!(
            balancer.backend_stats(&service).await.unwrap()[&backend].weight,
            0
        );
        balancer.remove_backend(&service, backend).await.unwrap();
        assert!(
            balancer.backend_stats(&service).await.unwrap().is_empty(),
            "service present, no backends"
        );
        let missing = balancer
            .remove_backend(&service, backend)
            .await
            .unwrap_err();
        assert!(
            matches!(missing, BalancerError::NoSuchBackend { .. }),
            "{missing}"
        );

        balancer.remove_service(&service).await.unwrap();
        let gone = balancer.backend_stats(&service).await.unwrap_err();
        assert!(
            matches!(gone, BalancerError::NoSuchService { .. }),
            "a missing service is an error, never empty: {gone}"
        );
        assert!(
            !link_exists(VIP_DEVICE),
            "{VIP_DEVICE} left after the last service was removed"
        );
        assert!(
            !addresses_of("lo").contains("10.212.0.1"),
            "VIP moved to lo"
        );
        let listing = ipvsadm_listing();
        assert!(!listing.contains("10.212.0.1"), "{listing}");
        assert!(
            listing.contains("Prot LocalAddress:Port"),
            "not an ipvsadm listing: {listing}"
        );

        let loopback = VirtualService {
            listen: "127.0.0.1:80".parse().unwrap(),
            ..service.clone()
        };
        let refused = balancer
            .ensure_service(&loopback)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("loopback"), "{refused}");
    });
}

#[test]
#[ignore = "vm: needs IPVS"]
fn service_of_an_earlier_run_is_taken_over_with_its_real_servers() {
    in_fresh_netns(|| async {
        let service = VirtualService {
            name: "web".into(),
            listen: "10.212.0.3:80".parse().unwrap(),
            scheduler: "rr".into(),
            clients: ClientPolicy::default(),
        };
        let first = IpvsBalancer::new().await.unwrap();
        first.ensure_service(&service).await.unwrap();
        first
            .add_backend(&service, "10.215.0.9:80".parse().unwrap(), 1)
            .await
            .unwrap();
        drop(first);
        let second = IpvsBalancer::new().await.unwrap();
        second
            .ensure_service(&VirtualService {
                scheduler: "wlc".into(),
                ..service.clone()
            })
            .await
            .unwrap();
        // Kept: they may be live workers the restarted pool adopts (it removes the rest).
        let kept = second.backend_stats(&service).await.unwrap();
        assert_eq!(
            kept.iter().map(|(addr, _)| *addr).collect::<Vec<_>>(),
            vec!["10.215.0.9:80".parse().unwrap()],
            "the earlier run's real servers are kept"
        );
        assert!(ipvsadm_listing().contains("TCP  10.212.0.3:80 wlc"));
        second.remove_service(&service).await.unwrap();
    });
}

/// Two services on one VIP (different ports): removing one (a reload) must leave the VIP
/// bound for the other, whose clients would otherwise reach no local address.
#[test]
#[ignore = "vm: needs IPVS"]
fn a_vip_shared_by_two_services_stays_bound_until_the_last_goes() {
    in_fresh_netns(|| async {
        let balancer = IpvsBalancer::new().await.expect("IPVS available in the VM");
        let service = |name: &str, port: u16| VirtualService {
            name: name.into(),
            listen: SocketAddr::new("10.212.0.7".parse().unwrap(), port),
            scheduler: "wlc".into(),
            clients: ClientPolicy::default(),
        };
        let (web, api) = (service("web", 80), service("api", 81));
        balancer.ensure_service(&web).await.unwrap();
        balancer.ensure_service(&api).await.unwrap();
        balancer.remove_service(&web).await.unwrap();
        let device = balancer.vip_device().to_owned();
        assert!(
            addresses_of(&device).contains("10.212.0.7/32"),
            "the VIP left with the first service: {}",
            addresses_of(&device)
        );
        let listing = ipvsadm_listing();
        assert!(listing.contains("TCP  10.212.0.7:81 wlc"), "{listing}");
        assert!(!listing.contains("10.212.0.7:80"), "{listing}");
        balancer.remove_service(&api).await.unwrap();
        assert!(
            !link_exists(&device) || !addresses_of(&device).contains("10.212.0.7/32"),
            "the VIP stayed after the last service"
        );
    });
}

/// Keeps what a balancer records, as the state record would.
#[derive(Default)]
struct Ledger(Mutex<IpvsRecord>);

impl IpvsLedger for Ledger {
    fn record_owned(&self, owned: IpvsRecord) {
        *self.0.lock().unwrap() = owned;
    }
    fn left_by_earlier_runs(&self) -> IpvsRecord {
        IpvsRecord::default()
    }
    fn set_left_by_earlier_runs(&self, _: IpvsRecord) {}
}

/// After a crash, the virtual services the crashed run recorded and the new run does not
/// make go (with an address no service of the new run uses); one the new run took over
/// stays, and an IPVS entry nobody recorded is never touched.
#[test]
#[ignore = "vm: needs IPVS"]
fn recorded_leftover_services_go_unless_taken_over() {
    in_fresh_netns(|| async {
        let service = |name: &str, listen: &str| VirtualService {
            name: name.into(),
            listen: listen.parse().unwrap(),
            scheduler: "wlc".into(),
            clients: ClientPolicy::default(),
        };
        let web = service("web", "10.212.0.7:80");
        let (shared, own) = (
            service("api", "10.212.0.7:81"),
            service("old", "10.212.0.8:80"),
        );
        let ledger = Arc::new(Ledger::default());
        let crashed = IpvsBalancer::new()
            .await
            .expect("IPVS available in the VM")
            .recording_to(ledger.clone());
        for s in [&web, &shared, &own] {
            crashed.ensure_service(s).await.unwrap();
        }
        // Not poold's: made by an operator.
        run("/usr/sbin/ipvsadm", &["-A", "-t", "10.212.0.9:80"]);
        // A crash: nothing of poold's own stop runs (dropping the balancer removes nothing).
        drop(crashed);
        let recorded = ledger.0.lock().unwrap().clone();
        assert_eq!(recorded.services.len(), 3, "{recorded:?}");
        let balancer = IpvsBalancer::new().await.unwrap();
        balancer.ensure_service(&web).await.unwrap();
        let this_run = record::ThisRun {
            ipvs_services: [record::RecordedService {
                listen: web.listen,
                protocol: crate::config::Protocol::Tcp,
            }]
            .into(),
            addresses: [web.listen.ip()].into(),
        };
        let left = record::remove_leftovers(&recorded, &this_run).await;
        assert!(left.is_empty(), "{left:?}");
        let listing = ipvsadm_listing();
        assert!(listing.contains("TCP  10.212.0.7:80 wlc"), "{listing}");
        assert!(listing.contains("TCP  10.212.0.9:80"), "{listing}");
        assert!(
            !listing.contains("10.212.0.7:81") && !listing.contains("10.212.0.8:80"),
            "{listing}"
        );
        let device = balancer.vip_device().to_owned();
        let bound = addresses_of(&device);
        assert!(bound.contains("10.212.0.7/32"), "{bound}");
        assert!(!bound.contains("10.212.0.8/32"), "{bound}");
        balancer.remove_service(&web).await.unwrap();
        assert!(
            device != VIP_DEVICE || !link_exists(&device),
            "{device} left behind"
        );
    });
}
