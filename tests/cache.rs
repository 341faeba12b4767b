//! The cache end to end: a real client, the edge in-process, origins that count requests.
//! Every semantic is asserted twice: by the origin's request count and by `X-Cache`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::edge::{client, group_yaml, TestEdge};
use common::origin::{Recorded, TestOrigin};
use http::Response;

/// One route `site` on `/*` to group `web`, with `cache` as its cache block (flow style).
fn site(cache: &str, origin: std::net::SocketAddr, rule_sets: &str) -> String {
    format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {cache}\n    rule_sets: [{names}]\nrule_sets:\n{sets}\norigin_groups:\n{group}",
        names = if rule_sets.is_empty() { "" } else { "tweaks" },
        sets = if rule_sets.is_empty() {
            "  []".to_string()
        } else {
            format!("  - name: tweaks\n    rules:\n{rule_sets}")
        },
        group = group_yaml("web", origin),
    )
}

const CACHE_ON: &str = "{ enabled: true }";

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
    let response = request.send().await.expect("request through the edge");
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
    fetch(edge, "GET", path, &[]).await
}

/// `X-Cache` of GET `path`, in order.
async fn statuses(edge: &TestEdge, paths: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for path in paths {
        out.push(get(edge, path).await.x_cache);
    }
    out
}

