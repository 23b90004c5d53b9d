//! Every `unsafe` block of the sandbox lives here, each a thin wrapper of one syscall.
//! All of these run only in the single-threaded worker helper process (see `init`), never in
//! poold's multithreaded runtime.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::ForkResult;

/// fork(2) in the helper.
pub(crate) fn fork() -> nix::Result<ForkResult> {
    // SAFETY: only called from the worker helper, a freshly exec'd process that never starts
    // a second thread, so the child cannot inherit a lock held by another thread.
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

/// Resets `signals` to SIG_DFL (in the program's child before exec; exec would also reset
/// handlers, this keeps the window before exec clean).
pub(crate) fn default_handlers(signals: &[Signal]) -> nix::Result<()> {
    let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for &s in signals {
        // SAFETY: installing SIG_DFL involves no Rust code running in signal context.
        unsafe { nix::sys::signal::sigaction(s, &action) }?;
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
