//! The IPVS table as plain data: services, destinations (real servers), counters and the
//! global settings. These types carry no kernel encoding; `codec` turns them into netlink
//! attributes and back.

#![warn(missing_docs)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Transport protocol of a virtual service (`-t`, `-u`, `--sctp-service` in ipvsadm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// IPPROTO_TCP (6).
    Tcp,
    /// IPPROTO_UDP (17).
    Udp,
    /// IPPROTO_SCTP (132).
    Sctp,
}

impl Protocol {
    /// The IP protocol number the kernel uses.
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol for an IP protocol number, if IPVS supports it.
    pub fn from_number(number: u16) -> Option<Protocol> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The name ipvsadm prints in listings: `TCP`, `UDP`, `SCTP`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Address family of a service or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressFamily {
    /// AF_INET (2).
    Inet,
    /// AF_INET6 (10).
    Inet6,
}

impl AddressFamily {
    /// The AF_* number the kernel uses.
    pub fn number(self) -> u16 {
        match self {
            AddressFamily::Inet => 2,
            AddressFamily::Inet6 => 10,
        }
    }

    /// The family for an AF_* number, if it is IPv4 or IPv6.
    pub fn from_number(number: u16) -> Option<AddressFamily> {
        match number {
            2 => Some(AddressFamily::Inet),
            10 => Some(AddressFamily::Inet6),
            _ => None,
        }
    }

    /// The family of an address.
    pub fn of(addr: &IpAddr) -> AddressFamily {
        match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        }
    }

