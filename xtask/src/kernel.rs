//! Debian's cloud kernel (IPVS, veth, bridge, dummy as modules), downloaded with
//! `apt-get download` and unpacked into build/vm/kernel/ without installing it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::prereq::apt_update;
use crate::util::{output, run};

const METAPACKAGE: &str = "linux-image-cloud-amd64";

#[derive(Debug)]
pub struct Kernel {
    /// Unpacked package root (contains boot/ and lib/modules/VERSION/).
    pub root: PathBuf,
    /// Kernel release, e.g. 6.1.0-56-cloud-amd64.
    pub version: String,
    pub vmlinuz: PathBuf,
}

impl Kernel {
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.version)
    }
}

/// The versioned image package the metapackage depends on, e.g.
/// linux-image-6.1.0-56-cloud-amd64 (from the local apt lists; no download).
fn resolve_package() -> Result<String> {
    let show =
        || output(Command::new("apt-cache").args(["show", "--no-all-versions", METAPACKAGE]));
    let text = match show() {
        Ok(text) if !text.trim().is_empty() => text,
        _ => {
            apt_update()?;
            show()?
        }
    };
    let depends = text
        .lines()
        .find_map(|l| l.strip_prefix("Depends:"))
        .with_context(|| format!("apt-cache show {METAPACKAGE}: no Depends field"))?;
    depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|name| name.starts_with("linux-image-") && name.ends_with("-cloud-amd64"))
        .map(str::to_owned)
        .with_context(|| {
            format!("{METAPACKAGE} depends on no linux-image-*-cloud-amd64 package: {depends}")
        })
}

/// Download and unpack the kernel unless it is already unpacked in `build_dir`.
pub fn fetch(build_dir: &Path) -> Result<Kernel> {
    let package = resolve_package()?;
    let version = package.trim_start_matches("linux-image-").to_owned();
    let root = build_dir.join("kernel").join(&package);
    let done_marker = root.join(".unpacked");
    if !done_marker.exists() {
        eprintln!("xtask: fetching {package}");
        let download_dir = build_dir.join("download");
        fs::create_dir_all(&download_dir)?;
        run(Command::new("apt-get")
            .args(["download", "-q", &package])
            .current_dir(&download_dir))?;
        let deb = fs::read_dir(&download_dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
            })
            .with_context(|| {
                format!(
                    "apt-get download {package} left no .deb in {}",
                    download_dir.display()
                )
            })?;
        let staging = root.with_extension("partial");
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        // The package ships no modules.dep; modprobe --show-depends needs it.
        run(Command::new("depmod").arg("-b").arg(&staging).arg(&version))?;
        let _ = fs::remove_dir_all(&root);
        fs::rename(&staging, &root)?;
        fs::write(&done_marker, format!("{package}\n"))?;
        let _ = fs::remove_file(&deb);
    }
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{version}"));
    if !vmlinuz.exists() {
        bail!(
            "{} is missing: delete {} and retry",
            vmlinuz.display(),
            root.display()
        );
    }
    Ok(Kernel {
        root,
        version,
        vmlinuz,
    })
}
