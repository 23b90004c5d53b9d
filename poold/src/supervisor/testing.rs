//! The shared test harness: one pool on the fakes that sit next to their traits
//! (`runtime/fake.rs`, `balancer/fake.rs`, `health/fake.rs`), used by the supervisor's,
//! the metrics' and the control API's tests.

use super::{
    NoObserver, PoolHandle, PoolObserver, PoolOptions, ServicePool, ServiceStatus, WorkerState,
    WorkerStatus,
};
use crate::balancer::fake::FakeBalancer;
use crate::config::ServiceConfig;
use crate::health::fake::FakeHealth;
use crate::runtime::fake::FakeRuntime;
use std::sync::Arc;
use std::time::Duration;

/// A one-service config named `web` with `workers` workers; `extra` is appended TOML (for
/// example `[service.recycle]` settings).
pub fn web_service(workers: u32, extra: &str) -> ServiceConfig {
    let text = format!(
        "[[service]]\nname = \"web\"\nlisten = \"10.212.0.1:80\"\nworkers = {workers}\nport = 8080\n\
         rootfs = \"host\"\ncommand = [\"/bin/app\"]\n{extra}"
    );
    crate::config::Config::parse(&text, std::path::Path::new("test.toml"))
        .unwrap()
        .services
        .remove(0)
}

/// A running pool and the fakes under it.
pub struct Harness {
    pub runtime: FakeRuntime,
    pub balancer: FakeBalancer,
    pub health: FakeHealth,
    pub pool: PoolHandle,
}

/// How to start a [`Harness`]: paused-time defaults (tick 500 ms, drain settle 1 s, a
/// fixed seed) and no observer unless told otherwise.
pub struct HarnessBuilder {
    config: ServiceConfig,
    options: PoolOptions,
    observer: Arc<dyn PoolObserver>,
    runtime: Option<FakeRuntime>,
    balancer: Option<FakeBalancer>,
    spawn_delay: Option<Duration>,
}

impl HarnessBuilder {
    /// The harness's default options, to change one.
    pub fn options_default(&self) -> PoolOptions {
        self.options.clone()
    }

    pub fn options(mut self, options: PoolOptions) -> Self {
        self.options = options;
        self
    }

    pub fn observer(mut self, observer: Arc<dyn PoolObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Runs on this runtime (e.g. [`FakeRuntime::restarted`]) instead of a fresh one.
    pub fn runtime(mut self, runtime: FakeRuntime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Runs on this balancer (e.g. a kernel table an earlier run left) instead of a fresh one.
    pub fn balancer(mut self, balancer: FakeBalancer) -> Self {
        self.balancer = Some(balancer);
        self
    }

    /// Every spawn takes this long (default: none).
    pub fn spawn_delay(mut self, delay: Duration) -> Self {
        self.spawn_delay = Some(delay);
        self
    }

    pub async fn start(self) -> Harness {
        let runtime = self.runtime.unwrap_or_default();
        runtime.state().spawn_delay = self.spawn_delay;
        let balancer = self
            .balancer
            .unwrap_or_else(|| FakeBalancer::new(self.config.workers as usize));
        let health = FakeHealth::default();
        let pool = ServicePool::start(
            Arc::new(self.config),
            Arc::new(runtime.clone()),
            Arc::new(balancer.clone()),
            Arc::new(health.clone()),
            self.options,
            self.observer,
        )
        .await
        .unwrap();
        Harness {
            runtime,
            balancer,
            health,
            pool,
        }
    }
}

impl Harness {
    pub fn builder(config: ServiceConfig) -> HarnessBuilder {
        HarnessBuilder {
            config,
            options: PoolOptions {
                tick: Duration::from_millis(500),
                drain_settle: Duration::from_secs(1),
                seed: 7,
                worker_capacity: u64::MAX,
                ..PoolOptions::default()
            },
            observer: Arc::new(NoObserver),
            runtime: None,
            balancer: None,
            spawn_delay: None,
        }
    }

    /// A pool on the fakes with the default options and no observer.
    pub async fn start(config: ServiceConfig) -> Self {
        Self::builder(config).start().await
    }

    pub fn status(&self) -> ServiceStatus {
        self.pool.status.borrow().clone()
    }

    pub fn workers_in(&self, state: WorkerState) -> Vec<WorkerStatus> {
        self.status()
            .workers
            .into_iter()
            .filter(|w| w.state == state)
            .collect()
    }

    pub fn ready_worker(&self, slot: u32) -> WorkerStatus {
        self.workers_in(WorkerState::Ready)
            .into_iter()
            .find(|w| w.slot == slot)
            .expect("slot has a ready worker")
    }
}

/// Lets paused time run for `secs` seconds.
pub async fn wait(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}
