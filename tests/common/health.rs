//! Helpers for the origin-health tests: origins that name themselves or misbehave on
//! purpose, group YAML, and `/status` polled under a deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::edge::{client, TestEdge};
use super::origin::{Handler, Recorded, TestOrigin};

pub const DEADLINE: Duration = Duration::from_secs(10);

/// Rules with one catch-all route to group `web` (the first group), then `groups`.
pub fn rules(groups: &str) -> String {
    format!("routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\nrule_sets: []\norigin_groups:\n{groups}")
}

pub fn origin_yaml(name: &str, addr: SocketAddr, priority: u32, weight: u32) -> String {
    format!("      - name: {name}\n        address: {addr}\n        host_header: origin.internal\n        priority: {priority}\n        weight: {weight}\n")
}

/// A group of `origins` (lines from [`origin_yaml`]) with `probe` as a YAML flow mapping.
pub fn group_yaml(name: &str, origins: &[String], probe: &str) -> String {
    let probe = if probe.is_empty() {
        String::new()
    } else {
        format!("    health_probe: {probe}\n")
    };
    format!(
        "  - name: {name}\n    origins:\n{}{probe}",
        origins.concat()
    )
}

/// Answers `/health` with the status in `health`, anything else with 200; every response
/// names the origin in `x-origin`.
pub fn named(name: &'static str, health: Arc<AtomicU16>) -> Handler {
    Arc::new(move |request: &Recorded| {
        let status = if request.path() == "/health" {
            health.load(Ordering::Relaxed)
        } else {
            200
        };
        http::Response::builder()
            .status(status)
            .header("x-origin", name)
            .body(Bytes::from(format!("{name} {}", request.path())))
            .unwrap()
    })
}

pub async fn named_origin(name: &'static str) -> (TestOrigin, Arc<AtomicU16>) {
    let health = Arc::new(AtomicU16::new(200));
    (TestOrigin::start(named(name, health.clone())).await, health)
}

/// GETs `path` through the edge; returns the status and the `x-origin` that answered.
pub async fn get(edge: &TestEdge, path: &str) -> (u16, String) {
    let response = client().get(edge.url(path)).send().await.unwrap();
    let origin = response
        .headers()
        .get("x-origin")
        .map_or("", |v| v.to_str().unwrap())
        .to_string();
    (response.status().as_u16(), origin)
}

pub async fn status(edge: &TestEdge) -> Value {
    let text = client()
        .get(edge.admin_url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Polls `/status` until `wanted` holds; panics with the last answer after [`DEADLINE`].
pub async fn wait_for_status(
    edge: &TestEdge,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = status(edge).await;
        if wanted(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "/status never showed {what}:\n{status:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn group<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["origin_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name} in {status:#}"))
}

pub fn origin<'a>(status: &'a Value, group_name: &str, name: &str) -> &'a Value {
    group(status, group_name)["origins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no origin {name} in {status:#}"))
}

pub fn health(status: &Value, group_name: &str, name: &str) -> String {
    origin(status, group_name, name)["health"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until `condition` holds, polling every 5 ms; returns how long it took.
pub async fn wait_until(what: &str, condition: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

pub fn now_ms() -> u64 {
    portico::observability::records::now_ms() as u64
}

/// A loopback address nothing listens on. Its port stays bound (never listening) until
/// the test process ends: a port merely released could be taken by a test running
/// beside this one, whose origin would then answer for the "closed" one.
pub fn closed_port() -> SocketAddr {
    static HELD: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    HELD.lock().unwrap().push(socket);
    addr
}

/// The request lines a [`raw_origin`] has read, in order.
pub type RequestLines = Arc<Mutex<Vec<String>>>;

/// A raw origin that reads each request head, waits `delay`, then answers 200 (or, with
/// `answer` false, closes the connection without a word).
pub async fn raw_origin(delay: Duration, answer: bool) -> (SocketAddr, RequestLines) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = RequestLines::default();
    let lines = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let lines = lines.clone();
            tokio::spawn(async move {
                let Some(head) = super::read_request_head(&mut stream).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&head);
                let line = text.lines().next().unwrap_or_default().to_string();
                lines.lock().unwrap().push(line);
                tokio::time::sleep(delay).await;
                if answer {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                }
            });
        }
    });
    (addr, seen)
}
