//! Purges end to end, a real origin and real clients on `127.0.0.1:0`: by tag (`Cache-Tag`,
//! `Surrogate-Key`), soft (stale served, then revalidated), by host through the index, and
//! a tag shared by 10,000 objects purged while hits on other objects go on.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::edge::{client, group_yaml, TestEdge};
use common::origin::{Recorded, TestOrigin};
use http::{Response, StatusCode};

fn site(origin: std::net::SocketAddr) -> String {
    format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\norigin_groups:\n{}",
        group_yaml("web", origin)
    )
}

struct Fetched {
    status: u16,
    x_cache: String,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn get_as(client: &reqwest::Client, edge: &TestEdge, host: &str, path: &str) -> Fetched {
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(edge.url(path)).header("host", host).send(),
    )
    .await
    .expect("answered in time")
    .expect("request through the edge");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body");
    Fetched {
        status,
        x_cache: headers
            .get("x-cache")
            .map_or(String::new(), |v| v.to_str().unwrap().to_string()),
        headers,
        body,
    }
}

async fn get(edge: &TestEdge, path: &str) -> Fetched {
    get_as(&client(), edge, "t.example", path).await
}

/// `POST /purge`: the status and the answer (JSON when it is).
async fn purge(edge: &TestEdge, body: &str) -> (u16, serde_json::Value) {
    let response = client()
        .post(edge.admin_url("/purge"))
        .body(body.to_string())
        .send()
        .await
        .expect("POST /purge");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Polls `done` until it holds, for at most 10 s.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_tag_end_to_end() {
    let origin = TestOrigin::start(Arc::new(|req: &Recorded| {
        let mut response = Response::new(Bytes::from(format!("body of {}", req.path())));
        let headers = response.headers_mut();
        headers.insert("cache-control", "max-age=600".parse().unwrap());
        match req.path() {
            "/a" => headers.insert("cache-tag", "shelf,Sale".parse().unwrap()),
            "/b" => headers.insert("surrogate-key", "other  sale".parse().unwrap()),
            _ => headers.insert("cache-tag", "other, shelf".parse().unwrap()),
        };
        response
    }))
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    for path in ["/a", "/b", "/c"] {
        let miss = get(&edge, path).await;
        assert_eq!(miss.x_cache, "TCP_MISS");
        // The tags are for this cache, not for clients (stripped by default).
        for name in ["cache-tag", "surrogate-key"] {
            assert!(
                !miss.headers.contains_key(name),
                "{path}: {name} reached the client"
            );
        }
        let hit = get(&edge, path).await;
        assert_eq!(hit.x_cache, "TCP_HIT");
        assert!(!hit.headers.contains_key("cache-tag"), "{path} (hit)");
    }
    // Any case, either header: /a and /b carry `sale`.
    assert_eq!(
        purge(&edge, r#"{"tags": ["SALE"]}"#).await,
        (200, serde_json::json!({"purged": 2}))
    );
    assert_eq!(get(&edge, "/a").await.x_cache, "TCP_MISS");
    assert_eq!(get(&edge, "/b").await.x_cache, "TCP_MISS");
    assert_eq!(get(&edge, "/c").await.x_cache, "TCP_HIT");
    // `domains` still limit a tag purge.
    assert_eq!(
        purge(
            &edge,
            r#"{"tags": ["shelf"], "domains": ["elsewhere.example"]}"#
        )
        .await,
        (200, serde_json::json!({"purged": 0}))
    );
    assert_eq!(
        purge(
            &edge,
            r#"{"tags": ["shelf"], "domains": ["T.example:8080"]}"#
        )
        .await,
        (200, serde_json::json!({"purged": 2}))
    );
    assert_eq!(get(&edge, "/b").await.x_cache, "TCP_HIT");
    assert_eq!(get(&edge, "/c").await.x_cache, "TCP_MISS");
    for path in ["/a", "/b", "/c"] {
        assert_eq!(origin.count_path(path), 2, "{path}");
    }
    // A bad tag says why, and purges nothing.
    let (status, answer) = purge(&edge, r#"{"tags": ["two words"]}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.as_str().unwrap().contains("is not a tag"),
        "{answer}"
    );
    assert_eq!(edge.status().await["cache"]["objects"], 2, "/b and /c");

    // Kept for clients when configured so; still used for purges.
    let keeping =
        TestEdge::with_routes("cache:\n  strip_tag_headers: false\n", &site(origin.addr())).await;
    let miss = get(&keeping, "/b").await;
    assert_eq!(miss.headers["surrogate-key"], "other  sale");
    assert_eq!(
        get(&keeping, "/b").await.headers["surrogate-key"],
        "other  sale"
    );
    assert_eq!(
        purge(&keeping, r#"{"tags": ["other"]}"#).await.1["purged"],
        1
    );
    // Only the configured headers tag objects.
    let other_header = TestEdge::with_routes(
        "cache:\n  tag_headers: [Surrogate-Key]\n",
        &site(origin.addr()),
    )
    .await;
    for path in ["/a", "/b"] {
        get(&other_header, path).await;
    }
    assert_eq!(
        purge(&other_header, r#"{"tags": ["sale"]}"#).await.1["purged"],
        1
    );
    assert_eq!(get(&other_header, "/a").await.x_cache, "TCP_HIT");
    // `Cache-Tag` is no tag header there: it reaches clients.
    assert_eq!(
        get(&other_header, "/a").await.headers["cache-tag"],
        "shelf,Sale"
    );
}

/// The origin's current version of each page, with an `ETag`, answering `304` to a
/// matching `If-None-Match`, or `500` while `failing`.
struct Versioned {
    origin: TestOrigin,
    version: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

async fn versioned(cache_control: &'static str) -> Versioned {
    let version = Arc::new(AtomicUsize::new(1));
    let failing = Arc::new(AtomicBool::new(false));
    let (v, f) = (version.clone(), failing.clone());
    let origin = TestOrigin::start(Arc::new(move |req: &Recorded| {
        if f.load(Ordering::SeqCst) {
            let mut response = Response::new(Bytes::from_static(b"origin down"));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return response;
        }
        let current = v.load(Ordering::SeqCst);
        let etag = format!("\"v{current}\"");
        let matches = req
            .headers
            .get("if-none-match")
            .is_some_and(|value| value.to_str().unwrap() == etag);
        let mut response = if matches {
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            Response::new(Bytes::from(format!("{} v{current}", req.path())))
        };
        let headers = response.headers_mut();
        headers.insert("etag", etag.parse().unwrap());
        headers.insert("cache-control", cache_control.parse().unwrap());
        headers.insert("cache-tag", "page".parse().unwrap());
        response
    }))
    .await;
    Versioned {
        origin,
        version,
        failing,
    }
}

/// What the origin received for `path`: the `If-None-Match` of each request, in order.
fn conditions(origin: &TestOrigin, path: &str) -> Vec<Option<String>> {
    origin
        .requests()
        .iter()
        .filter(|r| r.path() == path)
        .map(|r| {
            r.headers
                .get("if-none-match")
                .map(|v| v.to_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_purge_serves_stale_then_revalidates() {
    // Within `stale-while-revalidate`: the stale copy at once, a refresh behind it.
    let page = versioned("max-age=600, stale-while-revalidate=60").await;
    let edge = TestEdge::with_routes("", &site(page.origin.addr())).await;
    assert_eq!(get(&edge, "/p").await.x_cache, "TCP_MISS");
    assert_eq!(get(&edge, "/p").await.x_cache, "TCP_HIT");
    page.version.store(2, Ordering::SeqCst);
    assert_eq!(
        purge(&edge, r#"{"tags": ["page"], "soft": true}"#).await,
        (200, serde_json::json!({"purged": 1}))
    );
    assert_eq!(
        edge.status().await["cache"]["objects"],
        1,
        "soft: still stored"
    );
    let stale = get(&edge, "/p").await;
    assert_eq!(
        (stale.x_cache.as_str(), &stale.body[..]),
        ("TCP_EXPIRED_HIT", &b"/p v1"[..])
    );
    eventually("the refresh replaced the stale copy", async || {
        let answer = get(&edge, "/p").await;
        answer.x_cache == "TCP_HIT" && answer.body == "/p v2"
    })
    .await;
    // The refresh was a revalidation of the stored copy.
    assert_eq!(
        conditions(&page.origin, "/p"),
        [None, Some("\"v1\"".to_string())]
    );

    // Without `stale-while-revalidate` (a path purge, soft): the next request revalidates
    // first; the origin's 304 keeps the stored body.
    let page = versioned("max-age=600, stale-if-error=600").await;
    let edge = TestEdge::with_routes("", &site(page.origin.addr())).await;
    for path in ["/n", "/e"] {
        assert_eq!(get(&edge, path).await.x_cache, "TCP_MISS");
    }
    assert_eq!(
        purge(&edge, r#"{"paths": ["/n", "/e"], "soft": true}"#)
            .await
            .1["purged"],
        2
    );
    let revalidated = get(&edge, "/n").await;
    assert_eq!(
        (revalidated.x_cache.as_str(), &revalidated.body[..]),
        ("TCP_REVALIDATED", &b"/n v1"[..])
    );
    assert_eq!(get(&edge, "/n").await.x_cache, "TCP_HIT", "fresh again");
    assert_eq!(
        conditions(&page.origin, "/n"),
        [None, Some("\"v1\"".to_string())]
    );
    // `stale-if-error`: with the origin failing, the soft-purged copy still answers.
    page.failing.store(true, Ordering::SeqCst);
    let fallback = get(&edge, "/e").await;
    assert_eq!(
        (
            fallback.status,
            fallback.x_cache.as_str(),
            &fallback.body[..]
        ),
        (200, "TCP_EXPIRED_HIT", &b"/e v1"[..])
    );
    // A hard purge removes it: the error reaches the client.
    assert_eq!(purge(&edge, r#"{"paths": ["/e"]}"#).await.1["purged"], 1);
    assert_eq!(get(&edge, "/e").await.status, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_purge_looks_only_at_that_hosts_objects() {
    let origin = TestOrigin::ok(&[("cache-control", "max-age=600")]).await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    let client = client();
    for i in 0..200 {
        get_as(&client, &edge, "b.example", &format!("/b/{i}")).await;
    }
    for i in 0..5 {
        get_as(&client, &edge, "A.example:8080", &format!("/a/{i}")).await;
    }
    let examined = async || {
        edge.status().await["cache"]["purge_examined"]
            .as_u64()
            .unwrap()
    };
    let before = examined().await;
    assert_eq!(
        purge(&edge, r#"{"domains": ["a.example"], "paths": ["/*"]}"#).await,
        (200, serde_json::json!({"purged": 5}))
    );
    assert_eq!(
        examined().await - before,
        5,
        "only a.example's objects were looked at"
    );
    assert_eq!(
        get_as(&client, &edge, "a.example", "/a/0").await.x_cache,
        "TCP_MISS"
    );
    assert_eq!(
        get_as(&client, &edge, "b.example", "/b/0").await.x_cache,
        "TCP_HIT"
    );
    // A path on one host: that host's objects only, matched by path.
    let before = examined().await;
    assert_eq!(
        purge(&edge, r#"{"domains": ["b.example"], "paths": ["/b/1*"]}"#)
            .await
            .1["purged"],
        111
    );
    assert_eq!(examined().await - before, 200);
    // The answer's counts match the metrics'.
    let metrics = edge.metrics().await;
    assert!(
        metrics.contains(&format!(
            "portico_cache_purge_examined_total {}",
            examined().await
        )),
        "{metrics}"
    );
}

/// Nearest-rank percentile of sorted `samples`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_on_10000_objects_is_purged_while_hits_on_others_go_on() {
    const TAGGED: usize = 10_000;
    const OTHERS: usize = 20;
    let origin = TestOrigin::start(Arc::new(|req: &Recorded| {
        let mut response = Response::new(Bytes::from(format!("body of {}", req.path())));
        let headers = response.headers_mut();
        headers.insert("cache-control", "max-age=600".parse().unwrap());
        if req.path().starts_with("/bulk/") {
            headers.insert("surrogate-key", "bulk catalogue".parse().unwrap());
        }
        response
    }))
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    let client = client();
    // Store them, 50 requests at a time.
    let started = Instant::now();
    let paths: Vec<String> = (0..TAGGED).map(|i| format!("/bulk/{i}")).collect();
    for batch in paths.chunks(50) {
        let answers = futures_util::future::join_all(
            batch
                .iter()
                .map(|path| get_as(&client, &edge, "t.example", path)),
        )
        .await;
        assert!(answers.iter().all(|a| a.x_cache == "TCP_MISS"));
    }
    for i in 0..OTHERS {
        assert_eq!(get(&edge, &format!("/other/{i}")).await.x_cache, "TCP_MISS");
    }
    assert_eq!(edge.status().await["cache"]["objects"], TAGGED + OTHERS);
    let filled = started.elapsed();

    // Hits on the other objects from 4 clients, each recording when it asked and how long
    // the answer took, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let hitters: Vec<_> = (0..4)
        .map(|h| {
            let (stop, hits, url, client) =
                (stop.clone(), hits.clone(), edge.url(""), client.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut i = h;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("{url}/other/{}", i % OTHERS);
                    i += 1;
                    let asked = Instant::now();
                    let response = client
                        .get(&path)
                        .header("host", "t.example")
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let x_cache = response.headers()["x-cache"].to_str().unwrap().to_string();
                    let body = response.bytes().await.unwrap();
                    samples.push((asked, asked.elapsed(), status, x_cache, body.len()));
                    hits.fetch_add(1, Ordering::Relaxed);
                }
                samples
            })
        })
        .collect();
    // The hitters are under way before the purge starts (their first 200 hits are the
    // comparison: hits without a purge).
    eventually("the hitters are running", async || {
        hits.load(Ordering::Relaxed) >= 200
    })
    .await;
    let purge_started = Instant::now();
    let (status, answer) = purge(&edge, r#"{"tags": ["bulk"]}"#).await;
    let purge_took = purge_started.elapsed();
    let purge_ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for hitter in hitters {
        samples.extend(hitter.await.unwrap());
    }
    assert_eq!(
        (status, &answer),
        (200, &serde_json::json!({"purged": TAGGED}))
    );

    // Correctness: every hit answered whole from the cache, every tagged object gone.
    let bad: Vec<_> = samples
        .iter()
        .filter(|(_, _, status, x_cache, len)| *status != 200 || x_cache != "TCP_HIT" || *len == 0)
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} hits went wrong: {:?}",
        bad.len(),
        samples.len(),
        &bad[..bad.len().min(5)]
    );
    let cache = edge.status().await["cache"].clone();
    assert_eq!(cache["objects"], OTHERS, "{cache}");
    let sample: Vec<usize> = (0..TAGGED).step_by(997).collect();
    for i in &sample {
        assert_eq!(
            get(&edge, &format!("/bulk/{i}")).await.x_cache,
            "TCP_MISS",
            "/bulk/{i}"
        );
    }
    // Stored again, tagged again.
    assert_eq!(
        purge(&edge, r#"{"tags": ["catalogue"]}"#).await.1["purged"],
        sample.len()
    );

    // The numbers, for the test's output (no timing assertion: the machine is shared).
    let mut during: Vec<Duration> = samples
        .iter()
        .filter(|(asked, took, ..)| *asked <= purge_ended && *asked + *took >= purge_started)
        .map(|(_, took, ..)| *took)
        .collect();
    during.sort();
    let mut before: Vec<Duration> = samples
        .iter()
        .filter(|(asked, took, ..)| *asked + *took < purge_started)
        .map(|(_, took, ..)| *took)
        .collect();
    before.sort();
    println!(
        "purge of {TAGGED} objects by tag took {purge_took:?} (stored in {filled:?}); hits during the purge: {} (p50 {:?}, p99 {:?}, max {:?}); hits before it: {} (p50 {:?}, p99 {:?})",
        during.len(),
        during.first().map(|_| percentile(&during, 50.0)),
        during.first().map(|_| percentile(&during, 99.0)),
        during.last(),
        before.len(),
        percentile(&before, 50.0),
        percentile(&before, 99.0),
    );
    assert!(!during.is_empty(), "no hit overlapped the purge");
}