    /// The all-zero address of this family.
    pub fn unspecified(self) -> IpAddr {
        match self {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// What identifies a virtual service: protocol + address + port, or a firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum ServiceKey {
    /// A TCP/UDP/SCTP service on `addr:port` (port 0 with persistence = all ports).
    Inet {
        /// Transport protocol.
        protocol: Protocol,
        /// Virtual IP address.
        addr: IpAddr,
        /// Virtual port (host byte order here; the codec sends network order).
        port: u16,
    },
    /// A service matching packets by netfilter firewall mark (`-f`).
    Fwmark {
        /// Which address family's packets the mark applies to.
        family: AddressFamily,
        /// The firewall mark.
        mark: u32,
    },
}

impl ServiceKey {
    /// A TCP service on `addr:port`.
    pub fn tcp(addr: IpAddr, port: u16) -> ServiceKey {
        ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr,
            port,
        }
    }

    /// A UDP service on `addr:port`.
    pub fn udp(addr: IpAddr, port: u16) -> ServiceKey {
        ServiceKey::Inet {
            protocol: Protocol::Udp,
            addr,
            port,
        }
    }

    /// An SCTP service on `addr:port`.
    pub fn sctp(addr: IpAddr, port: u16) -> ServiceKey {
        ServiceKey::Inet {
            protocol: Protocol::Sctp,
            addr,
            port,
        }
    }

    /// A firewall-mark service.
    pub fn fwmark(family: AddressFamily, mark: u32) -> ServiceKey {
        ServiceKey::Fwmark { family, mark }
    }

    /// The address family of the service.
    pub fn family(&self) -> AddressFamily {
        match self {
            ServiceKey::Inet { addr, .. } => AddressFamily::of(addr),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

impl fmt::Display for ServiceKey {
    /// ipvsadm's numeric form: `TCP 10.0.0.1:80`, `UDP [2001:db8::1]:53`, `FWM 7`
    /// (`FWM 7 IPv6` for an IPv6 mark service).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Inet {
                protocol,
                addr: IpAddr::V4(a),
                port,
            } => write!(f, "{protocol} {a}:{port}"),
            ServiceKey::Inet {
                protocol,
                addr: IpAddr::V6(a),
                port,
            } => write!(f, "{protocol} [{a}]:{port}"),
            ServiceKey::Fwmark {
                family: AddressFamily::Inet,
                mark,
            } => write!(f, "FWM {mark}"),
            ServiceKey::Fwmark {
                family: AddressFamily::Inet6,
                mark,
            } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

/// Service flags (`IP_VS_SVC_F_*`), a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ServiceFlags(pub u32);

impl ServiceFlags {
    /// Persistent service (`-p`); sent by the client whenever the timeout is non-zero.
    pub const PERSISTENT: ServiceFlags = ServiceFlags(0x1);
    /// The service is in the kernel's hash table (read-only, always set in listings).
    pub const HASHED: ServiceFlags = ServiceFlags(0x2);
    /// One-packet scheduling (`-o`, `--ops`), UDP only.
    pub const ONEPACKET: ServiceFlags = ServiceFlags(0x4);
    /// Scheduler flag 1: `sh-fallback` (sh) / `mh-fallback` (mh).
    pub const SCHED1: ServiceFlags = ServiceFlags(0x8);
    /// Scheduler flag 2: `sh-port` (sh) / `mh-port` (mh).
    pub const SCHED2: ServiceFlags = ServiceFlags(0x10);
    /// Scheduler flag 3 (no scheduler uses it yet; ipvsadm calls it `flag-3`).
    pub const SCHED3: ServiceFlags = ServiceFlags(0x20);
    /// `sh` scheduler: fall back to another server when the chosen one is unavailable.
    pub const SH_FALLBACK: ServiceFlags = ServiceFlags::SCHED1;
    /// `sh` scheduler: hash the source port as well.
    pub const SH_PORT: ServiceFlags = ServiceFlags::SCHED2;
    /// `mh` scheduler: fall back to another server when the chosen one is unavailable.
    pub const MH_FALLBACK: ServiceFlags = ServiceFlags::SCHED1;
    /// `mh` scheduler: hash the source port as well.
    pub const MH_PORT: ServiceFlags = ServiceFlags::SCHED2;

    /// No flags.
    pub const fn empty() -> ServiceFlags {
        ServiceFlags(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: ServiceFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set.
    pub const fn intersects(self, other: ServiceFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// Set the bits of `other`.
    pub fn insert(&mut self, other: ServiceFlags) {
        self.0 |= other.0;
    }

    /// Clear the bits of `other`.
    pub fn remove(&mut self, other: ServiceFlags) {
        self.0 &= !other.0;
    }

    /// The scheduler flags as ipvsadm names them for `scheduler` (`sh-fallback`,
    /// `sh-port`, `mh-fallback`, `mh-port`, else `flag-1`, `flag-2`, `flag-3`).
    pub fn scheduler_flag_names(self, scheduler: &str) -> Vec<&'static str> {
        let mut names = Vec::new();
        let (one, two) = match scheduler {
            "sh" => ("sh-fallback", "sh-port"),
            "mh" => ("mh-fallback", "mh-port"),
            _ => ("flag-1", "flag-2"),
        };
        if self.contains(ServiceFlags::SCHED1) {
            names.push(one);
        }
        if self.contains(ServiceFlags::SCHED2) {
            names.push(two);
        }
        if self.contains(ServiceFlags::SCHED3) {
            names.push("flag-3");
        }
        names
    }
}

impl std::ops::BitOr for ServiceFlags {
    type Output = ServiceFlags;
    fn bitor(self, rhs: ServiceFlags) -> ServiceFlags {
        ServiceFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ServiceFlags {
    fn bitor_assign(&mut self, rhs: ServiceFlags) {
        self.0 |= rhs.0;
    }
}

/// Traffic counters of a service or destination. Read from `*_STATS64` when the kernel
/// sends it (Linux 4.1+), else widened from the 32-bit `*_STATS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub inpkts: u64,
    /// Outgoing packets.
    pub outpkts: u64,
    /// Incoming bytes.
    pub inbytes: u64,
    /// Outgoing bytes.
    pub outbytes: u64,
    /// Connections per second (rate estimator).
    pub cps: u64,
    /// Incoming packets per second.
    pub inpps: u64,
    /// Outgoing packets per second.
    pub outpps: u64,
    /// Incoming bytes per second.
    pub inbps: u64,
    /// Outgoing bytes per second.
    pub outbps: u64,
}

/// A virtual service.
///
/// When adding or editing, `key`, `scheduler`, `flags`, `timeout`, `netmask` and `pe_name`
/// are sent; `stats` is ignored. A non-zero `timeout` makes the service persistent: the
/// client sends [`ServiceFlags::PERSISTENT`] with it (as ipvsadm's `-p` does), whatever
/// `flags` says. The kernel adds [`ServiceFlags::HASHED`] in listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// What identifies the service.
    pub key: ServiceKey,
    /// Scheduler name (`rr`, `wrr`, `lc`, `wlc`, `sh`, `mh`, ...).
    pub scheduler: String,
    /// Flags (persistent, one-packet, scheduler flags).
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds; 0 = not persistent.
    pub timeout: u32,
    /// Persistence granularity. IPv4: the netmask as a number (`0xffff_ff00` for
    /// 255.255.255.0; `0xffff_ffff` by default). IPv6: the prefix length (128 by default).
    pub netmask: u32,
    /// Persistence engine name (`sip`), if any.
    pub pe_name: Option<String>,
    /// Counters (listings only).
    pub stats: Stats,
}

impl Service {
    /// A service with ipvsadm's defaults: no flags, not persistent, full netmask.
    pub fn new(key: ServiceKey, scheduler: impl Into<String>) -> Service {
        Service {
            key,
            scheduler: scheduler.into(),
            flags: ServiceFlags::empty(),
            timeout: 0,
            netmask: default_netmask(key.family()),
            pe_name: None,
            stats: Stats::default(),
        }
    }

    /// Whether the service is persistent.
    pub fn is_persistent(&self) -> bool {
        self.flags.contains(ServiceFlags::PERSISTENT) || self.timeout != 0
    }
}

/// The netmask value meaning "one client address" for a family: all ones for IPv4,
/// prefix length 128 for IPv6.
pub fn default_netmask(family: AddressFamily) -> u32 {
    match family {
        AddressFamily::Inet => 0xffff_ffff,
        AddressFamily::Inet6 => 128,
    }
}

/// How packets reach a destination (`IP_VS_CONN_F_FWD_MASK` values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMethod {
    /// NAT (`-m`, "Masq"), value 0.
    #[default]
    Masquerade,
    /// Local node ("Local"), value 1; the kernel picks it for local addresses.
    Local,
    /// IP-in-IP / GUE / GRE tunnel (`-i`, "Tunnel"), value 2.
    Tunnel,
    /// Direct routing (`-g`, "Route"), value 3.
    DirectRoute,
    /// Bypass ("Bypass"), value 4.
    Bypass,
}

impl ForwardMethod {
    /// The kernel's value.
    pub fn number(self) -> u32 {
        match self {
            ForwardMethod::Masquerade => 0,
            ForwardMethod::Local => 1,
            ForwardMethod::Tunnel => 2,
            ForwardMethod::DirectRoute => 3,
            ForwardMethod::Bypass => 4,
        }
    }

    /// The method for a kernel value (only the low 3 bits are the method).
    pub fn from_number(number: u32) -> Option<ForwardMethod> {
        match number & 0x7 {
            0 => Some(ForwardMethod::Masquerade),
            1 => Some(ForwardMethod::Local),
            2 => Some(ForwardMethod::Tunnel),
            3 => Some(ForwardMethod::DirectRoute),
            4 => Some(ForwardMethod::Bypass),
            _ => None,
        }
    }

    /// The word ipvsadm prints in the "Forward" column.
    pub fn name(self) -> &'static str {
        match self {
            ForwardMethod::Masquerade => "Masq",
            ForwardMethod::Local => "Local",
            ForwardMethod::Tunnel => "Tunnel",
            ForwardMethod::DirectRoute => "Route",
            ForwardMethod::Bypass => "Bypass",
        }
    }
}

/// Encapsulation used by [`ForwardMethod::Tunnel`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    /// IP-in-IP (0), the default.
    #[default]
    Ipip,
    /// Generic UDP encapsulation (1).
    Gue,
    /// GRE (2).
    Gre,
    /// A value this library does not know.
    Other(u8),
}

impl TunnelType {
    /// The kernel's value.
    pub fn number(self) -> u8 {
        match self {
            TunnelType::Ipip => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
            TunnelType::Other(n) => n,
        }
    }

    /// The type for a kernel value.
    pub fn from_number(number: u8) -> TunnelType {
        match number {
            0 => TunnelType::Ipip,
            1 => TunnelType::Gue,
            2 => TunnelType::Gre,
            n => TunnelType::Other(n),
        }
    }
}

/// Tunnel settings of a destination (only meaningful with [`ForwardMethod::Tunnel`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Tunnel {
    /// Encapsulation.
    pub kind: TunnelType,
    /// UDP port for GUE (host byte order here).
    pub port: u16,
    /// `IP_VS_TUNNEL_ENCAP_FLAG_*`: 0x1 checksum, 0x2 remote checksum offload.
    pub flags: u16,
}

impl Tunnel {
    /// Flag: checksum the outer header (`--tun-csum`).
    pub const CSUM: u16 = 0x1;
    /// Flag: remote checksum offload (`--tun-remcsum`).
    pub const REMCSUM: u16 = 0x2;

    /// Generic UDP encapsulation to UDP `port` with `flags` ([`Tunnel::CSUM`], ...).
    pub fn gue(port: u16, flags: u16) -> Tunnel {
        Tunnel {
            kind: TunnelType::Gue,
            port,
            flags,
        }
    }
}

/// A destination (real server) of a service.
///
/// When adding or editing, `addr`, `port`, `forward`, `weight`, the thresholds and
/// `tunnel` are sent; the connection counters and `stats` are listing-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// Real server address (its family may differ from the service's for tunnels).
    pub addr: IpAddr,
    /// Real server port (host byte order here).
    pub port: u16,
    /// Forwarding method.
    pub forward: ForwardMethod,
    /// Scheduling weight; 0 = quiesced (no new connections).
    pub weight: i32,
    /// Upper connection threshold; 0 = none.
    pub upper_threshold: u32,
    /// Lower connection threshold; 0 = none.
    pub lower_threshold: u32,
    /// Connections in ESTABLISHED (ipvsadm's ActiveConn).
    pub active_conns: u32,
    /// Other connections (ipvsadm's InActConn).
    pub inactive_conns: u32,
    /// Persistence templates.
    pub persistent_conns: u32,
    /// Counters.
    pub stats: Stats,
    /// Tunnel settings.
    pub tunnel: Tunnel,
}

impl Destination {
    /// A masquerading destination of weight 1 with no thresholds (ipvsadm's defaults).
    pub fn new(addr: IpAddr, port: u16) -> Destination {
        Destination {
            addr,
            port,
            forward: ForwardMethod::Masquerade,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            active_conns: 0,
            inactive_conns: 0,
            persistent_conns: 0,
            stats: Stats::default(),
            tunnel: Tunnel::default(),
        }
    }

