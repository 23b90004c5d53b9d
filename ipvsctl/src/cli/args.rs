//! ipvsadm's command line, parsed the way ipvsadm 1.31 parses it.
//!
//! Why a hand-written parser rather than clap: ipvsadm uses popt with an option table whose
//! behaviour scripts depend on and clap cannot express without fighting it: the command
//! must come first (`-Ln` works, `-nL` does not), short options combine with their argument
//! (`-At10.0.0.1:80`), `-p` takes an *optional* argument that is consumed only when the next
//! word does not start with `-`, `--set` takes three positional words, the same option
//! twice is an error, and which options are legal is decided per command by a table
//! (`commands_v_options`) with ipvsadm's exact error messages. This module mirrors that
//! table and the popt rules; it is pure (no I/O) and unit-tested.

use std::net::{IpAddr, Ipv4Addr};

use super::names::{self, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

/// Address family numbers as the kernel uses them.
pub const AF_INET: u16 = 2;
/// IPv6.
pub const AF_INET6: u16 = 10;

/// Service flags (include/uapi/linux/ip_vs.h).
pub const SVC_F_PERSISTENT: u32 = 0x0001;
/// One-packet scheduling.
pub const SVC_F_ONEPACKET: u32 = 0x0004;
/// Scheduler flag 1 (sh-fallback / mh-fallback).
pub const SVC_F_SCHED1: u32 = 0x0008;
/// Scheduler flag 2 (sh-port / mh-port).
pub const SVC_F_SCHED2: u32 = 0x0010;
/// Scheduler flag 3.
pub const SVC_F_SCHED3: u32 = 0x0020;

/// Forwarding methods (IP_VS_CONN_F_*).
pub const FWD_MASQ: u32 = 0;
/// Local node.
pub const FWD_LOCALNODE: u32 = 1;
/// IPIP tunnel.
pub const FWD_TUNNEL: u32 = 2;
/// Direct routing (gatewaying), ipvsadm's default.
pub const FWD_DROUTE: u32 = 3;

/// Tunnel types.
pub const TUN_IPIP: u8 = 0;
/// GUE.
pub const TUN_GUE: u8 = 1;
/// GRE.
pub const TUN_GRE: u8 = 2;

/// Default persistence timeout (IPVS_SVC_PERSISTENT_TIMEOUT, 6 minutes).
pub const DEFAULT_PERSISTENT_TIMEOUT: u32 = 360;
/// Largest timeout ipvsadm accepts (31 days).
pub const MAX_TIMEOUT: i64 = 86400 * 31;
/// ipvsadm's default scheduler.
pub const DEFAULT_SCHEDULER: &str = "wlc";

/// The commands, in ipvsadm's order (the row of `COMMANDS_V_OPTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// -A
    Add,
    /// -E
    Edit,
    /// -D
    Del,
    /// -C
    Flush,
    /// -L / -l
    List,
    /// -a
    AddDest,
    /// -d
    DelDest,
    /// -e
    EditDest,
    /// --set
    Timeout,
    /// --start-daemon
    StartDaemon,
    /// --stop-daemon
    StopDaemon,
    /// -R
    Restore,
    /// -S
    Save,
    /// -Z
    Zero,
}

const CMD_NAMES: [&str; 14] = [
    "add-service",
    "edit-service",
    "delete-service",
    "flush",
    "list",
    "add-server",
    "delete-server",
    "edit-server",
    "set",
    "start-daemon",
    "stop-daemon",
    "restore",
    "save",
    "zero",
];

/// Option indices (ipvsadm's OPTC_*), plus our `--json` at the end.
pub mod opt {
    pub const NUMERIC: usize = 0;
    pub const CONNECTION: usize = 1;
    pub const SERVICE: usize = 2;
    pub const SCHEDULER: usize = 3;
    pub const PERSISTENT: usize = 4;
    pub const NETMASK: usize = 5;
    pub const SERVER: usize = 6;
    pub const FORWARD: usize = 7;
    pub const WEIGHT: usize = 8;
    pub const UTHRESHOLD: usize = 9;
    pub const LTHRESHOLD: usize = 10;
    pub const MCAST: usize = 11;
    pub const TIMEOUT: usize = 12;
    pub const DAEMON: usize = 13;
    pub const STATS: usize = 14;
    pub const RATE: usize = 15;
    pub const THRESHOLDS: usize = 16;
    pub const PERSISTENTCONN: usize = 17;
    pub const NOSORT: usize = 18;
    pub const SYNCID: usize = 19;
    pub const EXACT: usize = 20;
    pub const ONEPACKET: usize = 21;
    pub const PE: usize = 22;
    pub const SCHED_FLAGS: usize = 23;
    pub const MCAST_GROUP: usize = 24;
    pub const MCAST_PORT: usize = 25;
    pub const MCAST_TTL: usize = 26;
    pub const SYNC_MAXLEN: usize = 27;
    pub const TUN_INFO: usize = 28;
    pub const TUN_TYPE: usize = 29;
    pub const TUN_PORT: usize = 30;
    pub const TUN_NOCSUM: usize = 31;
    pub const TUN_CSUM: usize = 32;
    pub const TUN_REMCSUM: usize = 33;
    pub const JSON: usize = 34;
    pub const COUNT: usize = 35;
}

