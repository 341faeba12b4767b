//! Multi-tier fleets on loopback (SPEC §5, issue 12): edges that fetch through shields
//! chosen by consistent hashing of the cache key, each node a server of its own. Routing,
//! the cache key, collapsing, failover, hop headers and loops; purge, discovery, explain
//! and WebSocket across tiers are in `tiers_ops.rs`.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::edge::client;
use common::fleet::{node_yaml, reserve, FleetNode};
use common::gated::{Answer, Body, GatedOrigin};
use common::origin::TestOrigin;
use common::tiers::*;

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
    let remote_hits = "portico_requests_total{x_cache=\"TCP_REMOTE_HIT\",class=\"2xx\"} 100";
    wait_for_metric(&fleet.edges[1], remote_hits).await;
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
    // The edge replaced the client's own claim (it is no trusted proxy); the shield believed
    // its edge: the client is the list's only entry, once.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["host"], "origin.internal");
    // The host the cache key used: normalised, without the client's port (issue 15).
    assert_eq!(
        seen.headers["x-forwarded-host"],
        fleet.edges[0].addr.ip().to_string()
    );
    // One request id on every tier: the client's, the shield's log and the origin's.
    let id = fetched.request_id;
    assert_eq!(seen.headers["x-portico-ref"], id.as_str());
    let lines = fleet.shields[0].wait_for_log(|l| !l.is_empty()).await;
    assert_eq!(lines[0]["request_id"], id.as_str());
    // A client's own X-Portico-Ref is not adopted by an edge.
    let forged = get(
        &fleet.edges[0],
        "/hops2",
        &[("x-portico-ref", "0123456789abcdef01234567")],
    )
    .await;
    assert_ne!(forged.request_id, "0123456789abcdef01234567");
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
    // Probes or not, a refused connection moves a request on to the next shield at once.
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

/// A "shield" that completes the handshake, reads the request and resets the connection:
/// what a shield that is stopping does to handshakes still in its listen backlog. Probes
/// (TCP connects) find it healthy. Every request still answers 200, through the live shield.
#[tokio::test]
async fn a_shield_that_resets_before_answering_is_skipped() {
    let origin = cached_origin().await;
    let rules = rules(origin.addr());
    let shield_yaml = node_yaml("shield-0", "tier: shield\ntrusted_edges: [\"127.0.0.1\"]\n");
    let live = FleetNode::start("shield-0", &shield_yaml, &rules, reserve());
    let resetter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let resetter_addr = resetter.local_addr().unwrap();
    let requests_reset = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = requests_reset.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = resetter.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(n @ 1..) => head.extend_from_slice(&buf[..n]),
                        _ => return, // a probe's connect: nothing to reset
                    }
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                stream.set_zero_linger().unwrap();
            });
        }
    });
    let edge_extra = format!(
        "shields: [\"{resetter_addr}\", \"{}\"]\n{SHIELD_PROBE}",
        live.addr
    );
    let edge = FleetNode::start(
        "edge-0",
        &node_yaml("edge-0", &edge_extra),
        &rules,
        reserve(),
    );

    for i in 0..40 {
        let path = format!("/objects/{i}");
        let fetched = get(&edge, &path, &[]).await;
        assert_eq!(
            (fetched.status, fetched.x_cache.as_str()),
            (200, "TCP_MISS"),
            "{path}"
        );
    }
    let reset = requests_reset.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        reset > 0,
        "no key hashed to the resetting shield: the test proved nothing"
    );
    // Every object went through the live shield, once.
    assert_eq!(live.cached_objects().await, 40);
    assert_eq!(origin.count(), 40);
}

/// A shield that takes the request and never answers does not hold the edge's client: the
/// origin group's `first_byte`, plus the shield's head start (the edge's cache lock wait
/// and the group's connect and handshake), gets the client a 504 with the reason.
#[tokio::test]
async fn a_shield_that_never_answers_is_a_504_in_time() {
    let origin = cached_origin().await;
    let rules = rules(origin.addr()).replace(
        "        host_header: origin.internal\n",
        "        host_header: origin.internal\n    timeouts: { connect: 100ms, tls_handshake: 200ms, first_byte: 300ms, total: 2s }\n",
    );
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = silent.accept().await.unwrap();
            // Reads whatever comes and never writes, until the edge hangs up.
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf).await, Ok(1..)) {}
            });
        }
    });
    let edge_extra =
        format!("shields: [\"{silent_addr}\"]\n{SHIELD_PROBE}cache:\n  lock_timeout: 100ms\n");
    let edge = FleetNode::start(
        "edge-0",
        &node_yaml("edge-0", &edge_extra),
        &rules,
        reserve(),
    );
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client().get(edge.url("/objects/1")).send(),
    )
    .await
    .expect("answered, not held by the silent shield")
    .expect("a response");
    let waited = started.elapsed();
    assert_eq!(answer.status(), 504);
    let body = answer.text().await.unwrap();
    assert!(
        body.contains("no response head within 600ms") && body.contains("timeouts.first_byte"),
        "{body}"
    );
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
    assert_eq!(
        origin.count(),
        0,
        "the shield, not the edge, fetches from the origin"
    );
}

