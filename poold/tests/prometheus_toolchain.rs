//! The metrics, dashboard and alert rules against the real Prometheus toolchain (promtool,
//! Debian package `prometheus`; `cargo xtask test` installs it): the rules check and pass
//! their unit tests, the exposition lints clean, and the dashboard and rules only refer to
//! metrics poold exports.

use poold::balancer::BalancerKind;
use poold::config::Config;
use poold::metrics::{serve, Metrics};
use poold::runtime::{ExitStatus, WorkerId};
use poold::supervisor::{
    PoolObserver, RecycleReason, ServiceStatus, SlotState, SlotStatus, WorkerState, WorkerStatus,
};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROMTOOL: &str = "/usr/bin/promtool";

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn promtool(args: &[&str], stdin: Option<&str>) -> String {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: apt-get install prometheus (cargo xtask test installs it)"
    );
    let mut child = Command::new(PROMTOOL)
        .args(args)
        .current_dir(dashboards())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// A registry that has seen one pool with a recycle, a crash, health failures, OOM kills.
fn metrics_after_events() -> Metrics {
    let text = "[[service]]\nname = \"web\"\nlisten = \"10.212.0.1:80\"\nworkers = 2\nport = 8080\n\
                rootfs = \"host\"\ncommand = [\"/bin/app\"]\n[service.limits]\nmemory = \"256MiB\"\n";
    let config = Config::parse(text, Path::new("test.toml"))
        .unwrap()
        .services
        .remove(0);
    let worker = |slot, id, state| WorkerStatus {
        slot,
        id: WorkerId(id),
        state,
        addr: Some(format!("10.215.0.{id}:8080").parse().unwrap()),
        pid: Some(4000 + id as u32),
        age_secs: 12.5,
        active_conns: 3,
        total_conns: 40,
        memory_bytes: 50 << 20,
        memory_limit_bytes: None,
        cpu_secs: 0.0,
        reason: None,
        chroot: false,
        generation: 1,
    };
    let status = ServiceStatus {
        name: "web".into(),
        listen: config.listen,
        balancer: BalancerKind::Ipvs,
        desired: 2,
        scaled_from: None,
        ready: 1,
        spares: 0,
        wanted_spares: 0,
        min_ready: 2,
        drained: false,
        generation: 1,
        deployed_rootfs: None,
        rolling_out: false,
        slots: vec![
            SlotStatus {
                slot: 0,
                state: SlotState::Recycling,
                failures: 0,
                last_error: None,
                retry_in_secs: None,
                recycles: 0,
                last_recycle: None,
            },
            SlotStatus {
                slot: 1,
                state: SlotState::Backoff,
                failures: 1,
                last_error: Some("worker w3 exit code 1 while ready".into()),
                retry_in_secs: Some(1.0),
                recycles: 0,
                last_recycle: None,
            },
        ],
        workers: vec![
            worker(0, 1, WorkerState::Draining),
            worker(0, 2, WorkerState::Ready),
        ],
    };
    let metrics = Metrics::new(BalancerKind::Ipvs);
    // A receiver still reads the last status after its sender is gone.
    let (_, status) = tokio::sync::watch::channel(status);
    let hooks = metrics.pool_metrics(&config.name);
    metrics.track(Arc::new(config), status);
    hooks.recycle_started(WorkerId(1), RecycleReason::Lifetime);
    hooks.recycle_finished(
        WorkerId(1),
        RecycleReason::Lifetime,
        std::time::Duration::from_secs(3),
    );
    hooks.worker_exited(WorkerId(1), ExitStatus::Signal(15));
    hooks.worker_crashed(WorkerId(3), ExitStatus::Code(1));
    hooks.health_check_failed(WorkerId(2));
    hooks.oom_killed(WorkerId(2), 2);
    metrics
}

