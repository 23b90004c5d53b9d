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

use ipvs::{
    AddressFamily, Destination, ForwardMethod, Protocol, Service, ServiceFlags, ServiceKey,
    Timeouts, Tunnel, TunnelType,
};

use super::names;

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
    /// The service (TCP 0.0.0.0:0 when none is given).
    pub service: Service,
    /// The real server.
    pub dest: Destination,
    /// --set tcp tcpfin udp.
    pub timeouts: Timeouts,
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

/// ipvsadm's parse_service: `host[:port]`, `[v6]:port` or a bare IPv6 address; the port
/// may be a name from /etc/services for `protocol`.
/// The address and the port if one was given; None if the text is not an address.
fn parse_service(buf: &str, protocol: Option<Protocol>) -> Option<(IpAddr, Option<u16>)> {
    if buf.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut host = buf;
    let mut port: Option<&str> = None;
    if let Some(rest) = buf.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        host = h;
        port = Some(after.strip_prefix(':')?);
    }
    let addr = match names::inet_pton6(host) {
        Some(a6) => IpAddr::V6(a6),
        None => {
            // ipvsadm re-splits at the last ':' here (for the bracket form too).
            if let Some((h, p)) = host.rsplit_once(':') {
                host = h;
                port = Some(p);
            }
            IpAddr::V4(names::inet_aton(host).or_else(|| names::host_to_addr(host))?)
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(match string_to_number(p, 0, 65535) {
            Some(n) => n as u16,
            None => names::service_to_port(p, protocol)?,
        }),
    };
    Some((addr, port))
}

