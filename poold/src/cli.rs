//! Command lines of `poold` and `poolctl`: parse arguments, call daemon.rs or the control
//! client, print. The binaries only call these; nothing is wired here.

use crate::config::Config;
use crate::control::client::ControlClient;
use crate::control::{
    render, ControlError, DeployRequest, DrainReply, DrainRequest, RecycleRequest, ReloadReply,
};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

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
            for note in crate::daemon::host_notes(&config) {
                eprintln!("{}: note: {note}", file.display());
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
    /// Show services and workers (memory against the limit, CPU, recycles, drained).
    Status {
        /// Only this service.
        service: Option<String>,
    },
    /// Take a service (or with --all every service) out of the fleet: /ready answers 503 at
    /// once, the workers keep serving whatever still arrives. SERVICE/SLOT takes that one
    /// worker out of rotation (weight 0, kept alive for inspection, not replaced).
    Drain {
        #[arg(
            required_unless_present = "all",
            conflicts_with = "all",
            value_name = "SERVICE[/SLOT]"
        )]
        service: Option<Target>,
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
    /// Put drained services (or one drained slot, SERVICE/SLOT) back into the fleet.
    Undrain {
        #[arg(
            required_unless_present = "all",
            conflicts_with = "all",
            value_name = "SERVICE[/SLOT]"
        )]
        service: Option<Target>,
        /// Every service of this poold.
        #[arg(long)]
        all: bool,
    },
    /// Replace workers of a service (surge: replacements first, then drain).
    Recycle {
        #[arg(value_name = "SERVICE[/SLOT]")]
        service: Target,
        /// Only this slot (same as SERVICE/SLOT).
        #[arg(long)]
        slot: Option<u32>,
        /// Return when the old workers are gone and the slots are ready again.
        #[arg(long)]
        wait: bool,
    },
    /// Re-read poold's config file and apply the difference (as SIGHUP does): a bad file
    /// or a change that needs a restart changes nothing.
    Reload,
    /// Exec a fresh poold from the same path (as SIGUSR2 does): it takes over the listening
    /// sockets and the workers; this one finishes its connections and exits. A new binary
    /// that fails to start changes nothing.
    Upgrade,
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
    /// Change how many workers a service runs, until the next reload (more start at once;
    /// fewer drain the highest slots before stopping them).
    Scale {
        service: String,
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        workers: u32,
    },
}

/// `SERVICE` or `SERVICE/SLOT` on poolctl's command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub slot: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?}: expected SERVICE or SERVICE/SLOT with SLOT a number from 0")]
pub struct BadTarget(String);

impl FromStr for Target {
    type Err = BadTarget;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadTarget(text.to_owned());
        match text.split_once('/') {
            None if !text.is_empty() => Ok(Self {
                service: text.to_owned(),
                slot: None,
            }),
            Some((service, slot)) if !service.is_empty() => Ok(Self {
                service: service.to_owned(),
                slot: Some(slot.parse().map_err(|_| bad())?),
            }),
            _ => Err(bad()),
        }
    }
}

/// A mistake on the command line clap cannot see.
fn usage_error(message: String) -> ControlError {
    ControlError::Api {
        status: 400,
        message,
    }
}

