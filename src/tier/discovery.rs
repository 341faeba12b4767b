//! Shield discovery: a `shields:` entry may be a name that resolves to several addresses (a
//! Kubernetes headless service). It is resolved at load (a name that does not resolve is a
//! `check` error) and again every `resolve_interval`; when the set of addresses changes, a
//! new ring is built, probed once, and swapped in.
//!
//! - Only the keys of shields that came or went move: the ring is Ketama.
//! - An address that disappears is drained, not cut: requests already sent to it finish
//!   there (they hold the old ring); new requests go by the new ring.
//! - A name that stops resolving (or resolves to nothing) keeps the last good set, and the
//!   node logs it once per failure streak.
//! - `hosts_file` (hosts(5) format) is read before the system resolver at each resolution,
//!   so a name can be pinned or moved without DNS (and tests can move one).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::ServiceReadyNotifier;
use pingora_load_balancing::HealthCheckService;
use tokio::sync::watch;

use crate::config::model::{HealthProbe, ShieldAddress, ShieldTls};

use super::ShieldRing;

/// Every address `entry` (`host:port`) resolves to, sorted: from `hosts_file` when it names
/// the host, else from the system resolver.
pub fn resolve_entry(entry: &str, hosts_file: Option<&Path>) -> Result<Vec<SocketAddr>, String> {
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Ok(vec![address]);
    }
    let (host, port) = entry
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("\"{entry}\" is not host:port"))?;
    let mut addresses: Vec<SocketAddr> = match hosts_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            hosts_lookup(&text, host)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()
        }
        None => Vec::new(),
    };
    if addresses.is_empty() {
        addresses = entry
            .to_socket_addrs()
            .map_err(|e| format!("\"{entry}\" does not resolve: {e}"))?
            .collect();
    }
    if addresses.is_empty() {
        return Err(format!("\"{entry}\" resolves to no address"));
    }
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// The host of a `shields:` entry (`host:port`, `[v6]:port`): the name its certificate is
/// checked for when `shield_tls.server_name` is not set.
pub fn shield_host(entry: &str) -> &str {
    let host = entry.rsplit_once(':').map_or(entry, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The addresses a hosts(5) text gives `host` (names compare without case).
fn hosts_lookup(text: &str, host: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let ip: IpAddr = fields.next()?.parse().ok()?;
            fields
                .any(|name| name.eq_ignore_ascii_case(host))
                .then_some(ip)
        })
        .collect()
}

/// Every entry's addresses, in entry order (each entry's sorted), without repeats.
pub fn resolve_all(
    entries: &[String],
    hosts_file: Option<&Path>,
) -> Result<Vec<ShieldAddress>, String> {
    let mut shields: Vec<ShieldAddress> = Vec::new();
    for entry in entries {
        for address in resolve_entry(entry, hosts_file)? {
            if !shields.iter().any(|s| s.address == address) {
                shields.push(ShieldAddress {
                    entry: entry.clone(),
                    address,
                });
            }
        }
    }
    Ok(shields)
}

/// Re-resolves a node's shield names and swaps in a new ring when their addresses change.
pub struct Resolver {
    pub ring: Arc<ArcSwapOption<ShieldRing>>,
    pub entries: Vec<String>,
    pub hosts_file: Option<PathBuf>,
    pub probe: HealthProbe,
    pub tls: Option<Arc<ShieldTls>>,
    pub interval: Duration,
    /// What `/status` shows: resolutions so far and the last failure.
    pub state: Mutex<ResolverState>,
}

#[derive(Debug, Default, Clone)]
pub struct ResolverState {
    pub resolutions: u64,
    /// The failure of the last resolution, if it failed (the ring kept its last good set).
    pub last_error: Option<String>,
}

impl Resolver {
    /// Whether any entry is a name (addresses alone never change).
    pub fn needed(entries: &[String]) -> bool {
        entries.iter().any(|e| e.parse::<SocketAddr>().is_err())
    }

    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut failing = false;
        // The probe loop of the ring this resolver built last (the first ring's probes are
        // run by the node's probe service, silenced once that ring is retired).
        let mut probing: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => break,
            }
            let (entries, hosts_file) = (self.entries.clone(), self.hosts_file.clone());
            let resolved =
                tokio::task::spawn_blocking(move || resolve_all(&entries, hosts_file.as_deref()))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
            {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.resolutions += 1;
                state.last_error = resolved.as_ref().err().cloned();
            }
            let shields = match resolved {
                Ok(shields) if !shields.is_empty() => {
                    if failing {
                        log::info!("shields resolve again");
                        failing = false;
                    }
                    shields
                }
                Ok(_) | Err(_) => {
                    if !failing {
                        let why = resolved.err().unwrap_or_else(|| "no address".into());
                        log::warn!("shields: {why}; keeping the last good set");
                        failing = true;
                    }
                    continue;
                }
            };
            let current = self.ring.load_full();
            let mut now: Vec<SocketAddr> = shields.iter().map(|s| s.address).collect();
            now.sort();
            let mut before = current.as_ref().map_or(Vec::new(), |r| r.addresses());
            before.sort();
            if now == before {
                continue;
            }
            let tls = self.tls.as_deref();
            let Some(ring) = ShieldRing::build(&shields, &self.probe, tls).map(Arc::new) else {
                continue;
            };
            // The new ring's shields are probed once before it takes traffic.
            let (registry, interval) = ring.probed_registry();
            let mut service = HealthCheckService::new(registry);
            service.health_check_frequency = Some(interval.max(Duration::from_millis(1)));
            service.parallel_health_check = true;
            let (done, mut first_round) = watch::channel(false);
            let probe_shutdown = shutdown.clone();
            let handle = tokio::spawn(async move {
                service
                    .run(probe_shutdown, Some(ServiceReadyNotifier::new(done)))
                    .await;
            });
            let _ = first_round.wait_for(|done| *done).await;
            log::info!("shields: {before:?} -> {now:?}");
            if let Some(old) = self.ring.swap(Some(ring)) {
                old.retire();
            }
            if let Some(old) = probing.replace(handle) {
                old.abort();
            }
        }
        if let Some(handle) = probing {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_file_names_several_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            "# shields\n10.0.0.2 shields.test other\n10.0.0.1  SHIELDS.test\n::1 shields.test # v6\n",
        )
        .unwrap();
        let found = resolve_entry("shields.test:8090", Some(&hosts)).unwrap();
        let text: Vec<String> = found.iter().map(|a| a.to_string()).collect();
        assert_eq!(text, ["10.0.0.1:8090", "10.0.0.2:8090", "[::1]:8090"]);
        // An address needs no resolver; a missing port is an error.
        assert_eq!(resolve_entry("127.0.0.1:1", None).unwrap().len(), 1);
        assert!(resolve_entry("shields.test", Some(&hosts)).is_err());
        let all = resolve_all(
            &["shields.test:1".into(), "10.0.0.1:1".into()],
            Some(&hosts),
        )
        .unwrap();
        assert_eq!(all.len(), 3, "a repeated address counts once");
        assert!(Resolver::needed(&["shields.test:1".into()]));
        assert!(!Resolver::needed(&["127.0.0.1:1".into()]));
    }
}
