//! Origin selection for origin groups, on pingora-load-balancing.
//!
//! Front Door's order: enabled origins only; healthy ones first; the lowest `priority`
//! value; weighted round-robin inside that priority. When no healthy origin is left to try
//! (every origin unhealthy, or every healthy one already tried by this request), traffic
//! goes to all of them: weighted round-robin across every enabled origin, whatever its
//! priority. Front Door does the same when every origin fails its probes. A group with
//! `when_all_unhealthy: refuse` has no such fallback: its requests get a 503 that says why
//! ([`refusal`]), as on Application Gateway for Containers.
//!
//! Each priority level is one pingora `LoadBalancer` with smooth weighted round-robin
//! ([`smooth`]), plus one across every enabled origin for the fallback. They share one
//! `HealthRegistry` per group, so each origin has one health, probed once per interval
//! ([`check`], [`service`]); [`health`] keeps the verdicts and what `/status` shows,
//! [`probe`] runs the probes.

pub mod check;
pub mod health;
pub mod probe;
pub mod refusal;
pub mod service;
pub mod smooth;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::{Backend, Backends, HealthRegistry, LoadBalancer};

use crate::config::model::{HealthProbe, Origin, OriginGroup, WhenAllUnhealthy};

use self::health::GroupHealth;
use self::smooth::SmoothRoundRobin;

/// The index of an origin in its group, carried in each `Backend`'s extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OriginIndex(pub usize);

/// Every origin group's balancers.
pub struct OriginPool {
    groups: Vec<GroupBalancer>,
}

struct GroupBalancer {
    origins: Vec<Origin>,
    probe: Option<HealthProbe>,
    /// Priority levels, lowest value (most preferred) first.
    levels: Vec<Level>,
    /// Every enabled origin, for when no healthy one is left.
    everyone: LoadBalancer<SmoothRoundRobin>,
    health: Arc<GroupHealth>,
    registry: Arc<HealthRegistry>,
    /// The probe interval, when the group has a `health_probe`.
    probe_interval: Option<Duration>,
    /// `when_all_unhealthy: refuse`: no fallback to unhealthy origins.
    refuse_unhealthy: bool,
}

/// The origins of one priority value and their balancer.
struct Level {
    origins: Vec<usize>,
    balancer: LoadBalancer<SmoothRoundRobin>,
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
        OriginPool::after(groups, None)
    }

    /// The pool of a new configuration generation. An origin that `previous` had in a group
    /// of the same name, with the same name, address, `Host` and probe, keeps its health:
    /// a reload does not send it back to pending (nor a dead one back into rotation).
    pub fn after(groups: &[OriginGroup], previous: Option<&OriginPool>) -> OriginPool {
        OriginPool {
            groups: groups
                .iter()
                .map(|group| {
                    let before = previous.and_then(|pool| {
                        pool.groups.iter().find(|old| old.health.name == group.name)
                    });
                    GroupBalancer::new(group, before)
                })
                .collect(),
        }
    }

    /// Picks an origin of `group` whose index is not in `tried`, or `None` when every
    /// enabled origin was tried.
    pub fn select(&self, group: usize, tried: &[usize]) -> Option<Chosen<'_>> {
        let group = self.groups.get(group)?;
        let fresh = |backend: &Backend| origin_index(backend).is_some_and(|i| !tried.contains(&i));
        let eligible = |i: usize| group.health.usable(i) && !tried.contains(&i);
        // A level of one origin has no rotation to walk: its first eligible level's single
        // origin is the choice, without the balancer's readiness lookup and backend clone
        // (Pingora's readiness mirrors the verdict `usable` reads, see `check`).
        if let Some(level) = group
            .levels
            .iter()
            .find(|l| l.origins.iter().any(|&i| eligible(i)))
        {
            if let [index] = level.origins[..] {
                return Some(Chosen {
                    index,
                    origin: group.origins.get(index)?,
                });
            }
        }
        let preferred = group
            .levels
            .iter()
            // A level with nothing eligible is skipped without walking its cycle.
            .filter(|level| level.origins.iter().any(|&i| eligible(i)))
            .find_map(|level| {
                level
                    .balancer
                    .select_with(b"", MAX_ITERATIONS, |backend, ready| {
                        ready && origin_index(backend).is_some_and(eligible)
                    })
            });
        let backend = preferred.or_else(|| {
            if group.refuse_unhealthy {
                return None;
            }
            group
                .everyone
                .select_with(b"", MAX_ITERATIONS, |backend, _| fresh(backend))
        })?;
        group.chosen(&backend)
    }

    /// Origin `index` of `group`, if it is enabled: a keep-alive race's second attempt goes
    /// back to it, whatever its turn in the rotation.
    pub fn origin(&self, group: usize, index: usize) -> Option<Chosen<'_>> {
        let group = self.groups.get(group)?;
        let origin = group.origins.get(index).filter(|o| o.enabled)?;
        Some(Chosen { index, origin })
    }

    /// The origin a request would get if every origin were healthy: for `portico explain`,
    /// which sends no probes (its origins stay pending).
    pub fn select_assuming_healthy(&self, group: usize) -> Option<Chosen<'_>> {
        let group = self.groups.get(group)?;
        let backend = group
            .levels
            .iter()
            .find_map(|level| level.balancer.select_with(b"", MAX_ITERATIONS, |_, _| true))?;
        group.chosen(&backend)
    }

    /// The probe verdicts and reports of `group`'s origins.
    pub fn health(&self, group: usize) -> Option<&GroupHealth> {
        self.groups.get(group).map(|g| g.health.as_ref())
    }

    /// Each probed group's health registry and probe interval, for the probe service.
    pub(crate) fn probed_registries(
        &self,
    ) -> impl Iterator<Item = (&str, Arc<HealthRegistry>, Duration)> + '_ {
        self.groups.iter().filter_map(|group| {
            group
                .probe_interval
                .map(|interval| (group.health.name.as_str(), group.registry.clone(), interval))
        })
    }
}

