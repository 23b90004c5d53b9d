//! The monitor: the helper process itself, in the host's pid namespace. It makes the
//! namespaces, forks the container's init, forwards signals to it and exits with its status.

use std::fs;
use std::os::unix::net::UnixStream;

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, sigprocmask, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::ForkResult;

use super::error::{Call, HelperError, OpError};
use super::{forwarded_and_chld, init, userns, HelperPlan};
use crate::sandbox::spec::NetnsPlan;
use crate::sandbox::sys;

/// Namespaces, the init, then signal forwarding until the init exits; returns its exit code.
pub(super) fn run(plan: &HelperPlan, ctl: &mut UnixStream) -> Result<i32, HelperError> {
    // Host paths: opened before the namespaces (the init's pivot_root moves our root too).
    let (keep_open, exit_file) = open_run_files(plan).map_err(HelperError::StartInit)?;
    enter_network_namespace(&plan.netns).map_err(HelperError::NetworkNamespace)?;
    let userns = match plan.userns {
        Some(map) => Some(userns::setup(plan, map).map_err(HelperError::UserNamespace)?),
        None => None,
    };
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(|e| HelperError::Namespaces(OpError::call(Call::Unshare, e)))?;
    let start = |call, e| HelperError::StartInit(OpError::call(call, e));
    let signals = forwarded_and_chld();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .map_err(|e| start(Call::Sigprocmask, e))?;
    let (alive_r, alive_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| start(Call::Pipe, e))?;
    #[allow(unsafe_code)] // the one unsafe call outside sys.rs: sys::fork
    // SAFETY: the monitor is a freshly exec'd helper that never starts a second thread.
    let forked = unsafe { sys::fork() }.map_err(|e| start(Call::Fork, e))?;
    let init = match forked {
        ForkResult::Child => {
            drop(alive_w);
            drop(keep_open);
            std::process::exit(init::run(plan, userns.as_ref(), ctl, alive_r, exit_file))
        }
        ForkResult::Parent { child } => child,
    };
    drop(alive_r);
    drop(userns);
    drop(exit_file);
    // Held until the monitor exits: the program's output never loses its last reader.
    let _keep_open = keep_open;
    // Held until the monitor exits: the init sees a hang-up if the monitor died early.
    let _alive_w = alive_w;
    loop {
        let sig = signals.wait().map_err(|e| start(Call::Sigwait, e))?;
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

/// The output FIFOs (read ends, never read: they only keep the pipes open) and the exit
/// file the init writes.
fn open_run_files(plan: &HelperPlan) -> Result<(Vec<fs::File>, fs::File), OpError> {
    use std::os::unix::fs::OpenOptionsExt;
    let keep_open = plan
        .keep_open
        .iter()
        .map(|path| {
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| OpError::io(Call::Open, path, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let exit_file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&plan.exit_file)
        .map_err(|e| OpError::io(Call::Open, &plan.exit_file, e))?;
    Ok((keep_open, exit_file))
}

fn enter_network_namespace(netns: &NetnsPlan) -> Result<(), OpError> {
    match netns {
        NetnsPlan::Host => Ok(()),
        NetnsPlan::New => {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| OpError::call(Call::Unshare, e))?;
            sys::loopback_up().map_err(|e| OpError::call(Call::LoopbackUp, e))
        }
        NetnsPlan::Join(path) => {
            let ns = fs::File::open(path).map_err(|e| OpError::io(Call::Open, path, e))?;
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| OpError::path(Call::Setns, path, e))
        }
    }
}
