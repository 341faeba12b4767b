//! Each probe setting honoured, each with its own test: method, path, host, expected
//! status ranges and timeout, plus the TCP and WebSocket probes. Two groups probe the same
//! kind of origin with different settings, and `/status` shows which verdicts differ.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::edge::TestEdge;
use common::health::*;
use common::origin::{Recorded, TestOrigin};
use serde_json::Value;

/// Two groups probing `origin`, `web` with `web_probe` and `other` with `other_probe`;
/// waits for both verdicts and returns `/status`.
async fn probe_pair(origin: SocketAddr, web_probe: &str, other_probe: &str) -> (TestEdge, Value) {
    let groups = format!(
        "{}{}",
        group_yaml(
            "web",
            &[origin_yaml("web-origin", origin, 1, 50)],
            web_probe
        ),
        group_yaml(
            "other",
            &[origin_yaml("other-origin", origin, 1, 50)],
            other_probe
        )
    );
    let edge = TestEdge::with_routes("", &rules(&groups)).await;
    let status = wait_for_status(&edge, "both verdicts", |s| {
        health(s, "web", "web-origin") != "pending"
            && health(s, "other", "other-origin") != "pending"
    })
    .await;
    (edge, status)
}

fn probes_of(origin: &TestOrigin) -> Vec<Recorded> {
    origin
        .requests()
        .into_iter()
        .filter(|r| {
            r.headers
                .get("user-agent")
                .is_some_and(|ua| ua == "Portico-Health-Probe")
        })
        .collect()
}

