//! Root filesystem images: `docker export` tarballs unpacked once into a content-addressed
//! cache, `<cache>/<sha256 of the tarball>`. Unpacking goes to `<cache>/.tmp-*` and is
//! renamed into place only when complete, so a crash mid-unpack never leaves a half image
//! that a later container would use; `cleanup_orphans` removes leftover `.tmp-*` directories.
//!
//! [`ImageCache`] unpacks each image once however many containers ask at the same time (the
//! others wait for it), refuses an image whose unpacked size would pass a limit while it
//! unpacks (before writing the member that would cross it), and remembers failures, so a
//! broken image is not unpacked again at every respawn.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufReader, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::error::Result;

/// Prefix of in-progress unpack directories in the cache.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// Default limit of an image's unpacked size.
pub const DEFAULT_IMAGE_MAX_BYTES: u64 = 4 << 30;

/// What each member costs against the size limit at least: a block of a 4 KiB-block file
/// system (so a flood of empty members counts too).
const BLOCK: u64 = 4096;

/// How long a failure that may come from the host (disk full, read-only, out of memory)
/// rather than from the image is remembered before the image is tried again. Failures of
/// the image itself are remembered until its content changes.
const HOST_FAILURE_RETRY: Duration = Duration::from_secs(30);

/// Why an image could not be prepared. Every variant names the tarball as configured;
/// member errors name the member as written in the archive, never the temporary directory
/// it was being unpacked into (gone by the time anyone reads the message).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Opening or reading the tarball failed.
    #[error("image {}: {action}: {source}", tarball.display())]
    Read {
        tarball: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// The archive itself is corrupt (a header or the compressed stream).
    #[error("image {}: corrupt archive {}: {source}", tarball.display(), after_member(.after))]
    Archive {
        tarball: PathBuf,
        /// The last member read successfully.
        after: Option<PathBuf>,
        #[source]
        source: io::Error,
    },

    /// One member could not be unpacked.
    #[error("image {}: member {}: {source}", tarball.display(), member.display())]
    Member {
        tarball: PathBuf,
        member: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Unpacking `member` would take the image past the size limit.
    #[error(
        "image {}: member {} ({size} bytes) takes the unpacked image past {limit} bytes \
         (daemon.image_max_size)",
        tarball.display(), member.display()
    )]
    TooLarge {
        tarball: PathBuf,
        member: PathBuf,
        size: u64,
        limit: u64,
    },

    /// The archive stream (decompressed) is longer than any image within the limit can be:
    /// extension members (long names, pax headers) are read whole before any member.
    #[error(
        "image {}: the archive stream passes {limit} bytes, more than an image within \
         daemon.image_max_size can take",
        tarball.display()
    )]
    StreamTooLarge { tarball: PathBuf, limit: u64 },

    /// A filesystem operation in the image cache failed.
    #[error("image {}: cache {}: {action}: {source}", tarball.display(), path.display())]
    Cache {
        tarball: PathBuf,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// This image (same content) failed before; it is not unpacked again until its content
    /// changes (or, for a failure that may be the host's, until a short delay has passed).
    #[error(
        "image {} (sha256 {sha256}) failed earlier and is not unpacked again {}: {cause}",
        tarball.display(),
        if cause.may_be_the_hosts() { "for 30 s" } else { "until its content changes" }
    )]
    FailedBefore {
        tarball: PathBuf,
        sha256: String,
        #[source]
        cause: Arc<ImageError>,
    },
}

fn after_member(after: &Option<PathBuf>) -> String {
    match after {
        Some(member) => format!("after member {}", member.display()),
        None => "at its start".to_owned(),
    }
}

impl ImageError {
    /// Whether the failure may come from the host rather than from the image's content.
    fn may_be_the_hosts(&self) -> bool {
        let host_kind = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::StorageFull
                    | io::ErrorKind::QuotaExceeded
                    | io::ErrorKind::ReadOnlyFilesystem
                    | io::ErrorKind::OutOfMemory
                    | io::ErrorKind::Interrupted
            )
        };
        match self {
            Self::Read { .. } | Self::Cache { .. } => true,
            Self::Member { source, .. } | Self::Archive { source, .. } => host_kind(source),
            Self::TooLarge { .. } | Self::StreamTooLarge { .. } => false,
            Self::FailedBefore { cause, .. } => cause.may_be_the_hosts(),
        }
    }
}