pub async fn poolctl(args: PoolctlArgs) -> ExitCode {
    let client = ControlClient::new(&args.socket);
    let json = args.json;
    let result = match args.command {
        PoolctlCommand::Status { service } => client.status().await.and_then(|mut services| {
            if let Some(name) = service {
                services.retain(|s| s.name == name);
                if services.is_empty() {
                    return Err(ControlError::Api {
                        status: 404,
                        message: format!("no service named {name:?}"),
                    });
                }
            }
            Ok(output(json, render::status_table(&services), &services))
        }),
        PoolctlCommand::Drain {
            service:
                Some(Target {
                    service,
                    slot: Some(slot),
                }),
            wait,
            ..
        } => {
            if wait {
                Err(usage_error(format!(
                    "drain {service}/{slot}: --wait is for a whole service; a drained worker \
                     keeps its connections until they end"
                )))
            } else {
                client.drain_slot(&service, slot, true).await.map(|reply| {
                    let text = format!(
                        "{}/{}: worker {} drained (weight 0, kept alive, no replacement)",
                        reply.service, reply.slot, reply.worker
                    );
                    output(json, text, &reply)
                })
            }
        }
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
            let service = service.map(|target| target.service);
            let call = client.drain(service.as_deref(), &request);
            let reply = if wait && !json {
                with_progress(&client, service.as_deref(), Waiting::Drain, call).await
            } else {
                call.await
            };
            reply.map(|reply| output(json, drain_line(&reply), &reply))
        }
        PoolctlCommand::Undrain {
            service:
                Some(Target {
                    service,
                    slot: Some(slot),
                }),
            ..
        } => client.drain_slot(&service, slot, false).await.map(|reply| {
            let text = format!(
                "{}/{}: worker {} undrained (back in rotation)",
                reply.service, reply.slot, reply.worker
            );
            output(json, text, &reply)
        }),
        PoolctlCommand::Undrain { service, all: _ } => {
            let service = service.map(|target| target.service);
            client
                .undrain(service.as_deref())
                .await
                .map(|reply| output(json, drain_line(&reply), &reply))
        }
        PoolctlCommand::Recycle {
            service: target,
            slot,
            wait,
        } => match (target.slot, slot) {
            (Some(a), Some(b)) if a != b => Err(usage_error(format!(
                "recycle {}/{a} --slot {b}: two different slots",
                target.service
            ))),
            (path_slot, flag_slot) => {
                let request = RecycleRequest {
                    slot: path_slot.or(flag_slot),
                    wait,
                };
                let call = client.recycle(&target.service, &request);
                let reply = if wait && !json {
                    let waiting = Waiting::Recycle(request.slot);
                    with_progress(&client, Some(&target.service), waiting, call).await
                } else {
                    call.await
                };
                reply.map(|reply| {
                    let verb = if reply.finished {
                        "recycled"
                    } else {
                        "recycling"
                    };
                    let text = format!("{}: {verb} slots {:?}", reply.service, reply.slots);
                    output(json, text, &reply)
                })
            }
        },
        PoolctlCommand::Scale { service, workers } => {
            client.scale(&service, workers).await.map(|reply| {
                let lasts = if reply.to == reply.configured {
                    "the configured count".to_owned()
                } else {
                    format!("configured {}; until the next reload", reply.configured)
                };
                let text = format!(
                    "{}: scaled from {} to {} workers ({lasts})",
                    reply.service, reply.from, reply.to
                );
                output(json, text, &reply)
            })
        }
        PoolctlCommand::Upgrade => client.upgrade().await.map(|reply| {
            let text = format!(
                "upgraded: poold pid {} handed over to pid {}",
                reply.old_pid, reply.new_pid
            );
            output(json, text, &reply)
        }),
        PoolctlCommand::Reload => client
            .reload()
            .await
            .map(|reply| output(json, reload_lines(&reply), &reply)),
        PoolctlCommand::Deploy {
            service,
            rootfs,
            wait,
        } => client
            .deploy(&service, &DeployRequest { rootfs, wait })
            .await
            .map(|reply| {
                let verb = if reply.finished {
                    "deployed"
                } else {
                    "deploying"
                };
                let text = format!("{}: {verb} generation {}", reply.service, reply.generation);
                output(json, text, &reply)
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

/// What poolctl prints of a reply: `text`, or the reply's JSON with `--json`.
fn output(json: bool, text: String, reply: &impl serde::Serialize) -> String {
    if json {
        serde_json::to_string_pretty(reply).expect("API replies serialize")
    } else {
        text
    }
}

/// What a `--wait` is waiting for, for its progress lines.
#[derive(Clone, Copy, Debug)]
enum Waiting {
    /// Of one slot (its workers only) or of the whole service.
    Recycle(Option<u32>),
    Drain,
}

/// Runs `call` and, until it answers, polls status and prints what changes: which worker,
/// which step, since when. On a terminal a last line counts the seconds in place; plain
/// lines otherwise (logs, pipes).
async fn with_progress<T>(
    client: &ControlClient,
    service: Option<&str>,
    waiting: Waiting,
    call: impl std::future::Future<Output = Result<T, ControlError>>,
) -> Result<T, ControlError> {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    let started = tokio::time::Instant::now();
    let mut call = std::pin::pin!(call);
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(500));
    let mut shown: Option<Vec<String>> = None;
    loop {
        tokio::select! {
            result = &mut call => {
                if terminal {
                    print!("\r\x1b[K");
                }
                return result;
            }
            _ = poll.tick() => {}
        }
        let Ok(mut services) = client.status().await else {
            continue;
        };
        if let Some(name) = service {
            services.retain(|s| s.name == name);
        }
        let steps = match waiting {
            Waiting::Recycle(slot) => {
                for service in &mut services {
                    service.workers.retain(|w| slot.is_none_or(|n| w.slot == n));
                }
                render::recycle_steps(&services)
            }
            Waiting::Drain => render::drain_steps(&services),
        };
        let elapsed = started.elapsed().as_secs_f64();
        let mut out = std::io::stdout().lock();
        if terminal {
            let _ = write!(out, "\r\x1b[K");
        }
        for step in render::new_steps(shown.as_deref(), &steps) {
            let _ = writeln!(out, "{elapsed:>6.1}s  {step}");
        }
        if terminal {
            let _ = write!(out, "{elapsed:>6.1}s  waiting...");
        }
        let _ = out.flush();
        shown = Some(steps);
    }
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
