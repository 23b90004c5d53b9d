//! The VM's initramfs: an uncompressed cpio "newc" archive written here (uncompressed because
//! decompressing under TCG is slow and the kernel unpacks plain cpio directly).
//!
//! Host files keep their absolute paths (tests use baked-in paths such as
//! `env!("CARGO_BIN_EXE_poold")`); symlinked directories on the host (/lib -> usr/lib) are
//! mirrored as symlinks so that every path `ldd` prints resolves in the VM as on the host.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{normalize, output};

#[derive(Debug, Clone)]
enum Entry {
    Dir { mode: u32 },
    File { source: PathBuf, mode: u32 },
    Bytes { data: Vec<u8>, mode: u32 },
    Symlink { target: PathBuf },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// An initramfs under construction: image path -> entry. The BTreeMap keeps every parent
/// directory ahead of its children, as the kernel's unpacker needs.
#[derive(Debug, Default)]
pub struct Image {
    entries: BTreeMap<PathBuf, Entry>,
}

const MAX_SYMLINK_DEPTH: u32 = 40;

fn resolve_link(dir: &Path, target: &Path) -> PathBuf {
    normalize(&dir.join(target))
}

impl Image {
    pub fn new() -> Self {
        Self::default()
    }

    /// A real directory (even where the host has a symlink, as /bin -> usr/bin).
    pub fn dir(&mut self, path: &str) -> Result<()> {
        let path = Path::new(path);
        match self.entries.get(path) {
            Some(Entry::Dir { .. }) => Ok(()),
            Some(_) => bail!(
                "{} is already in the image as a non-directory",
                path.display()
            ),
            None => self.insert(path, Entry::Dir { mode: 0o755 }),
        }
    }

    pub fn bytes(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Result<()> {
        let data = data.into();
        self.insert(Path::new(path), Entry::Bytes { data, mode })
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let target = target.into();
        self.insert(Path::new(path), Entry::Symlink { target })
    }

    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.insert(Path::new(path), Entry::CharDev { mode, major, minor })
    }

    #[cfg(test)]
    pub fn contains(&self, path: &Path) -> bool {
        self.entries.contains_key(path)
    }

    /// Put the host file `source` at `path` in the image.
    pub fn file_from(&mut self, path: &Path, source: &Path) -> Result<()> {
        let meta = fs::metadata(source).with_context(|| format!("{}", source.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        let source = source.to_path_buf();
        self.insert(path, Entry::File { source, mode })
    }

    /// Insert an entry below its (created, symlink-resolved) parent directory.
    fn insert(&mut self, path: &Path, entry: Entry) -> Result<()> {
        let parent = path.parent().context("cannot insert the image root")?;
        let name = path.file_name().context("path without a file name")?;
        let real = self.ensure_dir(parent, 0)?.join(name);
        self.entries.insert(real, entry);
        Ok(())
    }

    /// Create `dir` (and its parents) in the image, mirroring the host: a directory that is a
    /// symlink on the host becomes the same symlink. Returns the symlink-free path.
    fn ensure_dir(&mut self, dir: &Path, depth: u32) -> Result<PathBuf> {
        if depth > MAX_SYMLINK_DEPTH {
            bail!("symlink loop at {}", dir.display());
        }
        let Some(parent) = dir.parent() else {
            return Ok(PathBuf::from("/"));
        };
        let name = dir.file_name().context("path ends in ..")?;
        let here = self.ensure_dir(parent, depth + 1)?.join(name);
        match self.entries.get(&here) {
            Some(Entry::Dir { .. }) => return Ok(here),
            Some(Entry::Symlink { target }) => {
                let target = resolve_link(here.parent().unwrap_or(Path::new("/")), target);
                return self.ensure_dir(&target, depth + 1);
            }
            Some(_) => bail!("{} is a file in the image, not a directory", here.display()),
            None => {}
        }
        match fs::symlink_metadata(&here) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&here)?;
                let resolved = resolve_link(here.parent().unwrap_or(Path::new("/")), &target);
                self.entries.insert(here, Entry::Symlink { target });
                self.ensure_dir(&resolved, depth + 1)
            }
            // Directories the host lacks (e.g. /lib/modules/VERSION) are plain 0755 ones.
            _ => {
                self.entries
                    .insert(here.clone(), Entry::Dir { mode: 0o755 });
                Ok(here)
            }
        }
    }

    /// Copy a host file (following and mirroring symlinks) to the same path in the image.
    pub fn host_file(&mut self, path: &Path) -> Result<()> {
        self.host_file_at_depth(path, 0)
    }

