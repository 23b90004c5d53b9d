//! The container helper: poold re-executes itself (`/proc/self/exe __poold-worker-init`) to get
//! a fresh single-threaded process that may allocate freely between fork and exec. The
//! helper reads its [`HelperPlan`] as one JSON line from its control socket (fd 0), joins or
//! creates the network namespace, unshares mount/pid/uts/ipc/cgroup namespaces and forks the
//! container's init (PID 1 of the new pid namespace). The init builds the root (overlay or host
//! binds, /proc, /dev, copied resolv.conf/hosts, bind mounts), pivots into it, sets the
//! hostname and forks the program, which sets rlimits, groups/gid/uid, capabilities and
//! no_new_privs and execs. The init then forwards SIGTERM/INT/HUP/USR1/USR2 to the program,
//! reaps zombies and exits with the program's status, which it also reports on the socket.
//!
//! Process tree: poold -> helper ("monitor", host pid ns, forwards signals to init)
//! -> init (pid 1) -> program (pid 2). The parent attaches the helper to the container's cgroup
//! before it sends the plan, so every process of the container is accounted from the start.
//!
//! pivot_root is used everywhere; only when it fails with EINVAL (a root with no parent
//! mount, e.g. an initramfs rootfs) the init falls back to MS_MOVE + chroot, as runc's
//! no-pivot mode does (escapable with CAP_SYS_CHROOT, which is dropped unless kept).

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};
use serde::{Deserialize, Serialize};

use super::spec::{HelperPlan, IdMap, NetnsPlan, RlimitResource, RootPlan};
use super::{seccomp, sys};

/// The hidden argv[1] that turns the poold binary into the container helper.
pub const HELPER_ARG: &str = "__poold-worker-init";

/// Signals the helper and the init forward to the program.
pub(crate) const FORWARDED: [Signal; 5] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerExit {
    /// exited with this code
    Code(i32),
    /// killed by this signal number
    Signal(i32),
}

impl ContainerExit {
    /// The shell convention: the code, or 128 + signal.
    pub fn as_code(self) -> i32 {
        match self {
            ContainerExit::Code(c) => c,
            ContainerExit::Signal(s) => 128 + s,
        }
    }
}

/// Messages from helper/init to poold, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HelperMsg {
    /// Root built and the program exec'd.
    Ready,
    /// Setup failed before the program ran.
    Error(String),
    /// The program ended.
    Exited(ContainerExit),
}

/// Call this first thing in `main` of any binary used as the helper executable (the `poold`
/// binary does). If argv[1] is [`HELPER_ARG`], it runs the helper and never returns;
/// otherwise it returns at once.
pub fn maybe_run_helper() {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(HELPER_ARG)) {
        std::process::exit(run_helper());
    }
}

fn run_helper() -> i32 {
    // fd 0 is the control socket; move it to fd >= 3 and put /dev/null on stdin.
    let mut ctl = match sys::take_stdin_socket() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("poold worker helper: no control socket on fd 0: {e}");
            return 125;
        }
    };
    // Keep no reference into the host tree: pivot_root then moves our root and cwd too.
    let _ = nix::unistd::chdir("/");
    if let Ok(null) = fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    if let Err(e) = sys::close_fds_from(ctl.as_raw_fd() as u32 + 1, false) {
        return report_fail(&mut ctl, format!("close_range: {e}"));
    }
    let mut line = String::new();
    if let Err(e) = BufReader::new(&ctl).read_line(&mut line) {
        return report_fail(&mut ctl, format!("reading plan: {e}"));
    }
    let plan: HelperPlan = match serde_json::from_str(&line) {
        Ok(p) => p,
        Err(e) => return report_fail(&mut ctl, format!("parsing plan: {e}")),
    };
    match monitor(&plan, &mut ctl) {
        Ok(code) => code,
        Err(e) => report_fail(&mut ctl, e),
    }
}

fn report_fail(ctl: &mut UnixStream, reason: String) -> i32 {
    send(ctl, &HelperMsg::Error(reason));
    125
}

fn send(ctl: &mut UnixStream, msg: &HelperMsg) {
    if let Ok(mut line) = serde_json::to_string(msg) {
        line.push('\n');
        let _ = ctl.write_all(line.as_bytes());
    }
}

