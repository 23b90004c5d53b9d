//! ipvsadm's listings, byte for byte, as pure functions over plain table entries.
//!
//! The entries mirror what ipvsadm's print functions read (ipvs_service_entry_t and
//! ipvs_dest_entry_t); `cli::backend` builds them from the library's model. Formats,
//! column widths, truncations and the sort order follow ipvsadm 1.31 (`print_title`,
//! `print_service_entry`, `print_largenum`, `list_all`, libipvs' `ipvs_cmp_services` and
//! `ipvs_cmp_dests`).

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use super::args::{
    Format, AF_INET, AF_INET6, FWD_DROUTE, FWD_LOCALNODE, FWD_MASQ, FWD_TUNNEL, SVC_F_ONEPACKET,
    SVC_F_PERSISTENT, SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3, TUN_GRE, TUN_GUE, TUN_IPIP,
};
use super::names::{self, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// Traffic counters and rates of a service or real server: the library's own type.
pub type StatsEntry = ipvs::Stats;

/// A real server as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestEntry {
    /// AF_INET or AF_INET6.
    pub af: u16,
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// Forwarding method (FWD_*).
    pub fwd: u32,
    /// Weight.
    pub weight: u32,
    /// Upper threshold.
    pub u_threshold: u32,
    /// Lower threshold.
    pub l_threshold: u32,
    /// Active connections.
    pub active_conns: u32,
    /// Inactive connections.
    pub inact_conns: u32,
    /// Persistence templates.
    pub persist_conns: u32,
    /// Tunnel type (TUN_*).
    pub tun_type: u8,
    /// Tunnel port.
    pub tun_port: u16,
    /// Tunnel flags.
    pub tun_flags: u16,
    /// Counters.
    pub stats: StatsEntry,
}

/// A virtual service and its real servers as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEntry {
    /// AF_INET or AF_INET6.
    pub af: u16,
    /// IPPROTO_*.
    pub protocol: u16,
    /// Virtual address (unspecified for fwmark services).
    pub addr: IpAddr,
    /// Virtual port.
    pub port: u16,
    /// Firewall mark, 0 for address services.
    pub fwmark: u32,
    /// Scheduler.
    pub sched_name: String,
    /// IP_VS_SVC_F_* flags.
    pub flags: u32,
    /// Persistence timeout (seconds).
    pub timeout: u32,
    /// Persistence netmask: IPv4 mask as a big-endian u32, or IPv6 prefix length.
    pub netmask: u32,
    /// Persistence engine ("" for none).
    pub pe_name: String,
    /// Counters.
    pub stats: StatsEntry,
    /// Real servers, in kernel order until sorted.
    pub dests: Vec<DestEntry>,
}

/// IPVS version and connection table size (GET_INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InfoEntry {
    /// Version code, 0x010201 for 1.2.1.
    pub version: u32,
    /// Connection hash table size.
    pub size: u32,
}

/// The three connection timeouts (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeoutEntry {
    /// TCP established.
    pub tcp: u32,
    /// TCP after FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

/// The first line of `ipvsadm -L`.
pub fn header(info: &InfoEntry) -> String {
    let v = info.version;
    format!(
        "IP Virtual Server version {}.{}.{} (size={})\n",
        (v >> 16) & 0xff,
        (v >> 8) & 0xff,
        v & 0xff,
        info.size
    )
}

/// `ipvsadm -L --timeout`.
pub fn timeout_line(t: &TimeoutEntry) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcp_fin, t.udp
    )
}

/// print_title: the column headings for `format` (empty for rules).
pub fn title(format: &Format) -> String {
    const PROT: &str = "Prot LocalAddress:Port";
    const REMOTE: &str = "  -> RemoteAddress:Port";
    if format.stats {
        format!(
            "{PROT:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{REMOTE}\n",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        )
    } else if format.rate {
        format!(
            "{PROT:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{REMOTE}\n",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        )
    } else if format.thresholds {
        format!(
            "{PROT:<33} {:<10} {:<10} {:<10} {:<10}\n{REMOTE}\n",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        )
    } else if format.persistent_conn {
        format!(
            "{PROT:<33} {:<9} {:<11} {:<10} {:<10}\n{REMOTE}\n",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        )
    } else if format.tun_info {
        format!(
            "{PROT} Scheduler Flags\n{REMOTE}           Forward TunnelInfo    Weight ActiveConn InActConn\n"
        )
    } else if !format.rule {
        format!("{PROT} Scheduler Flags\n{REMOTE}           Forward Weight ActiveConn InActConn\n")
    } else {
        String::new()
    }
}

