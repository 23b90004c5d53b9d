//! Codec tests: model -> attributes -> bytes -> attributes -> model round trips,
//! hand-assembled kernel-shaped bytes, and garbage that must give errors, not panics.

use super::*;
use crate::model::*;
use netlink_packet_core::{NLM_F_ACK, NLM_F_MULTIPART};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Emit `msg` as a body, parse it back for the same command.
fn reparse(msg: &IpvsMessage) -> IpvsMessage {
    let bytes = emit_attrs(msg);
    parse_body(msg.cmd.number(), &bytes).expect("own output parses")
}

fn sample_services() -> Vec<Service> {
    let mut persistent = Service::new(ServiceKey::tcp(ip("10.0.0.1"), 443), "wlc");
    persistent.timeout = 360;
    persistent.netmask = 0xffff_ff00;
    persistent.flags = ServiceFlags::PERSISTENT | ServiceFlags::HASHED;
    let mut ops = Service::new(ServiceKey::udp(ip("2001:db8::53"), 53), "rr");
    ops.flags = ServiceFlags::ONEPACKET;
    ops.netmask = 64;
    let mut sh = Service::new(ServiceKey::sctp(ip("192.0.2.7"), 3868), "sh");
    sh.flags = ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT;
    sh.pe_name = Some("sip".into());
    let mut fw6 = Service::new(ServiceKey::fwmark(AddressFamily::Inet6, 0xdead_beef), "mh");
    fw6.stats = Stats {
        conns: 1,
        inpkts: u64::from(u32::MAX) + 5,
        outpkts: 3,
        inbytes: 1 << 40,
        outbytes: 5,
        cps: 6,
        inpps: 7,
        outpps: 8,
        inbps: 9,
        outbps: 10,
    };
    vec![
        Service::new(ServiceKey::tcp(ip("127.0.0.1"), 80), "rr"),
        persistent,
        ops,
        sh,
        Service::new(ServiceKey::fwmark(AddressFamily::Inet, 7), "wrr"),
        fw6,
    ]
}

#[test]
fn service_round_trips_through_bytes() {
    for service in sample_services() {
        let msg = IpvsMessage::new(
            Command::NewService,
            vec![Attr::Service(service_reply_attrs(&service))],
        );
        let parsed = reparse(&msg);
        assert_eq!(parsed, msg, "attributes of {}", service.key);
        let Attr::Service(attrs) = &parsed.attrs[0] else {
            panic!("not a service: {parsed:?}")
        };
        assert_eq!(service_from_attrs(attrs).unwrap(), service);
    }
}

#[test]
fn service_key_attrs_identify_fwmark_and_inet() {
    let key = ServiceKey::tcp(ip("10.1.2.3"), 8080);
    let attrs = service_key_attrs(&key);
    assert!(attrs.contains(&ServiceAttr::Port(8080)));
    assert!(attrs.contains(&ServiceAttr::Af(2)));
    assert!(attrs.contains(&ServiceAttr::Protocol(6)));
    let fw = service_key_attrs(&ServiceKey::fwmark(AddressFamily::Inet6, 9));
    assert_eq!(fw, vec![ServiceAttr::Af(10), ServiceAttr::Fwmark(9)]);
}

#[test]
fn port_is_big_endian_on_the_wire() {
    let msg = IpvsMessage::new(
        Command::GetService,
        vec![Attr::Service(vec![ServiceAttr::Port(80)])],
    );
    let bytes = emit_attrs(&msg);
    // outer header (4) + inner header (4) + value
    assert_eq!(&bytes[8..10], &[0, 80]);
}

fn sample_destinations() -> Vec<Destination> {
    let mut busy = Destination::new(ip("10.0.1.2"), 8080);
    busy.weight = 0;
    busy.active_conns = 70_000; // above u16: counts are u32
    busy.inactive_conns = 150;
    busy.persistent_conns = 3;
    busy.upper_threshold = 1000;
    busy.lower_threshold = 10;
    busy.stats.conns = 99;
    let tun = Destination::tunnelled(ip("2001:db8::2"), 0, Tunnel::gue(6080, Tunnel::CSUM));
    let mut dr = Destination::new(ip("192.0.2.9"), 80);
    dr.forward = ForwardMethod::DirectRoute;
    dr.weight = 65535;
    vec![busy, tun, dr]
}

/// The attributes the kernel sends for a destination (full set, counters, STATS64).
fn dest_reply_attrs(dest: &Destination) -> Vec<DestAttr> {
    let mut attrs = destination_attrs(dest);
    if dest.forward != ForwardMethod::Tunnel {
        attrs.extend([
            DestAttr::TunType(dest.tunnel.kind.number()),
            DestAttr::TunPort(dest.tunnel.port),
            DestAttr::TunFlags(dest.tunnel.flags),
        ]);
    }
    attrs.extend([
        DestAttr::ActiveConns(dest.active_conns),
        DestAttr::InactiveConns(dest.inactive_conns),
        DestAttr::PersistConns(dest.persistent_conns),
        DestAttr::Stats64(stats64_attrs(&dest.stats)),
    ]);
    attrs
}