const OPT_NAMES: [&str; opt::COUNT] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
    "json",
];

/// ipvsadm's `commands_v_options` table, one string per command, one column per option:
/// `+` compulsory, `x` illegal, `1` exclusive (only one `1` option), ` ` optional.
/// The last column is ipvsctl's `--json` (list only).
const COMMANDS_V_OPTIONS: [&[u8; opt::COUNT]; 14] = [
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxxx", // ADD
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxxx", // EDIT
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // DEL
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // FLUSH
    b" 11xxxxxxxxx11       xxxxxxx xxxxx ", // LIST
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     x", // ADDSRV
    b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxxx", // DELSRV
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     x", // EDITSRV
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // TIMEOUT
    b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxxx", // STARTD
    b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxxx", // STOPD
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // RESTORE
    b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // SAVE
    b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // ZERO
];

/// A virtual service as given on the command line (ipvsadm's `ipvs_service_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceArgs {
    /// 0 (none given), AF_INET or AF_INET6.
    pub af: u16,
    /// IPPROTO_*; TCP for fwmark services, as ipvsadm sets it.
    pub protocol: u16,
    /// Virtual address (unspecified for fwmark services).
    pub addr: IpAddr,
    /// Virtual port.
    pub port: u16,
    /// Firewall mark, 0 for address services.
    pub fwmark: u32,
    /// Scheduler name ("" until defaulted).
    pub sched_name: String,
    /// IP_VS_SVC_F_* flags.
    pub flags: u32,
    /// Persistence timeout in seconds.
    pub timeout: u32,
    /// Persistence netmask: IPv4 mask in network order as a u32 of the octets, or IPv6
    /// prefix length.
    pub netmask: u32,
    /// Persistence engine name.
    pub pe_name: String,
}

impl Default for ServiceArgs {
    fn default() -> Self {
        Self {
            af: 0,
            protocol: 0,
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            fwmark: 0,
            sched_name: String::new(),
            flags: 0,
            timeout: 0,
            netmask: 0xffff_ffff,
            pe_name: String::new(),
        }
    }
}

/// A real server as given on the command line (ipvsadm's `ipvs_dest_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestArgs {
    /// Address family of the real server.
    pub af: u16,
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port.
    pub port: u16,
    /// FWD_* method.
    pub fwd: u32,
    /// Weight.
    pub weight: u32,
    /// Upper connection threshold.
    pub u_threshold: u32,
    /// Lower connection threshold.
    pub l_threshold: u32,
    /// Tunnel type (TUN_*).
    pub tun_type: u8,
    /// Tunnel port (GUE).
    pub tun_port: u16,
    /// Tunnel flags (checksum options).
    pub tun_flags: u16,
}

impl Default for DestArgs {
    fn default() -> Self {
        Self {
            af: 0,
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            fwd: FWD_DROUTE,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun_type: TUN_IPIP,
            tun_port: 0,
            tun_flags: 0,
        }
    }
}

/// Listing format flags (ipvsadm's FMT_*).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Format {
    /// -n
    pub numeric: bool,
    /// -S rules
    pub rule: bool,
    /// --stats
    pub stats: bool,
    /// --rate
    pub rate: bool,
    /// --thresholds
    pub thresholds: bool,
    /// --persistent-conn
    pub persistent_conn: bool,
    /// --nosort
    pub nosort: bool,
    /// --exact
    pub exact: bool,
    /// --tun-info
    pub tun_info: bool,
    /// --json (ipvsctl only)
    pub json: bool,
}

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The command.
    pub cmd: Cmd,
    /// Which options were given (bit per `opt::*`).
    pub options: u64,
    /// Listing format.
    pub format: Format,
    /// The service.
    pub svc: ServiceArgs,
    /// The real server.
    pub dest: DestArgs,
    /// --set tcp tcpfin udp.
    pub timeouts: [u32; 3],
}

impl Invocation {
    /// Was option `o` given?
    pub fn has(&self, o: usize) -> bool {
        self.options & (1 << o) != 0
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Run a command.
    Run(Box<Invocation>),
    /// -h: print usage to stdout, exit 0.
    Help,
    /// -v: print the version, exit 0.
    Version,
}

/// A rejected command line: the message for stderr and the exit status ipvsadm uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// Text for stderr (without trailing newline).
    pub message: String,
    /// Exit status (2 for ipvsadm's `fail`, 255 for its `-1` returns).
    pub code: i32,
}

