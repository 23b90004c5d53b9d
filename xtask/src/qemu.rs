//! Boot the VM under qemu, stream its serial console and read the init's verdict from it.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

#[derive(Debug)]
pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub kvm: bool,
    pub timeout: Duration,
    pub console_log: &'a Path,
}

/// What the init reported on the console (protocol lines start with `VMTEST`/`VMRUN`).
#[derive(Debug, Default)]
pub struct Report {
    /// `VMTEST RESULT: passed=N failed=M`.
    pub tests: Option<(u64, u64)>,
    /// `VMRUN RESULT: exit=N`.
    pub run_exit: Option<i32>,
    /// Failed tests as `binary: test name`, and binaries that crashed.
    pub failures: Vec<String>,
    /// `VMTEST ERROR: ...` lines (setup problems inside the VM).
    pub errors: Vec<String>,
    /// Time from starting qemu to the init's first line.
    pub boot_time: Option<Duration>,
    pub timed_out: bool,
    pub qemu_status: Option<std::process::ExitStatus>,
    current_binary: String,
}

fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

impl Report {
    pub fn feed(&mut self, line: &str, elapsed: Duration) {
        // Kernel messages can share a line with the init's output: find the marker anywhere.
        if let Some(at) = line.find("VMTEST ") {
            let line = &line[at..];
            if line.starts_with("VMTEST INIT") && self.boot_time.is_none() {
                self.boot_time = Some(elapsed);
            } else if let Some(bin) = line.strip_prefix("VMTEST BINARY START: ") {
                self.current_binary = bin
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.rsplit('/').next())
                    .unwrap_or(bin)
                    .to_owned();
            } else if let Some(rest) = line.strip_prefix("VMTEST BINARY CRASHED: ") {
                self.failures
                    .push(format!("{rest} (no libtest summary or non-zero exit)"));
            } else if let Some(rest) = line.strip_prefix("VMTEST ERROR: ") {
                self.errors.push(rest.to_owned());
            } else if line.starts_with("VMTEST RESULT:") {
                if let (Some(p), Some(f)) = (field(line, "passed"), field(line, "failed")) {
                    self.tests = Some((p, f));
                }
            }
        } else if let Some(at) = line.find("VMRUN RESULT:") {
            self.run_exit = field(&line[at..], "exit");
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.failures
                .push(format!("{}: {name}", self.current_binary));
        }
    }
}

pub fn boot(boot: &Boot<'_>) -> Result<Report> {
    let mut cmd = Command::new("qemu-system-x86_64");
    if boot.kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg", "-cpu", "max"]);
    }
    cmd.args([
        "-m",
        "4096",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ])
    .arg("-kernel")
    .arg(boot.vmlinuz)
    .arg("-initrd")
    .arg(boot.initramfs)
    .args([
        "-append",
        "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
            if tx.send(line).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let mut log = fs::File::create(boot.console_log)
        .with_context(|| format!("creating {}", boot.console_log.display()))?;
    let mut report = Report::default();
    let deadline = started + boot.timeout;
    let stdout = std::io::stdout();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(remaining) {
            Ok(line) => {
                let _ = writeln!(stdout.lock(), "{line}");
                writeln!(log, "{line}")?;
                report.feed(&line, started.elapsed());
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                report.timed_out = true;
                let _ = child.kill();
                break;
            }
        }
    }
    report.qemu_status = Some(child.wait()?);
    let _ = reader.join();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_collects_failures_and_result() {
        let mut r = Report::default();
        let t = Duration::from_secs(3);
        for line in [
            "[    1.0] random kernel line",
            "VMTEST INIT: stage 1",
            "VMTEST BINARY START: /w/target/debug/deps/vm_smoke-abc (dir /w/poold)",
            "test cgroup_v2_has_controllers ... ok",
            "test ipvs_loaded ... FAILED",
            "VMTEST BINARY CRASHED: /w/target/debug/deps/other-1 exit=134",
            "VMTEST ERROR: insmod /lib/modules/x/ip_vs.ko failed",
            "VMTEST RESULT: passed=1 failed=2",
        ] {
            r.feed(line, t);
        }
        assert_eq!(r.tests, Some((1, 2)));
        assert_eq!(r.boot_time, Some(t));
        assert_eq!(r.failures.len(), 2);
        assert_eq!(r.failures[0], "vm_smoke-abc: ipvs_loaded");
        assert!(r.failures[1].starts_with("/w/target/debug/deps/other-1"));
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.run_exit, None);
        r.feed("VMRUN RESULT: exit=3", t);
        assert_eq!(r.run_exit, Some(3));
    }
}
