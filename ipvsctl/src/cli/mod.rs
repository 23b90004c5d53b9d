//! The `ipvsctl` command: ipvsadm's command line and output on the `ipvs` library's client.
//!
//! `args` parses (pure), `format` prints (pure), this module runs a parsed command against
//! an [`Ipvs`] backend (the real [`ipvs::Client`], or a fake in tests) and maps errors to
//! ipvsadm's messages and exit statuses.

pub mod args;
pub mod format;
pub mod names;

use std::io::{BufRead, Write};

use ipvs::{Client, Destination, Error, Info, Protocol, Service, ServiceKey, Timeouts};

use args::{Cmd, Invocation, Parsed};
use format::ServiceListing;

/// The operations ipvsctl needs, so the command logic can run against a fake table.
pub trait Ipvs {
    /// GET_INFO.
    fn info(&mut self) -> Result<Info, Error>;
    /// Every service.
    fn services(&mut self) -> Result<Vec<Service>, Error>;
    /// One service.
    fn service(&mut self, key: &ServiceKey) -> Result<Service, Error>;
    /// The destinations of a service.
    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, Error>;
    /// NEW_SERVICE.
    fn add_service(&mut self, s: &Service) -> Result<(), Error>;
    /// SET_SERVICE.
    fn edit_service(&mut self, s: &Service) -> Result<(), Error>;
    /// DEL_SERVICE.
    fn delete_service(&mut self, key: &ServiceKey) -> Result<(), Error>;
    /// NEW_DEST.
    fn add_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<(), Error>;
    /// SET_DEST.
    fn edit_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<(), Error>;
    /// DEL_DEST.
    fn delete_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<(), Error>;
    /// GET_CONFIG.
    fn timeouts(&mut self) -> Result<Timeouts, Error>;
    /// SET_CONFIG.
    fn set_timeouts(&mut self, t: &Timeouts) -> Result<(), Error>;
    /// ZERO.
    fn zero(&mut self, key: Option<&ServiceKey>) -> Result<(), Error>;
    /// FLUSH.
    fn flush(&mut self) -> Result<(), Error>;
}

impl Ipvs for Client {
    fn info(&mut self) -> Result<Info, Error> {
        Client::info(self)
    }
    fn services(&mut self) -> Result<Vec<Service>, Error> {
        Client::services(self)
    }
    fn service(&mut self, key: &ServiceKey) -> Result<Service, Error> {
        Client::service(self, key)
    }
    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<Destination>, Error> {
        Client::destinations(self, key)
    }
    fn add_service(&mut self, s: &Service) -> Result<(), Error> {
        Client::add_service(self, s)
    }
    fn edit_service(&mut self, s: &Service) -> Result<(), Error> {
        Client::edit_service(self, s)
    }
    fn delete_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        Client::delete_service(self, key)
    }
    fn add_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<(), Error> {
        Client::add_destination(self, key, d)
    }
    fn edit_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<(), Error> {
        Client::edit_destination(self, key, d)
    }
    fn delete_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<(), Error> {
        Client::delete_destination(self, key, d.addr, d.port)
    }
    fn timeouts(&mut self) -> Result<Timeouts, Error> {
        Client::timeouts(self)
    }
    fn set_timeouts(&mut self, t: &Timeouts) -> Result<(), Error> {
        Client::set_timeouts(self, t)
    }
    fn zero(&mut self, key: Option<&ServiceKey>) -> Result<(), Error> {
        Client::zero(self, key)
    }
    fn flush(&mut self) -> Result<(), Error> {
        Client::flush(self)
    }
}

/// The message ipvsadm prints when the kernel has no IPVS.
pub const NO_IPVS: &str = "Can't initialize ipvs: Protocol not available\n\
                           Are you sure that IP Virtual Server is built in the kernel or as module?";

/// Run ipvsctl with `argv` (including argv[0]) against a backend made on first use by
/// `connect`. Returns the exit status.
pub fn run<B: Ipvs>(
    argv: &[String],
    connect: &mut dyn FnMut() -> Result<B, Error>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let prog = argv
        .first()
        .cloned()
        .unwrap_or_else(|| "ipvsctl".to_string());
    let parsed = if argv.len() <= 1 {
        // No arguments: list the table, as ipvsadm does.
        args::parse(&[prog.clone(), "-L".to_string()])
    } else {
        args::parse(argv)
    };
    let inv = match parsed {
        Ok(Parsed::Run(inv)) => inv,
        Ok(Parsed::Help) => {
            let _ = out.write_all(usage(&prog).as_bytes());
            return 0;
        }
        Ok(Parsed::Version) => {
            let _ = writeln!(
                out,
                "ipvsctl {} (ipvsadm v1.31 compatible)",
                env!("CARGO_PKG_VERSION")
            );
            return 0;
        }
        Err(e) => {
            let _ = writeln!(err, "{}", e.message);
            return e.code;
        }
    };
    let mut backend = match connect() {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(err, "{}", init_error_message(&e));
            return 2;
        }
    };
    if inv.cmd == Cmd::Restore {
        return restore(&prog, &mut backend, input, out, err);
    }
    execute(&inv, &mut backend, out, err)
}