/// An origin answering each path with the headers its first known segment names.
async fn scripted_origin() -> TestOrigin {
    TestOrigin::start(Arc::new(|req: &Recorded| {
        let path = req.path();
        let mut response = Response::new(Bytes::from(format!("body of {path}")));
        let kind = path
            .split('/')
            .find(|s| !matches!(*s, "" | "m"))
            .unwrap_or_default();
        let cache_control = match kind {
            "fresh" | "q" => "max-age=600",
            "smaxage" => "max-age=600, s-maxage=0",
            "nostore" => "no-store",
            "private" => "private, max-age=600",
            "public" => "public, max-age=600",
            "cookie" => "max-age=600",
            "nocache" => "no-cache",
            _ => "",
        };
        let headers = response.headers_mut();
        if !cache_control.is_empty() {
            headers.insert("cache-control", cache_control.parse().unwrap());
        }
        if path.starts_with("/cookie") {
            headers.insert("set-cookie", "session=1".parse().unwrap());
        }
        if path.starts_with("/expires") {
            let when = std::time::SystemTime::now() + Duration::from_secs(3600);
            headers.insert("expires", httpdate::fmt_http_date(when).parse().unwrap());
        }
        if path.starts_with("/expired") {
            headers.insert("expires", "Thu, 01 Jan 1970 00:00:00 GMT".parse().unwrap());
        }
        response
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_for_get_and_head_and_never_for_post() {
    let origin = scripted_origin().await;
    let edge = TestEdge::with_routes("", &site(CACHE_ON, origin.addr(), "")).await;

    let first = get(&edge, "/fresh/a.css").await;
    assert_eq!((first.status, first.x_cache.as_str()), (200, "TCP_MISS"));
    let second = get(&edge, "/fresh/a.css").await;
    assert_eq!(second.x_cache, "TCP_HIT");
    assert_eq!(second.body, first.body);
    assert!(second.headers.contains_key("age"), "a hit carries Age");
    let head = fetch(&edge, "HEAD", "/fresh/a.css", &[]).await;
    assert_eq!(head.x_cache, "TCP_HIT");
    assert!(head.body.is_empty());
    assert_eq!(origin.count_path("/fresh/a.css"), 1);
    // A range of a stored object comes from the cache.
    let range = fetch(&edge, "GET", "/fresh/a.css", &[("range", "bytes=5-6")]).await;
    assert_eq!((range.status, range.x_cache.as_str()), (206, "TCP_HIT"));
    assert_eq!(range.body, "of");
    assert_eq!(range.headers["content-range"], "bytes 5-6/20");
    // A range on a miss goes to the origin (`tests/cache_ranges.rs`); this one ignores it,
    // so its whole `200` is stored and the client gets its range cut from it.
    let cut = fetch(&edge, "GET", "/fresh/c", &[("range", "bytes=0-3")]).await;
    assert_eq!((cut.status, cut.x_cache.as_str()), (206, "TCP_MISS"));
    assert_eq!(cut.body, "body");
    let whole = get(&edge, "/fresh/c").await;
    assert_eq!(
        (whole.x_cache.as_str(), &whole.body[..]),
        ("TCP_HIT", &b"body of /fresh/c"[..])
    );
    assert_eq!(origin.count_path("/fresh/c"), 1);

    // A HEAD miss fills the cache for the GET that follows.
    assert_eq!(
        fetch(&edge, "HEAD", "/fresh/b", &[]).await.x_cache,
        "TCP_MISS"
    );
    assert_eq!(get(&edge, "/fresh/b").await.body, "body of /fresh/b");
    assert_eq!(origin.count_path("/fresh/b"), 1);

    for _ in 0..2 {
        assert_eq!(
            fetch(&edge, "POST", "/fresh/a.css", &[]).await.x_cache,
            "UNCACHEABLE"
        );
    }
    assert_eq!(origin.count_path("/fresh/a.css"), 3);
    // Log lines come in the order requests finish, not the order they were sent.
    let lines = edge.wait_for_log(|l| l.len() >= 8).await;
    let mut logged: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["path"] == "/fresh/a.css" && l["method"] != "POST")
        .map(|l| (l["method"].as_str().unwrap(), l["cache"].as_str().unwrap()))
        .collect();
    logged.sort();
    assert_eq!(
        logged,
        [
            ("GET", "TCP_HIT"),
            ("GET", "TCP_HIT"),
            ("GET", "TCP_MISS"),
            ("HEAD", "TCP_HIT")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_comes_from_s_maxage_then_max_age_then_expires() {
    let origin = scripted_origin().await;
    let edge = TestEdge::with_routes("", &site(CACHE_ON, origin.addr(), "")).await;
    for (path, expected) in [
        ("/fresh/x", ["TCP_MISS", "TCP_HIT"]),
        // s-maxage=0 beats max-age=600: stale at once, and nothing to revalidate with.
        ("/smaxage/x", ["UNCACHEABLE", "UNCACHEABLE"]),
        ("/expires/x", ["TCP_MISS", "TCP_HIT"]),
        ("/expired/x", ["UNCACHEABLE", "UNCACHEABLE"]),
        // Nothing said, and the default TTL is 0s: not stored.
        ("/silent/x", ["UNCACHEABLE", "UNCACHEABLE"]),
    ] {
        assert_eq!(statuses(&edge, &[path, path]).await, expected, "{path}");
        let asked = if expected[1] == "TCP_HIT" { 1 } else { 2 };
        assert_eq!(origin.count_path(path), asked, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_private_and_set_cookie_are_never_stored_even_when_a_rule_overrides() {
    let origin = scripted_origin().await;
    let override_rule = "      - name: keep-everything\n        conditions: []\n        actions:\n          - { type: cache_expiration, behavior: override_always, duration: 1h }\n";
    let edge = TestEdge::with_routes("", &site(CACHE_ON, origin.addr(), override_rule)).await;
    for (path, expected) in [
        ("/nostore/x", "PRIVATE_NOSTORE"),
        ("/private/x", "PRIVATE_NOSTORE"),
        ("/cookie/x", "UNCACHEABLE"),
    ] {
        assert_eq!(statuses(&edge, &[path, path]).await, [expected, expected]);
        assert_eq!(origin.count_path(path), 2, "{path}");
    }
    // The override does store what the origin said nothing about, and no-cache.
    for path in ["/silent/y", "/nocache/y"] {
        assert_eq!(
            statuses(&edge, &[path, path]).await,
            ["TCP_MISS", "TCP_HIT"]
        );
        assert_eq!(origin.count_path(path), 1, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_behaviours_and_the_default_ttl() {
    let origin = scripted_origin().await;
    let routes = format!(
        "routes:\n  - name: missing\n    patterns: [\"/m/*\"]\n    origin_group: web\n    cache: {{ enabled: true, behavior: override_if_origin_missing, duration: 1h }}\n  - name: honor\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\norigin_groups:\n{}",
        group_yaml("web", origin.addr())
    );
    let edge = TestEdge::with_routes("defaults:\n  cache_default_ttl: 1h\n", &routes).await;
    // The origin says nothing: the route's duration, or the node's default TTL.
    assert_eq!(
        statuses(&edge, &["/m/silent", "/m/silent"]).await,
        ["TCP_MISS", "TCP_HIT"]
    );
    assert_eq!(
        statuses(&edge, &["/silent", "/silent"]).await,
        ["TCP_MISS", "TCP_HIT"]
    );
    // The origin says no-cache: override_if_origin_missing keeps it, so every use goes back.
    assert_eq!(origin.count_path("/m/silent"), 1);
    assert_eq!(origin.count_path("/silent"), 1);
    let _ = statuses(&edge, &["/m/nocache", "/m/nocache"]).await;
    assert_eq!(origin.count_path("/m/nocache"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_last_modified_and_no_cache_revalidate_with_a_304() {
    let origin = TestOrigin::start(Arc::new(|req: &Recorded| {
        let etag = "\"v1\"";
        let modified = "Wed, 21 Oct 2026 07:28:00 GMT";
        let matches = req.headers.get("if-none-match").is_some_and(|v| v == etag)
            || req
                .headers
                .get("if-modified-since")
                .is_some_and(|v| v == modified);
        let mut response = if matches {
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = http::StatusCode::NOT_MODIFIED;
            r
        } else {
            Response::new(Bytes::from("the page"))
        };
        let headers = response.headers_mut();
        let cc = if req.path() == "/no-cache" {
            "no-cache, max-age=600"
        } else {
            "max-age=0"
        };
        headers.insert("cache-control", cc.parse().unwrap());
        if req.path() != "/modified" {
            headers.insert("etag", etag.parse().unwrap());
        } else {
            headers.insert("last-modified", modified.parse().unwrap());
        }
        response
    }))
    .await;
    let edge = TestEdge::with_routes("", &site(CACHE_ON, origin.addr(), "")).await;
    for path in ["/etag", "/modified", "/no-cache"] {
        assert_eq!(get(&edge, path).await.x_cache, "TCP_MISS");
        let again = get(&edge, path).await;
        assert_eq!(again.x_cache, "TCP_REVALIDATED", "{path}");
        assert_eq!(again.body, "the page");
        let seen = origin.requests();
        let last = seen.iter().rev().find(|r| r.path() == path).unwrap();
        let conditional = if path == "/modified" {
            "if-modified-since"
        } else {
            "if-none-match"
        };
        assert!(
            last.headers.contains_key(conditional),
            "{path}: {:?}",
            last.headers
        );
        assert_eq!(origin.count_path(path), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_one_variant_per_header_value() {
    let origin = TestOrigin::start(Arc::new(|req: &Recorded| {
        let language = req
            .headers
            .get("accept-language")
            .map_or("none".to_string(), |v| v.to_str().unwrap().to_string());
        let mut response = Response::new(Bytes::from(format!("in {language}")));
        response
            .headers_mut()
            .insert("cache-control", "max-age=600".parse().unwrap());
        response
            .headers_mut()
            .insert("vary", "Accept-Language".parse().unwrap());
        response
    }))
    .await;
    let edge = TestEdge::with_routes("", &site(CACHE_ON, origin.addr(), "")).await;
    let mut seen = Vec::new();
    for language in ["en", "en", "fr", "fr", "en"] {
        let answer = fetch(&edge, "GET", "/page", &[("accept-language", language)]).await;
        assert_eq!(answer.body, format!("in {language}"));
        seen.push(answer.x_cache);
    }
    assert_eq!(
        seen,
        ["TCP_MISS", "TCP_HIT", "TCP_MISS", "TCP_HIT", "TCP_HIT"]
    );
    assert_eq!(origin.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_the_host_without_port_or_case_plus_the_path() {
    let origin = scripted_origin().await;
    let edge = TestEdge::with_routes("", &site(CACHE_ON, origin.addr(), "")).await;
    let key = |host: &'static str, path: &'static str| {
        let edge = &edge;
        async move { fetch(edge, "GET", path, &[("host", host)]).await.x_cache }
    };
    assert_eq!(key("www.example.com", "/fresh/k").await, "TCP_MISS");
    assert_eq!(key("WWW.Example.COM:8080", "/fresh/k").await, "TCP_HIT");
    assert_eq!(key("www.example.com:80", "/fresh/k").await, "TCP_HIT");
    assert_eq!(key("other.example.com", "/fresh/k").await, "TCP_MISS");
    // Paths are case-sensitive, as URLs are.
    assert_eq!(key("www.example.com", "/fresh/K").await, "TCP_MISS");
    assert_eq!(origin.count_path("/fresh/k"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_served_from_cache_only_when_the_response_allows_it() {
    let origin = scripted_origin().await;
    let edge = TestEdge::with_routes("", &site(CACHE_ON, origin.addr(), "")).await;
    let auth = [("authorization", "Bearer secret")];
    // Not stored from an authorized request without public / s-maxage / must-revalidate.
    assert_eq!(
        fetch(&edge, "GET", "/fresh/me", &auth).await.x_cache,
        "UNCACHEABLE"
    );
    assert_eq!(get(&edge, "/fresh/me").await.x_cache, "TCP_MISS");
    // Stored from an anonymous request, but not served to an authorized one.
    assert_eq!(
        fetch(&edge, "GET", "/fresh/me", &auth).await.x_cache,
        "UNCACHEABLE"
    );
    assert_eq!(get(&edge, "/fresh/me").await.x_cache, "TCP_HIT");
    assert_eq!(origin.count_path("/fresh/me"), 3);
    // `public` allows both.
    assert_eq!(
        fetch(&edge, "GET", "/public/p", &auth).await.x_cache,
        "TCP_MISS"
    );
    assert_eq!(
        fetch(&edge, "GET", "/public/p", &auth).await.x_cache,
        "TCP_HIT"
    );
    assert_eq!(get(&edge, "/public/p").await.x_cache, "TCP_HIT");
    assert_eq!(origin.count_path("/public/p"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_string_modes_shape_the_key() {
    let origin = scripted_origin().await;
    let paths = [
        "/q?id=1",
        "/q?id=1&utm=a",
        "/q?id=2&utm=a",
        "/q?id=2&utm=b",
        "/q?id=1",
    ];
    let (miss, hit) = ("TCP_MISS", "TCP_HIT");
    for (mode, pattern) in [
        ("ignore", [miss, hit, hit, hit, hit]),
        ("use_all", [miss, miss, miss, miss, hit]),
        ("include, query_params: [id]", [miss, hit, miss, hit, hit]),
        ("exclude, query_params: [utm]", [miss, hit, miss, hit, hit]),
    ] {
        let cache = format!("{{ enabled: true, query_string: {mode} }}");
        let edge = TestEdge::with_routes("", &site(&cache, origin.addr(), "")).await;
        assert_eq!(statuses(&edge, &paths).await, pattern, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_misses_send_one_request_upstream() {
    use common::gated::{Answer, Body, GatedOrigin};
    let origin = GatedOrigin::start(Arc::new(|_, _| Answer {
        status: 200,
        headers: vec![("cache-control", "max-age=600".into())],
        body: Body::full("shared"),
    }))
    .await;
    let edge = TestEdge::with_routes("", &site(CACHE_ON, origin.addr, "")).await;
    // Hold the origin's answer until every request is in flight at the edge.
    origin.close_gate();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let url = edge.url("/same");
        tasks.push(tokio::spawn(async move {
            let response = client().get(url).send().await.unwrap();
            let x_cache = response.headers()["x-cache"].to_str().unwrap().to_string();
            (x_cache, response.bytes().await.unwrap())
        }));
    }
    wait_until("the first request reaches the origin", || {
        origin.arrived() >= 1
    })
    .await;
    origin.open_gate();
    let mut misses = 0;
    for task in tasks {
        let (x_cache, body) = task.await.unwrap();
        assert_eq!(body, "shared");
        misses += usize::from(x_cache == "TCP_MISS");
    }
    assert_eq!(origin.arrived(), 1);
    assert_eq!(misses, 1);
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw origin: `GET /<name>` is answered with the head `heads[name]` and the body `ok`.
async fn raw_head_origin(heads: &'static [(&'static str, &'static str)]) -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                while let Some(request) = common::read_request_head(&mut stream).await {
                    let request = String::from_utf8_lossy(&request);
                    let path = request.split(' ').nth(1).unwrap_or("/");
                    let Some((_, head)) = heads.iter().find(|(name, _)| path == format!("/{name}"))
                    else {
                        return;
                    };
                    let response = format!("{head}\r\nContent-Length: 2\r\n\r\nok");
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The head the edge answers `GET path` with (with `extra` request fields), its values of
/// `Date`, `Age` and `X-Portico-Ref` blanked (they change from one answer to the next),
/// and the body.
async fn raw_get(edge: &TestEdge, path: &str, extra: &str) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = edge
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    let head = String::from_utf8(answer[..end].to_vec()).unwrap();
    let blanked: Vec<String> = head
        .split("\r\n")
        .map(|line| match line.split_once(": ") {
            Some((name, _))
                if ["date", "age", "x-portico-ref"]
                    .contains(&name.to_ascii_lowercase().as_str()) =>
            {
                format!("{name}: _")
            }
            _ => line.to_string(),
        })
        .collect();
    (blanked.join("\r\n"), answer[end + 4..].to_vec())
}

/// A plain hit's head is written straight from the stored text (`proxy::hit_head`); a hit
/// with a conditional that does not match goes Pingora's way (the stored header cloned,
/// filtered, serialised). Both must be the same bytes: the status line with the origin's
/// reason, the fields in the origin's order and case (its `Date` among them, as it is),
/// `Age` replaced in place (titled, as Pingora writes it) or added after the stored fields
/// as `Date` is when the origin sent none, then `X-Portico-Ref`,
/// `X-Cache`, `Connection`; a tag header stripped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_hit_has_the_head_a_filtered_hit_has() {
    static HEADS: &[(&str, &str)] = &[
        (
            "dated",
            "HTTP/1.1 200 OK\r\nserver: Raw\r\ndate: Fri, 01 Jan 2100 00:00:00 GMT\r\nCache-Control: max-age=60\r\nX-Custom: a\r\nx-custom: b\r\nETag: \"v1\"",
        ),
        (
            "aged",
            "HTTP/1.1 200 Fine Thanks\r\nage: 5\r\naccept-ranges: none\r\nCache-Control: public, max-age=60\r\nETag: \"v2\"",
        ),
        (
            "not-found",
            "HTTP/1.1 404 Not Found\r\nCache-Control: max-age=60\r\nAccept-Ranges: none",
        ),
        (
            "tagged",
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nCache-Tag: one, two\r\nETag: \"v3\"",
        ),
    ];
    let origin = raw_head_origin(HEADS).await;
    let edge = TestEdge::start(&common::edge::node_yaml(""), &site(CACHE_ON, origin, "")).await;
    for (name, _) in HEADS {
        let path = format!("/{name}");
        let (miss, _) = raw_get(&edge, &path, "").await;
        assert!(miss.contains("\r\nx-cache: TCP_MISS"), "{miss}");
        let (plain, body) = raw_get(&edge, &path, "").await;
        let (filtered, filtered_body) =
            raw_get(&edge, &path, "If-None-Match: \"nothing\"\r\n").await;
        assert!(plain.contains("\r\nx-cache: TCP_HIT"), "{plain}");
        assert_eq!(plain, filtered, "{name}");
        assert_eq!(
            (body.as_slice(), filtered_body.as_slice()),
            (&b"ok"[..], &b"ok"[..])
        );
        assert!(
            plain.ends_with("\r\nx-cache: TCP_HIT\r\nConnection: close"),
            "{plain}"
        );
    }
    let (dated, _) = raw_get(&edge, "/dated", "").await;
    assert!(
        dated.starts_with("HTTP/1.1 200 OK\r\nserver: Raw\r\ndate: _\r\nCache-Control: max-age=60\r\nX-Custom: a\r\nx-custom: b\r\nETag: \"v1\"\r\nContent-Length: 2\r\nAge: _\r\nAccept-Ranges: bytes\r\nx-portico-ref: _\r\n"),
        "{dated}"
    );
    let (aged, _) = raw_get(&edge, "/aged", "").await;
    assert!(
        aged.starts_with("HTTP/1.1 200 Fine Thanks\r\n")
            && aged.contains("\r\nAccept-Ranges: bytes\r\n")
            && aged.contains("\r\nDate: _\r\n")
            && aged.contains("\r\nAge: _\r\n"),
        "{aged}"
    );
    let (tagged, _) = raw_get(&edge, "/tagged", "").await;
    assert!(
        !tagged.to_ascii_lowercase().contains("cache-tag"),
        "{tagged}"
    );
}

/// A plain hit's head and a body held in one piece go out in one vectored write, and a
/// body kept in the chunks it came in (over 1 MiB) in as few, as does a single range of it
/// (their splits are `proxy::hit_head`'s unit test: a loopback socket takes 1 MiB at once).
/// Here a 1 MiB body (the largest the store keeps in one piece) and one of 3 MiB and a few
/// bytes (no two 64 KiB blocks alike in either), and ranges of the larger, reach a client
/// with a 4 KiB receive buffer, read 4 KiB at a time: the head whole, the body byte for
/// byte after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_plain_hit_reaches_a_slow_reader_whole() {
    const SIZES: [usize; 2] = [1 << 20, (3 << 20) + 12_345];
    let body_of = |size: usize| -> Bytes {
        (0..size)
            .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
            .collect::<Vec<u8>>()
            .into()
    };
    let bodies: Vec<Bytes> = SIZES.into_iter().map(body_of).collect();
    let served = bodies.clone();
    let origin = TestOrigin::start(Arc::new(move |request: &Recorded| {
        let body = match request.uri.as_str() {
            "/big/0" => served[0].clone(),
            _ => served[1].clone(),
        };
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert("cache-control", "max-age=600".parse().unwrap());
        response
    }))
    .await;
    let edge = TestEdge::start(
        &common::edge::node_yaml("cache:\n  max_object_bytes: 8MiB\n"),
        &site(CACHE_ON, origin.addr(), ""),
    )
    .await;
    for (n, body) in bodies.iter().enumerate() {
        let path = format!("/big/{n}");
        let miss = get(&edge, &path).await;
        assert_eq!(
            (miss.x_cache.as_str(), miss.body.len()),
            ("TCP_MISS", body.len())
        );
        let (head, got) = read_slowly(edge.addr, &path, "").await;
        assert!(head.contains("\r\nx-cache: tcp_hit"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        assert!(got == body[..], "{path}: the body differs");
    }
    // Ranges of the body kept in chunks: across chunks, within one, a suffix, to the end.
    let body = &bodies[1];
    let len = body.len();
    let ranges = [
        (65_000, 2_200_000),
        (70_000, 70_100),
        (len - 5_000, len - 1),
        (1_000_000, len - 1),
    ];
    for (first, last) in ranges {
        let range = format!("Range: bytes={first}-{last}\r\n");
        let (head, got) = read_slowly(edge.addr, "/big/1", &range).await;
        assert!(head.starts_with("http/1.1 206"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-range: bytes {first}-{last}/{len}")),
            "{head}"
        );
        assert!(got == body[first..=last], "{range}: the body differs");
    }
}

/// `GET path` with `extra` header lines, read by a client with a 4 KiB receive buffer 4 KiB
/// at a time until the edge closes: the head (lowercase) and the body.
async fn read_slowly(addr: std::net::SocketAddr, path: &str, extra: &str) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    (head, answer.split_off(end + 4))
}
