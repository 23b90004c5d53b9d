use super::*;
use std::collections::BTreeSet;
use std::path::Path;

const EXAMPLE: &str = include_str!("../../../config/poold.example.toml");
const QUICKSTART: &str = include_str!("../../../config/quickstart.toml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/poold.toml"))
}

fn error_text(text: &str) -> String {
    parse(text)
        .expect_err("config should be rejected")
        .to_string()
}

const MINIMAL: &str = r#"
[[service]]
name = "web"
listen = "10.212.0.1:80"
workers = 2
port = 8080
rootfs = "host"
command = ["/bin/true"]
"#;

#[test]
fn example_parses_and_uses_non_default_values() {
    let config = parse(EXAMPLE).expect("example must be valid");
    let web = &config.services[0];
    assert_eq!(web.limits.memory, Some(ByteSize(256 << 20)));
    assert_eq!(
        web.recycle.max_lifetime,
        Some(HumanDuration::from_secs(3600))
    );
    assert_eq!(web.health.kind, HealthKind::Http);
    assert_eq!(
        web.rootfs_source(),
        RootfsSource::Tarball("/var/lib/images/web.tar.gz".into())
    );
}

#[test]
fn quickstart_parses() {
    let config = parse(QUICKSTART).expect("quickstart must be valid");
    assert_eq!(config.services.len(), 1);
    assert_eq!(config.services[0].workers, 3);
    assert_eq!(config.services[0].rootfs_source(), RootfsSource::Host);
}

/// Every key a fully populated config serializes to. Written with struct literals and no
/// `..Default::default()`, so adding a field breaks this test's build until it is listed here,
/// and then the example must document it.
fn fully_populated() -> Config {
    let DaemonConfig {
        state_dir,
        control_socket,
        metrics_listen,
        balancer,
        upstream,
        shutdown_delay,
        log_level,
        cgroup_parent,
        image_max_size,
        control_group: _,
    } = DaemonConfig::default();
    let NetworkConfig {
        bridge,
        subnet,
        allow_host_ports,
    } = NetworkConfig::default();
    let HealthConfig {
        kind,
        path,
        expect_status,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        start_timeout,
    } = HealthConfig::default();
    let BackoffConfig {
        initial,
        max,
        multiplier,
    } = BackoffConfig::default();
    let recycle = RecycleConfig::default();
    Config {
        daemon: DaemonConfig {
            state_dir,
            control_socket,
            metrics_listen,
            balancer,
            upstream,
            shutdown_delay,
            log_level,
            cgroup_parent,
            image_max_size,
            control_group: Some("poold".into()),
        },
        network: NetworkConfig {
            bridge,
            subnet,
            allow_host_ports,
        },
        services: vec![ServiceConfig {
            name: "web".into(),
            listen: "10.212.0.1:80".parse().unwrap(),
            protocol: Protocol::Tcp,
            scheduler: "wlc".into(),
            workers: 1,
            min_ready: Some(1),
            weight: 1,
            max_client_connections: 4096,
            backend_connect: BackendConnect::OnAccept,
            port: 8080,
            rootfs: "host".into(),
            command: vec!["/bin/true".into()],
            stop_signal: SignalName(nix::sys::signal::Signal::SIGQUIT),
            env: [("A".to_owned(), "b".to_owned())].into(),
            user: Some("nobody".into()),
            seccomp: crate::sandbox::SeccompMode::Default,
            seccomp_allow: vec!["keyctl".into()],
            user_namespace: true,
            userns_base: Some(200_000),
            limits: LimitsConfig {
                memory: Some(ByteSize::mib(64)),
                cpu: Some(1.0),
                pids: Some(10),
            },
            health: HealthConfig {
                kind,
                path,
                expect_status,
                interval,
                timeout,
                healthy_threshold,
                unhealthy_threshold,
                start_timeout,
            },
            recycle: RecycleConfig {
                max_lifetime: Some(HumanDuration::from_secs(60)),
                lifetime_jitter: recycle.lifetime_jitter,
                min_lifetime: recycle.min_lifetime,
                max_connections: Some(1),
                max_memory: Some(ByteSize::mib(32)),
                on_oom: recycle.on_oom,
                drain_timeout: recycle.drain_timeout,
                stop_timeout: recycle.stop_timeout,
                surge: recycle.surge,
                max_concurrent_recycles: recycle.max_concurrent_recycles,
                spares: recycle.spares,
            },
            backoff: BackoffConfig {
                initial,
                max,
                multiplier,
            },
            capabilities: vec!["CAP_NET_BIND_SERVICE".into()],
            read_only_root: true,
            tmpfs: vec!["/run".into()],
        }],
    }
}