fn fail(message: impl Into<String>) -> ArgError {
    ArgError {
        message: message.into(),
        code: 2,
    }
}

/// "Try `prog -h' ..." with exit status 255, as ipvsadm's tryhelp_exit(-1).
pub fn tryhelp(prog: &str) -> ArgError {
    ArgError {
        message: format!("Try `{prog} -h' or '{prog} --help' for more information."),
        code: 255,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgKind {
    None,
    Required,
    Optional,
}

/// popt option table entries: long name, short char, argument kind, tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Cmd(Cmd),
    Help,
    Version,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Persistent,
    Netmask,
    Real,
    Masq,
    Ipip,
    Gate,
    Weight,
    UThresh,
    LThresh,
    Numeric,
    Connection,
    McastIf,
    SyncId,
    TimeoutList,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
    Json,
}

const TABLE: &[(&str, Option<char>, ArgKind, Tag)] = &[
    ("add-service", Some('A'), ArgKind::None, Tag::Cmd(Cmd::Add)),
    (
        "edit-service",
        Some('E'),
        ArgKind::None,
        Tag::Cmd(Cmd::Edit),
    ),
    (
        "delete-service",
        Some('D'),
        ArgKind::None,
        Tag::Cmd(Cmd::Del),
    ),
    ("clear", Some('C'), ArgKind::None, Tag::Cmd(Cmd::Flush)),
    ("list", Some('L'), ArgKind::None, Tag::Cmd(Cmd::List)),
    ("list", Some('l'), ArgKind::None, Tag::Cmd(Cmd::List)),
    ("zero", Some('Z'), ArgKind::None, Tag::Cmd(Cmd::Zero)),
    (
        "add-server",
        Some('a'),
        ArgKind::None,
        Tag::Cmd(Cmd::AddDest),
    ),
    (
        "edit-server",
        Some('e'),
        ArgKind::None,
        Tag::Cmd(Cmd::EditDest),
    ),
    (
        "delete-server",
        Some('d'),
        ArgKind::None,
        Tag::Cmd(Cmd::DelDest),
    ),
    ("set", None, ArgKind::None, Tag::Cmd(Cmd::Timeout)),
    ("help", Some('h'), ArgKind::None, Tag::Help),
    ("version", Some('v'), ArgKind::None, Tag::Version),
    ("restore", Some('R'), ArgKind::None, Tag::Cmd(Cmd::Restore)),
    ("save", Some('S'), ArgKind::None, Tag::Cmd(Cmd::Save)),
    (
        "start-daemon",
        None,
        ArgKind::Required,
        Tag::Cmd(Cmd::StartDaemon),
    ),
    (
        "stop-daemon",
        None,
        ArgKind::Required,
        Tag::Cmd(Cmd::StopDaemon),
    ),
    ("tcp-service", Some('t'), ArgKind::Required, Tag::Tcp),
    ("udp-service", Some('u'), ArgKind::Required, Tag::Udp),
    ("sctp-service", None, ArgKind::Required, Tag::Sctp),
    ("fwmark-service", Some('f'), ArgKind::Required, Tag::Fwmark),
    ("scheduler", Some('s'), ArgKind::Required, Tag::Scheduler),
    ("persistent", Some('p'), ArgKind::Optional, Tag::Persistent),
    ("netmask", Some('M'), ArgKind::Required, Tag::Netmask),
    ("real-server", Some('r'), ArgKind::Required, Tag::Real),
    ("masquerading", Some('m'), ArgKind::None, Tag::Masq),
    ("ipip", Some('i'), ArgKind::None, Tag::Ipip),
    ("gatewaying", Some('g'), ArgKind::None, Tag::Gate),
    ("weight", Some('w'), ArgKind::Required, Tag::Weight),
    ("u-threshold", Some('x'), ArgKind::Required, Tag::UThresh),
    ("l-threshold", Some('y'), ArgKind::Required, Tag::LThresh),
    ("numeric", Some('n'), ArgKind::None, Tag::Numeric),
    ("connection", Some('c'), ArgKind::None, Tag::Connection),
    ("mcast-interface", None, ArgKind::Required, Tag::McastIf),
    ("syncid", None, ArgKind::Required, Tag::SyncId),
    ("timeout", None, ArgKind::None, Tag::TimeoutList),
    ("daemon", None, ArgKind::None, Tag::Daemon),
    ("stats", None, ArgKind::None, Tag::Stats),
    ("rate", None, ArgKind::None, Tag::Rate),
    ("thresholds", None, ArgKind::None, Tag::Thresholds),
    ("persistent-conn", None, ArgKind::None, Tag::PersistConn),
    ("nosort", None, ArgKind::None, Tag::NoSort),
    ("sort", None, ArgKind::None, Tag::Sort),
    ("exact", Some('X'), ArgKind::None, Tag::Exact),
    ("ipv6", Some('6'), ArgKind::None, Tag::Ipv6),
    ("ops", Some('o'), ArgKind::None, Tag::Ops),
    ("pe", None, ArgKind::Required, Tag::Pe),
    ("sched-flags", Some('b'), ArgKind::Required, Tag::SchedFlags),
    ("mcast-group", None, ArgKind::Required, Tag::McastGroup),
    ("mcast-port", None, ArgKind::Required, Tag::McastPort),
    ("mcast-ttl", None, ArgKind::Required, Tag::McastTtl),
    ("sync-maxlen", None, ArgKind::Required, Tag::SyncMaxlen),
    ("tun-info", None, ArgKind::None, Tag::TunInfo),
    ("tun-type", None, ArgKind::Required, Tag::TunType),
    ("tun-port", None, ArgKind::Required, Tag::TunPort),
    ("tun-nocsum", None, ArgKind::None, Tag::TunNocsum),
    ("tun-csum", None, ArgKind::None, Tag::TunCsum),
    ("tun-remcsum", None, ArgKind::None, Tag::TunRemcsum),
    ("json", None, ArgKind::None, Tag::Json),
];

/// A popt-style scanner: yields (tag, argument) pairs and collects leftover words.
struct Scanner<'a> {
    args: &'a [String],
    next: usize,
    /// Remaining characters of a short-option cluster and the word they came from.
    cluster: Option<(String, usize)>,
    leftovers: Vec<String>,
    only_leftovers: bool,
}

