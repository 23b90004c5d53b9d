//! `cargo xtask test`: the whole suite, stage by stage; the first failing stage stops it.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::prereq;
use crate::util::{run, workspace_root};
use crate::vm::{self, VmOptions};

pub fn run_suite(opts: &VmOptions) -> Result<()> {
    let started = Instant::now();
    prereq::ensure_rust_components()?;
    vm::ensure_host_prerequisites()?;
    prereq::ensure_packages(prereq::HOST_TEST_PACKAGES.iter().copied())?;
    crate::test_images::ensure()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let stages: [(&str, &[&str]); 3] = [
        ("fmt", &["fmt", "--all", "--check"]),
        (
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        ("host tests", &["test", "--workspace"]),
    ];
    // The static checks begin with the one-way module rule (no build needed).
    eprintln!("xtask test: stage `check-imports`: cargo xtask check-imports");
    if let Err(e) = crate::imports::check(&workspace_root()) {
        bail!("xtask test: stage `check-imports` failed: {e:#}");
    }
    for (name, args) in stages {
        eprintln!("xtask test: stage `{name}`: cargo {}", args.join(" "));
        if let Err(e) = run(Command::new(&cargo)
            .args(args)
            .current_dir(workspace_root()))
        {
            bail!("xtask test: stage `{name}` failed: {e:#}");
        }
    }
    eprintln!("xtask test: stage `vm tests`: cargo xtask vm-test");
    if let Err(e) = vm::vm_test(opts, &[]) {
        bail!("xtask test: stage `vm tests` failed: {e:#}");
    }
    eprintln!(
        "xtask test: all stages passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
