//! `portico check` on listener names and routes scoped to listeners (`listeners:`): errors
//! carry `file:line:column` and the field path, like every other field.

mod common;

use common::check::check_files;

const NODE: &str = "\
name: test-node
listeners:
  - address: 127.0.0.1:0
    name: front-a
  - address: 127.0.0.1:1
    name: front-b
rules_dir: rules
access_log: off
";

const GROUP: &str = "\
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
";

#[test]
fn a_route_naming_an_unknown_listener_is_an_error() {
    let routes = format!(
        "{GROUP}routes:\n  - name: site\n    patterns: [\"/*\"]\n    listeners: [front-a, front-c]\n    origin_group: web\n"
    );
    let out = check_files(NODE, &[("routes.yaml", &routes)]).refused();
    out.error(
        "rules/routes.yaml:8:26",
        "routes[0].listeners[1]",
        "no listener named \"front-c\" (named listeners: front-a, front-b)",
    );
    assert_eq!(out.error_count(), 1, "{}", out.stdout);
}

#[test]
fn listener_names_are_tokens_and_unique() {
    let node = "\
name: test-node
listeners:
  - address: 127.0.0.1:0
    name: \"bad name\"
  - address: 127.0.0.1:1
    name: front-a
  - address: 127.0.0.1:2
    name: front-a
rules_dir: rules
access_log: off
";
    let routes =
        format!("{GROUP}routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n");
    let out = check_files(node, &[("routes.yaml", &routes)]).refused();
    out.error(
        "portico.yaml:4:5",
        "listeners[0].name",
        "listener name \"bad name\" must be letters, digits",
    );
    out.error(
        "portico.yaml:8:5",
        "listeners[2].name",
        "duplicate listener name \"front-a\" (first given to listeners[1])",
    );
    assert_eq!(out.error_count(), 2, "{}", out.stdout);
}

#[test]
fn one_pattern_may_serve_different_sites_on_disjoint_listeners_only() {
    let route = |name: &str, listeners: &str| {
        format!("  - name: {name}\n    patterns: [\"/*\"]\n{listeners}    origin_group: web\n")
    };
    let disjoint = format!(
        "{GROUP}routes:\n{}{}",
        route("a", "    listeners: [front-a]\n"),
        route("b", "    listeners: [front-b]\n")
    );
    check_files(NODE, &[("routes.yaml", &disjoint)]).accepted();
    // An unscoped route serves every listener, so it overlaps any other.
    let overlapping = format!(
        "{GROUP}routes:\n{}{}",
        route("a", "    listeners: [front-a]\n"),
        route("everywhere", "")
    );
    let out = check_files(NODE, &[("routes.yaml", &overlapping)]).refused();
    out.error(
        "rules/routes.yaml:11:16",
        "routes[1].patterns[0]",
        "pattern \"/*\" on domain * is already served by route \"a\"",
    );
    assert!(
        out.stdout.contains("give both routes disjoint `listeners`"),
        "{}",
        out.stdout
    );
}
