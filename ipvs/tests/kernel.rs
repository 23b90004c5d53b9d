//! The client against the real kernel.
//!
//! Every IPVS test runs on its own thread in a fresh network namespace (`unshare
//! CLONE_NEWNET` on that thread, then `Client::new()` there): IPVS tables are per
//! namespace, so tests start from an empty table and never see each other's entries. The
//! namespace dies with the thread; a Drop guard flushes the table anyway, so nothing is
//! left even if the namespace were kept alive. No packet is sent: only table entries.
//!
//! They need the IPVS kernel and run in the VM (`cargo xtask vm-test --filter ipvs_kernel`);
//! `client_new_matches_ipvs_availability` also runs on the host.

mod common;

/// Named `ipvs_kernel::*` so `cargo xtask vm-test --filter ipvs_kernel` selects them.
mod ipvs_kernel {
    use super::common::{self, ip};

    use std::net::IpAddr;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use ipvs::{
        AddressFamily, Client, DaemonState, Destination, Error, ForwardMethod, Protocol, Service,
        ServiceFlags, ServiceKey, SyncDaemon, Timeouts,
    };

    const IPVSADM: &str = "/usr/sbin/ipvsadm";

    /// Run iproute2 `ip` in the calling thread's namespace (children inherit it).
    fn ip_cmd(args: &[&str]) {
        let ip = ["/usr/bin/ip", "/sbin/ip", "/bin/ip"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("iproute2 ip");
        let status = Command::new(ip)
            .args(args)
            .status()
            .expect("run iproute2 ip");
        assert!(status.success(), "ip {args:?} failed: {status}");
    }

    /// Bring up `lo` in the calling thread's namespace: the kernel creates the namespace's
    /// local routing table then, and IPVS refuses destinations (EINVAL) while
    /// `inet_addr_type()` has no local table to classify their addresses with.
    fn loopback_up() {
        ip_cmd(&["link", "set", "lo", "up"]);
    }

    /// A client whose table is flushed when the test ends, even on panic.
    struct Table(Client);

    impl Drop for Table {
        fn drop(&mut self) {
            if let Err(e) = self.0.flush() {
                eprintln!("cleanup: flushing the test namespace's IPVS table failed: {e}");
            }
        }
    }

    /// Run `test` with a client in a fresh network namespace, on a thread of its own.
    fn in_fresh_netns<T: Send + 'static>(
        test: impl FnOnce(&mut Client) -> T + Send + 'static,
    ) -> T {
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET) (needs root)");
            loopback_up();
            let mut table = Table(Client::new().expect("Client::new in a fresh namespace"));
            test(&mut table.0)
        });
        match thread.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// `ipvsadm -Sn` in the calling thread's namespace (children inherit it), one line each.
    fn ipvsadm_save() -> Vec<String> {
        let out = Command::new(IPVSADM)
            .arg("-Sn")
            .output()
            .expect("run ipvsadm");
        assert!(
            out.status.success(),
            "ipvsadm -Sn: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `ipvsadm -Sn` shows each of `lines` (a trailing `\n` pins the end of a line).
    fn assert_saved(lines: &[&str]) {
        let saved = ipvsadm_save().join("\n");
        for line in lines {
            assert!(saved.contains(line), "ipvsadm -Sn lacks {line:?}:\n{saved}");
        }
    }

    /// The service's counters and its first real server's are zero; that real server.
    fn assert_zeroed(ipvs: &mut Client, key: &ServiceKey) -> Destination {
        let svc = ipvs.service(key).unwrap();
        assert_eq!(
            (svc.stats.conns, svc.stats.inpkts, svc.stats.inbytes),
            (0, 0, 0),
            "{:?}",
            svc.stats
        );
        let dest = ipvs.destinations(key).unwrap().remove(0);
        assert_eq!(dest.stats.conns, 0, "{:?}", dest.stats);
        dest
    }

    fn ipvsadm(args: &[&str]) {
        let out = Command::new(IPVSADM)
            .args(args)
            .output()
            .expect("run ipvsadm");
        assert!(
            out.status.success(),
            "ipvsadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn keys(services: &[Service]) -> Vec<ServiceKey> {
        let mut keys: Vec<_> = services.iter().map(|s| s.key).collect();
        keys.sort();
        keys
    }

    #[test]
    fn client_new_matches_ipvs_availability() {
        // /proc/net/ip_vs exists exactly when the kernel has IPVS loaded.
        let available = std::path::Path::new("/proc/net/ip_vs").exists();
        match Client::new() {
            Ok(_) => assert!(available, "Client::new succeeded without /proc/net/ip_vs"),
            Err(Error::NotAvailable) => assert!(!available, "NotAvailable with IPVS loaded"),
            Err(e) => panic!("unexpected error (available: {available}): {e:?}"),
        }
        if !available {
            let msg = Client::new().unwrap_err().to_string();
            assert!(msg.contains("modprobe ip_vs"), "{msg}");
        }
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn info_reports_version_and_table_size() {
        in_fresh_netns(|ipvs| {
            let info = ipvs.info().unwrap();
            assert_eq!(info.version_string(), "1.2.1");
            assert!(info.conn_table_size >= 4096, "{info:?}");
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn fresh_namespace_has_an_empty_table() {
        in_fresh_netns(|ipvs| {
            assert_eq!(ipvs.services().unwrap(), vec![]);
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn services_of_every_protocol_and_family_round_trip() {
        in_fresh_netns(|ipvs| {
            let mut expected = Vec::new();
            for addr in [ip("10.20.0.1"), ip("2001:db8::1")] {
                for (i, protocol) in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
                    .into_iter()
                    .enumerate()
                {
                    let key = ServiceKey::Inet {
                        protocol,
                        addr,
                        port: 8000 + i as u16,
                    };
                    ipvs.add_service(&Service::new(key, "rr")).unwrap();
                    expected.push(key);
                }
            }
            for family in [AddressFamily::Inet, AddressFamily::Inet6] {
                let key = ServiceKey::fwmark(family, 0x1_0001);
                ipvs.add_service(&Service::new(key, "wlc")).unwrap();
                expected.push(key);
            }
            expected.sort();
            let listed = ipvs.services().unwrap();
            assert_eq!(keys(&listed), expected);
            for service in &listed {
                let one = ipvs.service(&service.key).unwrap();
                assert_eq!(&one, service);
                assert!(one.flags.contains(ServiceFlags::HASHED), "{one:?}");
                assert_eq!(one.timeout, 0);
                assert_eq!(one.netmask, ipvs::default_netmask(one.key.family()));
            }
            // ipvsadm, reading the same table, agrees on addresses, ports (byte order) and marks.
            assert_saved(&[
                "-A -t 10.20.0.1:8000 -s rr",
                "-A -u 10.20.0.1:8001 -s rr",
                "--sctp-service 10.20.0.1:8002 -s rr",
                "-A -t [2001:db8::1]:8000 -s rr",
                "-A -f 65537 -s wlc",
                "-A -f 65537 -6 -s wlc",
            ]);
            for key in &expected {
                ipvs.delete_service(key).unwrap();
            }
            assert_eq!(ipvs.services().unwrap(), vec![]);
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn every_scheduler_is_accepted_and_read_back() {
        in_fresh_netns(|ipvs| {
            let schedulers = [
                "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf",
                "mh",
            ];
            for (i, sched) in schedulers.iter().enumerate() {
                let key = ServiceKey::tcp(ip("10.20.1.1"), 100 + i as u16);
                ipvs.add_service(&Service::new(key, *sched)).unwrap();
                assert_eq!(ipvs.service(&key).unwrap().scheduler, *sched);
            }
            assert_eq!(ipvs.services().unwrap().len(), schedulers.len());
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn persistence_netmask_one_packet_and_scheduler_flags() {
        in_fresh_netns(|ipvs| {
            let mut persistent = Service::new(ServiceKey::tcp(ip("10.20.2.1"), 443), "wlc");
            persistent.timeout = 600;
            persistent.netmask = 0xffff_ff00;
            ipvs.add_service(&persistent).unwrap();
            let got = ipvs.service(&persistent.key).unwrap();
            assert_eq!((got.timeout, got.netmask), (600, 0xffff_ff00));
            assert!(got.flags.contains(ServiceFlags::PERSISTENT), "{got:?}");
            assert!(got.is_persistent());

            let mut v6 = Service::new(ServiceKey::tcp(ip("2001:db8::2"), 443), "rr");
            v6.timeout = 60;
            v6.netmask = 64;
            ipvs.add_service(&v6).unwrap();
            let got = ipvs.service(&v6.key).unwrap();
            assert_eq!((got.timeout, got.netmask), (60, 64));

            let mut ops = Service::new(ServiceKey::udp(ip("10.20.2.1"), 53), "rr");
            ops.flags = ServiceFlags::ONEPACKET;
            ipvs.add_service(&ops).unwrap();
            let got = ipvs.service(&ops.key).unwrap();
            assert!(got.flags.contains(ServiceFlags::ONEPACKET), "{got:?}");

            let mut sh = Service::new(ServiceKey::tcp(ip("10.20.2.1"), 80), "sh");
            sh.flags = ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT;
            ipvs.add_service(&sh).unwrap();
            let got = ipvs.service(&sh.key).unwrap();
            assert!(
                got.flags
                    .contains(ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT),
                "{got:?}"
            );
            assert_eq!(
                got.flags.scheduler_flag_names(&got.scheduler),
                vec!["sh-fallback", "sh-port"]
            );

            let mut mh = Service::new(ServiceKey::tcp(ip("10.20.2.1"), 81), "mh");
            mh.flags = ServiceFlags::MH_PORT;
            ipvs.add_service(&mh).unwrap();
            let got = ipvs.service(&mh.key).unwrap();
            assert!(got.flags.contains(ServiceFlags::MH_PORT));
            assert!(!got.flags.contains(ServiceFlags::MH_FALLBACK));

            assert_saved(&[
                "-A -t 10.20.2.1:443 -s wlc -p 600 -M 255.255.255.0",
                "-A -u 10.20.2.1:53 -s rr -o",
                "-A -t 10.20.2.1:80 -s sh -b sh-fallback,sh-port",
            ]);
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn edit_service_changes_scheduler_flags_and_persistence() {
        in_fresh_netns(|ipvs| {
            let key = ServiceKey::tcp(ip("10.20.3.1"), 80);
            ipvs.add_service(&Service::new(key, "rr")).unwrap();
            let mut edited = Service::new(key, "wlc");
            edited.timeout = 300;
            ipvs.edit_service(&edited).unwrap();
            let got = ipvs.service(&key).unwrap();
            assert_eq!((got.scheduler.as_str(), got.timeout), ("wlc", 300));
            assert!(got.flags.contains(ServiceFlags::PERSISTENT));
            // Back to non-persistent: the flag mask replaces every flag.
            ipvs.edit_service(&Service::new(key, "lc")).unwrap();
            let got = ipvs.service(&key).unwrap();
            assert_eq!((got.scheduler.as_str(), got.timeout), ("lc", 0));
            assert!(!got.flags.contains(ServiceFlags::PERSISTENT), "{got:?}");
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn destinations_of_every_forwarding_method_round_trip() {
        in_fresh_netns(|ipvs| {
            let key = ServiceKey::tcp(ip("10.20.4.1"), 80);
            ipvs.add_service(&Service::new(key, "wrr")).unwrap();
            assert_eq!(ipvs.destinations(&key).unwrap(), vec![]);

            let masq = common::masq_destination(ip("10.20.4.10"), 8080, 3, (1000, 100));
            let route = common::route_destination(ip("10.20.4.11"), 80, 65535);
            let mut ipip = Destination::new(ip("10.20.4.12"), 80);
            ipip.forward = ForwardMethod::Tunnel;
            let gue = common::gue_destination(ip("10.20.4.13"));
            let added = [masq, route, ipip, gue];
            for dest in &added {
                ipvs.add_destination(&key, dest).unwrap();
            }
            let mut listed = ipvs.destinations(&key).unwrap();
            listed.sort_by_key(|d| d.addr);
            assert_eq!(listed.len(), added.len());
            for (got, want) in listed.iter().zip(&added) {
                assert_eq!(
                    (got.addr, got.port, got.forward, got.weight),
                    (want.addr, want.port, want.forward, want.weight)
                );
                assert_eq!(
                    (got.upper_threshold, got.lower_threshold),
                    (want.upper_threshold, want.lower_threshold)
                );
                assert_eq!(
                    (got.active_conns, got.inactive_conns, got.persistent_conns),
                    (0, 0, 0)
                );
                if want.forward == ForwardMethod::Tunnel {
                    assert_eq!(got.tunnel, want.tunnel, "{got:?}");
                }
            }
            assert_saved(&[
                "-a -t 10.20.4.1:80 -r 10.20.4.10:8080 -m -w 3\n",
                "-a -t 10.20.4.1:80 -r 10.20.4.11:80 -g -w 65535",
                "-a -t 10.20.4.1:80 -r 10.20.4.12:80 -i -w 1 --tun-type ipip",
                "-a -t 10.20.4.1:80 -r 10.20.4.13:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum",
            ]);
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn ipv6_and_fwmark_destinations() {
        in_fresh_netns(|ipvs| {
            let v6 = ServiceKey::udp(ip("2001:db8::10"), 53);
            ipvs.add_service(&Service::new(v6, "rr")).unwrap();
            ipvs.add_destination(&v6, &Destination::new(ip("2001:db8::11"), 5353))
                .unwrap();
            let dests = ipvs.destinations(&v6).unwrap();
            assert_eq!(dests.len(), 1);
            assert_eq!((dests[0].addr, dests[0].port), (ip("2001:db8::11"), 5353));
            assert_eq!(dests[0].family(), AddressFamily::Inet6);

            let fw = ServiceKey::fwmark(AddressFamily::Inet, 42);
            ipvs.add_service(&Service::new(fw, "rr")).unwrap();
            let mut dr = Destination::new(ip("10.20.5.2"), 0);
            dr.forward = ForwardMethod::DirectRoute;
            ipvs.add_destination(&fw, &dr).unwrap();
            let dests = ipvs.destinations(&fw).unwrap();
            assert_eq!(
                (dests[0].addr, dests[0].port, dests[0].forward),
                (ip("10.20.5.2"), 0, ForwardMethod::DirectRoute)
            );

            // Mixed families (tunnelling only): the destination's family comes from its
            // own ADDR_FAMILY attribute, not from the service.
            let v4 = ServiceKey::tcp(ip("10.20.5.1"), 80);
            ipvs.add_service(&Service::new(v4, "rr")).unwrap();
            let mut tun6 = Destination::new(ip("2001:db8::20"), 80);
            tun6.forward = ForwardMethod::Tunnel;
            ipvs.add_destination(&v4, &tun6).unwrap();
            let mut masq6 = Destination::new(ip("2001:db8::21"), 80);
            masq6.forward = ForwardMethod::Masquerade;
            let err = ipvs.add_destination(&v4, &masq6).unwrap_err();
            assert!(matches!(err, Error::Kernel { errno: 22, .. }), "{err:?}");
            let dests = ipvs.destinations(&v4).unwrap();
            assert_eq!(dests.len(), 1, "{dests:?}");
            assert_eq!(
                (dests[0].addr, dests[0].family(), dests[0].forward),
                (
                    ip("2001:db8::20"),
                    AddressFamily::Inet6,
                    ForwardMethod::Tunnel
                )
            );
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn edit_and_delete_destinations() {
        in_fresh_netns(|ipvs| {
            let key = ServiceKey::tcp(ip("10.20.6.1"), 80);
            ipvs.add_service(&Service::new(key, "wlc")).unwrap();
            let mut dest = Destination::new(ip("10.20.6.2"), 80);
            dest.weight = 5;
            ipvs.add_destination(&key, &dest).unwrap();
            ipvs.add_destination(&key, &Destination::new(ip("10.20.6.3"), 80))
                .unwrap();

            // Drain: weight 0, the rest unchanged.
            dest.weight = 0;
            dest.upper_threshold = 50;
            ipvs.edit_destination(&key, &dest).unwrap();
            let got = ipvs.destinations(&key).unwrap();
            let drained = got.iter().find(|d| d.addr == dest.addr).unwrap();
            assert_eq!((drained.weight, drained.upper_threshold), (0, 50));

            // set_weight changes the weight and keeps the rest.
            ipvs.set_weight(&key, dest.addr, dest.port, 9).unwrap();
            let got = ipvs.destinations(&key).unwrap();
            let undrained = got.iter().find(|d| d.addr == dest.addr).unwrap();
            assert_eq!((undrained.weight, undrained.upper_threshold), (9, 50));
            let err = ipvs.set_weight(&key, ip("10.20.6.99"), 80, 0).unwrap_err();
            assert!(
                matches!(err, Error::DestinationNotFound { port: 80, .. }),
                "{err:?}"
            );

            ipvs.delete_destination(&key, dest.addr, dest.port).unwrap();
            let left = ipvs.destinations(&key).unwrap();
            assert_eq!(left.len(), 1);
            assert_eq!(left[0].addr, ip("10.20.6.3"));
        });
    }

    /// A named network namespace for a real server, deleted on drop.
    struct ServerNetns {
        name: String,
    }

    impl ServerNetns {
        fn new() -> ServerNetns {
            static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("poold-ipvs-{}-{n}", std::process::id());
            ip_cmd(&["netns", "add", &name]);
            ServerNetns { name }
        }
    }

    impl Drop for ServerNetns {
        fn drop(&mut self) {
            ip_cmd(&["netns", "del", &self.name]);
        }
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn counters_count_real_connections_and_zero_clears_them() {
        use std::io::{Read, Write};
        in_fresh_netns(|ipvs| {
            // The shape DESIGN.md section 6 checked: VIP /32 on lo, the real server in its
            // own namespace behind a veth, MASQ, a client in the director's namespace.
            let server_ns = ServerNetns::new();
            let ns = server_ns.name.as_str();
            ip_cmd(&[
                "link", "add", "pdipvs0", "type", "veth", "peer", "name", "pdipvs1", "netns", ns,
            ]);
            ip_cmd(&["addr", "add", "10.99.0.1/24", "dev", "pdipvs0"]);
            ip_cmd(&["link", "set", "pdipvs0", "up"]);
            ip_cmd(&["addr", "add", "10.98.0.1/32", "dev", "lo"]);
            ip_cmd(&["-n", ns, "addr", "add", "10.99.0.2/24", "dev", "pdipvs1"]);
            ip_cmd(&["-n", ns, "link", "set", "pdipvs1", "up"]);
            ip_cmd(&["-n", ns, "link", "set", "lo", "up"]);
            ip_cmd(&["-n", ns, "route", "add", "default", "via", "10.99.0.1"]);

            // CONNECTIONS to each of two services (ports 80 and 81) on the same real server.
            const CONNECTIONS: usize = 3;
            let (bound_tx, bound_rx) = std::sync::mpsc::channel();
            let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
            let netns_path = format!("/run/netns/{ns}");
            let server = std::thread::spawn(move || {
                let netns = std::fs::File::open(&netns_path).unwrap();
                nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let listener = std::net::TcpListener::bind("10.99.0.2:8080").unwrap();
                bound_tx.send(()).unwrap();
                let mut open = Vec::new();
                for _ in 0..2 * CONNECTIONS {
                    let (mut conn, _) = listener.accept().unwrap();
                    let mut buf = [0u8; 4];
                    conn.read_exact(&mut buf).unwrap();
                    conn.write_all(b"pong").unwrap();
                    open.push(conn);
                }
                // Hold the connections (ESTABLISHED) until the test has looked.
                let _ = close_rx.recv();
            });
            bound_rx.recv().unwrap();

            let key = ServiceKey::tcp(ip("10.98.0.1"), 80);
            let other = ServiceKey::tcp(ip("10.98.0.1"), 81);
            let mut clients = Vec::new();
            for service in [key, other] {
                ipvs.add_service(&Service::new(service, "rr")).unwrap();
                ipvs.add_destination(&service, &Destination::new(ip("10.99.0.2"), 8080))
                    .unwrap();
                let vip = match service {
                    ServiceKey::Inet { addr, port, .. } => std::net::SocketAddr::new(addr, port),
                    ServiceKey::Fwmark { .. } => unreachable!(),
                };
                for _ in 0..CONNECTIONS {
                    let mut client = std::net::TcpStream::connect(vip).unwrap();
                    client.write_all(b"ping").unwrap();
                    let mut buf = [0u8; 4];
                    client.read_exact(&mut buf).unwrap();
                    assert_eq!(&buf, b"pong");
                    clients.push(client);
                }
            }

            // The kernel folds its per-CPU counters into what it reports every 2 s (the rate
            // estimator's tick): poll until they show up, bounded.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let counted = |ipvs: &mut Client, service: &ServiceKey| {
                ipvs.service(service).unwrap().stats.conns
            };
            while counted(ipvs, &key) < CONNECTIONS as u64
                || counted(ipvs, &other) < CONNECTIONS as u64
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the kernel never counted the connections"
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            for service in [key, other] {
                let svc = ipvs.service(&service).unwrap();
                assert_eq!(svc.stats.conns, CONNECTIONS as u64, "{:?}", svc.stats);
                assert!(
                    svc.stats.inpkts >= 3 * CONNECTIONS as u64,
                    "{:?}",
                    svc.stats
                );
                assert!(
                    svc.stats.outpkts >= 2 * CONNECTIONS as u64,
                    "{:?}",
                    svc.stats
                );
                assert!(
                    svc.stats.inbytes > 0 && svc.stats.outbytes > 0,
                    "{:?}",
                    svc.stats
                );
                let dest = &ipvs.destinations(&service).unwrap()[0];
                assert_eq!(dest.stats.conns, CONNECTIONS as u64, "{:?}", dest.stats);
                // Both sides hold their sockets open: the kernel counts them as active.
                assert_eq!(dest.active_conns, CONNECTIONS as u32, "{dest:?}");
            }

            // Zeroing one service clears its counters and its real servers', not the other's.
            ipvs.zero(Some(&key)).unwrap();
            let dest = assert_zeroed(ipvs, &key);
            // Zeroing counters leaves the connection table alone.
            assert_eq!(dest.active_conns, CONNECTIONS as u32, "{dest:?}");
            assert_eq!(
                counted(ipvs, &other),
                CONNECTIONS as u64,
                "zeroed too early"
            );

            // Zeroing everything clears the other service too.
            ipvs.zero(None).unwrap();
            assert_zeroed(ipvs, &other);

            drop(clients);
            close_tx.send(()).unwrap();
            server.join().unwrap();
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn sync_daemons_start_list_and_stop() {
        in_fresh_netns(|ipvs| {
            // Sync daemons need a multicast-capable interface with an IPv4 address.
            ip_cmd(&[
                "link", "add", "pdsync0", "type", "veth", "peer", "name", "pdsync1",
            ]);
            ip_cmd(&["addr", "add", "10.97.0.1/24", "dev", "pdsync0"]);
            ip_cmd(&["addr", "add", "10.97.0.2/24", "dev", "pdsync1"]);
            ip_cmd(&["link", "set", "pdsync0", "up"]);
            ip_cmd(&["link", "set", "pdsync1", "up"]);
            assert_eq!(ipvs.daemons().unwrap(), vec![]);

            let master = SyncDaemon::new(DaemonState::Master, "pdsync0", 7);
            ipvs.start_daemon(&master).unwrap();
            let mut backup = SyncDaemon::new(DaemonState::Backup, "pdsync1", 7);
            backup.mcast_port = Some(8850);
            ipvs.start_daemon(&backup).unwrap();
            let err = ipvs.start_daemon(&master).unwrap_err();
            assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");

            let mut daemons = ipvs.daemons().unwrap();
            daemons.sort_by_key(|d| d.state.number());
            assert_eq!(daemons.len(), 2, "{daemons:?}");
            assert_eq!(
                (
                    daemons[0].state,
                    daemons[0].mcast_interface.as_str(),
                    daemons[0].syncid
                ),
                (DaemonState::Master, "pdsync0", 7)
            );
            assert_eq!(daemons[0].mcast_port, Some(8848), "kernel default");
            assert_eq!(
                daemons[0].mcast_group,
                Some(ip("224.0.0.81")),
                "kernel default"
            );
            assert_eq!(
                (
                    daemons[1].state,
                    daemons[1].mcast_interface.as_str(),
                    daemons[1].mcast_port
                ),
                (DaemonState::Backup, "pdsync1", Some(8850))
            );
            let out = Command::new(IPVSADM)
                .args(["-L", "--daemon"])
                .output()
                .unwrap();
            let listed = String::from_utf8_lossy(&out.stdout);
            assert!(
                listed.contains("master sync daemon (mcast=pdsync0, syncid=7"),
                "ipvsadm -L --daemon: {listed}{}",
                String::from_utf8_lossy(&out.stderr)
            );

            ipvs.stop_daemon(DaemonState::Master).unwrap();
            ipvs.stop_daemon(DaemonState::Backup).unwrap();
            assert_eq!(ipvs.daemons().unwrap(), vec![]);
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn large_dumps_span_many_datagrams() {
        in_fresh_netns(|ipvs| {
            // ~330 bytes per service message: 1000 services need dozens of datagrams.
            for i in 0..1000u16 {
                let key = ServiceKey::tcp(ip("10.30.0.1"), 1000 + i);
                ipvs.add_service(&Service::new(key, "rr")).unwrap();
            }
            let services = ipvs.services().unwrap();
            let mut ports: Vec<u16> = services
                .iter()
                .map(|s| match s.key {
                    ServiceKey::Inet { port, .. } => port,
                    ServiceKey::Fwmark { .. } => panic!("{s:?}"),
                })
                .collect();
            ports.sort();
            assert_eq!(ports, (1000..2000).collect::<Vec<u16>>());

            let key = ServiceKey::tcp(ip("10.30.0.1"), 1000);
            for i in 0..500u32 {
                let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a1f_0000 + i));
                ipvs.add_destination(&key, &Destination::new(addr, 80))
                    .unwrap();
            }
            assert_eq!(ipvs.destinations(&key).unwrap().len(), 500);
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn flush_empties_the_table() {
        // Zeroing is tested on counters real connections made: see
        // counters_count_real_connections_and_zero_clears_them.
        in_fresh_netns(|ipvs| {
            let a = ServiceKey::tcp(ip("10.20.7.1"), 80);
            let b = ServiceKey::udp(ip("10.20.7.1"), 80);
            ipvs.add_service(&Service::new(a, "rr")).unwrap();
            ipvs.add_service(&Service::new(b, "rr")).unwrap();
            ipvs.add_destination(&a, &Destination::new(ip("10.20.7.2"), 80))
                .unwrap();
            assert_eq!(ipvsadm_save().len(), 3);
            ipvs.flush().unwrap();
            assert_eq!(ipvs.services().unwrap(), vec![]);
            assert_eq!(ipvsadm_save(), Vec::<String>::new());
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn timeouts_get_set_and_zero_means_unchanged() {
        in_fresh_netns(|ipvs| {
            let defaults = ipvs.timeouts().unwrap();
            assert_eq!(
                defaults,
                Timeouts {
                    tcp: 900,
                    tcp_fin: 120,
                    udp: 300
                }
            );
            let new = Timeouts {
                tcp: 1000,
                tcp_fin: 60,
                udp: 30,
            };
            ipvs.set_timeouts(&new).unwrap();
            assert_eq!(ipvs.timeouts().unwrap(), new);
            ipvs.set_timeouts(&Timeouts {
                tcp: 0,
                tcp_fin: 0,
                udp: 45,
            })
            .unwrap();
            assert_eq!(ipvs.timeouts().unwrap(), Timeouts { udp: 45, ..new });
            // Put the defaults back (the namespace dies anyway).
            ipvs.set_timeouts(&defaults).unwrap();
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn reads_tables_built_by_ipvsadm() {
        in_fresh_netns(|ipvs| {
            ipvsadm(&["-A", "-t", "10.20.8.1:8080", "-s", "wrr", "-p", "120"]);
            ipvsadm(&[
                "-a",
                "-t",
                "10.20.8.1:8080",
                "-r",
                "10.20.8.2:9090",
                "-m",
                "-w",
                "7",
            ]);
            ipvsadm(&["-A", "-f", "99", "-6", "-s", "lc"]);
            let key = ServiceKey::tcp(ip("10.20.8.1"), 8080);
            let svc = ipvs.service(&key).unwrap();
            assert_eq!((svc.scheduler.as_str(), svc.timeout), ("wrr", 120));
            let dests = ipvs.destinations(&key).unwrap();
            assert_eq!(
                (
                    dests[0].addr,
                    dests[0].port,
                    dests[0].weight,
                    dests[0].forward
                ),
                (ip("10.20.8.2"), 9090, 7, ForwardMethod::Masquerade)
            );
            let fw = ipvs
                .service(&ServiceKey::fwmark(AddressFamily::Inet6, 99))
                .unwrap();
            assert_eq!(fw.scheduler, "lc");
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn missing_objects_are_typed_errors() {
        in_fresh_netns(|ipvs| {
            let missing = ServiceKey::tcp(ip("10.20.9.1"), 1);
            let dest = Destination::new(ip("10.20.9.2"), 80);
            let not_found = |r: Result<_, Error>| match r {
                Err(Error::ServiceNotFound { service, .. }) => assert_eq!(service, missing),
                other => panic!("expected ServiceNotFound, got {other:?}"),
            };
            not_found(ipvs.service(&missing).map(drop));
            not_found(ipvs.delete_service(&missing));
            not_found(ipvs.edit_service(&Service::new(missing, "rr")));
            not_found(ipvs.destinations(&missing).map(drop));
            not_found(ipvs.add_destination(&missing, &dest));
            not_found(ipvs.delete_destination(&missing, dest.addr, dest.port));
            not_found(ipvs.zero(Some(&missing)));

            let key = ServiceKey::tcp(ip("10.20.9.1"), 80);
            ipvs.add_service(&Service::new(key, "rr")).unwrap();
            for result in [
                ipvs.edit_destination(&key, &dest),
                ipvs.delete_destination(&key, dest.addr, dest.port),
            ] {
                match result {
                    Err(Error::DestinationNotFound { addr, port, .. }) => {
                        assert_eq!((addr, port), (dest.addr, dest.port))
                    }
                    other => panic!("expected DestinationNotFound, got {other:?}"),
                }
            }
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn duplicates_and_unknown_schedulers_are_typed_errors() {
        in_fresh_netns(|ipvs| {
            let key = ServiceKey::tcp(ip("10.20.10.1"), 80);
            ipvs.add_service(&Service::new(key, "rr")).unwrap();
            let err = ipvs.add_service(&Service::new(key, "rr")).unwrap_err();
            assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                "NEW_SERVICE: service TCP 10.20.10.1:80 already exists"
            );

            let dest = Destination::new(ip("10.20.10.2"), 80);
            ipvs.add_destination(&key, &dest).unwrap();
            let err = ipvs.add_destination(&key, &dest).unwrap_err();
            assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");

            let other = ServiceKey::tcp(ip("10.20.10.1"), 81);
            for result in [
                ipvs.add_service(&Service::new(other, "nosuchsched")),
                ipvs.edit_service(&Service::new(key, "nosuchsched")),
            ] {
                match result {
                    Err(Error::UnknownScheduler { name, .. }) => {
                        assert_eq!(name, "nosuchsched")
                    }
                    other => panic!("expected UnknownScheduler, got {other:?}"),
                }
            }
            // Nothing was added or changed by the failed calls.
            assert_eq!(keys(&ipvs.services().unwrap()), vec![key]);
            assert_eq!(ipvs.service(&key).unwrap().scheduler, "rr");
        });
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn without_cap_net_admin_is_permission_denied() {
        let thread = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // Capabilities are per thread: only this thread loses CAP_NET_ADMIN.
            caps::drop(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_NET_ADMIN,
            )
            .unwrap();
            Client::new().map(drop)
        });
        match thread.join().unwrap() {
            Err(Error::PermissionDenied { op }) => assert_eq!(op, "GET_INFO"),
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn nobody_is_permission_denied() {
        // A whole process as uid 65534: ipvsadm, which needs the same capability, fails the
        // same way, proving the setup; our own client is run the same way by re-running this
        // test binary's helper below as nobody.
        let ipvsadm = Command::new(IPVSADM)
            .arg("-Ln")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&ipvsadm.stderr);
        assert!(
            !ipvsadm.status.success() && stderr.contains("Permission denied"),
            "ipvsadm -Ln as nobody: {}: {stderr}{}",
            ipvsadm.status,
            String::from_utf8_lossy(&ipvsadm.stdout)
        );
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args([
                "--exact",
                "ipvs_kernel::nobody_helper",
                "--include-ignored",
                "--nocapture",
            ])
            .env("IPVS_TEST_AS_NOBODY", "1")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("nobody_helper: PermissionDenied"),
            "helper output:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run as nobody by `nobody_is_permission_denied`; as anyone else it checks that the
    /// client works (so it never passes vacuously).
    #[test]
    #[ignore = "vm: needs IPVS"]
    fn nobody_helper() {
        let result = Client::new().map(drop);
        if std::env::var_os("IPVS_TEST_AS_NOBODY").is_some() {
            assert_eq!(nix::unistd::getuid().as_raw(), 65534);
            match result {
                Err(Error::PermissionDenied { .. }) => println!("nobody_helper: PermissionDenied"),
                other => panic!("expected PermissionDenied as nobody, got {other:?}"),
            }
        } else {
            result.expect("Client::new as root");
        }
    }
}
