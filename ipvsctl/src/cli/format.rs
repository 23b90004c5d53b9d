//! ipvsadm's listings, byte for byte, as pure functions over the library's model
//! (services with their destinations, [`ServiceListing`]). Formats, column widths, truncations and the sort order follow ipvsadm 1.31 (`print_title`,
//! `print_service_entry`, `print_largenum`, `list_all`, libipvs' `ipvs_cmp_services` and
//! `ipvs_cmp_dests`).

use std::fmt::Write as _;
use std::net::IpAddr;

use ipvs::{
    AddressFamily, Destination, ForwardMethod, Info, Protocol, Service, ServiceFlags, ServiceKey,
    Stats, Timeouts, TunnelType,
};
use serde::Serialize;

use super::args::Format;
use super::names;

/// A service and its real servers, as listed (in kernel order until sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceListing {
    /// The service.
    pub service: Service,
    /// Its real servers.
    pub dests: Vec<Destination>,
}

/// The protocol ipvsadm prints and looks port names up with: fwmark services get TCP,
/// which is what ipvsadm gives them when it creates them.
fn listed_protocol(key: &ServiceKey) -> Protocol {
    match key {
        ServiceKey::Inet { protocol, .. } => *protocol,
        ServiceKey::Fwmark { .. } => Protocol::Tcp,
    }
}

/// The persistence engine, if one is named.
fn pe_name(s: &Service) -> Option<&str> {
    s.pe_name.as_deref().filter(|name| !name.is_empty())
}

/// The first line of `ipvsadm -L`.
pub fn header(info: &Info) -> String {
    let v = info.version;
    format!(
        "IP Virtual Server version {}.{}.{} (size={})\n",
        (v >> 16) & 0xff,
        (v >> 8) & 0xff,
        v & 0xff,
        info.conn_table_size
    )
}

/// `ipvsadm -L --timeout`.
pub fn timeout_line(t: &Timeouts) -> String {
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

fn protocol_option(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
        Protocol::Sctp => "--sctp-service",
    }
}

/// The "Forward" column; ipvsadm knows no name for Bypass.
fn fwd_name(forward: ForwardMethod) -> &'static str {
    match forward {
        ForwardMethod::Bypass => "(null)",
        other => other.name(),
    }
}

fn fwd_switch(forward: ForwardMethod) -> &'static str {
    match forward {
        ForwardMethod::Masquerade => "-m",
        ForwardMethod::Tunnel => "-i",
        ForwardMethod::Local | ForwardMethod::DirectRoute => "-g",
        ForwardMethod::Bypass => "(null)",
    }
}

const TUN_FLAGS_SHORT: [&str; 3] = ["-c", "+c", "r+c"];
const TUN_FLAGS_OPTS: [&str; 3] = ["--tun-nocsum", "--tun-csum", "--tun-remcsum"];

fn tun_flag_index(flags: u16) -> usize {
    usize::from(flags).min(2)
}

/// fwd_tun_info: the TunnelInfo column, None for "n/a".
fn tun_info(d: &Destination) -> Option<String> {
    if d.forward != ForwardMethod::Tunnel {
        return None;
    }
    let flags = TUN_FLAGS_SHORT[tun_flag_index(d.tunnel.flags)];
    let mut text = match d.tunnel.kind {
        TunnelType::Ipip => "ipip".to_string(),
        TunnelType::Gue => format!("gue:{}:{flags}", d.tunnel.port),
        TunnelType::Gre => format!("gre:{flags}"),
        TunnelType::Other(_) => return None,
    };
    names::truncate_bytes(&mut text, 15);
    Some(text)
}

/// print_sched_flags: the names of the scheduler flags set, comma separated (sh and mh
/// name their two flags and ignore the third).
fn sched_flags(s: &Service) -> String {
    let (one, two, three) = match s.scheduler.as_str() {
        "sh" => ("sh-fallback", "sh-port", None),
        "mh" => ("mh-fallback", "mh-port", None),
        _ => ("flag-1", "flag-2", Some("flag-3")),
    };
    let mut names: Vec<&str> = Vec::new();
    for (bit, name) in [
        (ServiceFlags::SCHED1, Some(one)),
        (ServiceFlags::SCHED2, Some(two)),
        (ServiceFlags::SCHED3, three),
    ] {
        if let (true, Some(name)) = (s.flags.contains(bit), name) {
            names.push(name);
        }
    }
    names.join(",")
}

