//! One reload: the next configuration generation, built and checked beside the live one.
//!
//! A reload runs every check `portico check` runs, then refuses what a running process
//! cannot change: its listeners and admin address, its Pingora server settings, its cache
//! store's size and lock. Those need a restart or a binary upgrade (`portico run
//! --upgrade`). Certificates, session ticket keys, routes, rule sets, origin groups and
//! their probes, timeouts, cache freshness defaults, the access log target, tunnel
//! splicing and send batching may change. Nothing is swapped until everything has loaded,
//! and the new generation's probes have finished a first round.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::diagnostics::Report;
use crate::config::model::NodeSettings;
use crate::config::{self, ConfigError};
use crate::proxy::Snapshot;
use crate::rules::Engine;
use crate::tls::tickets::TicketKeys;
use crate::tls::LoadedCertificates;

use super::Lifecycle;

/// Why a reload was refused: one `file:line:col: error: ...` line per problem.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ReloadError(Vec<String>);

impl ReloadError {
    pub fn lines(&self) -> &[String] {
        &self.0
    }
}

impl From<ConfigError> for ReloadError {
    fn from(error: ConfigError) -> ReloadError {
        match &error {
            ConfigError::Invalid(diagnostics) => ReloadError(
                diagnostics
                    .iter()
                    .filter(|d| d.severity == config::Severity::Error)
                    .map(ToString::to_string)
                    .collect(),
            ),
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => {
                ReloadError(vec![error.to_string()])
            }
        }
    }
}

/// Loads, checks and builds the next generation and waits for its first probe round.
/// Returns it with the sender that stops its probes. Nothing live changes on error.
pub(super) async fn next_generation(
    lifecycle: &Lifecycle,
) -> Result<(Arc<Snapshot>, watch::Sender<bool>), ReloadError> {
    let loaded = config::load(&lifecycle.conf_path)?;
    let node = &loaded.config.node;
    let refused = needs_restart(&lifecycle.started, node);
    if !refused.is_empty() {
        return Err(ReloadError(place(&lifecycle.conf_path, &refused)));
    }
    let mut certificates = Vec::new();
    for (listener, (address, tls)) in node.listeners.iter().zip(&lifecycle.tls) {
        if let (Some(config), Some(tls)) = (&listener.tls, tls) {
            let loaded = LoadedCertificates::load(config)
                .map_err(|e| ReloadError(vec![format!("listener {address}: {e}")]))?;
            certificates.push((tls.clone(), loaded));
        }
    }
    // Read again: a rotation may have changed a file's bytes under the same name.
    let tickets = TicketKeys::load(&node.tls_ticket_keys).map_err(|e| {
        ReloadError(vec![format!(
            "{}: tls_ticket_keys: {e}",
            lifecycle.conf_path.display()
        )])
    })?;
    let previous = lifecycle.current.load_full();
    let snapshot = Arc::new(Snapshot::after(
        Engine::new(loaded.config),
        Some(&previous),
        &lifecycle.metrics.routes,
    ));
    let (stop, mut first_round) = lifecycle.start_probes(&snapshot);
    // The notifier fires even if the probe loop ends early, so this cannot hang.
    let _ = first_round.wait_for(|done| *done).await;
    let log_target = &snapshot.engine.config.node.access_log;
    if let Err(e) = lifecycle.access_log.retarget(log_target) {
        stop.send_replace(true);
        return Err(ReloadError(vec![format!(
            "{}: access_log: cannot open {log_target:?}: {e}",
            lifecycle.conf_path.display()
        )]));
    }
    for (tls, loaded) in certificates {
        tls.replace_certificates(loaded);
    }
    lifecycle.tickets.replace(tickets);
    crate::server::set_process_switches(&snapshot.engine.config.node);
    for warning in &loaded.warnings {
        log::warn!("{warning}");
    }
    Ok((snapshot, stop))
}