    /// A tunnelled destination (ipvsadm's `-i`) of weight 1 with `tunnel` encapsulation.
    pub fn tunnelled(addr: IpAddr, port: u16, tunnel: Tunnel) -> Destination {
        Destination {
            forward: ForwardMethod::Tunnel,
            tunnel,
            ..Destination::new(addr, port)
        }
    }

    /// The destination's address family.
    pub fn family(&self) -> AddressFamily {
        AddressFamily::of(&self.addr)
    }
}

/// Global IPVS information (`ipvsadm` header line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Info {
    /// IPVS version, encoded as `major << 16 | minor << 8 | patch`.
    pub version: u32,
    /// Size of the connection hash table.
    pub conn_table_size: u32,
}

impl Info {
    /// The version as ipvsadm prints it: `1.2.1`.
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            (self.version >> 16) & 0xff,
            (self.version >> 8) & 0xff,
            self.version & 0xff
        )
    }
}

/// Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`). When setting, 0 means
/// "leave unchanged", as with ipvsadm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// Established TCP connections.
    pub tcp: u32,
    /// TCP connections after FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

/// Role of a connection synchronisation daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonState {
    /// Sends connection state (`IP_VS_STATE_MASTER`, 1).
    Master,
    /// Receives connection state (`IP_VS_STATE_BACKUP`, 2).
    Backup,
}

