use super::*;
use ipvs::{ForwardMethod, Protocol};
use std::collections::HashMap;

fn dest(addr: &str, port: u16, forward: ForwardMethod, weight: i32) -> Destination {
    let mut d = Destination::new(addr.parse().unwrap(), port);
    d.forward = forward;
    d.weight = weight;
    d
}

fn service(protocol: Protocol, addr: &str, port: u16, sched: &str) -> ServiceListing {
    let key = ServiceKey::Inet {
        protocol,
        addr: addr.parse().unwrap(),
        port,
    };
    let mut service = Service::new(key, sched);
    service.flags = ServiceFlags::HASHED; // as the kernel reports
    ServiceListing {
        service,
        dests: Vec::new(),
    }
}

fn info() -> Info {
    Info {
        version: 0x010201,
        conn_table_size: 4096,
    }
}

/// The table of testdata/golden.py, in a scrambled kernel order.
fn table() -> Vec<ServiceListing> {
    let mut web = service(Protocol::Tcp, "10.0.0.1", 80, "sh");
    web.service.flags |= ServiceFlags::SCHED1 | ServiceFlags::SCHED2;
    web.service.stats = Stats {
        conns: 123_456_789,
        inpkts: 99_999_999,
        outpkts: 1_000_000_000,
        inbytes: 5_000_000_000,
        outbytes: 123_456_789_012_345,
        cps: 7,
        inpps: 8,
        outpps: 9,
        inbps: 100_000_000,
        outbps: 12,
    };
    let mut masq = dest("10.0.1.2", 8080, ForwardMethod::Masquerade, 1);
    masq.active_conns = 3;
    masq.inactive_conns = 12;
    masq.stats.conns = 5;
    masq.stats.inbps = 250_000_000;
    web.dests = vec![masq, dest("10.0.1.1", 80, ForwardMethod::DirectRoute, 0)];

    let mut dns = service(Protocol::Udp, "10.0.0.2", 53, "rr");
    dns.service.flags |= ServiceFlags::PERSISTENT | ServiceFlags::ONEPACKET;
    dns.service.timeout = 600;
    dns.service.netmask = 0xffff_ff00;
    let mut d = dest("10.0.2.1", 53, ForwardMethod::Masquerade, 2);
    (
        d.upper_threshold,
        d.lower_threshold,
        d.active_conns,
        d.inactive_conns,
        d.persistent_conns,
    ) = (100, 50, 1, 2, 3);
    dns.dests = vec![d];

    let mut v6 = service(Protocol::Tcp, "2001:db8::1", 443, "lc");
    v6.dests = vec![dest("2001:db8::10", 443, ForwardMethod::Masquerade, 1)];

    let mut fwm = Service::new(ServiceKey::fwmark(AddressFamily::Inet6, 7), "wrr");
    fwm.flags = ServiceFlags::HASHED | ServiceFlags::PERSISTENT;
    fwm.timeout = 300;
    fwm.netmask = 64;
    let fwm = ServiceListing {
        service: fwm,
        dests: vec![dest("2001:db8::2", 0, ForwardMethod::Tunnel, 5)],
    };
    vec![fwm, dns, v6, web]
}

fn golden() -> HashMap<String, String> {
    serde_json::from_str(include_str!("testdata/golden.json")).unwrap()
}

fn check(mode: &str, format: Format) {
    let got = list_all(&info(), &mut table(), &format);
    let want = &golden()[mode];
    assert_eq!(&got, want, "mode {mode}:\n--- got\n{got}--- want\n{want}");
}

fn numeric() -> Format {
    Format {
        numeric: true,
        ..Format::default()
    }
}

#[test]
fn listings_match_ipvsadm_formats() {
    check("plain", numeric());
    check(
        "stats",
        Format {
            stats: true,
            ..numeric()
        },
    );
    check(
        "exact",
        Format {
            stats: true,
            exact: true,
            ..numeric()
        },
    );
    check(
        "rate",
        Format {
            rate: true,
            ..numeric()
        },
    );
    check(
        "thr",
        Format {
            thresholds: true,
            ..numeric()
        },
    );
    check(
        "pc",
        Format {
            persistent_conn: true,
            ..numeric()
        },
    );
    check(
        "rule",
        Format {
            rule: true,
            ..numeric()
        },
    );
}

#[test]
fn largenum_abbreviates_like_ipvsadm() {
    let cases: [(u64, bool, &str); 8] = [
        (0, false, "        0"),
        (99_999_999, false, " 99999999"),
        (100_000_000, false, "  100000K"),
        (999_999_999, false, "  999999K"),
        (1_000_000_000, false, "    1000M"),
        (100_000_000_000, false, "     100G"),
        (100_000_000_000_000, false, "     100T"),
        (123_456_789_012, true, " 123456789012"),
    ];
    for (n, exact, want) in cases {
        let mut s = String::new();
        largenum(&mut s, n, exact);
        assert_eq!(s, want, "{n}");
    }
}

