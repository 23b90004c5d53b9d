use super::*;

fn argv(line: &str) -> Vec<String> {
    std::iter::once("ipvsadm")
        .chain(line.split_whitespace())
        .map(String::from)
        .collect()
}

fn run(line: &str) -> Invocation {
    match parse(&argv(line)) {
        Ok(Parsed::Run(inv)) => *inv,
        other => panic!("{line}: {other:?}"),
    }
}

fn err(line: &str) -> ArgError {
    parse(&argv(line)).expect_err(line)
}

#[test]
fn add_service_with_optional_persistence() {
    let inv = run("-A -t 10.0.0.1:80 -s rr -p");
    assert_eq!(inv.cmd, Cmd::Add);
    assert_eq!(
        inv.service.key,
        ServiceKey::tcp("10.0.0.1".parse().unwrap(), 80)
    );
    assert_eq!(inv.service.timeout, 360);
    assert_eq!(inv.service.flags, ServiceFlags::PERSISTENT);
    let inv = run("-A -u 10.0.0.1:53 -p 60 -M 255.255.255.0 -o");
    assert_eq!(inv.service.timeout, 60);
    assert_eq!(inv.service.netmask, 0xffff_ff00);
    assert_eq!(inv.service.scheduler, "wlc");
    assert_eq!(
        inv.service.flags,
        ServiceFlags::PERSISTENT | ServiceFlags::ONEPACKET
    );
    // -p followed by an option takes no argument.
    let inv = run("-A -t 10.0.0.1:80 -p -s sh -b sh-port,sh-fallback");
    assert_eq!(inv.service.timeout, 360);
    assert_eq!(
        inv.service.flags,
        ServiceFlags::PERSISTENT | ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT
    );
}

#[test]
fn combined_short_options_and_attached_arguments() {
    let inv = run("-Ln");
    assert_eq!(inv.cmd, Cmd::List);
    assert!(inv.format.numeric);
    let inv = run("-At10.0.0.1:80 -p120");
    assert_eq!(
        inv.service.key,
        ServiceKey::tcp("10.0.0.1".parse().unwrap(), 80)
    );
    assert_eq!(inv.service.timeout, 120);
    let inv = run("--add-service --tcp-service=[2001:db8::1]:443 --persistent=10 -M 64");
    assert_eq!(inv.service.key.family(), AddressFamily::Inet6);
    assert_eq!(inv.service.netmask, 64);
}

#[test]
fn destinations_default_to_gatewaying_weight_one_and_service_port() {
    let inv = run("-a -t 10.0.0.1:80 -r 10.0.1.1");
    assert_eq!(inv.dest.forward, ForwardMethod::DirectRoute);
    assert_eq!(inv.dest.weight, 1);
    assert_eq!(inv.dest.port, 80);
    let inv = run("-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 0 -x 100 -y 50");
    assert_eq!(
        (inv.dest.forward, inv.dest.port, inv.dest.weight),
        (ForwardMethod::Masquerade, 8080, 0)
    );
    assert_eq!(
        (inv.dest.upper_threshold, inv.dest.lower_threshold),
        (100, 50)
    );
    // Direct routing forces the service port.
    let inv = run("-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -g");
    assert_eq!(inv.dest.port, 80);
    let inv = run("-a -f 5 -6 -r [2001:db8::2]:0 -i --tun-type gue --tun-port 6080");
    assert_eq!(
        (inv.service.key, inv.dest.tunnel),
        (
            ServiceKey::fwmark(AddressFamily::Inet6, 5),
            Tunnel::gue(6080, 0)
        )
    );
}

#[test]
fn set_takes_three_values_and_list_options() {
    let inv = run("--set 900 120 300");
    assert_eq!(
        inv.timeouts,
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }
    );
    assert_eq!(
        err("--set 900 120").message,
        "--set option requires 3 timeout values"
    );
    let inv = run("-L -n --stats --exact -t 10.0.0.1:80");
    assert!(inv.format.stats && inv.format.exact && inv.has(opt::SERVICE));
    assert!(run("-S -n").format.rule);
    assert!(run("-L --json").format.json);
}

