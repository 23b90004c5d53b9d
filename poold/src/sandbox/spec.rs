//! What a container is made of ([`ContainerSpec`]), its validation, and the resolved plan the
//! helper process executes ([`HelperPlan`]).

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{Result, SandboxError};
use super::seccomp::{Program, SeccompMode};

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootFs {
    /// An unpacked root filesystem directory (e.g. an extracted `docker export`). Shared,
    /// never written: each container writes to its own overlay upper layer.
    Dir(PathBuf),
    /// A `docker export` tarball (`.tar`, `.tar.gz`/`.tgz`), unpacked once into the
    /// content-addressed image cache (keyed by the file's sha256).
    Tarball(PathBuf),
    /// No image: the host's /usr, /bin, /sbin, /lib, /lib64 and /etc bind-mounted read-only
    /// on an empty tmpfs root (jailing style), so a host program runs without an image.
    /// The root is read-only apart from /tmp; /etc is the host's own (read-only), with the
    /// container's own hosts and a copy of resolv.conf bind-mounted over the host's files.
    Host,
}

/// How the container is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// A veth pair into the configured bridge, an address from the service subnet and a
    /// default route via the bridge (needs [`super::SandboxConfig::bridge`]).
    #[default]
    Bridged,
    /// A private network namespace with only `lo` (up).
    Isolated,
    /// Share the host's network namespace (no network isolation).
    Host,
}

/// Where the program's stdout and stderr go (stdin is always /dev/null).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Inherit poold's stdout/stderr.
    #[default]
    Inherit,
    /// Discard.
    Null,
    /// Append both to this host file (created if missing).
    File(PathBuf),
    /// Pipes the caller reads ([`super::Container::take_output`]).
    Piped,
}

/// cgroup limits. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (4 MiB ..= 1 TiB). Exceeding it gets the container OOM-killed.
    pub memory_bytes: Option<u64>,
    /// CPU quota in millicores (1000 = one full CPU), 10 ..= 1_024_000.
    pub cpu_millicores: Option<u64>,
    /// Maximum number of tasks (processes and threads) in the container, 1 ..= 4_194_304.
    pub pids: Option<u64>,
}

/// A resource limit (setrlimit) applied to the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: RlimitResource,
    pub soft: u64,
    pub hard: u64,
}

/// The rlimit resources a spec may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RlimitResource {
    Nofile,
    Nproc,
    Core,
    Stack,
    Fsize,
    As,
    Memlock,
    Cpu,
}

/// An empty tmpfs mounted in the container (it takes the mode and owner of the directory it
/// covers in the image, so a service's own directories stay its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    /// Absolute path inside the container (created if missing).
    pub target: PathBuf,
    pub size_bytes: u64,
}

/// A host path bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute host path (must exist).
    pub source: PathBuf,
    /// Absolute path inside the container (created if missing).
    pub target: PathBuf,
    pub read_only: bool,
}

/// A user namespace's id mapping: ids `0..count` inside are host ids
/// `host_first..host_first + count`, for users and groups alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub host_first: u32,
    pub count: u32,
}

/// Everything needed to start one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Used in logs and as the default hostname: `[A-Za-z0-9._-]`, 1..=63 chars.
    pub name: String,
    pub rootfs: RootFs,
    /// Mount the root read-only (a tmpfs is mounted on /tmp). Otherwise writes land in the
    /// container's own overlay upper layer, thrown away at teardown.
    pub read_only_root: bool,
    /// The program: an absolute path inside the root, or a name looked up in `PATH` (from
    /// `env`, else a standard PATH) inside the root.
    pub command: String,
    pub args: Vec<String>,
    /// Environment of the program (nothing is inherited from poold).
    pub env: Vec<(String, String)>,
    /// Absolute working directory inside the root.
    pub workdir: PathBuf,
    /// `NAME`, `UID`, `NAME:GROUP` or `UID:GID`; names are looked up in the ROOTFS's
    /// /etc/passwd and /etc/group. `None` = root (uid 0, gid 0).
    pub user: Option<String>,
    /// Defaults to `name`.
    pub hostname: Option<String>,
    pub limits: Limits,
    pub rlimits: Vec<Rlimit>,
    pub mounts: Vec<BindMount>,
    pub tmpfs: Vec<Tmpfs>,
    /// Capabilities kept (bounding, permitted, effective, inheritable, ambient). All others
    /// are dropped; empty means none at all.
    pub capabilities: Vec<caps::Capability>,
    pub network: NetworkMode,
    pub output: Output,
    /// The syscall filter (default: Docker's default profile; see `seccomp`).
    pub seccomp: SeccompMode,
    /// Syscalls allowed on top of the default filter (names of this architecture).
    pub seccomp_allow: Vec<String>,
    /// Run the program in a user namespace with this mapping: its root is an unprivileged
    /// host uid. The image's files are seen through an idmapped mount (or, where the
    /// filesystem cannot idmap, a copy with shifted ownership), so they keep their owners.
    pub user_namespace: Option<IdMap>,
}

