//! `cargo xtask`: project automation.
//!
//! - `vm-test`: build every workspace test binary, pack them into an initramfs together with
//!   busybox, the host tools and kernel modules the tests need, boot Debian's cloud kernel
//!   under qemu and run every test (ignored ones included) there.
//! - `vm-run`: the same VM, running one shell script from the repo instead (benchmarks).
//! - `check-imports`: poold's modules import one way only (the rule table is in imports.rs).
//! - `test`: the whole suite (fmt, check-imports, clippy, host tests, then `vm-test`).
//!
//! See tests/vm/README.md.

#![forbid(unsafe_code)]

mod artifacts;
mod image;
mod imports;
mod kernel;
mod prereq;
mod qemu;
mod suite;
mod test_images;
mod util;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "poold project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every workspace test (ignored ones included) inside a qemu VM with IPVS and cgroup v2.
    VmTest {
        /// Only run tests whose name contains this substring (libtest filter).
        #[arg(long)]
        filter: Option<String>,
        /// With --filter: match the test name exactly (libtest --exact).
        #[arg(long, requires = "filter")]
        exact: bool,
        #[command(flatten)]
        vm: vm::VmOptions,
        /// Extra arguments for every test binary (e.g. -- --nocapture).
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// Boot the test VM and run one shell script from the repo; its exit code decides success.
    VmRun {
        #[command(flatten)]
        vm: vm::VmOptions,
        /// Path of the script (run with busybox sh inside the VM, working directory = repo root).
        script: PathBuf,
        /// Arguments passed to the script.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build (when their recipe changed) the Debian images the real-image tests run.
    Images,
    /// Fails naming file:line where a poold module imports against the one-way direction.
    CheckImports,
    /// The whole test suite: fmt, check-imports, clippy, host tests, then the VM tests.
    Test {
        #[command(flatten)]
        vm: vm::VmOptions,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::VmTest {
            filter,
            exact,
            vm,
            test_args,
        } => {
            let mut args = test_args;
            if let Some(filter) = filter {
                args.push(filter);
                if exact {
                    args.push("--exact".into());
                }
            }
            vm::vm_test(&vm, &args)
        }
        Command::VmRun { vm, script, args } => vm::vm_run(&vm, &script, &args),
        Command::Images => test_images::ensure().map(|paths| {
            for path in paths {
                eprintln!("xtask: {}", path.display());
            }
        }),
        Command::CheckImports => imports::check(&util::workspace_root()),
        Command::Test { vm } => suite::run_suite(&vm),
    }
}
