//! `portico explain`: what the edge would do with a request, without sending any traffic.
//! It calls [`Engine::decide`], the function the proxy calls.

use std::fmt::Write;

use http::HeaderMap;

use crate::cache::key::{cache_key, KeyParts};
use crate::config::model::{Action, Condition, Config};
use crate::origin::OriginPool;
use crate::rules::request::{host_without_port, normalise_host};
use crate::rules::{CacheUse, Engine, Miss, RequestFacts, Scheme, UpgradeHandling};

/// Renders the decision for `method url` with `headers`, as `portico explain` prints it.
pub fn explain(
    engine: &Engine,
    method: &str,
    url: &str,
    headers: &HeaderMap,
) -> Result<String, String> {
    explain_on(engine, method, url, headers, None)
}

/// [`explain`] for a request that came in on the listener named `listener`.
pub fn explain_on(
    engine: &Engine,
    method: &str,
    url: &str,
    headers: &HeaderMap,
    listener: Option<&str>,
) -> Result<String, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("https") | Some("wss") => Scheme::Https,
        Some("http") | Some("ws") | None => Scheme::Http,
        Some(other) => return Err(format!("unsupported scheme \"{other}\"")),
    };
    let raw_host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    // As the proxy does: a host that is not a valid name or address never gets routed.
    let host = match normalise_host(raw_host.as_bytes()) {
        Ok(host) => host,
        Err(why) => {
            return Ok(format!(
                "request:  {method} {url}\nroute:    none: bad Host \"{raw_host}\": {}\nresult:   400 from the edge (X-Portico-Error: bad-host); nothing is forwarded\n",
                why.reason()
            ))
        }
    };
    let host = host.as_ref();
    let facts = RequestFacts {
        method,
        host,
        path: uri.path(),
        query: uri.query(),
        headers,
        client_ip: None,
        scheme,
        listener,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "request:  {method} {}://{host}{}",
        scheme.as_str(),
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let _ = writeln!(
        out,
        "upgrade:  {}",
        if facts.is_websocket_upgrade() {
            "WebSocket upgrade request (RFC 6455)"
        } else {
            "not an upgrade request"
        }
    );
    let decision = match engine.decide(&facts) {
        Ok(decision) => decision,
        Err(miss) => {
            let why = match miss {
                Miss::NoRouteForPath => "no route matches this host and path".to_string(),
                Miss::MethodNotAccepted { route } => format!(
                    "route \"{}\" does not accept {method}",
                    engine.route(route).name
                ),
                Miss::ProtocolNotAccepted { route } => format!(
                    "route \"{}\" does not serve {}",
                    engine.route(route).name,
                    scheme.as_str()
                ),
                Miss::BadHost => "the host is not a valid name".to_string(),
            };
            let _ = writeln!(
                out,
                "route:    none: {why}\nresult:   404 from the edge; nothing is forwarded"
            );
            return Ok(out);
        }
    };
    let config = &engine.config;
    let route = engine.route(decision.route);
    let _ = writeln!(
        out,
        "route:    {} (websocket: {}, cache.enabled: {})",
        route.name, route.websocket, route.cache.enabled
    );
    for &set in &route.rule_sets {
        for (index, rule) in config.rule_sets[set].rules.iter().enumerate() {
            let fired = decision
                .fired
                .iter()
                .any(|f| f.set as usize == set && f.rule as usize == index);
            let why = explain_conditions(&rule.conditions, &facts);
            let holds = rule.conditions.iter().all(|c| c.holds(&facts));
            let verdict = if fired {
                "fired"
            } else if !holds {
                "skipped"
            } else {
                "not evaluated (an earlier rule stopped evaluation)"
            };
            let _ = writeln!(
                out,
                "rule:     {}/{}: {verdict}; {why}",
                config.rule_sets[set].name, rule.name
            );
            if fired {
                for action in &rule.actions {
                    let _ = writeln!(out, "          action: {}", describe_action(action, config));
                }
            }
        }
    }
    let key = cache_key(
        host,
        uri.path(),
        uri.query(),
        engine.query_string(&decision),
    );
    let parts = KeyParts::new(
        engine,
        &decision,
        host_without_port(host),
        uri.path(),
        uri.query(),
        scheme,
    );
    let unkeyed = crate::cache::unkeyed::unkeyed_input(headers, None);
    let cache = match decision.cache {
        CacheUse::Enabled if matches!(method, "GET" | "HEAD") && unkeyed.is_some() => format!(
            "bypassed for this request ({}: input the key does not cover); it goes to the origin as it came and is not stored (X-Cache: UNCACHEABLE)",
            unkeyed.unwrap_or_default()
        ),
        CacheUse::Enabled => format!(
            "enabled ({:?}{}); key {key}",
            decision.cache_behavior,
            decision
                .cache_duration
                .map_or(String::new(), |d| format!(", duration {d:?}"))
        ),
        CacheUse::Disabled => {
            "off for this route or by a rule (X-Cache: CONFIG_NOCACHE)".to_string()
        }
        CacheUse::WebSocketRoute => {
            "off: WebSocket routes never cache (X-Cache: CONFIG_NOCACHE)".to_string()
        }
        CacheUse::Upgrade => format!(
            "bypassed: an upgrade request is never looked up or stored (key would be {key})"
        ),
    };
    let _ = writeln!(out, "cache:    {cache}");
    if matches!(decision.cache, CacheUse::Enabled | CacheUse::Upgrade) {
        let _ = writeln!(out, "key:      {}", parts.describe());
    }
    let handling = match decision.upgrade {
        UpgradeHandling::None => "n/a".to_string(),
        UpgradeHandling::Tunnel => "tunnel: Upgrade/Connection forwarded, 101 relayed, bytes untouched".to_string(),
        UpgradeHandling::Reproduce => format!("reproduce (Azure Front Door's failure): route \"{}\" caches, so Upgrade is NOT forwarded; the origin gets a plain GET and the handshake fails with its answer", route.name),
        UpgradeHandling::Reject => format!("reject: 426 from the edge (route \"{}\" caches; on_cached_upgrade: reject)", route.name),
    };
    let _ = writeln!(out, "handling: {handling}");
    if let Some(path) = &decision.rewritten_path {
        let _ = writeln!(out, "rewrite:  {} -> {path}", uri.path());
    }
    if let Some(target) = &decision.redirect {
        let status = engine.redirect(target).map_or(308, |r| r.status);
        let _ = writeln!(
            out,
            "redirect: {status} from the edge; nothing is forwarded"
        );
    }
    let group = &config.origin_groups[decision.origin_group];
    let pool = OriginPool::new(&config.origin_groups);
    // No probes run here: show the origin a healthy group would use.
    let chosen = pool.select_assuming_healthy(decision.origin_group);
    let next = chosen.map_or("none".to_string(), |c| {
        format!(
            "{} {} (priority {}, weight {}, Host: {})",
            c.origin.name,
            c.origin.address,
            c.origin.priority,
            c.origin.weight,
            c.origin.host_header
        )
    });
    let _ = writeln!(out, "origin:   group {} -> {next}", group.name);
    let cacheable = decision.cache == CacheUse::Enabled && matches!(method, "GET" | "HEAD");
    if let Some(shield) = crate::tier::route::explain(&config.node.tiers, cacheable, &parts.hash())
    {
        let _ = writeln!(out, "shield:   {shield}");
    }
    Ok(out)
}