fn init_error_message(e: &Error) -> String {
    match e {
        Error::NotAvailable => NO_IPVS.to_string(),
        other => format!(
            "Can't initialize ipvs: {}\nAre you sure that IP Virtual Server is built in the kernel or as module?",
            strerror_for(Op::Other, other)
        ),
    }
}

/// `ipvsadm -R`: run each line of `input` as a command. A line that does not parse stops
/// the restore with its message (status 2, as ipvsadm); a kernel error is reported and the
/// restore continues; the status is 255 if any line failed.
fn restore<B: Ipvs>(
    prog: &str,
    backend: &mut B,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut status = 0;
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(err, "{prog}: reading standard input: {e}");
                return 2;
            }
        }
        let Some(argv) = args::restore_line_argv(prog, line.trim_end_matches('\n')) else {
            continue;
        };
        match args::parse(&argv) {
            Ok(Parsed::Run(inv)) if inv.cmd == Cmd::Restore => {
                let e = args::tryhelp(prog);
                let _ = writeln!(err, "{}", e.message);
                return e.code;
            }
            Ok(Parsed::Run(inv)) => {
                if execute(&inv, backend, out, err) != 0 {
                    status = 255;
                }
            }
            Ok(Parsed::Help) => {
                let _ = out.write_all(usage(prog).as_bytes());
                return 0;
            }
            Ok(Parsed::Version) => {
                let _ = writeln!(out, "ipvsctl {}", env!("CARGO_PKG_VERSION"));
                return 0;
            }
            Err(e) => {
                let _ = writeln!(err, "{}", e.message);
                return e.code;
            }
        }
    }
    status
}

/// The libipvs function a request stands for, which picks ipvsadm's error wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    AddService,
    EditService,
    DelService,
    ZeroService,
    AddDest,
    EditDest,
    DelDest,
    GetService,
    Other,
}

const ESRCH: i32 = 3;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const EPERM: i32 = 1;

