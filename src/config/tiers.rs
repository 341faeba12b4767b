//! Stage 2 for the node's tier settings: `shields`, `shield_all`, `shield_probe`,
//! `shield_tls`, `trusted_edges` and `resolve_interval` (SPEC §5; how they are used:
//! `crate::tier`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::conditions::parse_network;
use super::diagnostics::{FileId, Report};
use super::duration_field;
use super::file::{FileHealthProbe, FileNode, FileShieldTls, ProbeProtocol, Tier};
use super::model::{HealthProbe, ShieldAddress, ShieldTls, TierSettings};
use super::origins::build_probe;
use super::tls::build_ca_file;
use crate::tier::discovery::shield_host;

/// Shield names are resolved again this often unless `resolve_interval` says otherwise.
const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

pub fn build_tiers(
    report: &mut Report,
    file: FileId,
    conf_dir: &Path,
    raw: &FileNode,
) -> TierSettings {
    let tier = raw.tier.unwrap_or(Tier::Edge);
    let hosts_file = raw.hosts_file.as_ref().map(|path| conf_dir.join(path));
    if let Some(path) = &hosts_file {
        if let Err(e) = std::fs::read_to_string(path) {
            report.error(
                file,
                "hosts_file",
                format!("cannot read {}: {e}", path.display()),
            );
        }
    }
    let mut shields = Vec::new();
    let mut seen = HashSet::new();
    for (i, entry) in raw.shields.iter().enumerate() {
        let at = format!("shields[{i}]");
        let Some(addresses) = resolve(report, file, &at, entry, hosts_file.as_deref()) else {
            continue;
        };
        for address in addresses {
            if !seen.insert(address) {
                report.error(
                    file,
                    &at,
                    format!(
                        "shield address {address} is listed twice (a key must map to one shield)"
                    ),
                );
                continue;
            }
            shields.push(ShieldAddress {
                entry: entry.clone(),
                address,
            });
        }
    }
    if raw.shield_all && raw.shields.is_empty() {
        report.error(
            file,
            "shield_all",
            "shield_all needs `shields:` (there is no shield to send everything through)",
        );
    }
    if raw.shield_probe.is_some() && raw.shields.is_empty() {
        report.warning(
            file,
            "shield_probe",
            "shield_probe is ignored: this node has no `shields:`",
        );
    }
    let mut trusted_edges = Vec::new();
    for (i, text) in raw.trusted_edges.iter().enumerate() {
        match parse_network(text) {
            Some(network) => trusted_edges.push(network),
            None => report.error(
                file,
                &format!("trusted_edges[{i}]"),
                format!("\"{text}\" is not an address or CIDR block"),
            ),
        }
    }
    if !raw.trusted_edges.is_empty() && tier != Tier::Shield {
        report.error(
            file,
            "trusted_edges",
            "trusted_edges is read only on a shield (tier: shield)",
        );
    }
    if tier == Tier::Shield && raw.trusted_edges.is_empty() {
        report.warning(
            file,
            "tier",
            "a shield without trusted_edges treats its edges as clients: rules see the edge's address and scheme, not the client's",
        );
    }
    let resolve_interval = duration_field(
        report,
        file,
        "resolve_interval",
        raw.resolve_interval.as_deref(),
        DEFAULT_RESOLVE_INTERVAL,
    );
    if resolve_interval < Duration::from_secs(1) {
        report.error(
            file,
            "resolve_interval",
            "resolve_interval must be at least 1s",
        );
    }
    let shield_probe = match &raw.shield_probe {
        Some(probe) => build_probe(report, file, "shield_probe", probe),
        None => default_probe(report, file),
    };
    let shield_tls = raw
        .shield_tls
        .as_ref()
        .and_then(|tls| build_shield_tls(report, file, conf_dir, tls, &raw.shields));
    TierSettings {
        entries: raw.shields.clone(),
        shields,
        hosts_file,
        shield_all: raw.shield_all,
        shield_probe,
        trusted_edges,
        resolve_interval,
        shield_tls,
    }
}

