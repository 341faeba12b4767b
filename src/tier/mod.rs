//! Tiers (SPEC §5): edges fetch through shields chosen by consistent hashing of the cache key.
//!
//! ```text
//!  client ─► edge ── miss, cacheable ─► shield (ring: hash of the cache key) ─► origin group
//!              │  └─ no usable shield left ──────────────────────────────────► origin group
//!              └──── not cacheable (unless shield_all) ───────────────────────► origin group
//! ```
//!
//! - [`ring`]: the Ketama ring over the shields and their health (probed like origins).
//! - [`hop`]: what crosses a hop: the edge forwards the client's request as it came (the
//!   shield runs the same rules on it, so it derives the same route and cache key), plus
//!   `Via`, `CDN-Loop`, `X-Forwarded-For`/`-Proto`; a shield believes the last two only from
//!   its `trusted_edges`. The shield's `X-Cache` comes back and the edge turns its own
//!   `TCP_MISS` into `TCP_REMOTE_HIT` when the shield served from its cache.
//! - [`route`]: which requests go to a shield, and to which one.
//! - [`purge`]: `POST /purge` with `"shields": true` purges the shields too.
//! - [`discovery`]: shield names resolved again every `resolve_interval`.
//! - [`report`]: the ring in `/status` and `/metrics`.
//!
//! Everything here is built from the configuration inside `proxy::Snapshot::new`, so a new
//! configuration generation builds a new ring with its own probes.

pub mod discovery;
pub mod hop;
pub mod purge;
pub mod report;
pub mod ring;
pub mod route;

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;

use pingora_cache::key::HashBinary;
use smallvec::SmallVec;

use crate::config::model::{IpNetwork, Tier, TierSettings};
use crate::origin::service::HealthProbes;
use crate::proxy::Snapshot;

use discovery::Resolver;
pub use ring::ShieldRing;

/// A node's tier settings, ready to serve.
pub struct Tiers {
    pub tier: Tier,
    /// The shields' ring; a newer one replaces it when shield names resolve elsewhere.
    ring: Arc<ArcSwapOption<ShieldRing>>,
    pub shield_all: bool,
    trusted_edges: Vec<IpNetwork>,
    /// Set when a `shields:` entry is a name to resolve again.
    resolver: Option<Arc<Resolver>>,
}

impl Tiers {
    pub fn new(tier: Tier, settings: &TierSettings) -> Tiers {
        let ring = Arc::new(ArcSwapOption::new(ShieldRing::new(settings).map(Arc::new)));
        let resolver = Resolver::needed(&settings.entries).then(|| {
            Arc::new(Resolver {
                ring: ring.clone(),
                entries: settings.entries.clone(),
                hosts_file: settings.hosts_file.clone(),
                probe: settings.shield_probe.clone(),
                tls: settings.shield_tls.clone(),
                interval: settings.resolve_interval,
                state: Default::default(),
            })
        });
        Tiers {
            tier,
            ring,
            shield_all: settings.shield_all,
            trusted_edges: settings.trusted_edges.clone(),
            resolver,
        }
    }

    /// The shields' ring in force, if the node has shields.
    pub fn ring(&self) -> Option<Arc<ShieldRing>> {
        self.ring.load_full()
    }

    /// Whether a connection from `peer` is one of this shield's edges.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        self.tier == Tier::Shield
            && peer.is_some_and(|ip| {
                let ip = ip.to_canonical();
                self.trusted_edges.iter().any(|net| net.contains(ip))
            })
    }

    /// Resolutions of shield names so far and the last failure (`None`: no names).
    pub fn discovery(&self) -> Option<discovery::ResolverState> {
        let resolver = self.resolver.as_ref()?;
        Some(
            resolver
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    pub fn trusted_edges(&self) -> &[IpNetwork] {
        &self.trusted_edges
    }
}

/// What one request did across tiers.
#[derive(Debug, Default)]
pub struct TierCtx {
    /// The cache key's hash, when the cache computed one (the ring's key).
    pub key_hash: Option<HashBinary>,
    /// The shield of the current attempt (`None`: the origin group).
    pub shield: Option<usize>,
    /// The ring the shields were chosen on (kept for retries and the log, even if a newer
    /// ring replaces it meanwhile).
    pub ring: Option<Arc<ShieldRing>>,
    /// Shields tried so far, in order.
    pub tried: SmallVec<[usize; 2]>,
    /// No usable shield was left: the request went to the origin group.
    pub bypassed: bool,
    /// The shield's own `X-Cache`, when a shield answered.
    pub remote_status: Option<&'static str>,
    /// On a shield: the request came from a trusted edge (its hop headers were believed).
    pub from_edge: bool,
}

/// A snapshot's background work: the probes of its origin groups and of its shields, and
/// the re-resolution of shield names. Ready once every probe has finished its first round.
pub struct Background {
    probes: HealthProbes,
    resolver: Option<Arc<Resolver>>,
}

pub fn background(snapshot: &Snapshot) -> Background {
    let mut probes = HealthProbes::new(&snapshot.origins);
    if let Some(ring) = snapshot.tiers.ring() {
        let (registry, interval) = ring.probed_registry();
        probes.add(ring::GROUP_NAME, registry, interval);
    }
    Background {
        probes,
        resolver: snapshot.tiers.resolver.clone(),
    }
}

impl Background {
    pub async fn run(&self, shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        let resolve = async {
            if let Some(resolver) = &self.resolver {
                resolver.run(shutdown.clone()).await;
            }
        };
        tokio::join!(self.probes.run(shutdown.clone(), ready), resolve);
    }
}

#[async_trait::async_trait]
impl BackgroundService for Background {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready_notifier: ServiceReadyNotifier,
    ) {
        self.run(shutdown, ready_notifier).await;
    }

    async fn start(&self, shutdown: ShutdownWatch) {
        let (ready, _) = tokio::sync::watch::channel(false);
        self.run(shutdown, ServiceReadyNotifier::new(ready)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tiers(tier: Tier, trusted: &[(&str, u8)]) -> Tiers {
        let settings = TierSettings {
            entries: Vec::new(),
            hosts_file: None,
            shields: Vec::new(),
            shield_all: false,
            shield_probe: crate::config::model::HealthProbe {
                protocol: crate::config::model::ProbeProtocol::Tcp,
                method: http::Method::HEAD,
                path: "/".into(),
                host: None,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(3),
                healthy_threshold: 1,
                unhealthy_threshold: 1,
                expect_status: vec![],
                use_tls: false,
            },
            trusted_edges: trusted
                .iter()
                .map(|(addr, prefix_len)| IpNetwork {
                    addr: addr.parse().unwrap(),
                    prefix_len: *prefix_len,
                })
                .collect(),
            resolve_interval: Duration::from_secs(30),
            shield_tls: None,
        };
        Tiers::new(tier, &settings)
    }

    #[test]
    fn only_a_shield_trusts_and_only_its_edges() {
        let shield = tiers(Tier::Shield, &[("10.0.0.0", 8)]);
        assert!(shield.trusts(Some("10.9.8.7".parse().unwrap())));
        // An IPv4 peer seen through an IPv6 socket is the same peer.
        assert!(shield.trusts(Some("::ffff:10.9.8.7".parse().unwrap())));
        assert!(!shield.trusts(Some("192.0.2.1".parse().unwrap())));
        assert!(!shield.trusts(None));
        let edge = tiers(Tier::Edge, &[("10.0.0.0", 8)]);
        assert!(!edge.trusts(Some("10.9.8.7".parse().unwrap())));
    }
}
