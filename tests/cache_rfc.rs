//! RFC 9111 / RFC 9110 behaviour of the shared cache, each point against a real origin on
//! `127.0.0.1:0` and a real client: `Age` and `Date`, the three HTTP-date formats, which
//! statuses are stored, 304s updating stored headers, invalidation by unsafe methods,
//! qualified `no-cache`/`private`, hop-by-hop fields, `Vary`, stale objects during a
//! refresh, collapsing after an error, clients' conditional requests, `only-if-cached`,
//! `Surrogate-Control`, and 1xx interim responses on misses.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::edge::{client, group_yaml, TestEdge};
use common::gated::{Answer, Body, GatedOrigin};
use common::origin::{Recorded, TestOrigin};
use http::Response;
use tokio::io::AsyncWriteExt;

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

async fn fetch(edge: &TestEdge, method: &str, path: &str, headers: &[(&str, &str)]) -> Fetched {
    let mut request = client().request(method.parse().unwrap(), edge.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(Duration::from_secs(10), request.send())
        .await
        .expect("answered in time")
        .expect("request through the edge");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(10), response.bytes())
        .await
        .expect("body in time")
        .expect("body");
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
    fetch(edge, "GET", path, &[]).await
}

async fn x_caches(edge: &TestEdge, path: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(edge, path).await.x_cache);
    }
    out
}

fn ago(secs: u64) -> String {
    httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(secs))
}

