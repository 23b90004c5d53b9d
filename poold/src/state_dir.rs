//! The state directory: private to root whatever the umask, and held by one poold at a time.
//!
//! Unpacked images (with whatever setuid binaries they carry), worker directories and
//! network namespaces live below it, so the directory and every directory poold makes in it
//! are 0700, set explicitly (existing ones are corrected at start): no other user can reach
//! anything inside. A second poold with the same state directory would take the first one's
//! workers for orphans and kill them, so the directory is locked (flock on `poold.lock`)
//! before anything else happens, and the lock file names the holder's pid.

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::Gid;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tracing::info;

/// The directories poold makes in the state directory (the image cache, per-worker
/// directories, network namespace files, the shared overlay mount point).
pub const SUBDIRS: [&str; 4] = ["images", "workers", "netns", "scratch"];
pub const LOCK_FILE: &str = "poold.lock";
const PRIVATE_DIR: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("state directory {}: {operation}: {source}", path.display())]
    Io {
        path: PathBuf,
        operation: &'static str,
        source: std::io::Error,
    },
    #[error(
        "state directory {}: owned by uid {owner}, not by poold's uid {uid}; another user \
         could change what poold runs",
        path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "state directory {} is in use by another poold ({holder}; lock {}): refusing to start, \
         its workers would be taken for orphans",
        path.display(),
        lock.display()
    )]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        holder: String,
    },
}

/// The locked state directory; the lock lasts until [`StateDir::release`] or drop.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// `None` only while dropping.
    lock: Option<Flock<File>>,
    /// Handed over by a previous poold: the lock description is shared with it, so a drop
    /// must not unlock it (a new poold failing at an upgrade would unlock the old one's).
    inherited: bool,
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.inherited {
            // Closed (and the lock let go) only when every holder has exited.
            std::mem::forget(self.lock.take());
        }
    }
}

impl StateDir {
    /// Creates the state directory (and missing parents) or corrects its mode, makes its
    /// subdirectories private, and locks it. Fails if another process holds the lock.
    /// `socket_group`: the control socket lives in the state directory and this
    /// group may use it, so the directory is 0710 and owned by the group (members can reach
    /// the socket, list nothing, and every subdirectory stays 0700).
    pub fn open(path: &Path, socket_group: Option<Gid>) -> Result<Self, StateDirError> {
        Self::open_inherited(path, socket_group, None)
    }

    /// As [`StateDir::open`]; `inherited`: the locked lock file a previous poold handed
    /// over at an upgrade. Locking it again succeeds (the same open file description holds
    /// the lock), so the directory is never unlocked between the two processes.
    pub fn open_inherited(
        path: &Path,
        socket_group: Option<Gid>,
        inherited: Option<File>,
    ) -> Result<Self, StateDirError> {
        let io = |operation, source| StateDirError::Io {
            path: path.to_owned(),
            operation,
            source,
        };
        create_private(path).map_err(|e| io("create", e))?;
        let meta = std::fs::metadata(path).map_err(|e| io("stat", e))?;
        let uid = nix::unistd::geteuid().as_raw();
        if meta.uid() != uid {
            return Err(StateDirError::NotOwned {
                path: path.to_owned(),
                owner: meta.uid(),
                uid,
            });
        }
        if let Some(group) = socket_group {
            nix::unistd::chown(path, None, Some(group)).map_err(|e| io("chgrp", e.into()))?;
        }
        let mode = if socket_group.is_some() {
            0o710
        } else {
            PRIVATE_DIR
        };
        std::fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|e| io("chmod", e))?;
        let lock_path = path.join(LOCK_FILE);
        let was_inherited = inherited.is_some();
        let file = match inherited {
            Some(file) => file,
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&lock_path)
                .map_err(|e| io("open the lock file", e))?,
        };
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "pid unknown".to_owned(),
                };
                return Err(StateDirError::Locked {
                    path: path.to_owned(),
                    lock: lock_path,
                    holder,
                });
            }
            Err((_, errno)) => return Err(io("flock", errno.into())),
        };
        let pid = std::process::id();
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| writeln!(lock, "{pid}"))
            .map_err(|e| io("write the lock file", e))?;
        // Only now, holding the lock: correct what an earlier run (or a umask) left.
        for sub in SUBDIRS {
            let dir = path.join(sub);
            create_private(&dir).map_err(|e| io("create", e))?;
            std::fs::set_permissions(&dir, Permissions::from_mode(PRIVATE_DIR))
                .map_err(|e| io("chmod 0700", e))?;
        }
        info!(state_dir = %path.display(), pid, "state directory locked");
        Ok(Self {
            path: path.to_owned(),
            lock: Some(lock),
            inherited: was_inherited,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The locked descriptor, handed to a new poold at an upgrade.
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        let lock = self.lock.as_ref().expect("locked until dropped");
        std::os::fd::AsRawFd::as_raw_fd(&**lock)
    }

    /// At shutdown, after every worker is gone: removes the lock file, the empty
    /// subdirectories and the state directory itself if nothing else is in it (the image
    /// cache stays), then releases the lock.
    pub fn release(self) {
        let _ = std::fs::remove_file(self.path.join(LOCK_FILE));
        for sub in SUBDIRS {
            // rmdir refuses a directory that is not empty or a mount point: that stays.
            let _ = std::fs::remove_dir(self.path.join(sub));
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Replaces `dir/name` with `bytes` so that a crash at any moment leaves either the old
/// or the new file, never a mix: a temporary file in `dir`, fsync, rename over the old one,
/// fsync of the directory (which makes the rename itself durable). The file is 0600.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(dir, name, |file| file.write_all(bytes))
}

/// [`write_atomic`] with the content written by `write` into a buffered writer, so a large
/// file (the state record of 1,000 workers) is never built in memory first.
pub fn write_atomic_with(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut out = std::io::BufWriter::new(file);
    write(&mut out)?;
    let file = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, each 0700 (DirBuilder's mode passes through the
/// umask, which can only take bits away).
fn create_private(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
}

#[cfg(test)]
mod tests;