fn errno_of(e: &Error) -> Option<i32> {
    match e {
        Error::ServiceNotFound { .. } => Some(ESRCH),
        Error::DestinationNotFound { .. } | Error::UnknownScheduler { .. } => Some(ENOENT),
        Error::AlreadyExists { .. } => Some(EEXIST),
        Error::PermissionDenied { .. } => Some(EPERM),
        Error::Kernel { errno, .. } => Some(*errno),
        Error::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

/// ipvs_strerror: ipvsadm's wording for a failed request.
fn strerror_for(op: Op, e: &Error) -> String {
    let Some(errno) = errno_of(e) else {
        return e.to_string();
    };
    let specific = match (op, errno) {
        (Op::AddService, EEXIST) => Some("Service already exists"),
        (Op::AddService | Op::EditService, ENOENT) => {
            Some("Scheduler or persistence engine not found")
        }
        (Op::EditService | Op::DelService | Op::ZeroService | Op::GetService, ESRCH) => {
            Some("No such service")
        }
        (Op::AddDest | Op::EditDest | Op::DelDest, ESRCH) => Some("Service not defined"),
        (Op::AddDest, EEXIST) => Some("Destination already exists"),
        (Op::EditDest | Op::DelDest, ENOENT) => Some("No such destination"),
        _ => None,
    };
    if let Some(text) = specific {
        return text.to_string();
    }
    match errno {
        EPERM => "Permission denied (you must be root)".to_string(),
        22 => "Invalid operation.  Possibly wrong module version, address not unicast, ..."
            .to_string(),
        92 => "Protocol not available".to_string(),
        12 => "Memory allocation problem".to_string(),
        95 => "Operation not supported with IPv6".to_string(),
        97 => "Operation not supported with specified address family".to_string(),
        90 => "Module is wrong version".to_string(),
        n => {
            let text = std::io::Error::from_raw_os_error(n).to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}

/// A service with its destinations, for the listings.
fn listing(s: &Service, dests: Vec<Destination>) -> ServiceListing {
    ServiceListing {
        service: s.clone(),
        dests,
    }
}

fn write_out(out: &mut dyn Write, text: &str) -> i32 {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(_) => 1,
    }
}

/// Run one parsed command (anything but -R). Returns the exit status.
pub fn execute<B: Ipvs>(
    inv: &Invocation,
    b: &mut B,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let key = inv.service.key;
    let result = match inv.cmd {
        Cmd::List | Cmd::Save => return list(inv, b, out, err),
        Cmd::Flush => b.flush().map_err(|e| (Op::Other, e)),
        Cmd::Add => b.add_service(&inv.service).map_err(|e| (Op::AddService, e)),
        Cmd::Edit => b
            .edit_service(&inv.service)
            .map_err(|e| (Op::EditService, e)),
        Cmd::Del => b.delete_service(&key).map_err(|e| (Op::DelService, e)),
        Cmd::Zero => {
            let which = inv.has(args::opt::SERVICE).then_some(&key);
            b.zero(which).map_err(|e| (Op::ZeroService, e))
        }
        Cmd::AddDest => b
            .add_destination(&key, &inv.dest)
            .map_err(|e| (Op::AddDest, e)),
        Cmd::EditDest => b
            .edit_destination(&key, &inv.dest)
            .map_err(|e| (Op::EditDest, e)),
        Cmd::DelDest => b
            .delete_destination(&key, &inv.dest)
            .map_err(|e| (Op::DelDest, e)),
        Cmd::Timeout => b.set_timeouts(&inv.timeouts).map_err(|e| (Op::Other, e)),
        Cmd::StartDaemon | Cmd::StopDaemon => {
            let _ = writeln!(err, "ipvsctl does not manage the connection sync daemon");
            return 2;
        }
        Cmd::Restore => {
            let e = args::tryhelp("ipvsctl");
            let _ = writeln!(err, "{}", e.message);
            return e.code;
        }
    };
    match result {
        Ok(()) => 0,
        Err((op, e)) => {
            let _ = writeln!(err, "{}", strerror_for(op, &e));
            255
        }
    }
}

fn list<B: Ipvs>(inv: &Invocation, b: &mut B, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    use args::opt;
    let fmt = &inv.format;
    if inv.cmd == Cmd::List && inv.has(opt::CONNECTION) {
        return match std::fs::read_to_string("/proc/net/ip_vs_conn") {
            Ok(text) => write_out(out, &connections(&text, fmt)),
            Err(_) => {
                let _ = writeln!(err, "cannot open file /proc/net/ip_vs_conn");
                1
            }
        };
    }
    if inv.cmd == Cmd::List && inv.has(opt::TIMEOUT) {
        return match b.timeouts() {
            Ok(t) => write_out(out, &format::timeout_line(&t)),
            Err(e) => {
                let _ = writeln!(err, "{}", strerror_for(Op::Other, &e));
                1
            }
        };
    }
    if inv.cmd == Cmd::List && inv.has(opt::DAEMON) {
        // No sync daemon support: nothing runs, so nothing to list (as ipvsadm then).
        return 0;
    }
    if inv.cmd == Cmd::List && inv.has(opt::SERVICE) {
        let entry = b.service(&inv.service.key).and_then(|s| {
            let dests = b.destinations(&s.key)?;
            Ok(listing(&s, dests))
        });
        return match entry {
            Ok(entry) if fmt.json => {
                let info = b.info().unwrap_or(Info {
                    version: 0,
                    conn_table_size: 0,
                });
                write_out(out, &format::json(&info, &mut [entry], fmt))
            }
            Ok(entry) => write_out(out, &format::list_service(&entry, fmt)),
            Err(e) => {
                let _ = writeln!(err, "{}", strerror_for(Op::GetService, &e));
                1
            }
        };
    }
    let table = b.info().and_then(|info| {
        let services = b.services()?;
        let mut entries = Vec::with_capacity(services.len());
        for s in &services {
            let dests = b.destinations(&s.key)?;
            entries.push(listing(s, dests));
        }
        Ok((info, entries))
    });
    match table {
        Ok((info, mut entries)) => {
            let text = if fmt.json {
                format::json(&info, &mut entries, fmt)
            } else {
                format::list_all(&info, &mut entries, fmt)
            };
            write_out(out, &text)
        }
        Err(e) => {
            let _ = writeln!(err, "{}", strerror_for(Op::Other, &e));
            1
        }
    }
}

/// `ipvsadm -L -c`: /proc/net/ip_vs_conn reformatted (list_conn/print_conn).
pub fn connections(proc_text: &str, fmt: &args::Format) -> String {
    use std::net::{IpAddr, Ipv4Addr};
    let mut out = String::from("IPVS connection entries\n");
    if fmt.persistent_conn {
        out.push_str(&format!(
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} {}\n",
            "state", "source", "virtual", "destination", "pe name", "pe_data"
        ));
    } else {
        out.push_str(&format!(
            "pro expire {:<11} {:<18} {:<18} {}\n",
            "state", "source", "virtual", "destination"
        ));
    }
    let parse_addr = |t: &str| -> IpAddr {
        t.parse::<IpAddr>()
            .unwrap_or_else(|_| IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(t, 16).unwrap_or(0))))
    };
    for line in proc_text.lines().skip(1) {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 9 {
            continue;
        }
        let proto = match w[0] {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        };
        let port = |t: &str| u16::from_str_radix(t, 16).unwrap_or(0);
        let name = |a: &str, p: &str| {
            names::addrport_to_anyname(parse_addr(a), port(p), proto, fmt.numeric)
        };
        let (c, v, d) = (name(w[1], w[2]), name(w[3], w[4]), name(w[5], w[6]));
        let expires: u32 = w[8].parse().unwrap_or(0);
        let expire = format!("{:02}:{:02}", expires / 60, expires % 60);
        if fmt.persistent_conn && w.len() >= 11 {
            out.push_str(&format!(
                "{:<3} {:<6} {:<11} {c:<18} {v:<18} {d:<16} {:<18} {}\n",
                w[0], expire, w[7], w[9], w[10]
            ));
        } else {
            out.push_str(&format!(
                "{:<3} {expire:<6} {:<11} {c:<18} {v:<18} {d}\n",
                w[0], w[7]
            ));
        }
    }
    out
}

