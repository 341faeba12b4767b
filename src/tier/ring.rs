//! The shield ring: Ketama consistent hashing (pingora-load-balancing's `Consistent`) over a
//! node's shields, with each shield probed like an origin (`crate::origin`).
//!
//! A request's key picks a point on the ring; the first usable shield from there clockwise
//! gets it. A dead shield is skipped, so only its keys move (each to the next shield on the
//! ring) and the others keep theirs; when it recovers its keys come back. With no usable
//! shield left, [`ShieldRing::select`] answers `None` and the edge goes to the origin group.
//!
//! Shields are modelled as a synthetic origin group ("shields") so that the origin code's
//! verdicts, thresholds, probes and `/status` reports apply to them unchanged.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::selection::Consistent;
use pingora_load_balancing::{Backend, Backends, HealthRegistry, LoadBalancer};

use super::discovery::shield_host;
use crate::config::model::{
    HealthProbe, Origin, OriginGroup, ShieldAddress, ShieldTls, TierSettings,
};
use crate::origin::check::GroupCheck;
use crate::origin::health::GroupHealth;
use crate::origin::OriginIndex;

/// Ketama's points per shield (pingora-ketama's default for weight 1).
const POINTS_PER_SHIELD: usize = 160;
/// Connecting to a shield is on the loopback or the same data centre: a slow connect means
/// a dead shield, and the next one (or the origin) should get the request soon.
const SHIELD_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The name the shields' synthetic origin group has in logs and `/status`.
pub const GROUP_NAME: &str = "shields";

pub struct ShieldRing {
    group: OriginGroup,
    /// One prebuilt peer per shield, cloned per request.
    peers: Vec<HttpPeer>,
    balancer: LoadBalancer<Consistent>,
    health: Arc<GroupHealth>,
    registry: Arc<HealthRegistry>,
    max_iterations: usize,
    retired: Arc<AtomicBool>,
}

impl std::fmt::Debug for ShieldRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShieldRing")
            .field("shields", &self.addresses())
            .finish_non_exhaustive()
    }
}

/// The origin probe, silenced once its ring is retired.
struct ShieldCheck {
    inner: GroupCheck,
    retired: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl HealthCheck for ShieldCheck {
    async fn check(&self, target: &Backend) -> pingora_error::Result<()> {
        if self.retired.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner.check(target).await
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }

    fn backend_summary(&self, target: &Backend) -> String {
        self.inner.backend_summary(target)
    }
}

impl ShieldRing {
    /// The ring of `settings.shields`, or `None` when the node has no shields.
    pub fn new(settings: &TierSettings) -> Option<ShieldRing> {
        ShieldRing::build(
            &settings.shields,
            &settings.shield_probe,
            settings.shield_tls.as_deref(),
        )
    }

