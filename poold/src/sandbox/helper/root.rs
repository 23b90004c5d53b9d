//! The container's root, built by the init in its fresh mount namespace, one function per
//! step (each failing with its own [`HelperError`] variant), then entered with pivot_root.

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::error::{Call, HelperError, OpError, RootFacts};
use super::userns::{LowerSource, UsernsSetup};
use super::{HelperPlan, RootSwitch};
use crate::sandbox::spec::{BindMount, RootPlan, Tmpfs};
use crate::sandbox::sys;

/// Builds the root at `plan.merged` and enters it; returns how it was entered.
pub(super) fn build(
    plan: &HelperPlan,
    userns: Option<&UsernsSetup>,
) -> Result<RootSwitch, HelperError> {
    let root = &plan.merged;
    make_mounts_private().map_err(HelperError::PrivateMounts)?;
    if let Some((base, mib)) = &plan.scratch_tmpfs {
        mount_scratch_tmpfs(base, *mib).map_err(HelperError::ScratchTmpfs)?;
    }
    match &plan.root {
        RootPlan::Overlay { lower, upper, work } => {
            let lower = lower_layer(plan, lower, userns).map_err(HelperError::OverlayRoot)?;
            mount_overlay(plan, &lower, upper, work).map_err(HelperError::OverlayRoot)?;
            write_etc_files(plan, root).map_err(HelperError::EtcFiles)?;
        }
        RootPlan::Host => {
            mount_host_root(root).map_err(HelperError::HostRoot)?;
            bind_private_etc_files(plan, root).map_err(HelperError::EtcFiles)?;
        }
    }
    bind_mounts(root, &plan.mounts).map_err(HelperError::BindMounts)?;
    mount_tmpfs(root, &plan.tmpfs).map_err(HelperError::TmpfsMounts)?;
    mount_proc(root).map_err(HelperError::Proc)?;
    mount_devices(&inside(root, Path::new("/dev")).map_err(HelperError::Devices)?)
        .map_err(HelperError::Devices)?;
    // The host root is read-only too (below): both get a private, writable /tmp.
    let read_only = plan.read_only_root || matches!(plan.root, RootPlan::Host);
    if read_only {
        mount_private_tmp(root).map_err(HelperError::PrivateTmp)?;
    }
    let switch = switch_root(root)?;
    if read_only {
        remount_root_read_only().map_err(HelperError::ReadOnlyRoot)?;
    }
    nix::unistd::sethostname(&plan.hostname)
        .map_err(|e| HelperError::Hostname(OpError::call(Call::Sethostname, e)))?;
    Ok(switch)
}

/// Nothing mounted from here on propagates to the host (and nothing back).
fn make_mounts_private() -> Result<(), OpError> {
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
}

/// The writable layer on a tmpfs only this mount namespace sees.
fn mount_scratch_tmpfs(base: &Path, mib: u64) -> Result<(), OpError> {
    let opts = format!("size={mib}m,mode=700");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mnt(Some("tmpfs"), base, Some("tmpfs"), flags, Some(&opts))?;
    for d in ["upper", "work", "merged"] {
        mkdir_p(&base.join(d), 0o755)?;
    }
    Ok(())
}

/// The image as the container sees it: as is, the idmapped mount attached, or the copy
/// with shifted owners.
fn lower_layer(
    plan: &HelperPlan,
    lower: &Path,
    userns: Option<&UsernsSetup>,
) -> Result<PathBuf, OpError> {
    Ok(match userns.and_then(|u| u.lower.as_ref()) {
        None => lower.to_path_buf(),
        Some(LowerSource::Copy(copy)) => copy.clone(),
        Some(LowerSource::Idmapped(tree)) => {
            let target = plan.private_dir.join("lower");
            mkdir_p(&target, 0o700)?;
            sys::attach_mount(tree.as_fd(), &target)
                .map_err(|e| OpError::path(Call::AttachIdmappedMount, &target, e))?;
            target
        }
    })
}