fn key_paths(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        out.insert(path.clone());
        // The keys under env are the user's own names.
        if key == "env" {
            continue;
        }
        match value {
            toml::Value::Table(inner) => key_paths(&path, inner, out),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        key_paths(&format!("{path}[]"), inner, out);
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn example_documents_every_field() {
    let serialized = toml::to_string(&fully_populated()).unwrap();
    // The round trip proves the serialized form is itself a valid config.
    assert_eq!(parse(&serialized).unwrap(), fully_populated());
    let mut code_keys = BTreeSet::new();
    key_paths(
        "",
        &serialized.parse::<toml::Table>().unwrap(),
        &mut code_keys,
    );
    let mut example_keys = BTreeSet::new();
    key_paths(
        "",
        &EXAMPLE.parse::<toml::Table>().unwrap(),
        &mut example_keys,
    );
    let missing: Vec<_> = code_keys.difference(&example_keys).collect();
    assert!(
        missing.is_empty(),
        "config/poold.example.toml lacks {missing:?}"
    );
    assert!(code_keys.len() > 40, "suspiciously few keys: {code_keys:?}");
}

#[test]
fn minimal_service_takes_defaults() {
    let config = parse(MINIMAL).unwrap();
    let web = &config.services[0];
    assert_eq!(config.daemon.balancer, BalancerChoice::Auto);
    assert_eq!(web.scheduler, "wlc");
    assert!(web.recycle.surge);
    assert_eq!(web.recycle.max_concurrent_recycles, 1);
    assert_eq!(web.health.kind, HealthKind::Tcp);
    assert_eq!(web.backoff.delay(1), std::time::Duration::from_secs(1));
    assert_eq!(web.backoff.delay(3), std::time::Duration::from_secs(4));
    assert_eq!(web.backoff.delay(30), std::time::Duration::from_secs(60));
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let text = MINIMAL.replace("port = 8080", "port = 8080\nwrokers = 3");
    let message = error_text(&text);
    assert!(
        message.starts_with("/etc/poold.toml:7:1: service[0].wrokers: unknown field `wrokers`"),
        "{message}"
    );
}

#[test]
fn unknown_key_in_nested_table() {
    let text = format!("{MINIMAL}\n[service.limits]\nmemory = \"64M\"\nswap = \"1G\"\n");
    let message = error_text(&text);
    assert!(
        message.starts_with("/etc/poold.toml:12:1: service[0].limits.swap: unknown field `swap`"),
        "{message}"
    );
}

#[test]
fn bad_size_names_key_and_expected_form() {
    let text = format!("{MINIMAL}\n[service.limits]\nmemory = \"lots\"\n");
    let message = error_text(&text);
    assert!(
        message
            .starts_with("/etc/poold.toml:11:10: service[0].limits.memory: invalid size \"lots\""),
        "{message}"
    );
    assert!(message.contains("\"256M\""), "{message}");
}

#[test]
fn bad_duration_and_enum_values() {
    let text = format!("{MINIMAL}\n[service.recycle]\ndrain_timeout = \"soon\"\n");
    let message = error_text(&text);
    assert!(
        message.contains(":11:")
            && message.contains("service[0].recycle.drain_timeout: invalid duration \"soon\""),
        "{message}"
    );
    let text = MINIMAL.replace("[[service]]", "[daemon]\nbalancer = \"lvs\"\n\n[[service]]");
    let message = error_text(&text);
    assert!(
        message.contains(":3:12: daemon.balancer:") && message.contains("ipvs"),
        "{message}"
    );
}

#[test]
fn missing_required_key_is_named() {
    let message = error_text(&MINIMAL.replace("port = 8080\n", ""));
    assert!(message.contains("missing field `port`"), "{message}");
    assert!(message.contains("service[0]"), "{message}");
}

#[test]
fn semantic_errors_name_line_and_key() {
    let message = error_text(&MINIMAL.replace("workers = 2", "workers = 0"));
    assert_eq!(
        message,
        "/etc/poold.toml:5:1: service[0].workers: must be at least 1"
    );

    let twice = format!(
        "{MINIMAL}{}",
        MINIMAL.replace("10.212.0.1:80", "10.212.0.2:80")
    );
    let message = error_text(&twice);
    assert!(
        message
            .starts_with("/etc/poold.toml:11:1: service[1].name: duplicate service name \"web\""),
        "{message}"
    );
}

#[test]
fn loopback_vip_refused_for_ipvs_with_reason() {
    let text = MINIMAL
        .replace(
            "[[service]]",
            "[daemon]\nbalancer = \"ipvs\"\n\n[[service]]",
        )
        .replace("10.212.0.1:80", "127.0.0.1:80");
    let message = error_text(&text);
    assert!(
        message.starts_with(
            "/etc/poold.toml:7:1: service[0].listen: 127.0.0.1:80 is a loopback address"
        ),
        "{message}"
    );
    assert!(message.contains("MASQ"), "{message}");
    // The proxy can listen on loopback.
    let proxy = text.replace("\"ipvs\"", "\"proxy\"");
    assert!(parse(&proxy).is_ok());
    let auto = text.replace("\"ipvs\"", "\"auto\"");
    let config = parse(&auto).unwrap();
    assert!(config.warnings().iter().any(|w| w.contains("loopback")));
}

#[test]
fn subnet_must_hold_the_workers() {
    let text = format!("[network]\nsubnet = \"10.9.0.0/29\"\n{MINIMAL}");
    let message = error_text(&text);
    assert!(
        message.starts_with(
            "/etc/poold.toml:2:1: network.subnet: 10.9.0.0/29 has 5 worker addresses \
        (one bridge, less its network, gateway and broadcast addresses); 2 workers need at least 8"
        ),
        "{message}"
    );
}

/// Issue 12: one Linux bridge takes 1,023 ports, so a pool of 1,024 workers is spread over
/// several bridges, one per /22 slice of the subnet (1,021 workers each). `poold check`
/// refuses what now limits: the subnet's worker addresses, and a bridge name that leaves no
/// room for `<bridge>-<i>`.
#[test]
fn a_pool_beyond_one_bridge_spans_several_and_the_limits_are_checked() {
    let config = |bridge: &str, subnet: &str, workers: u32| {
        format!("[network]\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\"\n{MINIMAL}")
            .replace("workers = 2", &format!("workers = {workers}"))
    };
    // 1,024 workers: 4,096 addresses, on a /19 (8 bridges) or the default /16 (64).
    assert!(parse(&config("pdbig0", "10.9.0.0/19", 1024)).is_ok());
    assert!(parse(&config("pdbig0", "10.9.0.0/16", 4000)).is_ok());
    // A /20 holds 4 × 1,021 = 4,084 worker addresses: short of 4,096.
    let message = error_text(&config("pdbig0", "10.9.0.0/20", 1024));
    assert!(
        message.contains(
            "network.subnet: 10.9.0.0/20 has 4084 worker addresses (4 bridges, one per /22 slice, \
             each less its network, gateway and broadcast addresses); 1024 workers need at least 4096"
        ),
        "{message}"
    );
    // 64 slices need names up to "<bridge>-63": 12 bytes of name at most.
    assert!(parse(&config("pdbr-twelve", "10.9.0.0/16", 2)).is_ok());
    let message = error_text(&config("pdbr-thirteen", "10.9.0.0/16", 2));
    assert!(
        message.contains(
            "/etc/poold.toml:2:1: network.bridge: bridge name \"pdbr-thirteen\" is too long for \
             10.9.0.0/16: its 64 slices need bridges up to \"pdbr-thirteen-63\" (16 bytes; a link name \
             has at most 15); shorten the name or the subnet"
        ),
        "{message}"
    );
    // One slice: the whole name is the bridge's, as before.
    assert!(parse(&config("pdbr-fifteen-ch", "10.9.0.0/23", 2)).is_ok());
    // `poolctl scale` stays within the same bound.
    assert_eq!(
        crate::config::worker_capacity("10.9.0.0/16".parse().unwrap()),
        64 * 1021 / 4
    );
    assert_eq!(
        crate::config::worker_capacity("10.9.0.0/24".parse().unwrap()),
        253 / 4
    );
}

/// Issue 12 part 3: warm spares are workers (an address, a bridge port) and at most one
/// per slot is ever used.
#[test]
fn spares_are_checked_and_counted_as_workers() {
    let with = |workers: u32, spares: u32| {
        format!(
            "[network]\nbridge = \"pdbig0\"\nsubnet = \"10.9.0.0/16\"\n{MINIMAL}\n[service.recycle]\nspares = {spares}\n"
        )
        .replace("workers = 2", &format!("workers = {workers}"))
    };
    let web = parse(&with(2, 1)).expect("one spare for two workers");
    assert_eq!(web.services[0].recycle.spares, 1);
    assert_eq!(parse(MINIMAL).unwrap().services[0].recycle.spares, 0);
    let message = error_text(&with(2, 3));
    assert!(
        message.contains(
            "/etc/poold.toml:14:1: service[0].recycle.spares: 3 is more than workers (2)"
        ),
        "{message}"
    );
    // Spares take addresses: 1,000 workers fit a /20 (4,084 worker addresses), 1,030 not.
    let message = error_text(&with(1000, 30).replace("10.9.0.0/16", "10.9.0.0/20"));
    assert!(
        message.contains("1030 workers (of which 30 warm spares) need at least 4120"),
        "{message}"
    );
}

#[test]
fn allowed_host_ports_are_real_and_listed_once() {
    let text = format!("[network]\nallow_host_ports = [53, 0, 53]\n{MINIMAL}");
    let message = error_text(&text);
    assert!(message.contains("/etc/poold.toml:2:1: network.allow_host_ports: entry 1: 0 is not a port; use 1 to 65535"), "{message}");
    assert!(
        message.contains("network.allow_host_ports: entry 2: port 53 is listed twice"),
        "{message}"
    );
    let text = format!("[network]\nallow_host_ports = [70000]\n{MINIMAL}");
    assert!(
        error_text(&text).contains("network.allow_host_ports"),
        "out of range"
    );
    let text = format!("[network]\nallow_host_ports = [53, 8125]\n{MINIMAL}");
    assert_eq!(parse(&text).unwrap().network.allow_host_ports, [53, 8125]);
}

#[test]
fn all_problems_are_listed_at_once() {
    let text = MINIMAL
        .replace("workers = 2", "workers = 0")
        .replace("port = 8080", "port = 0")
        .replace("\"host\"", "\"images/x.tar\"");
    let message = error_text(&text);
    assert_eq!(message.lines().count(), 3, "{message}");
    assert!(message.contains("service[0].port"), "{message}");
    assert!(message.contains("service[0].rootfs"), "{message}");
}

#[test]
fn defaulted_key_is_located_at_its_table() {
    // min_lifetime defaults to 60s, which is longer than this max_lifetime.
    let text = format!("{MINIMAL}\n[service.recycle]\nmax_lifetime = \"30s\"\n");
    let message = error_text(&text);
    assert!(message.starts_with("/etc/poold.toml:10:10: service[0].recycle.min_lifetime: 1m is longer than max_lifetime (30s)"), "{message}");
}

#[test]
fn listen_inside_the_worker_subnet_is_refused() {
    let message = error_text(&MINIMAL.replace("10.212.0.1:80", "10.213.0.9:80"));
    assert!(message.starts_with("/etc/poold.toml:4:1: service[0].listen: 10.213.0.9:80 is inside the worker subnet 10.213.0.0/16"), "{message}");
}

#[test]
fn cgroup_parent_must_be_a_poold_name() {
    let text = MINIMAL.replace(
        "[[service]]",
        "[daemon]\ncgroup_parent = \"system.slice\"\n\n[[service]]",
    );
    let message = error_text(&text);
    assert!(
        message.contains(":3:") && message.contains("daemon.cgroup_parent: \"system.slice\""),
        "{message}"
    );
    let text = MINIMAL.replace(
        "[[service]]",
        "[daemon]\ncgroup_parent = \"poold-b\"\n\n[[service]]",
    );
    assert_eq!(parse(&text).unwrap().daemon.cgroup_parent, "poold-b");
}

fn with_daemon(daemon: &str) -> String {
    MINIMAL.replace("[[service]]", &format!("[daemon]\n{daemon}\n\n[[service]]"))
}

#[test]
fn absurd_cpu_limits_are_refused() {
    for (value, shown) in [
        ("1e300", "1e300"),
        ("nan", "NaN"),
        ("inf", "inf"),
        ("-1.0", "-1.0"),
        ("0.0", "0.0"),
        ("0.0001", "0.0001"),
        ("100000.0", "100000.0"),
    ] {
        let text = format!("{MINIMAL}\n[service.limits]\ncpu = {value}\n");
        let message = error_text(&text);
        assert!(
            message.starts_with(&format!(
                "/etc/poold.toml:11:1: service[0].limits.cpu: {shown} cores:"
            )),
            "{value}: {message}"
        );
    }
    for ok in ["0.001", "0.5", "64.0", "8192.0"] {
        let text = format!("{MINIMAL}\n[service.limits]\ncpu = {ok}\n");
        assert!(parse(&text).is_ok(), "{ok}");
    }
}

#[test]
fn stop_signal_takes_forwarded_names_with_or_without_sig() {
    for (name, signal) in [
        ("SIGQUIT", nix::sys::signal::Signal::SIGQUIT),
        ("WINCH", nix::sys::signal::Signal::SIGWINCH),
    ] {
        let config = parse(&format!("{MINIMAL}stop_signal = \"{name}\"\n")).unwrap();
        assert_eq!(config.services[0].stop_signal, SignalName(signal));
    }
    assert_eq!(
        parse(MINIMAL).unwrap().services[0].stop_signal.0,
        nix::sys::signal::Signal::SIGTERM
    );
    let message = error_text(&format!("{MINIMAL}stop_signal = \"SIGKILL\"\n"));
    assert!(
        message.starts_with("/etc/poold.toml:9:")
            && message
                .contains("unknown stop signal \"SIGKILL\": expected one of SIGTERM, SIGINT,"),
        "{message}"
    );
}

#[test]
fn command_must_be_an_absolute_path() {
    for relative in ["python3", "bin/app", "./app"] {
        let message = error_text(&MINIMAL.replace("/bin/true", relative));
        assert_eq!(
            message,
            format!(
                "/etc/poold.toml:8:1: service[0].command: {relative:?} is not an absolute path: \
                 name the program by its full path inside the root filesystem, e.g. \"/usr/bin/{}\"",
                relative.rsplit('/').next().unwrap()
            )
        );
    }
}

#[test]
fn service_listen_must_not_take_the_metrics_address() {
    // Equal, and overlapping through a wildcard metrics address.
    for metrics in ["10.212.0.1:80", "0.0.0.0:80"] {
        let text = with_daemon(&format!("metrics_listen = \"{metrics}\""));
        let message = error_text(&text);
        assert_eq!(
            message,
            format!(
                "/etc/poold.toml:7:1: service[0].listen: 10.212.0.1:80 conflicts with \
                 daemon.metrics_listen ({metrics}): both would take port 80"
            )
        );
    }
    // Same port, another concrete address: no conflict.
    assert!(parse(&with_daemon("metrics_listen = \"127.0.0.1:80\"")).is_ok());
}

#[test]
fn control_socket_must_not_be_inside_what_poold_cleans() {
    let text = with_daemon(
        "state_dir = \"/var/lib/poold\"\ncontrol_socket = \"/var/lib/poold/workers/ctl.sock\"",
    );
    let message = error_text(&text);
    assert!(
        message.starts_with("/etc/poold.toml:4:1: daemon.control_socket: /var/lib/poold/workers/ctl.sock is inside /var/lib/poold/workers"),
        "{message}"
    );
}

#[test]
fn state_dir_must_be_a_dedicated_directory() {
    for dir in [
        "/",
        "/etc",
        "/usr",
        "/proc",
        "/sys",
        "/dev",
        "/home",
        "/var",
        "/var/lib",
        "/tmp",
        "/run",
        "/root",
        "/etc/poold",
        "/proc/self",
        "/sys/fs/cgroup",
        "/usr/local/poold",
        "/var/lib/poold/..",
        "/var/lib/./poold",
        "/home/alice",
    ] {
        let message = error_text(&with_daemon(&format!("state_dir = \"{dir}\"")));
        assert!(
            message.starts_with("/etc/poold.toml:3:1: daemon.state_dir: "),
            "{dir}: {message}"
        );
        assert!(message.contains("dedicated"), "{dir}: {message}");
    }
    for dir in [
        "/var/lib/poold",
        "/run/poold",
        "/srv/poold/state",
        "/home/alice/poold",
    ] {
        let text = with_daemon(&format!("state_dir = \"{dir}\""));
        assert!(parse(&text).is_ok(), "{dir}: {:?}", parse(&text).err());
    }
}

/// Unmounts on drop, also when the test fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The root of a mounted file system is shared with whatever else lives on it; a symlink is
/// judged by what it points to. Needs root (mounts a tmpfs).
#[test]
fn state_dir_must_not_be_a_mount_point_or_lead_to_a_system_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("fs");
    std::fs::create_dir(&mount_point).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &mount_point,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1M"),
    )
    .expect("mount tmpfs (run as root)");
    let _unmount = Unmount(mount_point.clone());
    let message = error_text(&with_daemon(&format!(
        "state_dir = \"{}\"",
        mount_point.display()
    )));
    assert!(
        message.contains("daemon.state_dir")
            && message.contains("the root of a mounted file system"),
        "{message}"
    );
    // A directory inside it is fine.
    let inside = mount_point.join("poold");
    assert!(parse(&with_daemon(&format!(
        "state_dir = \"{}\"",
        inside.display()
    )))
    .is_ok());

    let link = dir.path().join("state");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let message = error_text(&with_daemon(&format!("state_dir = \"{}\"", link.display())));
    assert!(
        message.contains("daemon.state_dir")
            && message.contains("resolves to /etc: a system directory"),
        "{message}"
    );
}