    /// The ring of `shields`, probed with `probe`, spoken to over `tls` if given; `None`
    /// for no shield.
    pub fn build(
        shields: &[ShieldAddress],
        probe: &HealthProbe,
        tls: Option<&ShieldTls>,
    ) -> Option<ShieldRing> {
        if shields.is_empty() {
            return None;
        }
        // Over TLS, the name each shield's certificate is checked for (as SNI).
        let server_name = |shield: &ShieldAddress| {
            let tls = tls?;
            let name = tls.server_name.as_deref();
            Some(name.unwrap_or(shield_host(&shield.entry)).to_owned())
        };
        let origins: Vec<Origin> = shields
            .iter()
            .map(|shield| Origin {
                name: shield.address.to_string(),
                address: shield.address,
                // Shield names have their own resolver (`tier::discovery`).
                resolved_from: None,
                // A TLS probe checks the certificate for the origin's host header.
                host_header: server_name(shield).unwrap_or_else(|| shield.entry.clone()),
                // An entry resolved as `host:port`, so it is a valid field value.
                host_value: http::HeaderValue::from_str(&shield.entry)
                    .unwrap_or(http::HeaderValue::from_static("")),
                priority: 1,
                weight: 1,
                enabled: true,
                https_address: shield.address,
            })
            .collect();
        let group = OriginGroup {
            name: GROUP_NAME.to_string(),
            origins,
            health_probe: Some(probe.clone()),
            max_retries: shields.len(),
            ca: None,
            timeouts: Default::default(),
            when_all_unhealthy: Default::default(),
        };
        let ca_certs = tls
            .and_then(|tls| tls.ca.as_ref())
            .map(|ca| ca.certs.as_slice());
        let retired = Arc::new(AtomicBool::new(false));
        let registry = Arc::new(HealthRegistry::with_equivalence(|backend| {
            shield_index(backend).map_or(u64::MAX, |i| i as u64)
        }));
        let health = Arc::new(GroupHealth::new(&group));
        registry.set_health_check(Box::new(ShieldCheck {
            inner: GroupCheck {
                probe: probe.clone(),
                origins: group.origins.clone(),
                health: health.clone(),
                tls: probe
                    .use_tls
                    .then(|| crate::tls::origin::probe_connector(ca_certs)),
            },
            retired: retired.clone(),
        }));
        let backends: BTreeSet<Backend> = group
            .origins
            .iter()
            .enumerate()
            .map(|(index, shield)| {
                let mut backend = Backend {
                    addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(shield.address),
                    weight: 1,
                    ext: Default::default(),
                };
                backend.ext.insert(OriginIndex(index));
                backend
            })
            .collect();
        let view = Backends::new_with_health_registry(Static::new(backends), registry.clone());
        let balancer = LoadBalancer::from_backends(view);
        // Static discovery completes at once; this builds the ring.
        let _ = balancer.update().now_or_never();
        let ca = ca_certs.map(crate::tls::origin::pingora_ca);
        let peers = shields
            .iter()
            .map(|shield| {
                let sni = server_name(shield);
                let mut peer =
                    HttpPeer::new(shield.address, sni.is_some(), sni.unwrap_or_default());
                peer.options.connection_timeout = Some(SHIELD_CONNECT_TIMEOUT);
                peer.options.ca = ca.clone();
                peer
            })
            .collect();
        let max_iterations = group.origins.len() * POINTS_PER_SHIELD + 1;
        Some(ShieldRing {
            group,
            peers,
            balancer,
            health,
            registry,
            max_iterations,
            retired,
        })
    }

    /// The shield addresses, in ring-building order.
    pub fn addresses(&self) -> Vec<std::net::SocketAddr> {
        self.group.origins.iter().map(|o| o.address).collect()
    }

    /// A newer ring replaced this one (the shields' names resolve elsewhere now): its probes
    /// stop probing. Requests already on it finish on their shield.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// The shield for `key`: the first one clockwise from the key's point that is healthy
    /// and not already tried by this request. `None`: go to the origin group.
    pub fn select(&self, key: &[u8], tried: &[usize]) -> Option<usize> {
        let eligible = |i: usize| self.health.usable(i) && !tried.contains(&i);
        self.balancer
            .select_with(key, self.max_iterations, |backend, ready| {
                ready && shield_index(backend).is_some_and(eligible)
            })
            .as_ref()
            .and_then(shield_index)
    }

    /// The shield `key` maps to when every shield is up (its home on the ring).
    pub fn home(&self, key: &[u8]) -> Option<usize> {
        self.balancer
            .select_with(key, self.max_iterations, |_, _| true)
            .as_ref()
            .and_then(shield_index)
    }

    pub fn peer(&self, index: usize) -> Option<&HttpPeer> {
        self.peers.get(index)
    }

    /// The shields as a synthetic origin group (names are addresses).
    pub fn group(&self) -> &OriginGroup {
        &self.group
    }

    pub fn health(&self) -> &GroupHealth {
        &self.health
    }

    /// The address of shield `index`, as logs show it.
    pub fn name(&self, index: usize) -> &str {
        self.group
            .origins
            .get(index)
            .map_or("?", |shield| shield.name.as_str())
    }