/// print_largenum: a 9-column number, abbreviated with K/M/G/T unless `exact`.
pub fn largenum(out: &mut String, i: u64, exact: bool) {
    let _ = if exact {
        let len = i.to_string().len();
        let width = if len <= 8 { 9 } else { len + 1 };
        write!(out, "{i:>width$}")
    } else if i < 100_000_000 {
        write!(out, "{i:>9}")
    } else if i < 1_000_000_000 {
        write!(out, "{:>8}K", i / 1000)
    } else if i < 100_000_000_000 {
        write!(out, "{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        write!(out, "{:>8}G", i / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", i / 1_000_000_000_000)
    };
}

fn protocol_name(proto: u16) -> &'static str {
    match proto {
        IPPROTO_TCP => "TCP",
        IPPROTO_UDP => "UDP",
        IPPROTO_SCTP => "SCTP",
        _ => "?",
    }
}

fn protocol_option(proto: u16) -> &'static str {
    match proto {
        IPPROTO_TCP => "-t",
        IPPROTO_UDP => "-u",
        IPPROTO_SCTP => "--sctp-service",
        _ => "--xxx-service",
    }
}

fn fwd_name(fwd: u32) -> &'static str {
    match fwd & 7 {
        FWD_MASQ => "Masq",
        FWD_LOCALNODE => "Local",
        FWD_TUNNEL => "Tunnel",
        FWD_DROUTE => "Route",
        _ => "(null)",
    }
}

fn fwd_switch(fwd: u32) -> &'static str {
    match fwd & 7 {
        FWD_MASQ => "-m",
        FWD_TUNNEL => "-i",
        FWD_LOCALNODE | FWD_DROUTE => "-g",
        _ => "(null)",
    }
}

const TUN_NAMES: [&str; 3] = ["ipip", "gue", "gre"];
const TUN_FLAGS_SHORT: [&str; 3] = ["-c", "+c", "r+c"];
const TUN_FLAGS_OPTS: [&str; 3] = ["--tun-nocsum", "--tun-csum", "--tun-remcsum"];

fn tun_flag_index(flags: u16) -> usize {
    usize::from(flags).min(2)
}

/// fwd_tun_info: the TunnelInfo column, None for "n/a".
fn tun_info(d: &DestEntry) -> Option<String> {
    if d.fwd & 7 != FWD_TUNNEL {
        return None;
    }
    let flags = TUN_FLAGS_SHORT[tun_flag_index(d.tun_flags)];
    let mut text = match d.tun_type {
        TUN_IPIP => "ipip".to_string(),
        TUN_GUE => format!("gue:{}:{flags}", d.tun_port),
        TUN_GRE => format!("gre:{flags}"),
        _ => return None,
    };
    names::truncate_bytes(&mut text, 15);
    Some(text)
}

/// print_sched_flags: the names of the scheduler flags set, comma separated.
fn sched_flags(s: &ServiceEntry) -> String {
    let mut names: Vec<&str> = Vec::new();
    match s.sched_name.as_str() {
        "sh" | "mh" => {
            let fallback = if s.sched_name == "sh" {
                "sh-fallback"
            } else {
                "mh-fallback"
            };
            let port = if s.sched_name == "sh" {
                "sh-port"
            } else {
                "mh-port"
            };
            if s.flags & SVC_F_SCHED1 != 0 {
                names.push(fallback);
            }
            if s.flags & SVC_F_SCHED2 != 0 {
                names.push(port);
            }
        }
        _ => {
            for (bit, name) in [
                (SVC_F_SCHED1, "flag-1"),
                (SVC_F_SCHED2, "flag-2"),
                (SVC_F_SCHED3, "flag-3"),
            ] {
                if s.flags & bit != 0 {
                    names.push(name);
                }
            }
        }
    }
    names.join(",")
}

fn ipv4_mask_text(netmask: u32) -> String {
    std::net::Ipv4Addr::from(netmask).to_string()
}

