//! Origin selection without sockets: the pool built from a real config file, health set
//! by recording probe outcomes, and thousands of selections counted.

use std::collections::HashMap;
use std::time::Duration;

use portico::origin::health::{ProbeOutcome, Verdict};
use portico::origin::OriginPool;

/// Loads `groups` (YAML under `origin_groups:`) through the config loader.
fn pool(groups: &str) -> (OriginPool, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("portico.yaml"),
        "name: t\nlisteners:\n  - address: 127.0.0.1:1\nrules_dir: rules\naccess_log: off\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/rules.yaml"),
        format!("routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\nrule_sets: []\norigin_groups:\n{groups}"),
    )
    .unwrap();
    let loaded = portico::config::load(&dir.path().join("portico.yaml"))
        .unwrap_or_else(|e| panic!("config refused:\n{e}"));
    let groups = &loaded.config.origin_groups;
    let names = groups[0].origins.iter().map(|o| o.name.clone()).collect();
    (OriginPool::new(groups), names)
}

/// A group `web` of origins given as `(name, port, priority, weight)`; weight 0 leaves it
/// unset (the default).
fn group(origins: &[(&str, u16, u32, u32)], probed: bool) -> String {
    let mut yaml = "  - name: web\n    origins:\n".to_string();
    for (name, port, priority, weight) in origins {
        yaml += &format!(
            "      - name: {name}\n        address: 127.0.0.1:{port}\n        priority: {priority}\n"
        );
        if *weight > 0 {
            yaml += &format!("        weight: {weight}\n");
        }
    }
    if probed {
        yaml += "    health_probe: { interval: 1s, timeout: 500ms }\n";
    }
    yaml
}

/// Selects `n` times (each a fresh request) and counts the origins chosen.
fn spread(pool: &OriginPool, names: &[String], n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let chosen = pool.select(0, &[]).expect("an origin");
        *counts.entry(names[chosen.index].clone()).or_default() += 1;
    }
    counts
}

fn probe(pool: &OriginPool, index: usize, passed: bool) -> Verdict {
    let outcome = ProbeOutcome {
        time_ms: 0,
        latency: Duration::from_millis(1),
        status: Some(if passed { 200 } else { 503 }),
        error: (!passed).then(|| "status 503".to_string()),
    };
    pool.health(0).unwrap().record(index, outcome)
}

fn assert_within_ten_percent(counts: &HashMap<String, usize>, name: &str, expected: f64) {
    let got = counts.get(name).copied().unwrap_or(0) as f64;
    assert!(
        (got - expected).abs() <= expected * 0.10,
        "{name}: {got} requests, expected {expected} ±10% ({counts:?})"
    );
}

#[test]
fn ten_thousand_requests_follow_the_weights() {
    // 100 : 300 : the default 50 : 550 (sum 1,000).
    let (pool, names) = pool(&group(
        &[
            ("a", 1001, 1, 100),
            ("b", 1002, 1, 300),
            ("c", 1003, 1, 0),
            ("d", 1004, 1, 550),
        ],
        false,
    ));
    let counts = spread(&pool, &names, 10_000);
    assert_within_ten_percent(&counts, "a", 1_000.0);
    assert_within_ten_percent(&counts, "b", 3_000.0);
    assert_within_ten_percent(&counts, "c", 500.0);
    assert_within_ten_percent(&counts, "d", 5_500.0);
}

#[test]
fn weights_hold_among_the_healthy_origins_left() {
    let (pool, names) = pool(&group(
        &[
            ("a", 1001, 1, 100),
            ("b", 1002, 1, 300),
            ("c", 1003, 1, 600),
        ],
        true,
    ));
    for index in 0..3 {
        probe(&pool, index, index != 2);
    }
    let counts = spread(&pool, &names, 10_000);
    assert_eq!(counts.get("c"), None);
    assert_within_ten_percent(&counts, "a", 2_500.0);
    assert_within_ten_percent(&counts, "b", 7_500.0);
}

#[test]
fn the_lowest_priority_value_wins_while_healthy() {
    let (pool, names) = pool(&group(
        &[("backup", 1001, 2, 50), ("primary", 1002, 1, 50)],
        true,
    ));
    probe(&pool, 0, true);
    probe(&pool, 1, true);
    assert_eq!(spread(&pool, &names, 100)["primary"], 100);
    probe(&pool, 1, false);
    assert_eq!(spread(&pool, &names, 100)["backup"], 100);
    probe(&pool, 1, true);
    assert_eq!(spread(&pool, &names, 100)["primary"], 100);
}

#[test]
fn every_origin_unhealthy_spreads_over_all_priorities() {
    let (pool, names) = pool(&group(
        &[
            ("p1", 1001, 1, 50),
            ("p2", 1002, 2, 50),
            ("p3", 1003, 3, 100),
        ],
        true,
    ));
    for index in 0..3 {
        assert_eq!(probe(&pool, index, false), Verdict::Unhealthy);
    }
    assert!(pool.health(0).unwrap().all_unhealthy());
    let counts = spread(&pool, &names, 1_000);
    assert_within_ten_percent(&counts, "p1", 250.0);
    assert_within_ten_percent(&counts, "p2", 250.0);
    assert_within_ten_percent(&counts, "p3", 500.0);
    probe(&pool, 1, true);
    assert!(!pool.health(0).unwrap().all_unhealthy());
    assert_eq!(spread(&pool, &names, 10)["p2"], 10);
}

#[test]
fn a_retry_never_repeats_an_origin_and_ends_when_all_were_tried() {
    let (pool, _) = pool(&group(
        &[("a", 1001, 1, 50), ("b", 1002, 1, 50), ("c", 1003, 2, 50)],
        true,
    ));
    for index in 0..3 {
        probe(&pool, index, index != 1);
    }
    let mut tried = Vec::new();
    while let Some(chosen) = pool.select(0, &tried) {
        tried.push(chosen.index);
    }
    // Healthy first, by priority (a, then c), then the unhealthy b as a last resort.
    assert_eq!(tried, vec![0, 2, 1]);
}

#[test]
fn a_probed_origin_is_not_preferred_before_its_first_probe() {
    let (pool, _) = pool(&group(&[("a", 1001, 1, 50), ("b", 1002, 2, 50)], true));
    let health = pool.health(0).unwrap();
    assert_eq!(health.origin(0).unwrap().verdict(), Verdict::Pending);
    probe(&pool, 1, true);
    assert_eq!(pool.select(0, &[]).unwrap().index, 1);
}

#[test]
fn explain_shows_the_origin_a_healthy_group_would_use() {
    // `portico explain` sends no probes: its pool's origins stay pending.
    let (pool, names) = pool(&group(
        &[("backup", 1001, 2, 50), ("primary", 1002, 1, 50)],
        true,
    ));
    let chosen = pool.select_assuming_healthy(0).unwrap();
    assert_eq!(names[chosen.index], "primary");
}