#[test]
fn non_utf8_file_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("poold.toml");
    let mut bytes = MINIMAL.replace("\"web\"", "\"w\u{e9}b\"").into_bytes();
    // Latin-1 é in place of UTF-8's: line 3, after `name = "w`.
    let at = bytes.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
    bytes.splice(at..at + 2, [0xe9]);
    std::fs::write(&path, &bytes).unwrap();
    let message = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}:3:10: service[0].name: invalid UTF-8 (byte 0xe9): the file must be UTF-8",
            path.display()
        )
    );
}

/// Many services with duplicate listens: every duplicate is reported, at its own line.
/// Before the fix this took ~45 s (each problem re-parsed the whole file).
#[test]
fn thousands_of_duplicate_listens_are_all_reported() {
    const SERVICES: usize = 5000;
    let mut text = String::new();
    for index in 0..SERVICES {
        // Services 2k and 2k+1 share a listen address.
        let port = 1000 + index / 2;
        text.push_str(&format!(
            "[[service]]\nname = \"s{index}\"\nlisten = \"10.212.0.1:{port}\"\nworkers = 1\n\
             port = 8080\nrootfs = \"host\"\ncommand = [\"/bin/true\"]\n"
        ));
    }
    let message = error_text(&text);
    // (5,000 workers are also too many for one bridge: reported once, on its own line.)
    let lines: Vec<&str> = message.lines().filter(|l| l.contains(".listen:")).collect();
    assert_eq!(lines.len(), SERVICES / 2);
    for (k, line) in lines.iter().enumerate() {
        let index = 2 * k + 1;
        let expected = format!(
            "/etc/poold.toml:{}:1: service[{index}].listen: 10.212.0.1:{} is already the listen \
             address of service[{}]",
            7 * index + 3,
            1000 + k,
            2 * k
        );
        assert_eq!(*line, expected);
    }
}

