//! The IPVS generic netlink codec: message and attribute types, their wire encoding, and
//! the conversion to and from the [`crate::model`] types. No I/O here.
//!
//! Wire facts (include/uapi/linux/ip_vs.h, net/netfilter/ipvs/ip_vs_ctl.c):
//! - replies never set `NLA_F_NESTED` on nested attributes, requests from ipvsadm neither;
//!   we emit without it and accept both;
//! - ports are big-endian, addresses are 16 bytes (IPv4 in the first 4), the IPv4 netmask is
//!   big-endian, the IPv6 "netmask" is a prefix length in host order;
//! - connection counters are u32; `*_STATS` mixes u32 and u64, `*_STATS64` is all u64;
//! - `GET_INFO` is answered with a `SET_INFO` message whose top-level attributes are in the
//!   info attribute space, not the command attribute space.
//!
//! Attributes this module does not know are kept as [`DefaultNla`] (`Other`), so a parsed
//! message emits back to the same bytes and newer kernels never make parsing fail.

#![warn(missing_docs)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use std::fmt::Debug;

use netlink_packet_core::{
    emit_u16, emit_u16_be, emit_u32, emit_u64, parse_string, parse_u16, parse_u16_be, parse_u32,
    parse_u64, parse_u8, DecodeError, DefaultNla, Emitable, NetlinkBuffer, NetlinkMessage,
    NetlinkPayload, Nla, NlaBuffer, NlasIterator, ParseableParametrized, NLA_F_NESTED,
    NLM_F_REQUEST,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

use crate::error::AttrError;
use crate::model::{
    AddressFamily, DaemonState, Destination, ForwardMethod, Info, Protocol, Service, ServiceFlags,
    ServiceKey, Stats, SyncDaemon, Timeouts, TunnelType,
};

/// The generic netlink family name.
pub const FAMILY_NAME: &str = "IPVS";
/// The family version (`IPVS_GENL_VERSION`).
pub const FAMILY_VERSION: u8 = 1;

/// IPVS generic netlink commands (`IPVS_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 1: add a service.
    NewService,
    /// 2: modify a service.
    SetService,
    /// 3: delete a service.
    DelService,
    /// 4: get one service (doit) or all (dump).
    GetService,
    /// 5: add a destination.
    NewDest,
    /// 6: modify a destination.
    SetDest,
    /// 7: delete a destination.
    DelDest,
    /// 8: dump the destinations of a service.
    GetDest,
    /// 9: start a sync daemon.
    NewDaemon,
    /// 10: stop a sync daemon.
    DelDaemon,
    /// 11: list sync daemons.
    GetDaemon,
    /// 12: set timeouts.
    SetConfig,
    /// 13: get timeouts.
    GetConfig,
    /// 14: the reply to `GET_INFO`.
    SetInfo,
    /// 15: get version and table size.
    GetInfo,
    /// 16: zero counters.
    Zero,
    /// 17: delete every service.
    Flush,
    /// A command this library does not know.
    Other(u8),
}

impl Command {
    /// The kernel's number.
    pub fn number(self) -> u8 {
        match self {
            Command::NewService => 1,
            Command::SetService => 2,
            Command::DelService => 3,
            Command::GetService => 4,
            Command::NewDest => 5,
            Command::SetDest => 6,
            Command::DelDest => 7,
            Command::GetDest => 8,
            Command::NewDaemon => 9,
            Command::DelDaemon => 10,
            Command::GetDaemon => 11,
            Command::SetConfig => 12,
            Command::GetConfig => 13,
            Command::SetInfo => 14,
            Command::GetInfo => 15,
            Command::Zero => 16,
            Command::Flush => 17,
            Command::Other(n) => n,
        }
    }

    /// The command for a kernel number.
    pub fn from_number(n: u8) -> Command {
        match n {
            1 => Command::NewService,
            2 => Command::SetService,
            3 => Command::DelService,
            4 => Command::GetService,
            5 => Command::NewDest,
            6 => Command::SetDest,
            7 => Command::DelDest,
            8 => Command::GetDest,
            9 => Command::NewDaemon,
            10 => Command::DelDaemon,
            11 => Command::GetDaemon,
            12 => Command::SetConfig,
            13 => Command::GetConfig,
            14 => Command::SetInfo,
            15 => Command::GetInfo,
            16 => Command::Zero,
            17 => Command::Flush,
            n => Command::Other(n),
        }
    }

    /// The kernel's name without the prefix (`NEW_SERVICE`), for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Command::NewService => "NEW_SERVICE",
            Command::SetService => "SET_SERVICE",
            Command::DelService => "DEL_SERVICE",
            Command::GetService => "GET_SERVICE",
            Command::NewDest => "NEW_DEST",
            Command::SetDest => "SET_DEST",
            Command::DelDest => "DEL_DEST",
            Command::GetDest => "GET_DEST",
            Command::NewDaemon => "NEW_DAEMON",
            Command::DelDaemon => "DEL_DAEMON",
            Command::GetDaemon => "GET_DAEMON",
            Command::SetConfig => "SET_CONFIG",
            Command::GetConfig => "GET_CONFIG",
            Command::SetInfo => "SET_INFO",
            Command::GetInfo => "GET_INFO",
            Command::Zero => "ZERO",
            Command::Flush => "FLUSH",
            Command::Other(_) => "UNKNOWN_COMMAND",
        }
    }
}

// Attribute numbers, from include/uapi/linux/ip_vs.h.
const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;
const CMD_ATTR_DAEMON: u16 = 3;
const CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const CMD_ATTR_TIMEOUT_UDP: u16 = 6;

const INFO_ATTR_VERSION: u16 = 1;
const INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

const SVC_ATTR_AF: u16 = 1;
const SVC_ATTR_PROTOCOL: u16 = 2;
const SVC_ATTR_ADDR: u16 = 3;
const SVC_ATTR_PORT: u16 = 4;
const SVC_ATTR_FWMARK: u16 = 5;
const SVC_ATTR_SCHED_NAME: u16 = 6;
const SVC_ATTR_FLAGS: u16 = 7;
const SVC_ATTR_TIMEOUT: u16 = 8;
const SVC_ATTR_NETMASK: u16 = 9;
const SVC_ATTR_STATS: u16 = 10;
const SVC_ATTR_PE_NAME: u16 = 11;
const SVC_ATTR_STATS64: u16 = 12;

