//! The probes as one Pingora background service: each probed group's `HealthCheckService`
//! (pingora-load-balancing) runs its registry's checks every `interval`, all origins of the
//! group in parallel.
//!
//! **No traffic before the first probe.** Pingora starts every backend healthy, so a dead
//! origin would be picked until its first check. This service therefore reports itself
//! ready only when every group has finished its first round, and the proxy does not
//! accept connections before that: under Pingora's `Server` the proxy service depends on
//! this one (`ServiceHandle::add_dependency`), and [`crate::server::serve_node`] waits for
//! the same signal. The first round takes at most the longest probe `timeout`.
//!
//! The probes belong to one [`OriginPool`], that is one configuration snapshot. Reload is
//! not there yet; when it comes, it must start the new pool's probes, wait for their first
//! round, swap the snapshot, then stop the old pool's probes (its own shutdown watch).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;
use pingora_load_balancing::{HealthCheckService, HealthRegistry};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::OriginPool;

/// Every probed group's probe loop.
pub struct HealthProbes {
    groups: Vec<(String, Arc<HealthCheckService>)>,
}

impl HealthProbes {
    pub fn new(pool: &OriginPool) -> HealthProbes {
        let groups = pool
            .probed_registries()
            .map(|(name, registry, interval)| {
                let mut service = HealthCheckService::new(registry);
                service.health_check_frequency = Some(interval.max(Duration::from_millis(1)));
                service.parallel_health_check = true;
                (name.to_string(), Arc::new(service))
            })
            .collect();
        HealthProbes { groups }
    }

    /// Adds one more registry to probe (the shields, `crate::tier`), the same way.
    pub fn add(&mut self, name: &str, registry: Arc<HealthRegistry>, interval: Duration) {
        let mut service = HealthCheckService::new(registry);
        service.health_check_frequency = Some(interval.max(Duration::from_millis(1)));
        service.parallel_health_check = true;
        self.groups.push((name.to_string(), Arc::new(service)));
    }

    /// Runs every group's probes until `shutdown`; `ready` fires once each group has
    /// finished its first round.
    pub async fn run(&self, shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        let mut loops = JoinSet::new();
        let mut first_rounds = Vec::with_capacity(self.groups.len());
        for (name, service) in &self.groups {
            let (done, first_round) = watch::channel(false);
            first_rounds.push(first_round);
            let service = service.clone();
            let shutdown = shutdown.clone();
            let name = name.clone();
            loops.spawn(async move {
                service
                    .run(shutdown, Some(ServiceReadyNotifier::new(done)))
                    .await;
                log::debug!("origin group {name}: probes stopped");
            });
        }
        for mut first_round in first_rounds {
            // The notifier also fires if its loop ends early, so this never hangs.
            let _ = first_round.wait_for(|done| *done).await;
        }
        if !self.groups.is_empty() {
            log::info!("first health probe round finished");
        }
        ready.notify_ready();
        while loops.join_next().await.is_some() {}
    }
}

#[async_trait]
impl BackgroundService for HealthProbes {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready_notifier: ServiceReadyNotifier,
    ) {
        self.run(shutdown, ready_notifier).await;
    }

    async fn start(&self, shutdown: ShutdownWatch) {
        let (ready, _) = watch::channel(false);
        self.run(shutdown, ServiceReadyNotifier::new(ready)).await;
    }
}