/// `shield_tls`: its CA file read and checked now; a `server_name` that is a valid TLS
/// name; each `shields:` entry's host one otherwise.
fn build_shield_tls(
    report: &mut Report,
    file: FileId,
    conf_dir: &Path,
    raw: &FileShieldTls,
    entries: &[String],
) -> Option<Arc<ShieldTls>> {
    if entries.is_empty() {
        report.error(
            file,
            "shield_tls",
            "shield_tls needs `shields:` (there is no shield to speak TLS to)",
        );
        return None;
    }
    let valid = |name: &str| rustls::pki_types::ServerName::try_from(name.to_owned()).is_ok();
    match &raw.server_name {
        Some(name) if !valid(name) => report.error(
            file,
            "shield_tls.server_name",
            format!("\"{name}\" is not a DNS name or an IP address"),
        ),
        Some(_) => {}
        None => {
            for (i, entry) in entries.iter().enumerate() {
                if !valid(shield_host(entry)) {
                    report.error(
                        file,
                        &format!("shields[{i}]"),
                        format!("\"{entry}\" has no host a certificate can name: set shield_tls.server_name"),
                    );
                }
            }
        }
    }
    let ca = match &raw.ca_file {
        Some(path) => Some(build_ca_file(
            report,
            file,
            "shield_tls.ca_file",
            conf_dir,
            path,
        )?),
        None => None,
    };
    Some(Arc::new(ShieldTls {
        server_name: raw.server_name.clone(),
        ca,
    }))
}

/// A shield is probed by a TCP connect every 5 s unless `shield_probe` says otherwise: a
/// shield serves only the hosts its rules name, so no HTTP path is right for every fleet.
fn default_probe(report: &mut Report, file: FileId) -> HealthProbe {
    let raw = FileHealthProbe {
        protocol: Some(ProbeProtocol::Tcp),
        method: None,
        path: None,
        host: None,
        interval: None,
        timeout: None,
        healthy_threshold: None,
        unhealthy_threshold: None,
        expect_status: Vec::new(),
        use_tls: false,
    };
    build_probe(report, file, "shield_probe", &raw)
}

