//! Address and port names, the way ipvsadm turns them into text and back.
//!
//! ipvsadm uses gethostbyaddr/getservbyport for listings without `-n`. We answer those from
//! the same local databases glibc's `files` source reads (/etc/hosts, /etc/services) and
//! print numbers when nothing matches, which is exactly ipvsadm's output on hosts without
//! reverse DNS (the VM and most servers). Forward lookups (`-t web:http`) also go through
//! getaddrinfo via std, so DNS names work for input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::sync::OnceLock;

use ipvs::Protocol;

/// The protocol name /etc/services uses (none for a service not yet given).
fn services_proto(protocol: Option<Protocol>) -> Option<&'static str> {
    match protocol? {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::Sctp => Some("sctp"),
    }
}

/// One /etc/services entry: names (official first), port, protocol.
#[derive(Debug, Clone)]
struct ServiceEntry {
    names: Vec<String>,
    port: u16,
    proto: String,
}

/// One /etc/hosts entry: address and names (canonical first).
#[derive(Debug, Clone)]
struct HostEntry {
    addr: IpAddr,
    names: Vec<String>,
}

fn parse_services(text: &str) -> Vec<ServiceEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let (port, proto) = words.next()?.split_once('/')?;
            let port = port.parse().ok()?;
            let mut names = vec![name.to_string()];
            names.extend(words.map(str::to_string));
            Some(ServiceEntry {
                names,
                port,
                proto: proto.to_string(),
            })
        })
        .collect()
}

fn parse_hosts(text: &str) -> Vec<HostEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let addr = words.next()?.parse().ok()?;
            let names: Vec<String> = words.map(str::to_string).collect();
            (!names.is_empty()).then_some(HostEntry { addr, names })
        })
        .collect()
}

/// A local database parsed, or empty if it cannot be read (glibc then finds nothing).
fn read_db<T>(path: &str, parse: fn(&str) -> Vec<T>) -> Vec<T> {
    std::fs::read_to_string(path)
        .map(|text| parse(&text))
        .unwrap_or_default()
}

fn services() -> &'static [ServiceEntry] {
    static CELL: OnceLock<Vec<ServiceEntry>> = OnceLock::new();
    CELL.get_or_init(|| read_db("/etc/services", parse_services))
}

fn hosts() -> &'static [HostEntry] {
    static CELL: OnceLock<Vec<HostEntry>> = OnceLock::new();
    CELL.get_or_init(|| read_db("/etc/hosts", parse_hosts))
}

/// getservbyport: the service name of `port` for `proto`, if /etc/services has one.
pub fn port_to_service(port: u16, proto: Option<Protocol>) -> Option<&'static str> {
    let proto = services_proto(proto)?;
    services()
        .iter()
        .find(|s| s.port == port && s.proto == proto)
        .map(|s| s.names[0].as_str())
}

/// getservbyname: the port of service `name` for `proto`.
pub fn service_to_port(name: &str, proto: Option<Protocol>) -> Option<u16> {
    let proto = services_proto(proto)?;
    services()
        .iter()
        .find(|s| s.proto == proto && s.names.iter().any(|n| n == name))
        .map(|s| s.port)
}

/// gethostbyaddr: the canonical name of `addr`, if /etc/hosts has one.
pub fn addr_to_host(addr: IpAddr) -> Option<&'static str> {
    hosts()
        .iter()
        .find(|h| h.addr == addr)
        .map(|h| h.names[0].as_str())
}

/// gethostbyname: the first IPv4 address of `name` (/etc/hosts first, then the resolver).
pub fn host_to_addr(name: &str) -> Option<Ipv4Addr> {
    let from_hosts = hosts().iter().find_map(|h| match h.addr {
        IpAddr::V4(a) if h.names.iter().any(|n| n == name) => Some(a),
        _ => None,
    });
    from_hosts.or_else(|| {
        (name, 0u16)
            .to_socket_addrs()
            .ok()?
            .find_map(|sa| match sa.ip() {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
    })
}

/// inet_aton(3): `a.b.c.d`, `a.b.c`, `a.b`, `a`, each part decimal, octal (0) or hex (0x).
pub fn inet_aton(text: &str) -> Option<Ipv4Addr> {
    fn part(p: &str) -> Option<u64> {
        if p.is_empty() {
            return None;
        }
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or(p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (p, 10)
        };
        if digits.is_empty() {
            // "0x" alone is 0 for glibc.
            return (radix == 16).then_some(0);
        }
        u64::from_str_radix(digits, radix)
            .ok()
            .filter(|v| *v <= u64::from(u32::MAX))
    }
    let parts: Vec<u64> = text.split('.').map(part).collect::<Option<_>>()?;
    let value: u64 = match parts.as_slice() {
        [a] => *a,
        [a, b] if *a < 256 && *b < (1 << 24) => (a << 24) | b,
        [a, b, c] if *a < 256 && *b < 256 && *c < (1 << 16) => (a << 24) | (b << 16) | c,
        [a, b, c, d] if [a, b, c, d].iter().all(|v| **v < 256) => {
            (a << 24) | (b << 16) | (c << 8) | d
        }
        _ => return None,
    };
    Some(Ipv4Addr::from(u32::try_from(value).ok()?))
}

/// inet_pton(AF_INET6).
pub fn inet_pton6(text: &str) -> Option<Ipv6Addr> {
    text.parse().ok()
}

/// addrport_to_anyname: `addr:port`, IPv6 in brackets; names unless `numeric`.
/// Truncated to 59 bytes like ipvsadm's 60-byte snprintf buffer.
pub fn addrport_to_anyname(
    addr: IpAddr,
    port: u16,
    proto: Option<Protocol>,
    numeric: bool,
) -> String {
    let (open, close) = if addr.is_ipv4() { ("", "") } else { ("[", "]") };
    let mut text = if numeric {
        format!("{open}{}{close}:{port}", inet_ntop(addr))
    } else {
        let host = addr_to_host(addr).map_or_else(|| inet_ntop(addr), str::to_string);
        let port = port_to_service(port, proto).map_or_else(|| port.to_string(), str::to_string);
        format!("{open}{host}{close}:{port}")
    };
    truncate_bytes(&mut text, 59);
    text
}

/// inet_ntop(3) as glibc writes it. It differs from Rust's `Display` in one case: an
/// address whose first 96 bits are zero (and is not `::` or `::1`-like with a zero seventh
/// group) is written with an embedded IPv4 address, `::1.2.3.4`.
pub fn inet_ntop(addr: IpAddr) -> String {
    match addr {
        IpAddr::V6(a) => {
            let w = a.segments();
            if w[..6].iter().all(|x| *x == 0) && w[6] != 0 {
                let v4 =
                    Ipv4Addr::new((w[6] >> 8) as u8, w[6] as u8, (w[7] >> 8) as u8, w[7] as u8);
                format!("::{v4}")
            } else {
                a.to_string()
            }
        }
        IpAddr::V4(a) => a.to_string(),
    }
}

/// Cut `text` to at most `max` bytes (on a char boundary), like writing a C string into a
/// fixed buffer.
pub fn truncate_bytes(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests;