impl ContainerSpec {
    /// A spec with defaults: writable overlay root, workdir `/`, root user, no limits, bridged
    /// network, inherited output.
    pub fn new(name: impl Into<String>, rootfs: RootFs, command: impl Into<String>) -> Self {
        ContainerSpec {
            name: name.into(),
            rootfs,
            read_only_root: false,
            command: command.into(),
            args: Vec::new(),
            env: Vec::new(),
            workdir: PathBuf::from("/"),
            user: None,
            hostname: None,
            limits: Limits::default(),
            rlimits: Vec::new(),
            mounts: Vec::new(),
            tmpfs: Vec::new(),
            capabilities: Vec::new(),
            network: NetworkMode::default(),
            output: Output::default(),
            seccomp: SeccompMode::Default,
            seccomp_allow: Vec::new(),
            user_namespace: None,
        }
    }

    /// Checks everything that can be checked without the root filesystem.
    pub fn validate(&self) -> Result<()> {
        check_label("name", &self.name)?;
        if let Some(h) = &self.hostname {
            check_label("hostname", h)?;
        }
        if self.command.is_empty() {
            return Err(SandboxError::spec("command", "must not be empty"));
        }
        if self.command.contains('\0') || self.args.iter().any(|a| a.contains('\0')) {
            return Err(SandboxError::spec("command", "must not contain NUL bytes"));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(SandboxError::spec(
                    "env",
                    format!("bad variable {k:?}: names must be non-empty without '=' or NUL"),
                ));
            }
        }
        check_inner_path("workdir", &self.workdir)?;
        match &self.rootfs {
            RootFs::Dir(p) | RootFs::Tarball(p) => {
                if !p.is_absolute() {
                    return Err(SandboxError::spec(
                        "rootfs",
                        format!("{} must be absolute", p.display()),
                    ));
                }
                let meta = std::fs::metadata(p)
                    .map_err(|e| SandboxError::spec("rootfs", format!("{}: {e}", p.display())))?;
                let want_dir = matches!(self.rootfs, RootFs::Dir(_));
                if want_dir != meta.is_dir() {
                    let what = if want_dir {
                        "a directory"
                    } else {
                        "a tarball file"
                    };
                    return Err(SandboxError::spec(
                        "rootfs",
                        format!("{} is not {what}", p.display()),
                    ));
                }
            }
            RootFs::Host => {}
        }
        let l = &self.limits;
        check_range("limits.memory_bytes", l.memory_bytes, 4 << 20, 1 << 40)?;
        check_range("limits.cpu_millicores", l.cpu_millicores, 10, 1_024_000)?;
        check_range("limits.pids", l.pids, 1, 4_194_304)?;
        for r in &self.rlimits {
            if r.soft > r.hard {
                return Err(SandboxError::spec(
                    "rlimits",
                    format!("{:?}: soft {} above hard {}", r.resource, r.soft, r.hard),
                ));
            }
        }
        for t in &self.tmpfs {
            check_inner_path("tmpfs.target", &t.target)?;
            check_range("tmpfs.size_bytes", Some(t.size_bytes), 4096, 1 << 40)?;
        }
        for m in &self.mounts {
            if !m.source.is_absolute() || !m.source.exists() {
                return Err(SandboxError::spec(
                    "mounts.source",
                    format!("{} must be an existing absolute path", m.source.display()),
                ));
            }
            if m.source.starts_with("/proc") {
                return Err(SandboxError::spec(
                    "mounts.source",
                    format!(
                        "{}: the host's /proc would expose its processes and kernel settings",
                        m.source.display()
                    ),
                ));
            }
            check_inner_path("mounts.target", &m.target)?;
        }
        if let Some(m) = self.user_namespace {
            if m.host_first == 0 || m.count == 0 || m.host_first.checked_add(m.count).is_none() {
                return Err(SandboxError::spec(
                    "user_namespace",
                    format!("{m:?}: expected at least one id, not host root, below 2^32 - 1"),
                ));
            }
        }
        if self.seccomp == SeccompMode::Unconfined && !self.seccomp_allow.is_empty() {
            return Err(SandboxError::spec(
                "seccomp_allow",
                "has no effect without a filter (seccomp = unconfined)",
            ));
        }
        Ok(())
    }

    pub(crate) fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.name)
    }
}