#[test]
fn image_max_size_defaults_to_4g_and_has_a_floor() {
    assert_eq!(
        parse(MINIMAL).unwrap().daemon.image_max_size,
        ByteSize(4 << 30)
    );
    let message = error_text(&with_daemon("image_max_size = \"100K\""));
    assert!(
        message.starts_with(
            "/etc/poold.toml:3:1: daemon.image_max_size: 100K is below the 1M minimum"
        ),
        "{message}"
    );
}

/// poold replaces a stale socket file at start: a control_socket naming an existing
/// file that is not a socket, or a path in a system tree, would delete it.
#[test]
fn control_socket_must_not_name_a_file_poold_would_delete() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("precious");
    std::fs::write(&file, "data").unwrap();
    for (path, expected) in [
        (file.display().to_string(), "exists and is not a socket"),
        ("/etc/passwd".to_owned(), "inside a system directory"),
        ("/usr/poold.sock".to_owned(), "inside a system directory"),
    ] {
        let message = error_text(&with_daemon(&format!("control_socket = \"{path}\"")));
        assert!(
            message.starts_with("/etc/poold.toml:3:1: daemon.control_socket: ")
                && message.contains(expected),
            "{path}: {message}"
        );
    }
    // A stale socket is fine: poold replaces it.
    let socket = dir.path().join("poold.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let text = with_daemon(&format!("control_socket = \"{}\"", socket.display()));
    assert!(parse(&text).is_ok(), "{:?}", parse(&text).err());
}