#[test]
fn alert_rules_check_and_pass_their_unit_tests() {
    let checked = promtool(&["check", "rules", "alerts.yml"], None);
    assert!(checked.contains("SUCCESS: 5 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts.test.yml"], None);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[tokio::test]
async fn served_exposition_lints_clean_with_promtool() {
    let metrics = metrics_after_events();
    let server = serve("127.0.0.1:0".parse().unwrap(), metrics.clone())
        .await
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: poold\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    for series in [
        "poold_recycles_total{service=\"web\",reason=\"lifetime\"} 1",
        "poold_worker_crashes_total{service=\"web\"} 1",
        "poold_worker_oom_kills_total{service=\"web\"} 2",
        "poold_worker_state{service=\"web\",slot=\"0\",state=\"draining\"} 1",
        "poold_worker_active_connections{service=\"web\",slot=\"0\"} 6",
        "poold_service_workers_ready{service=\"web\"} 1",
    ] {
        assert!(body.contains(series), "{series} missing in:\n{body}");
    }
    // `promtool check metrics` exits non-zero on any lint problem (names, units, types).
    let lint = promtool(&["check", "metrics"], Some(body));
    assert!(lint.trim().is_empty(), "promtool check metrics: {lint}");
}

/// Every `poold_*` / `process_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !word(bytes[i - 1]);
        let rest = &text[i..];
        if starts_word && (rest.starts_with("poold_") || rest.starts_with("process_")) {
            let end = rest.bytes().position(|b| !word(b)).unwrap_or(rest.len());
            names.insert(rest[..end].to_string());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}

fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", serde_json::Value::String(q)) => {
                        out.push(q.clone())
                    }
                    _ => collect_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_and_rules_use_only_exported_metrics() {
    let exported: BTreeSet<String> = Metrics::exported_names().unwrap().into_iter().collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboards().join("poold.json")).unwrap())
            .expect("dashboards/poold.json is JSON");
    assert_eq!(dashboard["uid"], "poold-overview");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["name"] == "service"
        && v["definition"] == "label_values(poold_service_workers_desired, service)"));

    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 15, "{queries:?}");
    let mut used = BTreeSet::new();
    for query in &queries {
        used.extend(metric_names(query));
    }
    let rules = std::fs::read_to_string(dashboards().join("alerts.yml")).unwrap();
    let rule_exprs: String = rules
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter(|line| !line.contains("summary:") && !line.contains("description:"))
        .collect::<Vec<_>>()
        .join("\n");
    used.extend(metric_names(&rule_exprs));
    assert!(
        used.contains("poold_recycle_duration_seconds_bucket"),
        "{used:?}"
    );
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "dashboards refer to metrics poold does not export: {unknown:?}\nexported: {exported:?}"
    );
}

#[test]
fn metric_name_scanner_finds_names_and_ignores_lookalikes() {
    let names = metric_names(
        "rate(poold_recycles_total{x=\"y\"}[5m]) and on (instance) process_open_fds / my_poold_x",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["poold_recycles_total", "process_open_fds"]
    );
}

/// Kills the Prometheus server this test started, even when the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_string())
}

/// The real Prometheus server scrapes poold's endpoint (OpenMetrics, as Prometheus asks
/// for it) and answers queries about it. Loopback only.
#[tokio::test]
async fn prometheus_server_scrapes_the_endpoint() {
    const PROMETHEUS: &str = "/usr/bin/prometheus";
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: apt-get install prometheus (cargo xtask test installs it)"
    );
    let metrics = metrics_after_events();
    let server = serve("127.0.0.1:0".parse().unwrap(), metrics)
        .await
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("poold-prometheus")
        .tempdir()
        .unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: poold\n    \
             static_configs:\n      - targets: ['{}']\n",
            server.local_addr()
        ),
    )
    .unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = KillOnDrop(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts"),
    );
    // Not a timing assertion: a bound on how long to wait for the first scrape (Prometheus
    // under TCG emulation in the VM starts slowly).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let query = "/api/v1/query?query=poold_service_workers_ready";
    let result = loop {
        if let Some(body) = http_get(web, query).await {
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let result = answer["data"]["result"].clone();
            if result.as_array().is_some_and(|r| !r.is_empty()) {
                break result;
            }
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap();
            panic!(
                "Prometheus never scraped {}; its log:\n{log}",
                server.local_addr()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let sample = &result[0];
    assert_eq!(sample["metric"]["service"], "web", "{result}");
    assert_eq!(sample["metric"]["job"], "poold", "{result}");
    assert_eq!(sample["value"][1], "1", "{result}");
    // Counters and histograms come through OpenMetrics with their usual names.
    let body = http_get(
        web,
        "/api/v1/query?query=poold_recycles_total%7Breason%3D%22lifetime%22%7D",
    )
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["data"]["result"][0]["value"][1], "1", "{body}");
    let body = http_get(
        web,
        "/api/v1/query?query=poold_recycle_duration_seconds_count",
    )
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["data"]["result"][0]["value"][1], "1", "{body}");
}
