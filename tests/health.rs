//! Origin health end to end: real origins on loopback that are stopped and restarted, the
//! edge in-process with its probes running, `/status` on the admin listener. The probe
//! settings each have their own test in `tests/probes.rs`.
//!
//! Probe intervals are 100–200 ms. Nothing sleeps to synchronise: every wait polls a
//! condition (an origin's request log, `/status`, the access log) under a deadline.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::edge::{client, TestEdge};
use common::health::*;
use common::origin::TestOrigin;
use serde_json::Value;

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
    // A probe in flight as b stops may fail on its read (a reset) rather than its connect;
    // the next one, an interval later, is refused: the error says which step failed.
    let status = wait_for_status(&edge, "b unhealthy, its probe refused", |s| {
        health(s, "web", "b") == "unhealthy"
            && origin(s, "web", "b")["last_error"]["error"]
                .as_str()
                .is_some_and(|error| error.contains("connect"))
    })
    .await;
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

    // Every answered request is logged (a client error may never have reached the edge).
    let answered = ok.load(Ordering::SeqCst);
    let lines = edge
        .wait_for_log(|lines| lines.iter().filter(|l| l["path"] == "/loop").count() >= answered)
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

    // `all_unhealthy` holds as soon as no origin is healthy, a pending one included: wait
    // for both probes to have failed.
    let status = wait_for_status(&edge, "all unhealthy", |s| {
        group(s, "web")["all_unhealthy"] == true
            && ["first", "second"]
                .iter()
                .all(|name| origin(s, "web", name)["health"] == "unhealthy")
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

/// An edge whose group prefers an origin that reads each request and hangs up without
/// answering; the request lines it read; the group's second origin, `alive`.
async fn hangs_up_then_alive() -> (TestEdge, RequestLines, TestOrigin) {
    let (hangs_up, seen) = raw_origin(Duration::ZERO, false).await;
    let (alive, _) = named_origin("alive").await;
    let origins = [
        origin_yaml("hangs-up", hangs_up, 1, 50),
        origin_yaml("alive", alive.addr(), 2, 50),
    ];
    let edge = TestEdge::with_routes("", &rules(&group_yaml("web", &origins, ""))).await;
    (edge, seen, alive)
}

/// An origin that takes the request and hangs up without a byte of an answer (as one that
/// is dying or restarting does to what it had accepted): a GET goes on to the next origin,
/// as nginx's `proxy_next_upstream error` sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_an_origin_dropped_unanswered_goes_to_the_next() {
    let (edge, seen, alive) = hangs_up_then_alive().await;
    assert_eq!(get(&edge, "/page").await, (200, "alive".to_string()));
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["GET /page HTTP/1.1".to_string()],
        "the request reached the first origin"
    );
    assert_eq!(alive.count(), 1);
    let lines = edge.wait_for_log(|l| !l.is_empty()).await;
    assert_eq!(lines[0]["tried"], serde_json::json!(["hangs-up", "alive"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_idempotent_request_is_never_retried_once_sent() {
    let (edge, seen, alive) = hangs_up_then_alive().await;
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