/// A shield's `X-Cache` is believed only from a shield: an origin (or anything in front of
/// the edge) that says `TCP_HIT` does not make a remote hit.
#[tokio::test]
async fn a_forged_x_cache_is_no_remote_hit() {
    let origin = TestOrigin::ok(&[("cache-control", "max-age=600"), ("x-cache", "TCP_HIT")]).await;
    // The only shield is an address nobody listens on: every request goes to the origin.
    let dead = common::health::closed_port();
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

/// A shield stops while a client loops over many objects: at most the request in flight at
/// that moment fails, and the edge's `/metrics` shows the shield down, then up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_loop_survives_a_shield_stopping() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let mut fleet = fleet(origin.addr(), 2, 1, "").await;
    let edge_url = fleet.edges[0].url("");
    let (stop_loop, mut stopped) = tokio::sync::watch::channel(false);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = done.clone();
    let looping = tokio::spawn(async move {
        let mut failures = Vec::new();
        let mut i = 0usize;
        while !*stopped.borrow_and_update() {
            let url = format!("{edge_url}/loop/{}", i % 40);
            match client().get(&url).send().await {
                Ok(response) if response.status() == 200 => {}
                Ok(response) => failures.push(format!("{url}: {}", response.status())),
                Err(e) => failures.push(format!("{url}: {e}")),
            }
            i += 1;
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        failures
    });
    let wait_for = |target: usize| {
        let done = done.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while done.load(std::sync::atomic::Ordering::SeqCst) < target {
                assert!(Instant::now() < deadline, "the loop stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(80).await;
    let (edge, dead) = (&fleet.edges[0], fleet.shields[0].addr);
    wait_for_metric(
        edge,
        &format!("portico_shield_healthy{{shield=\"{dead}\"}} 1"),
    )
    .await;
    fleet.shields[0].stop();
    let at_stop = done.load(std::sync::atomic::Ordering::SeqCst);
    let edge = &fleet.edges[0];
    wait_for_metric(
        edge,
        &format!("portico_shield_healthy{{shield=\"{dead}\"}} 0"),
    )
    .await;
    wait_for(at_stop + 80).await;
    let served_before = fleet.shields[0].log_lines().len();
    fleet.shields[0].restart();
    wait_for_metric(
        &fleet.edges[0],
        &format!("portico_shield_healthy{{shield=\"{dead}\"}} 1"),
    )
    .await;
    wait_for(done.load(std::sync::atomic::Ordering::SeqCst) + 80).await;
    let _ = stop_loop.send(true);
    let failures = looping.await.unwrap();
    assert!(
        failures.len() <= 1,
        "more than the request in flight failed: {failures:#?}"
    );
    // The restarted shield took its keys back.
    fleet.shields[0]
        .wait_for_log(|lines| lines.len() > served_before)
        .await;
}

/// `Age` is cumulative across tiers: an object that aged on its shield arrives at an edge
/// with that age, which the edge's own hits keep counting from.
#[tokio::test]
async fn age_counts_across_tiers() {
    let origin = cached_origin().await;
    let fleet = fleet(origin.addr(), 1, 2, "").await;
    assert_eq!(
        get(&fleet.edges[0], "/aging", &[]).await.x_cache,
        "TCP_MISS"
    );
    let age = |response: &reqwest::Response| -> u64 {
        response.headers()["age"].to_str().unwrap().parse().unwrap()
    };
    // Ask the shield itself until its copy is at least a second old.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client()
            .get(fleet.shields[0].url("/aging"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-cache"], "TCP_HIT");
        if age(&response) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the shield's copy never aged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let remote = client()
        .get(fleet.edges[1].url("/aging"))
        .send()
        .await
        .unwrap();
    assert_eq!(remote.headers()["x-cache"], "TCP_REMOTE_HIT");
    let remote_age = age(&remote);
    assert!(remote_age >= 1, "the shield's age came along");
    let hit = client()
        .get(fleet.edges[1].url("/aging"))
        .send()
        .await
        .unwrap();
    assert_eq!(hit.headers()["x-cache"], "TCP_HIT");
    assert!(
        age(&hit) >= remote_age,
        "the edge counts on from the shield's age"
    );
    assert_eq!(origin.count(), 1);
}

/// Three tiers: edge → shield → its own shield → origin. Headers, trust and remote hits chain.
#[tokio::test]
async fn a_shield_with_shields_makes_a_third_tier() {
    let origin = cached_origin().await;
    let rules = rules(origin.addr());
    let top = FleetNode::start(
        "top",
        &node_yaml("top", "tier: shield\ntrusted_edges: [\"127.0.0.1\"]\n"),
        &rules,
        reserve(),
    );
    let mid_extra = format!(
        "tier: shield\ntrusted_edges: [\"127.0.0.1\"]\nshields: [\"{}\"]\n{SHIELD_PROBE}",
        top.addr
    );
    let mid = FleetNode::start("mid", &node_yaml("mid", &mid_extra), &rules, reserve());
    let edge_extra = format!("shields: [\"{}\"]\n{SHIELD_PROBE}", mid.addr);
    let edges: Vec<FleetNode> = (0..2)
        .map(|i| {
            let name = format!("edge-{i}");
            FleetNode::start(&name, &node_yaml(&name, &edge_extra), &rules, reserve())
        })
        .collect();
    let first = get(&edges[0], "/deep", &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(first.x_cache, "TCP_MISS");
    let seen = &origin.requests()[0];
    assert_eq!(seen.headers["via"], "1.1 edge-0, 1.1 mid, 1.1 top");
    assert_eq!(seen.headers["cdn-loop"], "edge-0, mid, top");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-portico-ref"], first.request_id.as_str());
    // The middle tier forgets; the top still has it: a remote hit, passed down.
    assert_eq!(purge(&mid, r#"{"paths": ["/deep"]}"#).await["purged"], 1);
    assert_eq!(get(&edges[1], "/deep", &[]).await.x_cache, "TCP_REMOTE_HIT");
    let lines = mid.wait_for_log(|l| l.len() >= 2).await;
    assert_eq!(lines[1]["cache"], "TCP_REMOTE_HIT", "{lines:#?}");
    assert_eq!(lines[1]["shield_cache"], "TCP_HIT");
    assert_eq!(origin.count(), 1);
}
