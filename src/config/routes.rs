//! Stage 2 for `routes`: domains, patterns, cross-references and the WebSocket warnings.

use std::collections::HashMap;
use std::time::Duration;

use super::actions::query_string_mode;
use super::diagnostics::{FileId, Report};
use super::file::{
    CacheBehavior, FileRoute, ForwardingProtocol, OnCachedUpgrade, Protocol, QueryStringBehavior,
};
use super::model::{
    Action, DomainPattern, MethodSet, PathPattern, ProtocolSet, Route, RouteCache, RuleSet,
    TunnelLimits,
};
use super::{bounded_duration_field, duration_field};

pub struct RouteDefaults {
    pub on_cached_upgrade: OnCachedUpgrade,
    pub tunnel: TunnelLimits,
}

pub fn build_routes(
    report: &mut Report,
    raw: &[(FileId, usize, &FileRoute)],
    groups: &HashMap<String, usize>,
    rule_sets: &HashMap<String, usize>,
    compiled_sets: &[RuleSet],
    defaults: &RouteDefaults,
    listener_names: &[&str],
) -> Vec<Route> {
    let mut routes = Vec::with_capacity(raw.len());
    let mut first_seen: HashMap<&str, String> = HashMap::new();
    // (domain or "*", pattern) -> the routes declaring it (name, place, listener scope), to
    // refuse identical patterns unless their listener scopes are disjoint.
    type Claim = (String, String, Vec<String>);
    let mut claimed: HashMap<(String, String), Vec<Claim>> = HashMap::new();
    for &(file, index, route) in raw {
        let at = format!("routes[{index}]");
        if let Some(first) = first_seen.get(route.name.as_str()) {
            report.error(
                file,
                &format!("{at}.name"),
                format!(
                    "duplicate route name \"{}\" (first defined at {first})",
                    route.name
                ),
            );
            continue;
        }
        first_seen.insert(&route.name, report.place(file, &format!("{at}.name")));

        let domains: Vec<DomainPattern> = route
            .domains
            .iter()
            .enumerate()
            .filter_map(|(i, d)| domain_pattern(report, file, &format!("{at}.domains[{i}]"), d))
            .collect();
        if route.patterns.is_empty() {
            report.error(
                file,
                &format!("{at}.patterns"),
                "a route needs at least one pattern",
            );
        }
        let patterns: Vec<PathPattern> = route
            .patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| path_pattern(report, file, &format!("{at}.patterns[{i}]"), p))
            .collect();
        let domain_keys: Vec<String> = if route.domains.is_empty() {
            vec!["*".into()]
        } else {
            route
                .domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect()
        };
        let mut listeners: Vec<String> = Vec::with_capacity(route.listeners.len());
        for (i, name) in route.listeners.iter().enumerate() {
            if !listener_names.contains(&name.as_str()) {
                let known = if listener_names.is_empty() {
                    "no listener has a name".to_string()
                } else {
                    format!("named listeners: {}", listener_names.join(", "))
                };
                report.error(
                    file,
                    &format!("{at}.listeners[{i}]"),
                    format!("no listener named \"{name}\" ({known})"),
                );
            } else if !listeners.contains(name) {
                listeners.push(name.clone());
            }
        }
        // Sorted: the scope is part of the cache key, and its order means nothing.
        listeners.sort();
        let overlaps = |other: &[String]| {
            listeners.is_empty() || other.is_empty() || other.iter().any(|l| listeners.contains(l))
        };
        for (i, pattern) in route.patterns.iter().enumerate() {
            for domain in &domain_keys {
                let here = report.place(file, &format!("{at}.patterns[{i}]"));
                let claims = claimed
                    .entry((domain.clone(), pattern.clone()))
                    .or_default();
                if let Some((other, place, _)) = claims.iter().find(|(_, _, scope)| overlaps(scope))
                {
                    report.error(file, &format!("{at}.patterns[{i}]"), format!("pattern \"{pattern}\" on domain {domain} is already served by route \"{other}\" ({place}) on the same listeners; give both routes disjoint `listeners`"));
                } else {
                    claims.push((route.name.clone(), here, listeners.clone()));
                }
            }
        }

        let mut methods = if route.methods.is_empty() {
            MethodSet::ANY
        } else {
            MethodSet(0)
        };
        for (i, method) in route.methods.iter().enumerate() {
            match MethodSet::bit(method) {
                Some(bit) => methods.0 |= bit,
                None => report.error(
                    file,
                    &format!("{at}.methods[{i}]"),
                    format!("unknown method \"{method}\""),
                ),
            }
        }
        let protocols = if route.protocols.is_empty() {
            ProtocolSet {
                http: true,
                https: true,
            }
        } else {
            ProtocolSet {
                http: route.protocols.contains(&Protocol::Http),
                https: route.protocols.contains(&Protocol::Https),
            }
        };
        let origin_group = match groups.get(&route.origin_group) {
            Some(index) => *index,
            None => {
                report.error(
                    file,
                    &format!("{at}.origin_group"),
                    format!("no origin group named \"{}\"", route.origin_group),
                );
                0
            }
        };
        let rule_set_ids: Vec<usize> = route
            .rule_sets
            .iter()
            .enumerate()
            .filter_map(|(i, name)| match rule_sets.get(name) {
                Some(index) => Some(*index),
                None => {
                    report.error(
                        file,
                        &format!("{at}.rule_sets[{i}]"),
                        format!("no rule set named \"{name}\""),
                    );
                    None
                }
            })
            .collect();
        if let Some(path) = &route.origin_path {
            if !path.starts_with('/') {
                report.error(
                    file,
                    &format!("{at}.origin_path"),
                    "origin_path must start with '/'",
                );
            }
        }
        let forwarding_protocol = route
            .forwarding_protocol
            .unwrap_or(ForwardingProtocol::MatchRequest);
        let cache = route_cache(report, file, &format!("{at}.cache"), route);
        let tunnel = TunnelLimits {
            idle_timeout: bounded_duration_field(
                report,
                file,
                &format!("{at}.tunnel_idle_timeout"),
                route.tunnel_idle_timeout.as_deref(),
                defaults.tunnel.idle_timeout,
                Duration::from_millis(100),
            ),
            max_lifetime: bounded_duration_field(
                report,
                file,
                &format!("{at}.tunnel_max_lifetime"),
                route.tunnel_max_lifetime.as_deref(),
                defaults.tunnel.max_lifetime,
                Duration::from_millis(100),
            ),
            linger: bounded_duration_field(
                report,
                file,
                &format!("{at}.tunnel_linger"),
                route.tunnel_linger.as_deref(),
                defaults.tunnel.linger,
                Duration::from_millis(100),
            ),
        };
        let on_cached_upgrade = route
            .on_cached_upgrade
            .unwrap_or(defaults.on_cached_upgrade);
        warn_about_upgrades(
            report,
            file,
            &at,
            route,
            &cache,
            on_cached_upgrade,
            &rule_set_ids,
            compiled_sets,
        );

        routes.push(Route {
            name: route.name.clone(),
            domains,
            patterns,
            listeners,
            methods,
            protocols,
            origin_group,
            origin_path: route
                .origin_path
                .clone()
                .map(|p| p.trim_end_matches('/').to_string()),
            forwarding_protocol,
            https_redirect: route.https_redirect,
            cache,
            websocket: route.websocket,
            on_cached_upgrade,
            tunnel,
            rule_sets: rule_set_ids,
        });
    }
    routes
}