fn has_sched_flags(s: &Service) -> bool {
    s.flags
        .intersects(ServiceFlags::SCHED1 | ServiceFlags::SCHED2 | ServiceFlags::SCHED3)
}

fn ipv4_mask_text(netmask: u32) -> String {
    std::net::Ipv4Addr::from(netmask).to_string()
}

/// The netmask as `-M`/`mask` shows it, when it is not the family's full mask.
fn narrowed_netmask(s: &Service) -> Option<String> {
    match s.key.family() {
        AddressFamily::Inet if s.netmask != 0xffff_ffff => Some(ipv4_mask_text(s.netmask)),
        AddressFamily::Inet6 if s.netmask != 128 => Some((s.netmask as i32).to_string()),
        _ => None,
    }
}

/// How the service is named: `-t 10.0.0.1:80` / `-f 7 -6` in rules, `TCP  10.0.0.1:80`
/// / `FWM  7 IPv6` in listings.
fn service_name(s: &Service, format: &Format) -> String {
    match s.key {
        ServiceKey::Fwmark { family, mark } => {
            // ipvsadm 1.31 prints the mark with %d.
            let mark = mark as i32;
            match (format.rule, family == AddressFamily::Inet6) {
                (true, true) => format!("-f {mark} -6"),
                (true, false) => format!("-f {mark}"),
                (false, true) => format!("FWM  {mark} IPv6"),
                (false, false) => format!("FWM  {mark}"),
            }
        }
        ServiceKey::Inet {
            protocol,
            addr,
            port,
        } => {
            let vname = names::addrport_to_anyname(addr, port, Some(protocol), format.numeric);
            if format.rule {
                format!("{} {vname}", protocol_option(protocol))
            } else {
                let mut name = format!("{:<4} {vname}", protocol.name());
                if addr.is_ipv4() {
                    names::truncate_bytes(&mut name, 33);
                }
                name
            }
        }
    }
}

/// The `-S` line of a service, without its newline.
fn service_rule(out: &mut String, s: &Service, svc_name: &str) {
    let _ = write!(out, "-A {svc_name} -s {}", s.scheduler);
    if s.flags.contains(ServiceFlags::PERSISTENT) {
        let _ = write!(out, " -p {}", s.timeout);
        if let Some(mask) = narrowed_netmask(s) {
            let _ = write!(out, " -M {mask}");
        }
    }
    if let Some(pe) = pe_name(s) {
        let _ = write!(out, " --pe {pe}");
    }
    if s.flags.contains(ServiceFlags::ONEPACKET) {
        out.push_str(" -o");
    }
    if has_sched_flags(s) {
        out.push_str(" -b ");
        out.push_str(&sched_flags(s));
    }
}

/// The `--stats` / `--rate` line of a service, without its newline.
fn service_counters(out: &mut String, s: &Service, svc_name: &str, format: &Format) {
    let _ = write!(out, "{svc_name:<33}");
    let st = &s.stats;
    let values = if format.stats {
        [st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes]
    } else {
        [st.cps, st.inpps, st.outpps, st.inbps, st.outbps]
    };
    for v in values {
        largenum(out, v, format.exact);
    }
}

/// The plain listing line of a service, without its newline.
fn service_summary(out: &mut String, s: &Service, svc_name: &str) {
    let _ = write!(out, "{svc_name} {}", s.scheduler);
    if has_sched_flags(s) {
        let _ = write!(out, " ({})", sched_flags(s));
    }
    if s.flags.contains(ServiceFlags::PERSISTENT) {
        let _ = write!(out, " persistent {}", s.timeout);
        if let Some(mask) = narrowed_netmask(s) {
            let _ = write!(out, " mask {mask}");
        }
        if let Some(pe) = pe_name(s) {
            let _ = write!(out, " pe {pe}");
        }
    }
    if s.flags.contains(ServiceFlags::ONEPACKET) {
        out.push_str(" ops");
    }
}

