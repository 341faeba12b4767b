//! The cache store under pressure, end to end: eviction within `memory_bytes`, a large body
//! streamed to several clients while it fills, stale serving, purge, and WebSocket upgrades
//! on a route whose cache holds a page for the same URL.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::edge::{client, group_yaml, TestEdge};
use common::gated::{Answer, Body, GatedOrigin};
use common::origin::{Recorded, TestOrigin};
use http::Response;

fn site(cache: &str, origin: std::net::SocketAddr) -> String {
    format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {cache}\norigin_groups:\n{}",
        group_yaml("web", origin)
    )
}

async fn x_cache(edge: &TestEdge, path: &str) -> (String, Bytes) {
    let response = client().get(edge.url(path)).send().await.unwrap();
    let status = response.headers()["x-cache"].to_str().unwrap().to_string();
    (status, response.bytes().await.unwrap())
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_the_store_within_memory_bytes_and_hot_keys_survive() {
    let origin = TestOrigin::start(Arc::new(|req: &Recorded| {
        let mut response = Response::new(Bytes::from(vec![b'x'; 100 * 1024]));
        let _ = req;
        response
            .headers_mut()
            .insert("cache-control", "max-age=600".parse().unwrap());
        response
    }))
    .await;
    let node = "cache:\n  memory_bytes: 1MiB\n  max_object_bytes: 128KiB\n";
    let edge = TestEdge::with_routes(node, &site("{ enabled: true }", origin.addr())).await;
    assert_eq!(x_cache(&edge, "/hot").await.0, "TCP_MISS");
    // Three times memory_bytes, the hot key read after every store.
    for i in 0..30 {
        assert_eq!(x_cache(&edge, &format!("/cold/{i}")).await.0, "TCP_MISS");
        assert_eq!(x_cache(&edge, "/hot").await.0, "TCP_HIT", "after /cold/{i}");
    }
    let limit = 1 << 20;
    wait_until("the store is back within memory_bytes", async || {
        edge.status().await["cache"]["bytes"].as_u64().unwrap() <= limit
    })
    .await;
    let status = edge.status().await;
    assert!(
        status["cache"]["evicted_objects"].as_u64().unwrap() >= 20,
        "{status}"
    );
    assert_eq!(x_cache(&edge, "/cold/0").await.0, "TCP_MISS");
    assert_eq!(x_cache(&edge, "/hot").await.0, "TCP_HIT");
    assert_eq!(origin.count_path("/hot"), 1);
}

/// 64 chunks of 1 MiB, each filled with its own byte pattern.
fn big_body() -> Vec<Bytes> {
    (0..64u8)
        .map(|i| {
            Bytes::from(
                (0..1usize << 20)
                    .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i))
                    .collect::<Vec<u8>>(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_64_mib_object_streams_to_two_clients_while_it_fills() {
    let chunks = big_body();
    let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let origin = GatedOrigin::start(Arc::new(move |_, _| Answer {
        status: 200,
        headers: vec![
            ("cache-control", "max-age=600".into()),
            ("content-length", (64usize << 20).to_string()),
        ],
        // Half the body, then the origin waits for the test.
        body: Body {
            chunks: chunks.clone(),
            pause_after: Some(32),
        },
    }))
    .await;
    let edge = TestEdge::with_routes("", &site("{ enabled: true }", origin.addr)).await;

    let mut readers = Vec::new();
    let progress: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    for received in &progress {
        let (url, received) = (edge.url("/big.bin"), received.clone());
        readers.push(tokio::spawn(async move {
            let mut response = client().get(url).send().await.unwrap();
            let x_cache = response.headers()["x-cache"].to_str().unwrap().to_string();
            let mut body = Vec::with_capacity(64 << 20);
            while let Some(chunk) = response.chunk().await.unwrap() {
                body.extend_from_slice(&chunk);
                received.store(body.len(), Ordering::SeqCst);
            }
            (x_cache, body)
        }));
        // The second client arrives once the first one's fill is under way.
        wait_until("the first client gets bytes", async || {
            progress[0].load(Ordering::SeqCst) > 0
        })
        .await;
    }
    // Both clients hold half the object while the origin has not sent the rest.
    wait_until("both clients have the first half", async || {
        progress
            .iter()
            .all(|p| p.load(Ordering::SeqCst) >= 32 << 20)
    })
    .await;
    assert!(progress.iter().all(|p| p.load(Ordering::SeqCst) < 64 << 20));
    origin.resume.add_permits(1);
    let mut seen = Vec::new();
    for reader in readers {
        let (x_cache, body) = reader.await.unwrap();
        assert!(body == expected, "a copy differs from the origin's bytes");
        seen.push(x_cache);
    }
    seen.sort();
    assert_eq!(seen, ["TCP_HIT", "TCP_MISS"]);
    assert_eq!(origin.arrived(), 1);
    // And it was stored whole.
    let (status, body) = x_cache(&edge, "/big.bin").await;
    assert_eq!(status, "TCP_HIT");
    assert!(body == expected);
}

/// `n` chunks of 1 MiB, each filled with its own byte pattern.
fn mib_chunks(n: u8) -> Vec<Bytes> {
    big_body().into_iter().take(n.into()).collect()
}

/// A fill the store gave up on (`cache.memory_bytes` taken by other fills) keeps only what
/// its readers have yet to read; a reader that stops reading must not make it keep the
/// whole body outside the bound. Here one fill holds 28 of the store's 32 MiB while a
/// second, of a 32 MiB object, is abandoned; a client joins the second with a 4 KiB receive
/// buffer and stops reading. Once it is more than the allowed lag behind it is cut off (its
/// response ends short), while the client that drives the fill gets every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_cannot_make_an_abandoned_fill_keep_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let script = |chunks: Vec<Bytes>, pause: usize| -> common::gated::Script {
        Arc::new(move |_, _| Answer {
            status: 200,
            headers: vec![
                ("cache-control", "max-age=600".into()),
                ("content-length", (32usize << 20).to_string()),
            ],
            body: Body {
                chunks: chunks.clone(),
                pause_after: Some(pause),
            },
        })
    };
    let big = mib_chunks(32);
    let expected: Vec<u8> = big.iter().flat_map(|c| c.iter().copied()).collect();
    // The hog sends 28 MiB of its 32 and waits for ever; the big object pauses after 1 MiB.
    let hog = GatedOrigin::start(script(big.clone(), 28)).await;
    let origin = GatedOrigin::start(script(big, 1)).await;
    let rules = format!(
        "routes:\n  - name: hog\n    patterns: [\"/hog\"]\n    origin_group: hog\n    cache: {{ enabled: true }}\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\norigin_groups:\n{}{}",
        group_yaml("hog", hog.addr),
        group_yaml("web", origin.addr)
    );
    let node = "cache:\n  memory_bytes: 32MiB\n  max_object_bytes: 32MiB\n";
    let edge = TestEdge::with_routes(node, &rules).await;

    let reading = |path: &str| {
        let (url, progress) = (edge.url(path), Arc::new(AtomicUsize::new(0)));
        let seen = progress.clone();
        let task = tokio::spawn(async move {
            let mut response = client().get(url).send().await.unwrap();
            let mut body = Vec::with_capacity(32 << 20);
            while let Ok(Some(chunk)) = response.chunk().await {
                body.extend_from_slice(&chunk);
                progress.store(body.len(), Ordering::SeqCst);
            }
            body
        });
        (task, seen)
    };
    let (_hog_client, hogged) = reading("/hog");
    wait_until("the hog's fill holds 28 MiB", async || {
        hogged.load(Ordering::SeqCst) >= 28 << 20
    })
    .await;
    let (driver, received) = reading("/big.bin");
    wait_until("the driving client gets bytes", async || {
        received.load(Ordering::SeqCst) > 0
    })
    .await;
    // The second client joins the fill, reads its head, and stops reading.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(edge.addr).await.unwrap();
    // Its `Host` is the driving client's: the same cache key.
    let request = format!("GET /big.bin HTTP/1.1\r\nHost: {}\r\n\r\n", edge.addr);
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stalled.read(&mut byte).await.unwrap(), 1, "head cut short");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    origin.resume.add_permits(1);
    let body = driver.await.unwrap();
    assert!(body == expected, "the driving client's copy differs");
    // Now the stalled client reads what the edge still sends it: not the whole body.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stalled.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => {
                panic!("the stalled client's response neither ended nor went on ({got} bytes)")
            }
        }
        if got >= 32 << 20 {
            break; // the whole body (the connection stays open for the next request)
        }
    }
    let status = edge.status().await;
    assert!(
        got < 32 << 20,
        "the stalled client got the whole body: the fill kept it ({status})"
    );
    assert!(
        status["cache"]["abandoned_fills"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert_eq!(status["cache"]["readers_cut"], 1, "{status}");
    let metrics = edge.metrics().await;
    assert!(metrics.contains("\nportico_cache_readers_cut_total 1\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_stale_object_when_the_origin_fails_or_is_down() {
    let failing = Arc::new(AtomicBool::new(false));
    let fail = failing.clone();
    let mut origin = TestOrigin::start(Arc::new(move |req: &Recorded| {
        let mut response = Response::new(Bytes::from(format!("page {}", req.path())));
        if fail.load(Ordering::SeqCst) {
            *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        }
        let cc = if req.path() == "/route-setting" {
            "max-age=0"
        } else {
            "max-age=0, stale-if-error=60"
        };
        response
            .headers_mut()
            .insert("cache-control", cc.parse().unwrap());
        response
    }))
    .await;
    let cache = "{ enabled: true, stale_if_error: 1m }";
    let edge = TestEdge::with_routes("", &site(cache, origin.addr())).await;
    for path in ["/page", "/route-setting"] {
        assert_eq!(x_cache(&edge, path).await.0, "TCP_MISS");
        // Stale at once, origin healthy: fetched again.
        assert_eq!(x_cache(&edge, path).await.0, "TCP_MISS");
    }
    failing.store(true, Ordering::SeqCst);
    for path in ["/page", "/route-setting"] {
        let (status, body) = x_cache(&edge, path).await;
        assert_eq!(
            (status.as_str(), &body[..]),
            ("TCP_EXPIRED_HIT", format!("page {path}").as_bytes())
        );
    }
    origin.stop().await;
    let (status, body) = x_cache(&edge, "/page").await;
    assert_eq!(
        (status.as_str(), &body[..]),
        ("TCP_EXPIRED_HIT", &b"page /page"[..])
    );
    // Nothing stored: the error reaches the client.
    let response = client()
        .get(edge.url("/never-stored"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    let origin = GatedOrigin::start(Arc::new(|n, _| Answer {
        status: 200,
        headers: vec![(
            "cache-control",
            if n == 1 {
                "max-age=0, stale-while-revalidate=60"
            } else {
                "max-age=600"
            }
            .into(),
        )],
        body: Body::full(format!("version {n}")),
    }))
    .await;
    let edge = TestEdge::with_routes("", &site("{ enabled: true }", origin.addr)).await;
    assert_eq!(
        x_cache(&edge, "/swr").await,
        ("TCP_MISS".into(), "version 1".into())
    );
    // The refresh is held at the origin, yet stale answers keep coming at once.
    origin.close_gate();
    for _ in 0..3 {
        assert_eq!(
            x_cache(&edge, "/swr").await,
            ("TCP_EXPIRED_HIT".into(), "version 1".into())
        );
    }
    wait_until("the refresh reaches the origin", async || {
        origin.arrived() == 2
    })
    .await;
    origin.open_gate();
    wait_until("the refreshed object is served", async || {
        x_cache(&edge, "/swr").await == ("TCP_HIT".into(), "version 2".into())
    })
    .await;
    assert_eq!(origin.arrived(), 2, "exactly one background refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_path_and_wildcard_ignores_case_and_query() {
    let origin = TestOrigin::ok(&[("cache-control", "max-age=600")]).await;
    let edge = TestEdge::with_routes("", &site("{ enabled: true }", origin.addr())).await;
    let paths = [
        "/img/a.png",
        "/img/b/c.png",
        "/IMG/d.png?v=2",
        "/a.css",
        "/other.css",
    ];
    for path in paths {
        assert_eq!(x_cache(&edge, path).await.0, "TCP_MISS");
    }
    let purge = |body: &'static str| client().post(edge.admin_url("/purge")).body(body).send();
    // Another domain: nothing goes.
    let response = purge(r#"{"domains": ["elsewhere.example"], "paths": ["/*"]}"#)
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), r#"{"purged":0}"#);
    let response = purge(r#"{"domains": ["127.0.0.1"], "paths": ["/img/*", "/A.CSS?x=1"]}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), r#"{"purged":4}"#);
    for path in paths {
        let expected = if path == "/other.css" {
            "TCP_HIT"
        } else {
            "TCP_MISS"
        };
        assert_eq!(x_cache(&edge, path).await.0, expected, "{path}");
    }
    // Bad input: a 400 that says why, and nothing purged.
    let response = purge(r#"{"paths": ["img"]}"#).await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("must start with '/'"));
    let response = client().get(edge.admin_url("/purge")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(x_cache(&edge, "/other.css").await.0, "TCP_HIT");
}
