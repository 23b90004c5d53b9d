//! The containers' default seccomp filter: Docker's default profile (moby/profiles
//! `seccomp/default.json`, vendored by moby at 3579736, 2026-05), built with seccompiler.
//!
//! Why an allow-list, as Docker does, and not a deny-list: a syscall the kernel adds later
//! (or one nobody thought of) is refused until it is listed, instead of reaching the kernel
//! by default. What it refuses matters to a root container without capabilities: new user
//! namespaces (`unshare`, `clone` with namespace flags: the way to regain capabilities and
//! reach unprivileged kernel attack surface), the kernel keyring (`keyctl`, `add_key`,
//! `request_key`: not namespaced), `mount`, `bpf`, `perf_event_open`, `kexec_*`,
//! `open_by_handle_at`, modules, `ptrace`, `userfaultfd`, 32-bit entry points.
//!
//! Differences from Docker, on purpose: `ptrace`, `process_vm_readv`/`writev` are refused
//! unless CAP_SYS_PTRACE is kept (Docker allows them on kernels >= 4.8); x86 32-bit and x32
//! syscalls are refused (the filter checks the audit architecture and kills a process that
//! uses another one). As in Docker, capabilities a container keeps unlock the syscalls they
//! govern (CAP_SYS_ADMIN: mount, unshare, clone with namespace flags...), `clone3` fails with
//! ENOSYS (so C libraries fall back to `clone`, whose flags a filter can check) and every
//! other refused syscall with EPERM.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use caps::Capability;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{Result, SandboxError};

/// Per-service choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// The default filter (see the module docs), plus the spec's extra allowances.
    #[default]
    Default,
    /// No filter at all.
    Unconfined,
}

/// Docker's unconditional allow-list. Names of other architectures (the `*32`, `*_time64`
/// variants...) are dropped at build time for this one.
#[rustfmt::skip]
const DOCKER_ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
    "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old",
    "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat",
    "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod",
    "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync",
    "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64",
    "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
    "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat",
    "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32", "geteuid",
    "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername",
    "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
    "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage",
    "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday",
    "getuid", "getuid32", "getxattr", "getxattrat", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup",
    "io_submit", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listmount", "listxattr", "listxattrat", "llistxattr", "_llseek", "lremovexattr", "lseek",
    "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
    "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect",
    "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
    "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
    "remap_file_pages", "removexattr", "removexattrat", "rename", "renameat", "renameat2",
    "restart_syscall", "riscv_hwprobe", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
    "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr",
    "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat",
    "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
];

/// Docker's architecture-specific entries; the names unknown here are dropped.
const ARCH_ALLOWED: &[&str] = &[
    "arch_prctl",
    "modify_ldt",
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
    "riscv_flush_icache",
];

/// Syscalls a kept capability unlocks (Docker's `includes.caps` entries).
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::CAP_DAC_READ_SEARCH, &["open_by_handle_at"]),
    (
        Capability::CAP_SYS_ADMIN,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::CAP_SYS_BOOT, &["reboot"]),
    (Capability::CAP_SYS_CHROOT, &["chroot"]),
    (
        Capability::CAP_SYS_MODULE,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::CAP_SYS_PACCT, &["acct"]),
    (
        Capability::CAP_SYS_PTRACE,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::CAP_SYS_RAWIO, &["iopl", "ioperm"]),
    (
        Capability::CAP_SYS_TIME,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::CAP_SYS_TTY_CONFIG, &["vhangup"]),
    (
        Capability::CAP_SYS_NICE,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::CAP_SYSLOG, &["syslog"]),
    (Capability::CAP_BPF, &["bpf"]),
    (Capability::CAP_PERFMON, &["perf_event_open"]),
];

/// clone(2) flags that create namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET): Docker's mask 0x7E020000.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// A compiled BPF program. The helper plan carries it as one hex string of its 8-byte
/// instructions: a JSON array of thousands of numbers took 14 ms to send and parse in a
/// debug build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub(crate) struct Program(seccompiler::BpfProgram);

