//! Origin health end to end: real origins on loopback that are stopped and restarted, the
//! edge in-process with its probes running, `/status` on the admin listener.
//!
//! Probe intervals are 100–200 ms. Nothing sleeps to synchronise: every wait polls a
//! condition (an origin's request log, `/status`, the access log) under a deadline.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::edge::{client, TestEdge};
use common::origin::{Handler, Recorded, TestOrigin};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(10);

/// Rules with one catch-all route to group `web` (the first group), then `groups`.
fn rules(groups: &str) -> String {
    format!("routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\nrule_sets: []\norigin_groups:\n{groups}")
}

fn origin_yaml(name: &str, addr: SocketAddr, priority: u32, weight: u32) -> String {
    format!("      - name: {name}\n        address: {addr}\n        host_header: origin.internal\n        priority: {priority}\n        weight: {weight}\n")
}

/// A group of `origins` (lines from [`origin_yaml`]) with `probe` as a YAML flow mapping.
fn group_yaml(name: &str, origins: &[String], probe: &str) -> String {
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
fn named(name: &'static str, health: Arc<AtomicU16>) -> Handler {
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

async fn named_origin(name: &'static str) -> (TestOrigin, Arc<AtomicU16>) {
    let health = Arc::new(AtomicU16::new(200));
    (TestOrigin::start(named(name, health.clone())).await, health)
}

/// GETs `path` through the edge; returns the status and the `x-origin` that answered.
async fn get(edge: &TestEdge, path: &str) -> (u16, String) {
    let response = client().get(edge.url(path)).send().await.unwrap();
    let origin = response
        .headers()
        .get("x-origin")
        .map_or("", |v| v.to_str().unwrap())
        .to_string();
    (response.status().as_u16(), origin)
}

async fn status(edge: &TestEdge) -> Value {
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
async fn wait_for_status(edge: &TestEdge, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
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

fn group<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["origin_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name} in {status:#}"))
}

fn origin<'a>(status: &'a Value, group_name: &str, name: &str) -> &'a Value {
    group(status, group_name)["origins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no origin {name} in {status:#}"))
}

