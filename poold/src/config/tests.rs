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

/// The README runs `poolctl status` with no --socket: the quick start must use its default.
#[test]
fn quickstart_socket_is_poolctls_default() {
    use clap::Parser;
    let config = parse(QUICKSTART).expect("quickstart must be valid");
    let poolctl = crate::cli::PoolctlArgs::parse_from(["poolctl", "status"]);
    assert_eq!(config.daemon.control_socket, poolctl.socket);
    assert!(
        config.daemon.state_dir.starts_with("/run/poold"),
        "quick-start state lives under /run/poold: {}",
        config.daemon.state_dir.display()
    );
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
        log_level,
        cgroup_parent,
        control_group: _,
    } = DaemonConfig::default();
    let NetworkConfig { bridge, subnet } = NetworkConfig::default();
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
            log_level,
            cgroup_parent,
            control_group: Some("poold".into()),
        },
        network: NetworkConfig { bridge, subnet },
        services: vec![ServiceConfig {
            name: "web".into(),
            listen: "10.212.0.1:80".parse().unwrap(),
            protocol: Protocol::Tcp,
            scheduler: "wlc".into(),
            workers: 1,
            weight: 1,
            max_client_connections: 4096,
            port: 8080,
            rootfs: "host".into(),
            command: vec!["/bin/true".into()],
            env: [("A".to_owned(), "b".to_owned())].into(),
            user: Some("nobody".into()),
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
            },
            backoff: BackoffConfig {
                initial,
                max,
                multiplier,
            },
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
    assert!(message.starts_with("/etc/poold.toml:2:1: network.subnet: 10.9.0.0/29 has 6 host addresses; 2 workers need at least 9"), "{message}");
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