/// popt's error for one word.
#[derive(Debug)]
struct PoptError {
    word: String,
    what: &'static str,
}

impl<'a> Scanner<'a> {
    fn new(args: &'a [String]) -> Self {
        Self {
            args,
            next: 1,
            cluster: None,
            leftovers: Vec::new(),
            only_leftovers: false,
        }
    }

    fn take_arg(&mut self, kind: ArgKind, word: &str) -> Result<Option<String>, PoptError> {
        if kind == ArgKind::None {
            return Ok(None);
        }
        match self.args.get(self.next) {
            None if kind == ArgKind::Optional => Ok(None),
            None => Err(PoptError {
                word: word.to_string(),
                what: "missing argument",
            }),
            Some(a) if kind == ArgKind::Optional && a.starts_with('-') => Ok(None),
            Some(a) => {
                self.next += 1;
                Ok(Some(a.clone()))
            }
        }
    }

    /// The next option, or None at the end.
    fn next_opt(&mut self) -> Result<Option<(Tag, Option<String>)>, PoptError> {
        loop {
            if let Some((rest, word_idx)) = self.cluster.take() {
                let word = self.args[word_idx].clone();
                let mut chars = rest.chars();
                let c = chars.next().unwrap_or('\0');
                let rest: String = chars.collect();
                let Some(&(_, _, kind, tag)) = TABLE.iter().find(|e| e.1 == Some(c)) else {
                    return Err(PoptError {
                        word,
                        what: "unknown option",
                    });
                };
                if kind != ArgKind::None && !rest.is_empty() {
                    let arg = rest.strip_prefix('=').unwrap_or(&rest).to_string();
                    return Ok(Some((tag, Some(arg))));
                }
                if !rest.is_empty() {
                    self.cluster = Some((rest, word_idx));
                    return Ok(Some((tag, None)));
                }
                let arg = self.take_arg(kind, &word)?;
                return Ok(Some((tag, arg)));
            }
            let Some(word) = self.args.get(self.next).cloned() else {
                return Ok(None);
            };
            self.next += 1;
            if self.only_leftovers || word == "-" || !word.starts_with('-') {
                self.leftovers.push(word);
                continue;
            }
            if word == "--" {
                self.only_leftovers = true;
                continue;
            }
            if let Some(long) = word.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                let Some(&(_, _, kind, tag)) = TABLE.iter().find(|e| e.0 == name) else {
                    return Err(PoptError {
                        word,
                        what: "unknown option",
                    });
                };
                if kind == ArgKind::None {
                    if inline.is_some() {
                        return Err(PoptError {
                            word,
                            what: "option does not take an argument",
                        });
                    }
                    return Ok(Some((tag, None)));
                }
                if inline.is_some() {
                    return Ok(Some((tag, inline)));
                }
                let arg = self.take_arg(kind, &word)?;
                return Ok(Some((tag, arg)));
            }
            self.cluster = Some((word[1..].to_string(), self.next - 1));
        }
    }
}

/// strtol-based string_to_number: the whole string must be a decimal in [min, max].
fn string_to_number(s: &str, min: i64, max: i64) -> Option<i64> {
    let t = s.trim_start();
    let n: i64 = t
        .parse()
        .ok()
        .or_else(|| t.strip_prefix('+')?.parse().ok())?;
    (min..=max).contains(&n).then_some(n)
}

