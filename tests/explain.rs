//! `portico explain`: through the built binary against the shipped configuration, and in
//! process to show that it reports exactly what `Engine::decide` (the proxy's call) decides.

use std::path::{Path, PathBuf};
use std::process::Command;

use http::HeaderMap;
use portico::config::{self, Source};
use portico::rules::{CacheUse, Engine, RequestFacts, Scheme, UpgradeHandling};

const UPGRADE: [&str; 4] = ["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"];

fn shipped_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/portico.yaml")
}

/// Runs `portico explain -c <shipped conf> <args>`; it must succeed.
fn explain(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("explain")
        .arg("-c")
        .arg(shipped_conf())
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run portico explain");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    assert!(
        output.status.success(),
        "explain {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The value of the `label:` line of explain's output.
fn field<'o>(out: &'o str, label: &str) -> &'o str {
    let prefix = format!("{label}:");
    out.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no `{label}:` line in:\n{out}"))
}

#[test]
fn static_asset_takes_the_static_route_and_its_cache_key() {
    let out = explain(&["GET", "http://localhost:8080/static/a.css"]);
    assert!(field(&out, "route").starts_with("static "), "{out}");
    let cache = field(&out, "cache");
    assert!(cache.starts_with("enabled"), "{out}");
    // Port dropped from the key; `query_string: ignore` on this route.
    assert!(cache.ends_with("key localhost/static/a.css"), "{out}");
    assert_eq!(field(&out, "upgrade"), "not an upgrade request", "{out}");
    assert_eq!(field(&out, "handling"), "n/a", "{out}");
    assert!(
        out.contains("rule:     edge-headers/nosniff: fired"),
        "{out}"
    );
}

#[test]
fn an_override_keeps_the_request_from_the_cache() {
    let args = [
        "GET",
        "http://localhost:8080/static/a.css",
        "-H",
        "X-HTTP-Method-Override: DELETE",
    ];
    let out = explain(&args);
    let cache = field(&out, "cache");
    assert!(
        cache.starts_with("bypassed for this request (method or target override"),
        "{out}"
    );
    assert!(cache.ends_with("(X-Cache: UNCACHEABLE)"), "{out}");
}

#[test]
fn query_string_is_left_out_of_the_static_key() {
    let out = explain(&["GET", "http://LOCALHOST:8080/static/a.css?v=2"]);
    assert!(
        field(&out, "cache").ends_with("key localhost/static/a.css"),
        "{out}"
    );
}

#[test]
fn upgrade_on_the_caching_legacy_route_is_reproduced() {
    let mut args = vec!["GET", "http://localhost:8080/legacy/x"];
    args.extend(UPGRADE);
    let out = explain(&args);
    assert!(field(&out, "route").starts_with("legacy "), "{out}");
    assert!(field(&out, "upgrade").starts_with("WebSocket upgrade request"));
    let handling = field(&out, "handling");
    assert!(handling.starts_with("reproduce"), "{out}");
    assert!(handling.contains("Upgrade is NOT forwarded"), "{out}");
    assert!(field(&out, "cache").starts_with("bypassed"), "{out}");
}

#[test]
fn upgrade_on_the_websocket_chat_route_is_tunnelled() {
    let mut args = vec!["GET", "http://localhost:8080/chat"];
    args.extend(UPGRADE);
    let out = explain(&args);
    assert!(field(&out, "route").starts_with("chat "), "{out}");
    assert!(field(&out, "handling").starts_with("tunnel"), "{out}");
    assert!(
        field(&out, "cache").starts_with("off: WebSocket routes never cache"),
        "{out}"
    );
}

#[test]
fn unknown_path_has_no_route_and_gets_404() {
    let out = explain(&["GET", "http://localhost:8080/nowhere"]);
    assert_eq!(
        field(&out, "route"),
        "none: no route matches this host and path",
        "{out}"
    );
    assert!(
        field(&out, "result").starts_with("404 from the edge"),
        "{out}"
    );
    assert!(!out.contains("origin:"), "{out}");
}

#[test]
fn method_refused_by_the_only_route_is_named() {
    // `static` takes GET and HEAD only.
    let out = explain(&["POST", "http://localhost:8080/static/a.css"]);
    assert_eq!(
        field(&out, "route"),
        "none: route \"static\" does not accept POST",
        "{out}"
    );
    assert!(field(&out, "result").starts_with("404"), "{out}");
}

const NODE: &str = "\
name: explain-test
listeners:
  - address: 127.0.0.1:0
access_log: off
";

const RULES: &str = "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
  - name: archive
    origins:
      - address: 127.0.0.1:10
rule_sets:
  - name: moves
    rules:
      - name: only-get
        conditions:
          - match: request_method
            values: [POST]
        actions:
          - type: route_override
            caching: false
      - name: old-to-new
        conditions:
          - match: request_path
            operator: begins_with
            values: [/old/]
        actions:
          - type: url_rewrite
            source_pattern: /old/
            destination: /new/
          - type: route_override
            origin_group: archive
          - type: cache_key_query_string
            query_string: include
            query_params: [v]
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    cache:
      enabled: true
      query_string: ignore
    rule_sets: [moves]