/// One real server's line in a listing (not rules).
fn dest_line(out: &mut String, d: &Destination, dname: &str, format: &Format) {
    let _ = if format.stats {
        let _ = write!(out, "  -> {dname:<28}");
        let st = &d.stats;
        for v in [st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes] {
            largenum(out, v, format.exact);
        }
        writeln!(out)
    } else if format.rate {
        let st = &d.stats;
        let _ = write!(
            out,
            "  -> {dname:<28} {:>8} {:>8} {:>8}",
            st.cps, st.inpps, st.outpps
        );
        largenum(out, st.inbps, format.exact);
        largenum(out, st.outbps, format.exact);
        writeln!(out)
    } else if format.thresholds {
        writeln!(
            out,
            "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
            d.upper_threshold, d.lower_threshold, d.active_conns, d.inactive_conns
        )
    } else if format.persistent_conn {
        writeln!(
            out,
            "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
            d.weight as u32, d.persistent_conns, d.active_conns, d.inactive_conns
        )
    } else if format.tun_info {
        let ti = tun_info(d).unwrap_or_else(|| "n/a".to_string());
        writeln!(
            out,
            "  -> {dname:<28} {:<7} {ti:<13} {:<6} {:<10} {:<10}",
            fwd_name(d.forward),
            d.weight,
            d.active_conns,
            d.inactive_conns
        )
    } else {
        writeln!(
            out,
            "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
            fwd_name(d.forward),
            d.weight,
            d.active_conns,
            d.inactive_conns
        )
    };
}

/// print_service_entry: one service and its real servers (sorted unless `nosort`).
pub fn service_entry(out: &mut String, listing: &ServiceListing, format: &Format) {
    let s = &listing.service;
    let svc_name = service_name(s, format);
    if format.rule {
        service_rule(out, s, &svc_name);
    } else if format.stats || format.rate {
        service_counters(out, s, &svc_name, format);
    } else {
        service_summary(out, s, &svc_name);
    }
    out.push('\n');

    let mut sorted;
    let dests: &[Destination] = if format.nosort {
        &listing.dests
    } else {
        sorted = listing.dests.clone();
        sort_dests(&mut sorted);
        &sorted
    };
    let protocol = Some(listed_protocol(&s.key));
    for d in dests {
        let mut dname = names::addrport_to_anyname(d.addr, d.port, protocol, format.numeric);
        if format.rule {
            dest_rule(out, &svc_name, &dname, d);
        } else {
            if d.addr.is_ipv4() {
                names::truncate_bytes(&mut dname, 28);
            }
            dest_line(out, d, &dname, format);
        }
    }
}