/// What happened to one image (by content).
#[derive(Debug)]
enum Outcome {
    Ready(PathBuf),
    Failed { error: Arc<ImageError>, at: Instant },
}

/// Identity of a tarball file as the kernel sees it: when none of it changed, the content
/// hash computed before still holds, and the file is not read again to hash it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The image cache of one sandbox: unpacked roots by content hash, one unpack at a time per
/// image, remembered failures.
#[derive(Debug)]
pub(crate) struct ImageCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Per image (sha256): its outcome, behind a lock held for the whole unpack, so that
    /// concurrent spawns of one image wait for the one unpack instead of doing their own.
    images: Mutex<HashMap<String, Arc<Mutex<Option<Outcome>>>>>,
    /// Content hashes of tarball files by path, valid while the file's stamp is unchanged.
    hashes: Mutex<HashMap<PathBuf, (FileStamp, String)>>,
    unpacks: AtomicU64,
    host_failure_retry: Duration,
}

impl ImageCache {
    pub(crate) fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self {
            dir,
            max_bytes,
            images: Mutex::default(),
            hashes: Mutex::default(),
            unpacks: AtomicU64::new(0),
            host_failure_retry: HOST_FAILURE_RETRY,
        }
    }

    /// How many unpacks this cache started.
    #[cfg(test)]
    pub(crate) fn unpack_count(&self) -> u64 {
        self.unpacks.load(Ordering::Relaxed)
    }

    /// Returns the unpacked root of `tarball`, unpacking it first if not cached yet.
    /// Blocking: call from a blocking thread.
    pub(crate) fn prepare(&self, tarball: &Path) -> Result<PathBuf> {
        Ok(self.prepare_image(tarball)?)
    }

    fn prepare_image(&self, tarball: &Path) -> Result<PathBuf, ImageError> {
        let read = |action, source| ImageError::Read {
            tarball: tarball.to_owned(),
            action,
            source,
        };
        let mut file = fs::File::open(tarball).map_err(|e| read("open", e))?;
        let digest = self
            .digest(tarball, &mut file)
            .map_err(|e| read("read", e))?;
        let slot = self
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(digest.clone())
            .or_default()
            .clone();
        // Held until this image is ready or failed: the other spawns of it wait here.
        let mut outcome = slot.lock().unwrap_or_else(|e| e.into_inner());
        match &*outcome {
            Some(Outcome::Ready(root)) if root.is_dir() => return Ok(root.clone()),
            Some(Outcome::Failed { error, at })
                if !error.may_be_the_hosts() || at.elapsed() < self.host_failure_retry =>
            {
                return Err(ImageError::FailedBefore {
                    tarball: tarball.to_owned(),
                    sha256: digest,
                    cause: error.clone(),
                });
            }
            _ => {}
        }
        let result = self.unpack_into_cache(tarball, &mut file, &digest);
        *outcome = Some(match &result {
            Ok(root) => Outcome::Ready(root.clone()),
            Err(error) => Outcome::Failed {
                error: Arc::new(clone_for_memory(error)),
                at: Instant::now(),
            },
        });
        result
    }

    /// The tarball's sha256, from memory when the file is unchanged since it was hashed.
    fn digest(&self, tarball: &Path, file: &mut fs::File) -> io::Result<String> {
        let stamp = FileStamp::of(&file.metadata()?);
        let mut hashes = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, digest)) = hashes.get(tarball) {
            if *known == stamp {
                return Ok(digest.clone());
            }
        }
        drop(hashes);
        let digest = sha256_hex(file)?;
        hashes = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        hashes.insert(tarball.to_owned(), (stamp, digest.clone()));
        Ok(digest)
    }

    fn unpack_into_cache(
        &self,
        tarball: &Path,
        file: &mut fs::File,
        digest: &str,
    ) -> Result<PathBuf, ImageError> {
        let cache_error = |action, path: &Path, source| ImageError::Cache {
            tarball: tarball.to_owned(),
            action,
            path: path.to_owned(),
            source,
        };
        let dest = self.dir.join(digest);
        // Unpacked by an earlier run of poold.
        if dest.is_dir() {
            return Ok(dest);
        }
        fs::create_dir_all(&self.dir).map_err(|e| cache_error("create", &self.dir, e))?;
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{digest}-{}-{}",
            std::process::id(),
            super::unique_suffix()
        ));
        self.unpacks.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let unpacked = Unpacker {
            tarball,
            tmp: &tmp,
            max_bytes: self.max_bytes,
        }
        .unpack(file);
        let result = match unpacked {
            Ok(bytes) => fs::rename(&tmp, &dest)
                .map(|()| bytes)
                .map_err(|e| cache_error("rename unpacked image into place", &dest, e)),
            Err(e) => Err(e),
        };
        match result {
            Ok(bytes) => {
                tracing::info!(
                    image = %tarball.display(),
                    sha256 = %digest,
                    bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "unpacked root filesystem"
                );
                Ok(dest)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                tracing::warn!(image = %tarball.display(), sha256 = %digest, error = %e, "image unpack failed");
                Err(e)
            }
        }
    }
}

