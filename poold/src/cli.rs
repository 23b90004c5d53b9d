//! Command lines of `poold` and `poolctl`: parse arguments, call daemon.rs or the control
//! client, print. The binaries only call these; nothing is wired here.

use crate::config::Config;
use crate::control::client::ControlClient;
use crate::control::{
    render, DeployRequest, DrainReply, DrainRequest, RecycleRequest, ReloadReply,
};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(test)]
mod tests;

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
            let host = crate::daemon::host_problems(&config);
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

/// `poold --config FILE`: runs until SIGINT or SIGTERM.
pub async fn run_daemon(
    config: Config,
    path: std::path::PathBuf,
) -> Result<(), crate::daemon::DaemonError> {
    crate::daemon::run_until_signal(config, path).await
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
    /// Re-read poold's config file and apply the difference (as SIGHUP does): a bad file
    /// or a change that needs a restart changes nothing.
    Reload,
    /// Replace every worker of a service with one on another root file system, one at a
    /// time, surge first; the first failure rolls the replaced workers back. Lasts until
    /// the next reload.
    Deploy {
        service: String,
        /// "host", a directory or a .tar/.tar.gz/.tgz archive (absolute path).
        #[arg(long, value_name = "PATH")]
        rootfs: String,
        /// Return when every worker runs the new root, or fail when it was rolled back.
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
        PoolctlCommand::Reload => client.reload().await.map(|reply| {
            if json {
                pretty_json(&reply)
            } else {
                reload_lines(&reply)
            }
        }),
        PoolctlCommand::Deploy {
            service,
            rootfs,
            wait,
        } => client
            .deploy(&service, &DeployRequest { rootfs, wait })
            .await
            .map(|reply| {
                if json {
                    return pretty_json(&reply);
                }
                let verb = if reply.finished {
                    "deployed"
                } else {
                    "deploying"
                };
                format!("{}: {verb} generation {}", reply.service, reply.generation)
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

fn reload_lines(reply: &ReloadReply) -> String {
    let mut lines = Vec::new();
    for name in &reply.added {
        lines.push(format!("{name}: added"));
    }
    for name in &reply.removed {
        lines.push(format!("{name}: removed (draining)"));
    }
    for change in &reply.changed {
        let mut line = format!("{}: generation {}", change.service, change.generation);
        if !change.in_place.is_empty() {
            line.push_str(&format!(
                "; changed in place: {}",
                change.in_place.join(", ")
            ));
        }
        if !change.rolling.is_empty() {
            line.push_str(&format!(
                "; rolling every worker for: {}",
                change.rolling.join(", ")
            ));
        }
        lines.push(line);
    }
    if lines.is_empty() {
        lines.push("reloaded: nothing changed".to_owned());
    }
    lines.join("\n")
}

fn drain_line(reply: &DrainReply) -> String {
    let verb = match (reply.drained, reply.settled) {
        (true, true) => "drained, no active connections",
        (true, false) => "drained (readiness 503)",
        (false, _) => "undrained (back in rotation)",
    };
    format!("{}: {verb}", reply.services.join(", "))
}
