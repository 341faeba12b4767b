//! TLS between tiers: an edge with `shield_tls` speaks TLS to its shields and checks their
//! certificates; a shield whose certificate it cannot verify is never used (the request
//! goes to the origin group, as for a shield that is down).

mod common;

use common::edge::client;
use common::fleet::{node_yaml, reserve, FleetNode};
use common::origin::TestOrigin;
use common::tls::TestPki;

const PROBE: &str = "shield_probe: { protocol: tcp, interval: 100ms, timeout: 100ms }\n";

/// GETs `path` from `node`; its `X-Cache` and body.
async fn get(node: &FleetNode, path: &str) -> (String, String) {
    let response = client().get(node.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let x_cache = response.headers()["x-cache"].to_str().unwrap().to_string();
    (x_cache, response.text().await.unwrap())
}

#[tokio::test]
async fn an_edge_speaks_tls_to_its_shields_and_checks_their_certificates() {
    let origin = TestOrigin::ok(&[("cache-control", "max-age=600")]).await;
    let rules = format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\norigin_groups:\n  - name: web\n    origins: [{{ address: \"{}\" }}]\n",
        origin.addr()
    );
    let pki = TestPki::new();
    let cert = pki.issue("shield", &["shield.test"]);
    let shield_node = node_yaml("shield-0", "tier: shield\ntrusted_edges: [\"127.0.0.1\"]\n")
        .replace(
            "  - address: 127.0.0.1:1\n",
            &format!(
                "  - address: 127.0.0.1:1\n    tls:\n      certificates:\n        - cert_file: {}\n          key_file: {}\n",
                cert.cert.display(),
                cert.key.display()
            ),
        );
    let shield = FleetNode::start("shield-0", &shield_node, &rules, reserve());
    let edge = |name: &str, tls: &str| {
        let extra = format!("shields: [\"{}\"]\nshield_tls: {tls}\n{PROBE}", shield.addr);
        FleetNode::start(name, &node_yaml(name, &extra), &rules, reserve())
    };
    let trusting = format!(
        "{{ server_name: shield.test, ca_file: {} }}",
        pki.ca_path().display()
    );
    let (first, second) = (edge("edge-1", &trusting), edge("edge-2", &trusting));

    // Both edges reach the shield over TLS: the second one's request is the shield's hit.
    assert_eq!(get(&first, "/page").await.0, "TCP_MISS");
    assert_eq!(
        get(&second, "/page").await,
        ("TCP_REMOTE_HIT".to_string(), "origin /page".to_string())
    );
    assert_eq!(origin.count(), 1);
    let via = origin.requests()[0].headers["via"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(via.contains("shield-0"), "through the shield: {via}");

    // An edge that checks the shield's certificate against the system roots cannot verify
    // it: its request goes to the origin, not to the shield.
    let doubting = edge("edge-3", "{ server_name: shield.test }");
    assert_eq!(
        get(&doubting, "/other").await,
        ("TCP_MISS".to_string(), "origin /other".to_string())
    );
    let last = origin.requests().last().unwrap().clone();
    let via = last.headers["via"].to_str().unwrap();
    assert!(!via.contains("shield-0"), "not through the shield: {via}");
}