/// Every address `host:port` resolves to, sorted (the ring must not depend on the order a
/// resolver answers in). A name that does not resolve at load is an error.
fn resolve(
    report: &mut Report,
    file: FileId,
    at: &str,
    text: &str,
    hosts_file: Option<&Path>,
) -> Option<Vec<SocketAddr>> {
    match crate::tier::discovery::resolve_entry(text, hosts_file) {
        Ok(addresses) => Some(addresses),
        Err(why) => {
            report.error(
                file,
                at,
                format!("\"{text}\" is not a host:port that resolves ({why}); a shield name must resolve when the config loads"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{build, Severity, Source};

    fn load(extra: &str) -> Result<crate::config::Loaded, Vec<String>> {
        let node = Source {
            path: "portico.yaml".into(),
            text: format!("name: n1\nlisteners:\n  - address: 127.0.0.1:8080\n{extra}"),
        };
        build(&node, Path::new("."), &[]).map_err(|e| {
            e.diagnostics()
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.to_string())
                .collect()
        })
    }

    fn has_in(errors: &[String], needle: &str) -> bool {
        errors.iter().any(|e| e.contains(needle))
    }

    #[test]
    fn an_edge_with_shields() {
        let loaded = load("shields: [\"127.0.0.1:8091\", \"127.0.0.1:8090\"]\nshield_all: true\nresolve_interval: 10s\n")
            .unwrap();
        let tiers = &loaded.config.node.tiers;
        let addresses: Vec<String> = tiers
            .shields
            .iter()
            .map(|s| s.address.to_string())
            .collect();
        assert_eq!(addresses, ["127.0.0.1:8091", "127.0.0.1:8090"]);
        assert!(tiers.shield_all);
        assert_eq!(tiers.resolve_interval.as_secs(), 10);
        assert_eq!(
            tiers.shield_probe.protocol,
            crate::config::model::ProbeProtocol::Tcp
        );
    }

    #[test]
    fn defaults_without_tiers() {
        let tiers = load("").unwrap().config.node.tiers;
        assert!(tiers.shields.is_empty() && !tiers.shield_all);
        assert_eq!(tiers.resolve_interval.as_secs(), 30);
    }

    #[test]
    fn a_shield_trusts_networks() {
        let tiers = load("tier: shield\ntrusted_edges: [\"10.1.0.0/16\", \"127.0.0.1\"]\n")
            .unwrap()
            .config
            .node
            .tiers;
        assert!(tiers.trusted_edges[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!tiers.trusted_edges[0].contains("10.2.0.1".parse().unwrap()));
        assert!(tiers.trusted_edges[1].contains("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn mistakes_are_placed_errors() {
        let errors = load("shields: [\"no-port\", \"127.0.0.1:1\", \"127.0.0.1:1\"]\ntrusted_edges: [\"10.0.0.0/40\"]\nresolve_interval: 10ms\n").unwrap_err();
        let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
        assert!(
            has("portico.yaml:4:11: error: shields[0]: \"no-port\" is not a host:port"),
            "{errors:#?}"
        );
        assert!(
            has("shields[2]: shield address 127.0.0.1:1 is listed twice"),
            "{errors:#?}"
        );
        assert!(
            has("trusted_edges[0]: \"10.0.0.0/40\" is not an address"),
            "{errors:#?}"
        );
        assert!(
            has("trusted_edges: trusted_edges is read only on a shield"),
            "{errors:#?}"
        );
        assert!(
            has("resolve_interval: resolve_interval must be at least 1s"),
            "{errors:#?}"
        );
        let errors = load("shield_all: true\nshield_prob: {}\n").unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("unknown field `shield_prob`")),
            "{errors:#?}"
        );
        let errors = load("shields: [\"shields.invalid:8090\"]\n").unwrap_err();
        assert!(
            has_in(
                &errors,
                "shields[0]: \"shields.invalid:8090\" is not a host:port that resolves"
            ),
            "{errors:#?}"
        );
        let errors = load("hosts_file: /nonexistent/hosts\n").unwrap_err();
        assert!(
            has_in(&errors, "hosts_file: cannot read /nonexistent/hosts"),
            "{errors:#?}"
        );
        let errors = load("shield_all: true\n").unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("shield_all needs `shields:`")),
            "{errors:#?}"
        );
    }

    #[test]
    fn shield_tls_is_checked_at_load() {
        let tiers = load("shields: [\"127.0.0.1:8090\"]\nshield_tls: {}\n")
            .unwrap()
            .config
            .node
            .tiers;
        let tls = tiers.shield_tls.unwrap();
        assert!(tls.server_name.is_none() && tls.ca.is_none());
        let errors = load("shield_tls: { server_name: a.example }\n").unwrap_err();
        assert!(
            has_in(&errors, "shield_tls: shield_tls needs `shields:`"),
            "{errors:#?}"
        );
        let errors = load(
            "shields: [\"127.0.0.1:8090\"]\nshield_tls: { server_name: \"not a name\", ca_file: /nonexistent/ca.pem, sni: x }\n",
        )
        .unwrap_err();
        assert!(has_in(&errors, "unknown field `sni`"), "{errors:#?}");
        let errors = load(
            "shields: [\"127.0.0.1:8090\"]\nshield_tls: { server_name: \"not a name\", ca_file: /nonexistent/ca.pem }\n",
        )
        .unwrap_err();
        assert!(
            has_in(
                &errors,
                "shield_tls.server_name: \"not a name\" is not a DNS name"
            ),
            "{errors:#?}"
        );
        assert!(has_in(&errors, "shield_tls.ca_file"), "{errors:#?}");
    }
}
