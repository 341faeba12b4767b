//! `Engine::decide` without sockets: configurations built from YAML texts with
//! `config::build`, requests built by hand.

use std::net::IpAddr;
use std::path::Path;

use http::HeaderMap;

use super::{CacheUse, Decision, Engine, Miss, RedirectTarget, RequestFacts, Scheme};
use super::{FiredRule, UpgradeHandling};
use crate::cache::key::cache_key;
use crate::config::model::{QueryStringMode, RedirectProtocol};
use crate::config::{self, Source};

const NODE: &str = "\
name: rules-test
listeners:
  - address: 127.0.0.1:0
access_log: off
";

/// Origin groups every test config starts with.
const GROUPS: &str = "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
  - name: a
    origins:
      - address: 127.0.0.1:10
  - name: b
    origins:
      - address: 127.0.0.1:11
  - name: c
    origins:
      - address: 127.0.0.1:12
";

/// An engine for `rules_yaml` (routes and rule sets) plus [`GROUPS`].
fn engine(rules_yaml: &str) -> Engine {
    let node = Source {
        path: "portico.yaml".into(),
        text: NODE.to_string(),
    };
    let rules = [
        Source {
            path: "rules/groups.yaml".into(),
            text: GROUPS.to_string(),
        },
        Source {
            path: "rules/test.yaml".into(),
            text: rules_yaml.to_string(),
        },
    ];
    match config::build(&node, Path::new("."), &rules) {
        Ok(loaded) => Engine::new(loaded.config),
        Err(error) => panic!("test config refused:\n{error}\n---\n{rules_yaml}"),
    }
}

/// An owned request; [`Req::facts`] lends it as the engine sees it.
struct Req {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    headers: HeaderMap,
    client_ip: Option<IpAddr>,
    scheme: Scheme,
}

impl Req {
    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            method: self.method,
            host: self.host,
            path: self.path,
            query: self.query,
            headers: &self.headers,
            client_ip: self.client_ip,
            scheme: self.scheme,
            listener: None,
        }
    }

    fn method(mut self, method: &'static str) -> Req {
        self.method = method;
        self
    }

    fn host(mut self, host: &'static str) -> Req {
        self.host = host;
        self
    }

    fn query(mut self, query: &'static str) -> Req {
        self.query = Some(query);
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Req {
        self.headers.append(name, value.parse().unwrap());
        self
    }

    fn client(mut self, ip: &str) -> Req {
        self.client_ip = Some(ip.parse().unwrap());
        self
    }

    fn https(mut self) -> Req {
        self.scheme = Scheme::Https;
        self
    }

    fn upgrade(self) -> Req {
        self.header("connection", "Upgrade")
            .header("upgrade", "websocket")
    }
}

/// `GET http://example.com<path>`.
fn get(path: &'static str) -> Req {
    Req {
        method: "GET",
        host: "example.com",
        path,
        query: None,
        headers: HeaderMap::new(),
        client_ip: None,
        scheme: Scheme::Http,
    }
}

fn decide(engine: &Engine, req: &Req) -> Decision {
    engine
        .decide(&req.facts())
        .unwrap_or_else(|miss| panic!("no route for {}: {miss:?}", req.path))
}

/// The name of the route `req` goes to.
fn route_of(engine: &Engine, req: &Req) -> String {
    engine.route(decide(engine, req).route).name.clone()
}

/// `set/rule` names of the fired rules, in firing order.
fn fired(engine: &Engine, decision: &Decision) -> Vec<String> {
    decision
        .fired
        .iter()
        .map(|f| {
            let set = &engine.config.rule_sets[f.set as usize].name;
            format!("{set}/{}", engine.rule(*f).name)
        })
        .collect()
}

fn group_of(engine: &Engine, decision: &Decision) -> String {
    engine.config.origin_groups[decision.origin_group]
        .name
        .clone()
}

// ---------------------------------------------------------------------------------------
// Route selection

