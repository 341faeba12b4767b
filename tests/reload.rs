//! Live reload on an in-process edge: `POST /reload` swaps the configuration generation,
//! a refused configuration changes nothing, origins keep their health, and no tunnel is
//! ever dropped by a reload.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::edge::{client, node_yaml, TestEdge};
use common::health::{closed_port, health, named_origin, origin_yaml, status, wait_for_status};
use common::origin::TestOrigin;
use common::process::RequestLoop;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// Version 1: `/web/*` goes to group `a`; `/chat/*` is a WebSocket route to the echo origin.
fn rules_v1(a: &TestOrigin, b: &TestOrigin, echo: &TestOrigin) -> String {
    rules(a, b, echo, "a", "")
}

/// Version 2: `/web/*` goes to group `b`, and a new route `/new/*` exists.
fn rules_v2(a: &TestOrigin, b: &TestOrigin, echo: &TestOrigin) -> String {
    rules(
        a,
        b,
        echo,
        "b",
        "  - name: new\n    patterns: [\"/new/*\"]\n    origin_group: a\n",
    )
}

fn rules(a: &TestOrigin, b: &TestOrigin, echo: &TestOrigin, web: &str, extra: &str) -> String {
    format!(
        "routes:\n  - name: web\n    patterns: [\"/web/*\"]\n    origin_group: {web}\n  - name: chat\n    patterns: [\"/chat/*\"]\n    origin_group: echo\n    websocket: true\n{extra}origin_groups:\n{}{}{}",
        origin_yaml_group("a", a),
        origin_yaml_group("b", b),
        origin_yaml_group("echo", echo),
    )
}

fn origin_yaml_group(name: &str, origin: &TestOrigin) -> String {
    format!(
        "  - name: {name}\n    origins:\n{}",
        origin_yaml(name, origin.addr(), 1, 1)
    )
}

/// Version 2 with an unknown field on line 3 (`pattern:`).
fn rules_invalid(a: &TestOrigin, b: &TestOrigin, echo: &TestOrigin) -> String {
    rules_v2(a, b, echo).replacen("    patterns:", "    pattern:", 1)
}