#[test]
fn destination_round_trips_through_bytes() {
    for dest in sample_destinations() {
        let msg = IpvsMessage::new(Command::NewDest, vec![Attr::Dest(dest_reply_attrs(&dest))]);
        let parsed = reparse(&msg);
        assert_eq!(parsed, msg);
        let Attr::Dest(attrs) = &parsed.attrs[0] else {
            panic!("not a dest: {parsed:?}")
        };
        assert_eq!(
            destination_from_attrs(attrs, AddressFamily::Inet).unwrap(),
            dest
        );
    }
}

#[test]
fn destination_family_falls_back_to_the_service() {
    let attrs = vec![
        DestAttr::Addr(addr_attr_bytes(&ip("2001:db8::7"))),
        DestAttr::Port(80),
        DestAttr::FwdMethod(0),
    ];
    let dest = destination_from_attrs(&attrs, AddressFamily::Inet6).unwrap();
    assert_eq!(dest.addr, ip("2001:db8::7"));
    // The same bytes read as an IPv4 service's destination give the first 4 bytes.
    let dest = destination_from_attrs(&attrs, AddressFamily::Inet).unwrap();
    assert_eq!(dest.addr, ip("32.1.13.184"));
}

/// Little helpers to assemble attributes byte by byte, independently of the emitter.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((value.len() + 4) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

fn hand_made_service(nested_flag: u16) -> Vec<u8> {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[10, 0, 0, 1]);
    let stats32 = [
        nla(1, &5u32.to_ne_bytes()),
        nla(4, &77u64.to_ne_bytes()),
        nla(10, &1u32.to_ne_bytes()),
    ]
    .concat();
    let stats64 = [
        nla(1, &6u64.to_ne_bytes()),
        nla(4, &(1u64 << 33).to_ne_bytes()),
        nla(11, &[]), // PAD
    ]
    .concat();
    let flags = [2u32.to_ne_bytes(), u32::MAX.to_ne_bytes()].concat();
    let service = [
        nla(1, &2u16.to_ne_bytes()),
        nla(2, &6u16.to_ne_bytes()),
        nla(3, &addr),
        nla(4, &80u16.to_be_bytes()),
        nla(6, b"wlc\0"),
        nla(7, &flags),
        nla(8, &0u32.to_ne_bytes()),
        nla(9, &[255, 255, 255, 255]),
        nla(10 | nested_flag, &stats32),
        nla(12 | nested_flag, &stats64),
        nla(99, b"from the future"),
    ]
    .concat();
    nla(1 | nested_flag, &service)
}

#[test]
fn kernel_shaped_service_parses_with_or_without_nested_flag() {
    for flag in [0, NLA_F_NESTED] {
        let body = hand_made_service(flag);
        let msg = parse_body(1, &body).unwrap();
        let Attr::Service(attrs) = &msg.attrs[0] else {
            panic!("{msg:?}")
        };
        let svc = service_from_attrs(attrs).unwrap();
        assert_eq!(svc.key, ServiceKey::tcp(ip("10.0.0.1"), 80));
        assert_eq!(svc.scheduler, "wlc");
        assert_eq!(svc.flags, ServiceFlags::HASHED);
        assert_eq!(svc.netmask, 0xffff_ffff);
        // STATS64 wins over STATS.
        assert_eq!(svc.stats.conns, 6);
        assert_eq!(svc.stats.inbytes, 1 << 33);
        assert_eq!(svc.stats.outbps, 0);
        assert!(attrs
            .iter()
            .any(|a| matches!(a, ServiceAttr::Other(o) if o.kind() == 99)));
        if flag == 0 {
            // Without flags, what we emit is exactly what the kernel sent.
            assert_eq!(emit_attrs(&msg), body);
        }
    }
}

#[test]
fn stats_without_stats64_are_widened() {
    let stats = [nla(1, &5u32.to_ne_bytes()), nla(5, &9u64.to_ne_bytes())].concat();
    let attrs = parse_attrs(&stats, StatsAttr::parse).unwrap();
    let svc = [
        ServiceAttr::Af(2),
        ServiceAttr::Fwmark(3),
        ServiceAttr::SchedName("rr".into()),
        ServiceAttr::Stats(attrs),
    ];
    let svc = service_from_attrs(&svc).unwrap();
    assert_eq!((svc.stats.conns, svc.stats.outbytes), (5, 9));
}

