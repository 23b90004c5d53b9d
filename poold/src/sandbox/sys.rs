//! Every `unsafe` block of the sandbox lives here, each a thin wrapper of one syscall.
//! All of these run only in the single-threaded container helper process (see `helper`), never in
//! poold's multithreaded runtime, except [`pidfd_open`] (thread-safe, poold uses it) and
//! [`limit_malloc_arenas`], which poold's `main` calls before it starts a thread.
#![allow(unsafe_code)]

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::ForkResult;

/// fork(2) in the helper.
///
/// # Safety
///
/// The calling process must have a single thread. In a multithreaded process the child
/// inherits only the calling thread: a lock another thread held (the allocator's, stdio's)
/// stays locked forever in the child, and anything but async-signal-safe calls may
/// deadlock or corrupt state there. The container helper is a freshly exec'd process that
/// never starts a second thread, and so are the processes it forks; poold's own tokio
/// process must never call this.
pub(crate) unsafe fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the caller guarantees a single-threaded process (see # Safety).
    unsafe { nix::unistd::fork() }
}

/// close_range(first, ~0, flags): closes (or, with `cloexec`, marks close-on-exec) every fd
/// from `first` up.
pub(crate) fn close_fds_from(first: u32, cloexec: bool) -> nix::Result<()> {
    let flags = if cloexec {
        libc::CLOSE_RANGE_CLOEXEC as libc::c_int
    } else {
        0
    };
    // SAFETY: close_range only touches the fd table; the helper owns all fds >= `first`
    // (none is wrapped by a live Rust object that would be used afterwards).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, flags) };
    nix::errno::Errno::result(rc).map(drop)
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs a do-nothing handler for `signals`. PID 1 of a pid namespace never gets signals
/// whose disposition is SIG_DFL; with a handler (and the signals blocked and collected with
/// sigwait) they are queued and can be forwarded.
pub(crate) fn install_noop_handlers(signals: &[Signal]) -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for &s in signals {
        // SAFETY: the handler is an empty extern "C" fn, trivially async-signal-safe.
        unsafe { nix::sys::signal::sigaction(s, &action) }?;
    }
    Ok(())
}

/// Resets every signal's disposition to SIG_DFL (in the program's child before exec). exec
/// resets handlers but keeps SIG_IGN: workers started with SIGPIPE ignored (Rust's runtime
/// ignores it in poold) and glibc's internal signals 32 and 33 too. glibc's sigaction
/// refuses 32 and 33, hence the raw syscall.
pub(crate) fn default_signal_dispositions() -> nix::Result<()> {
    // The kernel's struct sigaction on x86-64 and arm64: handler, flags, restorer, mask.
    // All zero is SIG_DFL with no flags and an empty mask.
    let dfl = [0u64; 4];
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `dfl` outlives the call and has the kernel's sigaction size; the old action
        // is not asked for (null); sigsetsize 8 is the kernel's sigset_t.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
        nix::errno::Errno::result(rc)?;
    }
    Ok(())
}

/// Sets IFF_UP on `lo` in the current network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS).
pub(crate) fn loopback_up() -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags into `req`, a valid ifreq with a NUL-terminated name.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    nix::errno::Errno::result(rc)?;
    // SAFETY: ifru_flags is the union member SIOCGIFFLAGS just filled in.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    nix::errno::Errno::result(rc).map(drop)
}

/// Moves the helper's stdin (its control socket) to a new close-on-exec fd >= 3.
pub(crate) fn take_stdin_socket() -> nix::Result<std::os::unix::net::UnixStream> {
    use std::os::fd::FromRawFd;
    let fd = nix::fcntl::fcntl(std::io::stdin(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: fcntl just returned this new fd; nothing else owns it.
    Ok(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) })
}

/// A detached copy of the mount at `path` (open_tree OPEN_TREE_CLONE) whose file ownership
/// is seen through the id mapping of the user namespace `userns` (mount_setattr
/// MOUNT_ATTR_IDMAP): files owned by host uid 0 appear owned by the namespace's root.
/// EINVAL or EOPNOTSUPP: the filesystem (or kernel) does not support idmapped mounts.
pub(crate) fn idmapped_clone(
    path: &std::path::Path,
    userns: std::os::fd::BorrowedFd<'_>,
) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::NixPath;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    let fd = path.with_nix_path(|p| {
        // SAFETY: `p` is a NUL-terminated path that outlives the call; open_tree only reads it.
        unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) }
    })?;
    let fd = nix::errno::Errno::result(fd)?;
    // SAFETY: open_tree just returned this new fd; nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` is a valid mount_attr whose size is passed along; the kernel only reads
    // it. The empty path with AT_EMPTY_PATH names `tree` itself.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    nix::errno::Errno::result(rc)?;
    Ok(tree)
}

/// Attaches the detached mount `tree` (from [`idmapped_clone`]) at `target`
/// (move_mount MOVE_MOUNT_F_EMPTY_PATH).
pub(crate) fn attach_mount(
    tree: std::os::fd::BorrowedFd<'_>,
    target: &std::path::Path,
) -> nix::Result<()> {
    use nix::NixPath;
    use std::os::fd::AsRawFd;
    let rc = target.with_nix_path(|t| {
        // SAFETY: both paths are NUL-terminated and outlive the call; move_mount only reads
        // them and `tree` is a mount fd we own.
        unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            )
        }
    })?;
    nix::errno::Errno::result(rc).map(drop)
}

/// pidfd_open(pid, 0): a descriptor for process `pid` (any process, not only a child) that
/// becomes readable when it exits and never refers to another process after a pid reuse.
pub(crate) fn pidfd_open(pid: u32) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let fd = nix::errno::Errno::result(fd)?;
    // SAFETY: pidfd_open just returned this new fd (O_CLOEXEC by default); nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Registers `pidfd` with the tokio reactor (readable once the process exited).
pub(crate) fn watch_pidfd(
    pidfd: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the OwnedFd owns a valid descriptor, which the AsyncFd owns from here on and
    // closes only when it is dropped (deregistered first); nothing else closes or replaces it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    };
    registered.map_err(std::io::Error::from)
}

/// Takes ownership of descriptor `fd` handed over by the previous poold at an upgrade and
/// marks it close-on-exec again (it was inherited without).
pub(crate) fn own_inherited_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: called once per name at start, before any thread or other owner exists; the
    // previous poold passed this descriptor to this process for exactly this use (its
    // number comes from POOLD_INHERITED_FDS or POOLD_READY_FD, parsed once).
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    owned
}

/// Makes `fds` survive the exec of `command` (clears close-on-exec in the child only, so
/// no other process poold starts meanwhile inherits them).
pub(crate) fn keep_fds_across_exec(
    command: &mut std::process::Command,
    fds: Vec<std::os::fd::RawFd>,
) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only fcntl(2),
    // which is async-signal-safe; it allocates nothing (the Vec was built before fork).
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Caps glibc's malloc arenas at `arenas` (default: 8 per CPU). poold's short-lived blocking
/// threads (spawns, teardowns) each got an arena of their own, and what they freed stayed
/// resident there: with 1,000 workers poold held 145 MiB, 83 MiB with two arenas.
/// False where the allocator refused (or is not glibc's).
pub fn limit_malloc_arenas(arenas: usize) -> bool {
    #[cfg(target_env = "gnu")]
    {
        let arenas = libc::c_int::try_from(arenas.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter (no pointers); glibc takes its
        // own lock for it, and M_ARENA_MAX only limits arenas made from now on.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = arenas;
        false
    }
}
