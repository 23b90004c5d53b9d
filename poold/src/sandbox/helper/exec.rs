//! The program's side of the init's fork: from root in the container's namespaces to the
//! program's own rlimits, user, capabilities and seccomp filter, then execve.

use std::ffi::CString;
use std::os::fd::BorrowedFd;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::unistd::{Gid, Uid};

use super::error::{Call, HelperError, OpError};
use super::HelperPlan;
use crate::sandbox::spec::{ResolvedUser, Rlimit, RlimitResource};
use crate::sandbox::{seccomp, sys};

/// Returns only on failure, with the reason.
pub(super) fn exec_program(plan: &HelperPlan, userns: Option<BorrowedFd<'_>>) -> HelperError {
    let Err(e) = prepare(plan, userns)
        .and_then(|()| exec(&plan.argv, &plan.env).map_err(HelperError::Program));
    e
}

/// Every step in the order the kernel needs: the user namespace before the capability
/// drops, the ids before the capability sets, seccomp last.
fn prepare(plan: &HelperPlan, userns: Option<BorrowedFd<'_>>) -> Result<(), HelperError> {
    let program = HelperError::Program;
    reset_signals().map_err(program)?;
    nix::unistd::setsid().map_err(|e| program(OpError::call(Call::Setsid, e)))?;
    set_rlimits(&plan.rlimits).map_err(program)?;
    nix::unistd::chdir(&plan.workdir)
        .map_err(|e| HelperError::Workdir(OpError::path(Call::Chdir, &plan.workdir, e)))?;
    if let Some(ns) = userns {
        // Before the capability drops: entering a user namespace grants a full set in it.
        setns(ns, CloneFlags::CLONE_NEWUSER).map_err(|e| program(OpError::call(Call::Setns, e)))?;
    }
    let keep: caps::CapsHashSet = plan.capabilities.iter().copied().collect();
    limit_bounding_set(&keep).map_err(program)?;
    switch_user(&plan.user).map_err(program)?;
    set_capabilities(&keep).map_err(program)?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| program(OpError::call(Call::NoNewPrivs, e)))?;
    // Mark every inherited fd >= 3 close-on-exec (the error pipe already is).
    sys::close_fds_from(3, true).map_err(|e| program(OpError::call(Call::CloseRange, e)))?;
    // Last: from here on only the filter's syscalls work (execve among them).
    seccomp::install(&plan.seccomp).map_err(|e| program(OpError::call(Call::InstallSeccomp, e)))
}

fn reset_signals() -> Result<(), OpError> {
    sys::default_signal_dispositions().map_err(|e| OpError::call(Call::Sigaction, e))?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| OpError::call(Call::Sigprocmask, e))
}

fn set_rlimits(rlimits: &[Rlimit]) -> Result<(), OpError> {
    for r in rlimits {
        nix::sys::resource::setrlimit(rlimit_resource(r.resource), r.soft, r.hard).map_err(
            |errno| OpError::Rlimit {
                resource: r.resource,
                errno,
            },
        )?;
    }
    Ok(())
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

fn capability_error(call: Call, c: caps::Capability, e: caps::errors::CapsError) -> OpError {
    OpError::Capability {
        call,
        capability: c.to_string(),
        detail: e.to_string(),
    }
}

/// Drops every capability not kept from the bounding set, so no exec can regain it.
fn limit_bounding_set(keep: &caps::CapsHashSet) -> Result<(), OpError> {
    for c in caps::runtime::thread_all_supported().difference(keep) {
        caps::drop(None, caps::CapSet::Bounding, *c)
            .map_err(|e| capability_error(Call::DropBoundingCap, *c, e))?;
    }
    if !keep.is_empty() {
        nix::sys::prctl::set_keepcaps(true).map_err(|e| OpError::call(Call::Keepcaps, e))?;
    }
    Ok(())
}

/// setgroups, setresgid, setresuid, in that order.
fn switch_user(u: &ResolvedUser) -> Result<(), OpError> {
    let ids_error = |call, ids: Vec<u32>| move |errno| OpError::Ids { call, ids, errno };
    let groups: Vec<Gid> = u.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(ids_error(Call::Setgroups, u.groups.clone()))?;
    let gid = Gid::from_raw(u.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(ids_error(Call::Setresgid, vec![u.gid]))?;
    let uid = Uid::from_raw(u.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(ids_error(Call::Setresuid, vec![u.uid]))
}

/// The kept capabilities in the effective, permitted, inheritable and ambient sets (so
/// they survive exec for a non-root user), nothing else.
fn set_capabilities(keep: &caps::CapsHashSet) -> Result<(), OpError> {
    // Effective first: it must stay a subset of permitted at every step.
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
        caps::CapSet::Inheritable,
    ] {
        caps::set(None, set, keep).map_err(|e| OpError::Capability {
            call: Call::SetCaps,
            capability: format!("{set:?}"),
            detail: e.to_string(),
        })?;
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| OpError::Capability {
        call: Call::SetCaps,
        capability: "Ambient".into(),
        detail: e.to_string(),
    })?;
    for c in keep {
        caps::raise(None, caps::CapSet::Ambient, *c)
            .map_err(|e| capability_error(Call::RaiseAmbientCap, *c, e))?;
    }
    Ok(())
}

fn exec(argv: &[String], env: &[String]) -> Result<std::convert::Infallible, OpError> {
    let cstr =
        |s: &String| CString::new(s.as_str()).map_err(|_| OpError::NulByte { arg: s.clone() });
    let argv: Vec<CString> = argv.iter().map(cstr).collect::<Result<_, _>>()?;
    let env: Vec<CString> = env.iter().map(cstr).collect::<Result<_, _>>()?;
    nix::unistd::execve(&argv[0], &argv, &env).map_err(|errno| {
        OpError::path(
            Call::Execve,
            std::path::Path::new(&*argv[0].to_string_lossy()),
            errno,
        )
    })
}