/// An origin answering every request with an empty body and the status `status_for` gives.
async fn answering(status_for: fn(&Recorded) -> u16) -> TestOrigin {
    TestOrigin::start(Arc::new(move |r: &Recorded| {
        http::Response::builder()
            .status(status_for(r))
            .body(Bytes::new())
            .unwrap()
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_method_is_honoured() {
    // Only GET /health passes; HEAD gets 405.
    let server = answering(|r| if r.method == "GET" { 200 } else { 405 }).await;
    let (_edge, status) = probe_pair(
        server.addr(),
        "{ method: GET, path: /health, interval: 200ms, timeout: 150ms }",
        "{ path: /health, interval: 200ms, timeout: 150ms }",
    )
    .await;
    assert_eq!(health(&status, "web", "web-origin"), "healthy");
    // HEAD is the default method.
    assert_eq!(health(&status, "other", "other-origin"), "unhealthy");
    assert_eq!(
        origin(&status, "other", "other-origin")["last_probe"]["status"],
        405
    );
    let methods: Vec<String> = probes_of(&server).into_iter().map(|r| r.method).collect();
    assert!(methods.contains(&"GET".to_string()) && methods.contains(&"HEAD".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_path_is_honoured() {
    let server = answering(|r| if r.path() == "/deep/health" { 200 } else { 404 }).await;
    let (_edge, status) = probe_pair(
        server.addr(),
        "{ path: /deep/health, interval: 200ms, timeout: 150ms }",
        "{ path: /health, interval: 200ms, timeout: 150ms }",
    )
    .await;
    assert_eq!(health(&status, "web", "web-origin"), "healthy");
    assert_eq!(health(&status, "other", "other-origin"), "unhealthy");
    let paths: Vec<String> = probes_of(&server).into_iter().map(|r| r.uri).collect();
    assert!(paths.contains(&"/deep/health".to_string()), "{paths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_host_is_honoured_and_defaults_to_the_host_header() {
    let server = answering(|r| {
        if r.headers["host"] == "probe.example" {
            200
        } else {
            421
        }
    })
    .await;
    let (_edge, status) = probe_pair(
        server.addr(),
        "{ path: /health, host: probe.example, interval: 200ms, timeout: 150ms }",
        "{ path: /health, interval: 200ms, timeout: 150ms }",
    )
    .await;
    assert_eq!(health(&status, "web", "web-origin"), "healthy");
    assert_eq!(health(&status, "other", "other-origin"), "unhealthy");
    let hosts: Vec<String> = probes_of(&server)
        .into_iter()
        .map(|r| r.headers["host"].to_str().unwrap().to_string())
        .collect();
    assert!(hosts.contains(&"probe.example".to_string()), "{hosts:?}");
    assert!(hosts.contains(&"origin.internal".to_string()), "{hosts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expected_status_ranges_are_honoured() {
    let server = answering(|_| 204).await;
    let (_edge, status) = probe_pair(
        server.addr(),
        "{ path: /health, interval: 200ms, timeout: 150ms, expect_status: [\"200\", \"202-204\"] }",
        "{ path: /health, interval: 200ms, timeout: 150ms, expect_status: [\"200-203\"] }",
    )
    .await;
    assert_eq!(health(&status, "web", "web-origin"), "healthy");
    assert_eq!(health(&status, "other", "other-origin"), "unhealthy");
    let other = origin(&status, "other", "other-origin");
    assert_eq!(other["last_probe"]["status"], 204);
    assert_eq!(other["last_error"]["error"], "status 204 is not in 200-203");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_timeout_is_honoured() {
    // Answers 200, but only after 400 ms.
    let (slow, _) = raw_origin(Duration::from_millis(400), true).await;
    let (_edge, status) = probe_pair(
        slow,
        "{ path: /health, interval: 2s, timeout: 1500ms }",
        "{ path: /health, interval: 1s, timeout: 100ms }",
    )
    .await;
    let patient = origin(&status, "web", "web-origin");
    assert_eq!(patient["health"], "healthy");
    assert!(patient["last_probe"]["latency_ms"].as_f64().unwrap() >= 400.0);
    let hasty = origin(&status, "other", "other-origin");
    assert_eq!(hasty["health"], "unhealthy");
    assert_eq!(hasty["last_error"]["error"], "timed out after 100ms");
    let latency = hasty["last_error"]["latency_ms"].as_f64().unwrap();
    assert!((100.0..400.0).contains(&latency), "{latency}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_probe_only_connects() {
    // Every HTTP request gets a 500, which a TCP probe never sees.
    let failing = || answering(|_| 500);
    let mut tcp_origin = failing().await;
    let http_origin = failing().await;
    let groups = format!(
        "{}{}",
        group_yaml(
            "web",
            &[origin_yaml("tcp-origin", tcp_origin.addr(), 1, 50)],
            "{ protocol: tcp, interval: 100ms, timeout: 80ms }"
        ),
        group_yaml(
            "other",
            &[origin_yaml("http-origin", http_origin.addr(), 1, 50)],
            "{ interval: 100ms, timeout: 80ms }"
        )
    );
    let edge = TestEdge::with_routes("", &rules(&groups)).await;
    let status = wait_for_status(&edge, "both verdicts", |s| {
        health(s, "web", "tcp-origin") == "healthy"
            && health(s, "other", "http-origin") == "unhealthy"
    })
    .await;
    assert_eq!(
        origin(&status, "web", "tcp-origin")["last_probe"]["status"],
        Value::Null
    );
    assert_eq!(tcp_origin.count(), 0, "the TCP probe sent an HTTP request");

    tcp_origin.stop().await;
    let status = wait_for_status(&edge, "tcp origin down", |s| {
        health(s, "web", "tcp-origin") == "unhealthy"
    })
    .await;
    let error = origin(&status, "web", "tcp-origin")["last_error"]["error"].clone();
    assert!(error.as_str().unwrap().starts_with("connect to"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_probe_needs_a_real_upgrade() {
    // Both answer a plain GET with 200; only the first can switch protocols.
    let ok = Arc::new(|_: &Recorded| http::Response::new(Bytes::from_static(b"ok")));
    let echo = TestOrigin::websocket_echo(ok.clone()).await;
    let plain = TestOrigin::start(ok).await;
    let probe = "{ protocol: websocket, path: /ws-health, host: ws.example, interval: 150ms, timeout: 120ms }";
    let groups = format!(
        "{}{}",
        group_yaml("web", &[origin_yaml("echo", echo.addr(), 1, 50)], probe),
        group_yaml("other", &[origin_yaml("plain", plain.addr(), 1, 50)], probe)
    );
    let edge = TestEdge::with_routes("", &rules(&groups)).await;
    let status = wait_for_status(&edge, "both verdicts", |s| {
        health(s, "web", "echo") != "pending" && health(s, "other", "plain") != "pending"
    })
    .await;
    let echo_status = origin(&status, "web", "echo");
    assert_eq!(echo_status["health"], "healthy");
    assert_eq!(echo_status["last_probe"]["status"], 101);
    let plain_status = origin(&status, "other", "plain");
    assert_eq!(plain_status["health"], "unhealthy");
    assert_eq!(plain_status["last_probe"]["status"], 200);
    assert_eq!(
        plain_status["last_error"]["error"],
        "upgrade refused: status 200, expected 101"
    );
    let handshake = &probes_of(&echo)[0];
    assert_eq!(handshake.uri, "/ws-health");
    assert_eq!(handshake.headers["host"], "ws.example");
    assert_eq!(handshake.headers["upgrade"], "websocket");
}
