use anyhow::Context;
use clap::{CommandFactory, Parser};
use poold::cli::{PooldArgs, PooldCommand};
use std::process::ExitCode;

fn main() -> anyhow::Result<ExitCode> {
    // Must come first: the sandbox re-executes this binary as the worker helper.
    poold::sandbox::maybe_run_helper();
    // Before any thread: the descriptors an upgrading poold handed over.
    poold::upgrade::take_inherited_from_env()?;
    let args = PooldArgs::parse();
    if let Some(PooldCommand::Check { file }) = &args.command {
        return Ok(poold::cli::check(file));
    }
    let Some(path) = args.config else {
        PooldArgs::command().print_help()?;
        return Ok(ExitCode::from(2));
    };
    // Before any thread: one malloc arena per CPU, not eight (memory held by idle arenas).
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    poold::sandbox::limit_malloc_arenas(cpus);
    let config = poold::config::Config::load(&path)?;
    poold::cli::init_logging(&config.daemon.log_level);
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(poold::cli::run_daemon(config, path))?;
    Ok(ExitCode::SUCCESS)
}