fn check_label(field: &'static str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SandboxError::spec(
            field,
            format!("{s:?}: expected 1..=63 chars of [A-Za-z0-9._-]"),
        ))
    }
}

fn check_range(field: &'static str, v: Option<u64>, min: u64, max: u64) -> Result<()> {
    match v {
        Some(v) if v < min || v > max => Err(SandboxError::spec(
            field,
            format!("{v} out of range {min}..={max}"),
        )),
        _ => Ok(()),
    }
}

fn check_inner_path(field: &'static str, p: &Path) -> Result<()> {
    let ok = p.is_absolute() && p.components().all(|c| !matches!(c, Component::ParentDir));
    if ok {
        Ok(())
    } else {
        Err(SandboxError::spec(
            field,
            format!("{}: expected an absolute path without ..", p.display()),
        ))
    }
}

/// A user resolved to numeric ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The largest passwd or group file read from an image (a hostile image could offer an
/// endless one).
const MAX_ID_FILE: u64 = 16 << 20;

/// Reads the regular file at `inner` (relative to the image root) with every path component,
/// symlinks included, resolved inside `root` (openat2 RESOLVE_IN_ROOT): an image's
/// `etc/passwd -> /etc/passwd` never reaches the host's file. A missing file reads as empty.
fn read_in_root(root: &Path, inner: &str) -> Result<String> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    use std::io::Read;
    let shown = || root.join(inner);
    let io = |e: std::io::Error| SandboxError::io("reading (inside the image root)", shown(), e);
    let dir = std::fs::File::open(root).map_err(|e| SandboxError::io("opening", root, e))?;
    let how = OpenHow::new()
        // O_NONBLOCK: a FIFO planted by the image must not hang the open.
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match nix::fcntl::openat2(&dir, inner, how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(String::new()),
        Err(e) => return Err(io(e.into())),
    };
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    let mut text = String::new();
    file.take(MAX_ID_FILE)
        .read_to_string(&mut text)
        .map_err(io)?;
    Ok(text)
}

