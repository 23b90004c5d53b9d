//! Fixtures shared by the integration tests: the table `capture.rs` builds in the kernel
//! and `captured.rs` expects in the stored bytes, and the GUE destination several tests add.

// Each test file uses only some of these.
#![allow(dead_code)]

use std::net::IpAddr;

use ipvs::{AddressFamily, Destination, ForwardMethod, Service, ServiceFlags, ServiceKey, Tunnel};

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A GUE-tunnelled destination on `addr:80`, to UDP port 6080 with checksums.
pub fn gue_destination(addr: IpAddr) -> Destination {
    Destination::tunnelled(addr, 80, Tunnel::gue(6080, Tunnel::CSUM))
}

/// A masquerading destination with thresholds (upper, lower).
pub fn masq_destination(
    addr: IpAddr,
    port: u16,
    weight: i32,
    thresholds: (u32, u32),
) -> Destination {
    let mut d = Destination::new(addr, port);
    d.weight = weight;
    (d.upper_threshold, d.lower_threshold) = thresholds;
    d
}

/// A direct-routing destination.
pub fn route_destination(addr: IpAddr, port: u16, weight: i32) -> Destination {
    let mut d = Destination::new(addr, port);
    d.forward = ForwardMethod::DirectRoute;
    d.weight = weight;
    d
}

/// The service of the captured table that has destinations.
pub fn web_key() -> ServiceKey {
    ServiceKey::tcp(ip("10.0.0.1"), 80)
}

/// The captured table's services, as added.
pub fn captured_services() -> Vec<Service> {
    let web = Service::new(web_key(), "wlc");
    let mut tls = Service::new(ServiceKey::tcp(ip("10.0.0.1"), 443), "rr");
    tls.timeout = 600;
    tls.netmask = 0xffff_ff00;
    let mut dns = Service::new(ServiceKey::udp(ip("2001:db8::1"), 53), "rr");
    dns.timeout = 300;
    dns.netmask = 64;
    dns.flags = ServiceFlags::ONEPACKET;
    let mut fw = Service::new(ServiceKey::fwmark(AddressFamily::Inet, 7), "sh");
    fw.flags = ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT;
    vec![web, tls, dns, fw]
}

/// The destinations of [`web_key`] in the captured table, in address order.
pub fn captured_web_destinations() -> Vec<Destination> {
    vec![
        masq_destination(ip("10.0.1.1"), 8080, 3, (100, 10)),
        route_destination(ip("10.0.1.2"), 80, 0),
        gue_destination(ip("10.0.1.3")),
    ]
}