const DEST_ATTR_ADDR: u16 = 1;
const DEST_ATTR_PORT: u16 = 2;
const DEST_ATTR_FWD_METHOD: u16 = 3;
const DEST_ATTR_WEIGHT: u16 = 4;
const DEST_ATTR_U_THRESH: u16 = 5;
const DEST_ATTR_L_THRESH: u16 = 6;
const DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const DEST_ATTR_INACT_CONNS: u16 = 8;
const DEST_ATTR_PERSIST_CONNS: u16 = 9;
const DEST_ATTR_STATS: u16 = 10;
const DEST_ATTR_ADDR_FAMILY: u16 = 11;
const DEST_ATTR_STATS64: u16 = 12;
const DEST_ATTR_TUN_TYPE: u16 = 13;
const DEST_ATTR_TUN_PORT: u16 = 14;
const DEST_ATTR_TUN_FLAGS: u16 = 15;

const DAEMON_ATTR_STATE: u16 = 1;
const DAEMON_ATTR_MCAST_IFN: u16 = 2;
const DAEMON_ATTR_SYNC_ID: u16 = 3;
const DAEMON_ATTR_SYNC_MAXLEN: u16 = 4;
const DAEMON_ATTR_MCAST_GROUP: u16 = 5;
const DAEMON_ATTR_MCAST_GROUP6: u16 = 6;
const DAEMON_ATTR_MCAST_PORT: u16 = 7;
const DAEMON_ATTR_MCAST_TTL: u16 = 8;

const STATS_ATTR_CONNS: u16 = 1;
const STATS_ATTR_OUTBPS: u16 = 10;

/// Size of the kernel's address attribute (`union nf_inet_addr`).
const ADDR_LEN: usize = 16;

/// One IPVS generic netlink message (the part after the generic netlink header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command.
    pub cmd: Command,
    /// Top-level attributes.
    pub attrs: Vec<Attr>,
}

impl IpvsMessage {
    /// A message with the given command and attributes.
    pub fn new(cmd: Command, attrs: Vec<Attr>) -> IpvsMessage {
        IpvsMessage { cmd, attrs }
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        FAMILY_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.number()
    }

    fn version(&self) -> u8 {
        FAMILY_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = Command::from_number(header.cmd);
        let info_space = matches!(cmd, Command::SetInfo | Command::GetInfo);
        let attrs = parse_attrs(buf, |nla| Attr::parse(nla, info_space))?;
        Ok(IpvsMessage { cmd, attrs })
    }
}

