//! Host prerequisites: Debian packages, installed with apt-get only when missing.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

use crate::util::run;

/// Packages the VM harness itself needs on the host.
pub const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86", // qemu-system-x86_64
    "busybox-static",  // the VM's userland
    "ipvsadm",         // reference IPVS tool, used by tests
    "iproute2",        // ip with netns support
    "cpio",            // to inspect images (the image itself is written by xtask)
    "kmod",            // depmod, modprobe --show-depends
    "binutils",        // strip
    "xz-utils",        // compressed kernel modules
    "zstd",            // compressed kernel modules
    "git",             // list the repo's files for the image
];

/// Packages the host test stage needs (`cargo test --workspace`).
pub const HOST_TEST_PACKAGES: &[&str] = &[
    "prometheus",  // promtool: checks the alert rules, their unit tests and /metrics
    "nftables",    // nft: poold's worker firewall (sandbox tests make and remove its table)
    "debootstrap", // builds the real-image tests' Debian images (xtask/src/test_images.rs)
    "cpio",        // lists the archives xtask writes (image tests)
    "wrk",         // load for the host end-to-end tests
    "util-linux",  // setpriv: the hardening tests act as user nobody
    "keepalived",  // `keepalived -t` checks config/keepalived/ (never started: policy-rc.d)
];

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

pub fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|out| out.status.success() && out.stdout.ends_with(b"install ok installed"))
        .unwrap_or(false)
}

/// `apt-get update`, at most once per xtask run.
pub fn apt_update() -> Result<()> {
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        eprintln!("xtask: apt-get update");
        run(Command::new("apt-get").args(["update", "-q"]))?;
    }
    Ok(())
}

/// Install the packages that `dpkg` does not list as installed.
pub fn ensure_packages<'a>(packages: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut missing: Vec<&str> = packages.into_iter().filter(|p| !is_installed(p)).collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let _no_service_starts = NoServiceStarts::install()?;
    let install = || {
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing))
    };
    let lists_present = std::fs::read_dir("/var/lib/apt/lists")
        .map(|dir| {
            dir.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        })
        .unwrap_or(false);
    if !lists_present {
        apt_update()?;
    }
    if install().is_err() {
        // Stale package lists are the usual cause: refresh once and retry.
        apt_update()?;
        install().with_context(|| format!("cannot install {}", missing.join(" ")))?;
    }
    Ok(())
}

/// Keeps dpkg from starting the daemons it installs (keepalived is a test tool here, run by
/// the tests in their own namespaces): a `policy-rc.d` that exits 101 ("action not allowed")
/// while the guard lives, unless the machine has one already.
struct NoServiceStarts {
    written: Option<&'static str>,
}

impl NoServiceStarts {
    const PATH: &'static str = "/usr/sbin/policy-rc.d";

    fn install() -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        if std::path::Path::new(Self::PATH).exists() {
            return Ok(Self { written: None });
        }
        std::fs::write(
            Self::PATH,
            "#!/bin/sh\n# written by cargo xtask during apt-get install\nexit 101\n",
        )
        .with_context(|| format!("cannot write {}", Self::PATH))?;
        std::fs::set_permissions(Self::PATH, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self {
            written: Some(Self::PATH),
        })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = self.written {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// rustfmt and clippy, for `cargo xtask test`, via rustup when they are missing.
pub fn ensure_rust_components() -> Result<()> {
    for (tool, component) in [("fmt", "rustfmt"), ("clippy", "clippy")] {
        let present = Command::new("cargo")
            .args([tool, "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            eprintln!("xtask: installing rustup component {component}");
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}
