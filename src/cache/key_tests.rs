//! The cache key's property (issue 15): for random rule sets and requests, two requests share
//! a key only if their routing decisions are equal: origin group, upstream path and the
//! query-string mode's view of the query, upstream scheme, normalised host and listener
//! scope. The decision side is computed here independently of `KeyParts`, from the engine's
//! decision and the route, the way the proxy forwards the request.
//!
//! No sockets: `config::build`, `Engine::decide` and the key are called directly. A small
//! seeded PRNG keeps every run the same (a failure names its seed).

use std::collections::HashMap;
use std::path::Path;

use http::HeaderMap;
use pingora_cache::key::{hash_key, HashBinary};

use super::key::{cache_key, KeyParts};
use crate::config::model::{ForwardingProtocol, QueryStringMode};
use crate::config::{self, Source};
use crate::rules::request::{host_without_port, normalise_host};
use crate::rules::{Engine, RequestFacts, Scheme};

/// xorshift64*: enough randomness for choosing among a few options, and reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn word(&mut self, words: &[&'static str]) -> &'static str {
        words[self.below(words.len())]
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NODE: &str = "\
name: key-props
listeners:
  - address: 127.0.0.1:1
    name: l1
  - address: 127.0.0.1:2
    name: l2
access_log: off
";

const GROUPS: &str = "\
origin_groups:
  - name: g0
    origins: [{address: \"127.0.0.1:10\", https_port: 20}]
  - name: g1
    origins: [{address: \"127.0.0.1:11\", https_port: 21}]
  - name: g2
    origins: [{address: \"127.0.0.1:12\", https_port: 22}]
";

/// A random set of routes and one rule set; the config may be refused (two routes on one
/// pattern and listener), and the caller then draws again.
fn random_rules(rng: &mut Rng) -> String {
    let mut yaml = String::from("rule_sets:\n  - name: s0\n    rules:\n");
    for r in 0..1 + rng.below(3) {
        let condition = *rng.pick(&[
            "{match: request_header, selector: X-A, values: [\"1\"]}",
            "{match: request_header, selector: X-A, operator: any}",
            "{match: request_path, operator: begins_with, values: [/p/]}",
            "{match: query_string, operator: contains, values: [b=]}",
        ]);
        let action = match rng.below(4) {
            0 | 1 => format!("{{type: route_override, origin_group: g{}}}", rng.below(3)),
            2 => format!(
                "{{type: url_rewrite, source_pattern: /p/, destination: {}}}",
                rng.pick(&["/z/", "/q/", "/p/y"])
            ),
            _ => format!(
                "{{type: cache_key_query_string, query_string: {}}}",
                rng.pick(&["ignore", "use_all", "include, query_params: [a]"])
            ),
        };
        yaml.push_str(&format!(
            "      - name: r{r}\n        conditions: [{condition}]\n        actions: [{action}]\n"
        ));
    }
    yaml.push_str("routes:\n");
    for i in 0..1 + rng.below(4) {
        let domains = rng.pick(&[
            "[]",
            "[a.example]",
            "[a.example, b.example]",
            "[\"*.example\"]",
        ]);
        let patterns = rng.pick(&["[/*]", "[/p/*]", "[/p/x, /q/*]", "[/q/*]"]);
        let listeners = rng.pick(&["[]", "[l1]", "[l2]", "[l1, l2]"]);
        let origin_path = rng.pick(&["", "\n    origin_path: /v1", "\n    origin_path: /v2"]);
        let forwarding = rng.pick(&["match_request", "http_only", "https_only"]);
        let query = rng.pick(&[
            "ignore",
            "use_all",
            "include, query_params: [a]",
            "exclude, query_params: [a]",
        ]);
        let sets = rng.pick(&["[]", "[s0]", "[s0]"]);
        yaml.push_str(&format!(
            "  - name: route{i}\n    domains: {domains}\n    patterns: {patterns}\n    listeners: {listeners}\n    origin_group: g{}{origin_path}\n    forwarding_protocol: {forwarding}\n    cache: {{enabled: true, query_string: {query}}}\n    rule_sets: {sets}\n",
            rng.below(3)
        ));
    }
    yaml
}

fn build(rules: &str) -> Option<Engine> {
    let node = Source {
        path: "portico.yaml".into(),
        text: NODE.into(),
    };
    let rules = [
        Source {
            path: "rules/groups.yaml".into(),
            text: GROUPS.into(),
        },
        Source {
            path: "rules/r.yaml".into(),
            text: rules.into(),
        },
    ];
    config::build(&node, Path::new("."), &rules)
        .ok()
        .map(|l| Engine::new(l.config))
}

/// One request, drawn at random.
#[derive(Debug, Clone)]
struct Req {
    host: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    x_a: Option<&'static str>,
    scheme: Scheme,
    listener: Option<&'static str>,
}

fn random_request(rng: &mut Rng) -> Req {
    Req {
        host: rng.word(&[
            "a.example",
            "A.EXAMPLE:8080",
            "a.example.",
            "b.example",
            "B.example:1",
            "c.example",
            "[::1]:80",
            "[0:0::1]",
        ]),
        path: rng.word(&["/p/x", "/p/y", "/q/x", "/z/x", "/p/", "/x"]),
        query: *rng.pick(&[
            None,
            Some("a=1"),
            Some("a=2&b=1"),
            Some("b=1&a=1"),
            Some("b=2"),
        ]),
        x_a: *rng.pick(&[None, Some("1"), Some("2")]),
        scheme: *rng.pick(&[Scheme::Http, Scheme::Https]),
        listener: *rng.pick(&[None, Some("l1"), Some("l2")]),
    }
}

/// The routing decision as the proxy acts on it, computed without `KeyParts`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Routed {
    origin_group: String,
    upstream_path: String,
    query_view: Vec<String>,
    upstream_scheme: &'static str,
    host: String,
    listener_scope: Vec<String>,
}

/// What a request's key and routing come to (`None`: refused or no route).
fn route(engine: &Engine, req: &Req) -> Option<(HashBinary, HashBinary, Routed)> {
    let host = normalise_host(req.host.as_bytes()).ok()?;
    let mut headers = HeaderMap::new();
    if let Some(value) = req.x_a {
        headers.insert("x-a", value.parse().unwrap());
    }
    let facts = RequestFacts {
        method: "GET",
        host: &host,
        path: req.path,
        query: req.query,
        headers: &headers,
        client_ip: None,
        scheme: req.scheme,
        listener: req.listener,
    };
    let decision = engine.decide(&facts).ok()?;
    let route = engine.route(decision.route);
    let name = host_without_port(&host);
    let key = KeyParts::new(engine, &decision, name, req.path, req.query, req.scheme).hash();
    // The key before issue 15: host + client path + query view, nothing of the decision.
    let mode = engine.query_string(&decision);
    let old_key = hash_key(cache_key(&host, req.path, req.query, mode));
    let pairs = req.query.unwrap_or("").split('&').filter(|p| !p.is_empty());
    let named = |pair: &&str, names: &[String]| {
        names
            .iter()
            .any(|n| pair.split('=').next() == Some(n.as_str()))
    };
    let query_view: Vec<String> = match mode {
        QueryStringMode::Ignore => Vec::new(),
        QueryStringMode::UseAll => pairs.map(str::to_string).collect(),
        QueryStringMode::Include(names) => pairs
            .filter(|p| named(p, names))
            .map(str::to_string)
            .collect(),
        QueryStringMode::Exclude(names) => pairs
            .filter(|p| !named(p, names))
            .map(str::to_string)
            .collect(),
    };
    let upstream_scheme = match route.forwarding_protocol {
        ForwardingProtocol::HttpOnly => "http",
        ForwardingProtocol::HttpsOnly => "https",
        ForwardingProtocol::MatchRequest => req.scheme.as_str(),
    };
    let routed = Routed {
        origin_group: engine.config.origin_groups[decision.origin_group]
            .name
            .clone(),
        upstream_path: format!(
            "{}{}",
            route.origin_path.as_deref().unwrap_or(""),
            decision.rewritten_path.as_deref().unwrap_or(req.path)
        ),
        query_view,
        upstream_scheme,
        host: name.to_string(),
        listener_scope: route.listeners.clone(),
    };
    Some((key, old_key, routed))
}

#[test]
fn requests_share_a_key_only_if_their_routing_decisions_are_equal() {
    let mut configs = 0;
    let mut shared = 0;
    let mut old_key_poisoned = 0;
    for seed in 1..=150u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let Some(engine) = (0..20).find_map(|_| build(&random_rules(&mut rng))) else {
            continue;
        };
        configs += 1;
        let mut by_key: HashMap<HashBinary, (Req, Routed)> = HashMap::new();
        let mut by_old_key: HashMap<HashBinary, Routed> = HashMap::new();
        for _ in 0..200 {
            let req = random_request(&mut rng);
            let Some((key, old_key, routed)) = route(&engine, &req) else {
                continue;
            };
            if let Some((first, earlier)) = by_key.get(&key) {
                shared += 1;
                assert_eq!(
                    earlier, &routed,
                    "seed {seed}: {first:?} and {req:?} share a key but route differently"
                );
            } else {
                by_key.insert(key, (req.clone(), routed.clone()));
            }
            match by_old_key.get(&old_key) {
                Some(earlier) if earlier != &routed => old_key_poisoned += 1,
                Some(_) => {}
                None => {
                    by_old_key.insert(old_key, routed);
                }
            }
        }
    }
    eprintln!("configs {configs}, shared {shared}, old key mixed {old_key_poisoned}");
    // The test has teeth: enough configurations were accepted, requests did share keys (host
    // spellings, ignored parameters), and the old key would have mixed up decisions.
    assert!(
        configs >= 100,
        "only {configs} random configurations were valid"
    );
    assert!(shared > 1000, "only {shared} requests shared a key");
    assert!(
        old_key_poisoned > 0,
        "the old key never mixed two decisions: the generator is too tame"
    );
}