    /// The registry the probe service runs, and how often.
    pub(crate) fn probed_registry(&self) -> (Arc<HealthRegistry>, Duration) {
        let interval = self
            .group
            .health_probe
            .as_ref()
            .map_or(Duration::from_secs(5), |p| p.interval);
        (self.registry.clone(), interval)
    }
}

fn shield_index(backend: &Backend) -> Option<usize> {
    backend.ext.get::<OriginIndex>().map(|&OriginIndex(i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ProbeProtocol;
    use crate::origin::health::ProbeOutcome;

    fn settings(count: u16) -> TierSettings {
        TierSettings {
            entries: Vec::new(),
            hosts_file: None,
            shields: (0..count)
                .map(|i| ShieldAddress {
                    entry: format!("127.0.0.1:{}", 9000 + i),
                    address: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                })
                .collect(),
            shield_all: false,
            shield_probe: HealthProbe {
                protocol: ProbeProtocol::Tcp,
                method: http::Method::HEAD,
                path: "/".into(),
                host: None,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(3),
                healthy_threshold: 1,
                unhealthy_threshold: 1,
                expect_status: vec![(200, 399)],
                use_tls: false,
            },
            trusted_edges: Vec::new(),
            resolve_interval: Duration::from_secs(30),
            shield_tls: None,
        }
    }

    fn probe(ring: &ShieldRing, index: usize, passed: bool) {
        ring.health.record(
            index,
            ProbeOutcome {
                time_ms: 1,
                latency: Duration::from_millis(1),
                status: None,
                error: (!passed).then(|| "refused".to_string()),
            },
        );
    }

    fn keys() -> Vec<String> {
        (0..1000)
            .map(|i| format!("example.com/object/{i}"))
            .collect()
    }

    #[test]
    fn no_shields_no_ring() {
        assert!(ShieldRing::new(&settings(0)).is_none());
    }

    #[test]
    fn shields_are_not_used_before_their_first_probe() {
        let ring = ShieldRing::new(&settings(2)).unwrap();
        assert_eq!(ring.select(b"k", &[]), None);
        probe(&ring, 0, true);
        assert_eq!(ring.select(b"k", &[]), Some(0));
    }

    #[test]
    fn keys_spread_and_a_dead_shield_moves_only_its_own_keys() {
        let ring = ShieldRing::new(&settings(3)).unwrap();
        for i in 0..3 {
            probe(&ring, i, true);
        }
        let before: Vec<usize> = keys()
            .iter()
            .map(|k| ring.select(k.as_bytes(), &[]).unwrap())
            .collect();
        for shield in 0..3 {
            let share = before.iter().filter(|&&s| s == shield).count();
            assert!(share > 150, "shield {shield} got only {share} of 1000 keys");
        }
        probe(&ring, 1, false);
        let after: Vec<usize> = keys()
            .iter()
            .map(|k| ring.select(k.as_bytes(), &[]).unwrap())
            .collect();
        for (old, new) in before.iter().zip(&after) {
            if *old == 1 {
                assert_ne!(*new, 1, "a dead shield's key moved elsewhere");
            } else {
                assert_eq!(old, new, "a live shield's key stayed");
            }
        }
        // Its keys went to both other shields, not all to one.
        let moved: BTreeSet<usize> = before
            .iter()
            .zip(&after)
            .filter(|(old, _)| **old == 1)
            .map(|(_, new)| *new)
            .collect();
        assert_eq!(moved.len(), 2);
        // Recovery brings every key home.
        probe(&ring, 1, true);
        for (key, old) in keys().iter().zip(&before) {
            assert_eq!(ring.select(key.as_bytes(), &[]), Some(*old));
            assert_eq!(ring.home(key.as_bytes()), Some(*old));
        }
    }

    #[test]
    fn tried_shields_are_skipped_then_none_is_left() {
        let ring = ShieldRing::new(&settings(2)).unwrap();
        probe(&ring, 0, true);
        probe(&ring, 1, true);
        let first = ring.select(b"key", &[]).unwrap();
        let second = ring.select(b"key", &[first]).unwrap();
        assert_ne!(first, second);
        assert_eq!(ring.select(b"key", &[first, second]), None);
        probe(&ring, second, false);
        assert_eq!(ring.select(b"key", &[first]), None);
    }

    #[test]
    fn the_ring_does_not_depend_on_the_order_of_the_list() {
        let ring = ShieldRing::new(&settings(3)).unwrap();
        let mut reversed = settings(3);
        reversed.shields.reverse();
        let other = ShieldRing::new(&reversed).unwrap();
        for i in 0..3 {
            probe(&ring, i, true);
            probe(&other, i, true);
        }
        for key in keys() {
            let a = ring.select(key.as_bytes(), &[]).unwrap();
            let b = other.select(key.as_bytes(), &[]).unwrap();
            assert_eq!(ring.name(a), other.name(b));
        }
    }
}