fn domain_pattern(
    report: &mut Report,
    file: FileId,
    path: &str,
    text: &str,
) -> Option<DomainPattern> {
    let lower = text.to_ascii_lowercase();
    let body = lower.strip_prefix("*.").unwrap_or(&lower);
    let valid = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !body.starts_with('.')
        && !body.ends_with('.');
    if !valid {
        report.error(file, path, format!("\"{text}\" is not a domain; write www.example.com or *.example.com (omit `domains` to serve any host)"));
        return None;
    }
    Some(match lower.strip_prefix('*') {
        Some(suffix) => DomainPattern::Wildcard(suffix.to_string()),
        None => DomainPattern::Exact(lower),
    })
}

fn path_pattern(report: &mut Report, file: FileId, path: &str, text: &str) -> Option<PathPattern> {
    if !text.starts_with('/') {
        report.error(
            file,
            path,
            format!("pattern \"{text}\" must start with '/'"),
        );
        return None;
    }
    match text.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') && !prefix.contains('*') => {
            Some(PathPattern::Prefix(prefix.to_string()))
        }
        None if !text.contains('*') => Some(PathPattern::Exact(text.to_string())),
        _ => {
            report.error(
                file,
                path,
                format!(
                    "pattern \"{text}\": '*' may only end a pattern, after a '/' (e.g. /static/*)"
                ),
            );
            None
        }
    }
}

