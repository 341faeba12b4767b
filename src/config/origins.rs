//! Stage 2 for `origin_groups`: addresses, priorities, weights and health probes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::bounded_duration_field;
use super::diagnostics::{FileId, Report};
use super::file::{FileHealthProbe, FileOriginGroup, ProbeProtocol, WhenAllUnhealthy};
use super::model::{HealthProbe, Origin, OriginGroup, OriginTimeouts};
use super::timeouts::build_origin_timeouts;
use super::tls::build_ca_file;
use crate::tier::discovery::resolve_entry;

/// Front Door's ranges.
const PRIORITIES: std::ops::RangeInclusive<u32> = 1..=5;
const WEIGHTS: std::ops::RangeInclusive<u32> = 1..=1000;
pub const DEFAULT_WEIGHT: u32 = 50;
/// Front Door's default HTTPS port for an origin.
const DEFAULT_HTTPS_PORT: u16 = 443;

pub fn build_origin_groups(
    report: &mut Report,
    raw: &[(FileId, usize, &FileOriginGroup)],
    default_timeouts: OriginTimeouts,
    hosts_file: Option<&Path>,
) -> (Vec<OriginGroup>, HashMap<String, usize>) {
    let mut groups = Vec::with_capacity(raw.len());
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut first_seen: HashMap<&str, String> = HashMap::new();
    for &(file, index, group) in raw {
        let at = format!("origin_groups[{index}]");
        if let Some(first) = first_seen.get(group.name.as_str()) {
            report.error(
                file,
                &format!("{at}.name"),
                format!(
                    "duplicate origin group name \"{}\" (first defined at {first})",
                    group.name
                ),
            );
            continue;
        }
        first_seen.insert(&group.name, report.place(file, &format!("{at}.name")));
        if group.origins.is_empty() {
            report.error(
                file,
                &format!("{at}.origins"),
                "an origin group needs at least one origin",
            );
        }
        let origins: Vec<Origin> = group
            .origins
            .iter()
            .enumerate()
            .filter_map(|(i, origin)| {
                let at = format!("{at}.origins[{i}]");
                let address = resolve(
                    report,
                    file,
                    &format!("{at}.address"),
                    &origin.address,
                    hosts_file,
                )?;
                let priority = origin.priority.unwrap_or(1);
                if !PRIORITIES.contains(&priority) {
                    report.error(
                        file,
                        &format!("{at}.priority"),
                        format!("priority {priority} is out of range 1..=5"),
                    );
                }
                let weight = origin.weight.unwrap_or(DEFAULT_WEIGHT);
                if !WEIGHTS.contains(&weight) {
                    report.error(
                        file,
                        &format!("{at}.weight"),
                        format!("weight {weight} is out of range 1..=1000"),
                    );
                }
                let host_header = origin
                    .host_header
                    .clone()
                    .unwrap_or_else(|| origin.address.clone());
                let Ok(host_value) = http::HeaderValue::from_str(&host_header) else {
                    report.error(
                        file,
                        &format!("{at}.host_header"),
                        format!("{host_header:?} cannot be a Host header (control characters)"),
                    );
                    return None;
                };
                Some(Origin {
                    name: origin
                        .name
                        .clone()
                        .unwrap_or_else(|| origin.address.clone()),
                    address,
                    resolved_from: origin
                        .address
                        .parse::<SocketAddr>()
                        .is_err()
                        .then(|| origin.address.clone()),
                    host_header,
                    host_value,
                    priority,
                    weight,
                    enabled: origin.enabled,
                    https_address: SocketAddr::new(
                        address.ip(),
                        origin.https_port.unwrap_or(DEFAULT_HTTPS_PORT),
                    ),
                })
            })
            .collect();
        if !group.origins.is_empty() && group.origins.iter().all(|o| !o.enabled) {
            report.error(
                file,
                &format!("{at}.origins"),
                "every origin of the group is disabled",
            );
        }
        let health_probe = group
            .health_probe
            .as_ref()
            .map(|probe| build_probe(report, file, &format!("{at}.health_probe"), probe));
        let timeouts = build_origin_timeouts(
            report,
            file,
            &format!("{at}.timeouts"),
            group.timeouts.as_ref(),
            default_timeouts,
        );
        let when_all_unhealthy = group.when_all_unhealthy.unwrap_or_default();
        if when_all_unhealthy == WhenAllUnhealthy::Refuse && health_probe.is_none() {
            report.warning(
                file,
                &format!("{at}.when_all_unhealthy"),
                "refuse has no effect without a health_probe (unprobed origins are always healthy)",
            );
        }
        by_name.insert(group.name.clone(), groups.len());
        groups.push(OriginGroup {
            when_all_unhealthy,
            timeouts,
            name: group.name.clone(),
            origins,
            health_probe,
            max_retries: group.max_retries.unwrap_or(1),
            ca: group.ca_file.as_deref().and_then(|ca| {
                let dir = report.file_dir(file).to_path_buf();
                build_ca_file(report, file, &format!("{at}.ca_file"), &dir, ca)
            }),
        });
    }
    (groups, by_name)
}