fn parse_sched_flags(sched: &str, arg: &str) -> Result<ServiceFlags, ArgError> {
    let sched = if sched.is_empty() {
        DEFAULT_SCHEDULER
    } else {
        sched
    };
    let mut flags = ServiceFlags::empty();
    // strtok skips empty tokens; ipvsadm with an all-comma argument reads a NULL flag (a
    // crash), which we report as an invalid flag instead.
    let tokens: Vec<&str> = arg.split(',').filter(|t| !t.is_empty()).collect();
    if tokens.is_empty() {
        return Err(fail(format!("invalid scheduler flag `{arg}'")));
    }
    for flag in tokens {
        let (bit, needs) = match flag {
            "flag-1" => (ServiceFlags::SCHED1, None),
            "flag-2" => (ServiceFlags::SCHED2, None),
            "flag-3" => (ServiceFlags::SCHED3, None),
            "sh-fallback" => (ServiceFlags::SH_FALLBACK, Some("sh")),
            "sh-port" => (ServiceFlags::SH_PORT, Some("sh")),
            "mh-fallback" => (ServiceFlags::MH_FALLBACK, Some("mh")),
            "mh-port" => (ServiceFlags::MH_PORT, Some("mh")),
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

/// Check the given options against one row of an ipvsadm option table: `+` compulsory,
/// `x` illegal, `1` exclusive, ` ` optional; `columns[j]` is the option of rule `j` and
/// `context` ends the messages ("the 'list' command").
fn check_option_rules(
    rules: &[u8],
    columns: impl Fn(usize) -> usize,
    options: u64,
    context: &str,
) -> Result<(), ArgError> {
    let mut last = None;
    for (j, &rule) in rules.iter().enumerate() {
        let o = columns(j);
        if options & (1 << o) == 0 {
            if rule == b'+' {
                return Err(fail(format!(
                    "You need to supply the '{}' option for {context}",
                    OPT_NAMES[o]
                )));
            }
            continue;
        }
        if rule == b'x' {
            return Err(fail(format!(
                "Illegal '{}' option with {context}",
                OPT_NAMES[o]
            )));
        }
        if rule == b'1' {
            if let Some(l) = last {
                return Err(fail(format!(
                    "The option '{}' conflicts with the '{}' option in {context}",
                    OPT_NAMES[o], OPT_NAMES[l]
                )));
            }
            last = Some(o);
        }
    }
    Ok(())
}

/// ipvsadm's generic_opt_check: the options legal for `cmd` (`commands_v_options`).
fn generic_opt_check(cmd: Cmd, options: u64) -> Result<(), ArgError> {
    let context = format!("the '{}' command", CMD_NAMES[cmd as usize]);
    check_option_rules(COMMANDS_V_OPTIONS[cmd as usize], |j| j, options, &context)
}

/// Tunnel types x options (port, nocsum, csum, remcsum): ipvsadm's tunnel_types_v_options.
fn tunnel_opt_check(kind: TunnelType, options: u64) -> Result<(), ArgError> {
    const NAMES: [&str; 3] = ["ipip", "gue", "gre"];
    const COLS: [usize; 4] = [
        opt::TUN_PORT,
        opt::TUN_NOCSUM,
        opt::TUN_CSUM,
        opt::TUN_REMCSUM,
    ];
    const ROWS: [&[u8; 4]; 3] = [b"xxxx", b"+111", b"x11x"];
    let row = usize::from(kind.number());
    let context = format!("the '{}' tunnel type", NAMES[row]);
    check_option_rules(ROWS[row], |j| COLS[j], options, &context)
}

/// Parse `argv` (with argv[0]) the way ipvsadm's parse_options + process_options do,
/// including every check made before the kernel is asked.
pub fn parse(argv: &[String]) -> Result<Parsed, ArgError> {
    let prog = argv.first().map_or("ipvsctl", String::as_str);
    let mut sc = Scanner::new(argv);
    let cmd = match first_command(&mut sc, prog)? {
        Ok(cmd) => cmd,
        Err(parsed) => return Ok(parsed),
    };
    let mut line = CommandLine::new(cmd);
    loop {
        match sc.next_opt() {
            Ok(Some((tag, arg))) => line.apply(tag, arg.as_deref())?,
            Ok(None) => break,
            Err(e) => {
                return Err(ArgError {
                    message: format!("{}: {}", e.word, e.what),
                    code: 255,
                })
            }
        }
    }
    line.timeouts = leftover_words(cmd, sc.leftovers)?;
    line.apply_sched_flags()?;
    line.process_options()?;
    Ok(Parsed::Run(Box::new(line.into_invocation())))
}

/// The command word, which must come first; `Err` carries `-h` and `-v`, which need no
/// more parsing.
fn first_command(sc: &mut Scanner<'_>, prog: &str) -> Result<Result<Cmd, Parsed>, ArgError> {
    let first = match sc.next_opt() {
        Ok(Some(x)) => x,
        Ok(None) | Err(_) => return Err(tryhelp(prog)),
    };
    match first {
        (Tag::Cmd(c @ (Cmd::StartDaemon | Cmd::StopDaemon)), Some(state)) => {
            if state != "master" && state != "backup" {
                let which = if c == Cmd::StartDaemon {
                    "start-daemon parameter"
                } else {
                    "start_daemon"
                };
                return Err(fail(format!("illegal {which} specified")));
            }
            Ok(Ok(c))
        }
        (Tag::Cmd(c), _) => Ok(Ok(c)),
        (Tag::Help, _) => Ok(Err(Parsed::Help)),
        (Tag::Version, _) => Ok(Err(Parsed::Version)),
        _ => Err(tryhelp(prog)),
    }
}

/// The words after the options: `--set`'s three timeouts, nothing else.
fn leftover_words(cmd: Cmd, words: Vec<String>) -> Result<Timeouts, ArgError> {
    let mut timeouts = Timeouts::default();
    let mut words = words.into_iter();
    if cmd == Cmd::Timeout {
        let (Some(t), Some(f), Some(u)) = (words.next(), words.next(), words.next()) else {
            return Err(fail("--set option requires 3 timeout values"));
        };
        timeouts = Timeouts {
            tcp: parse_timeout(Some(&t), 0, MAX_TIMEOUT)?,
            tcp_fin: parse_timeout(Some(&f), 0, MAX_TIMEOUT)?,
            udp: parse_timeout(Some(&u), 0, MAX_TIMEOUT)?,
        };
    }
    if let Some(extra) = words.next() {
        return Err(fail(format!("unexpected argument {extra}")));
    }
    Ok(timeouts)
}

/// A command line being read, option by option.
struct CommandLine {
    cmd: Cmd,
    options: u64,
    format: Format,
    service: Service,
    dest: Destination,
    timeouts: Timeouts,
    /// `-b`'s argument, read once the scheduler is known.
    sched_flags_arg: Option<String>,
}

impl CommandLine {
    fn new(cmd: Cmd) -> CommandLine {
        let nowhere = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        CommandLine {
            cmd,
            options: 0,
            format: Format::default(),
            // ipvsadm's zeroed ipvs_service_t: no scheduler until defaulted.
            service: Service::new(ServiceKey::tcp(nowhere, 0), ""),
            // ipvsadm's defaults for a real server: gatewaying, weight 1.
            dest: Destination {
                forward: ForwardMethod::DirectRoute,
                ..Destination::new(nowhere, 0)
            },
            timeouts: Timeouts::default(),
            sched_flags_arg: None,
        }
    }

    fn has(&self, o: usize) -> bool {
        self.options & (1 << o) != 0
    }

    /// The service's port (0 for a firewall mark or before one is given).
    fn service_port(&self) -> u16 {
        match self.service.key {
            ServiceKey::Inet { port, .. } => port,
            ServiceKey::Fwmark { .. } => 0,
        }
    }

    /// The protocol real-server port names are looked up for, as ipvsadm's `svc.protocol`:
    /// none before a service is given, TCP for a firewall mark.
    fn lookup_protocol(&self) -> Option<Protocol> {
        match self.service.key {
            _ if !self.has(opt::SERVICE) => None,
            ServiceKey::Inet { protocol, .. } => Some(protocol),
            ServiceKey::Fwmark { .. } => Some(Protocol::Tcp),
        }
    }

    fn apply(&mut self, tag: Tag, arg: Option<&str>) -> Result<(), ArgError> {
        let a = arg.unwrap_or("");
        match tag {
            Tag::Tcp | Tag::Udp | Tag::Sctp | Tag::Fwmark | Tag::Ipv6 | Tag::Netmask => {
                self.service_address_option(tag, a)
            }
            Tag::Scheduler | Tag::Persistent | Tag::Ops | Tag::Pe | Tag::SchedFlags => {
                self.service_option(tag, arg)
            }
            Tag::Real
            | Tag::Ipip
            | Tag::Gate
            | Tag::Masq
            | Tag::Weight
            | Tag::UThresh
            | Tag::LThresh => self.dest_option(tag, a),
            Tag::TunType | Tag::TunPort | Tag::TunNocsum | Tag::TunCsum | Tag::TunRemcsum => {
                self.tunnel_option(tag, a)
            }
            Tag::Numeric
            | Tag::Stats
            | Tag::Rate
            | Tag::Thresholds
            | Tag::PersistConn
            | Tag::NoSort
            | Tag::Exact
            | Tag::TunInfo
            | Tag::Json => self.format_option(tag),
            Tag::Connection => set_option(&mut self.options, opt::CONNECTION),
            Tag::McastIf => set_option(&mut self.options, opt::MCAST),
            Tag::SyncId => {
                set_option(&mut self.options, opt::SYNCID)?;
                string_to_number(a, 0, 255).ok_or_else(|| fail("illegal syncid specified"))?;
                Ok(())
            }
            Tag::TimeoutList => set_option(&mut self.options, opt::TIMEOUT),
            Tag::Daemon => set_option(&mut self.options, opt::DAEMON),
            Tag::McastGroup => set_option(&mut self.options, opt::MCAST_GROUP),
            Tag::McastPort => set_option(&mut self.options, opt::MCAST_PORT),
            Tag::McastTtl => set_option(&mut self.options, opt::MCAST_TTL),
            Tag::SyncMaxlen => set_option(&mut self.options, opt::SYNC_MAXLEN),
            Tag::Sort => Ok(()),
            Tag::Cmd(_) => Err(fail("multiple commands specified")),
            Tag::Help | Tag::Version => {
                let word = if tag == Tag::Help { "-h" } else { "-v" };
                Err(fail(format!("invalid option `{word}'")))
            }
        }
    }

    /// `-t`/`-u`/`--sctp-service`, `-f`, `-6` and `-M`: what identifies the service and its
    /// persistence mask (IPv6 services default to a /128 mask).
    fn service_address_option(&mut self, tag: Tag, a: &str) -> Result<(), ArgError> {
        match tag {
            Tag::Tcp | Tag::Udp | Tag::Sctp => {
                set_option(&mut self.options, opt::SERVICE)?;
                let protocol = match tag {
                    Tag::Tcp => Protocol::Tcp,
                    Tag::Udp => Protocol::Udp,
                    _ => Protocol::Sctp,
                };
                let (addr, port) = parse_service(a, Some(protocol))
                    .ok_or_else(|| fail("illegal virtual server address[:port] specified"))?;
                self.service.key = ServiceKey::Inet {
                    protocol,
                    addr,
                    port: port.unwrap_or(0),
                };
                if addr.is_ipv6() {
                    self.service.netmask = 128;
                }
            }
            Tag::Fwmark => {
                set_option(&mut self.options, opt::SERVICE)?;
                self.service.key = ServiceKey::fwmark(AddressFamily::Inet, parse_fwmark(a)?);
            }
            Tag::Ipv6 => {
                let ServiceKey::Fwmark { family, .. } = &mut self.service.key else {
                    return Err(fail("-6 used before -f\n"));
                };
                *family = AddressFamily::Inet6;
                self.service.netmask = 128;
            }
            _ => {
                set_option(&mut self.options, opt::NETMASK)?;
                self.service.netmask = parse_netmask(self.service.key.family(), a)?;
            }
        }
        Ok(())
    }

    /// `-s`, `-p`, `-o`, `--pe` and `-b`.
    fn service_option(&mut self, tag: Tag, arg: Option<&str>) -> Result<(), ArgError> {
        let a = arg.unwrap_or("");
        match tag {
            Tag::Scheduler => {
                set_option(&mut self.options, opt::SCHEDULER)?;
                // IP_VS_SCHEDNAME_MAXLEN - 1
                self.service.scheduler = a.chars().take(15).collect();
            }
            Tag::Persistent => {
                set_option(&mut self.options, opt::PERSISTENT)?;
                self.service.flags.insert(ServiceFlags::PERSISTENT);
                self.service.timeout = parse_timeout(arg, 1, MAX_TIMEOUT)?;
            }
            Tag::Ops => {
                set_option(&mut self.options, opt::ONEPACKET)?;
                self.service.flags.insert(ServiceFlags::ONEPACKET);
            }
            Tag::Pe => {
                set_option(&mut self.options, opt::PE)?;
                let name: String = a.chars().take(32).collect();
                self.service.pe_name = (!name.is_empty()).then_some(name);
            }
            _ => {
                set_option(&mut self.options, opt::SCHED_FLAGS)?;
                self.sched_flags_arg = Some(a.chars().take(127).collect());
            }
        }
        Ok(())
    }

    /// `-r`, the forwarding method, `-w`, `-x` and `-y`.
    fn dest_option(&mut self, tag: Tag, a: &str) -> Result<(), ArgError> {
        let threshold = |what: &str| {
            string_to_number(a, 0, i64::from(i32::MAX))
                .ok_or_else(|| fail(format!("illegal {what} specified")))
        };
        match tag {
            Tag::Real => {
                set_option(&mut self.options, opt::SERVER)?;
                let (addr, port) = parse_service(a, self.lookup_protocol())
                    .ok_or_else(|| fail("illegal real server address[:port] specified"))?;
                self.dest.addr = addr;
                self.dest.port = port.unwrap_or(self.service_port());
            }
            Tag::Ipip | Tag::Gate | Tag::Masq => {
                set_option(&mut self.options, opt::FORWARD)?;
                self.dest.forward = match tag {
                    Tag::Ipip => ForwardMethod::Tunnel,
                    Tag::Gate => ForwardMethod::DirectRoute,
                    _ => ForwardMethod::Masquerade,
                };
            }
            Tag::Weight => {
                set_option(&mut self.options, opt::WEIGHT)?;
                self.dest.weight = threshold("weight")? as i32;
            }
            Tag::UThresh => {
                set_option(&mut self.options, opt::UTHRESHOLD)?;
                self.dest.upper_threshold = threshold("u_threshold")? as u32;
            }
            _ => {
                set_option(&mut self.options, opt::LTHRESHOLD)?;
                self.dest.lower_threshold = threshold("l_threshold")? as u32;
            }
        }
        Ok(())
    }

    /// `--tun-type`, `--tun-port` and the checksum options.
    fn tunnel_option(&mut self, tag: Tag, a: &str) -> Result<(), ArgError> {
        let tunnel = &mut self.dest.tunnel;
        match tag {
            Tag::TunType => {
                set_option(&mut self.options, opt::TUN_TYPE)?;
                tunnel.kind = match a {
                    "ipip" => TunnelType::Ipip,
                    "gue" => TunnelType::Gue,
                    "gre" => TunnelType::Gre,
                    _ => return Err(fail("illegal tunnel type specified")),
                };
            }
            Tag::TunPort => {
                set_option(&mut self.options, opt::TUN_PORT)?;
                tunnel.port = string_to_number(a, 1, 65535)
                    .ok_or_else(|| fail("illegal tunnel port specified"))?
                    as u16;
            }
            Tag::TunNocsum => set_option(&mut self.options, opt::TUN_NOCSUM)?,
            Tag::TunCsum => {
                set_option(&mut self.options, opt::TUN_CSUM)?;
                tunnel.flags |= Tunnel::CSUM;
            }
            _ => {
                set_option(&mut self.options, opt::TUN_REMCSUM)?;
                tunnel.flags |= Tunnel::REMCSUM;
            }
        }
        Ok(())
    }

    /// The listing switches: each sets its option and its format flag.
    fn format_option(&mut self, tag: Tag) -> Result<(), ArgError> {
        let f = &mut self.format;
        let (o, flag) = match tag {
            Tag::Numeric => (opt::NUMERIC, &mut f.numeric),
            Tag::Stats => (opt::STATS, &mut f.stats),
            Tag::Rate => (opt::RATE, &mut f.rate),
            Tag::Thresholds => (opt::THRESHOLDS, &mut f.thresholds),
            Tag::PersistConn => (opt::PERSISTENTCONN, &mut f.persistent_conn),
            Tag::NoSort => (opt::NOSORT, &mut f.nosort),
            Tag::Exact => (opt::EXACT, &mut f.exact),
            Tag::TunInfo => (opt::TUN_INFO, &mut f.tun_info),
            _ => (opt::JSON, &mut f.json),
        };
        set_option(&mut self.options, o)?;
        *flag = true;
        Ok(())
    }

    /// `-b`: the scheduler flags replace any set before, named for the scheduler given.
    fn apply_sched_flags(&mut self) -> Result<(), ArgError> {
        if let Some(arg) = &self.sched_flags_arg {
            let flags = &mut self.service.flags;
            flags.remove(ServiceFlags::SCHED1 | ServiceFlags::SCHED2 | ServiceFlags::SCHED3);
            flags.insert(parse_sched_flags(&self.service.scheduler, arg)?);
        }
        Ok(())
    }

    /// ipvsadm's process_options: the option table, then each command's own checks.
    fn process_options(&mut self) -> Result<(), ArgError> {
        generic_opt_check(self.cmd, self.options)?;
        match self.cmd {
            Cmd::Add | Cmd::Edit => self.check_service()?,
            Cmd::AddDest | Cmd::EditDest => self.check_dest()?,
            Cmd::List => self.check_list()?,
            Cmd::Save => self.format.rule = true,
            _ => {}
        }
        Ok(())
    }

    fn check_service(&mut self) -> Result<(), ArgError> {
        let s = &mut self.service;
        let persistent = s.flags.contains(ServiceFlags::PERSISTENT);
        if let ServiceKey::Inet { protocol, port, .. } = s.key {
            if port == 0 && !persistent {
                return Err(fail("Zero port specified for non-persistent service"));
            }
            if s.flags.contains(ServiceFlags::ONEPACKET) && protocol != Protocol::Udp {
                return Err(fail(
                    "One-Packet Scheduling is only for UDP virtual services",
                ));
            }
        }
        if s.scheduler.is_empty() {
            s.scheduler = DEFAULT_SCHEDULER.to_string();
        }
        Ok(())
    }

    fn check_dest(&mut self) -> Result<(), ArgError> {
        let tunnel = self.dest.forward == ForwardMethod::Tunnel;
        if let ServiceKey::Inet { port, .. } = self.service.key {
            if tunnel || self.dest.forward == ForwardMethod::DirectRoute {
                self.dest.port = port;
            }
        }
        if self.dest.family() != self.service.key.family() && !tunnel {
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
        if tun_opts.iter().any(|&o| self.has(o)) && !tunnel {
            return Err(fail("Tunnel options conflict with forward method"));
        }
        tunnel_opt_check(self.dest.tunnel.kind, self.options)
    }

    fn check_list(&self) -> Result<(), ArgError> {
        let any = |os: &[usize]| os.iter().any(|&o| self.has(o));
        if (any(&[opt::CONNECTION, opt::TIMEOUT, opt::DAEMON])
            && any(&[opt::STATS, opt::RATE, opt::THRESHOLDS]))
            || (any(&[opt::TIMEOUT, opt::DAEMON]) && any(&[opt::PERSISTENTCONN]))
        {
            return Err(fail("options conflicts in the list command"));
        }
        Ok(())
    }

    fn into_invocation(self) -> Invocation {
        Invocation {
            cmd: self.cmd,
            options: self.options,
            format: self.format,
            service: self.service,
            dest: self.dest,
            timeouts: self.timeouts,
        }
    }
}

/// `-M`: a dotted IPv4 mask (or host name, as ipvsadm allows), or an IPv6 prefix length.
fn parse_netmask(family: AddressFamily, a: &str) -> Result<u32, ArgError> {
    if family != AddressFamily::Inet6 {
        let m = names::inet_aton(a)
            .or_else(|| names::host_to_addr(a))
            .ok_or_else(|| fail("illegal virtual server persistent mask specified"))?;
        Ok(u32::from_be_bytes(m.octets()))
    } else {
        // atoi
        let n = atoi(a);
        if !(1..=128).contains(&n) {
            return Err(fail("illegal ipv6 netmask specified"));
        }
        Ok(n as u32)
    }
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