#[test]
fn ipv6_netmask_is_a_host_order_prefix_length() {
    let mut svc = Service::new(ServiceKey::tcp(ip("2001:db8::1"), 80), "rr");
    svc.netmask = 48;
    let attrs = service_attrs(&svc);
    assert!(attrs.contains(&ServiceAttr::Netmask(48u32.to_ne_bytes())));
    let mut svc4 = Service::new(ServiceKey::tcp(ip("10.0.0.1"), 80), "rr");
    svc4.netmask = 0xffff_ff00;
    assert!(service_attrs(&svc4).contains(&ServiceAttr::Netmask([255, 255, 255, 0])));
}

#[test]
fn info_and_config_replies_use_their_attribute_spaces() {
    let body = [
        nla(1, &0x010201u32.to_ne_bytes()),
        nla(2, &4096u32.to_ne_bytes()),
    ]
    .concat();
    let msg = parse_body(Command::SetInfo.number(), &body).unwrap();
    let info = info_from_attrs(&msg.attrs).unwrap();
    assert_eq!(info.version_string(), "1.2.1");
    assert_eq!(info.conn_table_size, 4096);
    assert_eq!(emit_attrs(&msg), body);

    let t = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    let msg = IpvsMessage::new(Command::SetConfig, timeouts_attrs(&t));
    assert_eq!(timeouts_from_attrs(&reparse(&msg).attrs).unwrap(), t);
}

#[test]
fn missing_required_attributes_are_errors_naming_them() {
    let err = service_from_attrs(&[ServiceAttr::Protocol(6)]).unwrap_err();
    assert_eq!(
        err,
        AttrError::Missing {
            object: "service",
            attr: "address family (IPVS_SVC_ATTR_AF)"
        }
    );
    assert_eq!(
        err.to_string(),
        "service without address family (IPVS_SVC_ATTR_AF)"
    );
    let err = service_from_attrs(&[ServiceAttr::Af(2), ServiceAttr::Protocol(99)]).unwrap_err();
    assert_eq!(
        err,
        AttrError::Unknown {
            object: "service",
            attr: "unknown protocol",
            value: 99
        }
    );
    assert_eq!(err.to_string(), "service with unknown protocol 99");
    let err = destination_from_attrs(&[DestAttr::Port(1)], AddressFamily::Inet).unwrap_err();
    assert_eq!(
        err,
        AttrError::Missing {
            object: "destination",
            attr: "address"
        }
    );
    let short = [DestAttr::Addr(vec![10, 0]), DestAttr::Port(1)];
    let err = destination_from_attrs(&short, AddressFamily::Inet).unwrap_err();
    assert_eq!(
        err,
        AttrError::AddressLength {
            len: 2,
            family: AddressFamily::Inet
        }
    );
    let key = ServiceKey::tcp(ip("10.0.0.1"), 80);
    assert_eq!(
        service_from_attrs(&service_key_attrs(&key)).unwrap_err(),
        AttrError::NoScheduler { service: key }
    );
    let err = parse_body(1, &nla(1, &nla(4, &[1, 2, 3]))).unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
}

/// A whole netlink message with the given type, flags, seq and payload.
fn netlink(msg_type: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((payload.len() + 16) as u32).to_ne_bytes());
    out.extend_from_slice(&msg_type.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&4242u32.to_ne_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn encode_request_writes_both_headers() {
    let msg = IpvsMessage::new(Command::Flush, vec![]);
    let bytes = encode_request(msg, 0x25, NLM_F_ACK, 7);
    assert_eq!(bytes.len(), 20);
    assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 20);
    assert_eq!(u16::from_ne_bytes(bytes[4..6].try_into().unwrap()), 0x25);
    assert_eq!(
        u16::from_ne_bytes(bytes[6..8].try_into().unwrap()),
        NLM_F_REQUEST | NLM_F_ACK
    );
    assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
    assert_eq!(&bytes[16..18], &[17, FAMILY_VERSION]);
}