/// A top-level attribute (`IPVS_CMD_ATTR_*`, or `IPVS_INFO_ATTR_*` in `SET_INFO`/`GET_INFO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    /// The service (nested).
    Service(Vec<ServiceAttr>),
    /// The destination (nested).
    Dest(Vec<DestAttr>),
    /// A sync daemon (nested).
    Daemon(Vec<DaemonAttr>),
    /// TCP established timeout, seconds.
    TimeoutTcp(u32),
    /// TCP FIN_WAIT timeout, seconds.
    TimeoutTcpFin(u32),
    /// UDP timeout, seconds.
    TimeoutUdp(u32),
    /// `IPVS_INFO_ATTR_VERSION`.
    InfoVersion(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE`.
    InfoConnTabSize(u32),
    /// Anything else, kept as is.
    Other(DefaultNla),
}

impl Attr {
    fn parse(nla: &NlaBuffer<&[u8]>, info_space: bool) -> Result<Attr, DecodeError> {
        let v = nla.value();
        Ok(match (info_space, nla.kind()) {
            (true, INFO_ATTR_VERSION) => Attr::InfoVersion(parse_u32(v).map_err(ctx("version"))?),
            (true, INFO_ATTR_CONN_TAB_SIZE) => {
                Attr::InfoConnTabSize(parse_u32(v).map_err(ctx("conn_tab_size"))?)
            }
            (false, CMD_ATTR_SERVICE) => {
                Attr::Service(parse_attrs(v, ServiceAttr::parse).map_err(ctx("service"))?)
            }
            (false, CMD_ATTR_DEST) => {
                Attr::Dest(parse_attrs(v, DestAttr::parse).map_err(ctx("dest"))?)
            }
            (false, CMD_ATTR_DAEMON) => {
                Attr::Daemon(parse_attrs(v, DaemonAttr::parse).map_err(ctx("daemon"))?)
            }
            (false, CMD_ATTR_TIMEOUT_TCP) => {
                Attr::TimeoutTcp(parse_u32(v).map_err(ctx("timeout_tcp"))?)
            }
            (false, CMD_ATTR_TIMEOUT_TCP_FIN) => {
                Attr::TimeoutTcpFin(parse_u32(v).map_err(ctx("timeout_tcp_fin"))?)
            }
            (false, CMD_ATTR_TIMEOUT_UDP) => {
                Attr::TimeoutUdp(parse_u32(v).map_err(ctx("timeout_udp"))?)
            }
            _ => Attr::Other(other(nla)),
        })
    }
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::Service(a) => a.as_slice().buffer_len(),
            Attr::Dest(a) => a.as_slice().buffer_len(),
            Attr::Daemon(a) => a.as_slice().buffer_len(),
            Attr::TimeoutTcp(_)
            | Attr::TimeoutTcpFin(_)
            | Attr::TimeoutUdp(_)
            | Attr::InfoVersion(_)
            | Attr::InfoConnTabSize(_) => 4,
            Attr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::Service(_) => CMD_ATTR_SERVICE,
            Attr::Dest(_) => CMD_ATTR_DEST,
            Attr::Daemon(_) => CMD_ATTR_DAEMON,
            Attr::TimeoutTcp(_) => CMD_ATTR_TIMEOUT_TCP,
            Attr::TimeoutTcpFin(_) => CMD_ATTR_TIMEOUT_TCP_FIN,
            Attr::TimeoutUdp(_) => CMD_ATTR_TIMEOUT_UDP,
            Attr::InfoVersion(_) => INFO_ATTR_VERSION,
            Attr::InfoConnTabSize(_) => INFO_ATTR_CONN_TAB_SIZE,
            Attr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Attr::Service(a) => a.as_slice().emit(buf),
            Attr::Dest(a) => a.as_slice().emit(buf),
            Attr::Daemon(a) => a.as_slice().emit(buf),
            Attr::TimeoutTcp(n)
            | Attr::TimeoutTcpFin(n)
            | Attr::TimeoutUdp(n)
            | Attr::InfoVersion(n)
            | Attr::InfoConnTabSize(n) => put_u32(buf, *n),
            Attr::Other(nla) => nla.emit_value(buf),
        }
    }
}

/// A service attribute (`IPVS_SVC_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAttr {
    /// Address family (AF_INET, AF_INET6).
    Af(u16),
    /// IP protocol number.
    Protocol(u16),
    /// Address, 16 bytes as sent (IPv4 in the first 4).
    Addr(Vec<u8>),
    /// Port, host byte order (big-endian on the wire).
    Port(u16),
    /// Firewall mark.
    Fwmark(u32),
    /// Scheduler name.
    SchedName(String),
    /// Flags and the mask of flags to change.
    Flags {
        /// Flag values.
        flags: u32,
        /// Which flags to apply.
        mask: u32,
    },
    /// Persistence timeout, seconds.
    Timeout(u32),
    /// Netmask, the 4 bytes as sent (see the module docs).
    Netmask([u8; 4]),
    /// 32-bit counters (nested).
    Stats(Vec<StatsAttr>),
    /// Persistence engine name.
    PeName(String),
    /// 64-bit counters (nested).
    Stats64(Vec<StatsAttr>),
    /// Anything else, kept as is.
    Other(DefaultNla),
}

impl ServiceAttr {
    fn parse(nla: &NlaBuffer<&[u8]>) -> Result<ServiceAttr, DecodeError> {
        let v = nla.value();
        Ok(match nla.kind() {
            SVC_ATTR_AF => ServiceAttr::Af(parse_u16(v).map_err(ctx("af"))?),
            SVC_ATTR_PROTOCOL => ServiceAttr::Protocol(parse_u16(v).map_err(ctx("protocol"))?),
            SVC_ATTR_ADDR => ServiceAttr::Addr(parse_addr_bytes(v).map_err(ctx("addr"))?),
            SVC_ATTR_PORT => ServiceAttr::Port(parse_u16_be(v).map_err(ctx("port"))?),
            SVC_ATTR_FWMARK => ServiceAttr::Fwmark(parse_u32(v).map_err(ctx("fwmark"))?),
            SVC_ATTR_SCHED_NAME => {
                ServiceAttr::SchedName(parse_string(v).map_err(ctx("sched_name"))?)
            }
            SVC_ATTR_FLAGS => {
                if v.len() != 8 {
                    return Err(format!("flags: expected 8 bytes, got {}", v.len()).into());
                }
                ServiceAttr::Flags {
                    flags: parse_u32(&v[..4])?,
                    mask: parse_u32(&v[4..])?,
                }
            }
            SVC_ATTR_TIMEOUT => ServiceAttr::Timeout(parse_u32(v).map_err(ctx("timeout"))?),
            SVC_ATTR_NETMASK => ServiceAttr::Netmask(
                v.try_into()
                    .map_err(|_| format!("netmask: expected 4 bytes, got {}", v.len()))?,
            ),
            SVC_ATTR_STATS => {
                ServiceAttr::Stats(parse_attrs(v, StatsAttr::parse).map_err(ctx("stats"))?)
            }
            SVC_ATTR_PE_NAME => ServiceAttr::PeName(parse_string(v).map_err(ctx("pe_name"))?),
            SVC_ATTR_STATS64 => {
                ServiceAttr::Stats64(parse_attrs(v, StatsAttr::parse).map_err(ctx("stats64"))?)
            }
            _ => ServiceAttr::Other(other(nla)),
        })
    }
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        match self {
            ServiceAttr::Af(_) | ServiceAttr::Protocol(_) | ServiceAttr::Port(_) => 2,
            ServiceAttr::Fwmark(_) | ServiceAttr::Timeout(_) | ServiceAttr::Netmask(_) => 4,
            ServiceAttr::Addr(a) => a.len(),
            ServiceAttr::SchedName(s) | ServiceAttr::PeName(s) => s.len() + 1,
            ServiceAttr::Flags { .. } => 8,
            ServiceAttr::Stats(s) | ServiceAttr::Stats64(s) => s.as_slice().buffer_len(),
            ServiceAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            ServiceAttr::Af(_) => SVC_ATTR_AF,
            ServiceAttr::Protocol(_) => SVC_ATTR_PROTOCOL,
            ServiceAttr::Addr(_) => SVC_ATTR_ADDR,
            ServiceAttr::Port(_) => SVC_ATTR_PORT,
            ServiceAttr::Fwmark(_) => SVC_ATTR_FWMARK,
            ServiceAttr::SchedName(_) => SVC_ATTR_SCHED_NAME,
            ServiceAttr::Flags { .. } => SVC_ATTR_FLAGS,
            ServiceAttr::Timeout(_) => SVC_ATTR_TIMEOUT,
            ServiceAttr::Netmask(_) => SVC_ATTR_NETMASK,
            ServiceAttr::Stats(_) => SVC_ATTR_STATS,
            ServiceAttr::PeName(_) => SVC_ATTR_PE_NAME,
            ServiceAttr::Stats64(_) => SVC_ATTR_STATS64,
            ServiceAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            ServiceAttr::Af(n) | ServiceAttr::Protocol(n) => put_u16(buf, *n),
            ServiceAttr::Port(p) => put_u16_be(buf, *p),
            ServiceAttr::Fwmark(n) | ServiceAttr::Timeout(n) => put_u32(buf, *n),
            ServiceAttr::Netmask(b) => buf.copy_from_slice(b),
            ServiceAttr::Addr(a) => buf.copy_from_slice(a),
            ServiceAttr::SchedName(s) | ServiceAttr::PeName(s) => put_string(buf, s),
            ServiceAttr::Flags { flags, mask } => {
                put_u32(&mut buf[..4], *flags);
                put_u32(&mut buf[4..], *mask);
            }
            ServiceAttr::Stats(s) | ServiceAttr::Stats64(s) => s.as_slice().emit(buf),
            ServiceAttr::Other(nla) => nla.emit_value(buf),
        }
    }
}

/// A destination attribute (`IPVS_DEST_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestAttr {
    /// Address, 16 bytes as sent.
    Addr(Vec<u8>),
    /// Port, host byte order (big-endian on the wire).
    Port(u16),
    /// Forwarding method (`IP_VS_CONN_F_*`).
    FwdMethod(u32),
    /// Weight.
    Weight(u32),
    /// Upper threshold.
    UpperThreshold(u32),
    /// Lower threshold.
    LowerThreshold(u32),
    /// Active connections.
    ActiveConns(u32),
    /// Inactive connections.
    InactiveConns(u32),
    /// Persistence templates.
    PersistConns(u32),
    /// 32-bit counters (nested).
    Stats(Vec<StatsAttr>),
    /// Address family of the destination.
    AddrFamily(u16),
    /// 64-bit counters (nested).
    Stats64(Vec<StatsAttr>),
    /// Tunnel type.
    TunType(u8),
    /// Tunnel port, host byte order (big-endian on the wire).
    TunPort(u16),
    /// Tunnel flags.
    TunFlags(u16),
    /// Anything else, kept as is.
    Other(DefaultNla),
}