#[test]
fn errors_match_ipvsadm() {
    assert_eq!(err("-nL").code, 255);
    assert_eq!(
        err("").message,
        "Try `ipvsadm -h' or 'ipvsadm --help' for more information."
    );
    assert_eq!(
        err("-A -t 10.0.0.1:80 -s rr -s wlc").message,
        "multiple 'scheduler' options specified"
    );
    assert_eq!(
        err("-A -s rr").message,
        "You need to supply the 'service-address' option for the 'add-service' command"
    );
    assert_eq!(
        err("-A -t 10.0.0.1:80 -w 3").message,
        "Illegal 'weight' option with the 'add-service' command"
    );
    assert_eq!(
        err("-L -c --timeout").message,
        "The option 'timeout' conflicts with the 'connection' option in the 'list' command"
    );
    assert_eq!(
        err("-A -t 10.0.0.1 -s rr").message,
        "Zero port specified for non-persistent service"
    );
    assert_eq!(
        err("-A -t 10.0.0.1:80 -o").message,
        "One-Packet Scheduling is only for UDP virtual services"
    );
    assert_eq!(
        err("-A -t nohost.invalid.:80").message,
        "illegal virtual server address[:port] specified"
    );
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r 10.0.0.2 -w 2147483648").message,
        "illegal weight specified"
    );
    assert_eq!(
        err("-A -t 10.0.0.1:80 -p 0").message,
        "invalid timeout value `0' specified"
    );
    assert_eq!(err("-A -f 0").message, "invalid fwmark value `0' specified");
    assert_eq!(
        err("-A -t 10.0.0.1:80 -b sh-port").message,
        "incompatible scheduler flag `sh-port'"
    );
    assert_eq!(
        err("-A -t 10.0.0.1:80 -b bogus").message,
        "invalid scheduler flag `bogus'"
    );
    assert_eq!(err("-L extra").message, "unexpected argument extra");
    let e = err("-L --bogus");
    assert_eq!(
        (e.message.as_str(), e.code),
        ("--bogus: unknown option", 255)
    );
    assert_eq!(err("-A -t").message, "-t: missing argument");
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r [2001:db8::1]:80 -m").message,
        "Different address family is allowed only for tunneling servers"
    );
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r 10.0.0.2 -m --tun-type gue").message,
        "Tunnel options conflict with forward method"
    );
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue").message,
        "You need to supply the 'tun-port' option for the 'gue' tunnel type"
    );
    assert_eq!(
        err("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-port 6080").message,
        "Illegal 'tun-port' option with the 'gre' tunnel type"
    );
    assert_eq!(
        err(
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 1 --tun-csum --tun-remcsum"
        )
        .message,
        "The option 'tun-remcsum' conflicts with the 'tun-csum' option in the 'gue' tunnel type"
    );
    assert_eq!(
        err("-S --json").message,
        "Illegal 'json' option with the 'save' command"
    );
}

#[test]
fn help_and_version() {
    assert_eq!(parse(&argv("-h")), Ok(Parsed::Help));
    assert_eq!(parse(&argv("--version")), Ok(Parsed::Version));
}

#[test]
fn restore_lines_split_like_config_stream() {
    assert_eq!(
        restore_line_argv("ipvsctl", "ipvsadm -A -t 10.0.0.1:80\t-s rr # c"),
        Some(argv("-A -t 10.0.0.1:80 -s rr").into_iter().skip(1).fold(
            vec!["ipvsctl".to_string()],
            |mut v, w| {
                v.push(w);
                v
            }
        ))
    );
    assert_eq!(restore_line_argv("ipvsctl", "   "), None);
    assert_eq!(restore_line_argv("ipvsctl", "# only a comment"), None);
}