fn mount_overlay(
    plan: &HelperPlan,
    lower: &Path,
    upper: &Path,
    work: &Path,
) -> Result<(), OpError> {
    if let Some(map) = plan.userns {
        // The root directory's owner is the upper layer's: make it the container's root.
        let root_id = Some(map.host_first);
        std::os::unix::fs::chown(upper, root_id, root_id)
            .map_err(|e| OpError::io(Call::Chown, upper, e))?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mnt(
        Some("overlay"),
        &plan.merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(&opts),
    )
}

/// The container's own /etc/hosts and /etc/resolv.conf in its writable layer.
fn write_etc_files(plan: &HelperPlan, root: &Path) -> Result<(), OpError> {
    let etc = inside(root, Path::new("/etc"))?;
    mkdir_p(&etc, 0o755)?;
    write_etc_file(&etc, "resolv.conf", plan.resolv_conf.as_deref())?;
    write_etc_file(&etc, "hosts", Some(&plan.hosts))
}

const HOST_DIRS: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "etc"];

/// A tmpfs root with the host's system directories bound read-only.
fn mount_host_root(root: &Path) -> Result<(), OpError> {
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
            let to = fs::read_link(&host).map_err(|e| OpError::io(Call::Readlink, &host, e))?;
            symlink(&to, &target).map_err(|e| OpError::io(Call::Symlink, &target, e))?;
        } else if meta.is_dir() {
            mkdir_p(&target, 0o755)?;
            bind(&host, &target, true)?;
        }
    }
    let tmp = root.join("tmp");
    mkdir_p(&tmp, 0o1777)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))
        .map_err(|e| OpError::io(Call::Chmod, &tmp, e))
}

/// /etc is the host's, read-only: the container's own files are bound over it.
fn bind_private_etc_files(plan: &HelperPlan, root: &Path) -> Result<(), OpError> {
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
    Ok(())
}

fn write_etc_file(etc: &Path, name: &str, content: Option<&[u8]>) -> Result<(), OpError> {
    let Some(content) = content else {
        return Ok(());
    };
    let path = etc.join(name);
    // Remove first: the image's file may be a symlink, which must not be followed.
    if path.symlink_metadata().is_ok() {
        fs::remove_file(&path).map_err(|e| OpError::io(Call::Remove, &path, e))?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| f.write_all(content))
        .map_err(|e| OpError::io(Call::Write, &path, e))
}