";

fn engine() -> Engine {
    let node = Source {
        path: "portico.yaml".into(),
        text: NODE.to_string(),
    };
    let rules = [Source {
        path: "rules/site.yaml".into(),
        text: RULES.to_string(),
    }];
    match config::build(&node, Path::new("."), &rules) {
        Ok(loaded) => Engine::new(loaded.config),
        Err(error) => panic!("test config refused:\n{error}"),
    }
}

/// `explain` prints what `decide` returns for the same request: route, fired rules,
/// rewrite, origin group, cache key and mode.
#[test]
fn explain_renders_the_decision_of_the_engine() {
    let engine = engine();
    let headers = HeaderMap::new();
    let facts = RequestFacts {
        method: "GET",
        host: "example.com",
        path: "/old/a",
        query: Some("v=1&utm=x"),
        headers: &headers,
        client_ip: None,
        scheme: Scheme::Http,
        listener: None,
    };
    let decision = engine.decide(&facts).expect("a route");
    let out = portico::explain::explain(
        &engine,
        "GET",
        "http://example.com/old/a?v=1&utm=x",
        &headers,
    )
    .expect("explain");

    // What the engine decided...
    let route = engine.route(decision.route);
    assert_eq!(route.name, "site");
    let fired: Vec<&str> = decision
        .fired
        .iter()
        .map(|f| engine.rule(*f).name.as_str())
        .collect();
    assert_eq!(fired, ["old-to-new"]);
    assert_eq!(decision.rewritten_path.as_deref(), Some("/new/a"));
    let group = &engine.config.origin_groups[decision.origin_group].name;
    assert_eq!(group, "archive");
    assert_eq!(decision.cache, CacheUse::Enabled);
    assert_eq!(decision.upgrade, UpgradeHandling::None);

    // ...is what explain prints.
    assert!(
        field(&out, "route").starts_with(&format!("{} ", route.name)),
        "{out}"
    );
    assert_eq!(
        field(&out, "rewrite"),
        format!("/old/a -> {}", decision.rewritten_path.as_deref().unwrap()),
        "{out}"
    );
    assert!(out.contains("rule:     moves/old-to-new: fired"), "{out}");
    assert!(out.contains("rule:     moves/only-get: skipped"), "{out}");
    assert!(
        out.contains("action: url_rewrite /old/ -> /new/ (preserve unmatched path: true)"),
        "{out}"
    );
    assert!(
        field(&out, "origin").starts_with(&format!("group {group} -> ")),
        "{out}"
    );
    // The rule's `include [v]` replaced the route's `ignore` in the key.
    let key = portico::cache::key::cache_key(
        facts.host,
        facts.path,
        facts.query,
        engine.query_string(&decision),
    );
    assert_eq!(key, "example.com/old/a?v=1");
    assert!(
        field(&out, "cache").ends_with(&format!("key {key}")),
        "{out}"
    );
}

/// When no rule fires, neither does explain show a rewrite, and a rule turning caching off
/// shows as caching off.
#[test]
fn explain_follows_the_engine_when_rules_turn_caching_off() {
    let engine = engine();
    let headers = HeaderMap::new();
    let facts = RequestFacts {
        method: "POST",
        host: "example.com",
        path: "/form",
        query: None,
        headers: &headers,
        client_ip: None,
        scheme: Scheme::Http,
        listener: None,
    };
    let decision = engine.decide(&facts).expect("a route");
    assert_eq!(decision.cache, CacheUse::Disabled);
    assert_eq!(decision.rewritten_path, None);
    let out =
        portico::explain::explain(&engine, "POST", "http://example.com/form", &headers).unwrap();
    assert!(out.contains("rule:     moves/only-get: fired"), "{out}");
    assert!(field(&out, "cache").starts_with("off"), "{out}");
    assert!(!out.contains("rewrite:"), "{out}");
}

/// The key's parts, as the cache hashes them: the normalised host without its port, the
/// route and its scope, the group after the override, the rewritten path with the rule's
/// query view, and the scheme (`match_request` by default).
#[test]
fn explain_prints_the_parts_of_the_cache_key() {
    let engine = engine();
    let out = portico::explain::explain(
        &engine,
        "GET",
        "http://Example.COM:8080/old/a?z=2&v=1",
        &HeaderMap::new(),
    )
    .unwrap();
    assert_eq!(
        field(&out, "key"),
        "host example.com | route site (every listener) | origin group archive | scheme http | upstream /new/a?v=1",
        "{out}"
    );
    // A host the edge refuses is never routed.
    let bad =
        portico::explain::explain(&engine, "GET", "http://a..b/x", &HeaderMap::new()).unwrap();
    assert!(field(&bad, "result").starts_with("400"), "{bad}");
    assert!(field(&bad, "route").contains("is not a host name"), "{bad}");
}