fn parse_timeout(buf: Option<&str>, min: i64, max: i64) -> Result<u32, ArgError> {
    let Some(buf) = buf else {
        return Ok(DEFAULT_PERSISTENT_TIMEOUT);
    };
    string_to_number(buf, min, max)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| fail(format!("invalid timeout value `{buf}' specified")))
}

fn parse_fwmark(buf: &str) -> Result<u32, ArgError> {
    string_to_number(buf, 1, i64::from(u32::MAX))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| fail(format!("invalid fwmark value `{buf}' specified")))
}

/// What parse_service found.
const SERVICE_ADDR: u8 = 1;
const SERVICE_PORT: u8 = 2;

/// ipvsadm's parse_service: `host[:port]`, `[v6]:port` or a bare IPv6 address.
fn parse_service(buf: &str, svc: &mut ServiceArgs) -> u8 {
    if buf.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let mut host = buf;
    let mut port: Option<&str> = None;
    if let Some(rest) = buf.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return 0;
        };
        let Some(p) = after.strip_prefix(':') else {
            return 0;
        };
        host = h;
        port = Some(p);
    }
    if let Some(a6) = names::inet_pton6(host) {
        svc.addr = IpAddr::V6(a6);
        svc.af = AF_INET6;
        svc.netmask = 128;
    } else {
        // ipvsadm re-splits at the last ':' here (for the bracket form too).
        if let Some((h, p)) = host.rsplit_once(':') {
            host = h;
            port = Some(p);
        }
        let Some(a4) = names::inet_aton(host).or_else(|| names::host_to_addr(host)) else {
            return 0;
        };
        svc.addr = IpAddr::V4(a4);
        svc.af = AF_INET;
    }
    let mut result = SERVICE_ADDR;
    if let Some(p) = port {
        result |= SERVICE_PORT;
        match string_to_number(p, 0, 65535) {
            Some(n) => svc.port = n as u16,
            None => match names::service_to_port(p, svc.protocol) {
                Some(n) => svc.port = n,
                None => return 0,
            },
        }
    }
    result
}

fn parse_sched_flags(sched: &str, arg: &str) -> Result<u32, ArgError> {
    let sched = if sched.is_empty() {
        DEFAULT_SCHEDULER
    } else {
        sched
    };
    let mut flags = 0;
    // strtok skips empty tokens; ipvsadm with an all-comma argument reads a NULL flag (a
    // crash), which we report as an invalid flag instead.
    let tokens: Vec<&str> = arg.split(',').filter(|t| !t.is_empty()).collect();
    if tokens.is_empty() {
        return Err(fail(format!("invalid scheduler flag `{arg}'")));
    }
    for flag in tokens {
        let (bit, needs) = match flag {
            "flag-1" => (SVC_F_SCHED1, None),
            "flag-2" => (SVC_F_SCHED2, None),
            "flag-3" => (SVC_F_SCHED3, None),
            "sh-fallback" => (SVC_F_SCHED1, Some("sh")),
            "sh-port" => (SVC_F_SCHED2, Some("sh")),
            "mh-fallback" => (SVC_F_SCHED1, Some("mh")),
            "mh-port" => (SVC_F_SCHED2, Some("mh")),
            _ => return Err(fail(format!("invalid scheduler flag `{flag}'"))),
        };
        flags |= bit;
        if needs.is_some_and(|n| n != sched) {
            return Err(fail(format!("incompatible scheduler flag `{flag}'")));
        }
    }
    Ok(flags)
}

fn set_option(options: &mut u64, o: usize) -> Result<(), ArgError> {
    if *options & (1 << o) != 0 {
        return Err(fail(format!(
            "multiple '{}' options specified",
            OPT_NAMES[o]
        )));
    }
    *options |= 1 << o;
    Ok(())
}

fn generic_opt_check(cmd: Cmd, options: u64) -> Result<(), ArgError> {
    let row = COMMANDS_V_OPTIONS[cmd as usize];
    let cmd_name = CMD_NAMES[cmd as usize];
    let mut last = None;
    for (j, &rule) in row.iter().enumerate() {
        let given = options & (1 << j) != 0;
        if !given {
            if rule == b'+' {
                return Err(fail(format!(
                    "You need to supply the '{}' option for the '{cmd_name}' command",
                    OPT_NAMES[j]
                )));
            }
            continue;
        }
        if rule == b'x' {
            return Err(fail(format!(
                "Illegal '{}' option with the '{cmd_name}' command",
                OPT_NAMES[j]
            )));
        }
        if rule == b'1' {
            if let Some(l) = last {
                return Err(fail(format!(
                    "The option '{}' conflicts with the '{}' option in the '{cmd_name}' command",
                    OPT_NAMES[j], OPT_NAMES[l]
                )));
            }
            last = Some(j);
        }
    }
    Ok(())
}