#[test]
fn exact_path_beats_prefix() {
    let engine = engine(
        "\
routes:
  - name: prefix
    patterns: [/a/*]
    origin_group: web
  - name: exact
    patterns: [/a/b, /a/]
    origin_group: web
",
    );
    assert_eq!(route_of(&engine, &get("/a/b")), "exact");
    assert_eq!(route_of(&engine, &get("/a/")), "exact");
    assert_eq!(route_of(&engine, &get("/a/c")), "prefix");
    assert_eq!(route_of(&engine, &get("/a/b/c")), "prefix");
}

#[test]
fn longer_prefix_beats_shorter() {
    // Declared in no particular order: specificity, not order, decides.
    let engine = engine(
        "\
routes:
  - name: mid
    patterns: [/a/*]
    origin_group: web
  - name: deep
    patterns: [/a/b/*]
    origin_group: web
  - name: root
    patterns: [/*]
    origin_group: web
",
    );
    assert_eq!(route_of(&engine, &get("/a/b/c/d")), "deep");
    assert_eq!(route_of(&engine, &get("/a/b/")), "deep");
    assert_eq!(route_of(&engine, &get("/a/b")), "mid");
    assert_eq!(route_of(&engine, &get("/a/x")), "mid");
    assert_eq!(route_of(&engine, &get("/x")), "root");
    assert_eq!(route_of(&engine, &get("/")), "root");
}

#[test]
fn exact_domain_beats_wildcard_beats_any_host() {
    let engine = engine(
        "\
routes:
  - name: any
    patterns: [/*]
    origin_group: web
  - name: wild
    domains: [\"*.example.com\"]
    patterns: [/*]
    origin_group: web
  - name: deeper-wild
    domains: [\"*.b.example.com\"]
    patterns: [/*]
    origin_group: web
  - name: exact
    domains: [www.example.com]
    patterns: [/*]
    origin_group: web
",
    );
    assert_eq!(
        route_of(&engine, &get("/").host("www.example.com")),
        "exact"
    );
    assert_eq!(route_of(&engine, &get("/").host("api.example.com")), "wild");
    assert_eq!(
        route_of(&engine, &get("/").host("x.b.example.com")),
        "deeper-wild"
    );
    assert_eq!(route_of(&engine, &get("/").host("x.y.example.com")), "wild");
    // A wildcard does not cover its apex.
    assert_eq!(route_of(&engine, &get("/").host("example.com")), "any");
    assert_eq!(route_of(&engine, &get("/").host("other.org")), "any");
}

#[test]
fn domain_is_decided_before_path() {
    // The exact-domain route wins with a catch-all even over an exact path on any host.
    let engine = engine(
        "\
routes:
  - name: any-exact-path
    patterns: [/a/b]
    origin_group: web
  - name: www
    domains: [www.example.com]
    patterns: [/*]
    origin_group: web
",
    );
    assert_eq!(
        route_of(&engine, &get("/a/b").host("www.example.com")),
        "www"
    );
    assert_eq!(
        route_of(&engine, &get("/a/b").host("other.example.com")),
        "any-exact-path"
    );
}

#[test]
fn host_port_and_case_are_ignored() {
    let engine = engine(
        "\
routes:
  - name: www
    domains: [WWW.Example.com]
    patterns: [/*]
    origin_group: web
",
    );
    for host in [
        "www.example.com",
        "WWW.EXAMPLE.COM",
        "www.example.com:8080",
        "Www.Example.Com:443",
    ] {
        assert_eq!(route_of(&engine, &get("/").host(host)), "www", "{host}");
    }
    assert_eq!(
        engine
            .decide(&get("/").host("example.com").facts())
            .unwrap_err(),
        Miss::NoRouteForPath
    );
}

#[test]
fn a_route_refusing_the_method_lets_a_less_specific_one_take_it() {
    let engine = engine(
        "\
routes:
  - name: posts
    patterns: [/api/posts]
    methods: [POST]
    origin_group: web
  - name: api-read
    patterns: [/api/*]
    methods: [GET, HEAD]
    origin_group: web
",
    );
    assert_eq!(
        route_of(&engine, &get("/api/posts").method("POST")),
        "posts"
    );
    assert_eq!(route_of(&engine, &get("/api/posts")), "api-read");
    assert_eq!(
        route_of(&engine, &get("/api/posts").method("head")),
        "api-read"
    );
    // Nobody takes DELETE: the most specific refusal is the reason.
    assert_eq!(
        engine
            .decide(&get("/api/posts").method("DELETE").facts())
            .unwrap_err(),
        Miss::MethodNotAccepted { route: 0 }
    );
    assert_eq!(
        engine
            .decide(&get("/api/other").method("POST").facts())
            .unwrap_err(),
        Miss::MethodNotAccepted { route: 1 }
    );
}

#[test]
fn no_route_for_the_path() {
    let engine = engine(
        "\
routes:
  - name: a
    patterns: [/a/*]
    origin_group: web
  - name: www-only
    domains: [www.example.com]
    patterns: [/*]
    origin_group: web
",
    );
    for path in ["/", "/b", "/a", "/ab/c"] {
        assert_eq!(
            engine.decide(&get(path).facts()).unwrap_err(),
            Miss::NoRouteForPath,
            "{path}"
        );
    }
}

#[test]
fn protocols_and_https_redirect() {
    let engine = engine(
        "\
routes:
  - name: secure
    patterns: [/secure/*]
    protocols: [https]
    origin_group: web
  - name: upgrade-me
    patterns: [/login]
    https_redirect: true
    origin_group: web
",
    );
    assert_eq!(
        engine.decide(&get("/secure/x").facts()).unwrap_err(),
        Miss::ProtocolNotAccepted { route: 0 }
    );
    assert_eq!(route_of(&engine, &get("/secure/x").https()), "secure");
    let http = decide(&engine, &get("/login"));
    assert_eq!(http.redirect, Some(RedirectTarget::Https));
    assert_eq!(decide(&engine, &get("/login").https()).redirect, None);
}

// ---------------------------------------------------------------------------------------
// Rule evaluation

#[test]
fn rule_sets_run_in_route_order_and_later_overwrites_win() {
    // `first` is declared first, but the `reversed` route runs `second` first.
    let engine = engine(
        "\
rule_sets:
  - name: first
    rules:
      - name: r1
        actions:
          - type: route_override
            origin_group: a
            caching: true
  - name: second
    rules:
      - name: s1
        actions:
          - type: route_override
            origin_group: b
      - name: s2
        actions:
          - type: route_override
            origin_group: c
            caching: false
routes:
  - name: forward
    patterns: [/f/*]
    origin_group: web
    rule_sets: [first, second]
  - name: reversed
    patterns: [/r/*]
    origin_group: web
    rule_sets: [second, first]
",
    );
    let forward = decide(&engine, &get("/f/x"));
    assert_eq!(
        fired(&engine, &forward),
        ["first/r1", "second/s1", "second/s2"]
    );
    assert_eq!(
        forward.fired.as_slice(),
        [
            FiredRule { set: 0, rule: 0 },
            FiredRule { set: 1, rule: 0 },
            FiredRule { set: 1, rule: 1 },
        ]
    );
    assert_eq!(group_of(&engine, &forward), "c");
    assert_eq!(forward.cache, CacheUse::Disabled);

    let reversed = decide(&engine, &get("/r/x"));
    assert_eq!(
        fired(&engine, &reversed),
        ["second/s1", "second/s2", "first/r1"]
    );
    assert_eq!(group_of(&engine, &reversed), "a");
    assert_eq!(reversed.cache, CacheUse::Enabled);
}

#[test]
fn stop_evaluating_stops_later_rules_and_later_rule_sets() {
    let engine = engine(
        "\
rule_sets:
  - name: one
    rules:
      - name: stopper
        conditions:
          - {match: request_path, operator: begins_with, values: [/stop/]}
        actions:
          - type: route_override
            origin_group: a
        stop_evaluating: true
      - name: after
        actions:
          - type: route_override
            origin_group: b
  - name: two
    rules:
      - name: later-set
        actions:
          - type: route_override
            caching: true
routes:
  - name: all
    patterns: [/*]
    origin_group: web
    rule_sets: [one, two]
",
    );
    let stopped = decide(&engine, &get("/stop/here"));
    assert_eq!(fired(&engine, &stopped), ["one/stopper"]);
    assert_eq!(group_of(&engine, &stopped), "a");
    assert_eq!(stopped.cache, CacheUse::Disabled);

    // `stop_evaluating` only acts when its rule fires.
    let normal = decide(&engine, &get("/go"));
    assert_eq!(fired(&engine, &normal), ["one/after", "two/later-set"]);
    assert_eq!(group_of(&engine, &normal), "b");
    assert_eq!(normal.cache, CacheUse::Enabled);
}

/// Whether a rule with `conditions` (flow mappings, e.g. `{match: host, values: [x]}`)
/// fires for `req` on a catch-all route.
fn fires(conditions: &[&str], req: &Req) -> bool {
    let yaml = format!(
        "\
rule_sets:
  - name: probe
    rules:
      - name: probe
        conditions: [{}]
        actions:
          - type: route_override
            caching: true
routes:
  - name: all
    patterns: [/*]
    origin_group: web
    rule_sets: [probe]
",
        conditions.join(", ")
    );
    let engine = engine(&yaml);
    let decision = decide(&engine, req);
    let fired = !decision.fired.is_empty();
    // Firing is visible in the outcome, not only in the list.
    let expected = if fired {
        CacheUse::Enabled
    } else {
        CacheUse::Disabled
    };
    assert_eq!(decision.cache, expected);
    fired
}

#[test]
fn conditions_are_anded() {
    let conditions = [
        "{match: request_method, values: [GET]}",
        "{match: request_path, operator: begins_with, values: [/a/]}",
    ];
    assert!(fires(&conditions, &get("/a/x")));
    assert!(!fires(&conditions, &get("/a/x").method("POST")));
    assert!(!fires(&conditions, &get("/b/x")));
    assert!(fires(&[], &get("/anything")), "no conditions: always fires");
}

#[test]
fn values_of_one_condition_are_ored() {
    let conditions = ["{match: request_method, values: [PUT, DELETE]}"];
    assert!(fires(&conditions, &get("/").method("PUT")));
    assert!(fires(&conditions, &get("/").method("DELETE")));
    assert!(!fires(&conditions, &get("/")));
}

#[test]
fn negate_inverts_a_condition() {
    let conditions = ["{match: host, values: [internal.example.com], negate: true}"];
    assert!(fires(&conditions, &get("/").host("www.example.com")));
    assert!(!fires(&conditions, &get("/").host("internal.example.com")));
    // A negated test of a missing header holds.
    let absent = ["{match: request_header, selector: X-Debug, operator: any, negate: true}"];
    assert!(fires(&absent, &get("/")));
    assert!(!fires(&absent, &get("/").header("x-debug", "1")));
}

#[test]
fn request_method_condition() {
    let conditions = ["{match: request_method, values: [post]}"];
    assert!(fires(&conditions, &get("/").method("POST")));
    assert!(!fires(&conditions, &get("/")));
}

#[test]
fn request_path_operators() {
    let cases: [(&str, &str, bool); 12] = [
        (
            "{match: request_path, operator: begins_with, values: [/img/]}",
            "/img/a.png",
            true,
        ),
        (
            "{match: request_path, operator: begins_with, values: [/img/]}",
            "/css/img/",
            false,
        ),
        (
            "{match: request_path, operator: ends_with, values: [.png]}",
            "/img/a.PNG",
            true,
        ),
        (
            "{match: request_path, operator: ends_with, values: [.png]}",
            "/img/a.png.gz",
            false,
        ),
        ("{match: request_path, values: [/exact]}", "/exact", true),
        (
            "{match: request_path, operator: equals, values: [/exact]}",
            "/exact/",
            false,
        ),
        (
            "{match: request_path, operator: contains, values: [/v2/]}",
            "/api/v2/users",
            true,
        ),
        (
            "{match: request_path, operator: contains, values: [/v2/]}",
            "/api/v3/users",
            false,
        ),
        (
            "{match: request_path, operator: regex, values: ['^/user/[0-9]+$']}",
            "/user/42",
            true,
        ),
        (
            "{match: request_path, operator: regex, values: ['^/user/[0-9]+$']}",
            "/user/me",
            false,
        ),
        // Case-insensitive by default; `case_sensitive` compares bytes.
        (
            "{match: request_path, operator: regex, values: ['^/Admin']}",
            "/admin/x",
            true,
        ),
        (
            "{match: request_path, values: [/Admin], case_sensitive: true}",
            "/admin",
            false,
        ),
    ];
    for (condition, path, expected) in cases {
        assert_eq!(
            fires(&[condition], &get(path)),
            expected,
            "{condition} on {path}"
        );
    }
    assert!(fires(
        &["{match: request_path, values: [/Admin], case_sensitive: true}"],
        &get("/Admin")
    ));
}

#[test]
fn query_string_and_query_param_conditions() {
    let whole = ["{match: query_string, operator: contains, values: [debug=1]}"];
    assert!(fires(&whole, &get("/").query("a=2&debug=1")));
    assert!(!fires(&whole, &get("/").query("debug=0")));
    assert!(!fires(&whole, &get("/")));

    let param = ["{match: query_param, selector: v, values: ['2', '3']}"];
    assert!(fires(&param, &get("/").query("x=1&v=3")));
    assert!(!fires(&param, &get("/").query("v=1")));
    assert!(!fires(&param, &get("/").query("vv=2")), "names match whole");
    assert!(!fires(&param, &get("/")));
}

#[test]
fn request_header_conditions_including_upgrade() {
    let upgrade = ["{match: request_header, selector: Upgrade, values: [websocket]}"];
    assert!(fires(&upgrade, &get("/").header("upgrade", "WebSocket")));
    assert!(!fires(&upgrade, &get("/").header("upgrade", "h2c")));
    assert!(!fires(&upgrade, &get("/")));

    // Any line of a repeated header may match.
    let accept = ["{match: request_header, selector: accept, operator: contains, values: [json]}"];
    let req = get("/")
        .header("accept", "text/html")
        .header("accept", "application/json");
    assert!(fires(&accept, &req));
}

#[test]
fn host_condition_ignores_the_port() {
    let conditions = ["{match: host, operator: ends_with, values: [.example.org]}"];
    assert!(fires(&conditions, &get("/").host("cdn.Example.org:8080")));
    assert!(!fires(&conditions, &get("/").host("example.org")));
}

#[test]
fn client_address_ip_match() {
    let conditions = ["{match: client_address, operator: ip_match, values: [10.0.0.0/8, '::1']}"];
    assert!(fires(&conditions, &get("/").client("10.1.2.3")));
    assert!(fires(&conditions, &get("/").client("::1")));
    assert!(!fires(&conditions, &get("/").client("192.168.0.1")));
    assert!(
        !fires(&conditions, &get("/")),
        "no client address: no match"
    );
    // An IPv4 client on a dual-stack listener.
    assert!(fires(&conditions, &get("/").client("::ffff:10.1.2.3")));
    assert!(!fires(&conditions, &get("/").client("::ffff:192.168.0.1")));
}

#[test]
fn file_extension_condition() {
    let conditions = ["{match: file_extension, values: [css, js]}"];
    assert!(fires(&conditions, &get("/a/site.CSS")));
    assert!(fires(&conditions, &get("/app.min.js")));
    assert!(!fires(&conditions, &get("/a/site.css.map")));
    // Only the last segment counts.
    assert!(!fires(&conditions, &get("/v1.css/readme")));
    assert!(!fires(&conditions, &get("/")));
}

#[test]
fn request_protocol_condition() {
    let conditions = ["{match: request_protocol, values: [HTTPS]}"];
    assert!(fires(&conditions, &get("/").https()));
    assert!(!fires(&conditions, &get("/")));
}

// ---------------------------------------------------------------------------------------
// Actions

#[test]
fn route_override_changes_origin_group_and_caching() {
    let engine = engine(
        "\
rule_sets:
  - name: overrides
    rules:
      - name: images-to-a
        conditions:
          - {match: file_extension, values: [png]}
        actions:
          - type: route_override
            origin_group: a
      - name: no-cache-for-private
        conditions:
          - {match: request_path, operator: begins_with, values: [/private/]}
        actions:
          - type: route_override
            caching: false
routes:
  - name: site
    patterns: [/*]
    origin_group: web
    cache:
      enabled: true
    rule_sets: [overrides]
",
    );
    let plain = decide(&engine, &get("/index.html"));
    assert_eq!(group_of(&engine, &plain), "web");
    assert_eq!(plain.cache, CacheUse::Enabled);

    let image = decide(&engine, &get("/logo.png"));
    assert_eq!(group_of(&engine, &image), "a");
    assert_eq!(
        image.cache,
        CacheUse::Enabled,
        "caching left as the route has it"
    );

    let private = decide(&engine, &get("/private/logo.png"));
    assert_eq!(
        fired(&engine, &private),
        ["overrides/images-to-a", "overrides/no-cache-for-private"]
    );
    assert_eq!(group_of(&engine, &private), "a");
    assert_eq!(private.cache, CacheUse::Disabled);
}

#[test]
fn url_rewrite_with_and_without_the_unmatched_path() {
    let engine = engine(
        "\
rule_sets:
  - name: rewrites
    rules:
      - name: keep
        conditions:
          - {match: request_path, operator: begins_with, values: [/old/]}
        actions:
          - type: url_rewrite
            source_pattern: /old/
            destination: /new/
      - name: drop
        conditions:
          - {match: request_path, operator: begins_with, values: [/spa/]}
        actions:
          - type: url_rewrite
            source_pattern: /spa/
            destination: /index.html
            preserve_unmatched_path: false
routes:
  - name: site
    patterns: [/*]
    origin_group: web
    rule_sets: [rewrites]
",
    );
    let keep = |path| decide(&engine, &get(path)).rewritten_path;
    assert_eq!(keep("/old/a").as_deref(), Some("/new/a"));
    assert_eq!(keep("/old/a/b.css").as_deref(), Some("/new/a/b.css"));
    assert_eq!(keep("/spa/deep/link").as_deref(), Some("/index.html"));
    assert_eq!(keep("/other"), None);
}

#[test]
fn rewrites_apply_to_the_already_rewritten_path() {
    let engine = engine(
        "\
rule_sets:
  - name: chain
    rules:
      - name: v1-to-v2
        actions:
          - type: url_rewrite
            source_pattern: /v1/
            destination: /v2/
      - name: v2-to-api
        actions:
          - type: url_rewrite
            source_pattern: /v2
            destination: /api/v2
routes:
  - name: site
    patterns: [/*]
    origin_group: web
    rule_sets: [chain]
",
    );
    let decision = decide(&engine, &get("/v1/users"));
    assert_eq!(decision.rewritten_path.as_deref(), Some("/api/v2/users"));
}

#[test]
fn url_redirect_target() {
    let engine = engine(
        "\
rule_sets:
  - name: redirects
    rules:
      - name: tag
        actions:
          - type: modify_response_header
            header_action: append
            name: X-Tag
            value: t
      - name: moved
        conditions:
          - {match: request_path, values: [/moved]}
        actions:
          - type: modify_request_header
            header_action: delete
            name: Cookie
          - type: url_redirect
            status: 301
            protocol: https
            host: new.example.com
            path: /new-home
            query: '?from=old'
routes:
  - name: site
    patterns: [/*]
    origin_group: web
    rule_sets: [redirects]
",
    );
    assert_eq!(decide(&engine, &get("/stays")).redirect, None);
    let decision = decide(&engine, &get("/moved"));
    let moved = FiredRule { set: 0, rule: 1 };
    assert_eq!(decision.redirect, Some(RedirectTarget::Rule(moved, 1)));
    let redirect = engine
        .redirect(decision.redirect.as_ref().unwrap())
        .expect("a rule redirect");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.protocol, RedirectProtocol::Https);
    assert_eq!(redirect.host.as_deref(), Some("new.example.com"));
    assert_eq!(redirect.path.as_deref(), Some("/new-home"));
    assert_eq!(redirect.query.as_deref(), Some("from=old"));
}

#[test]
fn cache_key_query_string_replaces_the_routes_mode() {
    let engine = engine(
        "\
rule_sets:
  - name: keys
    rules:
      - name: search-keeps-q
        conditions:
          - {match: request_path, values: [/search]}
        actions:
          - type: cache_key_query_string
            query_string: include
            query_params: [q, page]
      - name: feed-drops-tracking
        conditions:
          - {match: request_path, values: [/feed]}
        actions:
          - type: cache_key_query_string
            query_string: exclude
            query_params: [utm]
routes:
  - name: site
    patterns: [/*]
    origin_group: web
    cache:
      enabled: true
      query_string: ignore
    rule_sets: [keys]
",
    );
    let key = |req: Req| {
        let decision = decide(&engine, &req);
        let mode = engine.query_string(&decision);
        (mode.clone(), cache_key(req.host, req.path, req.query, mode))
    };
    assert_eq!(
        key(get("/page").query("q=x")),
        (QueryStringMode::Ignore, "example.com/page".to_string())
    );
    assert_eq!(
        key(get("/search").query("utm=1&q=x&page=2")),
        (
            QueryStringMode::Include(vec!["page".into(), "q".into()]),
            "example.com/search?q=x&page=2".to_string()
        )
    );
    assert_eq!(
        key(get("/feed").query("utm=1&id=7")),
        (
            QueryStringMode::Exclude(vec!["utm".into()]),
            "example.com/feed?id=7".to_string()
        )
    );
}

#[test]
fn cache_expiration_overrides_the_route() {
    let engine = engine(
        "\
rule_sets:
  - name: ttl
    rules:
      - name: long
        actions:
          - type: cache_expiration
            behavior: override_always
            duration: 1h
routes:
  - name: site
    patterns: [/*]
    origin_group: web
    cache:
      enabled: true
    rule_sets: [ttl]
",
    );
    let decision = decide(&engine, &get("/"));
    assert_eq!(
        decision.cache_behavior,
        crate::config::model::CacheBehavior::OverrideAlways
    );
    assert_eq!(
        decision.cache_duration,
        Some(std::time::Duration::from_secs(3600))
    );
}

// ---------------------------------------------------------------------------------------
// WebSocket routes and upgrades

#[test]
fn websocket_route_never_caches_even_if_a_rule_enables_it() {
    let engine = engine(
        "\
rule_sets:
  - name: cache-on
    rules:
      - name: on
        actions:
          - type: route_override
            caching: true
routes:
  - name: socket
    patterns: [/ws]
    origin_group: web
    websocket: true
    rule_sets: [cache-on]
",
    );
    let plain = decide(&engine, &get("/ws"));
    assert_eq!(fired(&engine, &plain), ["cache-on/on"]);
    assert_eq!(plain.cache, CacheUse::WebSocketRoute);
    assert_eq!(plain.upgrade, UpgradeHandling::None);

    let upgrade = decide(&engine, &get("/ws").upgrade());
    assert_eq!(upgrade.cache, CacheUse::WebSocketRoute);
    assert_eq!(upgrade.upgrade, UpgradeHandling::Tunnel);
}

#[test]
fn upgrade_on_a_caching_route_follows_on_cached_upgrade() {
    let engine = engine(
        "\
routes:
  - name: node-default
    patterns: [/default/*]
    origin_group: web
    cache:
      enabled: true
  - name: reproduce
    patterns: [/reproduce/*]
    origin_group: web
    cache:
      enabled: true
    on_cached_upgrade: reproduce
  - name: reject
    patterns: [/reject/*]
    origin_group: web
    cache:
      enabled: true
    on_cached_upgrade: reject
  - name: bypass
    patterns: [/bypass/*]
    origin_group: web
    cache:
      enabled: true
    on_cached_upgrade: bypass
  - name: uncached
    patterns: [/uncached/*]
    origin_group: web
    on_cached_upgrade: reject
",
    );
    let cases = [
        // The node file sets no default: Front Door's behaviour.
        ("/default/x", UpgradeHandling::Reproduce, CacheUse::Upgrade),
        (
            "/reproduce/x",
            UpgradeHandling::Reproduce,
            CacheUse::Upgrade,
        ),
        ("/reject/x", UpgradeHandling::Reject, CacheUse::Upgrade),
        ("/bypass/x", UpgradeHandling::Tunnel, CacheUse::Upgrade),
        // No cache, nothing to protect: tunnel.
        ("/uncached/x", UpgradeHandling::Tunnel, CacheUse::Disabled),
    ];
    for (path, handling, cache) in cases {
        let decision = decide(&engine, &get(path).upgrade());
        assert_eq!(
            (decision.upgrade, decision.cache),
            (handling, cache),
            "{path}"
        );
        // Without the upgrade headers the same route caches normally.
        let plain = decide(&engine, &get(path));
        assert_eq!(plain.upgrade, UpgradeHandling::None, "{path}");
    }
    // Not an upgrade: a POST with upgrade headers, or a non-WebSocket upgrade.
    let post = decide(&engine, &get("/reject/x").method("POST").upgrade());
    assert_eq!(
        (post.upgrade, post.cache),
        (UpgradeHandling::None, CacheUse::Enabled)
    );
    let h2c = get("/reject/x")
        .header("connection", "upgrade")
        .header("upgrade", "h2c");
    assert_eq!(decide(&engine, &h2c).upgrade, UpgradeHandling::None);
}

#[test]
fn upgrade_handling_follows_caching_as_rules_leave_it() {
    // Rules decide caching before the upgrade is judged: a rule turning caching on makes an
    // uncached route reproduce Front Door's failure, one turning it off lets it tunnel.
    let engine = engine(
        "\
rule_sets:
  - name: cache-on
    rules:
      - name: on
        actions:
          - type: route_override
            caching: true
  - name: cache-off-for-sockets
    rules:
      - name: off
        conditions:
          - {match: request_header, selector: Upgrade, values: [websocket]}
        actions:
          - type: route_override
            caching: false
routes:
  - name: made-caching
    patterns: [/on/*]
    origin_group: web
    rule_sets: [cache-on]
  - name: made-uncached
    patterns: [/off/*]
    origin_group: web
    cache:
      enabled: true
    rule_sets: [cache-off-for-sockets]
",
    );
    let on = decide(&engine, &get("/on/x").upgrade());
    assert_eq!(
        (on.upgrade, on.cache),
        (UpgradeHandling::Reproduce, CacheUse::Upgrade)
    );
    let off = decide(&engine, &get("/off/x").upgrade());
    assert_eq!(fired(&engine, &off), ["cache-off-for-sockets/off"]);
    assert_eq!(
        (off.upgrade, off.cache),
        (UpgradeHandling::Tunnel, CacheUse::Disabled)
    );
    assert_eq!(decide(&engine, &get("/off/x")).cache, CacheUse::Enabled);
}
