//! Wiring of a running poold, and the only place where rooms are wired together: the state
//! directory lock, the sandbox runtime, the balancer choice, one pool per service with its
//! metrics observer, the metrics endpoint and the control socket.

use crate::balancer::ipvs::record::{remove_leftovers, ThisRun};
use crate::balancer::ipvs::{IpvsBalancer, IpvsLedger};
use crate::balancer::proxy::ProxyBalancer;
use crate::balancer::{Balancer, BalancerError};
use crate::config::{BalancerChoice, Config};
use crate::control::server::{self, Pools};
use crate::control::ControlError;
use crate::health::NetworkHealthChecker;
use crate::metrics::{Metrics, MetricsError};
use crate::runtime::sandbox::SandboxRuntime;
use crate::runtime::WorkerRuntime;
use crate::supervisor::PoolHandle;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{info, warn};

mod reload;

/// What every pool of this poold shares: how a reload starts a new one.
#[derive(Clone)]
pub struct DaemonParts {
    runtime: Arc<dyn WorkerRuntime>,
    balancer: Arc<dyn Balancer>,
    health: Arc<NetworkHealthChecker>,
    metrics: Metrics,
    /// How many workers `network.subnet` holds (a reload cannot change it).
    worker_capacity: u64,
}

impl std::fmt::Debug for DaemonParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonParts").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("balancer = \"ipvs\" but IPVS is not usable: {reason}")]
    IpvsUnavailable { reason: String },
    #[error("sandbox: {0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Balancer(#[from] BalancerError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    StateDir(#[from] crate::state_dir::StateDirError),
    #[error("daemon.control_group = {group:?}: {reason}")]
    ControlGroup { group: String, reason: String },
}

/// `poold --config FILE`: takes the state directory, starts the sandbox runtime and runs
/// every service until SIGINT or SIGTERM (SIGHUP re-reads `path`); then removes what the
/// runtime made.
pub async fn run_until_signal(config: Config, path: PathBuf) -> Result<(), DaemonError> {
    // First of all: a second poold with this state directory must not touch anything
    // (orphan cleanup would kill the running instance's workers).
    let daemon = &config.daemon;
    let group = daemon
        .control_group
        .as_deref()
        .map(control_group)
        .transpose()?;
    // Members of control_group must be able to reach a socket kept in the state directory.
    let socket_group = group.filter(|_| daemon.control_socket.starts_with(&daemon.state_dir));
    // After an upgrade: the previous poold's locked descriptor (never unlocked in between).
    let inherited_lock = crate::upgrade::take("lock").map(std::fs::File::from);
    let state = crate::state_dir::StateDir::open_inherited(
        &daemon.state_dir,
        socket_group,
        inherited_lock,
    )?;
    match crate::conn_limit::raise_nofile_limit() {
        Ok(limits) => crate::runtime::sandbox::set_worker_nofile(limits),
        Err(error) => warn!(%error, "raising RLIMIT_NOFILE failed"),
    }
    let runtime = Arc::new(SandboxRuntime::start(&config).await?);
    let result = run(
        config,
        path,
        runtime.clone(),
        runtime.clone(),
        stop_signals(),
        state.lock_fd(),
    )
    .await;
    if let (Err(error), true) = (&result, crate::upgrade::handover_pending()) {
        // Started by an upgrade that failed: the previous poold still owns the workers,
        // the bridge and the record; remove nothing.
        tracing::error!(%error, "upgrade: the new poold failed to start; the old one keeps running");
        std::process::exit(1);
    }
    if let Ok(Ended::HandedOver) = result {
        // The new poold owns the workers, the bridge, the record and the lock now: exit
        // without a destructor (they would tear down what it adopted, and unlocking the
        // shared lock description would unlock it for the new poold too).
        info!("upgrade: handed over; exiting");
        std::process::exit(0);
    }
    // What earlier runs left that this run kept (addresses its proxy listened on) or failed
    // to remove: no service runs any more.
    let left = runtime.left_by_earlier_runs();
    if !left.is_empty() {
        runtime.set_left_by_earlier_runs(remove_leftovers(&left, &ThisRun::default()).await);
    }
    if let Err(error) = runtime.shutdown().await {
        warn!(%error, "removing the bridge or the cgroup parent failed");
    }
    state.release();
    result.map(drop)
}