impl From<Program> for String {
    fn from(p: Program) -> String {
        use std::fmt::Write;
        let mut hex = String::with_capacity(p.0.len() * 16);
        for i in &p.0 {
            let _ = write!(hex, "{:04x}{:02x}{:02x}{:08x}", i.code, i.jt, i.jf, i.k);
        }
        hex
    }
}

impl TryFrom<String> for Program {
    type Error = &'static str;

    fn try_from(hex: String) -> std::result::Result<Self, Self::Error> {
        const BAD: &str = "a seccomp program is hex text of 8-byte instructions";
        if hex.len() % 16 != 0 || !hex.is_ascii() {
            return Err(BAD);
        }
        let field =
            |at: usize, len: usize| u32::from_str_radix(&hex[at..at + len], 16).map_err(|_| BAD);
        (0..hex.len())
            .step_by(16)
            .map(|at| {
                Ok(seccompiler::sock_filter {
                    code: field(at, 4)? as u16,
                    jt: field(at + 4, 2)? as u8,
                    jf: field(at + 6, 2)? as u8,
                    k: field(at + 8, 8)?,
                })
            })
            .collect::<std::result::Result<_, _>>()
            .map(Program)
    }
}

fn arch() -> Result<seccompiler::TargetArch> {
    std::env::consts::ARCH.try_into().map_err(|_| {
        SandboxError::spec(
            "seccomp",
            format!(
                "no seccomp support for {}: set seccomp = \"unconfined\"",
                std::env::consts::ARCH
            ),
        )
    })
}

fn probe(arch: seccompiler::TargetArch, name: &str) -> bool {
    let doc = json!({ "probe": {
        "mismatch_action": "allow",
        "match_action": { "errno": 1 },
        "filter": [{ "syscall": name }],
    }});
    seccompiler::compile_from_json(doc.to_string().as_bytes(), arch).is_ok()
}

/// The built-in names that exist on this architecture (computed once).
fn builtin_known() -> &'static HashSet<&'static str> {
    static KNOWN: OnceLock<HashSet<&'static str>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let Ok(arch) = arch() else {
            return HashSet::new();
        };
        DOCKER_ALLOWED
            .iter()
            .chain(ARCH_ALLOWED)
            .chain(BY_CAPABILITY.iter().flat_map(|(_, n)| n.iter()))
            .chain(["socket", "personality", "clone", "clone3"].iter())
            .copied()
            .filter(|n| probe(arch, n))
            .collect()
    })
}

/// Whether `name` is a syscall of this architecture (for `seccomp_allow`).
pub fn is_known_syscall(name: &str) -> bool {
    builtin_known().contains(name) || arch().is_ok_and(|a| probe(a, name))
}

/// Argument conditions, seccompiler's JSON form.
fn cond(index: u8, op: Value, val: u64) -> Value {
    json!({ "index": index, "type": "dword", "op": op, "val": val })
}

/// The filters for a container keeping `capabilities` and allowed `extra` syscalls, in the order
/// they must be installed (the last one installed wins among equal actions). Compiled once
/// per distinct set (a few ms in a debug build) and cached.
pub(crate) fn container_filters(
    capabilities: &[Capability],
    extra: &[String],
) -> Result<Vec<Program>> {
    type Key = (Vec<Capability>, Vec<String>);
    static CACHE: OnceLock<Mutex<HashMap<Key, Vec<Program>>>> = OnceLock::new();
    let mut key = (capabilities.to_vec(), extra.to_vec());
    key.0.sort_by_key(|c| c.index());
    key.1.sort();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(hit.clone());
    }
    let programs = compile_container_filters(capabilities, extra)?;
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, programs.clone());
    Ok(programs)
}

