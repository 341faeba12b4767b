//! Origin names, resolved again. An origin whose `address` is a name (`app.example:80`: a
//! cloud load balancer, a Kubernetes Service) is resolved when the configuration loads,
//! and again every `resolve_interval` (the node's, as for `shields:` names; `hosts_file`
//! first, then the system resolver). When a name now gives another address, the node
//! reloads: the next generation resolves every name afresh and is built beside the
//! current one like any reload (unchanged origins keep their health, requests in flight
//! keep their generation, tunnels belong to none).
//!
//! - Of several addresses an origin takes the lowest (`config::origins`), so a name that
//!   answers the same set in another order (DNS round robin) changes nothing.
//! - A name that stops resolving keeps its last address; the node logs it once per
//!   failure streak.
//! - A reload that is refused (the files were edited into an invalid state meanwhile) is
//!   not tried again until the names answer something new.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::Lifecycle;
use crate::tier::discovery::resolve_entry;

/// What the resolver remembers between rounds.
#[derive(Default)]
pub struct OriginNames {
    /// The answers of the last reload it asked for, while they have not been taken.
    asked: Option<Vec<SocketAddr>>,
    /// Why the last round's failing names did not resolve (`/status`).
    last_error: Option<String>,
}

impl OriginNames {
    /// Runs until the future is dropped (the lifecycle loop stops polling it).
    pub async fn run(&mut self, lifecycle: &Lifecycle) {
        loop {
            let interval = lifecycle
                .current
                .load()
                .engine
                .config
                .node
                .tiers
                .resolve_interval;
            tokio::time::sleep(interval).await;
            // The generation live now (a reload may have come meanwhile), not the one the
            // wait began in.
            let (hosts_file, named) = {
                let snapshot = lifecycle.current.load();
                let config = &snapshot.engine.config;
                let named: Vec<(String, SocketAddr)> = config
                    .origin_groups
                    .iter()
                    .flat_map(|group| &group.origins)
                    .filter_map(|o| Some((o.resolved_from.clone()?, o.address)))
                    .collect();
                (config.node.tiers.hosts_file.clone(), named)
            };
            if named.is_empty() {
                continue;
            }
            let changes = self.resolve_round(named, hosts_file).await;
            {
                let mut state = lifecycle.origin_names.lock();
                state.resolutions += 1;
                state.last_error = self.last_error.clone();
            }
            if let Some(changes) = changes {
                log::info!("origin names resolve to new addresses ({changes}); reloading");
                let _ = lifecycle.reload("dns").await;
            }
        }
    }

    /// Resolves `named` (entry, current address) once; what changed, when a reload should
    /// take it.
    async fn resolve_round(
        &mut self,
        named: Vec<(String, SocketAddr)>,
        hosts_file: Option<PathBuf>,
    ) -> Option<String> {
        let entries: Vec<String> = named.iter().map(|(entry, _)| entry.clone()).collect();
        let answers = tokio::task::spawn_blocking(move || {
            let lowest = |entry: &String| Ok(resolve_entry(entry, hosts_file.as_deref())?[0]);
            entries
                .iter()
                .map(lowest)
                .collect::<Vec<Result<_, String>>>()
        })
        .await
        .ok()?;
        let mut now = Vec::with_capacity(named.len());
        let mut changes = Vec::new();
        let mut failures = Vec::new();
        for ((entry, current), answer) in named.into_iter().zip(answers) {
            match answer {
                Ok(address) => {
                    if address != current {
                        changes.push(format!("{entry}: {current} -> {address}"));
                    }
                    now.push(address);
                }
                Err(why) => {
                    failures.push(why);
                    now.push(current);
                }
            }
        }
        let failed = (!failures.is_empty()).then(|| failures.join("; "));
        if let (Some(why), None) = (&failed, &self.last_error) {
            log::warn!("origin names did not resolve; their last addresses stay: {why}");
        }
        self.last_error = failed;
        if changes.is_empty() {
            self.asked = None;
            return None;
        }
        if self.asked.as_ref() == Some(&now) {
            return None;
        }
        self.asked = Some(now);
        Some(changes.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reload_is_asked_once_per_new_answer() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        let current: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let named = || vec![("a.test:80".to_string(), current)];
        let mut names = OriginNames::default();
        let mut round = async |text: &str| {
            std::fs::write(&hosts, text).unwrap();
            names.resolve_round(named(), Some(hosts.clone())).await
        };
        assert_eq!(round("127.0.0.1 a.test\n").await, None);
        let moved = round("127.0.0.2 a.test\n127.0.0.3 a.test\n").await;
        assert_eq!(
            moved.as_deref(),
            Some("a.test:80: 127.0.0.1:80 -> 127.0.0.2:80")
        );
        // The reload was refused (the generation still has the old address): not again
        // for the same answer, in whatever order it comes.
        assert_eq!(round("127.0.0.3 a.test\n127.0.0.2 a.test\n").await, None);
        // A new answer is asked for.
        assert!(round("127.0.0.4 a.test\n").await.is_some());
        // Back where the generation is, then away again: asked once more.
        assert_eq!(round("127.0.0.1 a.test\n").await, None);
        assert!(round("127.0.0.4 a.test\n").await.is_some());
        // Not resolving: the address stays, nothing is asked, the reason is kept.
        assert_eq!(round("# nothing\n").await, None);
        assert!(names.last_error.as_deref().unwrap().contains("a.test:80"));
    }
}