/// How [`run`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// A stop signal: every worker is stopped; remove the rest.
    Stopped,
    /// An upgrade: a new poold runs everything; leave it all.
    HandedOver,
}

/// Counts SIGINT and SIGTERM: the first stops poold gracefully, the second hurries it.
fn stop_signals() -> watch::Receiver<u32> {
    use tokio::signal::unix::{signal, SignalKind};
    let (count, signals) = watch::channel(0);
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            count.send_modify(|n| *n += 1);
        }
    });
    signals
}

/// What `poold check` can see on this host about `config` without changing anything.
pub fn host_problems(config: &Config) -> Vec<(crate::config::KeyPath, String)> {
    crate::runtime::sandbox::host_problems(config)
}

/// Host settings poold changes at start for `config` (`poold check` prints them).
pub fn host_notes(config: &Config) -> Vec<String> {
    crate::runtime::sandbox::host_notes(config)
}

/// The gid of `daemon.control_group` (a group name or a number).
pub fn control_group(group: &str) -> Result<nix::unistd::Gid, DaemonError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(gid));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid),
        Ok(None) => Err(DaemonError::ControlGroup {
            group: group.to_owned(),
            reason: "no such group".to_owned(),
        }),
        Err(errno) => Err(DaemonError::ControlGroup {
            group: group.to_owned(),
            reason: errno.to_string(),
        }),
    }
}

/// Picks the balancer for `config`: "auto" means IPVS when the kernel has it and no
/// service listens on loopback (which IPVS cannot serve), else the proxy, loudly. IPVS
/// records what it makes in the kernel to `ledger`.
pub async fn choose_balancer(
    config: &Config,
    ledger: Arc<dyn IpvsLedger>,
) -> Result<Arc<dyn Balancer>, DaemonError> {
    let proxy = || Arc::new(ProxyBalancer::new());
    match config.daemon.balancer {
        BalancerChoice::Proxy => Ok(proxy()),
        BalancerChoice::Ipvs => match IpvsBalancer::with_upstream(config.daemon.upstream).await {
            Ok(ipvs) => Ok(Arc::new(ipvs.recording_to(ledger))),
            Err(error) => Err(DaemonError::IpvsUnavailable {
                reason: error.to_string(),
            }),
        },
        BalancerChoice::Auto => {
            if let Some(service) = config.services.iter().find(|s| s.listen.ip().is_loopback()) {
                warn!(
                    service = %service.name, listen = %service.listen,
                    "balancer = \"auto\": a loopback listen address cannot be an IPVS virtual service; \
                     using the in-process proxy for every service"
                );
                return Ok(proxy());
            }
            match IpvsBalancer::new().await {
                Ok(ipvs) => Ok(Arc::new(ipvs.recording_to(ledger))),
                Err(error) => {
                    warn!(
                        %error,
                        "balancer = \"auto\": IPVS is NOT available; falling back to the in-process \
                         proxy (userspace, slower); set balancer = \"proxy\" to silence this"
                    );
                    Ok(proxy())
                }
            }
        }
    }
}

