//! The container's init: PID 1 of its pid namespace. It builds the root, starts the program,
//! reports Ready, then forwards signals to the program and reaps zombies until the program
//! ends, whose status it reports and exits with.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::error::{Call, HelperError, OpError};
use super::userns::UsernsSetup;
use super::{
    exec, forwarded_and_chld, report_failure, root, send, ContainerExit, HelperMsg, HelperPlan,
    FORWARDED,
};
use crate::sandbox::sys;

/// The init's life; returns its exit code (the program's, as a shell reports it).
pub(super) fn run(
    plan: &HelperPlan,
    userns: Option<&UsernsSetup>,
    ctl: &mut UnixStream,
    monitor_alive: OwnedFd,
    mut exit_file: fs::File,
) -> i32 {
    let started = tie_to_monitor(&monitor_alive).and_then(|alive| {
        if !alive {
            return Ok(None);
        }
        let root_switch = root::build(plan, userns)?;
        sys::install_noop_handlers(&FORWARDED)
            .map_err(|e| HelperError::Init(OpError::call(Call::Sigaction, e)))?;
        start_program(plan, userns).map(|program| Some((program, root_switch)))
    });
    let (program, root_switch) = match started {
        Ok(Some(started)) => started,
        // The monitor is gone: so is poold's interest in this container.
        Ok(None) => return 137,
        Err(e) => return report_failure(ctl, e),
    };
    send(ctl, &HelperMsg::Ready { root_switch });
    // The init keeps only CAP_KILL (to signal a program running as another user).
    drop_init_privileges();
    let status = reap_until_exit(program);
    // First the file: the poold that reads it may not be the one listening on `ctl`.
    if let Ok(json) = serde_json::to_vec(&status) {
        let _ = exit_file.write_all(&json);
    }
    send(ctl, &HelperMsg::Exited(status));
    status.as_code()
}

/// If the monitor dies (even by SIGKILL), the init gets SIGKILL and the kernel kills the
/// whole pid namespace with it. The monitor holds the write end of `monitor_alive`: a
/// hang-up there means it died before the parent-death signal was armed (false).
fn tie_to_monitor(monitor_alive: &OwnedFd) -> Result<bool, HelperError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| HelperError::Init(OpError::call(Call::Pdeathsig, e)))?;
    let mut fds = [PollFd::new(monitor_alive.as_fd(), PollFlags::POLLIN)];
    Ok(poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) == 0)
}

/// Forks the program and waits until it has exec'd (its error pipe closes empty) or failed
/// (it writes its [`HelperError`] there).
fn start_program(plan: &HelperPlan, userns: Option<&UsernsSetup>) -> Result<Pid, HelperError> {
    let fail = |call, e| HelperError::Init(OpError::call(call, e));
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| fail(Call::Pipe, e))?;
    #[allow(unsafe_code)] // the one unsafe call outside sys.rs: sys::fork
    // SAFETY: the init is a fork of the single-threaded monitor and starts no thread.
    let forked = unsafe { sys::fork() }.map_err(|e| fail(Call::Fork, e))?;
    let program = match forked {
        ForkResult::Child => {
            drop(err_r);
            let error = exec::exec_program(plan, userns.map(|u| u.ns.as_fd()));
            if let Ok(json) = serde_json::to_vec(&error) {
                let _ = fs::File::from(err_w).write_all(&json);
            }
            std::process::exit(127);
        }
        ForkResult::Parent { child } => child,
    };
    drop(err_w);
    let mut exec_error = Vec::new();
    let _ = fs::File::from(err_r).read_to_end(&mut exec_error);
    if exec_error.is_empty() {
        return Ok(program);
    }
    let _ = waitpid(program, None);
    Err(
        serde_json::from_slice(&exec_error).unwrap_or(HelperError::Program(OpError::call(
            Call::Execve,
            nix::errno::Errno::EIO,
        ))),
    )
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
