//! Real root filesystems for poold's real-image tests (poold/tests/e2e_images.rs): small
//! Debian bookworm images made with debootstrap and packed as `docker export` does
//! (`tar -C ROOT -czf IMAGE.tar.gz .`).
//!
//! Cached outside the work tree in [`CACHE_DIR`] as `<name>-<recipe hash>.tar.gz`, with
//! `<name>.tar.gz` a symlink to the current one: an image is rebuilt only when its recipe
//! (the constants below) changes. The Debian mirror is the one apt is configured with.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::prereq;
use crate::util::run;

/// Where the images live, on the host and in the VM alike (the tests look here).
pub const CACHE_DIR: &str = "/var/cache/poold-test-images";

const SUITE: &str = "bookworm";

/// One image: debootstrap's minbase plus these packages.
pub struct Recipe {
    pub name: &'static str,
    pub include: &'static str,
}

pub const RECIPES: [Recipe; 2] = [
    Recipe {
        name: "nginx",
        include: "nginx-light",
    },
    Recipe {
        name: "python",
        include: "python3-minimal",
    },
];

/// Removed after debootstrap: nothing a server needs at run time (package caches and lists,
/// documentation, translations), about half of a minbase image.
const TRIM: [&str; 6] = [
    "var/cache/apt",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
];

impl Recipe {
    /// Everything that decides the image's contents, as text.
    fn text(&self, mirror: &str) -> String {
        format!(
            "debootstrap --variant=minbase --include={} {SUITE} {mirror}\ntrim {}\ntar -czf\n",
            self.include,
            TRIM.join(" ")
        )
    }

    /// `<name>-<first 16 hex digits of sha256(recipe)>.tar.gz`.
    fn file_name(&self, mirror: &str) -> String {
        let hash: String = Sha256::digest(self.text(mirror))[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{}-{hash}.tar.gz", self.name)
    }
}

/// Paths of the current images (`<CACHE_DIR>/<name>.tar.gz`), building those whose recipe
/// changed or that are missing.
pub fn ensure() -> Result<Vec<PathBuf>> {
    let mirror = apt_mirror()?;
    let cache = Path::new(CACHE_DIR);
    fs::create_dir_all(cache).with_context(|| format!("creating {CACHE_DIR}"))?;
    let mut stale: Vec<&Recipe> = Vec::new();
    for recipe in &RECIPES {
        if !cache.join(recipe.file_name(&mirror)).is_file() {
            stale.push(recipe);
        }
    }
    if !stale.is_empty() {
        prereq::ensure_packages(["debootstrap"])?;
        // In parallel: mostly downloads and unpacking.
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = stale
                .iter()
                .map(|recipe| scope.spawn(|| build(recipe, &mirror, cache)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("image build panicked")))
                .collect()
        });
        for result in results {
            result?;
        }
    }
    RECIPES
        .iter()
        .map(|recipe| {
            let current = recipe.file_name(&mirror);
            let link = cache.join(format!("{}.tar.gz", recipe.name));
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(&current, &link)
                .with_context(|| format!("linking {}", link.display()))?;
            remove_older(cache, recipe.name, &current);
            Ok(link)
        })
        .collect()
}

fn build(recipe: &Recipe, mirror: &str, cache: &Path) -> Result<()> {
    let started = Instant::now();
    let file = recipe.file_name(mirror);
    let root = cache.join(format!(".build-{}", recipe.name));
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    eprintln!("xtask: building test image {file} (debootstrap from {mirror})");
    let log = cache.join(format!(".build-{}.log", recipe.name));
    let log_file = fs::File::create(&log)?;
    let status = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={}", recipe.include),
        ])
        .arg(SUITE)
        .arg(&root)
        .arg(mirror)
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("cannot start debootstrap")?;
    if !status.success() {
        bail!(
            "debootstrap for test image {} failed ({status}); see {}",
            recipe.name,
            log.display()
        );
    }
    for dir in TRIM {
        let path = root.join(dir);
        if path.exists() {
            fs::remove_dir_all(&path)?;
            fs::create_dir(&path)?;
        }
    }
    let partial = cache.join(format!(".{file}.partial"));
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-czf")
        .arg(&partial)
        .arg("."))?;
    fs::rename(&partial, cache.join(&file))?;
    fs::remove_dir_all(&root)?;
    let _ = fs::remove_file(&log);
    let size = fs::metadata(cache.join(&file))?.len();
    eprintln!(
        "xtask: test image {file}: {} MiB in {:.0} s",
        size >> 20,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Removes `<name>-*.tar.gz` other than `keep` (images of older recipes).
fn remove_older(cache: &Path, name: &str, keep: &str) {
    let Ok(dir) = fs::read_dir(cache) else { return };
    for entry in dir.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let ours = file
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|rest| rest.ends_with(".tar.gz") && !rest.contains('-'));
        if ours && file != keep {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The first Debian mirror in apt's sources (deb822 `URIs:` or one-line `deb URL`).
fn apt_mirror() -> Result<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        if let Some(mirror) = mirror_in(&text) {
            return Ok(mirror);
        }
    }
    bail!("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d")
}

fn mirror_in(text: &str) -> Option<String> {
    text.lines().map(str::trim).find_map(|line| {
        let url = line
            .strip_prefix("URIs:")
            .or_else(|| line.strip_prefix("deb "))?
            .split_whitespace()
            .find(|w| w.starts_with("http"))?;
        let url = url.trim_end_matches('/');
        // The main archive, not the security one (different suite names).
        (url.ends_with("/debian")).then(|| url.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_comes_from_either_sources_format() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian-security\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n";
        assert_eq!(mirror_in(deb822).unwrap(), "http://deb.debian.org/debian");
        let classic = "# comment\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(mirror_in(classic).unwrap(), "http://mirror.example/debian");
    }

    #[test]
    fn a_changed_recipe_names_a_new_file() {
        let a = RECIPES[0].file_name("http://a/debian");
        assert_eq!(a, RECIPES[0].file_name("http://a/debian"));
        assert_ne!(a, RECIPES[0].file_name("http://b/debian"));
        assert_ne!(a, RECIPES[1].file_name("http://a/debian"));
        assert!(a.starts_with("nginx-") && a.ends_with(".tar.gz"));
    }
}
