//! Routes scoped to listeners across tiers: the edge tells its shield which listener a
//! request came in on, so the shield takes the same route, the same origin group and the
//! same cache key, whatever listener the shield itself received it on.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::edge::client;
use common::fleet::{node_yaml, reserve, FleetNode};
use common::origin::{Recorded, TestOrigin};

async fn site(name: &'static str) -> TestOrigin {
    TestOrigin::start(Arc::new(move |req: &Recorded| {
        let mut response = http::Response::new(Bytes::from(format!("{name} {}", req.uri)));
        response
            .headers_mut()
            .insert("cache-control", "max-age=600".parse().unwrap());
        response
    }))
    .await
}

/// A node file whose listeners are named `names` (the first is the one the node serves on).
fn named(name: &str, names: [&str; 2], extra: &str) -> String {
    node_yaml(name, extra).replace(
        "listeners:\n  - address: 127.0.0.1:1\n",
        &format!(
            "listeners:\n  - address: 127.0.0.1:1\n    name: {}\n  - address: 127.0.0.1:2\n    name: {}\n",
            names[0], names[1]
        ),
    )
}

#[tokio::test]
async fn a_shield_routes_by_the_edges_listener_and_agrees_on_the_key() {
    let (a, b) = (site("site-a").await, site("site-b").await);
    let rules = format!(
        "routes:\n  - name: a\n    patterns: [\"/*\"]\n    listeners: [front-a]\n    origin_group: a\n    cache: {{ enabled: true }}\n  - name: b\n    patterns: [\"/*\"]\n    listeners: [front-b]\n    origin_group: b\n    cache: {{ enabled: true }}\norigin_groups:\n  - name: a\n    origins: [{{ address: \"{}\" }}]\n  - name: b\n    origins: [{{ address: \"{}\" }}]\n",
        a.addr(),
        b.addr()
    );
    // The shield serves on its `front-a`; the edges on their `front-b`.
    let shield_node = named(
        "shield-0",
        ["front-a", "front-b"],
        "tier: shield\ntrusted_edges: [\"127.0.0.1\"]\n",
    );
    let shield = FleetNode::start("shield-0", &shield_node, &rules, reserve());
    let edge_extra = format!(
        "shields: [\"{}\"]\nshield_probe: {{ protocol: tcp, interval: 100ms, timeout: 100ms }}\n",
        shield.addr
    );
    let edges: Vec<FleetNode> = (0..2)
        .map(|i| {
            let name = format!("edge-{i}");
            let node = named(&name, ["front-b", "front-a"], &edge_extra);
            FleetNode::start(&name, &node, &rules, reserve())
        })
        .collect();
    let mut seen = Vec::new();
    for edge in &edges {
        let response = client()
            .get(edge.url("/page"))
            .header("host", "shop.example")
            .send()
            .await
            .unwrap();
        let x_cache = response.headers()["x-cache"].to_str().unwrap().to_string();
        seen.push((x_cache, response.text().await.unwrap()));
    }
    assert_eq!(
        seen,
        [
            ("TCP_MISS".to_string(), "site-b /page".to_string()),
            ("TCP_REMOTE_HIT".to_string(), "site-b /page".to_string()),
        ]
    );
    assert_eq!((a.count(), b.count()), (0, 1));
}
