//! Origin selection for origin groups, on pingora-load-balancing.
//!
//! Front Door's order: enabled origins only; healthy ones first; the lowest `priority`
//! value; weighted round-robin inside that priority. When every origin of a group is
//! unhealthy, traffic goes to all of them (and that is logged once per transition).
//! Each priority level is one pingora `LoadBalancer<RoundRobin>` (weighted by `weight`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use crate::config::model::{Origin, OriginGroup};

/// The index of an origin in its group, carried in each `Backend`'s extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OriginIndex(usize);

/// Every origin group's balancers.
pub struct OriginPool {
    groups: Vec<GroupBalancer>,
}

struct GroupBalancer {
    origins: Vec<Origin>,
    /// Priority levels, lowest value (most preferred) first.
    levels: Vec<LoadBalancer<RoundRobin>>,
    all_unhealthy: AtomicBool,
    name: String,
}

/// The origin chosen for one attempt.
#[derive(Debug, Clone)]
pub struct Chosen<'p> {
    pub index: usize,
    pub origin: &'p Origin,
}

/// Bound on the round-robin walk when skipping unhealthy or already-tried origins.
const MAX_ITERATIONS: usize = 256;

impl OriginPool {
    pub fn new(groups: &[OriginGroup]) -> OriginPool {
        OriginPool {
            groups: groups.iter().map(GroupBalancer::new).collect(),
        }
    }

    /// Picks an origin of `group` not in `tried`, or `None` when every one was tried.
    pub fn select(&self, group: usize, tried: &[SocketAddr]) -> Option<Chosen<'_>> {
        let group = &self.groups[group];
        let fresh = |backend: &Backend| {
            backend
                .addr
                .as_inet()
                .is_none_or(|addr| !tried.contains(addr))
        };
        for level in &group.levels {
            if let Some(backend) =
                level.select_with(b"", MAX_ITERATIONS, |b, healthy| healthy && fresh(b))
            {
                group.note_health(true);
                return group.chosen(&backend);
            }
        }
        // Nothing healthy is left: Front Door sends traffic to every origin.
        group.note_health(false);
        group
            .levels
            .iter()
            .find_map(|level| level.select_with(b"", MAX_ITERATIONS, |b, _| fresh(b)))
            .and_then(|backend| group.chosen(&backend))
    }
}

impl GroupBalancer {
    fn new(group: &OriginGroup) -> GroupBalancer {
        let mut priorities: Vec<u32> = group
            .origins
            .iter()
            .filter(|o| o.enabled)
            .map(|o| o.priority)
            .collect();
        priorities.sort_unstable();
        priorities.dedup();
        let levels = priorities
            .iter()
            .map(|&priority| {
                let backends: BTreeSet<Backend> = group
                    .origins
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.enabled && o.priority == priority)
                    .map(|(index, origin)| {
                        let mut backend = Backend {
                            addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(
                                origin.address,
                            ),
                            weight: origin.weight as usize,
                            ext: Default::default(),
                        };
                        backend.ext.insert(OriginIndex(index));
                        backend
                    })
                    .collect();
                let balancer = LoadBalancer::from_backends(Backends::new(Static::new(backends)));
                // Static discovery completes at once; this fills the selector.
                let _ = balancer.update().now_or_never();
                balancer
            })
            .collect();
        GroupBalancer {
            origins: group.origins.clone(),
            levels,
            all_unhealthy: AtomicBool::new(false),
            name: group.name.clone(),
        }
    }

    fn chosen(&self, backend: &Backend) -> Option<Chosen<'_>> {
        let OriginIndex(index) = *backend.ext.get::<OriginIndex>()?;
        Some(Chosen {
            index,
            origin: &self.origins[index],
        })
    }

    /// Logs the moment a group loses (or regains) every healthy origin, once per transition.
    fn note_health(&self, some_healthy: bool) {
        let was_all_unhealthy = self.all_unhealthy.swap(!some_healthy, Ordering::Relaxed);
        if was_all_unhealthy == some_healthy {
            if some_healthy {
                log::warn!("origin group {}: an origin is healthy again", self.name);
            } else {
                log::warn!(
                    "origin group {}: every origin is unhealthy; sending traffic to all of them",
                    self.name
                );
            }
        }
    }
}