fn explain_conditions(conditions: &[Condition], facts: &RequestFacts<'_>) -> String {
    if conditions.is_empty() {
        return "no conditions".to_string();
    }
    let parts: Vec<String> = conditions
        .iter()
        .map(|c| {
            let selector = c
                .selector
                .as_deref()
                .map_or(String::new(), |s| format!("[{s}]"));
            let negate = if c.negate { "not " } else { "" };
            format!(
                "{:?}{selector} {negate}{:?} {:?} = {}",
                c.variable,
                c.operator,
                c.values,
                c.holds(facts)
            )
        })
        .collect();
    parts.join(" AND ")
}

fn describe_action(action: &Action, config: &Config) -> String {
    match action {
        Action::RouteOverride { caching, origin_group } => format!(
            "route_override caching={caching:?} origin_group={}",
            origin_group.map_or("(unchanged)", |g| config.origin_groups[g].name.as_str())
        ),
        Action::CacheExpiration { behavior, duration } => format!("cache_expiration {behavior:?} {duration:?}"),
        Action::CacheKeyQueryString(mode) => format!("cache_key_query_string {mode:?}"),
        Action::ModifyRequestHeader(e) => format!("modify_request_header {:?} {} {:?}", e.action, e.name, e.value),
        Action::ModifyResponseHeader(e) => format!("modify_response_header {:?} {} {:?}", e.action, e.name, e.value),
        Action::UrlRewrite { source_pattern, destination, preserve_unmatched_path } => format!("url_rewrite {source_pattern} -> {destination} (preserve unmatched path: {preserve_unmatched_path})"),
        Action::UrlRedirect(r) => format!("url_redirect {} {:?} host={:?} path={:?} query={:?}", r.status, r.protocol, r.host, r.path, r.query),
    }
}
