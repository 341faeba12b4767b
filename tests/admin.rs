//! The admin listener's bearer token, end to end: a real client against an edge whose
//! admin endpoints were given `admin.token_file`.

mod common;

use common::edge::{client, group_yaml, TestEdge};
use common::origin::TestOrigin;

const TOKEN: &str = "s3cret-admin-token-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_only_healthz_answers_without_it() {
    let origin = TestOrigin::ok(&[]).await;
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let node = format!(
        "admin:\n  address: 0.0.0.0:2\n  token_file: {}\n",
        token_file.display()
    );
    let rules = format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\norigin_groups:\n{}",
        group_yaml("web", origin.addr())
    );
    let edge = TestEdge::with_routes(&node, &rules).await;

    let healthz = client()
        .get(edge.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);

    let bare = client()
        .get(edge.admin_url("/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    assert_eq!(bare.headers()["www-authenticate"], "Bearer");
    assert!(bare.text().await.unwrap().contains("Authorization: Bearer"));

    for wrong in ["Bearer nope", "Bearer s3cret-admin-token-0124", TOKEN] {
        let refused = client()
            .get(edge.admin_url("/status"))
            .header("authorization", wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401, "{wrong}");
    }
    let purge = client()
        .post(edge.admin_url("/purge"))
        .body(r#"{"paths": ["/*"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 401, "a purge without the token");

    let status = client()
        .get(edge.admin_url("/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&status.text().await.unwrap()).unwrap();
    assert_eq!(body["node"], "test-edge");
}

/// `GET` of an admin path, as text (no token configured).
async fn admin_text(edge: &TestEdge, path: &str) -> String {
    let response = client().get(edge.admin_url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.unwrap()
}

/// Polls `path` until `done` holds for its text (the counters move in `logging`, after the
/// client already has its answer).
async fn admin_until(edge: &TestEdge, path: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = admin_text(edge, path).await;
        if done(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never matched:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_cache_status_and_tunnels_while_they_are_open() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let origin = TestOrigin::websocket_echo(std::sync::Arc::new(|_: &common::origin::Recorded| {
        http::Response::builder()
            .header("cache-control", "max-age=60")
            .body(bytes::Bytes::from_static(b"page"))
            .unwrap()
    }))
    .await;
    let rules = format!(
        "routes:\n  - name: chat\n    patterns: [\"/chat/*\"]\n    origin_group: web\n    websocket: true\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\norigin_groups:\n{}",
        group_yaml("web", origin.addr())
    );
    let edge = TestEdge::with_routes("", &rules).await;
    for _ in 0..3 {
        let page = client().get(edge.url("/page")).send().await.unwrap();
        assert_eq!(page.status(), 200);
    }
    // Each request is counted when its log record is written, after its answer: under
    // load the miss's record can come after the hits' (seen in CI).
    let metrics = admin_until(&edge, "/metrics", |m| {
        m.contains("portico_requests_total{x_cache=\"TCP_HIT\",class=\"2xx\"} 2\n")
            && m.contains("portico_requests_total{x_cache=\"TCP_MISS\",class=\"2xx\"} 1\n")
    })
    .await;
    assert!(metrics.contains("portico_cache_objects 1\n"), "{metrics}");
    // An origin without a name is named by its address; not probed, so it takes traffic.
    let healthy = format!(
        "portico_origin_healthy{{group=\"web\",origin=\"{}\"}} 1\n",
        origin.addr()
    );
    assert!(metrics.contains(&healthy), "{metrics}");
    assert!(metrics.contains("portico_tunnels_open 0\n"));

    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url("/chat/room"))
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello"));
    let status = admin_until(&edge, "/status", |s| s.contains("\"tunnels\":{\"open\":1}")).await;
    assert!(status.contains("\"open\":1"));
    assert!(admin_text(&edge, "/metrics")
        .await
        .contains("portico_tunnels_open 1\n"));

    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    let metrics = admin_until(&edge, "/metrics", |m| {
        m.contains("portico_tunnels_open 0\n")
    })
    .await;
    assert!(metrics.contains("portico_tunnels_total 1\n"));
    assert!(
        !metrics.contains("portico_tunnel_bytes_total{direction=\"client_to_origin\"} 0\n"),
        "{metrics}"
    );
}

/// The whole `/metrics` output, parsed by a real Prometheus parser: every family the
/// lifecycle issue names, with its type and the series a few requests produce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_with_generation_reloads_and_route_histograms() {
    use prometheus_parse::{Scrape, Value};

    let origin = TestOrigin::ok(&[("cache-control", "max-age=60")]).await;
    let rules = format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\norigin_groups:\n{}",
        group_yaml("web", origin.addr())
    );
    let edge = TestEdge::with_routes("", &rules).await;
    for _ in 0..3 {
        assert_eq!(
            client()
                .get(edge.url("/page"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(edge.reload().await.0, 200);
    let text = admin_until(&edge, "/metrics", |m| {
        m.contains("portico_route_requests_total{route=\"site\",x_cache=\"TCP_HIT\"} 2\n")
    })
    .await;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let one = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
            .value
            .clone()
    };
    assert_eq!(one("portico_config_generation", &[]), Value::Gauge(2.0));
    assert_eq!(
        one("portico_config_reloads_total", &[("result", "ok")]),
        Value::Counter(1.0)
    );
    assert_eq!(
        one("portico_config_reloads_total", &[("result", "refused")]),
        Value::Counter(0.0)
    );
    assert_eq!(
        one("portico_access_log_dropped_total", &[]),
        Value::Counter(0.0)
    );
    assert_eq!(
        one(
            "portico_route_requests_total",
            &[("route", "site"), ("x_cache", "TCP_MISS")]
        ),
        Value::Counter(1.0)
    );
    let Value::Histogram(total) = one(
        "portico_request_duration_seconds",
        &[("route", "site"), ("x_cache", "TCP_HIT")],
    ) else {
        panic!("a histogram")
    };
    assert_eq!(
        total.last().map(|b| (b.less_than, b.count)),
        Some((f64::INFINITY, 2.0))
    );
    let Value::Histogram(first_byte) = one(
        "portico_origin_first_byte_seconds",
        &[("route", "site"), ("x_cache", "TCP_MISS")],
    ) else {
        panic!("a histogram")
    };
    assert_eq!(first_byte.last().map(|b| b.count), Some(1.0));
    assert!(
        !text.contains(
            "portico_origin_first_byte_seconds_count{route=\"site\",x_cache=\"TCP_HIT\"}"
        ),
        "hits never reach the origin"
    );
    for family in [
        "portico_requests_total",
        "portico_requests_in_flight",
        "portico_tunnels_open",
        "portico_cache_bytes",
        "portico_origin_healthy",
    ] {
        assert!(scrape.docs.contains_key(family), "HELP for {family}");
    }
}
