//! Multi-tier fleets on loopback (SPEC §5, issue 12): edges that fetch through shields
//! chosen by consistent hashing of the cache key, each node a server of its own.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::edge::client;
use common::fleet::{node_yaml, reserve, FleetNode};
use common::gated::{Answer, Body, GatedOrigin};
use common::origin::TestOrigin;

/// The same rules on every tier: `/*` cached (the `utm` parameter left out of the key),
/// `/inc/*` keeping only `v`, `/legacy/*` rewritten to `/modern/*`, `/api/*` not cached.
fn rules(origin: SocketAddr) -> String {
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
const SHIELD_PROBE: &str = "shield_probe: { protocol: tcp, interval: 100ms, timeout: 100ms }\n";

struct Fleet {
    edges: Vec<FleetNode>,
    shields: Vec<FleetNode>,
}

/// `shields` shields and `edges` edges in front of the origin at `origin`; `edge_extra` is
/// added to each edge's node file.
async fn fleet(origin: SocketAddr, shields: usize, edges: usize, edge_extra: &str) -> Fleet {
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

struct Fetched {
    status: u16,
    x_cache: String,
}

async fn get(node: &FleetNode, path: &str, headers: &[(&str, &str)]) -> Fetched {
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
    let _ = response.bytes().await;
    Fetched { status, x_cache }
}

fn cached_origin() -> impl std::future::Future<Output = TestOrigin> {
    TestOrigin::ok(&[("cache-control", "max-age=600")])
}

/// Fetches every path once through `edge` (each must succeed) and tells which shield
/// served each, from the lines the shields' access logs gained meanwhile.
async fn round(
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
async fn wait_for_shield_health(edges: &[FleetNode], shield: &FleetNode, health: &str) {
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

#[tokio::test]
async fn each_object_is_fetched_once_and_lives_on_one_shield() {
    let origin = cached_origin().await;
    let fleet = fleet(origin.addr(), 2, 2, "").await;
    let paths: Vec<String> = (0..100).map(|i| format!("/objects/{i}")).collect();
    for path in &paths {
        let first = get(&fleet.edges[0], path, &[]).await;
        assert_eq!(
            (first.status, first.x_cache.as_str()),
            (200, "TCP_MISS"),
            "{path}"
        );
    }
    for path in &paths {
        let second = get(&fleet.edges[1], path, &[]).await;
        assert_eq!(
            (second.status, second.x_cache.as_str()),
            (200, "TCP_REMOTE_HIT"),
            "{path}"
        );
    }
    // And the edges keep what they fetched.
    assert_eq!(
        get(&fleet.edges[1], &paths[0], &[]).await.x_cache,
        "TCP_HIT"
    );
    for path in &paths {
        assert_eq!(origin.count_path(path), 1, "{path} reached the origin once");
    }
    assert_eq!(origin.count(), 100);
    // An object on both shields would have been fetched twice: 100 stored in all, spread.
    let on_shields: Vec<u64> = [
        fleet.shields[0].cached_objects().await,
        fleet.shields[1].cached_objects().await,
    ]
    .to_vec();
    assert_eq!(on_shields.iter().sum::<u64>(), 100, "{on_shields:?}");
    assert!(on_shields.iter().all(|&n| n >= 20), "{on_shields:?}");
    for edge in &fleet.edges {
        assert_eq!(edge.cached_objects().await, 100);
    }
    // Both tiers log their status: the edge names the shield and its X-Cache.
    let lines = fleet.edges[1]
        .wait_for_log(|lines| lines.len() >= 101)
        .await;
    let remote = lines
        .iter()
        .find(|l| l["path"] == "/objects/7" && l["cache"] == "TCP_REMOTE_HIT")
        .expect("a remote hit line");
    assert_eq!(remote["shield_cache"], "TCP_HIT");
    let shield = remote["shield"].as_str().unwrap();
    assert!(
        fleet.shields.iter().any(|s| s.addr.to_string() == shield),
        "{remote}"
    );
}

#[tokio::test]
async fn hops_append_via_and_cdn_loop_and_the_client_address_is_kept() {
    let origin = cached_origin().await;
    let fleet = fleet(origin.addr(), 1, 1, "").await;
    let fetched = get(
        &fleet.edges[0],
        "/hops",
        &[
            ("via", "1.0 corp-proxy"),
            ("x-forwarded-for", "198.51.100.7"),
        ],
    )
    .await;
    assert_eq!(fetched.status, 200);
    let seen = &origin.requests()[0];
    assert_eq!(
        seen.headers["via"],
        "1.0 corp-proxy, 1.1 edge-0, 1.1 shield-0"
    );
    assert_eq!(seen.headers["cdn-loop"], "edge-0, shield-0");
    // The shield believed its edge: the client is the list's last entry, once.
    assert_eq!(seen.headers["x-forwarded-for"], "198.51.100.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["host"], "origin.internal");
    // The host the cache key used: normalised, without the client's port (issue 15).
    assert_eq!(
        seen.headers["x-forwarded-host"],
        fleet.edges[0].addr.ip().to_string()
    );
}

/// The shield derives the cache key the edge computed: objects fetched through one edge with
/// one spelling of the request are remote hits through the other with another.
#[tokio::test]
async fn edge_and_shield_agree_on_the_cache_key() {
    let origin = cached_origin().await;
    let fleet = fleet(origin.addr(), 2, 2, "").await;
    let (a, b) = (&fleet.edges[0], &fleet.edges[1]);
    let cases: [(&str, &str, &str, &str, &str); 4] = [
        // (first path, first Host, second path, second Host, origin path)
        (
            "/case/a",
            "Shop.Example.COM",
            "/case/a",
            "shop.example.com",
            "/case/a",
        ),
        (
            "/port/a",
            "shop.example.com:8080",
            "/port/a",
            "shop.example.com",
            "/port/a",
        ),
        (
            "/q/a?x=1&utm=one",
            "shop.example.com",
            "/q/a?utm=two&x=1",
            "shop.example.com",
            "/q/a",
        ),
        (
            "/legacy/page",
            "shop.example.com",
            "/legacy/page",
            "SHOP.example.com:1",
            "/modern/page",
        ),
    ];
    for (first, first_host, second, second_host, at_origin) in cases {
        let one = get(a, first, &[("host", first_host)]).await;
        assert_eq!(one.x_cache, "TCP_MISS", "{first}");
        let two = get(b, second, &[("host", second_host)]).await;
        assert_eq!(
            two.x_cache, "TCP_REMOTE_HIT",
            "{second} with Host {second_host}"
        );
        assert_eq!(origin.count_path(at_origin), 1, "{at_origin}");
    }
    // Include mode: parameters outside the list are not part of the key either.
    assert_eq!(get(a, "/inc/x?v=2&z=1", &[]).await.x_cache, "TCP_MISS");
    assert_eq!(
        get(b, "/inc/x?z=9&v=2", &[]).await.x_cache,
        "TCP_REMOTE_HIT"
    );
    // ... and those in it are.
    assert_eq!(get(b, "/inc/x?v=3", &[]).await.x_cache, "TCP_MISS");
    // `/q/a?x=1` variants differ from `x=2`: a different key, a different object.
    assert_eq!(get(b, "/q/a?x=2", &[]).await.x_cache, "TCP_MISS");
}

#[tokio::test]
async fn simultaneous_misses_over_both_edges_reach_the_origin_once() {
    let origin = GatedOrigin::start(Arc::new(|_, _| Answer {
        status: 200,
        headers: vec![("cache-control", "max-age=600".to_string())],
        body: Body::full("one object"),
    }))
    .await;
    let fleet = fleet(origin.addr, 2, 2, "").await;
    origin.close_gate();
    let urls: Vec<String> = (0..50)
        .map(|i| fleet.edges[i % 2].url("/popular"))
        .collect();
    let requests: Vec<_> = urls
        .into_iter()
        .map(|url| tokio::spawn(async move { client().get(url).send().await }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.arrived() == 0 {
        assert!(Instant::now() < deadline, "no request reached the origin");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    origin.open_gate();
    let mut statuses = BTreeSet::new();
    for request in requests {
        let response = request.await.unwrap().expect("response");
        assert_eq!(response.status(), 200);
        statuses.insert(response.headers()["x-cache"].to_str().unwrap().to_string());
    }
    assert_eq!(origin.arrived(), 1, "statuses seen: {statuses:?}");
}

/// Three shields; objects the origin forbids storing, so every request crosses the tier and
/// the shields' logs say which shield each key went to.
#[tokio::test]
async fn a_dead_shields_keys_move_and_come_back() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let mut fleet = fleet(origin.addr(), 3, 1, "").await;
    let paths: Vec<String> = (0..60).map(|i| format!("/k/{i}")).collect();
    let home = round(&fleet.edges[0], &fleet.shields, &paths).await;
    assert_eq!(home.len(), 60);
    for shield in 0..3 {
        assert!(
            home.values().any(|&s| s == shield),
            "shield {shield} got no key"
        );
    }

    fleet.shields[1].stop();
    // No probe has noticed yet: connect failures move the requests on by themselves.
    let moved = round(&fleet.edges[0], &fleet.shields, &paths).await;
    assert_eq!(moved.len(), 60);
    let mut went_to = BTreeSet::new();
    for path in &paths {
        if home[path] == 1 {
            assert_ne!(moved[path], 1, "{path}");
            went_to.insert(moved[path]);
        } else {
            assert_eq!(
                moved[path], home[path],
                "{path} belongs to a live shield: it stays"
            );
        }
    }
    assert_eq!(
        went_to.len(),
        2,
        "the dead shield's keys spread over the ring"
    );

    fleet.shields[1].restart();
    wait_for_shield_health(&fleet.edges, &fleet.shields[1], "healthy").await;
    let back = round(&fleet.edges[0], &fleet.shields, &paths).await;
    assert_eq!(back, home, "every key is home again");

    // No shield left: the edge goes to the origin group.
    for shield in &mut fleet.shields {
        shield.stop();
    }
    let before = origin.count();
    for path in &paths {
        assert_eq!(get(&fleet.edges[0], path, &[]).await.status, 200, "{path}");
    }
    assert_eq!(origin.count(), before + 60);
}

/// A shield's `X-Cache` is believed only from a shield: an origin (or anything in front of
/// the edge) that says `TCP_HIT` does not make a remote hit.
#[tokio::test]
async fn a_forged_x_cache_is_no_remote_hit() {
    let origin = TestOrigin::ok(&[("cache-control", "max-age=600"), ("x-cache", "TCP_HIT")]).await;
    // The only shield is an address nobody listens on: every request goes to the origin.
    let dead = reserve().local_addr().unwrap();
    let extra = format!("shields: [\"{dead}\"]\n{SHIELD_PROBE}");
    let edge = FleetNode::start(
        "edge-x",
        &node_yaml("edge-x", &extra),
        &rules(origin.addr()),
        reserve(),
    );
    let fetched = get(&edge, "/forged", &[("x-cache", "TCP_HIT")]).await;
    assert_eq!(
        (fetched.status, fetched.x_cache.as_str()),
        (200, "TCP_MISS")
    );
    assert_eq!(get(&edge, "/forged", &[]).await.x_cache, "TCP_HIT");
    let lines = edge.wait_for_log(|lines| !lines.is_empty()).await;
    assert_eq!(lines[0]["shield"], serde_json::Value::Null);
    assert_eq!(lines[0]["shield_cache"], serde_json::Value::Null);
}

/// A shield believes `X-Forwarded-Proto` and `X-Forwarded-For` only from its trusted edges.
#[tokio::test]
async fn a_shield_believes_hop_headers_only_from_its_edges() {
    let origin = cached_origin().await;
    let secure = format!(
        "routes:\n  - name: secure\n    patterns: [\"/*\"]\n    https_redirect: true\n    protocols: [https]\n    forwarding_protocol: http_only\n    origin_group: web\norigin_groups:\n  - name: web\n    origins:\n      - address: {}\n        host_header: origin.internal\n",
        origin.addr()
    );
    let trusting = FleetNode::start(
        "shield-t",
        &node_yaml(
            "shield-t",
            "tier: shield\ntrusted_edges: [\"127.0.0.0/8\"]\n",
        ),
        &secure,
        reserve(),
    );
    let wary = FleetNode::start(
        "shield-w",
        &node_yaml(
            "shield-w",
            "tier: shield\ntrusted_edges: [\"10.0.0.0/8\"]\n",
        ),
        &secure,
        reserve(),
    );
    let claims = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-for", "203.0.113.5"),
    ];
    assert_eq!(get(&trusting, "/a", &claims).await.status, 200);
    assert_eq!(get(&wary, "/a", &claims).await.status, 308);
    let seen = &origin.requests()[0];
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.5");
    let lines = trusting.wait_for_log(|lines| !lines.is_empty()).await;
    assert_eq!(lines[0]["client"], "203.0.113.5");
}

/// edge → shield → the same edge: the edge finds its name in `CDN-Loop` and answers 508,
/// which comes back through the shield; nothing hangs.
#[tokio::test]
async fn a_loop_through_the_tiers_is_a_508() {
    let (edge_listener, shield_listener) = (reserve(), reserve());
    let (edge_addr, shield_addr) = (
        edge_listener.local_addr().unwrap(),
        shield_listener.local_addr().unwrap(),
    );
    let _shield = FleetNode::start(
        "shield-loop",
        &node_yaml(
            "shield-loop",
            "tier: shield\ntrusted_edges: [\"127.0.0.1\"]\n",
        ),
        &rules(edge_addr),
        shield_listener,
    );
    let extra = format!("shields: [\"{shield_addr}\"]\n{SHIELD_PROBE}");
    let edge = FleetNode::start(
        "edge-loop",
        &node_yaml("edge-loop", &extra),
        &rules(shield_addr),
        edge_listener,
    );
    let started = Instant::now();
    let fetched = get(&edge, "/loops", &[]).await;
    assert_eq!(fetched.status, 508);
    assert!(started.elapsed() < Duration::from_secs(10));
    let lines = edge
        .wait_for_log(|lines| {
            lines
                .iter()
                .any(|l| l["status"] == 508 && l["shield"].is_string())
        })
        .await;
    assert!(lines
        .iter()
        .any(|l| l["error"].is_null() && l["status"] == 508));
}

/// WebSocket routes on every tier: `chat` tunnels, `reproduce` is a cached route where an
/// upgrade fails as on Front Door.
fn ws_rules(origin: SocketAddr) -> String {
    format!(
        r#"routes:
  - name: chat
    patterns: ["/chat/*"]
    origin_group: echo
    websocket: true
  - name: cached-reproduce
    patterns: ["/reproduce/*"]
    origin_group: echo
    cache: {{ enabled: true }}
origin_groups:
  - name: echo
    origins:
      - address: {origin}
        host_header: origin.internal
"#
    )
}

/// Edges with `shield_all: true` in front of one shield and a WebSocket echo origin.
async fn ws_fleet() -> (TestOrigin, FleetNode, FleetNode) {
    let origin = TestOrigin::websocket_echo(Arc::new(|r: &common::origin::Recorded| {
        http::Response::builder()
            .header("cache-control", "public, max-age=60")
            .body(bytes::Bytes::from(format!("page {}", r.path())))
            .unwrap()
    }))
    .await;
    let rules = ws_rules(origin.addr());
    let shield = FleetNode::start(
        "shield-ws",
        &node_yaml(
            "shield-ws",
            "tier: shield\ntrusted_edges: [\"127.0.0.1\"]\n",
        ),
        &rules,
        reserve(),
    );
    let extra = format!(
        "shields: [\"{}\"]\nshield_all: true\n{SHIELD_PROBE}",
        shield.addr
    );
    let edge = FleetNode::start("edge-ws", &node_yaml("edge-ws", &extra), &rules, reserve());
    (origin, shield, edge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_crosses_edge_shield_and_origin_with_shield_all() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (origin, shield, edge) = ws_fleet().await;
    let url = format!("ws://{}/chat/room", edge.addr);
    let (mut ws, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    for message in [Message::Text("héllo".into()), Message::Binary(binary)] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), message);
    }
    ws.close(None).await.unwrap();
    let seen = &origin.requests()[0];
    assert_eq!(seen.headers["via"], "1.1 edge-ws, 1.1 shield-ws");
    assert!(seen.headers.contains_key("sec-websocket-key"));
    // Each tier logs a handshake and, when it closes, a tunnel.
    for node in [&edge, &shield] {
        node.wait_for_log(|lines| {
            lines.iter().any(|l| l["status"] == 101) && lines.iter().any(|l| l["kind"] == "tunnel")
        })
        .await;
    }
    let lines = edge.log_lines();
    let handshake = lines.iter().find(|l| l["status"] == 101).unwrap();
    assert_eq!(handshake["shield"], shield.addr.to_string());
}

/// The Front Door reproduction through two tiers: the upgrade on a cached route reaches the
/// origin as a plain GET, the client gets the page's status, and no tier stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_door_reproduction_holds_through_two_tiers() {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let (origin, shield, edge) = ws_fleet().await;
    let url = format!("ws://{}/reproduce/socket", edge.addr);
    for attempt in 1..=2 {
        match tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_err()
        {
            WsError::Http(response) => {
                assert_eq!(response.status(), 200);
                assert_eq!(response.headers()["x-cache"], "UNCACHEABLE");
            }
            other => panic!("expected an HTTP answer, got {other:?}"),
        }
        assert_eq!(
            origin.count_path("/reproduce/socket"),
            attempt,
            "never stored"
        );
    }
    for seen in origin.requests() {
        assert!(!seen.headers.contains_key("upgrade"), "{:?}", seen.headers);
        assert_eq!(seen.method, "GET");
    }
    let lines = shield.wait_for_log(|lines| lines.len() >= 2).await;
    assert!(
        lines.iter().all(|l| l["upgrade"] == "reproduce"),
        "{lines:#?}"
    );
    // The page itself still caches, on the shield as on the edge.
    let page = edge.url("/reproduce/page");
    let x_cache = |r: reqwest::Response| r.headers()["x-cache"].to_str().unwrap().to_string();
    assert_eq!(
        x_cache(client().get(&page).send().await.unwrap()),
        "TCP_MISS"
    );
    assert_eq!(
        x_cache(client().get(&page).send().await.unwrap()),
        "TCP_HIT"
    );
    assert_eq!(origin.count_path("/reproduce/page"), 1);
}

async fn purge(node: &FleetNode, body: &str) -> serde_json::Value {
    let response = client()
        .post(node.admin_url("/purge"))
        .body(body.to_string())
        .send()
        .await
        .expect("POST /purge");
    assert_eq!(response.status(), 200);
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn a_purge_on_an_edge_fans_out_to_its_shields() {
    let origin = cached_origin().await;
    let fleet = fleet(origin.addr(), 2, 1, "").await;
    let edge = &fleet.edges[0];
    let paths: Vec<String> = (0..20).map(|i| format!("/p/{i}")).collect();
    for path in &paths {
        assert_eq!(get(edge, path, &[]).await.x_cache, "TCP_MISS");
    }
    get(edge, "/kept", &[]).await;
    // Without `shields`, only the edge forgets.
    let reply = purge(edge, r#"{"paths": ["/p/1"]}"#).await;
    assert_eq!(reply, serde_json::json!({"purged": 1}));
    assert_eq!(get(edge, "/p/1", &[]).await.x_cache, "TCP_REMOTE_HIT");

    let reply = purge(edge, r#"{"paths": ["/p/*"], "shields": true}"#).await;
    assert_eq!(reply["purged"], 20, "{reply}");
    let answers = reply["shields"].as_array().unwrap();
    assert_eq!(answers.len(), 2, "{reply}");
    let on_shields: u64 = answers.iter().map(|a| a["purged"].as_u64().unwrap()).sum();
    assert_eq!(on_shields, 20, "{reply}");
    let left = fleet.shields[0].cached_objects().await + fleet.shields[1].cached_objects().await;
    assert_eq!(left, 1, "only /kept is left on the shields");
    // `/kept` was on one shield and stays there (edge and shield).
    assert_eq!(get(edge, "/kept", &[]).await.x_cache, "TCP_HIT");
    assert_eq!(get(edge, "/p/3", &[]).await.x_cache, "TCP_MISS");
    assert_eq!(origin.count_path("/p/3"), 2);

    // A dead shield is reported, and the others are purged all the same.
    let mut fleet = fleet;
    fleet.shields[0].stop();
    let reply = purge(&fleet.edges[0], r#"{"paths": ["/*"], "shields": true}"#).await;
    let answers = reply["shields"].as_array().unwrap();
    assert!(answers.iter().any(|a| a["error"].is_string()), "{reply}");
    assert!(answers.iter().any(|a| a["status"] == 200), "{reply}");
}

/// `PURGE` on a shield's proxy listener is a purge only from a trusted edge.
#[tokio::test]
async fn a_shield_takes_purges_only_from_its_edges() {
    let origin = cached_origin().await;
    let wary = FleetNode::start(
        "shield-w",
        &node_yaml(
            "shield-w",
            "tier: shield\ntrusted_edges: [\"10.0.0.0/8\"]\n",
        ),
        &rules(origin.addr()),
        reserve(),
    );
    get(&wary, "/x", &[]).await;
    assert_eq!(wary.cached_objects().await, 1);
    let _ = client()
        .request("PURGE".parse().unwrap(), wary.url("/"))
        .body(r#"{"paths": ["/*"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(wary.cached_objects().await, 1, "not purged by a stranger");
}

/// The shields' addresses an edge's `/status` lists, once every one of them is healthy.
async fn healthy_ring(edge: &FleetNode, want: &[SocketAddr]) {
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

/// A shield set named in DNS (here a hosts file the test rewrites): the ring follows what
/// the name resolves to, and keeps its last good set when the name stops resolving.
#[tokio::test]
async fn a_named_shield_set_follows_its_addresses() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let rules = rules(origin.addr());
    let first = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = first.local_addr().unwrap().port();
    let second = std::net::TcpListener::bind(("127.0.0.3", port)).expect("bind 127.0.0.3");
    let shield_yaml =
        |name: &str| node_yaml(name, "tier: shield\ntrusted_edges: [\"127.0.0.0/8\"]\n");
    let shields = vec![
        FleetNode::start("shield-a", &shield_yaml("shield-a"), &rules, first),
        FleetNode::start("shield-b", &shield_yaml("shield-b"), &rules, second),
    ];
    let (a, b) = (shields[0].addr, shields[1].addr);
    let hosts_dir = tempfile::tempdir().unwrap();
    let hosts = hosts_dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.2 shields.test\n").unwrap();
    let extra = format!(
        "shields: [\"shields.test:{port}\"]\nhosts_file: {}\nresolve_interval: 1s\n{SHIELD_PROBE}",
        hosts.display()
    );
    let edge = FleetNode::start(
        "edge-dns",
        &node_yaml("edge-dns", &extra),
        &rules,
        reserve(),
    );
    let paths: Vec<String> = (0..30).map(|i| format!("/d/{i}")).collect();

    healthy_ring(&edge, &[a]).await;
    let served = round(&edge, &shields, &paths).await;
    assert!(served.values().all(|&s| s == 0), "{served:?}");

    std::fs::write(&hosts, "127.0.0.2 shields.test\n127.0.0.3 shields.test\n").unwrap();
    healthy_ring(&edge, &[a, b]).await;
    let served = round(&edge, &shields, &paths).await;
    for shield in 0..2 {
        assert!(served.values().any(|&s| s == shield), "{served:?}");
    }

    std::fs::write(&hosts, "127.0.0.3 shields.test\n").unwrap();
    healthy_ring(&edge, &[b]).await;
    let served = round(&edge, &shields, &paths).await;
    assert!(served.values().all(|&s| s == 1), "{served:?}");

    // The name stops resolving: the last good set stays, and /status says why.
    std::fs::write(&hosts, "# nothing\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = edge.status().await;
        if status["tiers"]["discovery"]["last_error"].is_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed resolution seen: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    healthy_ring(&edge, &[b]).await;
    let served = round(&edge, &shields, &paths).await;
    assert!(served.values().all(|&s| s == 1), "{served:?}");
}
