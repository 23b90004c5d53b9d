//! The metrics against the shared pool harness, in paused time: events are driven through a
//! real pool, then the encoded exposition is read back.

use super::process::{parse_boot_time, parse_max_fds, parse_stat, parse_status_kb};
use super::*;
use crate::balancer::BalancerKind;
use crate::config::ByteSize;
use crate::runtime::{ExitStatus, ResourceUsage};
use crate::supervisor::testing::{wait, web_service, Harness};

fn service(workers: u32) -> ServiceConfig {
    web_service(
        workers,
        "[service.limits]\nmemory = \"256MiB\"\n\
         [service.recycle]\nmax_memory = \"200MiB\"\ndrain_timeout = \"20s\"\n",
    )
}

/// A pool on the fakes whose observer is `metrics`' hooks, with its gauges tracked.
struct Observed {
    h: Harness,
    metrics: Metrics,
}

impl std::ops::Deref for Observed {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

impl Observed {
    async fn start(config: ServiceConfig) -> Self {
        let metrics = Metrics::new(BalancerKind::Ipvs);
        let observer = Arc::new(metrics.pool_metrics(&config.name));
        let config = Arc::new(config);
        let h = Harness::builder((*config).clone())
            .observer(observer)
            .start()
            .await;
        metrics.track(config, h.pool.status.clone());
        Self { h, metrics }
    }