#[test]
fn nosort_keeps_kernel_order_and_long_names_are_cut() {
    let format = Format {
        nosort: true,
        ..numeric()
    };
    let text = list_all(&info(), &mut table(), &format);
    let first = text.lines().nth(3).unwrap();
    assert_eq!(first, "FWM  7 IPv6 wrr persistent 300 mask 64");
    let mut s = service(Protocol::Sctp, "203.0.113.222", 65535, "rr");
    s.dests = vec![dest(
        "203.0.113.223",
        65535,
        ForwardMethod::Masquerade,
        65535,
    )];
    let text = list_service(&s, &numeric());
    assert!(text.contains("SCTP 203.0.113.222:65535 rr\n"), "{text}");
    assert!(
        text.contains("  -> 203.0.113.223:65535          Masq    65535  0"),
        "{text}"
    );
}

#[test]
fn sorting_uses_libipvs_comparators() {
    let a = service(Protocol::Tcp, "10.0.0.2", 80, "rr").service;
    let b = service(Protocol::Tcp, "10.0.0.10", 80, "rr").service;
    assert!(cmp_services(&a, &b) < 0);
    let c = service(Protocol::Udp, "10.0.0.1", 80, "rr").service;
    assert!(
        cmp_services(&b, &c) < 0,
        "TCP sorts before UDP whatever the address"
    );
    let d4 = dest("10.0.0.1", 90, ForwardMethod::Masquerade, 1);
    let d4b = dest("10.0.0.1", 100, ForwardMethod::Masquerade, 1);
    assert!(cmp_dests(&d4, &d4b) < 0);
}

#[test]
fn json_listing_carries_the_table() {
    let text = json(&info(), &mut table(), &numeric());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], "1.2.1");
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 4);
    assert_eq!(services[0]["address"], "10.0.0.1");
    assert_eq!(services[0]["sched_flags"][1], "sh-port");
    assert_eq!(services[0]["destinations"][0]["address"], "10.0.1.1");
    assert_eq!(services[1]["netmask"], "255.255.255.0");
    assert_eq!(services[3]["fwmark"], 7);
}

/// The order ipvsadm 1.31 (glibc 2.36 qsort) printed in the VM for the
/// many_destinations conformance table: libipvs' int-subtraction comparator puts 250.x,
/// 1.x, ... in this non-monotonic order.
const IPVSADM_ORDER: &str = "250.2.0.18:8002 250.7.0.48:8002 1.1.0.11:8001 1.6.0.41:8001 100.1.0.9:8002 100.2.0.15:8002 100.3.0.21:8002 100.4.0.27:8002 100.6.0.39:8002 100.7.0.45:8002 100.8.0.51:8002 100.9.0.57:8002 172.0.0.4:8000 172.1.0.10:8000 172.2.0.16:8000 172.3.0.22:8000 172.4.0.28:8000 172.5.0.34:8000 172.6.0.40:8000 172.7.0.46:8000 172.8.0.52:8000 172.9.0.58:8000 200.0.0.2:8001 200.1.0.8:8001 200.2.0.14:8001 200.3.0.20:8001 200.5.0.32:8001 200.6.0.38:8001 200.7.0.44:8001 200.8.0.50:8001 250.0.0.6:8002 250.1.0.12:8002 250.3.0.24:8002 250.4.0.30:8002 250.5.0.36:8002 250.6.0.42:8002 250.8.0.54:8002 250.9.0.60:8002 1.0.0.5:8001 1.2.0.17:8001 1.3.0.23:8001 1.4.0.29:8001 1.5.0.35:8001 1.7.0.47:8001 1.8.0.53:8001 1.9.0.59:8001 10.0.0.1:8000 10.1.0.7:8000 10.2.0.13:8000 10.3.0.19:8000 10.4.0.25:8000 10.5.0.31:8000 10.6.0.37:8000 10.7.0.43:8000 10.8.0.49:8000 10.9.0.55:8000 100.0.0.3:8002 100.5.0.33:8002 200.4.0.26:8001 200.9.0.56:8001";

#[test]
fn wrapping_comparator_order_matches_ipvsadm() {
    // The conformance test's insertion order; the kernel lists newest first.
    let mut kernel: Vec<Destination> = (0..60u32)
        .map(|i| {
            let j = (i * 37) % 60;
            let first = [10u8, 200, 100, 172, 1, 250][(j % 6) as usize];
            let addr = IpAddr::from([first, (j / 6) as u8, 0, (j + 1) as u8]);
            let mut d = Destination::new(addr, 8000 + (j % 3) as u16);
            d.weight = (j % 5) as i32;
            d
        })
        .collect();
    kernel.reverse();
    sort_dests(&mut kernel);
    let got: Vec<String> = kernel
        .iter()
        .map(|d| format!("{}:{}", d.addr, d.port))
        .collect();
    let want: Vec<&str> = IPVSADM_ORDER.split_whitespace().collect();
    assert_eq!(got, want);
}