/// Resolves `user` against the image at `root` (its etc/passwd and etc/group, read inside
/// the root).
pub(crate) fn resolve_user(user: Option<&str>, root: &Path) -> Result<ResolvedUser> {
    let Some(user) = user else {
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        });
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(root, "etc/passwd")?;
    let group = read_in_root(root, "etc/group")?;
    let etc = root.join("etc");
    let pw_entry = |pred: &dyn Fn(&[&str]) -> bool| -> Option<(String, u32, u32)> {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && pred(&f) {
                Some((f[0].to_string(), f[2].parse().ok()?, f[3].parse().ok()?))
            } else {
                None
            }
        })
    };
    let (name, uid, primary_gid) = if let Ok(uid) = u.parse::<u32>() {
        match pw_entry(&|f| f[2] == u) {
            Some((n, _, gid)) => (Some(n), uid, gid),
            None => (None, uid, uid),
        }
    } else {
        let (n, uid, gid) = pw_entry(&|f| f[0] == u).ok_or_else(|| {
            SandboxError::spec(
                "user",
                format!(
                    "unknown user {u:?}: not in {}",
                    etc.join("passwd").display()
                ),
            )
        })?;
        (Some(n), uid, gid)
    };
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 3 && f[0] == g)
                        .then(|| f[2].parse().ok())
                        .flatten()
                })
                .ok_or_else(|| {
                    SandboxError::spec(
                        "user",
                        format!(
                            "unknown group {g:?}: not in {}",
                            etc.join("group").display()
                        ),
                    )
                })?,
        },
    };
    let mut groups = vec![gid];
    if let Some(name) = &name {
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(id) = f[2].parse::<u32>() {
                    if !groups.contains(&id) {
                        groups.push(id);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser { uid, gid, groups })
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Resolves the command to an absolute path inside the root whose files are at `lower`
/// (symlinks are not followed, since absolute ones point into the container's root).
pub(crate) fn resolve_command(spec: &ContainerSpec, lower: &Path) -> Result<String> {
    let exists = |inner: &Path| {
        let rel = inner.strip_prefix("/").unwrap_or(inner);
        lower.join(rel).symlink_metadata().is_ok()
            || spec.mounts.iter().any(|m| inner.starts_with(&m.target))
    };
    if spec.command.contains('/') {
        let p = Path::new(&spec.command);
        if !p.is_absolute() {
            return Err(SandboxError::spec("command", "a path must be absolute"));
        }
        if !exists(p) {
            return Err(SandboxError::spec(
                "command",
                format!("{} not found in the root filesystem", spec.command),
            ));
        }
        return Ok(spec.command.clone());
    }
    let path = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(&spec.command))
        .find(|p| exists(p))
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| {
            SandboxError::spec(
                "command",
                format!(
                    "{:?} not found in PATH {path} of the root filesystem",
                    spec.command
                ),
            )
        })
}

/// How the helper gets its network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum NetnsPlan {
    Host,
    /// unshare a fresh one and bring `lo` up.
    New,
    /// setns into the prepared namespace bound at this path.
    Join(PathBuf),
}

/// The root the helper builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RootPlan {
    /// overlay of `lower` with the container's upper/work dirs.
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
    },
    /// tmpfs with the host system directories bound read-only.
    Host,
}

