//! The container helper: poold re-executes itself (`/proc/self/exe __poold-worker-init`) to
//! get a fresh single-threaded process that may allocate freely between fork and exec.
//! Three processes, one file each:
//!
//! - [`monitor`] (the helper itself, in the host's pid namespace): reads its [`HelperPlan`]
//!   as one JSON line from its control socket (fd 0), joins or creates the network
//!   namespace, makes the optional user namespace ([`userns`]), unshares the mount, pid,
//!   uts, ipc and cgroup namespaces, forks the init and forwards signals to it.
//! - [`init`] (PID 1 of the container): builds the root ([`root`], one function per step),
//!   forks the program, reports [`HelperMsg::Ready`] (with the [`RootSwitch`] used), forwards
//!   SIGTERM/INT/HUP/USR1/USR2 to the program, reaps zombies and reports its exit.
//! - [`exec`] (the program, pid 2): rlimits, groups/gid/uid, capabilities, no_new_privs and
//!   seccomp, then execve.
//!
//! The parent attaches the helper to the container's cgroup before it sends the plan, so
//! every process of the container is accounted from the start. The helper writes no log:
//! failures go to poold as a typed [`HelperError`] on the control socket.

mod error;
mod exec;
mod init;
mod monitor;
mod root;
mod userns;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};

pub use error::{Call, HelperError, OpError, RootFacts};

use super::spec::HelperPlan;
use super::sys;

/// The hidden argv[1] that turns the poold binary into the container helper.
pub const HELPER_ARG: &str = "__poold-worker-init";

/// Signals the monitor and the init forward to the program (SIGQUIT and SIGWINCH are the
/// graceful stops of nginx and Apache httpd).
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
];

/// How a container's program ended.
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

/// How the init entered the container's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootSwitch {
    /// pivot_root(2) in the container's mount namespace, the host's tree detached: the
    /// normal case.
    PivotRoot,
    /// MS_MOVE + chroot(2), as runc's no-pivot mode: weaker (escapable with
    /// CAP_SYS_CHROOT, which is dropped unless kept). Only where pivot_root cannot work,
    /// when the host's root is the initramfs; refused anywhere else.
    Chroot,
}

/// Messages from the helper to poold, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HelperMsg {
    /// Root built and the program exec'd.
    Ready { root_switch: RootSwitch },
    /// Setup failed before the program ran.
    Failed(HelperError),
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
            // No channel to poold: stderr is the only way left.
            eprintln!("poold container helper: no control socket on fd 0: {e}");
            return 125;
        }
    };
    // Keep no reference into the host tree: pivot_root then moves our root and cwd too.
    let _ = nix::unistd::chdir("/");
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    match read_plan(&ctl).and_then(|plan| monitor::run(&plan, &mut ctl)) {
        Ok(code) => code,
        Err(e) => report_failure(&mut ctl, e),
    }
}

fn read_plan(ctl: &UnixStream) -> Result<HelperPlan, HelperError> {
    // Every fd above the socket is inherited and unused.
    sys::close_fds_from(ctl.as_raw_fd() as u32 + 1, false)
        .map_err(|e| HelperError::Control(OpError::call(Call::CloseRange, e)))?;
    let mut line = String::new();
    BufReader::new(ctl)
        .read_line(&mut line)
        .map_err(|e| HelperError::Control(OpError::call(Call::Read, error::errno_of(&e))))?;
    serde_json::from_str(&line).map_err(|e| HelperError::Plan {
        detail: e.to_string(),
    })
}

/// Sends the failure to poold; the exit code of a helper that never ran the program.
fn report_failure(ctl: &mut UnixStream, error: HelperError) -> i32 {
    send(ctl, &HelperMsg::Failed(error));
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