fn compile_container_filters(
    capabilities: &[Capability],
    extra: &[String],
) -> Result<Vec<Program>> {
    let arch = arch()?;
    for name in extra {
        if !is_known_syscall(name) {
            return Err(SandboxError::spec(
                "seccomp_allow",
                format!("{name:?} is not a syscall on {}", std::env::consts::ARCH),
            ));
        }
    }
    let known = builtin_known();
    // name -> None (always allowed) or Some(rules, any of which allows it).
    let mut allowed: BTreeMap<&str, Option<Vec<Vec<Value>>>> = BTreeMap::new();
    let always = |name: &str, allowed: &mut BTreeMap<&str, _>| {
        if let Some(&n) = known.get(name) {
            allowed.insert(n, None);
        }
    };
    for name in DOCKER_ALLOWED.iter().chain(ARCH_ALLOWED) {
        always(name, &mut allowed);
    }
    allowed.insert(
        "socket",
        Some(vec![
            // Not AF_ALG (38) or AF_VSOCK (40).
            vec![cond(0, json!("lt"), 38)],
            vec![cond(0, json!("eq"), 39)],
            vec![cond(0, json!("gt"), 40)],
        ]),
    );
    allowed.insert(
        "personality",
        Some(
            [0, 8, 0x2_0000, 0x2_0008, 0xffff_ffff]
                .into_iter()
                .map(|p| vec![cond(0, json!("eq"), p)])
                .collect(),
        ),
    );
    allowed.insert(
        "clone",
        Some(vec![vec![json!({
            "index": 0, "type": "qword",
            "op": { "masked_eq": CLONE_NAMESPACE_FLAGS }, "val": 0,
        })]]),
    );
    for (cap, names) in BY_CAPABILITY {
        if capabilities.contains(cap) {
            for name in *names {
                always(name, &mut allowed);
            }
        }
    }
    let clone3_unlocked = allowed.get("clone3").is_some_and(Option::is_none);
    for name in extra {
        allowed.insert(name.as_str(), None);
    }
    let mut rules = Vec::new();
    for (name, conditions) in &allowed {
        match conditions {
            None => rules.push(json!({ "syscall": name })),
            Some(any) => rules.extend(
                any.iter()
                    .map(|args| json!({ "syscall": name, "args": args })),
            ),
        }
    }
    let mut doc = json!({ "allow": {
        "mismatch_action": { "errno": libc::EPERM },
        "match_action": "allow",
        "filter": rules,
    }});
    if !clone3_unlocked && !extra.iter().any(|n| n == "clone3") {
        doc["clone3"] = json!({
            "mismatch_action": "allow",
            "match_action": { "errno": libc::ENOSYS },
            "filter": [{ "syscall": "clone3" }],
        });
    }
    let mut compiled = seccompiler::compile_from_json(doc.to_string().as_bytes(), arch)
        .map_err(|source| SandboxError::Seccomp { source })?;
    let mut programs = Vec::new();
    for name in ["allow", "clone3"] {
        if let Some(p) = compiled.remove(name) {
            programs.push(Program(p));
        }
    }
    Ok(programs)
}

/// Installs `programs` on the calling thread, in order (needs no_new_privs, which
/// seccompiler sets too).
pub(crate) fn install(programs: &[Program]) -> nix::Result<()> {
    for p in programs {
        seccompiler::apply_filter(&p.0).map_err(|e| match e {
            seccompiler::Error::Prctl(io) | seccompiler::Error::Seccomp(io) => io
                .raw_os_error()
                .map_or(nix::errno::Errno::EIO, nix::errno::Errno::from_raw),
            _ => nix::errno::Errno::EINVAL,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_against_this_architecture() {
        assert!(is_known_syscall("read"));
        assert!(is_known_syscall("keyctl"));
        assert!(!is_known_syscall("no_such_syscall"));
        // 32-bit only names are not syscalls of a 64-bit architecture.
        assert!(!is_known_syscall("chown32"));
    }

    #[test]
    fn the_default_filter_compiles_with_and_without_extras() {
        let base = container_filters(&[], &[]).unwrap();
        assert_eq!(base.len(), 2, "allow-list and clone3 -> ENOSYS");
        let with = container_filters(&[Capability::CAP_SYS_ADMIN], &["keyctl".into()]).unwrap();
        assert_eq!(with.len(), 1, "CAP_SYS_ADMIN unlocks clone3");
        assert_ne!(base[0], with[0]);
        let text = serde_json::to_string(&base).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Program>>(&text).unwrap(), base);
        assert!(serde_json::from_str::<Program>("\"12345\"").is_err());
        let e = container_filters(&[], &["bogus".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("seccomp_allow") && e.contains("bogus"), "{e}");
    }
}