/// The fully resolved instructions for the helper, sent as JSON over its control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HelperPlan {
    pub container: super::ContainerId,
    pub root: RootPlan,
    /// Mount point of the new root.
    pub merged: PathBuf,
    /// Mount a tmpfs of this many MiB on this directory first (in the container's private mount
    /// namespace) and make the overlay's upper, work and merged directories inside it.
    pub scratch_tmpfs: Option<(PathBuf, u64)>,
    /// The container's private directory (the scratch tmpfs, or its directory on disk removed at
    /// teardown): where a host-root container's generated /etc files live.
    pub private_dir: PathBuf,
    pub read_only_root: bool,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: PathBuf,
    pub user: ResolvedUser,
    pub hostname: String,
    pub rlimits: Vec<Rlimit>,
    pub mounts: Vec<BindMount>,
    pub tmpfs: Vec<Tmpfs>,
    pub capabilities: Vec<caps::Capability>,
    /// Run the program in a user namespace with this mapping.
    pub userns: Option<IdMap>,
    /// Where a copy of the image with shifted ownership goes when the image's filesystem
    /// cannot do idmapped mounts (made once per image and id range, then reused).
    pub userns_copy: PathBuf,
    /// Seccomp programs the program installs last before exec, in this order.
    pub seccomp: Vec<Program>,
    pub netns: NetnsPlan,
    /// Contents copied to /etc/resolv.conf and /etc/hosts (copied, not bound, so a host-side
    /// rename of the file cannot leave the container with a stale view).
    pub resolv_conf: Option<Vec<u8>>,
    pub hosts: Vec<u8>,
    /// FIFOs (the program's stdout and stderr) the monitor holds open for reading as long
    /// as it lives, so the program never writes to a pipe without a reader (EPIPE,
    /// SIGPIPE) while poold is away; poold reads them, again after a restart.
    pub keep_open: Vec<PathBuf>,
    /// Where the init writes how the program ended (a [`super::ContainerExit`] as JSON),
    /// for a poold that is not the monitor's parent (one restarted since the spawn).
    pub exit_file: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image root with etc/passwd and etc/group.
    fn etc() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nwww:x:33:\nlogs:x:40:www,x\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn users_resolve_by_name_number_and_group() {
        let d = etc();
        let r = resolve_user(Some("www"), d.path()).unwrap();
        assert_eq!(
            r,
            ResolvedUser {
                uid: 33,
                gid: 33,
                groups: vec![33, 40]
            }
        );
        let r = resolve_user(Some("1234:5"), d.path()).unwrap();
        assert_eq!(
            r,
            ResolvedUser {
                uid: 1234,
                gid: 5,
                groups: vec![5]
            }
        );
        let r = resolve_user(Some("www:logs"), d.path()).unwrap();
        assert_eq!(r.gid, 40);
        assert_eq!(resolve_user(None, d.path()).unwrap().uid, 0);
    }

    #[test]
    fn unknown_user_or_group_names_the_file() {
        let d = etc();
        let e = resolve_user(Some("nobody"), d.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown user \"nobody\"") && e.contains("passwd"),
            "{e}"
        );
        let e = resolve_user(Some("www:nogroup"), d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown group") && e.contains("group"), "{e}");
    }

    /// Issue 7 item 13: an image's absolute symlink etc/passwd -> H is read as the image's
    /// own H, never the host's.
    #[test]
    fn users_are_looked_up_inside_the_image_even_through_absolute_symlinks() {
        let host = tempfile::tempdir().unwrap();
        let host_passwd = host.path().join("passwd");
        std::fs::write(&host_passwd, "hostonly:x:4242:4242::/:/bin/sh\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&host_passwd, root.path().join("etc/passwd")).unwrap();
        let e = resolve_user(Some("hostonly"), root.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown user \"hostonly\""), "{e}");
        let inner = root.path().join(host_passwd.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inner.parent().unwrap()).unwrap();
        std::fs::write(&inner, "imageonly:x:77:78::/:/bin/sh\n").unwrap();
        let r = resolve_user(Some("imageonly"), root.path()).unwrap();
        assert_eq!((r.uid, r.gid), (77, 78));
        assert!(resolve_user(Some("hostonly"), root.path()).is_err());
        // A link to itself (seen from inside): a clear error, not the host's /etc/passwd.
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("etc/passwd")).unwrap();
        let e = resolve_user(Some("root"), root.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("etc/passwd"), "{e}");
        // A FIFO must not hang the lookup.
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(
            &root.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = resolve_user(Some("root"), root.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = ContainerSpec::new("w", RootFs::Host, "/bin/true");
        s.validate().unwrap();
        s.limits.memory_bytes = Some(10);
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("limits.memory_bytes") && e.contains("out of range"),
            "{e}"
        );
        let mut s = ContainerSpec::new("w", RootFs::Dir("/nonexistent-poold".into()), "/x");
        assert!(s.validate().unwrap_err().to_string().contains("`rootfs`"));
        s.rootfs = RootFs::Host;
        s.command.clear();
        assert!(s.validate().unwrap_err().to_string().contains("`command`"));
        let s = ContainerSpec::new("bad name", RootFs::Host, "/bin/true");
        assert!(s.validate().unwrap_err().to_string().contains("`name`"));
    }

    #[test]
    fn command_is_found_in_path_of_the_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", d.path().join("bin/sh")).unwrap();
        let s = ContainerSpec::new("w", RootFs::Dir(d.path().into()), "sh");
        assert_eq!(resolve_command(&s, d.path()).unwrap(), "/bin/sh");
        let s = ContainerSpec::new("w", RootFs::Dir(d.path().into()), "nope");
        assert!(resolve_command(&s, d.path()).is_err());
    }
}
