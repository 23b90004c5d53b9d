//! A tmpfs mounted for one unit test, unmounted on drop (also when the test fails). Needs root.

use std::path::{Path, PathBuf};

/// The mount; dropping it unmounts (lazily, so a busy mount goes too).
pub(crate) struct TmpfsMount(PathBuf);

/// Mounts a tmpfs of `size` (e.g. "1M") on the existing directory `dir`.
pub(crate) fn mount_tmpfs(dir: &Path, size: &str) -> TmpfsMount {
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("size={size}").as_str()),
    )
    .expect("mount tmpfs (run as root)");
    TmpfsMount(dir.to_path_buf())
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}