#[test]
fn multipart_dump_ack_and_errors_decode() {
    let svc_msg = |seq| {
        let mut payload = vec![Command::NewService.number(), 1, 0, 0];
        payload.extend(hand_made_service(0));
        netlink(0x25, NLM_F_MULTIPART, seq, &payload)
    };
    let done = netlink(NLMSG_DONE_TYPE, NLM_F_MULTIPART, 3, &0i32.to_ne_bytes());
    let datagram = [svc_msg(3), svc_msg(3), done].concat();
    let replies = decode_replies::<IpvsMessage>(&datagram).unwrap();
    assert_eq!(replies.len(), 3);
    assert!(matches!(&replies[0], (3, Reply::Message(m)) if m.cmd == Command::NewService));
    assert_eq!(replies[2], (3, Reply::Done));

    let err = |code: i32| {
        let mut payload = code.to_ne_bytes().to_vec();
        payload.extend(netlink(0x25, 0, 9, &[]));
        netlink(NLMSG_ERROR_TYPE, 0, 9, &payload)
    };
    let replies = decode_replies::<IpvsMessage>(&err(-3)).unwrap();
    assert_eq!(replies, vec![(9, Reply::Error(3))]);
    let replies = decode_replies::<IpvsMessage>(&err(0)).unwrap();
    assert_eq!(replies, vec![(9, Reply::Ack)]);
    // A dump that fails ends with NLMSG_DONE carrying the errno.
    let done_err = netlink(NLMSG_DONE_TYPE, NLM_F_MULTIPART, 4, &(-1i32).to_ne_bytes());
    let replies = decode_replies::<IpvsMessage>(&done_err).unwrap();
    assert_eq!(replies, vec![(4, Reply::Error(1))]);
}

const NLMSG_ERROR_TYPE: u16 = 2;
const NLMSG_DONE_TYPE: u16 = 3;

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Decoding must answer every input with Ok or Err: random bytes, and valid messages
/// truncated or with random bytes changed (which reach deeper into the parsers).
#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut valid = Vec::new();
    // One dump part: the genl header (command, version 1) then the attribute.
    let part = |cmd: Command, attr: Attr| {
        let msg = IpvsMessage::new(cmd, vec![attr]);
        let mut payload = vec![cmd.number(), 1, 0, 0];
        payload.extend(emit_attrs(&msg));
        netlink(0x25, NLM_F_MULTIPART, 1, &payload)
    };
    for svc in sample_services() {
        valid.push(part(
            Command::NewService,
            Attr::Service(service_reply_attrs(&svc)),
        ));
    }
    for dest in sample_destinations() {
        valid.push(part(Command::NewDest, Attr::Dest(dest_reply_attrs(&dest))));
    }
    let mut decoded_ok = 0;
    for round in 0..20_000 {
        let input: Vec<u8> = if round % 2 == 0 {
            let len = rng.below(200);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut bytes = valid[rng.below(valid.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            bytes.truncate(rng.below(bytes.len() + 1));
            bytes
        };
        if let Ok(replies) = decode_replies::<IpvsMessage>(&input) {
            decoded_ok += 1;
            for (_, reply) in replies {
                if let Reply::Message(msg) = reply {
                    for attr in &msg.attrs {
                        match attr {
                            Attr::Service(a) => drop(service_from_attrs(a)),
                            Attr::Dest(a) => drop(destination_from_attrs(a, AddressFamily::Inet6)),
                            _ => {}
                        }
                    }
                }
            }
        }
        for cmd in [1u8, 5, 14] {
            let _ = parse_body(cmd, &input);
        }
    }
    // Some mutated messages still decode: the mutation reached the attribute parsers.
    assert!(decoded_ok > 100, "only {decoded_ok} inputs decoded");
}

#[test]
fn a_timeout_sends_the_persistent_flag() {
    let mut svc = Service::new(ServiceKey::tcp(ip("10.0.0.1"), 80), "rr");
    let flags = |svc: &Service| {
        service_attrs(svc).into_iter().find_map(|a| match a {
            ServiceAttr::Flags { flags, mask } => Some((flags, mask)),
            _ => None,
        })
    };
    assert_eq!(flags(&svc), Some((0, u32::MAX)));
    svc.timeout = 300;
    svc.flags = ServiceFlags::ONEPACKET;
    assert_eq!(flags(&svc), Some((0x1 | 0x4, u32::MAX)));
}

#[test]
fn sync_daemon_round_trips_and_defaults_stay_unsent() {
    let mut daemon = SyncDaemon::new(DaemonState::Backup, "eth1", 9);
    assert_eq!(
        daemon_attrs(&daemon).len(),
        3,
        "only the required attributes"
    );
    daemon.sync_maxlen = Some(1400);
    daemon.mcast_group = Some(ip("ff02::81"));
    daemon.mcast_port = Some(8849);
    daemon.mcast_ttl = Some(2);
    let msg = IpvsMessage::new(
        Command::NewDaemon,
        vec![Attr::Daemon(daemon_attrs(&daemon))],
    );
    let parsed = reparse(&msg);
    assert_eq!(parsed, msg);
    let Attr::Daemon(attrs) = &parsed.attrs[0] else {
        panic!("{parsed:?}")
    };
    assert_eq!(daemon_from_attrs(attrs).unwrap(), daemon);
    let err = daemon_from_attrs(&[DaemonAttr::State(3)]).unwrap_err();
    assert_eq!(err.to_string(), "sync daemon with state 3");
}
