//! The helper's errors. They cross the control socket as JSON, so they carry errno numbers
//! and paths rather than `io::Error`s; poold prints them (as the source of
//! [`SandboxError::Setup`](crate::sandbox::SandboxError::Setup)), the helper never does.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

/// The step of the container's setup that failed, with the operation that failed in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum HelperError {
    #[error("control socket: {0}")]
    Control(#[source] OpError),
    #[error("reading the plan: {detail}")]
    Plan {
        /// serde_json's description of what it could not parse.
        detail: String,
    },
    #[error("network namespace: {0}")]
    NetworkNamespace(#[source] OpError),
    #[error("user namespace: {0}")]
    UserNamespace(#[source] OpError),
    #[error("mount, pid, uts, ipc and cgroup namespaces: {0}")]
    Namespaces(#[source] OpError),
    #[error("starting the init: {0}")]
    StartInit(#[source] OpError),
    #[error("init: {0}")]
    Init(#[source] OpError),
    #[error("making the mounts private: {0}")]
    PrivateMounts(#[source] OpError),
    #[error("scratch tmpfs: {0}")]
    ScratchTmpfs(#[source] OpError),
    #[error("overlay root: {0}")]
    OverlayRoot(#[source] OpError),
    #[error("host root: {0}")]
    HostRoot(#[source] OpError),
    #[error("/etc/hosts and /etc/resolv.conf: {0}")]
    EtcFiles(#[source] OpError),
    #[error("bind mounts: {0}")]
    BindMounts(#[source] OpError),
    #[error("tmpfs mounts: {0}")]
    TmpfsMounts(#[source] OpError),
    #[error("/proc: {0}")]
    Proc(#[source] OpError),
    #[error("/dev: {0}")]
    Devices(#[source] OpError),
    #[error("private /tmp: {0}")]
    PrivateTmp(#[source] OpError),
    #[error("switching to the new root: {0}")]
    SwitchRoot(#[source] OpError),
    /// pivot_root was impossible and the root is not the initramfs, the one place where a
    /// chroot (weaker: escapable with CAP_SYS_CHROOT) is accepted instead.
    #[error(
        "pivot_root failed ({pivot_root}) and the chroot fallback is refused: / is not the \
         initramfs (filesystem magic {:#x}, initial mount: {})",
        root.fs_magic,
        root.initial_mount
    )]
    ChrootRefused {
        #[serde(with = "errno_number")]
        pivot_root: Errno,
        root: RootFacts,
    },
    #[error("read-only root: {0}")]
    ReadOnlyRoot(#[source] OpError),
    #[error("hostname: {0}")]
    Hostname(#[source] OpError),
    #[error("workdir: {0}")]
    Workdir(#[source] OpError),
    #[error("preparing the program: {0}")]
    Program(#[source] OpError),
}

/// What the chroot fallback is decided on: the filesystem of `/` and whether `/` is the
/// first mount of its namespace (its own parent in mountinfo), as the initramfs is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFacts {
    /// statfs(2) f_type of `/`.
    pub fs_magic: i64,
    pub initial_mount: bool,
}

/// One failed operation and what it acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum OpError {
    #[error("mount {} on {} ({:?}): {errno}", from.as_deref().unwrap_or("-"), target.display(), MsFlags::from_bits_truncate(*flags))]
    Mount {
        from: Option<String>,
        target: PathBuf,
        flags: u64,
        #[serde(with = "errno_number")]
        errno: Errno,
    },
    #[error("{call} {}: {errno}", path.display())]
    Path {
        call: Call,
        path: PathBuf,
        #[serde(with = "errno_number")]
        errno: Errno,
    },
    #[error("{call}: {errno}")]
    Call {
        call: Call,
        #[serde(with = "errno_number")]
        errno: Errno,
    },
    #[error("{} goes through a symlink in the root", path.display())]
    SymlinkInRoot { path: PathBuf },
    #[error("{arg:?} contains a NUL byte")]
    NulByte { arg: String },
    #[error("{call} ids {ids:?}: {errno}")]
    Ids {
        call: Call,
        ids: Vec<u32>,
        #[serde(with = "errno_number")]
        errno: Errno,
    },
    #[error("setrlimit {resource:?}: {errno}")]
    Rlimit {
        resource: crate::sandbox::spec::RlimitResource,
        #[serde(with = "errno_number")]
        errno: Errno,
    },
    /// The caps crate reports its errors as text only.
    #[error("{call} {capability}: {detail}")]
    Capability {
        call: Call,
        capability: String,
        detail: String,
    },
}

/// The operations the helper performs, named as in their man pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    AttachIdmappedMount,
    Chdir,
    Chmod,
    Chown,
    Chroot,
    CloseRange,
    Copy,
    Create,
    DetachOldRoot,
    DropBoundingCap,
    Execve,
    Fork,
    IdmappedMount,
    InstallSeccomp,
    Keepcaps,
    LoopbackUp,
    Mkdir,
    Mknod,
    NoNewPrivs,
    Open,
    Pdeathsig,
    Pipe,
    PivotRoot,
    RaiseAmbientCap,
    Read,
    Readlink,
    Remove,
    Rename,
    SetCaps,
    Sethostname,
    Setgroups,
    Setns,
    Setresgid,
    Setresuid,
    Setrlimit,
    Setsid,
    Sigaction,
    Sigprocmask,
    Sigwait,
    Stat,
    Statfs,
    Symlink,
    TakeStdin,
    Unshare,
    Write,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The serde name is the snake_case variant name.
        let name = serde_json::to_value(self).ok();
        f.write_str(name.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

impl OpError {
    pub(crate) fn call(call: Call, errno: Errno) -> Self {
        OpError::Call { call, errno }
    }

    pub(crate) fn path(call: Call, path: &Path, errno: Errno) -> Self {
        OpError::Path {
            call,
            path: path.to_path_buf(),
            errno,
        }
    }

    /// For `std::fs` errors: they all come from a system call with an errno.
    pub(crate) fn io(call: Call, path: &Path, error: std::io::Error) -> Self {
        Self::path(call, path, errno_of(&error))
    }
}

pub(crate) fn errno_of(error: &std::io::Error) -> Errno {
    error.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// Errno as its number on the wire.
mod errno_number {
    use nix::errno::Errno;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(errno: &Errno, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(*errno as i32)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Errno, D::Error> {
        i32::deserialize(d).map(Errno::from_raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_crosses_the_socket_unchanged_and_reads_well() {
        let error = HelperError::Proc(OpError::Mount {
            from: Some("proc".into()),
            target: "/merged/proc".into(),
            flags: MsFlags::MS_NOSUID.bits(),
            errno: Errno::EPERM,
        });
        let wire = serde_json::to_string(&error).unwrap();
        assert_eq!(serde_json::from_str::<HelperError>(&wire).unwrap(), error);
        assert_eq!(
            error.to_string(),
            "/proc: mount proc on /merged/proc (MsFlags(MS_NOSUID)): EPERM: Operation not permitted"
        );
        let error = HelperError::Hostname(OpError::call(Call::Sethostname, Errno::EINVAL));
        assert_eq!(
            error.to_string(),
            "hostname: sethostname: EINVAL: Invalid argument"
        );
    }
}
