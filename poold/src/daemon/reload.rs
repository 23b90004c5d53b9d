//! `poolctl reload` and SIGHUP: re-read the config file, and apply the difference to the
//! running pools (added services start, removed ones drain and stop, changed ones are
//! reconfigured in place or rolled to a new generation).

use super::DaemonParts;
use crate::config::{Config, ConfigDiff};
use crate::control::server::Pools;
use crate::control::{ReloadError, ReloadReply, Reloader, ServiceReload};
use crate::supervisor::{PoolError, PoolHandle, PoolOptions, ServicePool};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

/// The daemon's side of a reload: what it runs now and how to start a pool.
#[derive(Debug)]
pub struct ConfigReloader {
    path: PathBuf,
    /// The config the pools run (held across a reload: one reload at a time).
    running: Mutex<Config>,
    pools: Pools,
    parts: DaemonParts,
    /// Pools of removed services, draining; awaited at shutdown.
    retiring: std::sync::Mutex<JoinSet<()>>,
}

impl ConfigReloader {
    pub fn new(path: PathBuf, running: Config, pools: Pools, parts: DaemonParts) -> Self {
        Self {
            path,
            running: Mutex::new(running),
            pools,
            parts,
            retiring: std::sync::Mutex::new(JoinSet::new()),
        }
    }

    /// Waits until every removed service's pool has stopped.
    pub async fn finish_retiring(&self) {
        let mut retiring = std::mem::take(&mut *self.retiring.lock().expect("retiring lock"));
        while retiring.join_next().await.is_some() {}
    }

    async fn apply(&self) -> Result<ReloadReply, ReloadError> {
        let mut running = self.running.lock().await;
        let new = Config::load(&self.path)?;
        let diff = ConfigDiff::between(&running, &new);
        if !diff.refused.is_empty() {
            return Err(ReloadError::Refused(diff.refused));
        }
        // Refused before anything changes: one rollout per service at a time.
        // (A scaled service is reconfigured too: its count comes back.)
        for pool in self.pools.snapshot() {
            let status = pool.status.borrow();
            let touched = status.scaled_from.is_some()
                || diff.changed.iter().any(|change| change.name == pool.name);
            if touched && status.rolling_out {
                return Err(ReloadError::InFlight(PoolError::RolloutInFlight {
                    service: pool.name.clone(),
                    generation: status.generation,
                }));
            }
        }
        let mut reply = ReloadReply::default();
        for name in &diff.removed {
            if let Some(pool) = self.pools.remove(name) {
                self.parts.metrics.untrack(name);
                info!(service = %name, "reload: service removed; draining and stopping it");
                self.retiring
                    .lock()
                    .expect("retiring lock")
                    .spawn(async move { pool.shutdown().await });
                reply.removed.push(name.clone());
            }
        }
        for service in diff.added {
            let service = Arc::new(service);
            let pool = self
                .parts
                .start_pool(service.clone())
                .await
                .map_err(|source| ReloadError::Start {
                    service: service.name.clone(),
                    source,
                })?;
            info!(service = %service.name, "reload: service added");
            self.pools.push(pool);
            reply.added.push(service.name.clone());
        }
        let changed: Vec<String> = diff.changed.iter().map(|c| c.name.clone()).collect();
        for change in diff.changed {
            let Some(pool) = self.pools.find(&change.name) else {
                continue;
            };
            let config = Arc::new(change.config);
            let roll = !change.rolling.is_empty();
            let generation = pool
                .reconfigure(config.clone(), roll)
                .await
                .map_err(|source| ReloadError::Pool {
                    service: change.name.clone(),
                    source,
                })?;
            self.parts.metrics.retrack(config);
            info!(service = %change.name, in_place = ?change.in_place, rolling = ?change.rolling, generation, "reload: service changed");
            reply.changed.push(ServiceReload {
                service: change.name,
                in_place: change.in_place,
                rolling: change.rolling,
                generation,
            });
        }
        // A `poolctl scale` lasts until the next reload, even one that leaves the service's
        // config as it was: the configured count comes back.
        for pool in self.pools.snapshot() {
            let scaled = pool.status.borrow().scaled_from.is_some();
            let Some(config) = new.services.iter().find(|s| s.name == pool.name) else {
                continue;
            };
            if !scaled || changed.contains(&pool.name) {
                continue;
            }
            let generation = pool
                .reconfigure(Arc::new(config.clone()), false)
                .await
                .map_err(|source| ReloadError::Pool {
                    service: pool.name.clone(),
                    source,
                })?;
            info!(service = %pool.name, workers = config.workers, "reload: scaled count back to the config's");
            reply.changed.push(ServiceReload {
                service: pool.name.clone(),
                in_place: vec!["workers".to_owned()],
                rolling: Vec::new(),
                generation,
            });
        }
        *running = new;
        Ok(reply)
    }
}

#[async_trait::async_trait]
impl Reloader for ConfigReloader {
    async fn reload(&self) -> Result<ReloadReply, ReloadError> {
        info!(config = %self.path.display(), "reloading the config");
        let result = self.apply().await;
        match &result {
            // Refused as a whole: nothing changed, poold runs on as before.
            Err(
                error @ (ReloadError::Invalid(_)
                | ReloadError::Refused(_)
                | ReloadError::InFlight(_)),
            ) => warn!(config = %self.path.display(), "reload refused: {error}"),
            Err(error) => error!(config = %self.path.display(), "reload failed part way: {error}"),
            Ok(_) => {}
        }
        result
    }
}

impl DaemonParts {
    /// Starts the pool of `service` with its metrics and readiness tracking.
    pub async fn start_pool(
        &self,
        service: Arc<crate::config::ServiceConfig>,
    ) -> Result<PoolHandle, crate::balancer::BalancerError> {
        let pool = ServicePool::start(
            service.clone(),
            self.runtime.clone(),
            self.balancer.clone(),
            self.health.clone(),
            PoolOptions {
                worker_capacity: self.worker_capacity,
                ..PoolOptions::default()
            },
            Arc::new(self.metrics.pool_metrics(&service.name)),
        )
        .await?;
        self.metrics.track(service, pool.status.clone());
        Ok(pool)
    }
}
