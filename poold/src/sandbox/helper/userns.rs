//! The container's optional user namespace, made by the monitor while it is still root in
//! the host's namespaces (writing id maps and making an idmapped mount both need that).

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;

use super::error::{errno_of, Call, OpError};
use super::HelperPlan;
use crate::sandbox::spec::{IdMap, NetnsPlan, RootPlan};
use crate::sandbox::sys;

/// What the monitor prepares for a container in a user namespace.
pub(super) struct UsernsSetup {
    /// The namespace (kept alive by this fd), with its id maps written.
    pub ns: OwnedFd,
    /// The image as the namespace must see it (none for a host root).
    pub lower: Option<LowerSource>,
}

pub(super) enum LowerSource {
    /// A detached idmapped mount of the image, attached by the init.
    Idmapped(OwnedFd),
    /// A copy of the image with shifted ownership.
    Copy(PathBuf),
}

/// Makes the container's user namespace and the view of the image it needs.
pub(super) fn setup(plan: &HelperPlan, map: IdMap) -> Result<UsernsSetup, OpError> {
    if !matches!(plan.netns, NetnsPlan::Host) {
        // The container's network namespace belongs to the host's user namespace, so
        // binding a port below 1024 would need a capability there. This namespace is the
        // container's own.
        let path = Path::new("/proc/sys/net/ipv4/ip_unprivileged_port_start");
        fs::write(path, "0").map_err(|e| OpError::io(Call::Write, path, e))?;
    }
    let ns = new_user_namespace(map)?;
    let lower = match &plan.root {
        RootPlan::Host => None,
        RootPlan::Overlay { lower, .. } => Some(match sys::idmapped_clone(lower, ns.as_fd()) {
            Ok(tree) => LowerSource::Idmapped(tree),
            // The filesystem cannot idmap (e.g. tmpfs before Linux 6.3).
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => {
                shifted_copy(lower, &plan.userns_copy, map)?;
                LowerSource::Copy(plan.userns_copy.clone())
            }
            Err(e) => return Err(OpError::path(Call::IdmappedMount, lower, e)),
        }),
    };
    Ok(UsernsSetup { ns, lower })
}

/// A new user namespace with `map` for users and groups, held by a short-lived child that
/// unshares it (the monitor must stay in the host's namespace to write the maps).
fn new_user_namespace(map: IdMap) -> Result<OwnedFd, OpError> {
    use nix::fcntl::OFlag;
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| OpError::call(Call::Pipe, e));
    let (ready_r, ready_w) = pipe()?;
    let (hold_r, hold_w) = pipe()?;
    #[allow(unsafe_code)] // the one unsafe call outside sys.rs: sys::fork
    // SAFETY: the monitor is a freshly exec'd helper that never starts a second thread.
    let forked = unsafe { sys::fork() }.map_err(|e| OpError::call(Call::Fork, e))?;
    let holder = match forked {
        ForkResult::Child => {
            drop((ready_r, hold_w));
            let made = unshare(CloneFlags::CLONE_NEWUSER);
            let errno = made.err().map_or(0, |e| e as i32);
            let _ = nix::unistd::write(&ready_w, &errno.to_ne_bytes());
            // Until the monitor has opened the namespace (it closes its end).
            let _ = nix::unistd::read(&hold_r, &mut [0u8; 1]);
            std::process::exit(0)
        }
        ForkResult::Parent { child } => child,
    };
    drop((ready_w, hold_r));
    let opened = (|| {
        let mut bytes = [0u8; 4];
        let n =
            nix::unistd::read(&ready_r, &mut bytes).map_err(|e| OpError::call(Call::Read, e))?;
        let errno = if n == 4 {
            i32::from_ne_bytes(bytes)
        } else {
            Errno::EIO as i32
        };
        if errno != 0 {
            return Err(OpError::call(Call::Unshare, Errno::from_raw(errno)));
        }
        let line = format!("0 {} {}\n", map.host_first, map.count);
        for file in ["uid_map", "gid_map"] {
            let path = PathBuf::from(format!("/proc/{holder}/{file}"));
            fs::write(&path, &line).map_err(|e| OpError::io(Call::Write, &path, e))?;
        }
        let path = PathBuf::from(format!("/proc/{holder}/ns/user"));
        fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| OpError::io(Call::Open, &path, e))
    })();
    drop(hold_w);
    let _ = waitpid(holder, None);
    opened
}

/// Copies the image at `src` to `dest` with every owner shifted into `map` (ids outside it
/// become the namespace's nobody), once: later containers of the same image and range reuse
/// it. Device nodes, FIFOs and sockets are not copied (a container gets its own /dev).
fn shifted_copy(src: &Path, dest: &Path, map: IdMap) -> Result<(), OpError> {
    if dest.is_dir() {
        return Ok(());
    }
    let parent = dest.parent().unwrap_or(Path::new("/"));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(|e| OpError::io(Call::Mkdir, parent, e))?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(
        "{}{name}-{}",
        crate::sandbox::rootfs::TMP_PREFIX,
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    copy_shifted(src, &tmp, map).map_err(|(path, e)| {
        let _ = fs::remove_dir_all(&tmp);
        OpError::path(Call::Copy, &path, e)
    })?;
    match fs::rename(&tmp, dest) {
        Ok(()) => Ok(()),
        // Another container finished the same copy first.
        Err(_) if dest.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(OpError::io(Call::Rename, dest, e)),
    }
}

/// The copy of [`shifted_copy`]; on failure, the source path it failed on.
fn copy_shifted(src: &Path, dst: &Path, map: IdMap) -> Result<(), (PathBuf, Errno)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let at = |e: std::io::Error| (src.to_path_buf(), errno_of(&e));
    let meta = src.symlink_metadata().map_err(at)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        fs::create_dir(dst).map_err(at)?;
        for entry in fs::read_dir(src).map_err(at)? {
            let entry = entry.map_err(at)?;
            copy_shifted(&entry.path(), &dst.join(entry.file_name()), map)?;
        }
    } else if kind.is_file() {
        fs::copy(src, dst).map_err(at)?;
    } else if kind.is_symlink() {
        symlink(fs::read_link(src).map_err(at)?, dst).map_err(at)?;
    } else {
        return Ok(());
    }
    let nobody = 65534.min(map.count - 1);
    let shift = |id: u32| map.host_first + if id < map.count { id } else { nobody };
    std::os::unix::fs::lchown(dst, Some(shift(meta.uid())), Some(shift(meta.gid()))).map_err(at)?;
    if !kind.is_symlink() {
        // After chown, which clears setuid and setgid bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(at)?;
    }
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