    fn host_file_at_depth(&mut self, path: &Path, depth: u32) -> Result<()> {
        if depth > MAX_SYMLINK_DEPTH {
            bail!("symlink loop at {}", path.display());
        }
        let parent = path.parent().context("no parent")?;
        let name = path.file_name().context("no file name")?;
        let real = self.ensure_dir(parent, 0)?.join(name);
        let meta = fs::symlink_metadata(&real)
            .with_context(|| format!("{} on the host", path.display()))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&real)?;
            let resolved = resolve_link(real.parent().unwrap_or(Path::new("/")), &target);
            self.entries.insert(real, Entry::Symlink { target });
            self.host_file_at_depth(&resolved, depth + 1)
        } else if meta.is_file() {
            let mode = meta.permissions().mode() & 0o7777;
            self.entries
                .insert(real.clone(), Entry::File { source: real, mode });
            Ok(())
        } else {
            bail!("{} is neither a file nor a symlink", path.display())
        }
    }

    /// Add the shared libraries and the loader `ldd` lists for `binary` (no-op if static).
    pub fn libraries_of(&mut self, binary: &Path) -> Result<()> {
        let out = Command::new("ldd")
            .arg(binary)
            .output()
            .context("cannot run ldd")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || text.contains("not a dynamic executable") {
            return Ok(()); // static binaries (busybox) and scripts need nothing
        }
        for line in text.lines() {
            let line = line.trim();
            if line.contains("not found") {
                bail!("ldd {}: {line}", binary.display());
            }
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                self.host_file(Path::new(path))?;
            }
        }
        Ok(())
    }

    /// Write the archive (cpio newc, uncompressed).
    pub fn write(&self, out: &Path) -> Result<u64> {
        let tmp = out.with_extension("partial");
        let mut w = NewcWriter::new(BufWriter::new(fs::File::create(&tmp)?));
        for (path, entry) in &self.entries {
            let name = path.strip_prefix("/").unwrap_or(path);
            let name = name.to_str().context("non-UTF-8 path in the image")?;
            match entry {
                Entry::Dir { mode } => w.entry(name, 0o040000 | mode, (0, 0), &[])?,
                Entry::Bytes { data, mode } => w.entry(name, 0o100000 | mode, (0, 0), data)?,
                Entry::File { source, mode } => {
                    let data = fs::read(source)
                        .with_context(|| format!("reading {}", source.display()))?;
                    w.entry(name, 0o100000 | mode, (0, 0), &data)?
                }
                Entry::Symlink { target } => {
                    let target = target.to_str().context("non-UTF-8 symlink")?;
                    w.entry(name, 0o120777, (0, 0), target.as_bytes())?
                }
                Entry::CharDev { mode, major, minor } => {
                    w.entry(name, 0o020000 | mode, (*major, *minor), &[])?
                }
            }
        }
        let size = w.finish()?;
        fs::rename(&tmp, out)?;
        Ok(size)
    }
}

/// The "newc" cpio format (see the kernel's Documentation/driver-api/early-userspace).
struct NewcWriter<W: Write> {
    out: W,
    written: u64,
    next_inode: u32,
}

impl<W: Write> NewcWriter<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_inode: 1,
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        let pad = (4 - self.written % 4) % 4;
        self.out.write_all(&[0; 3][..pad as usize])?;
        self.written += pad;
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> Result<()> {
        let size = u32::try_from(data.len()).context("file larger than 4 GiB")?;
        let namesize = name.len() + 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.next_inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0
        );
        self.next_inode += 1;
        let mut head = header.into_bytes();
        head.extend_from_slice(name.as_bytes());
        head.push(0);
        self.raw(&head)?;
        self.raw(data)
    }

    fn finish(mut self) -> Result<u64> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.written)
    }
}

/// Copy `source` to `dest` without debug info (keeps the image small). Skipped when `dest` is
/// newer than `source`.
pub fn stripped_copy(source: &Path, dest: &Path) -> Result<()> {
    let mtime = |p: &Path| fs::metadata(p).map(|m| (m.mtime(), m.mtime_nsec()));
    if let (Ok(src), Ok(dst)) = (mtime(source), mtime(dest)) {
        if dst >= src {
            return Ok(());
        }
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    output(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(dest)
            .arg(source),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_archive_lists_with_cpio() {
        let dir = std::env::temp_dir().join(format!("xtask-newc-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut image = Image::new();
        image.dir("/vmtest-dir").unwrap();
        image.bytes("/vmtest-dir/hello", "hi\n", 0o644).unwrap();
        image.symlink("/vmtest-dir/link", "hello").unwrap();
        let archive = dir.join("image.cpio");
        image.write(&archive).unwrap();
        let listing = output(
            Command::new("cpio")
                .args(["-it", "--quiet", "-F"])
                .arg(&archive),
        );
        fs::remove_dir_all(&dir).unwrap();
        // cpio is a host test prerequisite (prereq::HOST_TEST_PACKAGES): missing, it fails
        // here rather than passing untested.
        let listing = listing.unwrap_or_else(|e| {
            panic!("listing the archive with cpio (apt-get install cpio): {e:#}")
        });
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(names, ["vmtest-dir", "vmtest-dir/hello", "vmtest-dir/link"]);
    }

    #[test]
    fn symlinked_host_directories_are_mirrored() {
        let mut image = Image::new();
        // On the host /lib64 is either a directory or a symlink (merged /usr); the loader's path
        // must end up reachable under the same name either way.
        image
            .host_file(Path::new("/lib64/ld-linux-x86-64.so.2"))
            .unwrap();
        assert!(image.contains(Path::new("/lib64")));
        let files: Vec<_> = image
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::File { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let real = fs::canonicalize("/lib64/ld-linux-x86-64.so.2").unwrap();
        assert_eq!(files[0], real);
    }
}