/// Tunnel types x options (port, nocsum, csum, remcsum): ipvsadm's tunnel_types_v_options.
fn tunnel_opt_check(tun_type: u8, options: u64) -> Result<(), ArgError> {
    const NAMES: [&str; 3] = ["ipip", "gue", "gre"];
    const COLS: [usize; 4] = [
        opt::TUN_PORT,
        opt::TUN_NOCSUM,
        opt::TUN_CSUM,
        opt::TUN_REMCSUM,
    ];
    const ROWS: [&[u8; 4]; 3] = [b"xxxx", b"+111", b"x11x"];
    let row = ROWS[usize::from(tun_type)];
    let tname = NAMES[usize::from(tun_type)];
    let mut last = None;
    for (j, &rule) in row.iter().enumerate() {
        let k = COLS[j];
        if options & (1 << k) == 0 {
            if rule == b'+' {
                return Err(fail(format!(
                    "You need to supply the '{}' option for the '{tname}' tunnel type",
                    OPT_NAMES[k]
                )));
            }
            continue;
        }
        if rule == b'x' {
            return Err(fail(format!(
                "Illegal '{}' option with the '{tname}' tunnel type",
                OPT_NAMES[k]
            )));
        }
        if rule == b'1' {
            if let Some(l) = last {
                return Err(fail(format!(
                    "The option '{}' conflicts with the '{}' option in the '{tname}' tunnel type",
                    OPT_NAMES[k], OPT_NAMES[l]
                )));
            }
            last = Some(k);
        }
    }
    Ok(())
}