fn origin_index(backend: &Backend) -> Option<usize> {
    backend.ext.get::<OriginIndex>().map(|&OriginIndex(i)| i)
}

impl GroupBalancer {
    fn new(group: &OriginGroup, before: Option<&GroupBalancer>) -> GroupBalancer {
        // One health per origin, even when two origins share an address.
        let registry = Arc::new(HealthRegistry::with_equivalence(|backend| {
            origin_index(backend).map_or(u64::MAX, |i| i as u64)
        }));
        let health = Arc::new(GroupHealth::after(group, |index| {
            let before = before.filter(|old| old.probe == group.health_probe)?;
            let origin = &group.origins[index];
            let old_index = before
                .origins
                .iter()
                .position(|old| same_origin(old, origin))?;
            before.health.shared(old_index)
        }));
        if let Some(probe) = &group.health_probe {
            let tls = probe.use_tls.then(|| {
                crate::tls::origin::probe_connector(group.ca.as_ref().map(|ca| ca.certs.as_slice()))
            });
            registry.set_health_check(Box::new(check::GroupCheck {
                probe: probe.clone(),
                origins: group.origins.clone(),
                health: health.clone(),
                tls,
            }));
        }
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
            .map(|&priority| Level {
                origins: (0..group.origins.len())
                    .filter(|&i| group.origins[i].enabled && group.origins[i].priority == priority)
                    .collect(),
                balancer: balancer(group, &registry, |o| o.priority == priority),
            })
            .collect();
        GroupBalancer {
            origins: group.origins.clone(),
            probe: group.health_probe.clone(),
            levels,
            everyone: balancer(group, &registry, |_| true),
            health,
            registry,
            probe_interval: group.health_probe.as_ref().map(|p| p.interval),
            refuse_unhealthy: group.when_all_unhealthy == WhenAllUnhealthy::Refuse,
        }
    }

    fn chosen(&self, backend: &Backend) -> Option<Chosen<'_>> {
        let index = origin_index(backend)?;
        Some(Chosen {
            index,
            origin: self.origins.get(index)?,
        })
    }
}

/// Whether two generations' origins are the same server as probes see it.
fn same_origin(old: &Origin, new: &Origin) -> bool {
    old.name == new.name
        && old.address == new.address
        && old.https_address == new.https_address
        && old.host_header == new.host_header
}

/// A weighted round-robin balancer over the enabled origins of `group` that `keep` accepts.
fn balancer(
    group: &OriginGroup,
    registry: &Arc<HealthRegistry>,
    keep: impl Fn(&Origin) -> bool,
) -> LoadBalancer<SmoothRoundRobin> {
    let backends: BTreeSet<Backend> = group
        .origins
        .iter()
        .enumerate()
        .filter(|(_, o)| o.enabled && keep(o))
        .map(|(index, origin)| {
            let mut backend = Backend {
                addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(origin.address),
                weight: origin.weight as usize,
                ext: Default::default(),
            };
            backend.ext.insert(OriginIndex(index));
            backend
        })
        .collect();
    let view = Backends::new_with_health_registry(Static::new(backends), registry.clone());
    let balancer = LoadBalancer::from_backends(view);
    // Static discovery completes at once; this fills the selector.
    let _ = balancer.update().now_or_never();
    balancer
}