/// `when` in RFC 850's obsolete form (`Sunday, 06-Nov-94 08:49:37 GMT`).
fn rfc850(when: SystemTime) -> String {
    let imf = httpdate::fmt_http_date(when); // "Sun, 06 Nov 1994 08:49:37 GMT"
    let day = match &imf[..3] {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    format!(
        "{day}, {}-{}-{} {} GMT",
        &imf[5..7],
        &imf[8..11],
        &imf[14..16],
        &imf[17..25]
    )
}

/// `when` in asctime form (`Sun Nov  6 08:49:37 1994`).
fn asctime(when: SystemTime) -> String {
    let imf = httpdate::fmt_http_date(when);
    let day: u32 = imf[5..7].parse().unwrap();
    format!(
        "{} {} {day:>2} {} {}",
        &imf[..3],
        &imf[8..11],
        &imf[17..25],
        &imf[12..16]
    )
}

/// An origin whose answer for each path is given by `headers(path)`, body `body of <path>`.
async fn origin_with(headers: fn(&str) -> Vec<(&'static str, String)>) -> TestOrigin {
    TestOrigin::start(Arc::new(move |req: &Recorded| {
        let path = req.path();
        let mut response = Response::new(Bytes::from(format!("body of {path}")));
        let mut status = 200;
        for (name, value) in headers(path) {
            if name == ":status" {
                status = value.parse().unwrap();
                continue;
            }
            response.headers_mut().append(name, value.parse().unwrap());
        }
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        response
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_counts_from_the_origin_date_and_the_stored_date_is_the_origins() {
    let origin = origin_with(|path| match path {
        "/thirty" => vec![("cache-control", "max-age=600".into()), ("date", ago(30))],
        // Older than its lifetime on arrival, and nothing to revalidate with.
        "/spent" => vec![("cache-control", "max-age=60".into()), ("date", ago(100))],
        _ => vec![("cache-control", "max-age=600".into())],
    })
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    let miss = get(&edge, "/thirty").await;
    assert_eq!(miss.x_cache, "TCP_MISS");
    let hit = get(&edge, "/thirty").await;
    assert_eq!(hit.x_cache, "TCP_HIT");
    let age: u64 = hit.headers["age"].to_str().unwrap().parse().unwrap();
    assert!((30..=32).contains(&age), "Age {age}: the Date said 30 s");
    assert_eq!(
        hit.headers["date"], miss.headers["date"],
        "the origin's Date"
    );
    assert_eq!(
        x_caches(&edge, "/spent", 2).await,
        ["UNCACHEABLE", "UNCACHEABLE"]
    );
    // Every hit carries Age, a fresh one too.
    get(&edge, "/plain").await;
    let hit = get(&edge, "/plain").await;
    assert_eq!(
        (hit.x_cache.as_str(), hit.headers["age"].to_str().unwrap()),
        ("TCP_HIT", "0")
    );
    assert!(hit.headers.contains_key("date"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_in_every_http_date_format_and_a_bad_expires_is_stale() {
    let origin = origin_with(|path| {
        let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
        let expires = match path {
            "/imf" => httpdate::fmt_http_date(in_an_hour),
            "/rfc850" => rfc850(in_an_hour),
            "/asctime" => asctime(in_an_hour),
            // Names in capitals and a weekday the date is not: still the date it says.
            "/loose" => {
                let imf = httpdate::fmt_http_date(in_an_hour).to_ascii_uppercase();
                let other_day = if imf.starts_with("MON") { "TUE" } else { "MON" };
                format!("{other_day}{}", &imf[3..])
            }
            "/past" => ago(60),
            "/utc" => httpdate::fmt_http_date(in_an_hour).replace("GMT", "UTC"),
            _ => "0".into(),
        };
        vec![("expires", expires)]
    })
    .await;
    // A default TTL that would store a response that says nothing: an Expires that is
    // past or invalid says "stale", so it must not apply.
    let edge =
        TestEdge::with_routes("defaults:\n  cache_default_ttl: 1h\n", &site(origin.addr())).await;
    for path in ["/imf", "/rfc850", "/asctime", "/loose"] {
        assert_eq!(
            x_caches(&edge, path, 2).await,
            ["TCP_MISS", "TCP_HIT"],
            "{path}"
        );
    }
    for path in ["/past", "/invalid", "/utc"] {
        assert_eq!(
            x_caches(&edge, path, 2).await,
            ["UNCACHEABLE", "UNCACHEABLE"],
            "{path}"
        );
        assert_eq!(origin.count_path(path), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_freshness_stores_any_status_and_the_default_ttl_only_heuristic_ones() {
    let origin = origin_with(|path| {
        let mut parts = path.trim_start_matches('/').split('/');
        let status = parts.next().unwrap().to_string();
        let mut headers = vec![(":status", status)];
        if parts.next() == Some("fresh") {
            headers.push(("cache-control", "max-age=600".into()));
        }
        headers
    })
    .await;
    let edge =
        TestEdge::with_routes("defaults:\n  cache_default_ttl: 1h\n", &site(origin.addr())).await;
    // Explicit freshness: stored whatever the status, one this cache does not know too
    // (RFC 9111 §3).
    for path in [
        "/302/fresh",
        "/403/fresh",
        "/500/fresh",
        "/200/fresh",
        "/299/fresh",
        "/599/fresh",
    ] {
        assert_eq!(
            x_caches(&edge, path, 2).await,
            ["TCP_MISS", "TCP_HIT"],
            "{path}"
        );
        assert_eq!(origin.count_path(path), 1, "{path}");
    }
    // No freshness: the default TTL for heuristically cacheable statuses only.
    for path in ["/200/silent", "/404/silent", "/405/silent"] {
        assert_eq!(
            x_caches(&edge, path, 2).await,
            ["TCP_MISS", "TCP_HIT"],
            "{path}"
        );
    }
    for path in ["/302/silent", "/403/silent", "/503/silent"] {
        assert_eq!(
            x_caches(&edge, path, 2).await,
            ["UNCACHEABLE", "UNCACHEABLE"],
            "{path}"
        );
        assert_eq!(origin.count_path(path), 2, "{path}");
    }
}

/// RFC 9111 §4.2.2: a response the origin gives no lifetime (and the node no default) is
/// fresh for a tenth of the time since its `Last-Modified`, if its status is heuristically
/// cacheable or it is marked `public`; `defaults.cache_heuristic_max: 0s` turns that off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_modified_makes_a_silent_response_fresh_for_a_while() {
    let origin = origin_with(|path| {
        let mut parts = path.trim_start_matches('/').split('/');
        let status = parts.next().unwrap().to_string();
        let mut headers = vec![(":status", status), ("last-modified", ago(100_000))];
        if parts.next() == Some("public") {
            headers.push(("cache-control", "public".into()));
        }
        headers
    })
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    for path in ["/200/a", "/404/a", "/410/a", "/599/public"] {
        assert_eq!(
            x_caches(&edge, path, 2).await,
            ["TCP_MISS", "TCP_HIT"],
            "{path}"
        );
        assert_eq!(origin.count_path(path), 1, "{path}");
    }
    // Neither heuristically cacheable nor `public`: the origin's word only.
    assert_eq!(
        x_caches(&edge, "/302/a", 2).await,
        ["UNCACHEABLE", "UNCACHEABLE"]
    );

    let off = TestEdge::with_routes(
        "defaults:\n  cache_heuristic_max: 0s\n",
        &site(origin.addr()),
    )
    .await;
    // Stored stale (it has a validator), so every use goes to the origin.
    let x_cache = x_caches(&off, "/200/b", 2).await;
    assert_ne!(x_cache[1], "TCP_HIT", "{x_cache:?}");
    assert_eq!(origin.count_path("/200/b"), 2);
}

/// RFC 9213: `CDN-Cache-Control` is the edge's policy when present; `Cache-Control` and
/// `Expires` still reach the client as the origin sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_decides_what_the_edge_stores() {
    let origin = origin_with(|path| {
        let in_an_hour = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        let (cdn, cc) = match path {
            "/private" => ("private", "max-age=600"),
            "/no-store" => ("no-store", "max-age=600"),
            "/no-cache" => ("no-cache", "max-age=600"),
            "/zero" => ("max-age=0", "max-age=600"),
            "/over-no-store" => ("max-age=600", "no-store"),
            // No Structured Field Dictionary: ignored, `Cache-Control` decides.
            "/invalid" => ("max-age=600, &&&", "no-store"),
            _ => ("max-age=600", "max-age=0"),
        };
        vec![
            ("cdn-cache-control", cdn.into()),
            ("cache-control", cc.into()),
            ("expires", in_an_hour),
        ]
    })
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    for (path, expected, asked) in [
        ("/private", ["PRIVATE_NOSTORE", "PRIVATE_NOSTORE"], 2),
        ("/no-store", ["PRIVATE_NOSTORE", "PRIVATE_NOSTORE"], 2),
        ("/no-cache", ["TCP_MISS", "TCP_MISS"], 2),
        // Stale at once and nothing to revalidate with: not worth storing.
        ("/zero", ["UNCACHEABLE", "UNCACHEABLE"], 2),
        ("/over-no-store", ["TCP_MISS", "TCP_HIT"], 1),
        ("/invalid", ["PRIVATE_NOSTORE", "PRIVATE_NOSTORE"], 2),
        ("/over-max-age-0", ["TCP_MISS", "TCP_HIT"], 1),
    ] {
        assert_eq!(x_caches(&edge, path, 2).await, expected, "{path}");
        assert_eq!(origin.count_path(path), asked, "{path}");
    }
    let hit = get(&edge, "/over-no-store").await;
    assert_eq!(hit.headers["cache-control"], "no-store");
    assert_eq!(hit.headers["cdn-cache-control"], "max-age=600");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_updates_the_stored_headers_and_the_client_sees_them() {
    let origin = GatedOrigin::start(Arc::new(|n, request| {
        if n == 1 {
            return Answer {
                status: 200,
                headers: vec![
                    ("cache-control", "max-age=0".into()),
                    ("etag", "\"v1\"".into()),
                    ("x-version", "1".into()),
                    ("x-kept", "yes".into()),
                ],
                body: Body::full("the page"),
            };
        }
        assert_eq!(
            request["if-none-match"], "\"v1\"",
            "a conditional revalidation"
        );
        Answer {
            status: 304,
            headers: vec![
                ("cache-control", "max-age=600".into()),
                ("etag", "\"v1\"".into()),
                ("x-version", "2".into()),
            ],
            body: Body::full(""),
        }
    }))
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr)).await;
    assert_eq!(get(&edge, "/p").await.x_cache, "TCP_MISS");
    for expected in ["TCP_REVALIDATED", "TCP_HIT"] {
        let answer = get(&edge, "/p").await;
        assert_eq!(answer.x_cache, expected);
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "the page");
        assert_eq!(answer.headers["x-version"], "2", "{expected}");
        assert_eq!(answer.headers["x-kept"], "yes", "{expected}");
    }
    assert_eq!(origin.arrived(), 2, "the 304's max-age=600 made it fresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_the_url_and_same_origin_locations() {
    let origin = TestOrigin::start(Arc::new(|req: &Recorded| {
        let mut response = Response::new(Bytes::from(format!("{} {}", req.method, req.uri)));
        let headers = response.headers_mut();
        if req.method == "GET" {
            headers.insert("cache-control", "max-age=600".parse().unwrap());
        } else if req.path() == "/fails" {
            *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        } else {
            headers.insert("location", "/made?id=1".parse().unwrap());
            headers.insert(
                "content-location",
                "http://elsewhere.example/other".parse().unwrap(),
            );
        }
        response
    }))
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    let paths = ["/list", "/made?id=1", "/other", "/fails", "/gone"];
    for path in paths {
        assert_eq!(get(&edge, path).await.x_cache, "TCP_MISS", "{path}");
    }
    assert_eq!(fetch(&edge, "POST", "/list", &[]).await.status, 200);
    // An error does not invalidate.
    assert_eq!(fetch(&edge, "PUT", "/fails", &[]).await.status, 500);
    assert_eq!(fetch(&edge, "DELETE", "/gone", &[]).await.status, 200);
    for (path, expected) in [
        ("/list", "TCP_MISS"),
        ("/made?id=1", "TCP_MISS"),
        // Content-Location names another origin: left alone.
        ("/other", "TCP_HIT"),
        ("/fails", "TCP_HIT"),
        ("/gone", "TCP_MISS"),
    ] {
        assert_eq!(get(&edge, path).await.x_cache, expected, "{path}");
    }
    // An absolute Location on this very origin (scheme, host and port) counts too; the
    // same path on another port is another origin.
    let location = Arc::new(std::sync::Mutex::new(String::new()));
    let said = location.clone();
    let origin2 = TestOrigin::start(Arc::new(move |req: &Recorded| {
        let mut response = Response::new(Bytes::from("x"));
        let headers = response.headers_mut();
        if req.method == "GET" {
            headers.insert("cache-control", "max-age=600".parse().unwrap());
        } else {
            headers.insert("location", said.lock().unwrap().parse().unwrap());
        }
        response
    }))
    .await;
    let edge2 = TestEdge::with_routes("", &site(origin2.addr())).await;
    assert_eq!(get(&edge2, "/made?id=1").await.x_cache, "TCP_MISS");
    *location.lock().unwrap() = "http://127.0.0.1:1/made?id=1".to_string();
    fetch(&edge2, "PATCH", "/anything", &[]).await;
    assert_eq!(get(&edge2, "/made?id=1").await.x_cache, "TCP_HIT");
    *location.lock().unwrap() = format!("http://{}/made?id=1", edge2.addr);
    fetch(&edge2, "PATCH", "/anything", &[]).await;
    assert_eq!(get(&edge2, "/made?id=1").await.x_cache, "TCP_MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qualified_no_cache_and_private_drop_fields_from_the_stored_copy_only() {
    let origin = origin_with(|_| {
        vec![
            (
                "cache-control",
                "max-age=600, no-cache=\"x-secret\", private=\"set-cookie\"".into(),
            ),
            ("x-secret", "s3cr3t".into()),
            ("set-cookie", "session=alice".into()),
            ("x-public", "yes".into()),
        ]
    })
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    let miss = get(&edge, "/q").await;
    assert_eq!(miss.x_cache, "TCP_MISS");
    assert_eq!(
        miss.headers["x-secret"], "s3cr3t",
        "the miss reaches its client whole"
    );
    assert_eq!(miss.headers["set-cookie"], "session=alice");
    let hit = get(&edge, "/q").await;
    assert_eq!(hit.x_cache, "TCP_HIT");
    assert!(!hit.headers.contains_key("x-secret"));
    assert!(!hit.headers.contains_key("set-cookie"));
    assert_eq!(hit.headers["x-public"], "yes");
    assert_eq!(origin.count(), 1);
}

/// An origin that writes `response` (raw bytes) to every request, keeping connections open.
async fn raw_origin(response: &'static [u8]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                while common::read_request_head(&mut stream).await.is_some() {
                    counter.fetch_add(1, Ordering::SeqCst);
                    if stream.write_all(response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// RFC 9110 §6.6.1: the origin's `Date` reaches the client as the origin wrote it: on a
/// miss, on hits (the origin keeps its names' case, so a plain hit's head is written from
/// the stored text; a range takes Pingora's way) and on a route that does not
/// cache. Only a response without one gets the edge's (`age_counts_from_...` above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_date_is_kept_on_misses_hits_and_pass_through() {
    let date = ago(30);
    let response = format!(
        "HTTP/1.1 200 OK\r\nDate: {date}\r\nCache-Control: max-age=600\r\nContent-Length: 2\r\n\r\nok"
    );
    let (addr, _) = raw_origin(Box::leak(response.into_bytes().into_boxed_slice())).await;
    let routes = format!(
        "routes:\n  - name: pass\n    patterns: [\"/pass/*\"]\n    origin_group: web\n    cache: {{ enabled: false }}\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\norigin_groups:\n{}",
        group_yaml("web", addr)
    );
    let edge = TestEdge::with_routes("", &routes).await;
    let line = format!("Date: {date}\r\n");
    for (path, x_cache) in [
        ("/thing", "TCP_MISS"),
        ("/thing", "TCP_HIT"),
        ("/thing", "TCP_HIT"),
        ("/pass/thing", "CONFIG_NOCACHE"),
    ] {
        let answer = raw_exchange(&edge, path).await;
        assert!(
            answer.contains(&format!("x-cache: {x_cache}\r\n")),
            "{path}: {answer}"
        );
        assert_eq!(answer.matches("Date: ").count(), 1, "{path}: {answer}");
        assert!(
            answer.contains(&line),
            "{path}: the origin's Date\n{answer}"
        );
    }
    // A range: a hit written Pingora's way.
    let answer = raw_exchange_with(&edge, "/thing", "Range: bytes=0-0\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 206 "), "{answer}");
    assert!(answer.contains("x-cache: TCP_HIT\r\n"), "{answer}");
    assert!(answer.contains(&line), "the origin's Date\n{answer}");
}

/// RFC 9110 §8.6: a `204` carries no `Content-Length`. An origin's that does (with the
/// bytes it claims after it) reached the client as it was, framing the next response on
/// the connection as its body; stored, every hit ended in an error and a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204s_content_length_goes_no_further() {
    let (addr, _) =
        raw_origin(b"HTTP/1.1 204 No Content\r\ncache-control: max-age=600\r\ncontent-length: 8\r\n\r\n12345678")
            .await;
    let edge = TestEdge::with_routes("", &site(addr)).await;
    let ask = |close: &str| format!("GET /empty HTTP/1.1\r\nHost: t.example\r\n{close}\r\n");
    let requests = [ask(""), ask(""), ask("Connection: close\r\n")].concat();
    let answer = common::raw_exchange(edge.addr, requests.as_bytes()).await;
    let answer = answer.to_ascii_lowercase();
    assert_eq!(
        answer.matches("http/1.1 204 no content\r\n").count(),
        3,
        "{answer}"
    );
    assert_eq!(answer.matches("x-cache: tcp_hit").count(), 2, "{answer}");
    assert!(!answer.contains("content-length"), "{answer}");
    assert!(!answer.contains("12345678"), "{answer}");
}

/// RFC 9110 §2.5: a proxy sends its own HTTP version, on a miss, a hit and pass-through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_answers_in_its_own_http_version() {
    let (addr, _) = raw_origin(
        b"HTTP/1.0 200 OK\r\ncache-control: max-age=600\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok",
    )
    .await;
    let pass = "  - name: pass\n    patterns: [\"/pass/*\"]\n    origin_group: web\n    cache: { enabled: false }\n";
    let rules = site(addr).replacen("routes:\n", &format!("routes:\n{pass}"), 1);
    let edge = TestEdge::with_routes("", &rules).await;
    for (path, x_cache) in [
        ("/old", "TCP_MISS"),
        ("/old", "TCP_HIT"),
        ("/pass/old", "CONFIG_NOCACHE"),
    ] {
        let answer = raw_exchange(&edge, path).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains(&format!("x-cache: {x_cache}")), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
    }
}

/// A request over a raw connection to the edge; everything it answers until it closes.
async fn raw_exchange(edge: &TestEdge, path: &str) -> String {
    raw_exchange_with(edge, path, "").await
}

/// [`raw_exchange`] with `extra` field lines in the request.
async fn raw_exchange_with(edge: &TestEdge, path: &str, extra: &str) -> String {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: t.example\r\n{extra}Connection: close\r\n\r\n");
    common::raw_exchange(edge.addr, request.as_bytes()).await
}

/// RFC 9110 §15.2: a proxy forwards 1xx interim responses. The origin writes its `103` and
/// its cacheable `200` in one segment, so the edge reads both at once: the case that lost
/// the `103` on a cacheable miss (the batch's switch to the cache fill dropped it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_reach_the_client_on_every_cacheable_miss() {
    let (addr, seen) = raw_origin(
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ncontent-length: 4\r\n\r\nbody",
    )
    .await;
    let edge = TestEdge::with_routes("", &site(addr)).await;
    let mut missing = Vec::new();
    // 60 distinct misses, 10 at a time.
    for batch in 0..6 {
        let paths: Vec<String> = (0..10).map(|i| format!("/hints/{batch}/{i}")).collect();
        let answers =
            futures_util::future::join_all(paths.iter().map(|path| raw_exchange(&edge, path)))
                .await;
        for (i, answer) in answers.into_iter().enumerate() {
            let hints = answer.find("HTTP/1.1 103");
            let last = answer.find("HTTP/1.1 200");
            let ok = hints == Some(0)
                && last.is_some_and(|l| l > 0)
                && answer.contains("link: </style.css>; rel=preload")
                && answer.to_ascii_lowercase().contains("x-cache: tcp_miss")
                && answer.ends_with("body");
            if !ok {
                missing.push(format!("/hints/{batch}/{i}:\n{answer}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of 60 misses lost the 103 (or more):\n{}",
        missing.len(),
        missing.join("\n")
    );
    assert_eq!(seen.load(Ordering::SeqCst), 60);
    // A hit is the stored 200 alone: the 103 was never stored.
    let hit = raw_exchange(&edge, "/hints/0/0").await;
    assert!(hit.starts_with("HTTP/1.1 200"), "{hit}");
    assert!(
        hit.to_ascii_lowercase().contains("x-cache: tcp_hit"),
        "{hit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_are_neither_forwarded_nor_stored() {
    let (addr, seen) = raw_origin(
        b"HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nte: trailers\r\nupgrade: h2c\r\nx-end: kept\r\ncontent-length: 4\r\n\r\nbody",
    )
    .await;
    let edge = TestEdge::with_routes("", &site(addr)).await;
    for expected in ["TCP_MISS", "TCP_HIT"] {
        let answer = get(&edge, "/h").await;
        assert_eq!(answer.x_cache, expected);
        assert_eq!(answer.body, "body");
        assert_eq!(answer.headers["x-end"], "kept");
        for name in ["x-hop", "keep-alive", "proxy-connection", "te", "upgrade"] {
            assert!(
                !answer.headers.contains_key(name),
                "{expected}: {name} came through"
            );
        }
        let connection = answer
            .headers
            .get("connection")
            .map_or("", |v| v.to_str().unwrap());
        assert!(!connection.contains("x-hop"), "{expected}: {connection}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // Not stored, so relayed from the origin's own header: stripped there too.
    let (addr, _) = raw_origin(
        b"HTTP/1.1 200 OK\r\ncache-control: no-store\r\nconnection: x-hop\r\nx-hop: 1\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nupgrade: h2c\r\ncontent-length: 4\r\n\r\nbody",
    )
    .await;
    let edge = TestEdge::with_routes("", &site(addr)).await;
    let answer = get(&edge, "/n").await;
    assert_eq!(
        (answer.x_cache.as_str(), &answer.body[..]),
        ("PRIVATE_NOSTORE", &b"body"[..])
    );
    for name in ["x-hop", "keep-alive", "proxy-connection", "upgrade"] {
        assert!(
            !answer.headers.contains_key(name),
            "relayed: {name} came through"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_over_several_lines_normalised_values_and_a_cap_on_variants() {
    let origin = TestOrigin::start(Arc::new(|req: &Recorded| {
        let value = |name: &str| {
            req.headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut response = Response::new(Bytes::from(format!(
            "{}|{}",
            value("accept-encoding"),
            value("x-tenant")
        )));
        let headers = response.headers_mut();
        headers.insert("cache-control", "max-age=600".parse().unwrap());
        headers.append("vary", "Accept-Encoding".parse().unwrap());
        headers.append("vary", "x-tenant".parse().unwrap());
        response
    }))
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    let ask = |encoding: &'static str, tenant: &'static str| {
        let edge = &edge;
        async move {
            fetch(
                edge,
                "GET",
                "/v",
                &[("accept-encoding", encoding), ("x-tenant", tenant)],
            )
            .await
        }
    };
    assert_eq!(ask("gzip, br", "a").await.x_cache, "TCP_MISS");
    // Case and whitespace of Accept-Encoding's tokens do not make a new variant...
    let same = ask("GZIP ,br", "a").await;
    assert_eq!(
        (same.x_cache.as_str(), &same.body[..]),
        ("TCP_HIT", &b"gzip, br|a"[..])
    );
    // ...but the second Vary line's field does.
    assert_eq!(ask("gzip, br", "b").await.x_cache, "TCP_MISS");
    assert_eq!(ask("gzip,br", "b").await.x_cache, "TCP_HIT");
    assert_eq!(origin.count(), 2);
    // Whitespace around a comma selects nothing new, in any field.
    assert_eq!(ask("gzip", "c,d").await.x_cache, "TCP_MISS");
    assert_eq!(ask("gzip", " c , d ").await.x_cache, "TCP_HIT");
    assert_eq!(origin.count(), 3);

    // Junk values: past the cap, a new variant takes the slot of one not asked for again;
    // the variants clients do ask for again (b and "c,d", each hit above) keep theirs.
    let tenants: Vec<&'static str> = (0..50)
        .map(|i| &*Box::leak(format!("junk-{i}").into_boxed_str()))
        .collect();
    for _ in 0..2 {
        for tenant in &tenants {
            let answer = ask("gzip", tenant).await;
            assert_eq!(answer.status, 200);
            assert_eq!(answer.body, format!("gzip|{tenant}"));
        }
    }
    let objects = edge.status().await["cache"]["objects"].as_u64().unwrap();
    assert!(objects <= 33, "stored variants are capped: {objects}");
    for (encoding, tenant) in [("gzip, br", "a"), ("gzip,br", "b"), ("gzip", "c,d")] {
        assert_eq!(
            ask(encoding, tenant).await.x_cache,
            "TCP_HIT",
            "variant {tenant} stays"
        );
    }
    // And a real variant that comes after the junk is stored (it went to the origin every
    // time while junk held the slots).
    assert_eq!(ask("gzip", "late").await.x_cache, "TCP_MISS");
    assert_eq!(ask("gzip", "late").await.x_cache, "TCP_HIT");
}

/// A variant that arrives older than the URL's first stored response (an upstream cache's
/// `Age`, as from a shield, or an origin's `Date` a second behind) is still served from the
/// cache: pingora's check that hides variants older than the primary one (for storages that
/// purge only the primary) must not apply to a store that purges every variant itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_that_arrives_older_than_the_first_one_is_served_from_the_cache() {
    let origin = TestOrigin::start(Arc::new(|req: &Recorded| {
        let tenant = req.headers["x-tenant"].to_str().unwrap().to_string();
        let mut response = Response::new(Bytes::from(format!("for {tenant}")));
        let headers = response.headers_mut();
        headers.insert("cache-control", "max-age=600".parse().unwrap());
        headers.insert("vary", "x-tenant".parse().unwrap());
        if tenant == "old" {
            headers.insert("age", "100".parse().unwrap());
        }
        response
    }))
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    let ask = |tenant: &'static str| {
        let edge = &edge;
        async move { fetch(edge, "GET", "/v", &[("x-tenant", tenant)]).await }
    };
    assert_eq!(ask("first").await.x_cache, "TCP_MISS");
    assert_eq!(ask("old").await.x_cache, "TCP_MISS");
    for _ in 0..3 {
        let again = ask("old").await;
        assert_eq!(
            (again.x_cache.as_str(), &again.body[..]),
            ("TCP_HIT", &b"for old"[..])
        );
        assert!(
            again.headers["age"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 100
        );
    }
    assert_eq!(ask("first").await.x_cache, "TCP_HIT");
    assert_eq!(origin.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_stalled_mid_body_does_not_hide_the_complete_stale_object() {
    let origin = GatedOrigin::start(Arc::new(|n, _| match n {
        1 => Answer {
            status: 200,
            headers: vec![(
                "cache-control",
                "max-age=0, stale-while-revalidate=60".into(),
            )],
            body: Body::full("version 1"),
        },
        _ => Answer {
            status: 200,
            headers: vec![("cache-control", "max-age=600".into())],
            body: Body {
                chunks: vec![Bytes::from("version"), Bytes::from(" 2")],
                pause_after: Some(1),
            },
        },
    }))
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr)).await;
    assert_eq!(get(&edge, "/swr").await.x_cache, "TCP_MISS");
    // Stale within its window: served, and one refresh starts; its body stalls halfway.
    let stale = get(&edge, "/swr").await;
    assert_eq!(
        (stale.x_cache.as_str(), &stale.body[..]),
        ("TCP_EXPIRED_HIT", &b"version 1"[..])
    );
    wait_until("the refresh reaches the origin", || origin.arrived() == 2).await;
    // Whenever they come during the stalled refresh, clients get the whole stale object at
    // once (not the refresh's half body, nor a wait on it).
    for _ in 0..10 {
        let answer = get(&edge, "/swr").await;
        assert_eq!(
            (answer.x_cache.as_str(), &answer.body[..]),
            ("TCP_EXPIRED_HIT", &b"version 1"[..])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    origin.resume.add_permits(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get(&edge, "/swr").await;
        if answer.x_cache == "TCP_HIT" {
            assert_eq!(answer.body, "version 2");
            break;
        }
        assert!(Instant::now() < deadline, "the refresh never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.arrived(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncacheable_refresh_keeps_the_stale_copy_for_stale_if_error() {
    let origin = GatedOrigin::start(Arc::new(|n, _| match n {
        1 => Answer {
            status: 200,
            headers: vec![("cache-control", "max-age=0, stale-if-error=600".into())],
            body: Body::full("version 1"),
        },
        // A refresh the cache may not store (no freshness, no validator)...
        2 => Answer {
            status: 200,
            headers: vec![],
            body: Body::full("version 2"),
        },
        // ...then the origin fails.
        _ => Answer {
            status: 503,
            headers: vec![],
            body: Body::full("down"),
        },
    }))
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr)).await;
    assert_eq!(get(&edge, "/r").await.x_cache, "TCP_MISS");
    let refreshed = get(&edge, "/r").await;
    assert_eq!(
        (refreshed.x_cache.as_str(), &refreshed.body[..]),
        ("UNCACHEABLE", &b"version 2"[..])
    );
    let stale = get(&edge, "/r").await;
    assert_eq!(
        (stale.status, stale.x_cache.as_str(), &stale.body[..]),
        (200, "TCP_EXPIRED_HIT", &b"version 1"[..])
    );
    assert_eq!(origin.arrived(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_error_or_partial_answer_on_a_miss_keeps_collapsing() {
    for first in [503, 206] {
        let origin = GatedOrigin::start(Arc::new(move |n, _| Answer {
            status: if n == 1 { first } else { 200 },
            headers: vec![(
                "cache-control",
                if n == 1 { "no-cache" } else { "max-age=600" }.into(),
            )],
            body: Body::full(format!("answer {n}")),
        }))
        .await;
        let edge = TestEdge::with_routes("", &site(origin.addr)).await;
        assert_eq!(get(&edge, "/c").await.status, first);
        // The origin recovers; twenty clients at once still make one request.
        origin.close_gate();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let url = edge.url("/c");
            tasks.push(tokio::spawn(async move {
                client()
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            }));
        }
        wait_until("the recovery request reaches the origin", || {
            origin.arrived() >= 2
        })
        .await;
        // Every client is at the edge (queued on the cache lock, or bypassing it to the
        // held origin) before the origin answers.
        let metrics = edge.admin_url("/metrics");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = client()
                .get(&metrics)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let in_flight: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("portico_requests_in_flight "))
                .map_or(0.0, |v| v.trim().parse().unwrap());
            if in_flight >= 20.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "clients never all arrived: {in_flight}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        origin.open_gate();
        for task in tasks {
            assert_eq!(task.await.unwrap(), "answer 2");
        }
        assert_eq!(
            origin.arrived(),
            2,
            "after a {first}, collapsing still holds"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_are_answered_304_from_the_cache() {
    const MODIFIED: &str = "Wed, 21 Oct 2026 07:28:00 GMT";
    let origin = origin_with(|_| {
        vec![
            ("cache-control", "max-age=600".into()),
            ("etag", "W/\"v1\"".into()),
            ("last-modified", MODIFIED.into()),
        ]
    })
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    assert_eq!(get(&edge, "/c").await.x_cache, "TCP_MISS");
    for (header, value, status) in [
        ("if-none-match", "W/\"v1\"", 304),
        ("if-none-match", "\"v1\"", 304),
        ("if-none-match", "\"x\", W/\"v1\"", 304),
        ("if-none-match", "*", 304),
        ("if-none-match", "\"v2\"", 200),
        ("if-modified-since", MODIFIED, 304),
        ("if-modified-since", "Thu, 22 Oct 2026 07:28:00 GMT", 304),
        ("if-modified-since", "Tue, 20 Oct 2026 07:28:00 GMT", 200),
        ("if-modified-since", "yesterday", 200),
    ] {
        let answer = fetch(&edge, "GET", "/c", &[(header, value)]).await;
        assert_eq!(
            (answer.status, answer.x_cache.as_str()),
            (status, "TCP_HIT"),
            "{header}: {value}"
        );
        if status == 304 {
            assert!(answer.body.is_empty());
            assert_eq!(answer.headers["etag"], "W/\"v1\"");
        } else {
            assert_eq!(answer.body, "body of /c");
        }
    }
    // If-None-Match decides alone: a mismatch is a 200 even with a matching date.
    let both = fetch(
        &edge,
        "GET",
        "/c",
        &[("if-none-match", "\"v2\""), ("if-modified-since", MODIFIED)],
    )
    .await;
    assert_eq!(both.status, 200);
    assert_eq!(origin.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_is_answered_from_the_store_or_with_a_504() {
    let origin = origin_with(|path| match path {
        "/stale" => vec![
            ("cache-control", "max-age=0".into()),
            ("etag", "\"v1\"".into()),
        ],
        "/swr" => vec![(
            "cache-control",
            "max-age=0, stale-while-revalidate=60".into(),
        )],
        _ => vec![("cache-control", "max-age=600".into())],
    })
    .await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    let only_if_cached = |path: &'static str, directives: &'static str| {
        let edge = &edge;
        async move { fetch(edge, "GET", path, &[("cache-control", directives)]).await }
    };
    // Nothing stored: a 504 that says why, and the origin is not asked.
    let absent = only_if_cached("/fresh", "only-if-cached").await;
    assert_eq!((absent.status, absent.x_cache.as_str()), (504, "TCP_MISS"));
    assert_eq!(absent.headers["x-portico-error"], "only-if-cached");
    assert!(std::str::from_utf8(&absent.body)
        .unwrap()
        .contains("only-if-cached"));
    assert_eq!(origin.count(), 0);
    // Stored and fresh: served, whatever else the field says.
    assert_eq!(get(&edge, "/fresh").await.x_cache, "TCP_MISS");
    let fresh = only_if_cached("/fresh", "max-age=0, only-if-cached").await;
    assert_eq!(
        (fresh.status, fresh.x_cache.as_str(), &fresh.body[..]),
        (200, "TCP_HIT", &b"body of /fresh"[..])
    );
    // Stored but stale, with no leave to serve it so: a 504, not a revalidation.
    assert_eq!(get(&edge, "/stale").await.x_cache, "TCP_MISS");
    let stale = only_if_cached("/stale", "only-if-cached").await;
    assert_eq!(stale.status, 504);
    assert_eq!(origin.count(), 2);
    // Stale within `stale-while-revalidate`: served, and the refresh still goes upstream.
    assert_eq!(get(&edge, "/swr").await.x_cache, "TCP_MISS");
    let swr = only_if_cached("/swr", "only-if-cached").await;
    assert_eq!((swr.status, swr.x_cache.as_str()), (200, "TCP_EXPIRED_HIT"));
    wait_until("the refresh reaches the origin", || origin.count() == 4).await;
    // Other request directives stay ignored: no-cache is served from the store.
    let no_cache = only_if_cached("/fresh", "no-cache").await;
    assert_eq!(no_cache.x_cache, "TCP_HIT");
    assert_eq!(origin.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surrogate_control_aimed_at_the_edge_decides_what_it_stores() {
    let origin = origin_with(|path| match path {
        "/mine" => vec![
            ("cache-control", "no-store".into()),
            ("surrogate-control", "max-age=600;portico".into()),
        ],
        "/elsewhere" => vec![
            ("cache-control", "max-age=600".into()),
            (
                "surrogate-control",
                "no-store, max-age=600;other-cdn".into(),
            ),
        ],
        _ => vec![("cache-control", "max-age=600".into())],
    })
    .await;
    let pass = "  - name: pass\n    patterns: [\"/pass/*\"]\n    origin_group: web\n    cache: { enabled: false }\n";
    let rules = site(origin.addr()).replacen("routes:\n", &format!("routes:\n{pass}"), 1);
    let edge = TestEdge::with_routes("", &rules).await;
    // Aimed at this cache by the name it announced: stored, whatever `Cache-Control` says,
    // and passed on to the client as it came.
    let first = get(&edge, "/mine").await;
    assert_eq!(first.x_cache, "TCP_MISS");
    assert_eq!(first.headers["surrogate-control"], "max-age=600;portico");
    assert_eq!(get(&edge, "/mine").await.x_cache, "TCP_HIT");
    // `no-store` for every surrogate: not stored, though `Cache-Control` allows it.
    assert_eq!(get(&edge, "/elsewhere").await.x_cache, "PRIVATE_NOSTORE");
    assert_ne!(get(&edge, "/elsewhere").await.x_cache, "TCP_HIT");
    assert_eq!(origin.count(), 3);
    // The edge names itself to the origin on requests it may store, and only on those.
    assert_eq!(get(&edge, "/pass/x").await.x_cache, "CONFIG_NOCACHE");
    let capabilities: Vec<(String, Option<String>)> = origin
        .requests()
        .iter()
        .map(|r| {
            let capability = r.headers.get("surrogate-capability");
            (
                r.path().to_string(),
                capability.map(|v| v.to_str().unwrap().to_string()),
            )
        })
        .collect();
    let announced = Some("portico=\"Surrogate/1.0\"".to_string());
    assert_eq!(
        capabilities,
        [
            ("/mine".to_string(), announced.clone()),
            ("/elsewhere".to_string(), announced.clone()),
            ("/elsewhere".to_string(), announced),
            ("/pass/x".to_string(), None),
        ]
    );
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
