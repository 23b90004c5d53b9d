//! ipvsctl against ipvsadm, byte for byte, on a real IPVS kernel (run in the VM).
//!
//! Each table is built with `ipvsadm -R` in a fresh network namespace and listed by both
//! tools in every listing mode; then it is built again with `ipvsctl -R` and with one
//! `ipvsctl -A/-a` command per line, each in its own namespace, and `ipvsadm -Sn` must save
//! what the ipvsadm-built table saves. A mismatch fails with a unified-style diff.
//!
//! Namespaces are made with iproute2 (`ip netns add poold-ipvsctl-...`), so every command
//! of a test runs in the same namespace, and a Drop guard deletes them even on failure.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const IPVSADM: &str = "/usr/sbin/ipvsadm";
const IPVSCTL: &str = env!("CARGO_BIN_EXE_ipvsctl");

fn ip_binary() -> &'static str {
    if std::path::Path::new("/usr/bin/ip").exists() {
        "/usr/bin/ip"
    } else {
        "/sbin/ip"
    }
}

/// A network namespace that lives as long as the value.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("poold-ipvsctl-{}-{n}-{tag}", std::process::id());
        let status = Command::new(ip_binary())
            .args(["netns", "add", &name])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "ip netns add {name} failed"
        );
        let ns = Netns { name };
        // lo up, so that local real servers get the Local forwarding method.
        let up = Command::new(ip_binary())
            .args(["-n", &ns.name, "link", "set", "lo", "up"])
            .status();
        assert!(
            up.is_ok_and(|s| s.success()),
            "ip -n {} link set lo up failed",
            ns.name
        );
        ns
    }

    /// Run `prog args` in the namespace with `stdin` as input.
    fn run(&self, prog: &str, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(ip_binary())
            .args(["netns", "exec", &self.name, prog])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {prog}: {e}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Run and require success; returns stdout.
    fn ok(&self, prog: &str, args: &[&str], stdin: &str) -> String {
        let out = self.run(prog, args, stdin);
        assert!(
            out.status.success(),
            "{prog} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(ip_binary())
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A line diff good enough to see what differs.
fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let mut out = String::new();
    for i in 0..w.len().max(g.len()) {
        match (w.get(i), g.get(i)) {
            (Some(a), Some(b)) if a == b => out.push_str(&format!("  {a}\n")),
            (a, b) => {
                if let Some(a) = a {
                    out.push_str(&format!("- {a:?}\n"));
                }
                if let Some(b) = b {
                    out.push_str(&format!("+ {b:?}\n"));
                }
            }
        }
    }
    if want.ends_with('\n') != got.ends_with('\n') {
        out.push_str("(final newline differs)\n");
    }
    out
}

fn assert_same(what: &str, want: &str, got: &str) {
    assert!(
        want == got,
        "{what}: ipvsctl differs from ipvsadm (- ipvsadm, + ipvsctl):\n{}",
        diff(want, got)
    );
}

/// The listing modes compared for every table.
const MODES: &[&[&str]] = &[
    &["-Ln"],
    &["-L", "-n", "--stats"],
    &["-Ln", "--stats", "--exact"],
    &["-Ln", "--rate"],
    &["-Ln", "--rate", "--exact"],
    &["-Ln", "--thresholds"],
    &["-Ln", "--persistent-conn"],
    &["-Ln", "--nosort"],
    &["-Ln", "--tun-info"],
    &["-L"],
    &["-l", "-n"],
    &["-Sn"],
    &["-S"],
    &["--save", "--numeric"],
    &["-L", "--timeout"],
];

/// The service options (`-t addr:port`, `-f 7 -6`, ...) of the first `-A` line of `rules`.
fn first_service(rules: &str) -> Vec<String> {
    let line = rules
        .lines()
        .find(|l| l.trim_start().starts_with("-A"))
        .expect("an -A line");
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut svc = Vec::new();
    let mut i = 1;
    while i < words.len() {
        match words[i] {
            "-t" | "-u" | "--sctp-service" | "-f" => {
                svc.push(words[i].to_string());
                svc.push(words[i + 1].to_string());
                i += 2;
            }
            "-6" => {
                svc.push("-6".to_string());
                i += 1;
            }
            _ => i += 1,
        }
    }
    svc
}

/// Build `rules` with ipvsadm, compare every listing, then rebuild with ipvsctl (-R and
/// single commands) and compare ipvsadm's saves.
fn conformance(tag: &str, rules: &str) {
    let reference = Netns::new(tag);
    reference.ok(IPVSADM, &["-R"], rules);
    let mut modes: Vec<Vec<String>> = MODES
        .iter()
        .map(|m| m.iter().map(|s| s.to_string()).collect())
        .collect();
    let svc = first_service(rules);
    for base in [
        &["-Ln"][..],
        &["-L", "-n", "--stats"],
        &["-Ln", "--thresholds"],
        &["-S", "-n"],
    ] {
        let mut m: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        if base[0] == "-S" {
            continue; // -S takes no service
        }
        m.extend(svc.iter().cloned());
        modes.push(m);
    }
    for mode in &modes {
        let args: Vec<&str> = mode.iter().map(String::as_str).collect();
        let want = reference.run(IPVSADM, &args, "");
        let got = reference.run(IPVSCTL, &args, "");
        let what = format!(
            "table {tag}, ipvsctl {} (ipvsctl status {}, stderr {:?})",
            args.join(" "),
            got.status,
            String::from_utf8_lossy(&got.stderr)
        );
        assert_same(
            &what,
            &String::from_utf8_lossy(&want.stdout),
            &String::from_utf8_lossy(&got.stdout),
        );
        assert_eq!(want.status.code(), got.status.code(), "{what}: exit status");
        assert!(
            want.status.success(),
            "{what}: ipvsadm itself failed: {want:?}"
        );
    }
    let saved = reference.ok(IPVSADM, &["-Sn"], "");
    assert!(!saved.is_empty(), "table {tag}: ipvsadm saved nothing");

    let restored = Netns::new(tag);
    restored.ok(IPVSCTL, &["-R"], rules);
    assert_same(
        &format!("table {tag}: ipvsadm -Sn after ipvsctl -R"),
        &saved,
        &restored.ok(IPVSADM, &["-Sn"], ""),
    );

    let commands = Netns::new(tag);
    for line in rules.lines().filter(|l| !l.trim().is_empty()) {
        let args: Vec<&str> = line
            .split_whitespace()
            .filter(|w| *w != "ipvsadm")
            .collect();
        commands.ok(IPVSCTL, &args, "");
    }
    assert_same(
        &format!("table {tag}: ipvsadm -Sn after ipvsctl commands"),
        &saved,
        &commands.ok(IPVSADM, &["-Sn"], ""),
    );
}

/// `-L -c` with the expire column (counting down between two runs) masked.
fn mask_expire(listing: &str) -> String {
    listing
        .lines()
        .map(|line| match line.split_once(' ') {
            // "TCP 14:59  ESTABLISHED ...": the token after the protocol.
            Some((proto, rest)) if rest.len() >= 5 && rest.as_bytes()[2] == b':' => {
                format!("{proto} mm:ss{}\n", &rest[5..])
            }
            _ => format!("{line}\n"),
        })
        .collect()
}

/// Lists `args` with ipvsadm, ipvsctl, ipvsadm again, until both ipvsadm runs agree (the
/// rate estimator ticks every 2 s, connections expire), then compares ipvsctl with them.
/// Returns ipvsadm's listing.
fn same_listing(ns: &Netns, args: &[&str], mask: fn(&str) -> String) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let before = mask(&ns.ok(IPVSADM, args, ""));
        let got = mask(&ns.ok(IPVSCTL, args, ""));
        let after = mask(&ns.ok(IPVSADM, args, ""));
        if before == after {
            assert_same(&format!("ipvsctl {}", args.join(" ")), &before, &got);
            return before;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ipvsadm {args:?} never gave the same listing twice in a row"
        );
    }
}

