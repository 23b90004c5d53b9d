//! One cgroup per container, `<parent>/<container id>` (parent `poold` by default), made with
//! cgroups-rs on whichever hierarchy `hierarchies::auto()` finds: v1 on a hybrid host (it
//! checks whether /sys/fs/cgroup itself is cgroup2, so the empty /sys/fs/cgroup/unified tree
//! is ignored), v2 on a unified host. cgroups-rs does create/limits/attach/delete; the usage
//! figures (memory, CPU time, OOM kills) are read from the files directly because its v2 OOM
//! information is empty, and killing on v1 (which has no cgroup.kill) is done with the
//! freezer: freeze, SIGKILL every member, thaw, so nothing can fork in between.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cgroups_rs::fs::{cgroup::Cgroup, hierarchies, Controller, MaxValue};
use cgroups_rs::fs::{cpu::CpuController, freezer::FreezerController};
use cgroups_rs::fs::{memory::MemController, pid::PidController};
use cgroups_rs::CgroupPid;

use super::error::{CgroupFailure, Result, SandboxError};
use super::spec::Limits;

/// Resource usage of one container, from its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContainerUsage {
    /// Memory in use now (page cache included), bytes.
    pub memory_bytes: u64,
    /// CPU time used by all its processes so far.
    pub cpu_time: Duration,
    /// How many processes the kernel OOM-killed in it.
    pub oom_kills: u64,
}

/// Reads a container's resource usage; the supervisor holds it as `Arc<dyn UsageReader>` and
/// tests can substitute a fake.
pub trait UsageReader: Send + Sync + fmt::Debug {
    fn usage(&self) -> Result<ContainerUsage>;
}

const CFS_PERIOD_US: u64 = 100_000;

