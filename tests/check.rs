//! `portico check` on broken configurations: every case writes a node file and rule files
//! into a temporary folder, runs the built binary, and checks the exit code and the exact
//! `file:line:column`, field path and message of each diagnostic.

mod common;

use std::path::Path;

use common::check::{check_files, run_check, Checked};

/// The node file of every case: rules beside it, no access log.
const NODE: &str = "\
name: test-node
listeners:
  - address: 127.0.0.1:0
rules_dir: rules
access_log: off
";

/// The common case: the standard node file and one `rules/routes.yaml`.
fn check_routes(routes_yaml: &str) -> Checked {
    check_files(NODE, &[("routes.yaml", routes_yaml)])
}

#[test]
fn unknown_field() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    cache_enabled: true
",
    )
    .refused();
    // Stage 1: serde's position is the unknown key; its path leads the message.
    out.error(
        "rules/routes.yaml:9:5",
        "routes[0]",
        "unknown field `cache_enabled`, expected one of",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn missing_origin_group() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
  - name: api
    patterns: [\"/api/*\"]
    origin_group: backend
",
    )
    .refused();
    out.error(
        "rules/routes.yaml:11:5",
        "routes[1].origin_group",
        "no origin group named \"backend\"",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn missing_rule_set() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    rule_sets: [headers, nope]
rule_sets:
  - name: headers
    rules:
      - name: no-cache
        actions:
          - type: route_override
            caching: false
",
    )
    .refused();
    // The second item of the flow list: `    rule_sets: [headers, nope]`.
    out.error(
        "rules/routes.yaml:9:26",
        "routes[0].rule_sets[1]",
        "no rule set named \"nope\"",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn bad_duration() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    websocket: true
    tunnel_idle_timeout: 5 minutes
",
    )
    .refused();
    out.error(
        "rules/routes.yaml:10:5",
        "routes[0].tunnel_idle_timeout",
        "\"5 minutes\" has an unknown unit",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn bad_node_duration() {
    let node = format!("{NODE}defaults:\n  cache_heuristic_max: a week\n");
    let routes = "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
";
    let out = check_files(&node, &[("routes.yaml", routes)]).refused();
    out.error(
        "portico.yaml:7:3",
        "defaults.cache_heuristic_max",
        "\"a week\" is not a duration",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn duplicate_route_name() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
  - name: site
    patterns: [\"/other/*\"]
    origin_group: web
",
    )
    .refused();
    out.error(
        "rules/routes.yaml:9:5",
        "routes[1].name",
        "duplicate route name \"site\" (first defined at ",
    );
    // The message points back at the first definition.
    assert!(
        out.stdout.contains("/rules/routes.yaml:6:5)"),
        "{}",
        out.stdout
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn identical_patterns_on_two_routes() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
  - name: assets
    patterns:
      - /assets/*
      - /*
    origin_group: web
",
    )
    .refused();
    out.error(
        "rules/routes.yaml:12:9",
        "routes[1].patterns[1]",
        "pattern \"/*\" on domain * is already served by route \"site\"",
    );
    // ...and names where `site` claimed it: the quoted item of `    patterns: ["/*"]`.
    assert!(
        out.stdout.contains("/rules/routes.yaml:7:16)"),
        "{}",
        out.stdout
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn bad_yaml_indentation() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
     origin_group: web
",
    )
    .refused();
    // A syntax error has no field path; the position is the over-indented key.
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("/rules/routes.yaml:8:6: error: "))
        .unwrap_or_else(|| panic!("no error at 8:6:\n{}", out.stdout));
    assert!(line.contains("did not find expected key"), "{line}");
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn bad_regex() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    rule_sets: [rs]
rule_sets:
  - name: rs
    rules:
      - name: r
        conditions:
          - match: request_path
            operator: regex
            values: [\"^/ok$\", \"^/(unclosed\"]
        actions:
          - type: route_override
            caching: false
",
    )
    .refused();
    // The second value, not the first (which compiles).
    out.error(
        "rules/routes.yaml:17:31",
        "rule_sets[0].rules[0].conditions[0].values[1]",
        "bad regex",
    );
    assert!(out.stdout.contains("unclosed group"), "{}", out.stdout);
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn empty_origin_list() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins: []
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
",
    )
    .refused();
    out.error(
        "rules/routes.yaml:3:5",
        "origin_groups[0].origins",
        "an origin group needs at least one origin",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn weight_out_of_range() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
      - address: 127.0.0.1:10
        weight: 5000
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
",
    )
    .refused();
    out.error(
        "rules/routes.yaml:6:9",
        "origin_groups[0].origins[1].weight",
        "weight 5000 is out of range 1..=1000",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn host_header_that_cannot_be_a_header() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
        host_header: \"app\\u0001.internal\"
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
",
    )
    .refused();
    out.error(
        "rules/routes.yaml:5:9",
        "origin_groups[0].origins[0].host_header",
        "\"app\\u{1}.internal\" cannot be a Host header (control characters)",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn unknown_action_type() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    rule_sets: [rs]
rule_sets:
  - name: rs
    rules:
      - name: r
        actions:
          - type: route_override
            caching: false
          - type: add_header
",
    )
    .refused();
    out.error(
        "rules/routes.yaml:17:13",
        "rule_sets[0].rules[0].actions[1].type",
        "unknown action type \"add_header\"; expected one of route_override",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn wrong_type_websocket_string() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    websocket: \"yes\"
",
    )
    .refused();
    // Stage 1: serde points at the value.
    out.error(
        "rules/routes.yaml:9:16",
        "routes[0].websocket",
        "invalid type: string \"yes\", expected a boolean",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn wrong_type_priority_word() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
        priority: high
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
",
    )
    .refused();
    out.error(
        "rules/routes.yaml:5:19",
        "origin_groups[0].origins[0].priority",
        "invalid type: string \"high\", expected u32",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

/// A problem reported at a list item (a condition) points at the item's first key, not
/// at the `:` after it.
#[test]
fn condition_without_selector_points_at_the_item() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
rule_sets:
  - name: rs
    rules:
      - name: r
        conditions:
          - match: request_header
            values: [x]
        actions:
          - type: route_override
            caching: false
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    rule_sets: [rs]
",
    )
    .refused();
    out.error(
        "rules/routes.yaml:10:13",
        "rule_sets[0].rules[0].conditions[0]",
        "this condition needs a `selector`",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn errors_in_three_files_are_reported_in_one_run() {
    let node = "\
name: test-node
listeners:
  - address: localhost
rules_dir: rules
access_log: off
";
    let origins = "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
        priority: 9
";
    let routes = "\
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    rule_sets: [missing]
";
    let out = check_files(node, &[("origins.yaml", origins), ("routes.yaml", routes)]).refused();
    out.error(
        "portico.yaml:3:5",
        "listeners[0].address",
        "\"localhost\" is not an address",
    );
    out.error(
        "rules/origins.yaml:5:9",
        "origin_groups[0].origins[0].priority",
        "priority 9 is out of range 1..=5",
    );
    // `web` comes from the other file: only the rule set is missing.
    out.error(
        "rules/routes.yaml:5:17",
        "routes[0].rule_sets[0]",
        "no rule set named \"missing\"",
    );
    assert_eq!(out.error_count(), 3, "{}", out.stdout);
    assert!(out.stdout.contains("3 error(s)"), "{}", out.stdout);
}

/// A node file that fails stage 1 still has its rules folder read and checked, so both
/// files' errors come out (and not "cannot read ../rules").
#[test]
fn a_broken_node_file_and_a_broken_rules_file_both_report() {
    let node = "\
name: test-node
listeners:
  - address: 127.0.0.1:0
rules_dir: rules
access_log: off
threads: 2
";
    let routes = "\
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    websocket: maybe
";
    let out = check_files(node, &[("routes.yaml", routes)]).refused();
    let node_line = out
        .stdout
        .lines()
        .find(|l| l.contains("/portico.yaml:6:1: error: "))
        .unwrap_or_else(|| panic!("no node error at 6:1:\n{}", out.stdout));
    assert!(node_line.contains("unknown field `threads`"), "{node_line}");
    out.error(
        "rules/routes.yaml:5:16",
        "routes[0].websocket",
        "invalid type: string \"maybe\", expected a boolean",
    );
    assert_eq!(out.error_count(), 2, "{}", out.stdout);
}

#[test]
fn shipped_config_passes_with_its_legacy_warning() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_check(&root.join("conf/portico.yaml")).accepted();
    // The `legacy` route's position, found in the shipped file itself.
    let routes = std::fs::read_to_string(root.join("rules/routes.yaml")).unwrap();
    let line = routes
        .lines()
        .position(|l| l == "  - name: legacy")
        .expect("the shipped rules have a `legacy` route")
        + 1;
    let index = routes
        .lines()
        .filter(|l| l.starts_with("  - name: "))
        .position(|l| l == "  - name: legacy")
        .unwrap();
    out.warning(
        &format!("rules/routes.yaml:{line}:5"),
        &format!("routes[{index}]"),
        "route \"legacy\" has caching on: a WebSocket upgrade here fails as on Azure Front Door",
    );
    assert_eq!(out.error_count(), 0, "{}", out.stdout);
}

#[test]
fn websocket_route_with_a_caching_rule_is_warned_about() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
rule_sets:
  - name: cache-all
    rules:
      - name: turn-caching-on
        actions:
          - type: route_override
            caching: true
routes:
  - name: socket
    patterns: [\"/ws\"]
    origin_group: web
    websocket: true
    rule_sets: [cache-all]
",
    )
    .accepted();
    out.warning(
        "rules/routes.yaml:17:5",
        "routes[0].rule_sets",
        "rule \"turn-caching-on\" turns caching on, but route \"socket\" is a WebSocket route",
    );
    assert!(out.stdout.contains("1 warnings"), "{}", out.stdout);
}

#[test]
fn probe_settings_the_probe_kind_ignores_are_warned_about() {
    let out = check_routes(
        "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
    health_probe:
      protocol: tcp
      path: /healthz
      expect_status: [\"200\"]
  - name: sockets
    origins:
      - address: 127.0.0.1:9
    health_probe:
      protocol: websocket
      path: /ws
      method: GET
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
  - name: socket
    patterns: [\"/ws\"]
    origin_group: sockets
    websocket: true
",
    )
    .accepted();
    out.warning(
        "rules/routes.yaml:7:7",
        "origin_groups[0].health_probe.path",
        "a tcp probe does not use `path`: it is ignored",
    );
    out.warning(
        "rules/routes.yaml:8:7",
        "origin_groups[0].health_probe.expect_status",
        "a tcp probe does not use `expect_status`: it is ignored",
    );
    out.warning(
        "rules/routes.yaml:15:7",
        "origin_groups[1].health_probe.method",
        "a websocket probe does not use `method`: it is ignored",
    );
    // A websocket probe does use its path.
    assert!(out.stdout.contains("3 warnings"), "{}", out.stdout);
}

#[test]
fn an_admin_listener_beyond_loopback_needs_a_long_enough_token() {
    let routes = "\
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
";
    let open = format!("{NODE}admin:\n  address: 0.0.0.0:9090\n");
    let out = check_files(&open, &[("routes.yaml", routes)]).refused();
    out.error(
        "portico.yaml:7:3",
        "admin.address",
        "reachable beyond this machine: set admin.token_file",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);

    let with_token = format!("{open}  token_file: rules/admin.token\n");
    let short = [("routes.yaml", routes), ("admin.token", "secret\n")];
    let out = check_files(&with_token, &short).refused();
    out.error(
        "portico.yaml:8:3",
        "admin.token_file",
        "must hold one token of at least 16 visible ASCII characters",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);

    let long = [
        ("routes.yaml", routes),
        ("admin.token", "0123456789abcdef-xyz\n"),
    ];
    check_files(&with_token, &long).accepted();
}

/// Settings that would make a running node misbehave are refused where they are written:
/// an admin listener on a proxy port, zero or tiny intervals and timeouts, absurd threads.
#[test]
fn settings_that_would_misbehave_are_refused() {
    let node = "\
name: test-node
listeners:
  - address: 0.0.0.0:8080
admin:
  address: 127.0.0.1:8080
server:
  threads: 100000
rules_dir: rules
access_log: off
defaults:
  tunnel_idle_timeout: 0s
";
    let routes = "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
    health_probe: { interval: 0s }
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    tunnel_max_lifetime: 10ms
";
    let out = check_files(node, &[("routes.yaml", routes)]).refused();
    out.error(
        "portico.yaml:5:3",
        "admin.address",
        "share a port with a proxy listener",
    );
    out.error("portico.yaml:7:3", "server.threads", "only adds contention");
    out.error(
        "portico.yaml:11:3",
        "defaults.tunnel_idle_timeout",
        "too short",
    );
    out.error(
        "rules/routes.yaml:5:21",
        "origin_groups[0].health_probe.interval",
        "too short",
    );
    out.error(
        "rules/routes.yaml:10:5",
        "routes[0].tunnel_max_lifetime",
        "too short",
    );
    assert_eq!(out.error_count(), 5, "{}", out.stdout);
}

/// A rules file nested absurdly deep, or endless, is refused quickly instead of taking
/// minutes (or all memory) to parse.
#[test]
fn files_too_deep_or_too_large_are_refused_quickly() {
    let deep = format!("routes: {}{}\n", "[".repeat(200_000), "]".repeat(200_000));
    let started = std::time::Instant::now();
    let out = check_files(NODE, &[("routes.yaml", &deep)]).refused();
    out.error(
        "rules/routes.yaml:1:73",
        "",
        "nested more than 64 levels deep",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("portico.yaml"), NODE).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("rules/endless.yaml")).unwrap();
    let started = std::time::Instant::now();
    let out = run_check(&dir.path().join("portico.yaml"));
    assert!(!out.success);
    assert!(
        out.stdout.contains("larger than 16777216 bytes"),
        "{}",
        out.stdout
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Rules may not edit the request headers the edge owns: a rule could otherwise forge a
/// hop (`Via`, `CDN-Loop`), a client (`X-Forwarded-For`) or the request id.
#[test]
fn rules_may_not_edit_the_headers_the_edge_owns() {
    let rules = "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
    rule_sets: [forge]
rule_sets:
  - name: forge
    rules:
      - name: hop
        actions:
          - { type: modify_request_header, header_action: delete, name: CDN-Loop }
          - { type: modify_request_header, header_action: overwrite, name: X-Forwarded-For, value: 1.2.3.4 }
          - { type: modify_request_header, header_action: overwrite, name: X-Edge, value: \"1\" }
          - { type: modify_response_header, header_action: delete, name: Via }
";
    let out = check_routes(rules).refused();
    out.error(
        "rules/routes.yaml:15:67",
        "rule_sets[0].rules[0].actions[0].name",
        "set by the edge itself",
    );
    out.error(
        "rules/routes.yaml:16:70",
        "rule_sets[0].rules[0].actions[1].name",
        "set by the edge itself",
    );
    assert_eq!(out.error_count(), 2, "{}", out.stdout);
}

/// Client limits that would not protect anything, or could never apply, are refused.
#[test]
fn client_limits_out_of_range_are_refused() {
    let node = "\
name: test-node
listeners:
  - address: 127.0.0.1:8080
rules_dir: rules
access_log: off
limits:
  request_head_timeout: 2h
  keepalive_timeout: 500ms
  max_request_head: 2MiB
  max_headers: 300
  max_uri: 10
  max_connections_per_client: 0
  fd_reserve: 4
  request_body_timeout: 3h
  request_body_min_rate: fast
  max_request_body: lots
";
    let routes = "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
";
    let out = check_files(node, &[("routes.yaml", routes)]).refused();
    out.error(
        "portico.yaml:7:3",
        "limits.request_head_timeout",
        "no limit against slow clients",
    );
    out.error(
        "portico.yaml:8:3",
        "limits.keepalive_timeout",
        "whole seconds",
    );
    out.error(
        "portico.yaml:9:3",
        "limits.max_request_head",
        "over what the edge reads",
    );
    out.error("portico.yaml:10:3", "limits.max_headers", "give 1 to 256");
    out.error("portico.yaml:11:3", "limits.max_uri", "too small");
    out.error(
        "portico.yaml:12:3",
        "limits.max_connections_per_client",
        "would refuse every connection",
    );
    out.error("portico.yaml:13:3", "limits.fd_reserve", "EMFILE");
    out.error(
        "portico.yaml:14:3",
        "limits.request_body_timeout",
        "no limit against slow clients",
    );
    out.error(
        "portico.yaml:15:3",
        "limits.request_body_min_rate",
        "is not a size",
    );
    out.error(
        "portico.yaml:16:3",
        "limits.max_request_body",
        "is not a size",
    );
    assert_eq!(out.error_count(), 10, "{}", out.stdout);
}

/// `cache.tag_headers` must name distinct headers that neither frame a response nor are the
/// edge's own (they are removed from responses to clients).
#[test]
fn cache_tag_headers_are_checked() {
    let node = "\
name: test-node
listeners:
  - address: 127.0.0.1:8080
rules_dir: rules
access_log: off
cache:
  tag_headers:
    - Cache-Tag
    - cache-tag
    - Content-Length
    - \"bad header\"
  strip_tag_headers: false
";
    let routes = "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
routes:
  - name: site
    patterns: [\"/*\"]
    origin_group: web
";
    let out = check_files(node, &[("routes.yaml", routes)]).refused();
    out.error("portico.yaml:9:7", "cache.tag_headers[1]", "listed twice");
    out.error(
        "portico.yaml:10:7",
        "cache.tag_headers[2]",
        "it frames responses or the edge sets it",
    );
    out.error(
        "portico.yaml:11:7",
        "cache.tag_headers[3]",
        "not a header name",
    );
    assert_eq!(out.error_count(), 3, "{}", out.stdout);
}

#[test]
fn chaos_schedule_errors_are_each_placed() {
    let node = format!(
        "{NODE}chaos:\n  close_tunnels:\n    every: 0s\n    fraction: 1.5\n    how: close_1006\n"
    );
    let routes = "origin_groups:\n  - name: web\n    origins:\n      - address: 127.0.0.1:9\nroutes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n";
    let out = check_files(&node, &[("routes.yaml", routes)]).refused();
    out.error("portico.yaml:8:5", "chaos.close_tunnels.every", "too short");
    out.error(
        "portico.yaml:9:5",
        "chaos.close_tunnels.fraction",
        "at most 1",
    );
    out.error("portico.yaml:10:5", "chaos.close_tunnels.how", "RFC 6455");
    assert_eq!(out.error_count(), 3, "{}", out.stdout);
}
