//! The standard `process_*` metrics of the poold process itself, read from /proc/self at
//! scrape time (prometheus-client has no process collector).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// USER_HZ, the unit of /proc times: fixed at 100 by the kernel's userspace ABI on every
/// architecture Linux supports (Prometheus' procfs library makes the same assumption).
const USER_HZ: f64 = 100.0;

/// What /proc/self says about this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub start_time_seconds: f64,
}

/// utime + stime and starttime (ticks after boot) from a /proc/PID/stat line. The command
/// name is in parentheses and may contain spaces or parentheses: split after the last ')'.
pub fn parse_stat(stat: &str) -> Option<(f64, f64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 (state) on; utime is field 14, stime 15, starttime 22.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let cpu_ticks = field(14)? + field(15)?;
    Some((cpu_ticks as f64 / USER_HZ, field(22)? as f64 / USER_HZ))
}

/// A `Vm...: N kB` line of /proc/PID/status, in bytes.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb = value
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kb * 1024)
    })
}

/// The `btime` line of /proc/stat: boot time in seconds since the epoch.
pub fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit of "Max open files" in /proc/PID/limits.
pub fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl ProcessSample {
    /// Reads /proc/self; None when /proc is not mounted or says something unexpected.
    pub fn read() -> Option<Self> {
        let (cpu_seconds, started_after_boot) =
            parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot_time = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| parse_max_fds(&limits));
        Some(Self {
            cpu_seconds,
            resident_memory_bytes: parse_status_kb(&status, "VmRSS")?,
            virtual_memory_bytes: parse_status_kb(&status, "VmSize")?,
            open_fds,
            max_fds,
            start_time_seconds: boot_time as f64 + started_after_boot,
        })
    }
}

/// Collects `process_*` metrics of the poold process at each scrape.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessCollector;

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A scrape without process metrics beats a failed scrape.
        let Some(sample) = ProcessSample::read() else {
            return Ok(());
        };
        let cpu = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(sample.cpu_seconds).encode(cpu)?;
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            sample.resident_memory_bytes as f64,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            sample.virtual_memory_bytes as f64,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors",
            sample.open_fds as f64,
        )?;
        if let Some(max) = sample.max_fds {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                max as f64,
            )?;
        }
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            sample.start_time_seconds,
        )
    }
}