/// io::Error is not Clone: keep kind and message (the original goes to the first caller).
fn clone_for_memory(error: &ImageError) -> ImageError {
    let copy = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
    match error {
        ImageError::Read {
            tarball,
            action,
            source,
        } => ImageError::Read {
            tarball: tarball.clone(),
            action,
            source: copy(source),
        },
        ImageError::Archive {
            tarball,
            after,
            source,
        } => ImageError::Archive {
            tarball: tarball.clone(),
            after: after.clone(),
            source: copy(source),
        },
        ImageError::Member {
            tarball,
            member,
            source,
        } => ImageError::Member {
            tarball: tarball.clone(),
            member: member.clone(),
            source: copy(source),
        },
        ImageError::TooLarge {
            tarball,
            member,
            size,
            limit,
        } => ImageError::TooLarge {
            tarball: tarball.clone(),
            member: member.clone(),
            size: *size,
            limit: *limit,
        },
        ImageError::StreamTooLarge { tarball, limit } => ImageError::StreamTooLarge {
            tarball: tarball.clone(),
            limit: *limit,
        },
        ImageError::Cache {
            tarball,
            action,
            path,
            source,
        } => ImageError::Cache {
            tarball: tarball.clone(),
            action,
            path: path.clone(),
            source: copy(source),
        },
        ImageError::FailedBefore {
            tarball,
            sha256,
            cause,
        } => ImageError::FailedBefore {
            tarball: tarball.clone(),
            sha256: sha256.clone(),
            cause: cause.clone(),
        },
    }
}

fn sha256_hex(file: &mut fs::File) -> io::Result<String> {
    let mut hasher = Sha256::new();
    file.rewind()?;
    io::copy(file, &mut hasher)?;
    file.rewind()?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A member's name for messages: as in the archive, cut to a readable length (a hostile
/// long name can be megabytes).
fn member_name(raw: &[u8]) -> PathBuf {
    const MAX: usize = 512;
    let name = String::from_utf8_lossy(&raw[..raw.len().min(MAX)]).into_owned();
    PathBuf::from(if raw.len() > MAX {
        format!("{name}...")
    } else {
        name
    })
}

/// Fails reads past `left` bytes, and says so in `passed` (the tar crate wraps errors).
struct BoundedReader<R> {
    inner: R,
    left: u64,
    passed: Rc<Cell<bool>>,
}

impl<R: Read> Read for BoundedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Only a failure if there is more to read.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.passed.set(true);
            return Err(io::Error::other("archive stream too long"));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// One unpack of one tarball into a temporary directory.
struct Unpacker<'a> {
    tarball: &'a Path,
    tmp: &'a Path,
    max_bytes: u64,
}

