//! What the tier tests share: the rules every node of a test fleet serves, a fleet of
//! shields and edges in front of one origin, and polling helpers over the nodes' logs,
//! `/status` and `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::edge::client;
use super::fleet::{node_yaml, reserve, FleetNode};
use super::origin::TestOrigin;

/// The same rules on every tier: `/*` cached (the `utm` parameter left out of the key),
/// `/inc/*` keeping only `v`, `/legacy/*` rewritten to `/modern/*`, `/api/*` not cached.
pub fn rules(origin: SocketAddr) -> String {
    format!(
        r#"routes:
  - name: site
    patterns: ["/*"]
    origin_group: web
    cache: {{ enabled: true, query_string: exclude, query_params: [utm] }}
    rule_sets: [tweaks]
  - name: inc
    patterns: ["/inc/*"]
    origin_group: web
    cache: {{ enabled: true, query_string: include, query_params: [v] }}
  - name: api
    patterns: ["/api/*"]
    origin_group: web
    cache: {{ enabled: false }}
rule_sets:
  - name: tweaks
    rules:
      - name: rewrite
        conditions:
          - match: request_path
            operator: begins_with
            values: ["/legacy/"]
        actions:
          - type: url_rewrite
            source_pattern: /legacy/
            destination: /modern/
origin_groups:
  - name: web
    origins:
      - address: {origin}
        host_header: origin.internal
"#
    )
}

/// Probes fast enough for tests; a shield is probed by a TCP connect.
pub const SHIELD_PROBE: &str = "shield_probe: { protocol: tcp, interval: 100ms, timeout: 100ms }\n";

pub struct Fleet {
    pub edges: Vec<FleetNode>,
    pub shields: Vec<FleetNode>,
}

/// `shields` shields and `edges` edges in front of the origin at `origin`; `edge_extra` is
/// added to each edge's node file.
pub async fn fleet(origin: SocketAddr, shields: usize, edges: usize, edge_extra: &str) -> Fleet {
    let rules = rules(origin);
    let shields: Vec<FleetNode> = (0..shields)
        .map(|i| {
            let name = format!("shield-{i}");
            let node = node_yaml(&name, "tier: shield\ntrusted_edges: [\"127.0.0.1\"]\n");
            FleetNode::start(&name, &node, &rules, reserve())
        })
        .collect();
    let list = shields
        .iter()
        .map(|s| format!("\"{}\"", s.addr))
        .collect::<Vec<_>>()
        .join(", ");
    let edges = (0..edges)
        .map(|i| {
            let name = format!("edge-{i}");
            let extra = format!("shields: [{list}]\n{SHIELD_PROBE}{edge_extra}");
            FleetNode::start(&name, &node_yaml(&name, &extra), &rules, reserve())
        })
        .collect();
    Fleet { edges, shields }
}

pub struct Fetched {
    pub status: u16,
    pub x_cache: String,
    pub request_id: String,
}

pub async fn get(node: &FleetNode, path: &str, headers: &[(&str, &str)]) -> Fetched {
    let mut request = client().get(node.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(Duration::from_secs(20), request.send())
        .await
        .unwrap_or_else(|_| panic!("{path} through {} hung", node.name))
        .unwrap_or_else(|e| panic!("{path} through {}: {e}", node.name));
    let status = response.status().as_u16();
    let x_cache = response
        .headers()
        .get("x-cache")
        .map_or(String::new(), |v| v.to_str().unwrap().to_string());
    let request_id = response
        .headers()
        .get("x-portico-ref")
        .map_or(String::new(), |v| v.to_str().unwrap().to_string());
    let _ = response.bytes().await;
    Fetched {
        status,
        x_cache,
        request_id,
    }
}

pub fn cached_origin() -> impl std::future::Future<Output = TestOrigin> {
    TestOrigin::ok(&[("cache-control", "max-age=600")])
}

/// Fetches every path once through `edge` (each must succeed) and tells which shield
/// served each, from the lines the shields' access logs gained meanwhile.
pub async fn round(
    edge: &FleetNode,
    shields: &[FleetNode],
    paths: &[String],
) -> BTreeMap<String, usize> {
    let marks: Vec<usize> = shields.iter().map(|s| s.log_lines().len()).collect();
    for path in paths {
        let fetched = get(edge, path, &[]).await;
        assert_eq!(fetched.status, 200, "{path}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut served = BTreeMap::new();
        let mut lines = 0;
        for (index, (shield, mark)) in shields.iter().zip(&marks).enumerate() {
            for line in shield.log_lines().iter().skip(*mark) {
                lines += 1;
                served.insert(line["path"].as_str().unwrap().to_string(), index);
            }
        }
        if lines >= paths.len() || Instant::now() > deadline {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every edge sees every shield in `states` (by address) as the probes say.
pub async fn wait_for_shield_health(edges: &[FleetNode], shield: &FleetNode, health: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for edge in edges {
        loop {
            let status = edge.status().await;
            let seen = status["tiers"]["shields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["address"] == shield.addr.to_string())
                .map(|s| s["health"].as_str().unwrap().to_string());
            if seen.as_deref() == Some(health) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never saw {} {health}: {status}",
                edge.name,
                shield.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn purge(node: &FleetNode, body: &str) -> serde_json::Value {
    let response = client()
        .post(node.admin_url("/purge"))
        .body(body.to_string())
        .send()
        .await
        .expect("POST /purge");
    assert_eq!(response.status(), 200);
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// The shields' addresses an edge's `/status` lists, once every one of them is healthy.
pub async fn healthy_ring(edge: &FleetNode, want: &[SocketAddr]) {
    let want: BTreeSet<String> = want.iter().map(|a| a.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = edge.status().await;
        let shields = status["tiers"]["shields"].as_array().unwrap().clone();
        let seen: BTreeSet<String> = shields
            .iter()
            .filter(|s| s["health"] == "healthy")
            .map(|s| s["address"].as_str().unwrap().to_string())
            .collect();
        if seen == want && shields.len() == want.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the ring never became {want:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the edge's `/metrics` until `line` is in it.
pub async fn wait_for_metric(edge: &FleetNode, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = client()
            .get(edge.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{line:?} never appeared in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
