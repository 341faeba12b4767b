//! The origin groups part of `/status`: every group, its probe, and each origin's health,
//! last probe (time, status, latency) and last error.

use serde_json::{json, Value};

use crate::config::model::{HealthProbe, OriginGroup};
use crate::origin::health::ProbeOutcome;
use crate::origin::OriginPool;

/// One JSON object per origin group, in configuration order.
pub fn origin_groups(groups: &[OriginGroup], pool: &OriginPool) -> Vec<Value> {
    groups
        .iter()
        .enumerate()
        .map(|(index, group)| {
            let health = pool.health(index);
            let origins: Vec<Value> = group
                .origins
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    let report = health.and_then(|h| h.origin(i)).map(|h| h.report());
                    let state = match &report {
                        _ if !o.enabled => "disabled",
                        Some(report) => report.verdict.as_str(),
                        None => "unknown",
                    };
                    json!({
                        "name": o.name,
                        "address": o.address.to_string(),
                        "host_header": o.host_header,
                        "priority": o.priority,
                        "weight": o.weight,
                        "enabled": o.enabled,
                        "health": state,
                        "health_changed_ms": report.as_ref().and_then(|r| r.changed_ms),
                        "consecutive_successes": report.as_ref().map_or(0, |r| r.consecutive_successes),
                        "consecutive_failures": report.as_ref().map_or(0, |r| r.consecutive_failures),
                        "probes": report.as_ref().map_or(0, |r| r.probes),
                        "last_probe": report.as_ref().and_then(|r| r.last_probe.as_ref()).map(probe_json),
                        "last_error": report.as_ref().and_then(|r| r.last_error.as_ref()).map(probe_json),
                    })
                })
                .collect();
            json!({
                "name": group.name,
                "max_retries": group.max_retries,
                "health_probe": group.health_probe.as_ref().map(probe_settings),
                "all_unhealthy": health.is_some_and(|h| h.all_unhealthy()),
                "origins": origins,
            })
        })
        .collect()
}

fn probe_json(outcome: &ProbeOutcome) -> Value {
    json!({
        "time_ms": outcome.time_ms as u64,
        "status": outcome.status,
        "latency_ms": (outcome.latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "passed": outcome.passed(),
        "error": outcome.error,
    })
}

fn probe_settings(probe: &HealthProbe) -> Value {
    let protocol = match probe.protocol {
        crate::config::model::ProbeProtocol::Http => "http",
        crate::config::model::ProbeProtocol::Tcp => "tcp",
        crate::config::model::ProbeProtocol::Websocket => "websocket",
    };
    json!({
        "protocol": protocol,
        "method": probe.method.as_str(),
        "path": probe.path,
        "host": probe.host,
        "interval_ms": probe.interval.as_millis() as u64,
        "timeout_ms": probe.timeout.as_millis() as u64,
        "healthy_threshold": probe.healthy_threshold,
        "unhealthy_threshold": probe.unhealthy_threshold,
        "expect_status": probe.expect_status.iter().map(|&(low, high)| format!("{low}-{high}")).collect::<Vec<_>>(),
    })
}