impl DaemonState {
    /// The kernel's value.
    pub fn number(self) -> u32 {
        match self {
            DaemonState::Master => 1,
            DaemonState::Backup => 2,
        }
    }

    /// The state for a kernel value.
    pub fn from_number(n: u32) -> Option<DaemonState> {
        match n {
            1 => Some(DaemonState::Master),
            2 => Some(DaemonState::Backup),
            _ => None,
        }
    }

    /// ipvsadm's word: `master`, `backup`.
    pub fn name(self) -> &'static str {
        match self {
            DaemonState::Master => "master",
            DaemonState::Backup => "backup",
        }
    }
}

/// A connection synchronisation daemon (`ipvsadm --start-daemon`, `-L --daemon`).
///
/// When starting one, `None` fields leave the kernel's defaults (group 224.0.0.81,
/// port 8848, TTL 1, the interface MTU); listings fill them all in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncDaemon {
    /// Master or backup.
    pub state: DaemonState,
    /// The multicast interface (`--mcast-interface`).
    pub mcast_interface: String,
    /// Sync id (`--syncid`), 0-255.
    pub syncid: u32,
    /// Largest sync message payload (`--sync-maxlen`).
    pub sync_maxlen: Option<u16>,
    /// Multicast group (`--mcast-group`).
    pub mcast_group: Option<IpAddr>,
    /// Multicast UDP port (`--mcast-port`).
    pub mcast_port: Option<u16>,
    /// Multicast TTL (`--mcast-ttl`).
    pub mcast_ttl: Option<u8>,
}

impl SyncDaemon {
    /// A daemon with the kernel's defaults.
    pub fn new(state: DaemonState, mcast_interface: impl Into<String>, syncid: u32) -> SyncDaemon {
        SyncDaemon {
            state,
            mcast_interface: mcast_interface.into(),
            syncid,
            sync_maxlen: None,
            mcast_group: None,
            mcast_port: None,
            mcast_ttl: None,
        }
    }
}