/// The settings a running process cannot take from a reload: `(field path, what)`.
pub fn needs_restart(started: &NodeSettings, new: &NodeSettings) -> Vec<(&'static str, String)> {
    let mut refused = Vec::new();
    let mut differs = |path: &'static str, changed: bool, what: &str| {
        if changed {
            refused.push((path, format!("{what} cannot change on reload; it needs a restart or a binary upgrade (portico run --upgrade)")));
        }
    };
    differs("name", started.name != new.name, "the node name");
    differs("tier", started.tier != new.tier, "the tier");
    let listeners = |s: &NodeSettings| {
        s.listeners
            .iter()
            .map(|l| (l.address, l.tls.as_ref().map(|t| t.http2)))
            .collect::<Vec<_>>()
    };
    differs(
        "listeners",
        listeners(started) != listeners(new),
        "the listeners (addresses, TLS or not, http2)",
    );
    let admin = |s: &NodeSettings| s.admin.as_ref().map(|a| (a.address, a.token.is_some()));
    differs(
        "admin",
        admin(started) != admin(new),
        "the admin listener (address, token or not)",
    );
    differs("server.threads", started.threads != new.threads, "threads");
    differs(
        "server.work_stealing",
        started.work_stealing != new.work_stealing,
        "work_stealing",
    );
    differs(
        "limits",
        started.limits != new.limits,
        "the client limits (each connection keeps the ones it was accepted with)",
    );
    differs(
        "server",
        started.grace_period != new.grace_period
            || started.graceful_shutdown_timeout != new.graceful_shutdown_timeout
            || started.upstream_keepalive_pool_size != new.upstream_keepalive_pool_size
            || started.upgrade_sock != new.upgrade_sock,
        "Pingora's server settings (grace_period, graceful_shutdown_timeout, upstream_keepalive_pool_size, upgrade_sock)",
    );
    differs(
        "cache",
        started.cache_memory_bytes != new.cache_memory_bytes
            || started.cache_max_object_bytes != new.cache_max_object_bytes
            || started.cache_lock_timeout != new.cache_lock_timeout
            || started.cache_tag_headers != new.cache_tag_headers,
        "the cache store (memory_bytes, max_object_bytes, lock_timeout, tag_headers)",
    );
    refused
}

/// Each refusal as a `file:line:col: error: path: message` line, placed in the node file.
fn place(conf_path: &std::path::Path, refused: &[(&'static str, String)]) -> Vec<String> {
    let text = std::fs::read_to_string(conf_path).unwrap_or_default();
    let mut report = Report::default();
    let file = report.add_file(conf_path, &text);
    for (path, message) in refused {
        report.error(file, path, message.clone());
    }
    report.items.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{build, Source};

    fn node(text: &str) -> NodeSettings {
        let source = Source {
            path: "conf/portico.yaml".into(),
            text: text.to_string(),
        };
        build(&source, std::path::Path::new("."), &[])
            .expect("valid node")
            .config
            .node
    }

    const BASE: &str = "name: n1\nlisteners:\n  - address: 127.0.0.1:8080\nadmin:\n  address: 127.0.0.1:9090\naccess_log: off\n";

    #[test]
    fn timeouts_log_target_and_drain_settings_may_change() {
        let changed = node(&format!(
            "{}server:\n  drain_delay: 1s\n  tunnel_drain_timeout: 2s\ndefaults:\n  tunnel_idle_timeout: 1m\n  cache_default_ttl: 1h\n  cache_heuristic_max: 2h\n",
            BASE.replace("access_log: off", "access_log: stdout")
        ));
        assert!(needs_restart(&node(BASE), &changed).is_empty());
    }

    #[test]
    fn splicing_and_send_batching_may_change() {
        let started = node(BASE);
        assert!(
            started.batch_sends && !started.tunnel_splice,
            "the defaults"
        );
        let changed = node(&format!(
            "{BASE}server:\n  batch_sends: false\n  tunnel_splice: true\n"
        ));
        assert!(!changed.batch_sends && changed.tunnel_splice);
        assert!(needs_restart(&started, &changed).is_empty());
    }

    #[test]
    fn listeners_admin_cache_and_name_need_a_restart() {
        let started = node(BASE);
        let changed = node(
            &BASE
                .replace("8080", "8081")
                .replace("9090", "9091")
                .replace("name: n1", "name: n2"),
        );
        let paths: Vec<_> = needs_restart(&started, &changed)
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(paths, ["name", "listeners", "admin"]);
        let bigger = node(&format!("{BASE}cache:\n  memory_bytes: 1GiB\n"));
        let refused = needs_restart(&started, &bigger);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].1.contains("restart or a binary upgrade"));
    }

    #[test]
    fn threads_take_each_others_tasks_only_when_there_are_several_unless_told() {
        let one = node(&format!("{BASE}server:\n  threads: 1\n"));
        let two = node(&format!("{BASE}server:\n  threads: 2\n"));
        let told = node(&format!(
            "{BASE}server:\n  threads: 2\n  work_stealing: false\n"
        ));
        assert!(!one.work_stealing);
        assert!(two.work_stealing);
        assert!(!told.work_stealing);
        let paths: Vec<_> = needs_restart(&two, &told)
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(paths, ["server.work_stealing"]);
    }

    #[test]
    fn refusals_are_placed_at_the_field_in_the_node_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portico.yaml");
        std::fs::write(&path, BASE).unwrap();
        let lines = place(&path, &[("listeners", "no".to_string())]);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with(&format!("{}:2:1: error: listeners: ", path.display())),
            "{}",
            lines[0]
        );
    }
}