impl Unpacker<'_> {
    /// Unpacks member by member, charging each against the limit before writing it.
    /// Returns the bytes charged.
    fn unpack(&self, file: &mut fs::File) -> Result<u64, ImageError> {
        let tarball = self.tarball.to_owned();
        let mut magic = [0u8; 2];
        let n = file
            .read(&mut magic)
            .and_then(|n| file.rewind().map(|()| n))
            .map_err(|source| ImageError::Read {
                tarball: tarball.clone(),
                action: "read",
                source,
            })?;
        let decoded: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
            Box::new(flate2::read::GzDecoder::new(BufReader::new(&*file)))
        } else {
            Box::new(BufReader::new(&*file))
        };
        // Every member is charged at least its stream size (header and padding aside), so
        // twice the limit is never reached by an image within it.
        let stream_limit = self.max_bytes.saturating_mul(2).saturating_add(1 << 20);
        let passed = Rc::new(Cell::new(false));
        let reader = BoundedReader {
            inner: decoded,
            left: stream_limit,
            passed: passed.clone(),
        };
        fs::create_dir(self.tmp).map_err(|source| ImageError::Cache {
            tarball: tarball.clone(),
            action: "create",
            path: self.tmp.to_owned(),
            source,
        })?;
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_overwrite(true);
        let mut after: Option<PathBuf> = None;
        let corrupt = |after: &Option<PathBuf>, source| {
            if passed.get() {
                ImageError::StreamTooLarge {
                    tarball: tarball.clone(),
                    limit: stream_limit,
                }
            } else {
                ImageError::Archive {
                    tarball: tarball.clone(),
                    after: after.clone(),
                    source,
                }
            }
        };
        let mut charged: u64 = 0;
        let entries = archive.entries().map_err(|e| corrupt(&after, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| corrupt(&after, self.scrub(e)))?;
            let member = member_name(&entry.path_bytes());
            // The size the member takes once written (a sparse member's full size).
            let size = entry.size();
            let cost = size.div_ceil(BLOCK).max(1).saturating_mul(BLOCK);
            charged = charged.saturating_add(cost);
            if charged > self.max_bytes {
                return Err(ImageError::TooLarge {
                    tarball,
                    member,
                    size,
                    limit: self.max_bytes,
                });
            }
            entry.unpack_in(self.tmp).map_err(|e| ImageError::Member {
                tarball: tarball.clone(),
                member: member.clone(),
                source: self.scrub(e),
            })?;
            after = Some(member);
        }
        Ok(charged)
    }

    /// The tar crate's messages name the temporary directory, which is gone by the time
    /// anyone reads them: show paths inside the image instead ("/etc/passwd"), and keep the
    /// whole chain of causes in one message. OS errors (no path in them) stay as they are.
    fn scrub(&self, error: io::Error) -> io::Error {
        if error.get_ref().is_none() {
            return error;
        }
        let mut text = error.to_string();
        let mut cause = error.get_ref().and_then(|e| e.source());
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        let tmp = self.tmp.display().to_string();
        io::Error::new(error.kind(), text.replace(&tmp, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_tar(dir: &Path, gz: bool) -> PathBuf {
        let path = dir.join(if gz { "img.tar.gz" } else { "img.tar" });
        let f = fs::File::create(&path).unwrap();
        let w: Box<dyn std::io::Write> = if gz {
            Box::new(flate2::write::GzEncoder::new(
                f,
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(f)
        };
        let mut b = tar::Builder::new(w);
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "etc/hello", &b"world"[..]).unwrap();
        b.into_inner().unwrap().flush().unwrap();
        path
    }

    use std::io::Write;

    #[test]
    fn tarballs_unpack_once_into_the_cache() {
        let d = tempfile::tempdir().unwrap();
        for gz in [false, true] {
            let tar = make_tar(d.path(), gz);
            let cache = d.path().join("cache");
            let root = ImageCache::new(cache.clone(), DEFAULT_IMAGE_MAX_BYTES)
                .prepare(&tar)
                .unwrap();
            assert_eq!(fs::read_to_string(root.join("etc/hello")).unwrap(), "world");
            fs::write(root.join("marker"), "").unwrap();
            // Second call hits the cache (the marker is still there).
            let again = ImageCache::new(cache.clone(), DEFAULT_IMAGE_MAX_BYTES)
                .prepare(&tar)
                .unwrap();
            assert_eq!(again, root);
            assert!(again.join("marker").exists());
            let leftovers = fs::read_dir(&cache)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(TMP_PREFIX)
                })
                .count();
            assert_eq!(leftovers, 0);
        }
    }

    #[test]
    fn a_broken_tarball_leaves_no_image() {
        let d = tempfile::tempdir().unwrap();
        let tar = make_tar(d.path(), false);
        let bytes = fs::read(&tar).unwrap();
        let broken = d.path().join("broken.tar");
        // A header claiming more data than there is.
        fs::write(&broken, &bytes[..600]).unwrap();
        let cache = d.path().join("cache");
        let e = ImageCache::new(cache.clone(), DEFAULT_IMAGE_MAX_BYTES)
            .prepare(&broken)
            .unwrap_err();
        assert!(e.to_string().contains("broken.tar"), "{e}");
        assert_eq!(
            fs::read_dir(&cache).unwrap().count(),
            0,
            "no image and no temp dir left"
        );
    }
}

#[cfg(test)]
mod image_cache_tests {
    use super::*;
    use crate::sandbox::SandboxError;
    use std::io::Write;
    use std::sync::{Arc, Barrier};

    const MIB: u64 = 1 << 20;

    fn header(size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_cksum();
        h
    }

    /// A tarball of `files` members of `size` bytes each (random-ish, so gzip cannot shrink it).
    fn tarball(dir: &Path, name: &str, files: usize, size: usize) -> PathBuf {
        let path = dir.join(name);
        let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
        let mut data = vec![0u8; size];
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = (i.wrapping_mul(2654435761) >> 13) as u8;
        }
        for i in 0..files {
            b.append_data(&mut header(size as u64), format!("data/f{i}"), &data[..])
                .unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
        path
    }

    fn temp_dirs(cache: &Path) -> usize {
        fs::read_dir(cache).map_or(0, |rd| {
            rd.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(TMP_PREFIX)
            })
            .count()
        })
    }

    /// Eight containers of one service start at once: the image is unpacked once and every
    /// one of them gets the same root.
    #[test]
    fn concurrent_spawns_unpack_an_image_once() {
        let d = tempfile::tempdir().unwrap();
        let tar = tarball(d.path(), "big.tar", 64, 256 << 10);
        let cache = Arc::new(ImageCache::new(d.path().join("cache"), 4 << 30));
        let before = cache.unpack_count();
        let barrier = Arc::new(Barrier::new(8));
        let roots: Vec<PathBuf> = (0..8)
            .map(|_| {
                let (cache, barrier, tar) = (cache.clone(), barrier.clone(), tar.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    cache.prepare(&tar).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(cache.unpack_count() - before, 1, "unpacked more than once");
        assert!(roots.iter().all(|r| r == &roots[0]));
        assert_eq!(fs::read_dir(roots[0].join("data")).unwrap().count(), 64);
        assert_eq!(temp_dirs(&d.path().join("cache")), 0);
    }

    fn assert_too_large(e: &SandboxError, member: &str) {
        assert!(
            matches!(e, SandboxError::Image(ImageError::TooLarge { member: m, .. }) if m == Path::new(member)),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("image_max_size") && text.contains(member),
            "expected a size-limit error naming {member}: {text}"
        );
        assert!(!text.contains(TMP_PREFIX), "names a temporary path: {text}");
    }

    /// A member whose header claims more than the limit is refused before a byte of it is
    /// written: a GNU sparse member of 1 TiB (512 bytes in the archive).
    #[test]
    fn a_sparse_member_past_the_size_limit_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sparse.tar");
        let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
        b.append_data(&mut header(5), "etc/hello", &b"world"[..])
            .unwrap();
        let mut h = header(512);
        h.set_entry_type(tar::EntryType::GNUSparse);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(1 << 40);
        gnu.sparse[0].set_offset((1 << 40) - 512);
        gnu.sparse[0].set_length(512);
        h.set_cksum();
        b.append_data(&mut h, "var/huge", &[7u8; 512][..]).unwrap();
        b.into_inner().unwrap().flush().unwrap();

        let cache = ImageCache::new(d.path().join("cache"), 64 * MIB);
        let e = cache.prepare(&path).unwrap_err();
        assert_too_large(&e, "var/huge");
        assert_eq!(fs::read_dir(d.path().join("cache")).unwrap().count(), 0);
    }

    /// Many members count too (each takes at least a block on disk), and the refusal comes
    /// while unpacking, naming the member that crossed the limit.
    #[test]
    fn many_members_past_the_size_limit_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let tar = tarball(d.path(), "many.tar", 300, 1000);
        let cache = ImageCache::new(d.path().join("cache"), MIB);
        let e = cache.prepare(&tar).unwrap_err();
        // 4 KiB per member: the 257th member crosses 1 MiB.
        assert_too_large(&e, "data/f256");
        assert_eq!(fs::read_dir(d.path().join("cache")).unwrap().count(), 0);
    }

    /// A full disk is the host's fault, not the image's: that failure is retried (here at
    /// once), while a corrupt image's is not. Needs root (a 1 MiB tmpfs as the cache).
    #[test]
    fn a_full_disk_is_retried_a_corrupt_image_is_not() {
        let d = tempfile::tempdir().unwrap();
        let cache_dir = d.path().join("cache");
        fs::create_dir(&cache_dir).unwrap();
        let _unmount = crate::sandbox::test_mount::mount_tmpfs(&cache_dir, "1M");
        let mut cache = ImageCache::new(cache_dir.clone(), 4 << 30);
        cache.host_failure_retry = Duration::ZERO;

        let big = tarball(d.path(), "big.tar", 4, 512 << 10);
        let e = cache.prepare(&big).unwrap_err();
        assert!(
            matches!(&e, SandboxError::Image(ImageError::Member { source, .. }) if source.kind() == io::ErrorKind::StorageFull),
            "{e:?}"
        );
        let _ = cache.prepare(&big).unwrap_err();
        assert_eq!(cache.unpack_count(), 2, "a host failure is tried again");

        let bytes = fs::read(tarball(d.path(), "ok.tar", 2, 1000)).unwrap();
        let bad = d.path().join("bad.tar");
        fs::write(&bad, &bytes[..512 * 4 + 100]).unwrap();
        let _ = cache.prepare(&bad).unwrap_err();
        let e = cache.prepare(&bad).unwrap_err();
        assert!(
            matches!(&e, SandboxError::Image(ImageError::FailedBefore { .. })),
            "{e:?}"
        );
        assert_eq!(
            cache.unpack_count(),
            3,
            "a corrupt image is not tried again"
        );
        assert_eq!(
            fs::read_dir(&cache_dir).unwrap().count(),
            0,
            "nothing left behind"
        );
    }

    /// A corrupt image fails once; the next spawns get the remembered failure without
    /// unpacking it again, until the file changes.
    #[test]
    fn a_failed_image_is_not_unpacked_again() {
        let d = tempfile::tempdir().unwrap();
        let good = tarball(d.path(), "img.tar", 2, 1000);
        let bytes = fs::read(&good).unwrap();
        let img = d.path().join("bad.tar");
        // The second member's data is cut short.
        fs::write(&img, &bytes[..512 * 4 + 100]).unwrap();
        let cache = ImageCache::new(d.path().join("cache"), 4 << 30);
        let before = cache.unpack_count();
        let first = cache.prepare(&img).unwrap_err().to_string();
        let second = cache.prepare(&img).unwrap_err().to_string();
        assert_eq!(cache.unpack_count() - before, 1, "unpacked again: {second}");
        assert!(
            second.contains("bad.tar") && second.contains("data/f1"),
            "{second}"
        );
        assert!(first.contains("data/f1"), "{first}");
        assert!(second.contains("failed earlier"), "{second}");
        // Fixed file, new content: unpacked again, and it works.
        fs::write(&img, &bytes).unwrap();
        let root = cache.prepare(&img).unwrap();
        assert!(root.join("data/f1").is_file());
        assert_eq!(cache.unpack_count() - before, 2);
    }

    /// An unpack error names the tarball and the member, keeps the cause, and names no
    /// temporary directory (gone by the time anyone reads the message).
    #[test]
    fn unpack_errors_name_the_member_and_keep_the_cause() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("clash.tar");
        let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
        b.append_data(&mut header(5), "etc/hello", &b"world"[..])
            .unwrap();
        // A file below a regular file: cannot be created (ENOTDIR).
        b.append_data(&mut header(1), "etc/hello/child", &b"x"[..])
            .unwrap();
        b.into_inner().unwrap().flush().unwrap();
        let cache = ImageCache::new(d.path().join("cache"), 4 << 30);
        let e = cache.prepare(&path).unwrap_err();
        assert!(
            matches!(&e, SandboxError::Image(ImageError::Member { member, .. }) if member == Path::new("etc/hello/child")),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("clash.tar") && text.contains("member etc/hello/child"),
            "{text}"
        );
        assert!(!text.contains(TMP_PREFIX), "names a temporary path: {text}");
        let mut chain = Vec::new();
        let mut cause: Option<&dyn std::error::Error> = Some(&e);
        while let Some(c) = cause {
            chain.push(c.to_string());
            cause = c.source();
        }
        assert!(chain.len() >= 2, "the cause is kept: {chain:?}");
        assert!(
            chain.iter().all(|c| !c.contains(TMP_PREFIX)),
            "a cause names a temporary path: {chain:?}"
        );
    }
}