fn health(status: &Value, group_name: &str, name: &str) -> String {
    origin(status, group_name, name)["health"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until `condition` holds, polling every 5 ms; returns how long it took.
async fn wait_until(what: &str, condition: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

fn now_ms() -> u64 {
    portico::observability::records::now_ms() as u64
}

/// A loopback address nothing listens on.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The request lines a [`raw_origin`] has read, in order.
type RequestLines = Arc<Mutex<Vec<String>>>;

/// A raw origin that reads each request head, waits `delay`, then answers 200 (or, with
/// `answer` false, closes the connection without a word).
async fn raw_origin(delay: Duration, answer: bool) -> (SocketAddr, RequestLines) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = RequestLines::default();
    let lines = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
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

/// Stopping one of three origins under a steady loop of GETs: no client errors beyond the
/// requests in flight, no new request to it two probe intervals after it stopped, and
/// traffic back after a restart within the healthy threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_an_origin_under_load_then_restarting_it() {
    const WORKERS: usize = 4;
    const INTERVAL: Duration = Duration::from_millis(150);
    let (a, _) = named_origin("a").await;
    let (mut b, _) = named_origin("b").await;
    let (c, _) = named_origin("c").await;
    let origins = [
        origin_yaml("a", a.addr(), 1, 50),
        origin_yaml("b", b.addr(), 1, 50),
        origin_yaml("c", c.addr(), 1, 50),
    ];
    let probe = "{ path: /health, interval: 150ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 1 }";
    let edge = TestEdge::with_routes("", &rules(&group_yaml("web", &origins, probe))).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (stop, ok, errors, url) = (stop.clone(), ok.clone(), errors.clone(), edge.url("/loop"));
        workers.push(tokio::spawn(async move {
            let client = client();
            // Bounded: at most 20,000 requests per worker, even if `stop` never comes.
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match client.get(&url).send().await {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.bytes().await;
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(response) => errors.lock().unwrap().push(response.status().to_string()),
                    Err(e) => errors.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    wait_until("every origin serves the loop", || {
        [&a, &b, &c].iter().all(|o| o.count_path("/loop") > 0)
    })
    .await;

    let stopped_ms = now_ms();
    b.stop().await;
    let status = wait_for_status(&edge, "b unhealthy", |s| {
        health(s, "web", "b") == "unhealthy"
    })
    .await;
    let b_status = origin(&status, "web", "b");
    assert!(
        b_status["last_error"]["error"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{b_status:#}"
    );
    assert_eq!(group(&status, "web")["all_unhealthy"], false);
    // Keep the loop running well past two intervals.
    let quiet_from_ms = stopped_ms + 2 * INTERVAL.as_millis() as u64;
    let ok_then = ok.load(Ordering::SeqCst);
    wait_until("the loop runs on past two intervals", || {
        now_ms() > quiet_from_ms + 300 && ok.load(Ordering::SeqCst) > ok_then + 100
    })
    .await;

    let restarted_ms = now_ms();
    let b_before = b.count_path("/loop");
    b.restart().await;
    let back_after = wait_until("b gets traffic again", || b.count_path("/loop") > b_before).await;
    // Two consecutive successes are needed, one interval apart; the first comes at most one
    // interval after the restart.
    assert!(
        back_after >= INTERVAL - Duration::from_millis(10),
        "{back_after:?}"
    );
    assert!(
        back_after <= 3 * INTERVAL + Duration::from_millis(100),
        "{back_after:?}"
    );
    let status = wait_for_status(&edge, "b healthy", |s| health(s, "web", "b") == "healthy").await;
    let b_status = origin(&status, "web", "b");
    assert!(b_status["health_changed_ms"].as_u64().unwrap() >= restarted_ms);
    assert_eq!(b_status["last_probe"]["status"], 200);
    assert!(b_status["last_probe"]["latency_ms"].as_f64().unwrap() >= 0.0);

    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    assert!(errors.len() <= WORKERS, "client errors: {errors:?}");
    let total = ok.load(Ordering::SeqCst) + errors.len();
    assert!(total > 200, "the loop was not steady: {total} requests");

    let lines = edge
        .wait_for_log(|lines| lines.iter().filter(|l| l["path"] == "/loop").count() >= total)
        .await;
    let window: Vec<&Value> = lines
        .iter()
        .filter(|l| l["path"] == "/loop")
        .filter(|l| {
            let time = l["time_ms"].as_u64().unwrap();
            time > quiet_from_ms && time < restarted_ms
        })
        .collect();
    assert!(window.len() > 50, "too few requests while b was down");
    for line in window {
        assert!(
            !line["tried"]
                .as_array()
                .unwrap()
                .contains(&Value::from("b")),
            "b was still tried two intervals after it stopped: {line}"
        );
        assert_eq!(line["status"], 200, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_one_down_fails_over_to_priority_two_and_comes_back() {
    let (mut primary, _) = named_origin("primary").await;
    let (backup, _) = named_origin("backup").await;
    let origins = [
        origin_yaml("primary", primary.addr(), 1, 50),
        origin_yaml("backup", backup.addr(), 2, 50),
    ];
    let probe = "{ path: /health, interval: 100ms, timeout: 80ms }";
    let edge = TestEdge::with_routes("", &rules(&group_yaml("web", &origins, probe))).await;

    for _ in 0..10 {
        assert_eq!(get(&edge, "/up").await, (200, "primary".to_string()));
    }
    primary.stop().await;
    let status = wait_for_status(&edge, "primary unhealthy", |s| {
        health(s, "web", "primary") == "unhealthy"
    })
    .await;
    assert_eq!(health(&status, "web", "backup"), "healthy");
    for _ in 0..10 {
        assert_eq!(get(&edge, "/down").await, (200, "backup".to_string()));
    }
    primary.restart().await;
    wait_for_status(&edge, "primary healthy", |s| {
        health(s, "web", "primary") == "healthy"
    })
    .await;
    for _ in 0..10 {
        assert_eq!(get(&edge, "/back").await, (200, "primary".to_string()));
    }
    // While priority 1 was known to be down, it was not even tried.
    let lines = edge
        .wait_for_log(|l| l.iter().filter(|l| l["path"] == "/back").count() == 10)
        .await;
    for line in lines.iter().filter(|l| l["path"] == "/down") {
        assert_eq!(line["tried"], serde_json::json!(["backup"]), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic_end_to_end() {
    let (light, _) = named_origin("light").await;
    let (heavy, _) = named_origin("heavy").await;
    let origins = [
        origin_yaml("light", light.addr(), 1, 1),
        origin_yaml("heavy", heavy.addr(), 1, 3),
    ];
    let edge = TestEdge::with_routes("", &rules(&group_yaml("web", &origins, ""))).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = edge.url("/w");
        tasks.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..100 {
                assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (light, heavy) = (light.count_path("/w"), heavy.count_path("/w"));
    assert_eq!(light + heavy, 400);
    assert!((90..=110).contains(&light), "light {light}, heavy {heavy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_origin_unhealthy_sends_traffic_to_all_of_them() {
    let (first, first_health) = named_origin("first").await;
    let (second, second_health) = named_origin("second").await;
    first_health.store(503, Ordering::Relaxed);
    second_health.store(503, Ordering::Relaxed);
    let origins = [
        origin_yaml("first", first.addr(), 1, 50),
        origin_yaml("second", second.addr(), 2, 50),
    ];
    let probe = "{ path: /health, interval: 100ms, timeout: 80ms }";
    let edge = TestEdge::with_routes("", &rules(&group_yaml("web", &origins, probe))).await;

    let status = wait_for_status(&edge, "all unhealthy", |s| {
        group(s, "web")["all_unhealthy"] == true
    })
    .await;
    let first_status = origin(&status, "web", "first");
    assert_eq!(first_status["health"], "unhealthy");
    assert_eq!(first_status["last_probe"]["status"], 503);
    assert!(first_status["last_error"]["error"]
        .as_str()
        .unwrap()
        .contains("503"));
    for _ in 0..20 {
        assert_eq!(get(&edge, "/all").await.0, 200);
    }
    // Both priorities share the traffic.
    assert_eq!(
        (first.count_path("/all"), second.count_path("/all")),
        (10, 10)
    );

    // One origin recovers: the group leaves the fallback and traffic goes to it alone.
    second_health.store(200, Ordering::Relaxed);
    let status = wait_for_status(&edge, "second healthy", |s| {
        health(s, "web", "second") == "healthy"
    })
    .await;
    assert_eq!(group(&status, "web")["all_unhealthy"], false);
    for _ in 0..10 {
        assert_eq!(get(&edge, "/one").await, (200, "second".to_string()));
    }
}

/// Pingora starts backends healthy; the edge accepts only after the first probe round, so
/// the very first request already avoids a sick origin, even one whose probe takes a while
/// to fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sick_origin_gets_no_traffic_before_its_first_probe() {
    // Accepts and reads requests, answers nothing for 3 s, then hangs up.
    let (sick, seen) = raw_origin(Duration::from_secs(3), false).await;
    let (alive, _) = named_origin("alive").await;
    let origins = [
        origin_yaml("sick", sick, 1, 50),
        origin_yaml("alive", alive.addr(), 2, 50),
    ];
    // A long interval: only the first round can have run when the request comes.
    let probe = "{ path: /health, interval: 30s, timeout: 300ms }";
    let edge = TestEdge::with_routes("", &rules(&group_yaml("web", &origins, probe))).await;
    assert_eq!(get(&edge, "/first").await, (200, "alive".to_string()));
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["HEAD /health HTTP/1.1".to_string()]
    );
    let lines = edge.wait_for_log(|l| !l.is_empty()).await;
    assert_eq!(lines[0]["tried"], serde_json::json!(["alive"]));
    let status = status(&edge).await;
    let sick_status = origin(&status, "web", "sick");
    assert_eq!(sick_status["health"], "unhealthy");
    assert_eq!(sick_status["probes"], 1);
    assert_eq!(sick_status["last_error"]["error"], "timed out after 300ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_is_retried_and_the_access_log_names_each_attempt() {
    let dead = closed_port();
    let (alive, _) = named_origin("alive").await;
    // No probe: the dead origin stays preferred, so each request meets it first.
    let origins = [
        origin_yaml("dead", dead, 1, 50),
        origin_yaml("alive", alive.addr(), 2, 50),
    ];
    let edge = TestEdge::with_routes("", &rules(&group_yaml("web", &origins, ""))).await;
    assert_eq!(get(&edge, "/r").await, (200, "alive".to_string()));
    let lines = edge.wait_for_log(|l| !l.is_empty()).await;
    assert_eq!(lines[0]["tried"], serde_json::json!(["dead", "alive"]));
    assert_eq!(lines[0]["attempts"], 2);
    assert_eq!(lines[0]["origin"], "alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_idempotent_request_is_never_retried_once_sent() {
    // Reads the request, then hangs up without answering.
    let (hangs_up, seen) = raw_origin(Duration::ZERO, false).await;
    let (alive, _) = named_origin("alive").await;
    let origins = [
        origin_yaml("hangs-up", hangs_up, 1, 50),
        origin_yaml("alive", alive.addr(), 2, 50),
    ];
    let edge = TestEdge::with_routes("", &rules(&group_yaml("web", &origins, ""))).await;
    let response = client()
        .post(edge.url("/order"))
        .body("pay once")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["POST /order HTTP/1.1".to_string()],
        "the request reached the origin"
    );
    assert_eq!(alive.count(), 0, "a sent POST was retried elsewhere");
    let lines = edge.wait_for_log(|l| !l.is_empty()).await;
    assert_eq!(lines[0]["tried"], serde_json::json!(["hangs-up"]));
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_method_is_honoured() {
    // Only GET /health passes; HEAD gets 405.
    let server = TestOrigin::start(Arc::new(|r: &Recorded| {
        let status = if r.method == "GET" { 200 } else { 405 };
        http::Response::builder()
            .status(status)
            .body(Bytes::new())
            .unwrap()
    }))
    .await;
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
    let server = TestOrigin::start(Arc::new(|r: &Recorded| {
        let status = if r.path() == "/deep/health" { 200 } else { 404 };
        http::Response::builder()
            .status(status)
            .body(Bytes::new())
            .unwrap()
    }))
    .await;
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
    let server = TestOrigin::start(Arc::new(|r: &Recorded| {
        let status = if r.headers["host"] == "probe.example" {
            200
        } else {
            421
        };
        http::Response::builder()
            .status(status)
            .body(Bytes::new())
            .unwrap()
    }))
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
    let server = TestOrigin::start(Arc::new(|_: &Recorded| {
        http::Response::builder()
            .status(204)
            .body(Bytes::new())
            .unwrap()
    }))
    .await;
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
    let failing = || {
        TestOrigin::start(Arc::new(|_: &Recorded| {
            http::Response::builder()
                .status(500)
                .body(Bytes::new())
                .unwrap()
        }))
    };
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