/// Moves the calling thread into the named network namespace at `path`.
fn enter_netns(path: &str) {
    let netns = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// One exchange with [`serve_pings`]: "keep" leaves the connection open on both sides,
/// "quit" has the server close first.
fn ping(addr: &str, keep: bool) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(if keep { b"keep" } else { b"quit" })
        .unwrap();
    let mut reply = vec![0; 1004];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..4], b"pong");
    stream
}

/// On a thread of its own in the namespace at `netns`: answers [`ping`]s on every address
/// until `stop`, then closes the connections it kept.
fn serve_pings(netns: &str, addrs: &[&str], stop: &AtomicBool) {
    use std::io::{Read, Write};
    enter_netns(netns);
    let listeners: Vec<_> = addrs
        .iter()
        .map(|a| {
            let l = std::net::TcpListener::bind(a).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let mut kept = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let mut idle = true;
        for listener in &listeners {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    idle = false;
                    conn.set_nonblocking(false).unwrap();
                    let mut request = [0; 4];
                    conn.read_exact(&mut request).unwrap();
                    let mut reply = b"pong".to_vec();
                    reply.resize(1004, b'.');
                    conn.write_all(&reply).unwrap();
                    if &request == b"keep" {
                        kept.push(conn);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
        }
        if idle {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// The numbers on the first service line of an ipvsadm listing ("TCP  VIP:PORT  n n n").
fn service_fields(listing: &str) -> Vec<u64> {
    listing
        .lines()
        .find(|l| l.starts_with("TCP "))
        .map(|l| {
            l.split_whitespace()
                .skip(2)
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The tests, in a module so that `--filter conformance` selects them.
mod conformance {
    use super::*;

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn ipv4_tcp_masquerade() {
        conformance(
            "v4tcp",
            "-A -t 10.0.0.1:80 -s wlc\n\
             -a -t 10.0.0.1:80 -r 10.0.1.3:8080 -m -w 3\n\
             -a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 1\n\
             -a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 2\n",
        );
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn udp_one_packet_persistent_netmask() {
        conformance(
            "udpops",
            "-A -u 10.0.0.2:53 -s rr -p 600 -M 255.255.255.0 -o\n\
             -a -u 10.0.0.2:53 -r 10.0.2.1:53 -m -w 1\n\
             -a -u 10.0.0.2:53 -r 10.0.2.2:5353 -m -w 4\n\
             -A -u 10.0.0.3:123 -s wrr -o\n\
             -a -u 10.0.0.3:123 -r 10.0.2.9 -g -w 7\n",
        );
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn ipv6_services() {
        conformance(
            "v6",
            "-A -t [2001:db8::1]:443 -s lc\n\
             -a -t [2001:db8::1]:443 -r [2001:db8::20]:8443 -m -w 1\n\
             -a -t [2001:db8::1]:443 -r [2001:db8::10]:8443 -m -w 2\n\
             -A -u [2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535 -s sed -p 60 -M 64\n\
             -a -u [2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535 -r [2001:db8:aaaa:bbbb:cccc:dddd:eeee:fff0]:65535 -m -w 65535\n",
        );
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn fwmark_services_ipv4_and_ipv6() {
        conformance(
            "fwmark",
            "-A -f 7 -s wrr -p 300\n\
             -a -f 7 -r 10.0.3.1:0 -g -w 1\n\
             -a -f 7 -r 10.0.3.2:0 -g -w 2\n\
             -A -f 8 -6 -s rr -p 120 -M 64\n\
             -a -f 8 -6 -r [2001:db8::3]:0 -g -w 1\n\
             -A -f 4294967295 -s lblc\n\
             -a -f 4294967295 -r 10.0.3.9:0 -m -w 1\n",
        );
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn sctp_service() {
        conformance(
            "sctp",
            "-A --sctp-service 10.0.0.4:5000 -s rr\n\
             -a --sctp-service 10.0.0.4:5000 -r 10.0.4.1:5001 -m -w 1\n\
             -a --sctp-service 10.0.0.4:5000 -r 10.0.4.2:5000 -g -w 1\n",
        )
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn thresholds_and_weight_zero() {
        conformance(
            "thresh",
            "-A -t 10.0.0.5:80 -s wlc\n\
             -a -t 10.0.0.5:80 -r 10.0.5.1:80 -m -w 0 -x 100 -y 50\n\
             -a -t 10.0.0.5:80 -r 10.0.5.2:80 -m -w 5 -x 2147483647 -y 0\n\
             -a -t 10.0.0.5:80 -r 10.0.5.3:80 -m -w 0\n",
        );
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn scheduler_flags() {
        conformance(
            "schedflags",
            "-A -t 10.0.0.6:80 -s sh -b sh-fallback,sh-port\n\
             -a -t 10.0.0.6:80 -r 10.0.6.1:80 -m -w 1\n\
             -A -t 10.0.0.6:81 -s sh -b sh-port\n\
             -a -t 10.0.0.6:81 -r 10.0.6.1:81 -m -w 1\n\
             -A -t 10.0.0.6:82 -s rr -b flag-1,flag-3\n\
             -A -u 10.0.0.6:83 -s mh -b mh-fallback,mh-port -o\n\
             -a -u 10.0.0.6:83 -r 10.0.6.2:83 -m -w 1\n",
        );
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn all_forwarding_methods() {
        conformance(
            "fwd",
            "-A -t 10.0.0.7:80 -s rr\n\
             -a -t 10.0.0.7:80 -r 10.0.7.1:80 -g -w 1\n\
             -a -t 10.0.0.7:80 -r 10.0.7.2:8080 -m -w 1\n\
             -a -t 10.0.0.7:80 -r 10.0.7.3:80 -i -w 1\n\
             -a -t 10.0.0.7:80 -r 127.0.0.1:80 -m -w 1\n\
             -A -t 10.0.0.7:90 -s rr\n\
             -a -t 10.0.0.7:90 -r 10.0.7.4:90 -i -w 2 --tun-type gue --tun-port 6080 --tun-csum\n\
             -a -t 10.0.0.7:90 -r 10.0.7.5:90 -i -w 2 --tun-type ipip\n",
        );
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn persistent_port_zero_service() {
        conformance(
            "port0",
            "-A -t 10.0.0.9:0 -s lblc -p 120\n\
             -a -t 10.0.0.9:0 -r 10.0.9.1:0 -g -w 1\n\
             -A -t 10.0.0.9:443 -s wlc -p -M 255.255.0.0\n\
             -a -t 10.0.0.9:443 -r 10.0.9.2:443 -g -w 1\n",
        );
    }

    /// 60 real servers inserted in scrambled order, with addresses far apart (libipvs compares
    /// by unsigned subtraction read as int, so 200.x sorts before 10.x: ipvsctl must agree).
    #[test]
    #[ignore = "vm: needs IPVS"]
    fn many_destinations_sorted_like_ipvsadm() {
        let mut rules = String::from("-A -t 10.0.0.10:80 -s wrr\n");
        for i in 0..60u32 {
            let j = (i * 37) % 60;
            let first = [10, 200, 100, 172, 1, 250][(j % 6) as usize];
            rules.push_str(&format!(
                "-a -t 10.0.0.10:80 -r {first}.{}.0.{}:{} -m -w {}\n",
                j / 6,
                j + 1,
                8000 + j % 3,
                j % 5
            ));
        }
        conformance("manydests", &rules);
    }

    /// 40 services of every kind, inserted in scrambled order.
    #[test]
    #[ignore = "vm: needs IPVS"]
    fn many_services_sorted_like_ipvsadm() {
        let mut rules = String::new();
        for i in 0..40u32 {
            let j = (i * 17) % 40;
            let svc = match j % 5 {
                0 => format!("-t 10.{}.0.1:{}", j, 80 + j),
                1 => format!("-u 200.{}.0.1:{}", j, 53 + j),
                2 => format!("-t [2001:db8::{:x}]:{}", j + 1, 443),
                3 => format!("-f {}", j + 1),
                _ => format!("--sctp-service 172.16.{}.1:{}", j, 9000 + j),
            };
            rules.push_str(&format!("-A {svc} -s rr\n"));
            let dest = match j % 5 {
                2 => format!("[2001:db8::1:{:x}]:8443", j + 1),
                _ => format!("10.99.{}.{}:{}", j, j + 1, 8000 + j),
            };
            rules.push_str(&format!("-a {svc} -r {dest} -m -w {}\n", j % 4));
        }
        conformance("manysvcs", &rules);
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn timeouts_set_by_ipvsctl_read_by_ipvsadm() {
        let ns = Netns::new("timeout");
        ns.ok(IPVSCTL, &["--set", "900", "120", "300"], "");
        let want = ns.ok(IPVSADM, &["-L", "--timeout"], "");
        assert_same(
            "-L --timeout",
            &want,
            &ns.ok(IPVSCTL, &["-L", "--timeout"], ""),
        );
        assert!(want.contains("900 120 300"), "{want}");
    }

    #[test]
    #[ignore = "vm: needs IPVS"]
    fn edit_delete_zero_and_clear() {
        let ns = Netns::new("edit");
        let setup = "-A -t 10.0.0.11:80 -s rr -p 60\n-a -t 10.0.0.11:80 -r 10.0.11.1:80 -m -w 1\n\
                     -a -t 10.0.0.11:80 -r 10.0.11.2:80 -m -w 1\n-A -u 10.0.0.11:53 -s rr\n";
        ns.ok(IPVSCTL, &["-R"], setup);
        ns.ok(IPVSCTL, &["-E", "-t", "10.0.0.11:80", "-s", "wrr"], "");
        ns.ok(
            IPVSCTL,
            &[
                "-e",
                "-t",
                "10.0.0.11:80",
                "-r",
                "10.0.11.1:80",
                "-m",
                "-w",
                "0",
            ],
            "",
        );
        ns.ok(
            IPVSCTL,
            &["-d", "-t", "10.0.0.11:80", "-r", "10.0.11.2:80"],
            "",
        );
        ns.ok(IPVSCTL, &["-D", "-u", "10.0.0.11:53"], "");
        ns.ok(IPVSCTL, &["-Z"], "");
        ns.ok(IPVSCTL, &["-Z", "-t", "10.0.0.11:80"], "");
        let saved = ns.ok(IPVSADM, &["-Sn"], "");
        assert_eq!(
            saved, "-A -t 10.0.0.11:80 -s wrr\n-a -t 10.0.0.11:80 -r 10.0.11.1:80 -m -w 0\n",
            "ipvsadm -Sn after ipvsctl edits"
        );
        ns.ok(IPVSCTL, &["-C"], "");
        assert_eq!(ns.ok(IPVSADM, &["-Sn"], ""), "");
    }

    /// Counters, rates and connection entries made by real connections through a MASQ service:
    /// a client in the director's namespace (VIP /32 on lo), two real servers in another
    /// namespace behind a veth. Some connections stay open (ESTABLISHED), the rest are closed.
    #[test]
    #[ignore = "vm: needs IPVS"]
    fn listings_of_real_traffic_match_ipvsadm() {
        let director = Netns::new("traffic");
        let server = Netns::new("traffic-srv");
        let ip = |args: &[&str]| {
            let status = Command::new(ip_binary()).args(args).status().unwrap();
            assert!(status.success(), "ip {args:?}: {status}");
        };
        let (d, s) = (director.name.as_str(), server.name.as_str());
        ip(&[
            "-n", d, "link", "add", "pdcf0", "type", "veth", "peer", "name", "pdcf1", "netns", s,
        ]);
        ip(&["-n", d, "addr", "add", "10.96.0.1/24", "dev", "pdcf0"]);
        ip(&["-n", d, "link", "set", "pdcf0", "up"]);
        ip(&["-n", d, "addr", "add", "10.95.0.1/32", "dev", "lo"]);
        ip(&["-n", s, "addr", "add", "10.96.0.2/24", "dev", "pdcf1"]);
        ip(&["-n", s, "link", "set", "pdcf1", "up"]);
        ip(&["-n", s, "route", "add", "default", "via", "10.96.0.1"]);
        director.ok(
            IPVSADM,
            &["-R"],
            "-A -t 10.95.0.1:80 -s rr\n\
             -a -t 10.95.0.1:80 -r 10.96.0.2:8080 -m -w 1\n\
             -a -t 10.95.0.1:80 -r 10.96.0.2:8081 -m -w 2\n",
        );
        let stop = Arc::new(AtomicBool::new(false));
        let server_thread = std::thread::spawn({
            let (stop, netns) = (stop.clone(), format!("/run/netns/{s}"));
            move || serve_pings(&netns, &["10.96.0.2:8080", "10.96.0.2:8081"], &stop)
        });
        let director_ns = format!("/run/netns/{d}");
        // 4 connections held open, 6 closed after one exchange.
        let clients = std::thread::spawn({
            let netns = director_ns.clone();
            move || {
                enter_netns(&netns);
                let mut open = Vec::new();
                for i in 0..10 {
                    let keep = i < 4;
                    let stream = ping("10.95.0.1:80", keep);
                    if keep {
                        open.push(stream);
                    }
                }
                open
            }
        })
        .join()
        .unwrap();

        // The kernel folds per-CPU counters into the listed stats on its 2 s estimator tick.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let stats = director.ok(IPVSADM, &["-Ln", "--stats", "--exact"], "");
            if service_fields(&stats).first() == Some(&10) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the kernel never counted 10 connections:\n{stats}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let identity: fn(&str) -> String = str::to_owned;
        for mode in [
            &["-Ln", "--stats"][..],
            &["-Ln", "--stats", "--exact"],
            &["-Ln"],
            &["-Ln", "--thresholds"],
        ] {
            same_listing(&director, mode, identity);
        }
        let exact = same_listing(&director, &["-Ln", "--stats", "--exact"], identity);
        let fields = service_fields(&exact);
        assert!(
            fields.len() == 5 && fields[1..].iter().all(|&n| n > 0),
            "conns, packets and bytes all counted:\n{exact}"
        );
        let connections = same_listing(&director, &["-Lnc"], mask_expire);
        assert_eq!(
            connections.matches("ESTABLISHED").count(),
            4,
            "{connections}"
        );
        assert!(
            connections.lines().count() >= 2 + 10,
            "an entry per connection:\n{connections}"
        );
        same_listing(
            &director,
            &["-L", "-c", "-n", "--persistent-conn"],
            mask_expire,
        );

        // Rates: steady traffic until the estimator shows it, then compare.
        let traffic_done = Arc::new(AtomicBool::new(false));
        let traffic = std::thread::spawn({
            let (done, netns) = (traffic_done.clone(), director_ns.clone());
            move || {
                enter_netns(&netns);
                while !done.load(Ordering::SeqCst) {
                    ping("10.95.0.1:80", false);
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let rates = director.ok(IPVSADM, &["-Ln", "--rate", "--exact"], "");
            if service_fields(&rates).iter().all(|&n| n > 0) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the estimator never showed the traffic's rates:\n{rates}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        same_listing(&director, &["-Ln", "--rate"], identity);
        same_listing(&director, &["-Ln", "--rate", "--exact"], identity);
        traffic_done.store(true, Ordering::SeqCst);
        traffic.join().unwrap();

        drop(clients);
        stop.store(true, Ordering::SeqCst);
        server_thread.join().unwrap();
    }

    /// Kernel and argument errors: same message on stderr and same exit status as ipvsadm.
    #[test]
    #[ignore = "vm: needs IPVS"]
    fn errors_match_ipvsadm() {
        let ns = Netns::new("errors");
        ns.ok(
            IPVSADM,
            &["-R"],
            "-A -t 10.0.0.12:80 -s rr\n-a -t 10.0.0.12:80 -r 10.0.12.1:80 -m\n",
        );
        let cases: &[&[&str]] = &[
            &["-A", "-t", "10.0.0.12:80", "-s", "rr"],
            &["-a", "-t", "10.0.0.12:80", "-r", "10.0.12.1:80", "-m"],
            &["-d", "-t", "10.0.0.12:80", "-r", "10.0.12.9:80"],
            &["-e", "-t", "10.0.0.12:80", "-r", "10.0.12.9:80", "-m"],
            &["-a", "-t", "10.0.0.99:80", "-r", "10.0.12.9:80", "-m"],
            &["-D", "-t", "10.0.0.99:80"],
            &["-E", "-t", "10.0.0.99:80"],
            &["-Z", "-t", "10.0.0.99:80"],
            &["-A", "-t", "10.0.0.13:80", "-s", "nosuchsched"],
            &["-L", "-n", "-t", "10.0.0.99:80"],
            &["-A", "-t", "10.0.0.13:80", "-s", "rr", "-s", "wlc"],
            &["-A", "-t", "10.0.0.13"],
            &["-A", "-t", "10.0.0.13:80", "-w", "3"],
            &[
                "-a",
                "-t",
                "10.0.0.12:80",
                "-r",
                "10.0.12.1:80",
                "-w",
                "70000",
            ],
            &["-L", "-c", "--timeout"],
            &["--set", "1", "2"],
            &["-A", "-u", "10.0.0.13:80", "-b", "sh-port"],
            &["-L", "--bogus"],
            &["-L", "extra"],
        ];
        for args in cases {
            let want = ns.run(IPVSADM, args, "");
            let got = ns.run(IPVSCTL, args, "");
            let what = format!("ipvsctl {}", args.join(" "));
            assert_same(
                &format!("{what} (stderr)"),
                &String::from_utf8_lossy(&want.stderr),
                &String::from_utf8_lossy(&got.stderr),
            );
            assert_same(
                &format!("{what} (stdout)"),
                &String::from_utf8_lossy(&want.stdout),
                &String::from_utf8_lossy(&got.stdout),
            );
            assert_eq!(want.status.code(), got.status.code(), "{what}: exit status");
        }
    }
}