/// print_service_entry: one service and its real servers (sorted unless `nosort`).
pub fn service_entry(out: &mut String, se: &ServiceEntry, format: &Format) {
    let svc_name = if se.fwmark != 0 {
        match (format.rule, se.af == AF_INET6) {
            // ipvsadm 1.31 prints the mark with %d.
            (true, true) => format!("-f {} -6", se.fwmark as i32),
            (true, false) => format!("-f {}", se.fwmark as i32),
            (false, true) => format!("FWM  {} IPv6", se.fwmark as i32),
            (false, false) => format!("FWM  {}", se.fwmark as i32),
        }
    } else {
        let vname = names::addrport_to_anyname(se.addr, se.port, se.protocol, format.numeric);
        if format.rule {
            format!("{} {vname}", protocol_option(se.protocol))
        } else {
            let mut name = format!("{:<4} {vname}", protocol_name(se.protocol));
            if se.af != AF_INET6 {
                names::truncate_bytes(&mut name, 33);
            }
            name
        }
    };
    let has_sched_flags = se.flags & (SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3) != 0;

    if format.rule {
        let _ = write!(out, "-A {svc_name} -s {}", se.sched_name);
        if se.flags & SVC_F_PERSISTENT != 0 {
            let _ = write!(out, " -p {}", se.timeout);
            if se.af == AF_INET && se.netmask != 0xffff_ffff {
                let _ = write!(out, " -M {}", ipv4_mask_text(se.netmask));
            }
            if se.af == AF_INET6 && se.netmask != 128 {
                let _ = write!(out, " -M {}", se.netmask as i32);
            }
        }
        if !se.pe_name.is_empty() {
            let _ = write!(out, " --pe {}", se.pe_name);
        }
        if se.flags & SVC_F_ONEPACKET != 0 {
            out.push_str(" -o");
        }
        if has_sched_flags {
            out.push_str(" -b ");
            out.push_str(&sched_flags(se));
        }
    } else if format.stats || format.rate {
        let _ = write!(out, "{svc_name:<33}");
        let s = &se.stats;
        let values = if format.stats {
            [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes]
        } else {
            [s.cps, s.inpps, s.outpps, s.inbps, s.outbps]
        };
        for v in values {
            largenum(out, v, format.exact);
        }
    } else {
        let _ = write!(out, "{svc_name} {}", se.sched_name);
        if has_sched_flags {
            let _ = write!(out, " ({})", sched_flags(se));
        }
        if se.flags & SVC_F_PERSISTENT != 0 {
            let _ = write!(out, " persistent {}", se.timeout);
            if se.af == AF_INET && se.netmask != 0xffff_ffff {
                let _ = write!(out, " mask {}", ipv4_mask_text(se.netmask));
            }
            if se.af == AF_INET6 && se.netmask != 128 {
                let _ = write!(out, " mask {}", se.netmask as i32);
            }
            if !se.pe_name.is_empty() {
                let _ = write!(out, " pe {}", se.pe_name);
            }
        }
        if se.flags & SVC_F_ONEPACKET != 0 {
            out.push_str(" ops");
        }
    }
    out.push('\n');

    let mut sorted;
    let dests: &[DestEntry] = if format.nosort {
        &se.dests
    } else {
        sorted = se.dests.clone();
        sort_dests(&mut sorted);
        &sorted
    };
    for e in dests {
        let mut dname = names::addrport_to_anyname(e.addr, e.port, se.protocol, format.numeric);
        if !format.rule && e.af != AF_INET6 {
            names::truncate_bytes(&mut dname, 28);
        }
        let _ = if format.rule {
            tunnel_or_plain_rule(out, &svc_name, &dname, e);
            Ok(())
        } else if format.stats {
            let _ = write!(out, "  -> {dname:<28}");
            for v in [
                e.stats.conns,
                e.stats.inpkts,
                e.stats.outpkts,
                e.stats.inbytes,
            ] {
                largenum(out, v, format.exact);
            }
            largenum(out, e.stats.outbytes, format.exact);
            writeln!(out)
        } else if format.rate {
            let _ = write!(
                out,
                "  -> {dname:<28} {:>8} {:>8} {:>8}",
                e.stats.cps, e.stats.inpps, e.stats.outpps
            );
            largenum(out, e.stats.inbps, format.exact);
            largenum(out, e.stats.outbps, format.exact);
            writeln!(out)
        } else if format.thresholds {
            writeln!(
                out,
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                e.u_threshold, e.l_threshold, e.active_conns, e.inact_conns
            )
        } else if format.persistent_conn {
            writeln!(
                out,
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                e.weight, e.persist_conns, e.active_conns, e.inact_conns
            )
        } else if format.tun_info {
            let ti = tun_info(e).unwrap_or_else(|| "n/a".to_string());
            writeln!(
                out,
                "  -> {dname:<28} {:<7} {ti:<13} {:<6} {:<10} {:<10}",
                fwd_name(e.fwd),
                e.weight as i32,
                e.active_conns,
                e.inact_conns
            )
        } else {
            writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                fwd_name(e.fwd),
                e.weight as i32,
                e.active_conns,
                e.inact_conns
            )
        };
    }
}