/// Hostile archives: links and paths that lead out of the image, device nodes, and
/// extension members that would make poold read without bound.
#[cfg(test)]
mod hostile_image_tests {
    use super::*;
    use crate::sandbox::SandboxError;
    use std::io::Write;
    use std::os::unix::fs::FileTypeExt;

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_cksum();
        h
    }

    fn build(dir: &Path, name: &str, add: impl FnOnce(&mut tar::Builder<fs::File>)) -> PathBuf {
        let path = dir.join(name);
        let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
        add(&mut b);
        b.into_inner().unwrap().flush().unwrap();
        path
    }

    fn link(b: &mut tar::Builder<fs::File>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = header(kind, 0);
        b.append_link(&mut h, path, target).unwrap();
    }

    fn file(b: &mut tar::Builder<fs::File>, path: &str, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    /// Writes `path` into the archive without the builder's checks (it refuses `..`).
    fn raw_file(b: &mut tar::Builder<fs::File>, path: &str, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, data.len() as u64);
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    /// A host directory the image must not reach, and a cache beside it.
    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("victim")).unwrap();
            fs::write(dir.path().join("victim/secret"), "host secret").unwrap();
            Self { dir }
        }
        fn victim(&self) -> PathBuf {
            self.dir.path().join("victim")
        }
        fn cache(&self) -> ImageCache {
            ImageCache::new(self.dir.path().join("cache"), DEFAULT_IMAGE_MAX_BYTES)
        }
        fn assert_victim_untouched(&self) {
            let names: Vec<_> = fs::read_dir(self.victim())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["secret"], "the host directory was written to");
            assert_eq!(
                fs::read_to_string(self.victim().join("secret")).unwrap(),
                "host secret"
            );
            let meta = fs::metadata(self.victim().join("secret")).unwrap();
            assert_eq!(meta.nlink(), 1, "the host file got a hard link");
        }
    }

    #[test]
    fn a_symlink_out_of_the_image_is_not_followed_when_unpacking() {
        let host = Host::new();
        let victim = host.victim().display().to_string();
        let tar = build(host.dir.path(), "sym.tar", |b| {
            link(b, tar::EntryType::Symlink, "escape", &victim);
            file(b, "escape/pwned", b"x");
        });
        let e = host.cache().prepare(&tar).unwrap_err();
        assert!(
            matches!(&e, SandboxError::Image(ImageError::Member { member, .. }) if member == Path::new("escape/pwned")),
            "{e:?}"
        );
        host.assert_victim_untouched();
    }

    #[test]
    fn a_hard_link_to_a_host_file_is_refused() {
        let host = Host::new();
        let secret = host.victim().join("secret").display().to_string();
        for (name, target) in [
            ("abs.tar", secret.clone()),
            ("rel.tar", format!("../../../../../../..{secret}")),
        ] {
            let tar = build(host.dir.path(), name, |b| {
                file(b, "etc/hello", b"hi");
                link(b, tar::EntryType::Link, "etc/secret", &target);
            });
            let e = host.cache().prepare(&tar).unwrap_err();
            assert!(
                matches!(&e, SandboxError::Image(ImageError::Member { member, .. }) if member == Path::new("etc/secret")),
                "{name}: {e:?}"
            );
            host.assert_victim_untouched();
        }
        // A hard link inside the image is fine.
        let tar = build(host.dir.path(), "inside.tar", |b| {
            file(b, "etc/hello", b"hi");
            link(b, tar::EntryType::Link, "etc/hello2", "etc/hello");
        });
        let root = host.cache().prepare(&tar).unwrap();
        assert_eq!(fs::read_to_string(root.join("etc/hello2")).unwrap(), "hi");
    }

    #[test]
    fn dot_dot_members_land_nowhere() {
        let host = Host::new();
        let tar = build(host.dir.path(), "dots.tar", |b| {
            file(b, "etc/hello", b"hi");
            raw_file(b, "../../victim/pwned", b"x");
            raw_file(b, "/../victim/pwned2", b"x");
        });
        let root = host.cache().prepare(&tar).unwrap();
        assert!(root.join("etc/hello").is_file());
        host.assert_victim_untouched();
    }

    /// Device nodes in an image would hand a root container the host's disks: they are
    /// unpacked as empty regular files, never as devices.
    #[test]
    fn device_nodes_become_plain_files() {
        let host = Host::new();
        let tar = build(host.dir.path(), "dev.tar", |b| {
            for (kind, name) in [
                (tar::EntryType::Block, "dev/sda"),
                (tar::EntryType::Char, "dev/mem"),
                (tar::EntryType::Fifo, "dev/fifo"),
            ] {
                let mut h = header(kind, 0);
                h.set_device_major(8).unwrap();
                h.set_device_minor(0).unwrap();
                h.set_mode(0o666);
                h.set_cksum();
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
        });
        let root = host.cache().prepare(&tar).unwrap();
        for name in ["dev/sda", "dev/mem", "dev/fifo"] {
            let kind = fs::symlink_metadata(root.join(name)).unwrap().file_type();
            assert!(
                kind.is_file() && !kind.is_block_device() && !kind.is_char_device(),
                "{name}: {kind:?}"
            );
        }
    }

    /// A GNU long-name member is read into memory by the tar crate before any member is
    /// seen: the archive stream itself is bounded, so a huge one stops at the limit.
    #[test]
    fn a_huge_long_name_member_stops_at_the_limit() {
        let host = Host::new();
        const LIMIT: u64 = 1 << 20;
        let tar = build(host.dir.path(), "longname.tar", |b| {
            let size = 4 * LIMIT;
            let mut h = header(tar::EntryType::GNULongName, size);
            h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            h.set_cksum();
            b.append(&h, std::io::repeat(b'a').take(size)).unwrap();
            file(b, "etc/hello", b"hi");
        });
        let cache = ImageCache::new(host.dir.path().join("cache"), LIMIT);
        let e = cache.prepare(&tar).unwrap_err();
        assert!(
            matches!(&e, SandboxError::Image(ImageError::StreamTooLarge { .. })),
            "{:.300}",
            format!("{e:?}")
        );
        assert!(e.to_string().contains("image_max_size"), "{e:.300}");
    }
}