/// The `-S` line of one real server (print_tunnel_rule for tunnels).
fn dest_rule(out: &mut String, svc_name: &str, dname: &str, d: &Destination) {
    let fwd = fwd_switch(d.forward);
    let weight = d.weight;
    let _ = write!(out, "-a {svc_name} -r {dname} {fwd} -w {weight}");
    if d.forward == ForwardMethod::Tunnel {
        let flags = TUN_FLAGS_OPTS[tun_flag_index(d.tunnel.flags)];
        let port = d.tunnel.port;
        let _ = match d.tunnel.kind {
            TunnelType::Gre => write!(out, " --tun-type gre {flags}"),
            TunnelType::Gue => write!(out, " --tun-type gue --tun-port {port} {flags}"),
            TunnelType::Ipip => write!(out, " --tun-type ipip"),
            TunnelType::Other(_) => Ok(()),
        };
    }
    out.push('\n');
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

fn cmp_addrs(family: AddressFamily, a: &IpAddr, b: &IpAddr) -> i32 {
    let (wa, wb) = (addr_words(a), addr_words(b));
    if family == AddressFamily::Inet6 {
        wa.iter()
            .zip(wb.iter())
            .map(|(x, y)| diff(*x, *y))
            .find(|r| *r != 0)
            .unwrap_or(0)
    } else {
        diff(wa[0], wb[0])
    }
}

/// The fields libipvs compares services by, as its `ipvs_service_entry_t` holds them:
/// (fwmark, af, protocol, address, port); fwmark services have the unspecified address,
/// port 0 and TCP.
fn libipvs_service_fields(key: &ServiceKey) -> (u32, u16, u16, IpAddr, u16) {
    let protocol = listed_protocol(key).number();
    match *key {
        ServiceKey::Inet { addr, port, .. } => {
            (0, AddressFamily::of(&addr).number(), protocol, addr, port)
        }
        ServiceKey::Fwmark { family, mark } => {
            (mark, family.number(), protocol, family.unspecified(), 0)
        }
    }
}

/// libipvs' ipvs_cmp_services.
pub fn cmp_services(a: &Service, b: &Service) -> i32 {
    let (a_mark, a_af, a_proto, a_addr, a_port) = libipvs_service_fields(&a.key);
    let (b_mark, b_af, b_proto, b_addr, b_port) = libipvs_service_fields(&b.key);
    let r = diff(a_mark, b_mark);
    if r != 0 {
        return r;
    }
    let r = i32::from(a_af) - i32::from(b_af);
    if r != 0 {
        return r;
    }
    let r = i32::from(a_proto) - i32::from(b_proto);
    if r != 0 {
        return r;
    }
    let r = cmp_addrs(a.key.family(), &a_addr, &b_addr);
    if r != 0 {
        return r;
    }
    i32::from(a_port) - i32::from(b_port)
}

/// libipvs' ipvs_cmp_dests.
pub fn cmp_dests(a: &Destination, b: &Destination) -> i32 {
    let r = cmp_addrs(a.family(), &a.addr, &b.addr);
    if r != 0 {
        return r;
    }
    i32::from(a.port) - i32::from(b.port)
}

/// Sort services as `ipvsadm -L` does (unless --nosort).
pub fn sort_services(services: &mut [ServiceListing]) {
    glibc_msort(services, |a, b| cmp_services(&a.service, &b.service));
}

/// Sort real servers as ipvsadm does.
pub fn sort_dests(dests: &mut [Destination]) {
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
pub fn list_all(info: &Info, services: &mut [ServiceListing], format: &Format) -> String {
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
pub fn list_service(service: &ServiceListing, format: &Format) -> String {
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
    pub stats: &'a Stats,
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
    pub stats: &'a Stats,
}

/// The `--json` listing.
pub fn json(info: &Info, services: &mut [ServiceListing], format: &Format) -> String {
    if !format.nosort {
        sort_services(services);
    }
    let v = info.version;
    let table = JsonTable {
        version: format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff),
        size: info.conn_table_size,
        services: services
            .iter_mut()
            .map(|listing| {
                if !format.nosort {
                    sort_dests(&mut listing.dests);
                }
                json_service(listing)
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&table).unwrap_or_default();
    text.push('\n');
    text
}

fn json_service(listing: &ServiceListing) -> JsonService<'_> {
    let s = &listing.service;
    let persistent = s.flags.contains(ServiceFlags::PERSISTENT);
    let flags = sched_flags(s);
    let (protocol, address, port, fwmark) = match s.key {
        ServiceKey::Inet {
            protocol,
            addr,
            port,
        } => (protocol.name(), Some(addr), Some(port), None),
        ServiceKey::Fwmark { mark, .. } => ("FWM", None, None, Some(mark)),
    };
    let inet6 = s.key.family() == AddressFamily::Inet6;
    JsonService {
        protocol,
        family: if inet6 { "inet6" } else { "inet" },
        address,
        port,
        fwmark,
        scheduler: &s.scheduler,
        sched_flags: if flags.is_empty() {
            Vec::new()
        } else {
            flags.split(',').map(str::to_string).collect()
        },
        persistent: persistent.then_some(s.timeout),
        netmask: persistent.then(|| {
            if inet6 {
                s.netmask.to_string()
            } else {
                ipv4_mask_text(s.netmask)
            }
        }),
        one_packet: s.flags.contains(ServiceFlags::ONEPACKET),
        pe: pe_name(s),
        stats: &s.stats,
        destinations: listing.dests.iter().map(json_dest).collect(),
    }
}

fn json_dest(d: &Destination) -> JsonDest<'_> {
    JsonDest {
        address: d.addr,
        port: d.port,
        forward: fwd_name(d.forward),
        weight: d.weight as u32,
        u_threshold: d.upper_threshold,
        l_threshold: d.lower_threshold,
        active_conns: d.active_conns,
        inact_conns: d.inactive_conns,
        persist_conns: d.persistent_conns,
        stats: &d.stats,
    }
}

#[cfg(test)]
mod tests;
