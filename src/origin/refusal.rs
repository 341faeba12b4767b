//! The answer of a group with `when_all_unhealthy: refuse` when no origin passes its
//! probes: a 503 that names the probe and its failure, and, for an HTTP probe, the usual
//! cause and its fix. Application Gateway for Containers probes a backend with plain HTTP
//! (`GET /` on the backend's port, expecting 200-399) unless a HealthCheckPolicy says
//! otherwise, so a backend that only speaks WebSocket is marked unhealthy.

use crate::config::model::{OriginGroup, ProbeProtocol};

use super::health::GroupHealth;

/// `text` with the group's addresses and host names replaced by `<origin>`.
fn hide_origins(group: &OriginGroup, mut text: String) -> String {
    for origin in &group.origins {
        text = text
            .replace(&origin.address.to_string(), "<origin>")
            .replace(&origin.address.ip().to_string(), "<origin>")
            .replace(origin.host_header.as_str(), "<origin>");
    }
    text
}

/// The `ErrorType::Custom` a refused request fails with (answered 503).
pub const NO_HEALTHY_ORIGIN: &str = "NoHealthyOrigin";

/// Why `group` has no origin to offer, for the client (no addresses in it).
pub fn explain(group: &OriginGroup, health: Option<&GroupHealth>) -> String {
    let Some(probe) = &group.health_probe else {
        return format!("origin group \"{}\" has no origin to try", group.name);
    };
    let kind = match probe.protocol {
        ProbeProtocol::Http => {
            let statuses: Vec<String> = probe
                .expect_status
                .iter()
                .map(|(low, high)| {
                    if low == high {
                        low.to_string()
                    } else {
                        format!("{low}-{high}")
                    }
                })
                .collect();
            format!(
                "HTTP probe {} {} expecting {}",
                probe.method,
                probe.path,
                statuses.join(",")
            )
        }
        ProbeProtocol::Tcp => "TCP probe".to_owned(),
        ProbeProtocol::Websocket => format!("WebSocket probe of {}", probe.path),
    };
    let last = health
        .and_then(|h| h.origin(0))
        .and_then(|o| o.report().last_error)
        .and_then(|outcome| outcome.error)
        .map_or(String::new(), |e| format!(": {}", hide_origins(group, e)));
    let mut text = format!(
        "no healthy upstream: every origin of group \"{}\" fails its {kind}{last}",
        group.name
    );
    if probe.protocol == ProbeProtocol::Http {
        text.push_str(". A backend that only speaks WebSocket fails a plain HTTP probe: on Application Gateway for Containers, add a HealthCheckPolicy with a TCP probe (or an HTTP path the backend answers with 200-399); here, set health_probe.protocol: tcp (portico emulate --probe tcp)");
    }
    text
}