/// `-h` text (ipvsadm's, with our program name).
pub fn usage(prog: &str) -> String {
    let p = prog;
    format!(
        "ipvsctl {ver} (ipvsadm v1.31 compatible)\n\
Usage:\n  \
{p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags]\n  \
{p} -D virtual-service\n  \
{p} -C\n  \
{p} -R\n  \
{p} -S [-n]\n  \
{p} -a|e virtual-service -r server-address [options]\n  \
{p} -d virtual-service -r server-address\n  \
{p} -L|l [virtual-service] [options]\n  \
{p} -Z [virtual-service]\n  \
{p} --set tcp tcpfin udp\n  \
{p} -h\n\n\
Commands:\n\
Either long or short options are allowed.\n  \
--add-service     -A        add virtual service with options\n  \
--edit-service    -E        edit virtual service with options\n  \
--delete-service  -D        delete virtual service\n  \
--clear           -C        clear the whole table\n  \
--restore         -R        restore rules from stdin\n  \
--save            -S        save rules to stdout\n  \
--add-server      -a        add real server with options\n  \
--edit-server     -e        edit real server with options\n  \
--delete-server   -d        delete real server\n  \
--list            -L|-l     list the table\n  \
--zero            -Z        zero counters in a service or all services\n  \
--set tcp tcpfin udp        set connection timeout values\n  \
--help            -h        display this help message\n\n\
virtual-service:\n  \
--tcp-service|-t  service-address   service-address is host[:port]\n  \
--udp-service|-u  service-address   service-address is host[:port]\n  \
--sctp-service    service-address   service-address is host[:port]\n  \
--fwmark-service|-f fwmark          fwmark is an integer greater than zero\n\n\
Options:\n  \
--ipv6         -6                   fwmark entry uses IPv6\n  \
--scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh,\n                                      \
the default scheduler is wlc.\n  \
--persistent   -p [timeout]         persistent service\n  \
--netmask      -M netmask           persistent granularity mask\n  \
--real-server  -r server-address    server-address is host (and port)\n  \
--gatewaying   -g                   gatewaying (direct routing) (default)\n  \
--ipip         -i                   ipip encapsulation (tunneling)\n  \
--masquerading -m                   masquerading (NAT)\n  \
--tun-type      type                one of ipip|gue|gre,\n                                      \
the default tunnel type is ipip.\n  \
--tun-port      port                tunnel destination port\n  \
--tun-nocsum                        tunnel encapsulation without checksum\n  \
--tun-csum                          tunnel encapsulation with checksum\n  \
--tun-remcsum                       tunnel encapsulation with remote checksum\n  \
--weight       -w weight            capacity of real server\n  \
--u-threshold  -x uthreshold        upper threshold of connections\n  \
--l-threshold  -y lthreshold        lower threshold of connections\n  \
--connection   -c                   output of current IPVS connections\n  \
--timeout                           output of timeout (tcp tcpfin udp)\n  \
--stats                             output of statistics information\n  \
--rate                              output of rate information\n  \
--exact                             expand numbers (display exact values)\n  \
--thresholds                        output of thresholds information\n  \
--persistent-conn                   output of persistent connection info\n  \
--tun-info                          output of tunnel information\n  \
--nosort                            disable sorting output of service/server entries\n  \
--sort                              does nothing, for backwards compatibility\n  \
--ops          -o                   one-packet scheduling\n  \
--numeric      -n                   numeric output of addresses and ports\n  \
--sched-flags  -b flags             scheduler flags (comma-separated)\n  \
--json                              list the table as JSON (ipvsctl only)\n",
        ver = env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests;