    /// The value of the sample `series` (name and labels exactly as encoded).
    fn value(&self, series: &str) -> f64 {
        sample(&self.metrics.encode().unwrap(), series)
    }
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn status_gauges_follow_the_pool() {
    let h = Observed::start(service(2)).await;
    assert_eq!(
        h.value(r#"poold_service_workers_ready{service="web"}"#),
        0.0
    );
    wait(2).await;
    assert_eq!(
        h.value(r#"poold_service_workers_desired{service="web"}"#),
        2.0
    );
    assert_eq!(
        h.value(r#"poold_service_workers_ready{service="web"}"#),
        2.0
    );
    for slot in 0..2 {
        assert_eq!(
            h.value(&format!(
                r#"poold_worker_state{{service="web",slot="{slot}",state="ready"}}"#
            )),
            1.0
        );
        assert_eq!(
            h.value(&format!(
                r#"poold_slot_state{{service="web",slot="{slot}",state="ok"}}"#
            )),
            1.0
        );
    }
    assert_eq!(
        h.value(r#"poold_worker_state{service="web",slot="0",state="starting"}"#),
        0.0
    );
    assert_eq!(
        h.value(r#"poold_service_memory_limit_bytes{service="web"}"#),
        (256u64 << 20) as f64
    );
    assert_eq!(
        h.value(r#"poold_service_recycle_memory_bytes{service="web"}"#),
        (200u64 << 20) as f64
    );
    assert_eq!(
        h.value(r#"poold_service_drain_timeout_seconds{service="web"}"#),
        20.0
    );
    assert_eq!(
        h.value(&format!(
            r#"poold_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert_eq!(h.value(r#"poold_balancer_info{balancer="ipvs"}"#), 1.0);
    let age = h.value(r#"poold_worker_age_seconds{service="web",slot="1"}"#);
    assert!((1.0..=2.0).contains(&age), "age {age}");

    // Usage and connections of slot 1's worker show under slot 1, never under a pid.
    let worker = h.ready_worker(1);
    h.runtime.set_usage(
        worker.id,
        ResourceUsage {
            memory_bytes: 50 << 20,
            oom_kills: 0,
            ..Default::default()
        },
    );
    {
        let mut balancer = h.balancer.state();
        let backend = balancer.backends.get_mut(&worker.addr.unwrap()).unwrap();
        backend.active = 3;
        backend.total = 40;
    }
    wait(1).await;
    let text = h.metrics.encode().unwrap();
    assert_eq!(
        sample(
            &text,
            r#"poold_worker_memory_bytes{service="web",slot="1"}"#
        ),
        (50u64 << 20) as f64
    );
    assert_eq!(
        sample(
            &text,
            r#"poold_worker_active_connections{service="web",slot="1"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            r#"poold_worker_connections_total{service="web",slot="1"}"#
        ),
        40.0
    );
    assert_eq!(
        sample(
            &text,
            r#"poold_worker_connections_total{service="web",slot="0"}"#
        ),
        0.0
    );
    assert!(!text.contains(&format!("\"{}\"", worker.pid.unwrap())));
}

#[tokio::test(start_paused = true)]
async fn connections_counter_keeps_what_a_replaced_worker_served() {
    let h = Observed::start(service(1)).await;
    wait(2).await;
    let old = h.ready_worker(0);
    h.balancer
        .state()
        .backends
        .get_mut(&old.addr.unwrap())
        .unwrap()
        .total = 7;
    wait(1).await;
    let series = r#"poold_worker_connections_total{service="web",slot="0"}"#;
    assert_eq!(h.value(series), 7.0);
    let (_, done) = h.pool.recycle(Some(0)).await.unwrap();
    wait(3).await;
    done.await.unwrap();
    let new = h.ready_worker(0);
    assert_ne!(new.id, old.id);
    h.balancer
        .state()
        .backends
        .get_mut(&new.addr.unwrap())
        .unwrap()
        .total = 5;
    wait(1).await;
    assert_eq!(h.value(series), 12.0, "a counter never goes down");
}

#[tokio::test(start_paused = true)]
async fn manual_recycle_counts_and_times_the_recycle() {
    let h = Observed::start(service(2)).await;
    wait(2).await;
    let (_, done) = h.pool.recycle(Some(0)).await.unwrap();
    wait(5).await;
    done.await.unwrap();
    let text = h.metrics.encode().unwrap();
    assert_eq!(
        sample(
            &text,
            r#"poold_recycles_total{service="web",reason="manual"}"#
        ),
        1.0
    );
    for reason in RECYCLE_LABELS.iter().filter(|label| **label != "manual") {
        let series = format!(r#"poold_recycles_total{{service="web",reason="{reason}"}}"#);
        assert_eq!(sample(&text, &series), 0.0, "{series}");
    }
    assert_eq!(
        sample(
            &text,
            r#"poold_recycle_duration_seconds_count{service="web"}"#
        ),
        1.0
    );
    // Surge start, the drain settle (1 s) and the stop, in paused time: between 1 and 5 s.
    let seconds = sample(
        &text,
        r#"poold_recycle_duration_seconds_sum{service="web"}"#,
    );
    assert!((1.0..5.0).contains(&seconds), "recycle took {seconds} s");
    assert_eq!(
        sample(
            &text,
            r#"poold_recycle_duration_seconds_bucket{le="0.5",service="web"}"#
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            r#"poold_recycle_duration_seconds_bucket{le="5.0",service="web"}"#
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn crash_counts_as_crash_and_recycle() {
    let h = Observed::start(service(2)).await;
    wait(2).await;
    let victim = h.ready_worker(1);
    h.runtime.exit(victim.id, ExitStatus::Code(1));
    wait(1).await;
    assert_eq!(h.value(r#"poold_worker_crashes_total{service="web"}"#), 1.0);
    assert_eq!(
        h.value(r#"poold_recycles_total{service="web",reason="crash"}"#),
        1.0
    );
    assert_eq!(
        h.value(r#"poold_recycle_duration_seconds_count{service="web"}"#),
        0.0,
        "a crash is not a timed recycle"
    );
    // A planned stop is no crash.
    h.pool.shutdown().await;
    assert_eq!(h.value(r#"poold_worker_crashes_total{service="web"}"#), 1.0);
}

#[tokio::test(start_paused = true)]
async fn health_failures_and_unhealthy_recycle() {
    let h = Observed::start(service(1)).await;
    wait(2).await;
    let sick = h.ready_worker(0);
    h.health.set_unhealthy(sick.addr.unwrap().ip(), true);
    // interval 2 s, unhealthy_threshold 3.
    wait(7).await;
    let failures = h.value(r#"poold_health_check_failures_total{service="web"}"#);
    assert!(failures >= 3.0, "{failures} failures");
    assert_eq!(
        h.value(r#"poold_recycles_total{service="web",reason="health"}"#),
        1.0
    );
    wait(30).await;
    assert_eq!(
        h.value(r#"poold_recycle_duration_seconds_count{service="web"}"#),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn oom_kills_are_counted_and_recycle() {
    let mut config = service(1);
    config.recycle.max_memory = Some(ByteSize::mib(1000));
    let h = Observed::start(config).await;
    wait(2).await;
    let worker = h.ready_worker(0);
    h.runtime.set_usage(
        worker.id,
        ResourceUsage {
            memory_bytes: 10 << 20,
            oom_kills: 2,
            ..Default::default()
        },
    );
    wait(1).await;
    assert_eq!(
        h.value(r#"poold_worker_oom_kills_total{service="web"}"#),
        2.0
    );
    assert_eq!(
        h.value(r#"poold_recycles_total{service="web",reason="oom"}"#),
        1.0
    );
}

#[test]
fn exported_names_cover_every_family() {
    let names = Metrics::exported_names().unwrap();
    for name in [
        "poold_build_info",
        "poold_balancer_info",
        "poold_service_workers_desired",
        "poold_service_workers_ready",
        "poold_worker_state",
        "poold_worker_memory_bytes",
        "poold_worker_active_connections",
        "poold_worker_connections_total",
        "poold_worker_age_seconds",
        "poold_recycles_total",
        "poold_worker_crashes_total",
        "poold_worker_oom_kills_total",
        "poold_health_check_failures_total",
        "poold_recycle_duration_seconds_bucket",
        "poold_recycle_duration_seconds_count",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    assert!(!names.iter().any(|n| n == "poold_recycles"));
}

#[test]
fn prometheus_text_names_counter_families_like_their_samples() {
    let openmetrics = "# HELP poold_recycles Recycles.\n# TYPE poold_recycles counter\n\
                       poold_recycles_total{service=\"web\",reason=\"manual\"} 1\n\
                       # HELP poold_x_seconds X.\n# TYPE poold_x_seconds gauge\n# UNIT poold_x_seconds seconds\n\
                       poold_x_seconds 2.5\n# HELP poold_build Build.\n# TYPE poold_build info\n\
                       poold_build_info{version=\"1\"} 1\n# EOF\n";
    assert_eq!(
        to_prometheus_text(openmetrics),
        "# HELP poold_recycles_total Recycles.\n# TYPE poold_recycles_total counter\n\
         poold_recycles_total{service=\"web\",reason=\"manual\"} 1\n\
         # HELP poold_x_seconds X.\n# TYPE poold_x_seconds gauge\npoold_x_seconds 2.5\n\
         # HELP poold_build_info Build.\n# TYPE poold_build_info gauge\n\
         poold_build_info{version=\"1\"} 1\n"
    );
}

#[test]
fn proc_parsers_read_kernel_formats() {
    // A command name with spaces and a parenthesis, as the kernel prints it.
    let stat = "4242 (po (ol) d) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 125 0 0 20 0 9 0 \
                123456 2000000 3000 18446744073709551615 1 1 0 0 0 0 0 4096 17";
    assert_eq!(parse_stat(stat), Some((3.75, 1234.56)));
    assert_eq!(parse_stat("garbage"), None);
    let status = "Name:\tpoold\nVmSize:\t  200000 kB\nVmRSS:\t    1234 kB\n";
    assert_eq!(parse_status_kb(status, "VmRSS"), Some(1234 * 1024));
    assert_eq!(parse_status_kb(status, "VmSize"), Some(200000 * 1024));
    assert_eq!(parse_status_kb(status, "VmSwap"), None);
    assert_eq!(
        parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
        Some(1_700_000_000)
    );
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max open files            1024                 524288               files     \n";
    assert_eq!(parse_max_fds(limits), Some(1024));
}

#[test]
fn process_collector_reads_this_process() {
    let sample = process::ProcessSample::read().expect("/proc is mounted");
    assert!(sample.resident_memory_bytes > 0);
    assert!(sample.open_fds >= 3, "stdin, stdout, stderr at least");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // Started before now, and (a test process) not before the kernel booted in 2001.
    assert!(sample.start_time_seconds <= now + 1.0 && sample.start_time_seconds > 1e9);
    let text = Metrics::new(BalancerKind::Proxy).encode().unwrap();
    assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    assert!(text.contains("\nprocess_open_fds "), "{text}");
}