impl DestAttr {
    fn parse(nla: &NlaBuffer<&[u8]>) -> Result<DestAttr, DecodeError> {
        let v = nla.value();
        Ok(match nla.kind() {
            DEST_ATTR_ADDR => DestAttr::Addr(parse_addr_bytes(v).map_err(ctx("addr"))?),
            DEST_ATTR_PORT => DestAttr::Port(parse_u16_be(v).map_err(ctx("port"))?),
            DEST_ATTR_FWD_METHOD => DestAttr::FwdMethod(parse_u32(v).map_err(ctx("fwd_method"))?),
            DEST_ATTR_WEIGHT => DestAttr::Weight(parse_u32(v).map_err(ctx("weight"))?),
            DEST_ATTR_U_THRESH => DestAttr::UpperThreshold(parse_u32(v).map_err(ctx("u_thresh"))?),
            DEST_ATTR_L_THRESH => DestAttr::LowerThreshold(parse_u32(v).map_err(ctx("l_thresh"))?),
            DEST_ATTR_ACTIVE_CONNS => {
                DestAttr::ActiveConns(parse_u32(v).map_err(ctx("active_conns"))?)
            }
            DEST_ATTR_INACT_CONNS => {
                DestAttr::InactiveConns(parse_u32(v).map_err(ctx("inact_conns"))?)
            }
            DEST_ATTR_PERSIST_CONNS => {
                DestAttr::PersistConns(parse_u32(v).map_err(ctx("persist_conns"))?)
            }
            DEST_ATTR_STATS => {
                DestAttr::Stats(parse_attrs(v, StatsAttr::parse).map_err(ctx("stats"))?)
            }
            DEST_ATTR_ADDR_FAMILY => {
                DestAttr::AddrFamily(parse_u16(v).map_err(ctx("addr_family"))?)
            }
            DEST_ATTR_STATS64 => {
                DestAttr::Stats64(parse_attrs(v, StatsAttr::parse).map_err(ctx("stats64"))?)
            }
            DEST_ATTR_TUN_TYPE => DestAttr::TunType(parse_u8(v).map_err(ctx("tun_type"))?),
            DEST_ATTR_TUN_PORT => DestAttr::TunPort(parse_u16_be(v).map_err(ctx("tun_port"))?),
            DEST_ATTR_TUN_FLAGS => DestAttr::TunFlags(parse_u16(v).map_err(ctx("tun_flags"))?),
            _ => DestAttr::Other(other(nla)),
        })
    }
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        match self {
            DestAttr::Addr(a) => a.len(),
            DestAttr::Port(_)
            | DestAttr::AddrFamily(_)
            | DestAttr::TunPort(_)
            | DestAttr::TunFlags(_) => 2,
            DestAttr::TunType(_) => 1,
            DestAttr::FwdMethod(_)
            | DestAttr::Weight(_)
            | DestAttr::UpperThreshold(_)
            | DestAttr::LowerThreshold(_)
            | DestAttr::ActiveConns(_)
            | DestAttr::InactiveConns(_)
            | DestAttr::PersistConns(_) => 4,
            DestAttr::Stats(s) | DestAttr::Stats64(s) => s.as_slice().buffer_len(),
            DestAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DestAttr::Addr(_) => DEST_ATTR_ADDR,
            DestAttr::Port(_) => DEST_ATTR_PORT,
            DestAttr::FwdMethod(_) => DEST_ATTR_FWD_METHOD,
            DestAttr::Weight(_) => DEST_ATTR_WEIGHT,
            DestAttr::UpperThreshold(_) => DEST_ATTR_U_THRESH,
            DestAttr::LowerThreshold(_) => DEST_ATTR_L_THRESH,
            DestAttr::ActiveConns(_) => DEST_ATTR_ACTIVE_CONNS,
            DestAttr::InactiveConns(_) => DEST_ATTR_INACT_CONNS,
            DestAttr::PersistConns(_) => DEST_ATTR_PERSIST_CONNS,
            DestAttr::Stats(_) => DEST_ATTR_STATS,
            DestAttr::AddrFamily(_) => DEST_ATTR_ADDR_FAMILY,
            DestAttr::Stats64(_) => DEST_ATTR_STATS64,
            DestAttr::TunType(_) => DEST_ATTR_TUN_TYPE,
            DestAttr::TunPort(_) => DEST_ATTR_TUN_PORT,
            DestAttr::TunFlags(_) => DEST_ATTR_TUN_FLAGS,
            DestAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            DestAttr::Addr(a) => buf.copy_from_slice(a),
            DestAttr::Port(p) | DestAttr::TunPort(p) => put_u16_be(buf, *p),
            DestAttr::AddrFamily(n) | DestAttr::TunFlags(n) => put_u16(buf, *n),
            DestAttr::TunType(n) => buf[0] = *n,
            DestAttr::FwdMethod(n)
            | DestAttr::Weight(n)
            | DestAttr::UpperThreshold(n)
            | DestAttr::LowerThreshold(n)
            | DestAttr::ActiveConns(n)
            | DestAttr::InactiveConns(n)
            | DestAttr::PersistConns(n) => put_u32(buf, *n),
            DestAttr::Stats(s) | DestAttr::Stats64(s) => s.as_slice().emit(buf),
            DestAttr::Other(nla) => nla.emit_value(buf),
        }
    }
}

/// A sync daemon attribute (`IPVS_DAEMON_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAttr {
    /// `IP_VS_STATE_MASTER` (1) or `IP_VS_STATE_BACKUP` (2).
    State(u32),
    /// Multicast interface name.
    McastIfn(String),
    /// Sync id.
    SyncId(u32),
    /// Largest sync message.
    SyncMaxlen(u16),
    /// IPv4 multicast group, network order bytes.
    McastGroup([u8; 4]),
    /// IPv6 multicast group.
    McastGroup6([u8; 16]),
    /// Multicast port (host order on the wire, unlike service ports).
    McastPort(u16),
    /// Multicast TTL.
    McastTtl(u8),
    /// Anything else, kept as is.
    Other(DefaultNla),
}