/// How long [`ContainerCgroup::kill_all`] waits for the killed processes to be gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`ContainerCgroup::destroy`] keeps trying to remove a cgroup it emptied.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `attempt` until it succeeds or `timeout` has passed, with growing pauses. Removing an
/// emptied cgroup needs it: on cgroup v2 a killed process leaves `cgroup.procs` before it has
/// finished exiting, and rmdir answers EBUSY until it has. cgroups-rs retries only on v1
/// (runc retries on both); a pool of 256 workers stopping in the TCG VM left a cgroup.
fn retry_until<T, E>(
    timeout: Duration,
    mut attempt: impl FnMut() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match attempt() {
            Ok(done) => return Ok(done),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// The cgroup of one container.
#[derive(Debug)]
pub(crate) struct ContainerCgroup {
    cg: Cgroup,
    name: String,
}

fn controllers(v2: bool) -> Vec<String> {
    let list: &[&str] = if v2 {
        &["memory", "cpu", "pids"]
    } else {
        &["memory", "cpu", "cpuacct", "pids", "freezer"]
    };
    list.iter().map(|s| s.to_string()).collect()
}

fn load(name: &str) -> Cgroup {
    let hier = hierarchies::auto();
    let v2 = hier.v2();
    Cgroup::load_with_specified_controllers(hier, name, controllers(v2))
}

impl ContainerCgroup {
    /// Creates `<parent>/<id>` with `limits`. On error nothing is left.
    pub(crate) fn create(parent: &str, id: &str, limits: &Limits) -> Result<Self> {
        let name = format!("{parent}/{id}");
        let cg = load(&name);
        cg.create()
            .map_err(|e| SandboxError::cgroup(&name, "create", e))?;
        let this = ContainerCgroup { cg, name };
        if let Err(e) = this.apply(limits) {
            let _ = this.destroy();
            return Err(e);
        }
        Ok(this)
    }

    /// Handle of an existing container cgroup (for orphan cleanup).
    pub(crate) fn open(parent: &str, id: &str) -> Self {
        let name = format!("{parent}/{id}");
        ContainerCgroup {
            cg: load(&name),
            name,
        }
    }

    fn apply(&self, limits: &Limits) -> Result<()> {
        let err =
            |what| move |e: cgroups_rs::fs::error::Error| SandboxError::cgroup(&self.name, what, e);
        if let Some(bytes) = limits.memory_bytes {
            let mem: &MemController = self.controller("memory")?;
            mem.set_limit(bytes as i64)
                .map_err(err("set memory limit"))?;
            // No swap for containers: the limit must mean OOM, not swapping (v2 only; v1's
            // memsw files exist only with swap accounting).
            if self.cg.v2() {
                let _ = mem.set_swappiness(0);
                let _ = std::fs::write(mem.path().join("memory.swap.max"), "0");
            }
        }
        if let Some(milli) = limits.cpu_millicores {
            let cpu: &CpuController = self.controller("cpu")?;
            let quota = (milli * CFS_PERIOD_US / 1000) as i64;
            cpu.set_cfs_quota_and_period(Some(quota), Some(CFS_PERIOD_US))
                .map_err(err("set cpu quota"))?;
        }
        if let Some(n) = limits.pids {
            let pids: &PidController = self.controller("pids")?;
            pids.set_pid_max(MaxValue::Value(n as i64))
                .map_err(err("set pids limit"))?;
        }
        Ok(())
    }

    fn controller<'a, T>(&'a self, what: &'static str) -> Result<&'a T>
    where
        &'a T: From<&'a cgroups_rs::fs::Subsystem>,
        T: Controller + cgroups_rs::fs::ControllIdentifier,
    {
        self.cg.controller_of::<T>().ok_or_else(|| {
            SandboxError::cgroup(
                &self.name,
                "find controller",
                CgroupFailure::NotMounted(what),
            )
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub(crate) fn attach(&self, pid: u32) -> Result<()> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|e| SandboxError::cgroup(&self.name, "attach", e))
    }

    pub(crate) fn procs(&self) -> Vec<u64> {
        self.cg.procs().into_iter().map(|p| p.pid).collect()
    }

    /// SIGKILLs every process in the cgroup and waits (bounded) until it is empty.
    pub(crate) fn kill_all(&self) -> Result<()> {
        if !self.cg.exists() {
            return Ok(());
        }
        // Killed processes can take a while to leave: the last one tears down the container's
        // mount namespace (unmounting an on-disk overlay can mean a filesystem sync).
        let deadline = std::time::Instant::now() + KILL_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        while std::time::Instant::now() < deadline {
            if self.procs().is_empty() {
                return Ok(());
            }
            if self.cg.v2() {
                if self.cg.kill().is_err() {
                    self.kill_listed();
                }
            } else {
                let freezer = self.cg.controller_of::<FreezerController>();
                if let Some(f) = freezer {
                    let _ = f.freeze();
                }
                self.kill_listed();
                if let Some(f) = freezer {
                    let _ = f.thaw();
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        Err(SandboxError::cgroup(
            &self.name,
            "kill",
            CgroupFailure::ProcessesLeft(self.procs()),
        ))
    }

    fn kill_listed(&self) {
        for pid in self.procs() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Kills everything in the cgroup and removes it.
    pub(crate) fn destroy(&self) -> Result<()> {
        self.kill_all()?;
        retry_until(REMOVE_TIMEOUT, || self.cg.delete())
            .map_err(|e| SandboxError::cgroup(&self.name, "delete", e))
    }

    /// A reader of this cgroup's usage files.
    pub(crate) fn reader(&self) -> CgroupReader {
        let path_of = |c: Option<&dyn Controller>| c.map(|c| c.path().to_path_buf());
        let v2 = self.cg.v2();
        let mem = path_of(
            self.cg
                .controller_of::<MemController>()
                .map(|c| c as &dyn Controller),
        );
        let cpu = if v2 {
            path_of(
                self.cg
                    .controller_of::<CpuController>()
                    .map(|c| c as &dyn Controller),
            )
        } else {
            path_of(
                self.cg
                    .controller_of::<cgroups_rs::fs::cpuacct::CpuAcctController>()
                    .map(|c| c as &dyn Controller),
            )
        };
        CgroupReader {
            v2,
            memory_dir: mem,
            cpu_dir: cpu,
        }
    }
}

/// Names of the container cgroups under `parent` (for orphan cleanup).
pub(crate) fn list_children(parent: &str) -> Vec<String> {
    let cg = load(parent);
    let Some(dir) = cg
        .controller_of::<PidController>()
        .map(|c| c.path().to_path_buf())
    else {
        return Vec::new();
    };
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the parent cgroup `parent` from every hierarchy where it is empty. rmdir is the
/// whole check: the kernel refuses (EBUSY) while it has child cgroups or processes, so a
/// parent still holding containers (or another poold's nested parent) stays. Returns the
/// directories removed.
pub(crate) fn remove_parent(parent: &str) -> Result<Vec<PathBuf>> {
    let cg = load(parent);
    let mut dirs: Vec<PathBuf> = cg
        .subsystems()
        .iter()
        .map(|s| s.to_controller().path().to_path_buf())
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut removed = Vec::new();
    for dir in dirs {
        match std::fs::remove_dir(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Busy or not empty: in use, by our containers or someone else's.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {}
            Err(e) => return Err(SandboxError::io("remove cgroup", &dir, e)),
        }
    }
    Ok(removed)
}

/// Reads memory.current / memory.usage_in_bytes, cpu.stat / cpuacct.usage and the oom_kill
/// counter of memory.events (v2) or memory.oom_control (v1).
#[derive(Debug, Clone)]
pub struct CgroupReader {
    v2: bool,
    memory_dir: Option<PathBuf>,
    cpu_dir: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| SandboxError::io("read", path, e))
}

fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl CgroupReader {
    /// A reader with no files (all zero).
    pub(crate) fn empty() -> Self {
        CgroupReader {
            v2: false,
            memory_dir: None,
            cpu_dir: None,
        }
    }
}

impl UsageReader for CgroupReader {
    fn usage(&self) -> Result<ContainerUsage> {
        let mut u = ContainerUsage::default();
        if let Some(m) = &self.memory_dir {
            let (cur, oom) = if self.v2 {
                ("memory.current", m.join("memory.events"))
            } else {
                ("memory.usage_in_bytes", m.join("memory.oom_control"))
            };
            u.memory_bytes = read(&m.join(cur))?.trim().parse().unwrap_or(0);
            u.oom_kills = keyed(&read(&oom)?, "oom_kill").unwrap_or(0);
        }
        if let Some(c) = &self.cpu_dir {
            u.cpu_time = if self.v2 {
                Duration::from_micros(keyed(&read(&c.join("cpu.stat"))?, "usage_usec").unwrap_or(0))
            } else {
                Duration::from_nanos(read(&c.join("cpuacct.usage"))?.trim().parse().unwrap_or(0))
            };
        }
        Ok(u)
    }
}

#[cfg(test)]
mod tests {
    use super::{keyed, retry_until};
    use std::time::Duration;

    /// The kernel's EBUSY from rmdir goes away once what held the directory is gone, and the
    /// retry waits for it (a mount point stands in for a cgroup whose last process is still
    /// exiting). Needs root.
    #[test]
    fn a_removal_refused_as_busy_succeeds_once_the_directory_is_released() {
        let d = tempfile::tempdir().unwrap();
        let busy = d.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        let unmount = crate::sandbox::test_mount::mount_tmpfs(&busy, "64k");
        let first = std::fs::remove_dir(&busy).unwrap_err();
        assert_eq!(first.raw_os_error(), Some(libc::EBUSY), "{first}");

        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(unmount);
        });
        let mut attempts = 0;
        retry_until(Duration::from_secs(30), || {
            attempts += 1;
            std::fs::remove_dir(&busy)
        })
        .expect("removed once released");
        release.join().unwrap();
        assert!(!busy.exists());
        assert!(attempts > 1, "the first attempt was refused: {attempts}");
    }

    #[test]
    fn a_removal_that_keeps_failing_returns_the_last_error() {
        let mut attempts = 0;
        let e = retry_until(Duration::from_millis(20), || {
            attempts += 1;
            Err::<(), _>(attempts)
        })
        .unwrap_err();
        assert_eq!(e, attempts);
        assert!(attempts > 1);
    }

    #[test]
    fn oom_kill_counters_parse_from_both_formats() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(keyed(v1, "oom_kill"), Some(3));
        assert_eq!(keyed(v2, "oom_kill"), Some(2));
        assert_eq!(keyed(v2, "usage_usec"), None);
    }
}