async fn body(edge: &TestEdge, path: &str) -> (u16, String) {
    let response = client().get(edge.url(path)).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn three_origins() -> (TestOrigin, TestOrigin, TestOrigin) {
    let (a, _) = named_origin("A").await;
    let (b, _) = named_origin("B").await;
    let echo = TestOrigin::websocket_echo(Arc::new(|_| http::Response::new("page".into()))).await;
    (a, b, echo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_routes_and_a_refused_one_changes_nothing() {
    let (a, b, echo) = three_origins().await;
    let edge = TestEdge::start(&node_yaml(""), &rules_v1(&a, &b, &echo)).await;
    assert_eq!(body(&edge, "/web/x").await, (200, "A /web/x".to_string()));
    assert_eq!(body(&edge, "/new/x").await.0, 404);

    edge.write_rules(&rules_v2(&a, &b, &echo));
    let (code, answer) = edge.reload().await;
    assert_eq!((code, &answer["generation"]), (200, &serde_json::json!(2)));
    // The new routes serve right after the answer.
    assert_eq!(body(&edge, "/web/x").await, (200, "B /web/x".to_string()));
    assert_eq!(body(&edge, "/new/y").await, (200, "A /new/y".to_string()));

    edge.write_rules(&rules_invalid(&a, &b, &echo));
    let (code, answer) = edge.reload().await;
    assert_eq!(code, 422, "{answer}");
    let errors = answer["errors"].as_array().expect("errors");
    let first = errors[0].as_str().unwrap();
    assert!(
        first.contains("rules.yaml:3:5: error:") && first.contains("pattern"),
        "file:line:col of the unknown field: {first}"
    );
    assert_eq!(answer["generation"], 2, "generation 2 keeps serving");
    assert_eq!(body(&edge, "/web/x").await, (200, "B /web/x".to_string()));

    let status = status(&edge).await;
    let configuration = &status["configuration"];
    assert_eq!(configuration["generation"], 2);
    assert_eq!(configuration["reloads"]["ok"], 1);
    assert_eq!(configuration["reloads"]["refused"], 1);
    assert_eq!(configuration["last_reload"]["result"], "refused");
    assert!(configuration["last_reload"]["detail"]["errors"][0]
        .as_str()
        .unwrap()
        .contains("rules.yaml:3:5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_changes_are_refused_with_where_and_why() {
    let (a, b, echo) = three_origins().await;
    let edge = TestEdge::start(&node_yaml(""), &rules_v1(&a, &b, &echo)).await;
    let node = std::fs::read_to_string(edge.dir.path().join("portico.yaml")).unwrap();
    std::fs::write(
        edge.dir.path().join("portico.yaml"),
        node.replace("127.0.0.1:1", "127.0.0.1:2"),
    )
    .unwrap();
    let (code, answer) = edge.reload().await;
    assert_eq!(code, 422);
    let error = answer["errors"][0].as_str().unwrap();
    assert!(
        error.contains("portico.yaml:2:1: error: listeners:")
            && error.contains("restart or a binary upgrade"),
        "{error}"
    );
    assert_eq!(body(&edge, "/web/x").await, (200, "A /web/x".to_string()));
}

/// The node's defaults belong to a generation like the rules: a reload that sets
/// `cache_default_ttl` has the next silent response stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_default_ttl() {
    let (origin, _) = named_origin("silent").await;
    let rules = format!(
        "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\norigin_groups:\n  - name: web\n    origins:\n{}",
        origin_yaml("silent", origin.addr(), 1, 1)
    );
    let edge = TestEdge::start(&node_yaml(""), &rules).await;
    let x_cache = |path: &'static str| {
        let url = edge.url(path);
        async move {
            let response = client().get(url).send().await.expect("request");
            let x_cache = response.headers()["x-cache"].to_str().unwrap().to_string();
            (response.status().as_u16(), x_cache)
        }
    };
    assert_eq!(x_cache("/a").await, (200, "UNCACHEABLE".into()));
    assert_eq!(x_cache("/a").await, (200, "UNCACHEABLE".into()));

    let node = edge.dir.path().join("portico.yaml");
    let text = std::fs::read_to_string(&node).unwrap();
    std::fs::write(&node, format!("{text}defaults:\n  cache_default_ttl: 1h\n")).unwrap();
    assert_eq!(edge.reload().await.0, 200);
    assert_eq!(x_cache("/b").await, (200, "TCP_MISS".into()));
    assert_eq!(x_cache("/b").await, (200, "TCP_HIT".into()));
    assert_eq!(origin.count_path("/b"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_a_reload_leaves_alone_keep_their_health() {
    let (alive, _) = named_origin("alive").await;
    let dead = closed_port();
    // One probe round at start, then none for an hour: health only changes by reload.
    let probe = "    health_probe: { protocol: tcp, interval: 1h, timeout: 1s }\n";
    let rules = |extra: &str| {
        format!(
            "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\n{extra}origin_groups:\n  - name: web\n    origins:\n{}{}{probe}",
            origin_yaml("dead", dead, 1, 1),
            origin_yaml("alive", alive.addr(), 2, 1),
        )
    };
    let edge = TestEdge::start(&node_yaml(""), &rules("")).await;
    // `/status` answers before the first probe round ends (only the proxy waits for it).
    let before = wait_for_status(&edge, "the first verdict", |s| {
        health(s, "web", "dead") != "pending"
    })
    .await;
    assert_eq!(health(&before, "web", "dead"), "unhealthy");

    edge.write_rules(&rules(
        "  - name: extra\n    patterns: [\"/extra/*\"]\n    origin_group: web\n",
    ));
    assert_eq!(edge.reload().await.0, 200);
    let after = status(&edge).await;
    assert_eq!(
        health(&after, "web", "dead"),
        "unhealthy",
        "not sent back to pending"
    );
    let dead_after = common::health::origin(&after, "web", "dead");
    assert!(
        dead_after["consecutive_failures"].as_u64().unwrap() >= 2,
        "the counts carried over and the new generation probed once more: {dead_after}"
    );
    // Every request goes to the live origin, the first one after the reload included.
    for _ in 0..5 {
        assert_eq!(body(&edge, "/x").await, (200, "alive /x".to_string()));
    }
}

/// `/status` read while reloads go on never shows a generation without the reload that
/// made it: the generation, the count of reloads and the last reload's record agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_generation_with_its_reload() {
    let (origin, _) = named_origin("silent").await;
    let rules = format!(
        "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\norigin_groups:\n  - name: web\n    origins:\n{}",
        origin_yaml("silent", origin.addr(), 1, 1)
    );
    let edge = Arc::new(TestEdge::start(&node_yaml(""), &rules).await);
    let reloads = {
        let edge = edge.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                assert_eq!(edge.reload().await.0, 200);
            }
        })
    };
    let mut seen = 0;
    while !reloads.is_finished() || seen == 0 {
        let status = status(&edge).await;
        let configuration = &status["configuration"];
        let generation = configuration["generation"].as_u64().unwrap();
        let ok = configuration["reloads"]["ok"].as_u64().unwrap();
        assert_eq!(generation, 1 + ok, "{configuration}");
        let last = &configuration["last_reload"];
        if ok > 0 {
            assert_eq!(last["detail"]["generation"], generation, "{configuration}");
        } else {
            assert!(last.is_null(), "{configuration}");
        }
        seen += 1;
    }
    reloads.await.unwrap();
    assert_eq!(
        status(&edge).await["configuration"]["generation"],
        31,
        "every reload went live"
    );
}

/// An origin named in DNS (here a hosts file the test rewrites) is resolved again: when
/// the name moves, the node reloads and requests follow it; when it stops resolving, the
/// last address stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_name_that_moves_is_followed() {
    let first = TestOrigin::ok_on("127.0.0.1:0".parse().unwrap(), &[]).await;
    let port = first.addr().port();
    let second = TestOrigin::ok_on(([127, 0, 0, 2], port).into(), &[]).await;
    let hosts_dir = tempfile::tempdir().unwrap();
    let hosts = hosts_dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 app.test\n").unwrap();
    let node = node_yaml(&format!(
        "hosts_file: {}\nresolve_interval: 1s\n",
        hosts.display()
    ));
    let rules = format!(
        "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: false }}\norigin_groups:\n  - name: web\n    origins:\n      - address: \"app.test:{port}\"\n"
    );
    let edge = TestEdge::start(&node, &rules).await;
    assert_eq!(body(&edge, "/one").await, (200, "origin /one".to_string()));
    assert_eq!((first.count(), second.count()), (1, 0));
    let generation = |s: &serde_json::Value| s["configuration"]["generation"].as_u64();
    let before = generation(&status(&edge).await);

    std::fs::write(&hosts, "127.0.0.2 app.test\n").unwrap();
    let moved = wait_for_status(&edge, "a reload for the new address", |s| {
        generation(s) > before
    })
    .await;
    let configuration = &moved["configuration"];
    assert_eq!(configuration["last_reload"]["trigger"], "dns", "{moved}");
    assert_eq!(body(&edge, "/two").await, (200, "origin /two".to_string()));
    assert_eq!((first.count(), second.count()), (1, 1));

    // The name stops resolving: the last address stays, and no reload is tried.
    std::fs::write(&hosts, "# nothing\n").unwrap();
    let failed = wait_for_status(&edge, "a failed resolution", |s| {
        s["configuration"]["origin_names"]["last_error"].is_string()
    })
    .await;
    let rounds = failed["configuration"]["origin_names"]["resolutions"].as_u64();
    let again = wait_for_status(&edge, "one more round", |s| {
        s["configuration"]["origin_names"]["resolutions"].as_u64() > rounds
    })
    .await;
    assert_eq!(
        generation(&again),
        generation(&moved),
        "no reload was tried"
    );
    assert_eq!(
        body(&edge, "/three").await,
        (200, "origin /three".to_string())
    );
    assert_eq!(second.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_tunnels_and_a_request_loop_survive_twenty_reloads() {
    let (a, b, echo) = three_origins().await;
    let edge = TestEdge::start(&node_yaml(""), &rules_v1(&a, &b, &echo)).await;

    let mut tunnels = Vec::new();
    for _ in 0..100 {
        let (ws, response) = tokio_tungstenite::connect_async(edge.ws_url("/chat/room"))
            .await
            .expect("upgrade");
        assert_eq!(response.status(), 101);
        tunnels.push(ws);
    }

    let requests = RequestLoop::start(edge.url("/web/loop"), false);

    for round in 0..20 {
        let (rules, expect) = match round % 3 {
            0 => (rules_v2(&a, &b, &echo), 200),
            1 => (rules_invalid(&a, &b, &echo), 422),
            _ => (rules_v1(&a, &b, &echo), 200),
        };
        edge.write_rules(&rules);
        let (code, answer) = edge.reload().await;
        assert_eq!(code, expect, "round {round}: {answer}");
        if code == 200 {
            let web = if round % 3 == 0 { "B" } else { "A" };
            assert_eq!(body(&edge, "/web/r").await, (200, format!("{web} /web/r")));
        } else {
            assert!(answer["errors"][0]
                .as_str()
                .unwrap()
                .contains("rules.yaml:3:5"));
        }
        for (index, ws) in tunnels.iter_mut().enumerate() {
            let text = format!("round {round} tunnel {index}");
            ws.send(Message::text(text.clone())).await.expect("send");
            let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("echo in time")
                .expect("tunnel open")
                .expect("echo");
            assert_eq!(echoed, Message::text(text));
        }
    }
    let (sent, failed) = requests.finish().await;
    assert!(sent > 20);
    assert!(failed.is_empty(), "no request failed: {failed:?}");
    let metrics = client()
        .get(edge.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("portico_tunnels_open 100\n"), "{metrics}");
    assert!(metrics.contains("portico_config_reloads_total{result=\"refused\"} 7\n"));
    assert!(metrics.contains("portico_config_reloads_total{result=\"ok\"} 13\n"));
}