impl DaemonAttr {
    fn parse(nla: &NlaBuffer<&[u8]>) -> Result<DaemonAttr, DecodeError> {
        let v = nla.value();
        Ok(match nla.kind() {
            DAEMON_ATTR_STATE => DaemonAttr::State(parse_u32(v).map_err(ctx("state"))?),
            DAEMON_ATTR_MCAST_IFN => {
                DaemonAttr::McastIfn(parse_string(v).map_err(ctx("mcast_ifn"))?)
            }
            DAEMON_ATTR_SYNC_ID => DaemonAttr::SyncId(parse_u32(v).map_err(ctx("sync_id"))?),
            DAEMON_ATTR_SYNC_MAXLEN => {
                DaemonAttr::SyncMaxlen(parse_u16(v).map_err(ctx("sync_maxlen"))?)
            }
            DAEMON_ATTR_MCAST_GROUP => DaemonAttr::McastGroup(
                v.try_into()
                    .map_err(|_| format!("mcast_group: expected 4 bytes, got {}", v.len()))?,
            ),
            DAEMON_ATTR_MCAST_GROUP6 => DaemonAttr::McastGroup6(
                v.try_into()
                    .map_err(|_| format!("mcast_group6: expected 16 bytes, got {}", v.len()))?,
            ),
            DAEMON_ATTR_MCAST_PORT => {
                DaemonAttr::McastPort(parse_u16(v).map_err(ctx("mcast_port"))?)
            }
            DAEMON_ATTR_MCAST_TTL => DaemonAttr::McastTtl(parse_u8(v).map_err(ctx("mcast_ttl"))?),
            _ => DaemonAttr::Other(other(nla)),
        })
    }
}

impl Nla for DaemonAttr {
    fn value_len(&self) -> usize {
        match self {
            DaemonAttr::State(_) | DaemonAttr::SyncId(_) => 4,
            DaemonAttr::McastIfn(s) => s.len() + 1,
            DaemonAttr::SyncMaxlen(_) | DaemonAttr::McastPort(_) => 2,
            DaemonAttr::McastGroup(_) => 4,
            DaemonAttr::McastGroup6(_) => 16,
            DaemonAttr::McastTtl(_) => 1,
            DaemonAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DaemonAttr::State(_) => DAEMON_ATTR_STATE,
            DaemonAttr::McastIfn(_) => DAEMON_ATTR_MCAST_IFN,
            DaemonAttr::SyncId(_) => DAEMON_ATTR_SYNC_ID,
            DaemonAttr::SyncMaxlen(_) => DAEMON_ATTR_SYNC_MAXLEN,
            DaemonAttr::McastGroup(_) => DAEMON_ATTR_MCAST_GROUP,
            DaemonAttr::McastGroup6(_) => DAEMON_ATTR_MCAST_GROUP6,
            DaemonAttr::McastPort(_) => DAEMON_ATTR_MCAST_PORT,
            DaemonAttr::McastTtl(_) => DAEMON_ATTR_MCAST_TTL,
            DaemonAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            DaemonAttr::State(n) | DaemonAttr::SyncId(n) => put_u32(buf, *n),
            DaemonAttr::McastIfn(s) => put_string(buf, s),
            DaemonAttr::SyncMaxlen(n) | DaemonAttr::McastPort(n) => put_u16(buf, *n),
            DaemonAttr::McastGroup(b) => buf.copy_from_slice(b),
            DaemonAttr::McastGroup6(b) => buf.copy_from_slice(b),
            DaemonAttr::McastTtl(n) => buf[0] = *n,
            DaemonAttr::Other(nla) => nla.emit_value(buf),
        }
    }
}

/// A counter attribute (`IPVS_STATS_ATTR_*`), kept with its width so it emits back
/// unchanged: `*_STATS` has u32 packet counters and u64 byte counters, `*_STATS64` only u64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsAttr {
    /// A known counter (kinds 1 `CONNS` to 10 `OUTBPS`).
    Counter {
        /// The attribute number.
        kind: u16,
        /// The value.
        value: u64,
        /// Whether it was sent as u64 (else u32).
        wide: bool,
    },
    /// Anything else (`PAD`, newer counters), kept as is.
    Other(DefaultNla),
}

impl StatsAttr {
    fn parse(nla: &NlaBuffer<&[u8]>) -> Result<StatsAttr, DecodeError> {
        let v = nla.value();
        let kind = nla.kind();
        if !(STATS_ATTR_CONNS..=STATS_ATTR_OUTBPS).contains(&kind) {
            return Ok(StatsAttr::Other(other(nla)));
        }
        Ok(match v.len() {
            4 => StatsAttr::Counter {
                kind,
                value: u64::from(parse_u32(v)?),
                wide: false,
            },
            8 => StatsAttr::Counter {
                kind,
                value: parse_u64(v)?,
                wide: true,
            },
            n => return Err(format!("counter {kind}: expected 4 or 8 bytes, got {n}").into()),
        })
    }
}

