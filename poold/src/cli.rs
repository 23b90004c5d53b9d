//! Command lines of `poold` and `poolctl`; the binaries only call these.

use crate::config::Config;
use crate::control::client::ControlClient;
use crate::control::{render, DrainReply, DrainRequest, RecycleRequest};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "poold",
    version,
    about = "IPVS-fronted prefork container pool manager"
)]
pub struct PooldArgs {
    /// Run in the foreground with this config.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<PooldCommand>,
}

#[derive(Debug, Subcommand)]
pub enum PooldCommand {
    /// Validate a config file; list every problem and exit non-zero if there are any.
    Check { file: PathBuf },
}

/// `poold check FILE`
pub fn check(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            let host = crate::sandbox_runtime::host_problems(&config);
            if !host.is_empty() {
                let text = std::fs::read_to_string(file).unwrap_or_default();
                for (key, message) in host {
                    eprintln!(
                        "{}",
                        crate::config::ConfigIssue::at_key(&text, key, message).render(file)
                    );
                }
                return ExitCode::FAILURE;
            }
            for warning in config.warnings() {
                eprintln!("{}: warning: {warning}", file.display());
            }
            println!(
                "{}: ok ({} services)",
                file.display(),
                config.services.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; RUST_LOG overrides the config's log_level.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[derive(Debug, Parser)]
#[command(name = "poolctl", version, about = "Control a running poold")]
pub struct PoolctlArgs {
    /// poold's control socket.
    #[arg(
        long,
        global = true,
        default_value = "/run/poold/poold.sock",
        value_name = "PATH"
    )]
    pub socket: PathBuf,
    /// Machine-readable output (the API's JSON reply).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: PoolctlCommand,
}

#[derive(Debug, Subcommand)]
pub enum PoolctlCommand {
    /// Show services and workers.
    Status,
    /// Take a service (or with --all every service) out of the fleet: /ready answers 503 at
    /// once, the workers keep serving whatever still arrives.
    Drain {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        service: Option<String>,
        /// Every service of this poold (the whole host).
        #[arg(long)]
        all: bool,
        /// Return when no connection has been active for a settle period (2s).
        #[arg(long)]
        wait: bool,
        /// With --wait, give up after this long ("30s", "5m"; default 5m).
        #[arg(long, requires = "wait", value_name = "DURATION")]
        timeout: Option<crate::config::HumanDuration>,
    },
    /// Put drained services back into the fleet.
    Undrain {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        service: Option<String>,
        /// Every service of this poold.
        #[arg(long)]
        all: bool,
    },
    /// Replace workers of a service (surge: replacements first, then drain).
    Recycle {
        service: String,
        /// Only this slot.
        #[arg(long)]
        slot: Option<u32>,
        /// Return when the old workers are gone and the slots are ready again.
        #[arg(long)]
        wait: bool,
    },
}

pub async fn poolctl(args: PoolctlArgs) -> ExitCode {
    let client = ControlClient::new(&args.socket);
    let json = args.json;
    let result = match args.command {
        PoolctlCommand::Status => client.status().await.map(|services| {
            if json {
                pretty_json(&services)
            } else {
                render::status_table(&services)
            }
        }),
        PoolctlCommand::Drain {
            service,
            all: _,
            wait,
            timeout,
        } => {
            let request = DrainRequest {
                wait,
                timeout_secs: timeout.map(|t| t.get().as_secs_f64()),
            };
            client
                .drain(service.as_deref(), &request)
                .await
                .map(|reply| {
                    if json {
                        pretty_json(&reply)
                    } else {
                        drain_line(&reply)
                    }
                })
        }
        PoolctlCommand::Undrain { service, all: _ } => {
            client.undrain(service.as_deref()).await.map(|reply| {
                if json {
                    pretty_json(&reply)
                } else {
                    drain_line(&reply)
                }
            })
        }
        PoolctlCommand::Recycle {
            service,
            slot,
            wait,
        } => client
            .recycle(&service, &RecycleRequest { slot, wait })
            .await
            .map(|reply| {
                if json {
                    return pretty_json(&reply);
                }
                let verb = if reply.finished {
                    "recycled"
                } else {
                    "recycling"
                };
                format!("{}: {verb} slots {:?}", reply.service, reply.slots)
            }),
    };
    match result {
        Ok(text) => {
            // A closed pipe (`poolctl status --json | head`) is the reader's choice, not an
            // error worth a panic.
            use std::io::Write;
            let _ = writeln!(std::io::stdout().lock(), "{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("poolctl: {error}");
            ExitCode::FAILURE
        }
    }
}

fn pretty_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("API replies serialize")
}

fn drain_line(reply: &DrainReply) -> String {
    let verb = match (reply.drained, reply.settled) {
        (true, true) => "drained, no active connections",
        (true, false) => "drained (readiness 503)",
        (false, _) => "undrained (back in rotation)",
    };
    format!("{}: {verb}", reply.services.join(", "))
}

/// `poold --config FILE`: runs until SIGINT or SIGTERM.
pub async fn run_daemon(config: Config) -> Result<(), crate::daemon::DaemonError> {
    // First of all: a second poold with this state directory must not touch anything
    // (orphan cleanup would kill the running instance's workers).
    let daemon = &config.daemon;
    let group = daemon
        .control_group
        .as_deref()
        .map(crate::daemon::control_group)
        .transpose()?;
    // Members of control_group must be able to reach a socket kept in the state directory.
    let socket_group = group.filter(|_| daemon.control_socket.starts_with(&daemon.state_dir));
    let state = crate::state_dir::StateDir::open(&daemon.state_dir, socket_group)?;
    match crate::conn_limit::raise_nofile_limit() {
        Ok(limits) => crate::sandbox_runtime::set_worker_nofile(limits),
        Err(error) => tracing::warn!(%error, "raising RLIMIT_NOFILE failed"),
    }
    let runtime = Arc::new(crate::sandbox_runtime::SandboxRuntime::start(&config).await?);
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    let result = crate::daemon::run(config, runtime.clone(), shutdown).await;
    if let Err(error) = runtime.shutdown().await {
        tracing::warn!(%error, "removing the bridge or the cgroup parent failed");
    }
    state.release();
    result
}
