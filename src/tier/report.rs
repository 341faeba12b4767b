//! The tiers in `/status` and `/metrics`: this node's tier, whether it shields everything,
//! whom it trusts, and each shield with its health.

use std::fmt::Write;

use serde_json::{json, Value};

use crate::config::model::Tier;
use crate::observability::metrics::family;
use crate::origin::health::Verdict;

use super::Tiers;

/// The `tiers` object of `/status`: each shield's address, the `shields:` entry it came
/// from, and its health as the probes see it.
pub fn status(tiers: &Tiers) -> Value {
    let shields: Vec<Value> = tiers.ring().map_or(Vec::new(), |ring| {
        ring.group()
            .origins
            .iter()
            .enumerate()
            .map(|(index, shield)| {
                let report = ring.health().origin(index).map(|h| h.report());
                json!({
                    "address": shield.name,
                    "entry": shield.host_header,
                    "health": report.as_ref().map_or("unknown", |r| r.verdict.as_str()),
                    "health_changed_ms": report.as_ref().and_then(|r| r.changed_ms),
                    "probes": report.as_ref().map_or(0, |r| r.probes),
                    "last_error": report
                        .as_ref()
                        .and_then(|r| r.last_error.as_ref())
                        .and_then(|e| e.error.clone()),
                })
            })
            .collect()
    });
    json!({
        "tier": tier_name(tiers.tier),
        "shield_all": tiers.shield_all,
        "shields": shields,
        "trusted_edges": tiers
            .trusted_edges()
            .iter()
            .map(|net| format!("{}/{}", net.addr, net.prefix_len))
            .collect::<Vec<_>>(),
        "discovery": tiers.discovery().map(|state| json!({
            "resolutions": state.resolutions,
            "last_error": state.last_error,
        })),
    })
}

/// `portico_shield_healthy{shield="ip:port"}`: 1 when the ring may send keys to a shield.
pub fn metrics(tiers: &Tiers, out: &mut String) {
    let Some(ring) = tiers.ring() else {
        return;
    };
    family(
        out,
        "portico_shield_healthy",
        "gauge",
        "1 when a shield takes its keys (healthy), else 0 (its keys go to the next shield).",
    );
    for (index, shield) in ring.group().origins.iter().enumerate() {
        let up = ring
            .health()
            .origin(index)
            .is_some_and(|h| h.verdict() == Verdict::Healthy);
        let _ = writeln!(
            out,
            "portico_shield_healthy{{shield=\"{}\"}} {}",
            shield.name,
            u8::from(up)
        );
    }
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Edge => "edge",
        Tier::Shield => "shield",
    }
}