#[test]
fn seccomp_allow_names_are_checked_with_their_line() {
    let text = format!("{MINIMAL}seccomp_allow = [\n  \"keyctl\",\n  \"no_such_call\",\n]\n");
    let message = error_text(&text);
    assert!(
        message.starts_with("/etc/poold.toml:11:3: service[0].seccomp_allow[1]: \"no_such_call\" is not a syscall name"),
        "{message}"
    );
    let text = format!("{MINIMAL}seccomp = \"unconfined\"\nseccomp_allow = [\"keyctl\"]\n");
    let message = error_text(&text);
    assert!(message.contains("has no effect"), "{message}");
    let text = format!("{MINIMAL}seccomp = \"off\"\n");
    let message = error_text(&text);
    assert!(message.contains("unknown variant `off`"), "{message}");
    parse(&format!("{MINIMAL}seccomp_allow = [\"keyctl\"]\n")).unwrap();
}

#[test]
fn user_namespace_ranges_are_checked() {
    let message = error_text(&format!("{MINIMAL}user_namespace = true\n"));
    assert!(
        message.contains("service[0].user_namespace: needs userns_base"),
        "{message}"
    );
    let message = error_text(&format!(
        "{MINIMAL}user_namespace = true\nuserns_base = 1000\n"
    ));
    assert!(
        message.contains("service[0].userns_base: 1000"),
        "{message}"
    );
    let message = error_text(&format!(
        "{MINIMAL}user_namespace = true\nuserns_base = 4294967000\n"
    ));
    assert!(message.contains("4294967000"), "{message}");
    let message = error_text(&format!("{MINIMAL}userns_base = 100000\n"));
    assert!(message.contains("has no effect"), "{message}");
    let two = format!(
        "{MINIMAL}user_namespace = true\nuserns_base = 100000\n\
         [[service]]\nname = \"api\"\nlisten = \"10.212.0.2:80\"\nworkers = 1\nport = 8080\n\
         rootfs = \"host\"\ncommand = [\"/bin/true\"]\nuser_namespace = true\nuserns_base = 150000\n"
    );
    let message = error_text(&two);
    assert!(
        message.contains("service[1].userns_base") && message.contains("overlaps"),
        "{message}"
    );
    parse(&two.replace("150000", "165536")).unwrap();
}

