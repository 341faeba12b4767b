//! Multi-tier fleets on loopback, operations across tiers: WebSocket through edge → shield
//! → origin, purge fan-out, shield names that resolve elsewhere, and `portico explain`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::edge::client;
use common::fleet::{node_yaml, reserve, FleetNode};
use common::origin::TestOrigin;
use common::tiers::*;

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

/// Tags and `soft` cross the tiers: a shield hands its tag headers to its edges (so each
/// tier tags its own copy) but not to clients, and an edge's fan-out carries both.
#[tokio::test]
async fn tag_and_soft_purges_fan_out_to_the_shields() {
    let origin = TestOrigin::ok(&[
        ("cache-control", "max-age=600, stale-while-revalidate=60"),
        ("surrogate-key", "team-a"),
    ])
    .await;
    let fleet = fleet(origin.addr(), 2, 1, "").await;
    let edge = &fleet.edges[0];
    let paths: Vec<String> = (0..10).map(|i| format!("/t/{i}")).collect();
    for path in &paths {
        let response = client().get(edge.url(path)).send().await.unwrap();
        assert_eq!(response.headers()["x-cache"], "TCP_MISS");
        assert!(
            !response.headers().contains_key("surrogate-key"),
            "the tags reach no client"
        );
    }
    let on_shields =
        async || fleet.shields[0].cached_objects().await + fleet.shields[1].cached_objects().await;
    assert_eq!(on_shields().await, 10);

    // Soft, on every tier: the objects stay, stale.
    let reply = purge(
        edge,
        r#"{"tags": ["TEAM-A"], "soft": true, "shields": true}"#,
    )
    .await;
    assert_eq!(reply["purged"], 10, "{reply}");
    let answers = reply["shields"].as_array().unwrap();
    let marked: u64 = answers.iter().map(|a| a["purged"].as_u64().unwrap()).sum();
    assert_eq!(marked, 10, "{reply}");
    assert_eq!(edge.cached_objects().await, 10);
    assert_eq!(on_shields().await, 10, "soft on the shields too");
    assert_eq!(get(edge, "/t/0", &[]).await.x_cache, "TCP_EXPIRED_HIT");
    // The edge's refresh found the shield's copy stale too: it refreshed from the origin.
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.count_path("/t/0") < 2 || get(edge, "/t/0", &[]).await.x_cache != "TCP_HIT" {
        assert!(Instant::now() < deadline, "/t/0 was never refreshed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Hard: gone from every tier.
    let reply = purge(edge, r#"{"tags": ["team-a"], "shields": true}"#).await;
    assert_eq!(reply["purged"], 10, "{reply}");
    let answers = reply["shields"].as_array().unwrap();
    let removed: u64 = answers.iter().map(|a| a["purged"].as_u64().unwrap()).sum();
    assert_eq!(removed, 10, "{reply}");
    assert_eq!(edge.cached_objects().await, 0);
    assert_eq!(on_shields().await, 0);
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

/// `portico explain` on an edge names the shield the edge then uses for each key.
#[tokio::test]
async fn explain_names_the_shield_the_edge_uses() {
    let origin = cached_origin().await;
    let fleet = fleet(origin.addr(), 3, 1, "").await;
    let edge = &fleet.edges[0];
    let loaded = portico::config::load(&edge.dir.path().join("portico.yaml")).unwrap();
    let engine = portico::rules::Engine::new(loaded.config);
    let paths: Vec<String> = (0..20).map(|i| format!("/explained/{i}?utm=x")).collect();
    let mut expected = BTreeMap::new();
    for path in &paths {
        let url = format!("http://{}{path}", edge.addr);
        let out = portico::explain::explain(&engine, "GET", &url, &http::HeaderMap::new()).unwrap();
        let shield = out
            .lines()
            .find_map(|l| l.strip_prefix("shield:"))
            .unwrap_or_else(|| panic!("no shield line:\n{out}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        expected.insert(path.split('?').next().unwrap().to_string(), shield);
        assert_eq!(get(edge, path, &[]).await.status, 200);
    }
    let lines = edge.wait_for_log(|lines| lines.len() >= paths.len()).await;
    for line in &lines {
        let path = line["path"].as_str().unwrap();
        assert_eq!(
            line["shield"].as_str(),
            Some(expected[path].as_str()),
            "{line}"
        );
    }
    let used: BTreeSet<&String> = expected.values().collect();
    assert!(used.len() >= 2, "{expected:?}");
    // Not cacheable: explain says it goes straight to the origin group.
    let url = format!("http://{}/api/x", edge.addr);
    let out = portico::explain::explain(&engine, "GET", &url, &http::HeaderMap::new()).unwrap();
    assert!(
        out.contains("shield:   none: the request cannot be cached"),
        "{out}"
    );
}

/// `portico demo --tiers`: the fleet of `conf/examples/` (on free ports, in front of a demo
/// origin of the test's) answers the README's commands as the README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_fleet_answers_as_the_readme_says() {
    let origin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin_listener.local_addr().unwrap();
    let (stop_all, stop) = tokio::sync::watch::channel(false);
    let demo = portico::demo::origin::DemoOrigin::new();
    tokio::spawn(demo.clone().serve(origin_listener, stop.clone()));

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("examples")).unwrap();
    common::process::shipped_rules_into(dir.path(), origin_addr);
    // Every fixed port of the examples, moved to a free one. A port is reserved here and
    // bound again by the fleet a moment later; another test may be handed it in between
    // (the kernel gives ephemeral ports out again), so a fleet that cannot listen is
    // stopped and started again on other ports.
    let (ports, map, stop_fleet) = 'start: {
        for _ in 0..5 {
            let ports: BTreeMap<u16, u16> = [8080, 8082, 8090, 8091, 9090, 9092, 9190, 9191]
                .into_iter()
                .map(|port| (port, reserve().local_addr().unwrap().port()))
                .collect();
            for name in portico::demo::tiers::NODES {
                let mut text =
                    std::fs::read_to_string(root.join(format!("conf/examples/{name}.yaml")))
                        .unwrap();
                for (fixed, free) in &ports {
                    text =
                        text.replace(&format!("127.0.0.1:{fixed}"), &format!("127.0.0.1:{free}"));
                }
                let text = text
                    .replace("rules_dir: ../../rules", "rules_dir: ../rules")
                    .replace("access_log: stdout", "access_log: off");
                std::fs::write(dir.path().join(format!("examples/{name}.yaml")), text).unwrap();
            }
            let (stop_fleet, stop) = tokio::sync::watch::channel(false);
            match portico::demo::tiers::start_fleet(&dir.path().join("examples"), stop).await {
                Ok(map) => break 'start (ports, map, stop_fleet),
                Err(e) if e.contains("Address already in use") => {
                    let _ = stop_fleet.send(true);
                }
                Err(e) => panic!("the fleet starts: {e}"),
            }
        }
        panic!("the fleet starts: no free ports in five tries");
    };
    assert_eq!(map.len(), 4, "{map:#?}");
    assert!(map[2].starts_with("edge-1"), "{map:#?}");
    assert!(
        map[2].contains(&format!("shields 127.0.0.1:{}", ports[&8090])),
        "{map:#?}"
    );

    let edge = |fixed: u16| format!("http://127.0.0.1:{}/static/a.css", ports[&fixed]);
    let x_cache = |r: reqwest::Response| r.headers()["x-cache"].to_str().unwrap().to_string();
    // The demo's edges wait for their first probe round, as `portico run` does.
    let first = client().get(edge(8080)).send().await.unwrap();
    assert_eq!(x_cache(first), "TCP_MISS");
    let second = client().get(edge(8082)).send().await.unwrap();
    assert_eq!(x_cache(second), "TCP_REMOTE_HIT");
    let third = client().get(edge(8082)).send().await.unwrap();
    assert_eq!(x_cache(third), "TCP_HIT");
    assert_eq!(demo.count("/static/a.css"), 1);
    let _ = stop_fleet.send(true);
    let _ = stop_all.send(true);
}

/// A shield whose address leaves the name is drained, not cut: the request it is serving
/// finishes there while new requests already go by the new ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shield_leaving_the_name_is_drained_not_cut() {
    use common::gated::{Answer, Body, GatedOrigin};
    let origin = GatedOrigin::start(Arc::new(|_, _| Answer {
        status: 200,
        headers: vec![("cache-control", "no-store".to_string())],
        body: Body::full("slow"),
    }))
    .await;
    let rules = rules(origin.addr);
    let first = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = first.local_addr().unwrap().port();
    let second = std::net::TcpListener::bind(("127.0.0.3", port)).expect("bind 127.0.0.3");
    let shield_yaml =
        |name: &str| node_yaml(name, "tier: shield\ntrusted_edges: [\"127.0.0.0/8\"]\n");
    let shields = [
        FleetNode::start("shield-a", &shield_yaml("shield-a"), &rules, first),
        FleetNode::start("shield-b", &shield_yaml("shield-b"), &rules, second),
    ];
    let hosts_dir = tempfile::tempdir().unwrap();
    let hosts = hosts_dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.2 shields.test\n").unwrap();
    let extra = format!(
        "shields: [\"shields.test:{port}\"]\nhosts_file: {}\nresolve_interval: 1s\n{SHIELD_PROBE}",
        hosts.display()
    );
    let edge = FleetNode::start(
        "edge-drain",
        &node_yaml("edge-drain", &extra),
        &rules,
        reserve(),
    );
    healthy_ring(&edge, &[shields[0].addr]).await;

    origin.close_gate();
    let url = edge.url("/slow");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.arrived() == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(&hosts, "127.0.0.3 shields.test\n").unwrap();
    healthy_ring(&edge, &[shields[1].addr]).await;
    origin.open_gate();
    let response = in_flight
        .await
        .unwrap()
        .expect("the drained request finishes");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow");
    assert_eq!(get(&edge, "/fast", &[]).await.status, 200);
    let lines = edge.wait_for_log(|l| l.len() >= 2).await;
    let shield_of = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"] == path)
            .map(|l| l["shield"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(shield_of("/slow"), shields[0].addr.to_string());
    assert_eq!(shield_of("/fast"), shields[1].addr.to_string());
}