/// The `-S` line of one real server (print_tunnel_rule for tunnels).
fn tunnel_or_plain_rule(out: &mut String, svc_name: &str, dname: &str, e: &DestEntry) {
    let fwd = fwd_switch(e.fwd);
    let weight = e.weight as i32;
    let _ = if e.fwd & 7 == FWD_TUNNEL {
        let flags = TUN_FLAGS_OPTS[tun_flag_index(e.tun_flags)];
        match e.tun_type {
            TUN_GRE => writeln!(
                out,
                "-a {svc_name} -r {dname} {fwd} -w {weight} --tun-type {} {flags}",
                TUN_NAMES[2]
            ),
            TUN_GUE => writeln!(
                out,
                "-a {svc_name} -r {dname} {fwd} -w {weight} --tun-type {} --tun-port {} {flags}",
                TUN_NAMES[1], e.tun_port
            ),
            TUN_IPIP => writeln!(
                out,
                "-a {svc_name} -r {dname} {fwd} -w {weight} --tun-type {}",
                TUN_NAMES[0]
            ),
            _ => writeln!(out, "-a {svc_name} -r {dname} {fwd} -w {weight}"),
        }
    } else {
        writeln!(out, "-a {svc_name} -r {dname} {fwd} -w {weight}")
    };
}

/// The address as libipvs holds it: a 16-byte union, IPv4 in the first four bytes; read as
/// four host-order words.
fn addr_words(addr: &IpAddr) -> [u32; 4] {
    let bytes: [u8; 16] = match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    };
    let w = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// `int r = ntohl(a) - ntohl(b)`: unsigned subtraction read as int, as libipvs does.
fn diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

fn cmp_addrs(af: u16, a: &IpAddr, b: &IpAddr) -> i32 {
    let (wa, wb) = (addr_words(a), addr_words(b));
    if af == AF_INET6 {
        wa.iter()
            .zip(wb.iter())
            .map(|(x, y)| diff(*x, *y))
            .find(|r| *r != 0)
            .unwrap_or(0)
    } else {
        diff(wa[0], wb[0])
    }
}

/// libipvs' ipvs_cmp_services.
pub fn cmp_services(a: &ServiceEntry, b: &ServiceEntry) -> i32 {
    let r = diff(a.fwmark, b.fwmark);
    if r != 0 {
        return r;
    }
    let r = i32::from(a.af) - i32::from(b.af);
    if r != 0 {
        return r;
    }
    let r = i32::from(a.protocol) - i32::from(b.protocol);
    if r != 0 {
        return r;
    }
    let r = cmp_addrs(a.af, &a.addr, &b.addr);
    if r != 0 {
        return r;
    }
    i32::from(a.port) - i32::from(b.port)
}

/// libipvs' ipvs_cmp_dests.
pub fn cmp_dests(a: &DestEntry, b: &DestEntry) -> i32 {
    let r = cmp_addrs(a.af, &a.addr, &b.addr);
    if r != 0 {
        return r;
    }
    i32::from(a.port) - i32::from(b.port)
}

/// Sort services as `ipvsadm -L` does (unless --nosort).
pub fn sort_services(services: &mut [ServiceEntry]) {
    glibc_msort(services, cmp_services);
}

/// Sort real servers as ipvsadm does.
pub fn sort_dests(dests: &mut [DestEntry]) {
    glibc_msort(dests, cmp_dests);
}

/// glibc's qsort (msort.c, the merge sort glibc 2.36 uses): split at n/2, sort both halves,
/// merge taking the left element while `cmp <= 0`. libipvs' comparators subtract unsigned
/// addresses into an int, which is not a consistent order when addresses are more than 2^31
/// apart; the result then depends on the exact algorithm, so we run the same one.
fn glibc_msort<T: Clone>(items: &mut [T], cmp: fn(&T, &T) -> i32) {
    let n = items.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    glibc_msort(&mut items[..n1], cmp);
    glibc_msort(&mut items[n1..], cmp);
    let (left, right) = items.split_at(n1);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if cmp(&left[i], &right[j]) <= 0 {
            merged.push(left[i].clone());
            i += 1;
        } else {
            merged.push(right[j].clone());
            j += 1;
        }
    }
    merged.extend_from_slice(&left[i..]);
    merged.extend_from_slice(&right[j..]);
    items.clone_from_slice(&merged);
}