fn route_cache(report: &mut Report, file: FileId, at: &str, route: &FileRoute) -> RouteCache {
    let Some(raw) = &route.cache else {
        return RouteCache {
            enabled: false,
            query_string: super::model::QueryStringMode::UseAll,
            behavior: CacheBehavior::HonorOrigin,
            duration: None,
            stale_while_revalidate: None,
            stale_if_error: None,
        };
    };
    let behavior = raw.behavior.unwrap_or(CacheBehavior::HonorOrigin);
    let optional = |report: &mut Report, field: &str, value: Option<&str>| {
        value.map(|text| {
            duration_field(
                report,
                file,
                &format!("{at}.{field}"),
                Some(text),
                Default::default(),
            )
        })
    };
    let duration = optional(report, "duration", raw.duration.as_deref());
    if behavior != CacheBehavior::HonorOrigin && duration.is_none() {
        report.error(
            file,
            &format!("{at}.behavior"),
            "override_always and override_if_origin_missing need a `duration`",
        );
    }
    if behavior == CacheBehavior::HonorOrigin && duration.is_some() {
        report.error(
            file,
            &format!("{at}.duration"),
            "`duration` needs behavior override_always or override_if_origin_missing",
        );
    }
    RouteCache {
        enabled: raw.enabled,
        query_string: query_string_mode(
            report,
            file,
            at,
            raw.query_string.unwrap_or(QueryStringBehavior::UseAll),
            Some(&raw.query_params),
        ),
        behavior,
        duration,
        stale_while_revalidate: optional(
            report,
            "stale_while_revalidate",
            raw.stale_while_revalidate.as_deref(),
        ),
        stale_if_error: optional(report, "stale_if_error", raw.stale_if_error.as_deref()),
    }
}

/// `portico check` warns wherever a WebSocket upgrade can meet a cache (SPEC §3).
#[allow(clippy::too_many_arguments)]
fn warn_about_upgrades(
    report: &mut Report,
    file: FileId,
    at: &str,
    route: &FileRoute,
    cache: &RouteCache,
    mode: OnCachedUpgrade,
    rule_sets: &[usize],
    compiled: &[RuleSet],
) {
    let rule_enables_caching = rule_sets
        .iter()
        .flat_map(|&s| compiled[s].rules.iter())
        .find(|rule| {
            rule.actions.iter().any(|a| {
                matches!(
                    a,
                    Action::RouteOverride {
                        caching: Some(true),
                        ..
                    }
                )
            })
        });
    if route.websocket {
        if cache.enabled {
            report.warning(file, &format!("{at}.cache.enabled"), format!("route \"{}\" is a WebSocket route: caching is forced off and this setting is ignored", route.name));
        }
        if let Some(rule) = rule_enables_caching {
            report.warning(file, &format!("{at}.rule_sets"), format!("rule \"{}\" turns caching on, but route \"{}\" is a WebSocket route: the rule's caching is ignored", rule.name, route.name));
        }
        return;
    }
    if mode == OnCachedUpgrade::Reproduce && (cache.enabled || rule_enables_caching.is_some()) {
        let why = if cache.enabled {
            "has caching on".to_string()
        } else {
            format!(
                "can turn caching on (rule \"{}\")",
                rule_enables_caching.map_or("", |r| r.name.as_str())
            )
        };
        report.warning(file, at, format!("route \"{}\" {why}: a WebSocket upgrade here fails as on Azure Front Door (Upgrade is not forwarded). Set `websocket: true`, or `on_cached_upgrade: bypass` or `reject`", route.name));
    }
}