/// Resolves `host:port` at load (`hosts_file` first, as for shields): a name that does not
/// resolve is a config error. Of several addresses, the lowest: the same one every time the
/// name gives the same set, so that `crate::lifecycle::resolve` sees a change only when
/// the set changed.
fn resolve(
    report: &mut Report,
    file: FileId,
    path: &str,
    text: &str,
    hosts_file: Option<&Path>,
) -> Option<SocketAddr> {
    match resolve_entry(text, hosts_file) {
        Ok(addresses) => addresses.first().copied(),
        Err(_) => {
            report.error(file, path, format!("\"{text}\" is not a reachable host:port (it must resolve when the config loads)"));
            None
        }
    }
}

pub(super) fn build_probe(
    report: &mut Report,
    file: FileId,
    at: &str,
    raw: &FileHealthProbe,
) -> HealthProbe {
    warn_ignored_probe_fields(report, file, at, raw);
    let method = match raw.method.as_deref().unwrap_or("HEAD") {
        "HEAD" => http::Method::HEAD,
        "GET" => http::Method::GET,
        other => {
            report.error(
                file,
                &format!("{at}.method"),
                format!("probe method \"{other}\" must be HEAD or GET"),
            );
            http::Method::HEAD
        }
    };
    let path = raw.path.clone().unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') {
        report.error(
            file,
            &format!("{at}.path"),
            "the probe path must start with '/'",
        );
    }
    let interval = bounded_duration_field(
        report,
        file,
        &format!("{at}.interval"),
        raw.interval.as_deref(),
        Duration::from_secs(5),
        Duration::from_millis(100),
    );
    let timeout = bounded_duration_field(
        report,
        file,
        &format!("{at}.timeout"),
        raw.timeout.as_deref(),
        Duration::from_secs(3),
        Duration::from_millis(10),
    );
    if timeout > interval {
        report.warning(
            file,
            &format!("{at}.timeout"),
            "the probe timeout is longer than its interval",
        );
    }
    let mut threshold = |name: &str, value: Option<u32>| {
        let value = value.unwrap_or(1);
        if value == 0 {
            report.error(
                file,
                &format!("{at}.{name}"),
                "a threshold must be at least 1",
            );
        }
        value.max(1)
    };
    let healthy_threshold = threshold("healthy_threshold", raw.healthy_threshold);
    let unhealthy_threshold = threshold("unhealthy_threshold", raw.unhealthy_threshold);
    let mut expect_status = Vec::new();
    for (i, range) in raw.expect_status.iter().enumerate() {
        match parse_status_range(range) {
            Some(range) => expect_status.push(range),
            None => report.error(
                file,
                &format!("{at}.expect_status[{i}]"),
                format!("\"{range}\" is not a status or range like 200-399"),
            ),
        }
    }
    if expect_status.is_empty() {
        expect_status.push((200, 399));
    }
    HealthProbe {
        protocol: raw.protocol.unwrap_or(ProbeProtocol::Http),
        method,
        path,
        host: raw.host.clone(),
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        expect_status,
        use_tls: raw.use_tls,
    }
}

fn parse_status_range(text: &str) -> Option<(u16, u16)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low: u16 = low.trim().parse().ok()?;
    let high: u16 = high.trim().parse().ok()?;
    ((100..=599).contains(&low) && (low..=599).contains(&high)).then_some((low, high))
}

/// A `tcp` probe only connects, and a `websocket` probe always sends `GET` and expects a
/// `101`: settings they never use are most likely a mistake in `protocol`.
fn warn_ignored_probe_fields(report: &mut Report, file: FileId, at: &str, raw: &FileHealthProbe) {
    let protocol = raw.protocol.unwrap_or(ProbeProtocol::Http);
    let (name, ignored): (&str, &[&str]) = match protocol {
        ProbeProtocol::Http => return,
        ProbeProtocol::Tcp => ("tcp", &["method", "path", "host", "expect_status"]),
        ProbeProtocol::Websocket => ("websocket", &["method", "expect_status"]),
    };
    let set = [
        ("method", raw.method.is_some()),
        ("path", raw.path.is_some()),
        ("host", raw.host.is_some()),
        ("expect_status", !raw.expect_status.is_empty()),
    ];
    for (field, _) in set.iter().filter(|(f, set)| *set && ignored.contains(f)) {
        report.warning(
            file,
            &format!("{at}.{field}"),
            format!("a {name} probe does not use `{field}`: it is ignored"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::parse_status_range;

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200-399"), Some((200, 399)));
        assert_eq!(parse_status_range("204"), Some((204, 204)));
        assert_eq!(parse_status_range("399-200"), None);
        assert_eq!(parse_status_range("abc"), None);
    }
}