/// Parse `argv` (with argv[0]) the way ipvsadm's parse_options + process_options do,
/// including every check made before the kernel is asked.
pub fn parse(argv: &[String]) -> Result<Parsed, ArgError> {
    let prog = argv.first().map_or("ipvsctl", String::as_str);
    let mut sc = Scanner::new(argv);
    let popt_err = |e: PoptError| ArgError {
        message: format!("{}: {}", e.word, e.what),
        code: 255,
    };

    let first = match sc.next_opt() {
        Ok(Some(x)) => x,
        Ok(None) | Err(_) => return Err(tryhelp(prog)),
    };
    let mut svc = ServiceArgs::default();
    let mut dest = DestArgs::default();
    let cmd = match first {
        (Tag::Cmd(c @ (Cmd::StartDaemon | Cmd::StopDaemon)), Some(state)) => {
            if state != "master" && state != "backup" {
                let which = if c == Cmd::StartDaemon {
                    "start-daemon parameter"
                } else {
                    "start_daemon"
                };
                return Err(fail(format!("illegal {which} specified")));
            }
            c
        }
        (Tag::Cmd(c), _) => c,
        (Tag::Help, _) => return Ok(Parsed::Help),
        (Tag::Version, _) => return Ok(Parsed::Version),
        _ => return Err(tryhelp(prog)),
    };

    let mut options: u64 = 0;
    let mut format = Format::default();
    let mut sched_flags_arg: Option<String> = None;
    loop {
        let (tag, arg) = match sc.next_opt() {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(e) => return Err(popt_err(e)),
        };
        let a = arg.as_deref().unwrap_or("");
        match tag {
            Tag::Tcp | Tag::Udp | Tag::Sctp => {
                set_option(&mut options, opt::SERVICE)?;
                svc.protocol = match tag {
                    Tag::Tcp => IPPROTO_TCP,
                    Tag::Udp => IPPROTO_UDP,
                    _ => IPPROTO_SCTP,
                };
                if parse_service(a, &mut svc) & SERVICE_ADDR == 0 {
                    return Err(fail("illegal virtual server address[:port] specified"));
                }
            }
            Tag::Fwmark => {
                set_option(&mut options, opt::SERVICE)?;
                svc.af = AF_INET;
                svc.protocol = IPPROTO_TCP;
                svc.fwmark = parse_fwmark(a)?;
            }
            Tag::Scheduler => {
                set_option(&mut options, opt::SCHEDULER)?;
                // IP_VS_SCHEDNAME_MAXLEN - 1
                svc.sched_name = a.chars().take(15).collect();
            }
            Tag::Persistent => {
                set_option(&mut options, opt::PERSISTENT)?;
                svc.flags |= SVC_F_PERSISTENT;
                svc.timeout = parse_timeout(arg.as_deref(), 1, MAX_TIMEOUT)?;
            }
            Tag::Netmask => {
                set_option(&mut options, opt::NETMASK)?;
                if svc.af != AF_INET6 {
                    let m = names::inet_aton(a)
                        .or_else(|| names::host_to_addr(a))
                        .ok_or_else(|| fail("illegal virtual server persistent mask specified"))?;
                    svc.netmask = u32::from_be_bytes(m.octets());
                } else {
                    // atoi
                    let n = atoi(a);
                    if !(1..=128).contains(&n) {
                        return Err(fail("illegal ipv6 netmask specified"));
                    }
                    svc.netmask = n as u32;
                }
            }
            Tag::Real => {
                set_option(&mut options, opt::SERVER)?;
                let mut t = svc.clone();
                let parsed = parse_service(a, &mut t);
                dest.af = t.af;
                dest.addr = t.addr;
                dest.port = t.port;
                if parsed & SERVICE_ADDR == 0 {
                    return Err(fail("illegal real server address[:port] specified"));
                }
                if parsed == SERVICE_ADDR {
                    dest.port = svc.port;
                }
            }
            Tag::Ipip | Tag::Gate | Tag::Masq => {
                set_option(&mut options, opt::FORWARD)?;
                dest.fwd = match tag {
                    Tag::Ipip => FWD_TUNNEL,
                    Tag::Gate => FWD_DROUTE,
                    _ => FWD_MASQ,
                };
            }
            Tag::Weight => {
                set_option(&mut options, opt::WEIGHT)?;
                dest.weight = string_to_number(a, 0, i64::from(i32::MAX))
                    .ok_or_else(|| fail("illegal weight specified"))?
                    as u32;
            }
            Tag::UThresh => {
                set_option(&mut options, opt::UTHRESHOLD)?;
                dest.u_threshold = string_to_number(a, 0, i64::from(i32::MAX))
                    .ok_or_else(|| fail("illegal u_threshold specified"))?
                    as u32;
            }
            Tag::LThresh => {
                set_option(&mut options, opt::LTHRESHOLD)?;
                dest.l_threshold = string_to_number(a, 0, i64::from(i32::MAX))
                    .ok_or_else(|| fail("illegal l_threshold specified"))?
                    as u32;
            }
            Tag::Connection => set_option(&mut options, opt::CONNECTION)?,
            Tag::Numeric => {
                set_option(&mut options, opt::NUMERIC)?;
                format.numeric = true;
            }
            Tag::McastIf => set_option(&mut options, opt::MCAST)?,
            Tag::SyncId => {
                set_option(&mut options, opt::SYNCID)?;
                string_to_number(a, 0, 255).ok_or_else(|| fail("illegal syncid specified"))?;
            }
            Tag::TimeoutList => set_option(&mut options, opt::TIMEOUT)?,
            Tag::Daemon => set_option(&mut options, opt::DAEMON)?,
            Tag::Stats => {
                set_option(&mut options, opt::STATS)?;
                format.stats = true;
            }
            Tag::Rate => {
                set_option(&mut options, opt::RATE)?;
                format.rate = true;
            }
            Tag::Thresholds => {
                set_option(&mut options, opt::THRESHOLDS)?;
                format.thresholds = true;
            }
            Tag::PersistConn => {
                set_option(&mut options, opt::PERSISTENTCONN)?;
                format.persistent_conn = true;
            }
            Tag::NoSort => {
                set_option(&mut options, opt::NOSORT)?;
                format.nosort = true;
            }
            Tag::Sort => {}
            Tag::Exact => {
                set_option(&mut options, opt::EXACT)?;
                format.exact = true;
            }
            Tag::Ipv6 => {
                if svc.fwmark == 0 {
                    return Err(fail("-6 used before -f\n"));
                }
                svc.af = AF_INET6;
                svc.netmask = 128;
            }
            Tag::Ops => {
                set_option(&mut options, opt::ONEPACKET)?;
                svc.flags |= SVC_F_ONEPACKET;
            }
            Tag::Pe => {
                set_option(&mut options, opt::PE)?;
                svc.pe_name = a.chars().take(32).collect();
            }
            Tag::SchedFlags => {
                set_option(&mut options, opt::SCHED_FLAGS)?;
                sched_flags_arg = Some(a.chars().take(127).collect());
            }
            Tag::McastGroup => set_option(&mut options, opt::MCAST_GROUP)?,
            Tag::McastPort => set_option(&mut options, opt::MCAST_PORT)?,
            Tag::McastTtl => set_option(&mut options, opt::MCAST_TTL)?,
            Tag::SyncMaxlen => set_option(&mut options, opt::SYNC_MAXLEN)?,
            Tag::TunInfo => {
                set_option(&mut options, opt::TUN_INFO)?;
                format.tun_info = true;
            }
            Tag::TunType => {
                set_option(&mut options, opt::TUN_TYPE)?;
                dest.tun_type = match a {
                    "ipip" => TUN_IPIP,
                    "gue" => TUN_GUE,
                    "gre" => TUN_GRE,
                    _ => return Err(fail("illegal tunnel type specified")),
                };
            }
            Tag::TunPort => {
                set_option(&mut options, opt::TUN_PORT)?;
                dest.tun_port = string_to_number(a, 1, 65535)
                    .ok_or_else(|| fail("illegal tunnel port specified"))?
                    as u16;
            }
            Tag::TunNocsum => {
                set_option(&mut options, opt::TUN_NOCSUM)?;
            }
            Tag::TunCsum => {
                set_option(&mut options, opt::TUN_CSUM)?;
                dest.tun_flags |= 1;
            }
            Tag::TunRemcsum => {
                set_option(&mut options, opt::TUN_REMCSUM)?;
                dest.tun_flags |= 2;
            }
            Tag::Json => {
                set_option(&mut options, opt::JSON)?;
                format.json = true;
            }
            Tag::Cmd(_) => return Err(fail("multiple commands specified")),
            Tag::Help | Tag::Version => {
                let word = if tag == Tag::Help { "-h" } else { "-v" };
                return Err(fail(format!("invalid option `{word}'")));
            }
        }
    }

    let mut timeouts = [0u32; 3];
    let mut leftovers = sc.leftovers.into_iter();
    if cmd == Cmd::Timeout {
        let (Some(t), Some(f), Some(u)) = (leftovers.next(), leftovers.next(), leftovers.next())
        else {
            return Err(fail("--set option requires 3 timeout values"));
        };
        for (slot, word) in timeouts.iter_mut().zip([t, f, u]) {
            *slot = parse_timeout(Some(&word), 0, MAX_TIMEOUT)?;
        }
    }
    if let Some(extra) = leftovers.next() {
        return Err(fail(format!("unexpected argument {extra}")));
    }
    if let Some(arg) = sched_flags_arg {
        svc.flags &= !(SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3);
        svc.flags |= parse_sched_flags(&svc.sched_name, &arg)?;
    }

    // process_options
    generic_opt_check(cmd, options)?;
    if matches!(cmd, Cmd::Add | Cmd::Edit) {
        if svc.fwmark == 0 && svc.port == 0 && svc.flags & SVC_F_PERSISTENT == 0 {
            return Err(fail("Zero port specified for non-persistent service"));
        }
        if svc.flags & SVC_F_ONEPACKET != 0 && svc.fwmark == 0 && svc.protocol != IPPROTO_UDP {
            return Err(fail(
                "One-Packet Scheduling is only for UDP virtual services",
            ));
        }
        if svc.sched_name.is_empty() {
            svc.sched_name = DEFAULT_SCHEDULER.to_string();
        }
    }
    if matches!(cmd, Cmd::AddDest | Cmd::EditDest) {
        if svc.fwmark == 0 && (dest.fwd == FWD_TUNNEL || dest.fwd == FWD_DROUTE) {
            dest.port = svc.port;
        }
        if dest.af != svc.af && dest.fwd != FWD_TUNNEL {
            return Err(fail(
                "Different address family is allowed only for tunneling servers",
            ));
        }
        let tun_opts = [
            opt::TUN_TYPE,
            opt::TUN_PORT,
            opt::TUN_NOCSUM,
            opt::TUN_CSUM,
            opt::TUN_REMCSUM,
        ];
        if tun_opts.iter().any(|o| options & (1 << o) != 0) && dest.fwd != FWD_TUNNEL {
            return Err(fail("Tunnel options conflict with forward method"));
        }
        tunnel_opt_check(dest.tun_type, options)?;
    }
    if cmd == Cmd::List {
        let any = |os: &[usize]| os.iter().any(|o| options & (1 << o) != 0);
        if (any(&[opt::CONNECTION, opt::TIMEOUT, opt::DAEMON])
            && any(&[opt::STATS, opt::RATE, opt::THRESHOLDS]))
            || (any(&[opt::TIMEOUT, opt::DAEMON]) && any(&[opt::PERSISTENTCONN]))
        {
            return Err(fail("options conflicts in the list command"));
        }
    }
    if cmd == Cmd::Save {
        format.rule = true;
    }
    Ok(Parsed::Run(Box::new(Invocation {
        cmd,
        options,
        format,
        svc,
        dest,
        timeouts,
    })))
}

/// C atoi: leading whitespace, optional sign, digits; 0 when none.
fn atoi(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i64, |acc, b| {
            acc.saturating_mul(10).saturating_add(i64::from(b - b'0'))
        });
    if neg {
        -n
    } else {
        n
    }
}

/// Split one line of `ipvsadm -R` input into argv, as ipvsadm's config_stream_read does:
/// words separated by blanks, the word `ipvsadm` dropped; we also drop everything from a
/// word starting with `#` (a comment). `None` for a line with no words.
pub fn restore_line_argv(prog: &str, line: &str) -> Option<Vec<String>> {
    let mut argv = vec![prog.to_string()];
    for word in line.split([' ', '\t', '\r']) {
        if word.is_empty() || word == "ipvsadm" {
            continue;
        }
        if word.starts_with('#') {
            break;
        }
        argv.push(word.to_string());
    }
    (argv.len() > 1).then_some(argv)
}

#[cfg(test)]
mod tests;