fn bind_mounts(root: &Path, mounts: &[BindMount]) -> Result<(), OpError> {
    for m in mounts {
        let target = inside(root, &m.target)?;
        if m.source.is_dir() {
            mkdir_p(&target, 0o755)?;
        } else if !target.exists() {
            if let Some(parent) = target.parent() {
                mkdir_p(parent, 0o755)?;
            }
            fs::File::create(&target).map_err(|e| OpError::io(Call::Create, &target, e))?;
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
    Ok(())
}

/// Empty tmpfs mounts, each with the mode and owner of the image's directory it covers.
fn mount_tmpfs(root: &Path, mounts: &[Tmpfs]) -> Result<(), OpError> {
    for t in mounts {
        let target = inside(root, &t.target)?;
        mkdir_p(&target, 0o755)?;
        let meta = fs::metadata(&target).map_err(|e| OpError::io(Call::Stat, &target, e))?;
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

fn mount_proc(root: &Path) -> Result<(), OpError> {
    let proc = inside(root, Path::new("/proc"))?;
    mkdir_p(&proc, 0o555)?;
    let nsd = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(Some("proc"), &proc, Some("proc"), nsd, None)?;
    harden_proc(&proc)
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
fn harden_proc(proc: &Path) -> Result<(), OpError> {
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

/// The minimal /dev: name, major, minor (the host's standard numbers).
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn mount_devices(dev: &Path) -> Result<(), OpError> {
    mkdir_p(dev, 0o755)?;
    mnt(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755,size=64k"),
    )?;
    for (name, major, minor) in DEVICES {
        make_device(dev, name, major, minor)?;
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
        let path = dev.join(link);
        symlink(to, &path).map_err(|e| OpError::io(Call::Symlink, &path, e))?;
    }
    Ok(())
}

/// mknod is one cheap syscall; a bind mount of the host node is the fallback where mknod
/// is not allowed (e.g. inside a user namespace).
fn make_device(dev: &Path, name: &str, major: u64, minor: u64) -> Result<(), OpError> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let target = dev.join(name);
    let mode = Mode::from_bits_truncate(0o666);
    match mknod(&target, SFlag::S_IFCHR, mode, makedev(major, minor)) {
        // mknod applies the umask.
        Ok(()) => fs::set_permissions(&target, fs::Permissions::from_mode(0o666))
            .map_err(|e| OpError::io(Call::Chmod, &target, e)),
        Err(_) => {
            fs::File::create(&target).map_err(|e| OpError::io(Call::Create, &target, e))?;
            bind(&Path::new("/dev").join(name), &target, false)
        }
    }
}

fn mount_private_tmp(root: &Path) -> Result<(), OpError> {
    let tmp = inside(root, Path::new("/tmp"))?;
    mkdir_p(&tmp, 0o1777)?;
    mnt(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
}

/// pivot_root into `root` and detach the host's tree. Where pivot_root cannot work (EINVAL:
/// the host's root is the initramfs, which has no parent mount), MS_MOVE + chroot as runc's
/// no-pivot mode does, but only there: anywhere else a failing pivot_root is an error.
fn switch_root(root: &Path) -> Result<RootSwitch, HelperError> {
    let fail = HelperError::SwitchRoot;
    nix::unistd::chdir(root).map_err(|e| fail(OpError::path(Call::Chdir, root, e)))?;
    let switch = match nix::unistd::pivot_root(".", ".") {
        Ok(()) => {
            // The old root is stacked under the new one at "/": detach it.
            umount2(".", MntFlags::MNT_DETACH)
                .map_err(|e| fail(OpError::call(Call::DetachOldRoot, e)))?;
            RootSwitch::PivotRoot
        }
        Err(Errno::EINVAL) => {
            let facts = root_facts().map_err(fail)?;
            if !chroot_allowed(facts) {
                return Err(HelperError::ChrootRefused {
                    pivot_root: Errno::EINVAL,
                    root: facts,
                });
            }
            mnt(Some("."), Path::new("/"), None, MsFlags::MS_MOVE, None).map_err(fail)?;
            nix::unistd::chroot(".").map_err(|e| fail(OpError::call(Call::Chroot, e)))?;
            RootSwitch::Chroot
        }
        Err(e) => return Err(fail(OpError::path(Call::PivotRoot, root, e))),
    };
    nix::unistd::chdir("/").map_err(|e| fail(OpError::path(Call::Chdir, Path::new("/"), e)))?;
    Ok(switch)
}

/// The chroot fallback is for the initramfs only: a ramfs or tmpfs that is the first mount
/// of its namespace. Any other root where pivot_root fails is something else (a bug, an odd
/// host) and gets no weaker root silently.
pub(super) fn chroot_allowed(root: RootFacts) -> bool {
    let ram = root.fs_magic == RAMFS_MAGIC || root.fs_magic == TMPFS_MAGIC;
    ram && root.initial_mount
}

/// statfs f_type of ramfs and tmpfs (linux/magic.h): the initramfs is one of them.
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The facts about the current `/` that [`chroot_allowed`] decides on.
fn root_facts() -> Result<RootFacts, OpError> {
    let stat = nix::sys::statfs::statfs("/")
        .map_err(|e| OpError::path(Call::Statfs, Path::new("/"), e))?;
    let path = Path::new("/proc/self/mountinfo");
    let mountinfo = fs::read_to_string(path).map_err(|e| OpError::io(Call::Read, path, e))?;
    Ok(RootFacts {
        fs_magic: stat.filesystem_type().0 as i64,
        initial_mount: root_is_initial_mount(&mountinfo),
    })
}

/// Whether the topmost mount on `/` in `mountinfo` (proc_pid_mountinfo(5)) is its own parent:
/// only a mount namespace's first mount is, and the initramfs is the first of all.
fn root_is_initial_mount(mountinfo: &str) -> bool {
    mountinfo
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (id, parent) = (f.next()?, f.next()?);
            let mount_point = f.nth(2)?;
            (mount_point == "/").then_some(id == parent)
        })
        .next_back()
        .unwrap_or(false)
}

fn remount_root_read_only() -> Result<(), OpError> {
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None,
    )
}

fn mnt(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), OpError> {
    mount(src, target, fstype, flags, data).map_err(|errno| OpError::Mount {
        from: src.map(str::to_owned),
        target: target.to_path_buf(),
        flags: flags.bits(),
        errno,
    })
}

fn bind(src: &Path, target: &Path, read_only: bool) -> Result<(), OpError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(src), target, None::<&str>, flags, None::<&str>).map_err(|errno| {
        OpError::Mount {
            from: Some(src.display().to_string()),
            target: target.to_path_buf(),
            flags: flags.bits(),
            errno,
        }
    })?;
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
fn inside(root: &Path, inner: &Path) -> Result<PathBuf, OpError> {
    let mut p = root.to_path_buf();
    for c in inner.components().skip(1) {
        p.push(c);
        if p.symlink_metadata()
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
        {
            return Err(OpError::SymlinkInRoot {
                path: inner.to_path_buf(),
            });
        }
    }
    Ok(p)
}

fn mkdir_p(p: &Path, mode: u32) -> Result<(), OpError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .map_err(|e| OpError::io(Call::Mkdir, p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAMFS: i64 = RAMFS_MAGIC;
    const TMPFS: i64 = TMPFS_MAGIC;
    const EXT4: i64 = 0xef53;
    const OVERLAYFS: i64 = 0x794c_7630;

    fn facts(fs_magic: i64, initial_mount: bool) -> RootFacts {
        RootFacts {
            fs_magic,
            initial_mount,
        }
    }

    #[test]
    fn chroot_is_allowed_only_on_the_initramfs() {
        assert!(chroot_allowed(facts(RAMFS, true)), "initramfs (ramfs)");
        assert!(
            chroot_allowed(facts(TMPFS, true)),
            "initramfs (tmpfs rootfs)"
        );
        // A disk or overlay root: pivot_root must work there; a failure is refused.
        assert!(!chroot_allowed(facts(EXT4, true)));
        assert!(!chroot_allowed(facts(OVERLAYFS, false)));
        // A tmpfs mounted over the real root (e.g. a container's /) is not the initramfs.
        assert!(!chroot_allowed(facts(TMPFS, false)));
        assert!(!chroot_allowed(facts(RAMFS, false)));
    }

    #[test]
    fn the_initial_mount_is_its_own_parent_in_mountinfo() {
        let initramfs = "1 1 0:2 / / rw - rootfs rootfs rw\n\
                         20 1 0:19 / /proc rw,nosuid - proc proc rw\n";
        assert!(root_is_initial_mount(initramfs));
        let disk = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    23 22 0:21 / /proc rw - proc proc rw\n";
        assert!(!root_is_initial_mount(disk));
        // The topmost mount on / counts (here a disk over the initramfs).
        let switched = "1 1 0:2 / / rw - rootfs rootfs rw\n\
                        30 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        assert!(!root_is_initial_mount(switched));
        assert!(!root_is_initial_mount(""));
    }

    #[test]
    fn the_refusal_names_what_was_found() {
        let error = HelperError::ChrootRefused {
            pivot_root: Errno::EINVAL,
            root: facts(EXT4, false),
        };
        assert_eq!(
            error.to_string(),
            "pivot_root failed (EINVAL: Invalid argument) and the chroot fallback is refused: \
             / is not the initramfs (filesystem magic 0xef53, initial mount: false)"
        );
    }
}
