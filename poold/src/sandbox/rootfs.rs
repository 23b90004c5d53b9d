//! Root filesystem images: `docker export` tarballs unpacked once into a content-addressed
//! cache, `<cache>/<sha256 of the tarball>`. Unpacking goes to `<cache>/.tmp-*` and is
//! renamed into place only when complete, so a crash mid-unpack never leaves a half image
//! that a later worker would use; `cleanup_orphans` removes leftover `.tmp-*` directories.

use std::fs;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{Result, SandboxError};

/// Prefix of in-progress unpack directories in the cache.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// Returns the unpacked root of `tarball`, unpacking it first if not cached yet.
pub(crate) fn prepare_image(cache: &Path, tarball: &Path) -> Result<PathBuf> {
    let mut file = fs::File::open(tarball).map_err(|e| SandboxError::io("open", tarball, e))?;
    let digest = sha256_hex(&mut file).map_err(|e| SandboxError::io("read", tarball, e))?;
    let dest = cache.join(&digest);
    if dest.is_dir() {
        return Ok(dest);
    }
    fs::create_dir_all(cache).map_err(|e| SandboxError::io("create", cache, e))?;
    let tmp = cache.join(format!(
        "{TMP_PREFIX}{digest}-{}-{}",
        std::process::id(),
        super::unique_suffix()
    ));
    let unpacked = unpack(&mut file, &tmp).map_err(|e| SandboxError::Unpack {
        path: tarball.to_path_buf(),
        source: e,
    });
    if let Err(e) = unpacked {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &dest) {
        Ok(()) => {
            tracing::info!(image = %tarball.display(), sha256 = %digest, "unpacked root filesystem");
            Ok(dest)
        }
        // Another worker finished the same image first: use theirs.
        Err(_) if dest.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(dest)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(SandboxError::io("rename unpacked image to", dest, e))
        }
    }
}

fn sha256_hex(file: &mut fs::File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(file, &mut hasher)?;
    file.rewind()?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn unpack(file: &mut fs::File, dest: &Path) -> std::io::Result<()> {
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    file.rewind()?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(&*file)))
    } else {
        Box::new(BufReader::new(&*file))
    };
    fs::create_dir(dest)?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    archive.unpack(dest)
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
            let root = prepare_image(&cache, &tar).unwrap();
            assert_eq!(fs::read_to_string(root.join("etc/hello")).unwrap(), "world");
            fs::write(root.join("marker"), "").unwrap();
            // Second call hits the cache (the marker is still there).
            let again = prepare_image(&cache, &tar).unwrap();
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
        let e = prepare_image(&cache, &broken).unwrap_err();
        assert!(e.to_string().contains("broken.tar"), "{e}");
        assert_eq!(
            fs::read_dir(&cache).unwrap().count(),
            0,
            "no image and no temp dir left"
        );
    }
}
