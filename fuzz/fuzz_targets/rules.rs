//! Rule evaluation on random requests: routing, every rule set's conditions and actions,
//! the upgrade decision and the cache key, through the same calls the proxy makes (host
//! and path normalised first, refused ones never routed). No sockets.
//!
//! Invariants: no panic; the decision is deterministic; its indexes are in range; a
//! WebSocket route never caches; an upgrade is never looked up in or stored to the cache;
//! a request that is not an upgrade gets no upgrade handling; a rewritten path and the
//! upstream target stay absolute; the cache key's hash is deterministic.
#![no_main]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portico::cache::key::KeyParts;
use portico::config::{self, Source};
use portico::rules::path::normalise_path;
use portico::rules::request::{host_without_port, normalise_host};
use portico::rules::{CacheUse, Engine, RequestFacts, Scheme, UpgradeHandling};

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let node = Source {
        path: PathBuf::from("portico.yaml"),
        text: "name: fuzz\nlisteners:\n  - address: 127.0.0.1:8080\n    name: public\n  - address: 127.0.0.1:8081\naccess_log: off\n".into(),
    };
    let rules = [Source {
        path: PathBuf::from("rules/fixture.yaml"),
        text: include_str!("rules_fixture.yaml").into(),
    }];
    let loaded = config::build(&node, Path::new("."), &rules)
        .unwrap_or_else(|e| panic!("the fixture does not build: {e}"));
    Engine::new(loaded.config)
});

#[path = "common.rs"]
mod common;

// Input: a request line `METHOD host target` (target: path, `?query` optional), then
// `Name: value` header lines and settings `@scheme=https`, `@listener=<name>`,
// `@client=<address>`.
fuzz_target!(|data: &[u8]| {
    let engine = &*ENGINE;
    let text = common::lines(data);
    let Some(first) = text.first() else {
        return;
    };
    let mut words = first.splitn(3, ' ');
    let (Some(method), Some(raw_host), Some(target)) = (words.next(), words.next(), words.next())
    else {
        return;
    };
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Ok(host) = normalise_host(raw_host.as_bytes()) else {
        return; // a 400 before routing
    };
    let Ok(path) = normalise_path(raw_path) else {
        return; // a 400 before routing
    };
    let settings: Vec<String> = text[1..]
        .iter()
        .filter_map(|l| l.strip_prefix('@').map(str::to_owned))
        .collect();
    let mut headers = http::HeaderMap::new();
    let rest = data.splitn(2, |b| *b == b'\n').nth(1).unwrap_or_default();
    for (name, value) in common::header_lines(rest) {
        if name.starts_with(b"@") {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(&name),
            http::header::HeaderValue::from_bytes(&value),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let client_ip = common::setting(&settings, "client").and_then(|c| c.parse::<IpAddr>().ok());
    let scheme = if common::setting(&settings, "scheme") == Some("https") {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let facts = RequestFacts {
        method,
        host: &host,
        path: &path,
        query,
        headers: &headers,
        client_ip,
        scheme,
        listener: common::setting(&settings, "listener"),
    };
    let decided = engine.decide(&facts);
    let again = engine.decide(&facts);
    assert_eq!(
        format!("{decided:?}"),
        format!("{again:?}"),
        "not deterministic"
    );
    let Ok(decision) = decided else {
        return;
    };
    let config = &engine.config;
    assert!(decision.route < config.routes.len());
    assert!(decision.origin_group < config.origin_groups.len());
    let route = engine.route(decision.route);
    if route.websocket {
        assert_eq!(decision.cache, CacheUse::WebSocketRoute, "{decision:?}");
    }
    if facts.is_websocket_upgrade() {
        assert_ne!(decision.upgrade, UpgradeHandling::None, "{decision:?}");
        assert_ne!(
            decision.cache,
            CacheUse::Enabled,
            "an upgrade uses the cache: {decision:?}"
        );
    } else {
        assert_eq!(decision.upgrade, UpgradeHandling::None, "{decision:?}");
    }
    if let Some(rewritten) = &decision.rewritten_path {
        assert!(rewritten.starts_with('/'), "{rewritten:?}");
    }
    for fired in &decision.fired {
        let _ = engine.rule(*fired);
    }
    let _ = engine.fired_actions(&decision).count();
    if let Some(target) = &decision.redirect {
        let _ = engine.redirect(target);
    }
    let key_host = host_without_port(&host);
    let parts = KeyParts::new(engine, &decision, key_host, &path, query, scheme);
    assert_eq!(parts.hash(), parts.hash());
    assert!(parts.upstream_target().starts_with('/'), "{parts:?}");
    let _ = parts.describe();
});