#[test]
fn min_ready_is_between_one_and_workers() {
    let text = MINIMAL.replace("workers = 2", "workers = 2\nmin_ready = 3");
    assert_eq!(
        error_text(&text),
        "/etc/poold.toml:6:1: service[0].min_ready: 3 is out of range: from 1 to workers (2)"
    );
    let text = MINIMAL.replace("workers = 2", "workers = 2\nmin_ready = 0");
    assert!(error_text(&text).contains("service[0].min_ready: 0 is out of range"));
    let text = MINIMAL.replace("workers = 2", "workers = 2\nmin_ready = 1");
    assert_eq!(parse(&text).unwrap().services[0].min_ready, Some(1));
}

#[test]
fn upstream_dr_needs_ipvs_and_a_reachable_readiness_endpoint() {
    let dr = |daemon: &str| {
        MINIMAL.replace(
            "[[service]]",
            &format!("[daemon]\nupstream = \"dr\"\n{daemon}\n[[service]]"),
        )
    };
    let config = parse(&dr(
        "balancer = \"ipvs\"\nmetrics_listen = \"0.0.0.0:9460\"\n",
    ))
    .expect("valid");
    assert_eq!(config.daemon.upstream, Upstream::Dr);
    assert_eq!(parse(MINIMAL).unwrap().daemon.upstream, Upstream::None);

    let message = error_text(&dr(
        "balancer = \"proxy\"\nmetrics_listen = \"10.0.0.5:9460\"\n",
    ));
    assert!(
        message
            .starts_with("/etc/poold.toml:4:1: daemon.balancer: \"proxy\" with upstream = \"dr\"")
            && message.contains("set balancer = \"ipvs\""),
        "{message}"
    );
    // The default balancer ("auto") could fall back to the proxy: refused too, and the
    // default metrics address (127.0.0.1) is out of the directors' reach.
    let message = error_text(&dr(""));
    assert!(
        message.contains("daemon.balancer: \"auto\" with upstream = \"dr\"")
            && message.contains(
                "daemon.metrics_listen: 127.0.0.1:9460 is loopback, but with upstream = \"dr\""
            ),
        "{message}"
    );
    let message = error_text(&MINIMAL.replace(
        "[[service]]",
        "[daemon]\nupstream = \"tunnel\"\n\n[[service]]",
    ));
    assert!(message.contains("daemon.upstream"), "{message}");
}

#[test]
fn upstream_dr_without_shutdown_delay_is_warned_about() {
    let dr = |extra: &str| {
        parse(&MINIMAL.replace(
            "[[service]]",
            &format!(
                "[daemon]\nupstream = \"dr\"\nbalancer = \"ipvs\"\nmetrics_listen = \"0.0.0.0:9460\"\n{extra}\n[[service]]"
            ),
        ))
        .unwrap()
    };
    let warnings = dr("").warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("shutdown_delay = \"0s\"")),
        "{warnings:?}"
    );
    let config = dr("shutdown_delay = \"3s\"\n");
    assert_eq!(config.daemon.shutdown_delay, HumanDuration::from_secs(3));
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}