/// Runs every service until the first stop signal counted by `signals`, then drains and
/// stops every worker; a second signal cuts the waits short (shutdown_delay, drains).
async fn run(
    config: Config,
    path: PathBuf,
    runtime: Arc<dyn WorkerRuntime>,
    ledger: Arc<dyn IpvsLedger>,
    signals: watch::Receiver<u32>,
    lock_fd: std::os::fd::RawFd,
) -> Result<Ended, DaemonError> {
    for warning in config.warnings() {
        warn!("{warning}");
    }
    let control_connections = crate::conn_limit::ConnLimiter::new(
        "control",
        server::CONTROL_MAX_CONNECTIONS,
        server::CONTROL_MIN_IDLE,
        0,
    );
    let control_options = server::ServeOptions {
        limiter: Some(control_connections.clone()),
        group: config
            .daemon
            .control_group
            .as_deref()
            .map(control_group)
            .transpose()?,
    };
    let balancer = choose_balancer(&config, ledger.clone()).await?;
    let this_run = ThisRun::new(&config.services, balancer.kind());
    info!(balancer = %balancer.kind(), services = config.services.len(), "poold starting");
    let health = Arc::new(NetworkHealthChecker);
    let metrics = Metrics::new(balancer.kind());
    // Bound before any worker starts, so a taken port fails fast; dropped (stopped) on return.
    let metrics_server =
        crate::metrics::serve(config.daemon.metrics_listen, metrics.clone()).await?;
    let parts = DaemonParts {
        runtime,
        balancer,
        health,
        metrics,
        worker_capacity: crate::config::worker_capacity(config.network.subnet),
    };
    let mut pools: Vec<PoolHandle> = Vec::new();
    for service in &config.services {
        match parts.start_pool(Arc::new(service.clone())).await {
            Ok(pool) => pools.push(pool),
            Err(error) => {
                // At an upgrade the workers are the previous poold's: stop none of them.
                if !crate::upgrade::handover_pending() {
                    for pool in &pools {
                        pool.shutdown().await;
                    }
                }
                return Err(error.into());
            }
        }
    }
    // What an earlier run left of services no longer configured: once every pool took its own.
    tokio::spawn(retire_removed_services(
        parts.runtime.clone(),
        ledger,
        this_run,
    ));
    let pools = Pools::new(pools);
    let reloader = Arc::new(reload::ConfigReloader::new(
        path,
        config.clone(),
        pools.clone(),
        parts.clone(),
    ));
    let (upgrader, mut upgrades) = tokio::sync::mpsc::channel(1);
    let pools = pools
        .with_reloader(reloader.clone())
        .with_upgrader(upgrader.clone());
    let hangup = tokio::spawn(reload_on_sighup(reloader.clone()));
    let user2 = tokio::spawn(upgrade_on_sigusr2(upgrader));
    let nth_signal = |n: u32| {
        let mut signals = signals.clone();
        async move {
            // The sender lives as long as the process: an error cannot happen.
            let _ = signals.wait_for(|count| *count >= n).await;
        }
    };
    let mut control = {
        let socket = config.daemon.control_socket.clone();
        let pools = pools.clone();
        let stop = nth_signal(1);
        tokio::spawn(async move { server::serve(&socket, pools, control_options, stop).await })
    };
    let served = loop {
        tokio::select! {
            served = &mut control => break served.unwrap_or(Ok(())),
            Some(reply) = upgrades.recv() => {
                let mut fds = parts.balancer.handoff_listeners();
                fds.push(("metrics".to_owned(), metrics_server.listener().as_raw_fd()));
                fds.push(("lock".to_owned(), lock_fd));
                match hand_over(&pools.snapshot(), &*parts.runtime, fds).await {
                    Ok(new_pid) => {
                        crate::service_manager::main_pid(new_pid);
                        let _ = reply.send(Ok(crate::control::UpgradeReply {
                            old_pid: std::process::id(),
                            new_pid,
                        }));
                        let drain = config.services.iter().map(|s| s.recycle.drain_timeout.get()).max();
                        finish_hand_over(&parts, &control_connections, drain.unwrap_or_default()).await;
                        return Ok(Ended::HandedOver);
                    }
                    Err(error) => {
                        warn!(%error, "upgrade failed");
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
            }
        }
    };
    user2.abort();
    hangup.abort();
    info!("shutting down: draining every service (a second SIGTERM or Ctrl-C hurries it)");
    crate::service_manager::stopping();
    let pools = pools.snapshot();
    let hurry = {
        let pools = pools.clone();
        let second = nth_signal(2);
        tokio::spawn(async move {
            second.await;
            info!("second stop signal: hurrying the shutdown (open connections are cut)");
            for pool in &pools {
                pool.hurry_shutdown().await;
            }
        })
    };
    // Upstream balancers see 503 on /ready before any worker loses its weight.
    for pool in &pools {
        let _ = pool.drain_for_shutdown().await;
    }
    let delay = config.daemon.shutdown_delay.get();
    if !delay.is_zero() {
        info!(delay = %config.daemon.shutdown_delay, "readiness 503; serving on until upstream checks notice");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = nth_signal(2) => {}
        }
    }
    // All at once: every service stops taking connections before any one finishes draining.
    futures::future::join_all(pools.iter().map(PoolHandle::shutdown)).await;
    hurry.abort();
    reloader.finish_retiring().await;
    served.map(|()| Ended::Stopped).map_err(Into::into)
}

/// Stops the adopted workers of services the config no longer has, then removes the IPVS
/// services and addresses earlier runs recorded that this run does not use.
async fn retire_removed_services(
    runtime: Arc<dyn WorkerRuntime>,
    ledger: Arc<dyn IpvsLedger>,
    this_run: ThisRun,
) {
    runtime.stop_unclaimed().await;
    let recorded = ledger.left_by_earlier_runs();
    if !recorded.is_empty() {
        ledger.set_left_by_earlier_runs(remove_leftovers(&recorded, &this_run).await);
    }
}

/// The old side of an upgrade: freezes every pool, execs the new poold with `fds` and
/// waits until it is ready. On failure the pools thaw and nothing has changed.
async fn hand_over(
    pools: &[PoolHandle],
    runtime: &dyn WorkerRuntime,
    fds: Vec<(String, std::os::fd::RawFd)>,
) -> Result<u32, crate::upgrade::UpgradeError> {
    info!("upgrade: freezing every pool and starting the new poold");
    let mut thaw = Vec::new();
    for pool in pools {
        thaw.extend(pool.freeze().await);
    }
    // The new poold adopts what the record names: no write of ours may be pending.
    runtime.flush_record().await;
    let started = crate::upgrade::exec_new(fds).await;
    match &started {
        Ok(pid) => {
            info!(
                new_pid = pid,
                "upgrade: the new poold is ready; handing over"
            );
            // Never thawed: this process only finishes its connections now.
            std::mem::forget(thaw);
        }
        Err(_) => drop(thaw),
    }
    started
}

/// After the new poold reported ready: stop accepting (the sockets stay open in the new
/// one), stop reading worker output, let the clients this process holds finish (at most
/// `drain`, the longest drain timeout), including the poolctl that asked.
async fn finish_hand_over(
    parts: &DaemonParts,
    control: &crate::conn_limit::ConnLimiter,
    drain: std::time::Duration,
) {
    parts.balancer.stop_accepting_all();
    parts.runtime.detach_output();
    let deadline = tokio::time::Instant::now() + drain;
    loop {
        let open = parts.balancer.open_connections() + control.open() as u64;
        if open == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(open, "upgrade: drain timeout; closing the connections left");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// SIGUSR2 means `poolctl upgrade`; the outcome is logged.
async fn upgrade_on_sigusr2(upgrader: crate::control::Upgrader) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut user2) = signal(SignalKind::user_defined2()) else {
        warn!("no SIGUSR2 handler: upgrade only through poolctl");
        return;
    };
    while user2.recv().await.is_some() {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if upgrader.send(reply).await.is_err() {
            return;
        }
        if let Ok(Err(error)) = answer.await {
            warn!(%error, "SIGUSR2 upgrade failed; still running");
        }
    }
}

/// SIGHUP means `poolctl reload`; the outcome is logged (by the reloader).
async fn reload_on_sighup(reloader: Arc<reload::ConfigReloader>) {
    use crate::control::Reloader;
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        warn!("no SIGHUP handler: reload only through poolctl");
        return;
    };
    while hangup.recv().await.is_some() {
        let _ = reloader.reload().await;
    }
}