impl Nla for StatsAttr {
    fn value_len(&self) -> usize {
        match self {
            StatsAttr::Counter { wide: true, .. } => 8,
            StatsAttr::Counter { wide: false, .. } => 4,
            StatsAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            StatsAttr::Counter { kind, .. } => *kind,
            StatsAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            StatsAttr::Counter {
                value, wide: true, ..
            } => {
                emit_u64(buf, *value).expect("8-byte buffer");
            }
            StatsAttr::Counter {
                value, wide: false, ..
            } => put_u32(buf, *value as u32),
            StatsAttr::Other(nla) => nla.emit_value(buf),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing helpers.

/// Parse a run of attributes with `parse_one`, failing on truncation or garbage.
fn parse_attrs<T>(
    buf: &[u8],
    parse_one: impl Fn(&NlaBuffer<&[u8]>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    NlasIterator::new(buf)
        .map(|nla| nla.and_then(|nla| parse_one(&nla)))
        .collect()
}

/// Keep an unknown attribute, with its flag bits, so it emits back unchanged.
fn other(nla: &NlaBuffer<&[u8]>) -> DefaultNla {
    let mut kind = nla.kind();
    if nla.nested_flag() {
        kind |= NLA_F_NESTED;
    }
    DefaultNla::new(kind, nla.value().to_vec())
}

/// Add the attribute name to a decode error.
fn ctx(name: &'static str) -> impl Fn(DecodeError) -> DecodeError {
    move |e| format!("{name}: {e}").into()
}

fn parse_addr_bytes(v: &[u8]) -> Result<Vec<u8>, DecodeError> {
    // The kernel always sends 16 bytes; 4 is accepted for IPv4 from other senders.
    if v.len() == ADDR_LEN || v.len() == 4 {
        Ok(v.to_vec())
    } else {
        Err(format!("expected 16 bytes, got {}", v.len()).into())
    }
}

fn put_u16(buf: &mut [u8], n: u16) {
    emit_u16(buf, n).expect("2-byte buffer");
}

fn put_u16_be(buf: &mut [u8], n: u16) {
    emit_u16_be(buf, n).expect("2-byte buffer");
}

fn put_u32(buf: &mut [u8], n: u32) {
    emit_u32(buf, n).expect("4-byte buffer");
}

fn put_string(buf: &mut [u8], s: &str) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
}

// ---------------------------------------------------------------------------------------
// Model <-> attributes.

fn addr_attr_bytes(addr: &IpAddr) -> Vec<u8> {
    let mut bytes = vec![0u8; ADDR_LEN];
    match addr {
        IpAddr::V4(a) => bytes[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => bytes.copy_from_slice(&a.octets()),
    }
    bytes
}

const SERVICE: &str = "service";
const DESTINATION: &str = "destination";
const DAEMON: &str = "sync daemon";

fn missing(object: &'static str, attr: &'static str) -> AttrError {
    AttrError::Missing { object, attr }
}

fn unknown(object: &'static str, attr: &'static str, value: u32) -> AttrError {
    AttrError::Unknown {
        object,
        attr,
        value,
    }
}

fn addr_from_bytes(family: AddressFamily, bytes: &[u8]) -> Result<IpAddr, AttrError> {
    match family {
        AddressFamily::Inet if bytes.len() >= 4 => {
            let octets: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
            Ok(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        AddressFamily::Inet6 if bytes.len() == ADDR_LEN => {
            let octets: [u8; 16] = bytes.try_into().expect("16 bytes");
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => Err(AttrError::AddressLength {
            len: bytes.len(),
            family,
        }),
    }
}

fn netmask_bytes(family: AddressFamily, netmask: u32) -> [u8; 4] {
    match family {
        AddressFamily::Inet => netmask.to_be_bytes(),
        AddressFamily::Inet6 => netmask.to_ne_bytes(),
    }
}

fn netmask_from_bytes(family: AddressFamily, bytes: [u8; 4]) -> u32 {
    match family {
        AddressFamily::Inet => u32::from_be_bytes(bytes),
        AddressFamily::Inet6 => u32::from_ne_bytes(bytes),
    }
}

/// The attributes that identify a service (enough for GET, DEL, ZERO and as the parent of
/// destination commands).
pub fn service_key_attrs(key: &ServiceKey) -> Vec<ServiceAttr> {
    match key {
        ServiceKey::Inet {
            protocol,
            addr,
            port,
        } => vec![
            ServiceAttr::Af(AddressFamily::of(addr).number()),
            ServiceAttr::Protocol(protocol.number()),
            ServiceAttr::Addr(addr_attr_bytes(addr)),
            ServiceAttr::Port(*port),
        ],
        ServiceKey::Fwmark { family, mark } => {
            vec![ServiceAttr::Af(family.number()), ServiceAttr::Fwmark(*mark)]
        }
    }
}

/// The full attributes of a service, as NEW_SERVICE and SET_SERVICE need them. The flag
/// mask is all ones, so the sent flags replace the service's flags.
pub fn service_attrs(service: &Service) -> Vec<ServiceAttr> {
    let mut attrs = service_key_attrs(&service.key);
    attrs.push(ServiceAttr::SchedName(service.scheduler.clone()));
    if let Some(pe) = &service.pe_name {
        attrs.push(ServiceAttr::PeName(pe.clone()));
    }
    // The kernel decides persistence by the flag alone; a timeout without it would be
    // silently ignored, so a timeout implies the flag (ipvsadm's -p sets both).
    let mut flags = service.flags;
    if service.timeout != 0 {
        flags.insert(ServiceFlags::PERSISTENT);
    }
    attrs.push(ServiceAttr::Flags {
        flags: flags.bits(),
        mask: u32::MAX,
    });
    attrs.push(ServiceAttr::Timeout(service.timeout));
    attrs.push(ServiceAttr::Netmask(netmask_bytes(
        service.key.family(),
        service.netmask,
    )));
    attrs
}

fn stats_from_attrs(attrs: &[StatsAttr]) -> Stats {
    let mut stats = Stats::default();
    for attr in attrs {
        if let StatsAttr::Counter { kind, value, .. } = attr {
            let slot = match kind {
                1 => &mut stats.conns,
                2 => &mut stats.inpkts,
                3 => &mut stats.outpkts,
                4 => &mut stats.inbytes,
                5 => &mut stats.outbytes,
                6 => &mut stats.cps,
                7 => &mut stats.inpps,
                8 => &mut stats.outpps,
                9 => &mut stats.inbps,
                10 => &mut stats.outbps,
                _ => continue,
            };
            *slot = *value;
        }
    }
    stats
}

/// Counters in the attribute layout `*_STATS64` uses (all u64).
pub fn stats64_attrs(stats: &Stats) -> Vec<StatsAttr> {
    [
        stats.conns,
        stats.inpkts,
        stats.outpkts,
        stats.inbytes,
        stats.outbytes,
        stats.cps,
        stats.inpps,
        stats.outpps,
        stats.inbps,
        stats.outbps,
    ]
    .into_iter()
    .zip(1u16..)
    .map(|(value, kind)| StatsAttr::Counter {
        kind,
        value,
        wide: true,
    })
    .collect()
}

/// Read a service from its attributes (a GET_SERVICE reply). `STATS64` wins over `STATS`.
pub fn service_from_attrs(attrs: &[ServiceAttr]) -> Result<Service, AttrError> {
    let mut af = None;
    let mut protocol = None;
    let mut addr = None;
    let mut port = None;
    let mut fwmark = None;
    let mut scheduler = None;
    let mut flags = 0;
    let mut timeout = 0;
    let mut netmask = None;
    let mut pe_name = None;
    let mut stats32 = None;
    let mut stats64 = None;
    for attr in attrs {
        match attr {
            ServiceAttr::Af(n) => af = Some(*n),
            ServiceAttr::Protocol(n) => protocol = Some(*n),
            ServiceAttr::Addr(a) => addr = Some(a.as_slice()),
            ServiceAttr::Port(p) => port = Some(*p),
            ServiceAttr::Fwmark(m) => fwmark = Some(*m),
            ServiceAttr::SchedName(s) => scheduler = Some(s.clone()),
            ServiceAttr::Flags { flags: f, .. } => flags = *f,
            ServiceAttr::Timeout(t) => timeout = *t,
            ServiceAttr::Netmask(m) => netmask = Some(*m),
            ServiceAttr::PeName(p) => pe_name = Some(p.clone()),
            ServiceAttr::Stats(s) => stats32 = Some(s.as_slice()),
            ServiceAttr::Stats64(s) => stats64 = Some(s.as_slice()),
            ServiceAttr::Other(_) => {}
        }
    }
    let af = af.ok_or(missing(SERVICE, "address family (IPVS_SVC_ATTR_AF)"))?;
    let family =
        AddressFamily::from_number(af).ok_or(unknown(SERVICE, "address family", af.into()))?;
    let key = match fwmark {
        Some(mark) if mark != 0 => ServiceKey::Fwmark { family, mark },
        _ => {
            let number = protocol.ok_or(missing(SERVICE, "protocol or fwmark"))?;
            let protocol = Protocol::from_number(number).ok_or(unknown(
                SERVICE,
                "unknown protocol",
                number.into(),
            ))?;
            let addr = addr_from_bytes(family, addr.ok_or(missing(SERVICE, "address"))?)?;
            let port = port.ok_or(missing(SERVICE, "port"))?;
            ServiceKey::Inet {
                protocol,
                addr,
                port,
            }
        }
    };
    let netmask = match netmask {
        Some(bytes) => netmask_from_bytes(family, bytes),
        None => crate::model::default_netmask(family),
    };
    Ok(Service {
        key,
        scheduler: scheduler.ok_or(AttrError::NoScheduler { service: key })?,
        flags: ServiceFlags(flags),
        timeout,
        netmask,
        pe_name,
        stats: stats64
            .or(stats32)
            .map(stats_from_attrs)
            .unwrap_or_default(),
    })
}

/// The attributes that identify a destination (DEL_DEST).
pub fn destination_key_attrs(addr: &IpAddr, port: u16) -> Vec<DestAttr> {
    vec![DestAttr::Addr(addr_attr_bytes(addr)), DestAttr::Port(port)]
}

/// The full attributes of a destination, as NEW_DEST and SET_DEST need them.
pub fn destination_attrs(dest: &Destination) -> Vec<DestAttr> {
    let mut attrs = destination_key_attrs(&dest.addr, dest.port);
    attrs.extend([
        DestAttr::AddrFamily(dest.family().number()),
        DestAttr::FwdMethod(dest.forward.number()),
        DestAttr::Weight(dest.weight as u32),
        DestAttr::UpperThreshold(dest.upper_threshold),
        DestAttr::LowerThreshold(dest.lower_threshold),
    ]);
    if dest.forward == ForwardMethod::Tunnel {
        attrs.extend([
            DestAttr::TunType(dest.tunnel.kind.number()),
            DestAttr::TunPort(dest.tunnel.port),
            DestAttr::TunFlags(dest.tunnel.flags),
        ]);
    }
    attrs
}

/// Read a destination from its attributes (a GET_DEST reply). `service_family` is used
/// when the kernel sends no `ADDR_FAMILY` (before Linux 4.x).
pub fn destination_from_attrs(
    attrs: &[DestAttr],
    service_family: AddressFamily,
) -> Result<Destination, AttrError> {
    let mut family = service_family;
    let mut addr = None;
    let mut port = None;
    let mut forward = 0;
    let mut dest = Destination::new(service_family.unspecified(), 0);
    let mut stats32 = None;
    let mut stats64 = None;
    for attr in attrs {
        match attr {
            DestAttr::Addr(a) => addr = Some(a.as_slice()),
            DestAttr::Port(p) => port = Some(*p),
            DestAttr::FwdMethod(m) => forward = *m,
            DestAttr::Weight(w) => dest.weight = *w as i32,
            DestAttr::UpperThreshold(n) => dest.upper_threshold = *n,
            DestAttr::LowerThreshold(n) => dest.lower_threshold = *n,
            DestAttr::ActiveConns(n) => dest.active_conns = *n,
            DestAttr::InactiveConns(n) => dest.inactive_conns = *n,
            DestAttr::PersistConns(n) => dest.persistent_conns = *n,
            DestAttr::Stats(s) => stats32 = Some(s.as_slice()),
            DestAttr::Stats64(s) => stats64 = Some(s.as_slice()),
            DestAttr::AddrFamily(af) => {
                family = AddressFamily::from_number(*af).ok_or(unknown(
                    DESTINATION,
                    "address family",
                    (*af).into(),
                ))?
            }
            DestAttr::TunType(t) => dest.tunnel.kind = TunnelType::from_number(*t),
            DestAttr::TunPort(p) => dest.tunnel.port = *p,
            DestAttr::TunFlags(f) => dest.tunnel.flags = *f,
            DestAttr::Other(_) => {}
        }
    }
    dest.addr = addr_from_bytes(family, addr.ok_or(missing(DESTINATION, "address"))?)?;
    dest.port = port.ok_or(missing(DESTINATION, "port"))?;
    dest.forward = ForwardMethod::from_number(forward).ok_or(unknown(
        DESTINATION,
        "forwarding method",
        forward,
    ))?;
    dest.stats = stats64
        .or(stats32)
        .map(stats_from_attrs)
        .unwrap_or_default();
    Ok(dest)
}

/// Attributes of a reply, in the shape the kernel sends for a service (for tests and
/// fakes that play the kernel).
pub fn service_reply_attrs(service: &Service) -> Vec<ServiceAttr> {
    let mut attrs = service_attrs(service);
    attrs.push(ServiceAttr::Stats64(stats64_attrs(&service.stats)));
    attrs
}

/// Read GET_INFO's reply.
pub fn info_from_attrs(attrs: &[Attr]) -> Result<Info, AttrError> {
    let mut version = None;
    let mut size = None;
    for attr in attrs {
        match attr {
            Attr::InfoVersion(v) => version = Some(*v),
            Attr::InfoConnTabSize(s) => size = Some(*s),
            _ => {}
        }
    }
    Ok(Info {
        version: version.ok_or(missing("info", "version"))?,
        conn_table_size: size.ok_or(missing("info", "connection table size"))?,
    })
}

/// Read GET_CONFIG's reply.
pub fn timeouts_from_attrs(attrs: &[Attr]) -> Result<Timeouts, AttrError> {
    let mut t = (None, None, None);
    for attr in attrs {
        match attr {
            Attr::TimeoutTcp(n) => t.0 = Some(*n),
            Attr::TimeoutTcpFin(n) => t.1 = Some(*n),
            Attr::TimeoutUdp(n) => t.2 = Some(*n),
            _ => {}
        }
    }
    Ok(Timeouts {
        tcp: t.0.ok_or(missing("config", "TCP timeout"))?,
        tcp_fin: t.1.ok_or(missing("config", "TCP FIN timeout"))?,
        udp: t.2.ok_or(missing("config", "UDP timeout"))?,
    })
}

/// SET_CONFIG's attributes.
pub fn timeouts_attrs(t: &Timeouts) -> Vec<Attr> {
    vec![
        Attr::TimeoutTcp(t.tcp),
        Attr::TimeoutTcpFin(t.tcp_fin),
        Attr::TimeoutUdp(t.udp),
    ]
}

/// NEW_DAEMON's attributes (`None` fields are left out, so the kernel uses its defaults).
pub fn daemon_attrs(d: &SyncDaemon) -> Vec<DaemonAttr> {
    let mut attrs = vec![
        DaemonAttr::State(d.state.number()),
        DaemonAttr::McastIfn(d.mcast_interface.clone()),
        DaemonAttr::SyncId(d.syncid),
    ];
    if let Some(n) = d.sync_maxlen {
        attrs.push(DaemonAttr::SyncMaxlen(n));
    }
    match d.mcast_group {
        Some(IpAddr::V4(a)) => attrs.push(DaemonAttr::McastGroup(a.octets())),
        Some(IpAddr::V6(a)) => attrs.push(DaemonAttr::McastGroup6(a.octets())),
        None => {}
    }
    if let Some(n) = d.mcast_port {
        attrs.push(DaemonAttr::McastPort(n));
    }
    if let Some(n) = d.mcast_ttl {
        attrs.push(DaemonAttr::McastTtl(n));
    }
    attrs
}

/// Read a sync daemon from its attributes (a GET_DAEMON reply).
pub fn daemon_from_attrs(attrs: &[DaemonAttr]) -> Result<SyncDaemon, AttrError> {
    let mut state = None;
    let mut ifn = None;
    let mut syncid = None;
    let mut d = SyncDaemon::new(DaemonState::Master, "", 0);
    for attr in attrs {
        match attr {
            DaemonAttr::State(n) => {
                state = Some(DaemonState::from_number(*n).ok_or(unknown(DAEMON, "state", *n))?)
            }
            DaemonAttr::McastIfn(s) => ifn = Some(s.clone()),
            DaemonAttr::SyncId(n) => syncid = Some(*n),
            DaemonAttr::SyncMaxlen(n) => d.sync_maxlen = Some(*n),
            DaemonAttr::McastGroup(b) => d.mcast_group = Some(IpAddr::from(*b)),
            DaemonAttr::McastGroup6(b) => d.mcast_group = Some(IpAddr::from(*b)),
            DaemonAttr::McastPort(n) => d.mcast_port = Some(*n),
            DaemonAttr::McastTtl(n) => d.mcast_ttl = Some(*n),
            DaemonAttr::Other(_) => {}
        }
    }
    d.state = state.ok_or(missing(DAEMON, "state"))?;
    d.mcast_interface = ifn.ok_or(missing(DAEMON, "interface"))?;
    d.syncid = syncid.ok_or(missing(DAEMON, "sync id"))?;
    Ok(d)
}

/// Emit an IPVS message body (attributes only, no headers) to bytes.
pub fn emit_attrs(msg: &IpvsMessage) -> Vec<u8> {
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}

/// Parse an IPVS message body (attributes only) for `cmd`.
pub fn parse_body(cmd: u8, body: &[u8]) -> Result<IpvsMessage, DecodeError> {
    IpvsMessage::parse_with_param(
        body,
        GenlHeader {
            cmd,
            version: FAMILY_VERSION,
        },
    )
}

// ---------------------------------------------------------------------------------------
// Netlink framing.

/// A whole IPVS netlink message: netlink header, generic netlink header, IPVS body.
pub type IpvsNetlinkMessage = NetlinkMessage<GenlMessage<IpvsMessage>>;

/// Encode a request for a generic netlink family with the given netlink flags and sequence
/// number (`NLM_F_REQUEST` is added).
pub fn encode_request<F>(payload: F, family_id: u16, flags: u16, seq: u32) -> Vec<u8>
where
    F: GenlFamily + Emitable + Debug,
{
    let mut genl = GenlMessage::from_payload(payload);
    genl.set_resolved_family_id(family_id);
    genl.finalize();
    let mut msg = NetlinkMessage::from(genl);
    msg.header.flags = NLM_F_REQUEST | flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// What one netlink message of a reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<F> {
    /// A message of the family.
    Message(F),
    /// `NLMSG_ERROR` with code 0: the request succeeded.
    Ack,
    /// `NLMSG_ERROR` with a negative errno (given here positive), or `NLMSG_DONE` carrying one.
    Error(i32),
    /// `NLMSG_DONE`: the end of a dump.
    Done,
    /// `NLMSG_NOOP` or other control messages to skip.
    Skip,
}

/// Split a datagram into netlink messages and decode each: (sequence number, reply).
/// Truncated or garbage input gives an error, never a panic.
pub fn decode_replies<F>(datagram: &[u8]) -> Result<Vec<(u32, Reply<F>)>, DecodeError>
where
    F: ParseableParametrized<[u8], GenlHeader> + Debug,
{
    let mut replies = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let buffer = NetlinkBuffer::new_checked(rest)?;
        let len = buffer.length() as usize;
        let seq = buffer.sequence_number();
        let msg = NetlinkMessage::<GenlMessage<F>>::deserialize(&rest[..len])?;
        let reply = match msg.payload {
            NetlinkPayload::InnerMessage(genl) => Reply::Message(genl.payload),
            NetlinkPayload::Error(err) => match err.code {
                None => Reply::Ack,
                Some(code) => Reply::Error(code.get().saturating_abs()),
            },
            NetlinkPayload::Done(done) if done.code != 0 => {
                Reply::Error(done.code.saturating_abs())
            }
            NetlinkPayload::Done(_) => Reply::Done,
            _ => Reply::Skip,
        };
        replies.push((seq, reply));
        // Messages are 4-byte aligned; the last one may lack its padding.
        let next = len.div_ceil(4) * 4;
        rest = rest.get(next..).unwrap_or(&[]);
    }
    Ok(replies)
}

#[cfg(test)]
mod tests;