fn forwarded_and_chld() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// The helper's own job: namespaces, fork the init, forward signals, relay its status.
fn monitor(plan: &HelperPlan, ctl: &mut UnixStream) -> Result<i32, String> {
    match &plan.netns {
        NetnsPlan::Host => {}
        NetnsPlan::New => {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare(net): {e}"))?;
            sys::loopback_up().map_err(|e| format!("setting lo up: {e}"))?;
        }
        NetnsPlan::Join(path) => {
            let ns = fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {}: {e}", path.display()))?;
        }
    }
    let userns = match plan.userns {
        Some(map) => Some(user_namespace_setup(plan, map)?),
        None => None,
    };
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(|e| format!("unshare(mnt,pid,uts,ipc,cgroup): {e}"))?;
    let signals = forwarded_and_chld();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let (alive_r, alive_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let init = match sys::fork().map_err(|e| format!("fork init: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(alive_w);
            std::process::exit(init_main(plan, userns.as_ref(), ctl, alive_r))
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(alive_r);
    drop(userns);
    // Held until the monitor exits.
    let _alive_w = alive_w;
    loop {
        let sig = signals.wait().map_err(|e| format!("sigwait: {e}"))?;
        if sig == Signal::SIGCHLD {
            match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
                _ => {}
            }
        } else {
            let _ = kill(init, sig);
        }
    }
}

/// What the monitor prepares for a container in a user namespace.
struct UsernsSetup {
    /// The namespace (kept alive by this fd), with its id maps written.
    ns: OwnedFd,
    /// The image as the namespace must see it (none for a host root).
    lower: Option<LowerSource>,
}

enum LowerSource {
    /// A detached idmapped mount of the image, attached by the init.
    Idmapped(OwnedFd),
    /// A copy of the image with shifted ownership.
    Copy(PathBuf),
}

/// Makes the container's user namespace and the view of the image it needs. Runs in the
/// monitor, which is still root in the host's namespaces (writing id maps and making an
/// idmapped mount both need that).
fn user_namespace_setup(plan: &HelperPlan, map: IdMap) -> Result<UsernsSetup, String> {
    if !matches!(plan.netns, NetnsPlan::Host) {
        // The container's network namespace belongs to the host's user namespace, so binding a
        // port below 1024 would need a capability there. This namespace is the container's own.
        fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0")
            .map_err(|e| format!("ip_unprivileged_port_start in the worker's netns: {e}"))?;
    }
    let ns = new_user_namespace(map)?;
    let lower = match &plan.root {
        RootPlan::Host => None,
        RootPlan::Overlay { lower, .. } => Some(match sys::idmapped_clone(lower, ns.as_fd()) {
            Ok(tree) => LowerSource::Idmapped(tree),
            // The filesystem cannot idmap (e.g. tmpfs before Linux 6.3).
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EOPNOTSUPP) => {
                shifted_copy(lower, &plan.userns_copy, map)?;
                LowerSource::Copy(plan.userns_copy.clone())
            }
            Err(e) => return Err(format!("idmapped mount of {}: {e}", lower.display())),
        }),
    };
    Ok(UsernsSetup { ns, lower })
}

/// A new user namespace with `map` for users and groups, held by a short-lived child that
/// unshares it (the monitor must stay in the host's namespace to write the maps).
fn new_user_namespace(map: IdMap) -> Result<OwnedFd, String> {
    use nix::fcntl::OFlag;
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let (hold_r, hold_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let holder = match sys::fork().map_err(|e| format!("fork userns holder: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop((ready_r, hold_w));
            let made = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, if made { b"1" } else { b"0" });
            // Until the monitor has opened the namespace (it closes its end).
            let _ = nix::unistd::read(&hold_r, &mut [0u8; 1]);
            std::process::exit(0)
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop((ready_w, hold_r));
    let opened = (|| {
        let mut byte = [0u8; 1];
        let n = nix::unistd::read(&ready_r, &mut byte).map_err(|e| e.to_string())?;
        if n != 1 || byte[0] != b'1' {
            return Err("unshare(user) failed".to_string());
        }
        let line = format!("0 {} {}\n", map.host_first, map.count);
        for file in ["uid_map", "gid_map"] {
            fs::write(format!("/proc/{holder}/{file}"), &line)
                .map_err(|e| format!("writing {file} ({line:?}): {e}"))?;
        }
        fs::File::open(format!("/proc/{holder}/ns/user"))
            .map(OwnedFd::from)
            .map_err(|e| format!("opening the user namespace: {e}"))
    })();
    drop(hold_w);
    let _ = waitpid(holder, None);
    opened.map_err(|e| format!("user namespace: {e}"))
}

/// Copies the image at `src` to `dest` with every owner shifted into `map` (ids outside it
/// become the namespace's nobody), once: later containers of the same image and range reuse it.
/// Device nodes, FIFOs and sockets are not copied (a container gets its own /dev).
fn shifted_copy(src: &Path, dest: &Path, map: IdMap) -> Result<(), String> {
    if dest.is_dir() {
        return Ok(());
    }
    let parent = dest.parent().unwrap_or(Path::new("/"));
    mkdir_p(parent, 0o700)?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(
        "{}{name}-{}",
        super::rootfs::TMP_PREFIX,
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    copy_shifted(src, &tmp, map).map_err(|e| {
        let _ = fs::remove_dir_all(&tmp);
        format!("copying {} with shifted owners: {e}", src.display())
    })?;
    match fs::rename(&tmp, dest) {
        Ok(()) => Ok(()),
        // Another container finished the same copy first.
        Err(_) if dest.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(format!(
            "rename {} to {}: {e}",
            tmp.display(),
            dest.display()
        )),
    }
}

fn copy_shifted(src: &Path, dst: &Path, map: IdMap) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = src.symlink_metadata()?;
    let kind = meta.file_type();
    if kind.is_dir() {
        fs::create_dir(dst)?;
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            copy_shifted(&entry.path(), &dst.join(entry.file_name()), map)?;
        }
    } else if kind.is_file() {
        fs::copy(src, dst)?;
    } else if kind.is_symlink() {
        symlink(fs::read_link(src)?, dst)?;
    } else {
        return Ok(());
    }
    let nobody = 65534.min(map.count - 1);
    let shift = |id: u32| map.host_first + if id < map.count { id } else { nobody };
    std::os::unix::fs::lchown(dst, Some(shift(meta.uid())), Some(shift(meta.gid())))?;
    if !kind.is_symlink() {
        // After chown, which clears setuid and setgid bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

/// PID 1 of the container.
fn init_main(
    plan: &HelperPlan,
    userns: Option<&UsernsSetup>,
    ctl: &mut UnixStream,
    monitor_alive: OwnedFd,
) -> i32 {
    // If the monitor dies (even by SIGKILL), the init gets SIGKILL and the kernel kills the
    // whole pid namespace with it. The monitor holds the write end of `monitor_alive`: a
    // hang-up there means it died before the parent-death signal was armed.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return report_fail(ctl, format!("pdeathsig: {e}"));
    }
    let mut fds = [PollFd::new(monitor_alive.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) > 0 {
        return 137;
    }
    if let Err(e) = build_root(plan, userns) {
        return report_fail(ctl, e);
    }
    if let Err(e) = sys::install_noop_handlers(&FORWARDED) {
        return report_fail(ctl, format!("signal handlers: {e}"));
    }
    let (err_r, err_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return report_fail(ctl, format!("pipe: {e}")),
    };
    let program = match sys::fork() {
        Err(e) => return report_fail(ctl, format!("fork program: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(err_r);
            let e = exec_program(plan, userns.map(|u| u.ns.as_fd()));
            let mut w = fs::File::from(err_w);
            let _ = w.write_all(e.as_bytes());
            std::process::exit(127);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
    };
    drop(err_w);
    let mut exec_error = String::new();
    let _ = fs::File::from(err_r).read_to_string(&mut exec_error);
    if !exec_error.is_empty() {
        let _ = waitpid(program, None);
        return report_fail(ctl, exec_error);
    }
    send(ctl, &HelperMsg::Ready);
    // The init keeps only CAP_KILL (to signal a program running as another user).
    drop_init_privileges();
    let status = reap_until_exit(program);
    send(ctl, &HelperMsg::Exited(status));
    status.as_code()
}

fn drop_init_privileges() {
    let mut keep = caps::CapsHashSet::new();
    keep.insert(caps::Capability::CAP_KILL);
    for c in caps::runtime::thread_all_supported().difference(&keep) {
        let _ = caps::drop(None, caps::CapSet::Bounding, *c);
    }
    let _ = caps::set(None, caps::CapSet::Inheritable, &caps::CapsHashSet::new());
    let _ = caps::set(None, caps::CapSet::Effective, &keep);
    let _ = caps::set(None, caps::CapSet::Permitted, &keep);
    let _ = nix::sys::prctl::set_no_new_privs();
}

fn reap_until_exit(program: Pid) -> ContainerExit {
    let signals = forwarded_and_chld();
    loop {
        let Ok(sig) = signals.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = kill(program, sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == program => {
                    return ContainerExit::Code(code)
                }
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == program => {
                    return ContainerExit::Signal(s as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn mnt(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(src, target, fstype, flags, data).map_err(|e| {
        format!(
            "mount {} on {} ({flags:?}): {e}",
            src.unwrap_or("-"),
            target.display()
        )
    })
}

fn bind(src: &Path, target: &Path, read_only: bool) -> Result<(), String> {
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind {} on {}: {e}", src.display(), target.display()))?;
    if read_only {
        mnt(
            None,
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

/// `root` joined with the absolute inner path `inner`, refusing any existing symlink on the
/// way (an image's absolute symlink would otherwise resolve against the host).
fn inside(root: &Path, inner: &Path) -> Result<PathBuf, String> {
    let mut p = root.to_path_buf();
    for c in inner.components().skip(1) {
        p.push(c);
        if p.symlink_metadata()
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
        {
            return Err(format!(
                "{} goes through a symlink in the root",
                inner.display()
            ));
        }
    }
    Ok(p)
}

fn mkdir_p(p: &Path, mode: u32) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .map_err(|e| format!("mkdir {}: {e}", p.display()))
}

/// Empty tmpfs mounts, each with the mode and owner of the image's directory it covers.
fn mount_tmpfs(root: &Path, mounts: &[super::spec::Tmpfs]) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    for t in mounts {
        let target = inside(root, &t.target)?;
        mkdir_p(&target, 0o755)?;
        let meta = fs::metadata(&target).map_err(|e| format!("stat {}: {e}", target.display()))?;
        let opts = format!(
            "size={},mode={:o},uid={},gid={}",
            t.size_bytes,
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        );
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mnt(Some("tmpfs"), &target, Some("tmpfs"), flags, Some(&opts))?;
    }
    Ok(())
}

const HOST_DIRS: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "etc"];

fn build_root(plan: &HelperPlan, userns: Option<&UsernsSetup>) -> Result<(), String> {
    let root = &plan.merged;
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    if let Some((base, mib)) = &plan.scratch_tmpfs {
        let opts = format!("size={mib}m,mode=700");
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mnt(Some("tmpfs"), base, Some("tmpfs"), flags, Some(&opts))?;
        for d in ["upper", "work", "merged"] {
            mkdir_p(&base.join(d), 0o755)?;
        }
    }
    match &plan.root {
        RootPlan::Overlay { lower, upper, work } => {
            let lower = match userns.and_then(|u| u.lower.as_ref()) {
                None => lower.clone(),
                Some(LowerSource::Copy(copy)) => copy.clone(),
                Some(LowerSource::Idmapped(tree)) => {
                    let target = plan.private_dir.join("lower");
                    mkdir_p(&target, 0o700)?;
                    sys::attach_mount(tree.as_fd(), &target)
                        .map_err(|e| format!("attaching the idmapped image: {e}"))?;
                    target
                }
            };
            if let Some(map) = plan.userns {
                // The root directory's owner is the upper layer's: make it the container's root.
                let root_id = Some(map.host_first);
                std::os::unix::fs::chown(upper, root_id, root_id)
                    .map_err(|e| format!("chown {}: {e}", upper.display()))?;
            }
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            );
            mnt(
                Some("overlay"),
                root,
                Some("overlay"),
                MsFlags::empty(),
                Some(&opts),
            )?;
            let etc = inside(root, Path::new("/etc"))?;
            mkdir_p(&etc, 0o755)?;
            write_etc_file(&etc, "resolv.conf", plan.resolv_conf.as_deref())?;
            write_etc_file(&etc, "hosts", Some(&plan.hosts))?;
        }
        RootPlan::Host => {
            mnt(
                Some("tmpfs"),
                root,
                Some("tmpfs"),
                MsFlags::MS_NOSUID,
                Some("mode=755,size=16m"),
            )?;
            for d in HOST_DIRS {
                let host = Path::new("/").join(d);
                let Ok(meta) = host.symlink_metadata() else {
                    continue;
                };
                let target = root.join(d);
                if meta.file_type().is_symlink() {
                    let to = fs::read_link(&host).map_err(|e| format!("readlink {d}: {e}"))?;
                    symlink(&to, &target).map_err(|e| format!("symlink {d}: {e}"))?;
                } else if meta.is_dir() {
                    mkdir_p(&target, 0o755)?;
                    bind(&host, &target, true)?;
                }
            }
            mkdir_p(&root.join("tmp"), 0o1777)?;
            fs::set_permissions(
                root.join("tmp"),
                std::os::unix::fs::PermissionsExt::from_mode(0o1777),
            )
            .map_err(|e| format!("chmod /tmp: {e}"))?;
            // /etc is the host's, read-only: put the container's own files over it.
            let private = plan.private_dir.join("etc");
            mkdir_p(&private, 0o755)?;
            write_etc_file(&private, "resolv.conf", plan.resolv_conf.as_deref())?;
            write_etc_file(&private, "hosts", Some(&plan.hosts))?;
            for name in ["resolv.conf", "hosts"] {
                let source = private.join(name);
                let target = root.join("etc").join(name);
                // Only over a regular file: a symlink would be followed outside the root.
                let regular = target
                    .symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_file());
                if source.exists() && regular {
                    bind(&source, &target, true)?;
                }
            }
        }
    }
    for m in &plan.mounts {
        let target = inside(root, &m.target)?;
        if m.source.is_dir() {
            mkdir_p(&target, 0o755)?;
        } else if !target.exists() {
            if let Some(parent) = target.parent() {
                mkdir_p(parent, 0o755)?;
            }
            fs::File::create(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
        }
        if m.source.starts_with("/sys") {
            // sysfs files are guarded by DAC only: a rw /sys lets a capability-less root
            // change host devices and settings (e.g. uevent_helper). Always read-only.
            bind(&m.source, &target, false)?;
            let flags = MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC;
            mnt(None, &target, None, flags, None)?;
        } else {
            bind(&m.source, &target, m.read_only)?;
        }
    }
    mount_tmpfs(root, &plan.tmpfs)?;
    let proc = inside(root, Path::new("/proc"))?;
    mkdir_p(&proc, 0o555)?;
    let nsd = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(Some("proc"), &proc, Some("proc"), nsd, None)?;
    harden_proc(&proc)?;
    build_dev(&inside(root, Path::new("/dev"))?)?;
    // The host root is read-only too (below): both get a private, writable /tmp.
    if plan.read_only_root || matches!(plan.root, RootPlan::Host) {
        let tmp = inside(root, Path::new("/tmp"))?;
        mkdir_p(&tmp, 0o1777)?;
        mnt(
            Some("tmpfs"),
            &tmp,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        )?;
    }
    enter_root(root)?;
    if plan.read_only_root || matches!(plan.root, RootPlan::Host) {
        mnt(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    nix::unistd::sethostname(&plan.hostname).map_err(|e| format!("sethostname: {e}"))?;
    Ok(())
}

/// /proc entries made read-only: runc's and Docker's readonlyPaths. The kernel checks only
/// euid 0 for most sysctls, so a root container without capabilities could otherwise set
/// host-global kernel settings (core_pattern runs a program as host root).
const PROC_READ_ONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];

/// /proc entries hidden: runc's and Docker's maskedPaths (kernel memory, other users' keys,
/// timer and scheduler internals that leak host activity, hardware that is the host's).
const PROC_MASKED: [&str; 10] = [
    "acpi",
    "asound",
    "interrupts",
    "kcore",
    "keys",
    "latency_stats",
    "sched_debug",
    "scsi",
    "timer_list",
    "timer_stats",
];

/// Read-only binds over [`PROC_READ_ONLY`], /dev/null over masked files and an empty
/// read-only tmpfs over masked directories. The container has no CAP_SYS_ADMIN, so it can
/// neither unmount nor remount them.
fn harden_proc(proc: &Path) -> Result<(), String> {
    let locked = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for name in PROC_READ_ONLY {
        let path = proc.join(name);
        if path.symlink_metadata().is_err() {
            continue;
        }
        mnt(
            Some(&path.to_string_lossy()),
            &path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked;
        mnt(None, &path, None, ro, None)?;
    }
    for name in PROC_MASKED {
        let path = proc.join(name);
        match path.symlink_metadata() {
            Err(_) => continue,
            Ok(m) if m.is_dir() => mnt(
                Some("tmpfs"),
                &path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | locked,
                Some("size=0,mode=555"),
            )?,
            Ok(_) => mnt(Some("/dev/null"), &path, None, MsFlags::MS_BIND, None)?,
        }
    }
    Ok(())
}

fn write_etc_file(etc: &Path, name: &str, content: Option<&[u8]>) -> Result<(), String> {
    let Some(content) = content else {
        return Ok(());
    };
    let path = etc.join(name);
    // Remove first: the image's file may be a symlink, which must not be followed.
    if path.symlink_metadata().is_ok() {
        fs::remove_file(&path).map_err(|e| format!("remove {}: {e}", path.display()))?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| f.write_all(content))
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// The minimal /dev: name, major, minor (the host's standard numbers).
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn build_dev(dev: &Path) -> Result<(), String> {
    mkdir_p(dev, 0o755)?;
    mnt(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755,size=64k"),
    )?;
    for (name, major, minor) in DEVICES {
        let target = dev.join(name);
        // mknod is one cheap syscall; a bind mount of the host node is the fallback where
        // mknod is not allowed (e.g. inside a user namespace).
        let made = nix::sys::stat::mknod(
            &target,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        );
        match made {
            Ok(()) => {
                // mknod applies the umask.
                fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o666))
                    .map_err(|e| format!("chmod /dev/{name}: {e}"))?;
            }
            Err(_) => {
                fs::File::create(&target)
                    .map_err(|e| format!("create {}: {e}", target.display()))?;
                bind(&Path::new("/dev").join(name), &target, false)?;
            }
        }
    }
    let pts = dev.join("pts");
    mkdir_p(&pts, 0o755)?;
    mnt(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = dev.join("shm");
    mkdir_p(&shm, 0o1777)?;
    mnt(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=64m"),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(link)).map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    Ok(())
}

fn enter_root(root: &Path) -> Result<(), String> {
    nix::unistd::chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    match nix::unistd::pivot_root(".", ".") {
        Ok(()) => {
            // The old root is stacked under the new one at "/": detach it.
            umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
        }
        Err(nix::errno::Errno::EINVAL) => {
            tracing::warn!("pivot_root not possible (initramfs root?), falling back to chroot");
            mnt(Some("."), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
            nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
        }
        Err(e) => return Err(format!("pivot_root {}: {e}", root.display())),
    }
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}

fn rlimit_resource(r: RlimitResource) -> nix::sys::resource::Resource {
    use nix::sys::resource::Resource as R;
    match r {
        RlimitResource::Nofile => R::RLIMIT_NOFILE,
        RlimitResource::Nproc => R::RLIMIT_NPROC,
        RlimitResource::Core => R::RLIMIT_CORE,
        RlimitResource::Stack => R::RLIMIT_STACK,
        RlimitResource::Fsize => R::RLIMIT_FSIZE,
        RlimitResource::As => R::RLIMIT_AS,
        RlimitResource::Memlock => R::RLIMIT_MEMLOCK,
        RlimitResource::Cpu => R::RLIMIT_CPU,
    }
}

/// The program's side of the fork: returns only on failure, with the reason.
fn exec_program(plan: &HelperPlan, userns: Option<BorrowedFd<'_>>) -> String {
    match prepare_program(plan, userns) {
        Ok(()) => {}
        Err(e) => return e,
    }
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
    let argv: Result<Vec<CString>, String> = plan.argv.iter().map(|a| cstr(a)).collect();
    let env: Result<Vec<CString>, String> = plan.env.iter().map(|a| cstr(a)).collect();
    let (argv, env) = match (argv, env) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    match nix::unistd::execve(&argv[0], &argv, &env) {
        Err(e) => format!("exec {}: {e}", plan.argv[0]),
        Ok(never) => match never {},
    }
}

fn prepare_program(plan: &HelperPlan, userns: Option<BorrowedFd<'_>>) -> Result<(), String> {
    sys::default_handlers(&FORWARDED).map_err(|e| format!("signal reset: {e}"))?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    for r in &plan.rlimits {
        nix::sys::resource::setrlimit(rlimit_resource(r.resource), r.soft, r.hard)
            .map_err(|e| format!("setrlimit {:?}: {e}", r.resource))?;
    }
    nix::unistd::chdir(&plan.workdir)
        .map_err(|e| format!("workdir {}: {e}", plan.workdir.display()))?;
    if let Some(ns) = userns {
        // Before the capability drops: entering a user namespace grants a full set in it.
        setns(ns, CloneFlags::CLONE_NEWUSER).map_err(|e| format!("setns(user): {e}"))?;
    }
    let keep: caps::CapsHashSet = plan.capabilities.iter().copied().collect();
    let all = caps::runtime::thread_all_supported();
    for c in all.difference(&keep) {
        caps::drop(None, caps::CapSet::Bounding, *c)
            .map_err(|e| format!("dropping {c} from the bounding set: {e}"))?;
    }
    if !keep.is_empty() {
        nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("keepcaps: {e}"))?;
    }
    let u = &plan.user;
    let groups: Vec<Gid> = u.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    let gid = Gid::from_raw(u.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid {}: {e}", u.gid))?;
    let uid = Uid::from_raw(u.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid {}: {e}", u.uid))?;
    // Effective first: it must stay a subset of permitted at every step.
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
        caps::CapSet::Inheritable,
    ] {
        caps::set(None, set, &keep).map_err(|e| format!("setting {set:?} caps: {e}"))?;
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| format!("ambient caps: {e}"))?;
    for c in &keep {
        caps::raise(None, caps::CapSet::Ambient, *c)
            .map_err(|e| format!("raising ambient {c}: {e}"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    // Mark every inherited fd >= 3 close-on-exec (the error pipe already is).
    sys::close_fds_from(3, true).map_err(|e| format!("close_range: {e}"))?;
    // Last: from here on only the filter's syscalls work (execve among them).
    seccomp::install(&plan.seccomp)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// The fallback where idmapped mounts are not possible (root needed to chown).
    #[test]
    fn a_shifted_copy_keeps_modes_and_shifts_owners_into_the_range() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("image");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/su"), "x").unwrap();
        fs::set_permissions(src.join("bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::write(src.join("odd"), "y").unwrap();
        std::os::unix::fs::lchown(src.join("odd"), Some(70_000), Some(33)).unwrap();
        symlink("/bin/su", src.join("link")).unwrap();
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let map = IdMap {
            host_first: 500_000,
            count: 65536,
        };
        let dest = d.path().join("cache/userns-500000-x");
        shifted_copy(&src, &dest, map).unwrap();
        let meta = |p: &str| dest.join(p).symlink_metadata().unwrap();
        assert_eq!((meta("bin").uid(), meta("bin").gid()), (500_000, 500_000));
        assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755, "setuid kept");
        assert_eq!(meta("bin/su").uid(), 500_000);
        assert_eq!(
            (meta("odd").uid(), meta("odd").gid()),
            (500_000 + 65534, 500_033)
        );
        assert_eq!(
            fs::read_link(dest.join("link")).unwrap(),
            Path::new("/bin/su")
        );
        assert_eq!(meta("link").uid(), 500_000);
        assert!(!dest.join("fifo").exists(), "special files are not copied");
        // Made once: a second call reuses it, and no temporary directory is left.
        fs::write(dest.join("marker"), "").unwrap();
        shifted_copy(&src, &dest, map).unwrap();
        assert!(dest.join("marker").exists());
        let left: Vec<_> = fs::read_dir(d.path().join("cache")).unwrap().collect();
        assert_eq!(left.len(), 1);
    }
}