/// list_all: the whole table (`-L` or `-S`).
pub fn list_all(info: &InfoEntry, services: &mut [ServiceEntry], format: &Format) -> String {
    let mut out = String::with_capacity(64 + services.len() * 512);
    if !format.rule {
        out.push_str(&header(info));
    }
    if !format.nosort {
        sort_services(services);
    }
    out.push_str(&title(format));
    for s in services.iter() {
        service_entry(&mut out, s, format);
    }
    out
}

/// list_service: one service (`-L -t addr:port`), without the version header.
pub fn list_service(service: &ServiceEntry, format: &Format) -> String {
    let mut out = title(format);
    service_entry(&mut out, service, format);
    out
}

/// A JSON document for programs: what `-L` shows, with every counter, sorted the same way.
#[derive(Debug, Serialize)]
pub struct JsonTable<'a> {
    /// "1.2.1".
    pub version: String,
    /// Connection table size.
    pub size: u32,
    /// Services with their real servers.
    pub services: Vec<JsonService<'a>>,
}

/// One service in the JSON listing.
#[derive(Debug, Serialize)]
pub struct JsonService<'a> {
    /// "TCP", "UDP", "SCTP" or "FWM".
    pub protocol: &'static str,
    /// "inet" or "inet6".
    pub family: &'static str,
    /// Address (absent for fwmark services).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Port (absent for fwmark services).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Firewall mark (absent for address services).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
    /// Scheduler.
    pub scheduler: &'a str,
    /// Scheduler flag names.
    pub sched_flags: Vec<String>,
    /// Persistence timeout in seconds, absent when not persistent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent: Option<u32>,
    /// Persistence netmask ("255.255.255.0" or prefix length), when persistent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
    /// One-packet scheduling.
    pub one_packet: bool,
    /// Persistence engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pe: Option<&'a str>,
    /// Counters.
    pub stats: &'a StatsEntry,
    /// Real servers.
    pub destinations: Vec<JsonDest<'a>>,
}

/// One real server in the JSON listing.
#[derive(Debug, Serialize)]
pub struct JsonDest<'a> {
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// "Masq", "Local", "Tunnel" or "Route".
    pub forward: &'static str,
    /// Weight.
    pub weight: u32,
    /// Upper threshold (0: none).
    pub u_threshold: u32,
    /// Lower threshold.
    pub l_threshold: u32,
    /// ActiveConn.
    pub active_conns: u32,
    /// InActConn.
    pub inact_conns: u32,
    /// PersistConn.
    pub persist_conns: u32,
    /// Counters.
    pub stats: &'a StatsEntry,
}

/// The `--json` listing.
pub fn json(info: &InfoEntry, services: &mut [ServiceEntry], format: &Format) -> String {
    if !format.nosort {
        sort_services(services);
    }
    let v = info.version;
    let table = JsonTable {
        version: format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff),
        size: info.size,
        services: services
            .iter_mut()
            .map(|s| {
                if !format.nosort {
                    sort_dests(&mut s.dests);
                }
                json_service(s)
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&table).unwrap_or_default();
    text.push('\n');
    text
}

fn json_service(s: &ServiceEntry) -> JsonService<'_> {
    let fwm = s.fwmark != 0;
    let persistent = s.flags & SVC_F_PERSISTENT != 0;
    let flags = sched_flags(s);
    JsonService {
        protocol: if fwm {
            "FWM"
        } else {
            protocol_name(s.protocol)
        },
        family: if s.af == AF_INET6 { "inet6" } else { "inet" },
        address: (!fwm).then_some(s.addr),
        port: (!fwm).then_some(s.port),
        fwmark: fwm.then_some(s.fwmark),
        scheduler: &s.sched_name,
        sched_flags: if flags.is_empty() {
            Vec::new()
        } else {
            flags.split(',').map(str::to_string).collect()
        },
        persistent: persistent.then_some(s.timeout),
        netmask: persistent.then(|| {
            if s.af == AF_INET6 {
                s.netmask.to_string()
            } else {
                ipv4_mask_text(s.netmask)
            }
        }),
        one_packet: s.flags & SVC_F_ONEPACKET != 0,
        pe: (!s.pe_name.is_empty()).then_some(s.pe_name.as_str()),
        stats: &s.stats,
        destinations: s
            .dests
            .iter()
            .map(|d| JsonDest {
                address: d.addr,
                port: d.port,
                forward: fwd_name(d.fwd),
                weight: d.weight,
                u_threshold: d.u_threshold,
                l_threshold: d.l_threshold,
                active_conns: d.active_conns,
                inact_conns: d.inact_conns,
                persist_conns: d.persist_conns,
                stats: &d.stats,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
