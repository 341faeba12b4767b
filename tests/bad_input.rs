//! Bad input, end to end over raw sockets: each case gets a defined answer with a reason,
//! nothing malformed reaches an origin, no origin address reaches a client, a broken
//! response never becomes a cached object, and the node keeps serving.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::edge::{client, group_yaml, TestEdge};
use common::origin::TestOrigin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends `bytes` on a new connection and reads until the edge closes it (10 s at most).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The edge may answer and close before it has read everything (a huge header).
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        // A reset after the answer (unread bytes left behind) ends the read like EOF.
        while let Ok(n @ 1..) = stream.read(&mut chunk).await {
            answer.extend_from_slice(&chunk[..n]);
        }
    });
    assert!(read.await.is_ok(), "the edge kept the connection open");
    String::from_utf8_lossy(&answer).into_owned()
}

/// One route on `/*` to group `web` at `origin`, with `cache` as its cache block.
fn site(cache: &str, origin: SocketAddr) -> String {
    format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {cache}\nrule_sets: []\norigin_groups:\n{}",
        group_yaml("web", origin)
    )
}

/// Asserts `answer` is a `status` answer that closes the connection and whose text says
/// `reason`.
fn assert_refused(answer: &str, status: u16, reason: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status} ")),
        "expected {status}: {answer}"
    );
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("\r\nconnection: close\r\n"), "{answer}");
    // The text may quote the request (a refused path): never sniffed as markup.
    assert!(
        lower.contains("\r\nx-content-type-options: nosniff\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains(reason),
        "expected \"{reason}\" in: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_requests_get_a_400_with_the_reason_and_reach_no_origin() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let edge = TestEdge::with_routes("", &site("{ enabled: false }", origin.addr())).await;
    // Heads over the size and line limits get 431: tests/limits.rs.
    let cases: [(&str, &[u8], &str); 8] = [
        ("not HTTP", b"NOT HTTP AT ALL\r\n\r\n", "InvalidHTTPHeader"),
        (
            "a header line without a colon",
            b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n",
            "InvalidHTTPHeader",
        ),
        (
            "two different Content-Length values",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            "Content-Length",
        ),
        (
            "a negative Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\nabc",
            "Content-Length",
        ),
        (
            "a Content-Length with a sign",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
            "Content-Length",
        ),
        (
            "a Content-Length past 2^64",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
            "Content-Length",
        ),
        (
            "a transfer coding other than chunked last",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            "Transfer-Encoding",
        ),
        (
            "an HTTP version the edge does not speak on HTTP/1",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            "InvalidHTTPHeader",
        ),
    ];
    for (case, bytes, reason) in cases {
        let answer = exchange(edge.addr, bytes).await;
        assert_refused(&answer, 400, reason);
        assert!(
            answer.contains("could not read the request"),
            "{case}: {answer}"
        );
        assert!(
            answer.contains("x-portico-error: bad-request"),
            "{case}: {answer}"
        );
        assert_dated_now(&answer);
    }
    assert_eq!(origin.count(), 0, "a malformed request reached the origin");

    // The node is still serving.
    let fine = client().get(edge.url("/still")).send().await.unwrap();
    assert_eq!(fine.status(), 200);
}

/// Pingora's error for a head its parser refuses quotes the head (`buf: ...`): the answer
/// gives the parser's reason instead, so no refused request's cookies or credentials come
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_the_edge_cannot_parse_is_not_echoed_back() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let edge = TestEdge::with_routes("", &site("{ enabled: false }", origin.addr())).await;
    // Each fails in Pingora's parser, whose error quotes the head it read.
    let cases: [(&[u8], &str); 3] = [
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nCookie: session=s3cr3t\r\nTransfer-Encoding : chunked\r\n\r\n",
            "invalid header name",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic s3cr3t\r\nX-A: b\x01c\r\n\r\n",
            "invalid header value",
        ),
        (
            b"GET / HTTP/9.9\r\nHost: a\r\nCookie: session=s3cr3t\r\n\r\n",
            "invalid HTTP version",
        ),
    ];
    for (bytes, reason) in cases {
        let answer = exchange(edge.addr, bytes).await;
        assert_refused(&answer, 400, reason);
        assert!(
            !answer.contains("s3cr3t") && !answer.contains("Host: a"),
            "the refused head came back: {answer}"
        );
    }
    assert_eq!(origin.count(), 0, "a malformed request reached the origin");
}

/// Asserts that `answer` has one `Date`, within a minute of now (RFC 9110 §6.6.1).
fn assert_dated_now(answer: &str) {
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    let dates: Vec<&str> = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("date"))
        .map(|(_, value)| value.trim())
        .collect();
    assert_eq!(dates.len(), 1, "one Date: {answer}");
    let date = httpdate::parse_http_date(dates[0]).expect("an HTTP date");
    let skew = std::time::SystemTime::now()
        .duration_since(date)
        .unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(60), "a stale Date: {answer}");
}

/// RFC 9112 §3.2: a request line whose target holds whitespace or a control character is
/// refused, not corrected and forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_whitespace_or_controls_is_a_400_not_a_correction() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let edge = TestEdge::with_routes("", &site("{ enabled: false }", origin.addr())).await;
    for request in [
        &b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a?q=\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET  /a HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let answer = exchange(edge.addr, request).await;
        assert_refused(
            &answer,
            400,
            "whitespace or a control character in its target",
        );
    }
    assert_eq!(origin.count(), 0, "a corrected target reached the origin");
    // Bytes outside ASCII and visible ASCII that URIs leave out still pass, as sent.
    let answer = exchange(
        edge.addr,
        "GET /caf\u{e9}/\"q\" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

/// CONNECT is refused with a reason and the connection closed (what follows it would be
/// a tunnel's bytes, not a request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_a_405_that_says_so_and_closes() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let edge = TestEdge::with_routes("", &site("{ enabled: false }", origin.addr())).await;
    let answer = exchange(
        edge.addr,
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n\x16\x03\x01",
    )
    .await;
    assert_refused(&answer, 405, "CONNECT is not served by this edge");
    assert!(
        answer.contains("x-portico-error: connect-refused"),
        "{answer}"
    );
    assert_dated_now(&answer);
    assert_eq!(origin.count(), 0);
}

/// RFC 9110 §8.6: a `Content-Length` repeated (as a list or on two lines) with one value
/// reaches the origin once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_content_length_reaches_the_origin_once() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let edge = TestEdge::with_routes("", &site("{ enabled: false }", origin.addr())).await;
    for head in [
        "Content-Length: 2, 2\r\n",
        "Content-Length: 2\r\nContent-Length: 2\r\n",
        "Content-Length: 2,2, 2\r\n",
    ] {
        let request = format!("POST /up HTTP/1.1\r\nHost: a\r\n{head}Connection: close\r\n\r\nab");
        let answer = exchange(edge.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{head:?}: {answer}");
    }
    for seen in origin.requests() {
        let lengths: Vec<_> = seen.headers.get_all("content-length").iter().collect();
        assert_eq!(lengths, ["2"], "{:?}", seen.headers);
        assert_eq!(seen.body, "ab");
    }
    assert_eq!(origin.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_must_be_there_once_on_http_1_1() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let edge = TestEdge::with_routes("", &site("{ enabled: false }", origin.addr())).await;
    let none = exchange(edge.addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_refused(&none, 400, "an HTTP/1.1 request needs a Host header");
    assert!(none.contains("x-portico-error: bad-host"), "{none}");
    // Pingora refuses a second Host line itself, before routing.
    let two = exchange(
        edge.addr,
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_refused(&two, 400, "multiple Host header fields");
    let userinfo = exchange(
        edge.addr,
        b"GET / HTTP/1.1\r\nHost: user@a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_refused(&userinfo, 400, "userinfo in Host header");
    let elsewhere = exchange(
        edge.addr,
        b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_refused(&elsewhere, 400, "differs from");
    // An absolute-form target names a host, but HTTP/1.1 still needs the header.
    let absolute = exchange(
        edge.addr,
        b"GET http://a.example/ HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_refused(&absolute, 400, "an HTTP/1.1 request needs a Host header");
    assert_eq!(origin.count(), 0);
    // HTTP/1.0 has no Host requirement.
    let old = exchange(edge.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(
        old.starts_with("HTTP/1.1 200") || old.starts_with("HTTP/1.0 200"),
        "{old}"
    );
    assert_eq!(origin.count(), 1);
}

/// RFC 9112 §3.2: a target in none of the forms a request may take is a 400. Pingora kept
/// such a target verbatim for the origin while the URI it parsed read `/`, so the origin's
/// answer for `page.html` was stored as the site's root, and path checks never saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_in_no_request_form_is_a_400_and_is_never_stored() {
    let origin = TestOrigin::ok(&[("cache-control", "max-age=600")]).await;
    let edge = TestEdge::with_routes("", &site("{ enabled: true }", origin.addr())).await;
    for target in [
        "page.html",
        "attacker?cc=max-age=600",
        "a.example:80",
        "x/../../admin",
        "%2e%2e/admin",
        "..",
        "?q=1",
        "*",
        "ftp://a.example/x",
        "mailto:a@a.example",
    ] {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n");
        let answer = exchange(edge.addr, request.as_bytes()).await;
        assert_refused(&answer, 400, "request target is not allowed");
        assert!(
            answer.contains("x-portico-error: bad-target"),
            "{target}: {answer}"
        );
    }
    assert_eq!(origin.count(), 0);
    // The forms a request may take pass, and the root is the origin's root.
    for target in ["/", "http://a.example/", "/?q=1"] {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n");
        let answer = exchange(edge.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{target}: {answer}");
    }
    let paths: Vec<_> = origin.requests().iter().map(|r| r.uri.clone()).collect();
    assert!(paths.iter().all(|p| p.starts_with('/')), "{paths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_framed_by_the_chunks_and_closes() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let edge = TestEdge::with_routes("", &site("{ enabled: false }", origin.addr())).await;
    // RFC 9112 §6.3: Transfer-Encoding wins; the connection closes after the answer, so
    // bytes a smuggler framed by Content-Length can never become a second request.
    let answer = exchange(
        edge.addr,
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer
        .to_ascii_lowercase()
        .contains("\r\nconnection: close\r\n"));
    let seen = origin.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body, "abc");
    assert!(
        !seen[0].headers.contains_key("content-length") || seen[0].headers["content-length"] == "3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_body_is_the_clients_fault_and_says_so() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let edge = TestEdge::with_routes("", &site("{ enabled: false }", origin.addr())).await;
    let answer = exchange(
        edge.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_refused(&answer, 400, "could not read the request (InvalidChunk");
    assert!(answer.contains("x-portico-error: bad-request"), "{answer}");
    assert_no_origin_address(&answer, origin.addr());
}

fn assert_no_origin_address(answer: &str, origin: SocketAddr) {
    assert!(
        !answer.contains(&origin.port().to_string()) && !answer.contains("origin.internal"),
        "the answer names the origin: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_failures_say_what_failed_but_never_where() {
    let (hangs_up, _) = common::health::raw_origin(Duration::ZERO, false).await;
    let refuses = common::health::closed_port();
    let garbage = scripted_origin(|_| b"SOMETHING ELSE ENTIRELY\r\n\r\n".to_vec())
        .await
        .0;
    for (origin, reason) in [
        (
            hangs_up,
            "(ConnectionClosed: while reading response headers",
        ),
        (garbage, "(InvalidHTTPHeader"),
        (
            refuses,
            "no origin left to try; the last one failed (ConnectRefused: Fail to connect to <origin>; Connection refused",
        ),
    ] {
        let edge = TestEdge::with_routes("", &site("{ enabled: false }", origin)).await;
        let answer = exchange(edge.addr, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_refused(&answer, 502, reason);
        assert!(
            answer.contains("x-portico-error: origin-failure"),
            "{answer}"
        );
        assert_no_origin_address(&answer, origin);
    }
}

/// A raw origin that reads each request head and writes `script(n)` for the n-th
/// connection (from 0), then closes. Returns its address and the connection count.
async fn scripted_origin(
    script: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            tokio::spawn(async move {
                if common::read_request_head(&mut stream).await.is_none() {
                    return;
                }
                let _ = stream.write_all(&script(n)).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_dies_mid_response_leaves_nothing_in_the_cache() {
    let whole = "x".repeat(100);
    let (origin, connections) = scripted_origin(move |n| {
        let head = "HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ncontent-length: 100\r\n\r\n";
        // The first answer stops after 10 of its 100 bytes: the origin died.
        let body = if n == 0 { &whole[..10] } else { &whole[..] };
        format!("{head}{body}").into_bytes()
    })
    .await;
    let edge = TestEdge::with_routes("", &site("{ enabled: true }", origin)).await;

    // The client never gets a whole-looking answer: a 502 with the reason when nothing
    // had been sent yet, else the 200 cut short and the connection closed.
    let first = exchange(edge.addr, b"GET /obj HTTP/1.1\r\nHost: a\r\n\r\n").await;
    if first.starts_with("HTTP/1.1 502") {
        assert_refused(
            &first,
            502,
            "could not get a response from the origin (ConnectionClosed",
        );
    } else {
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        let (_, body) = first.split_once("\r\n\r\n").unwrap();
        assert!(
            body.len() < 100,
            "the client must see the answer cut short: {first}"
        );
    }

    // The broken fill was not stored: the next request goes to the origin again and gets
    // the whole object, which the one after is served from the cache.
    let again = client().get(edge.url("/obj")).send().await.unwrap();
    assert_eq!(again.headers()["x-cache"], "TCP_MISS");
    assert_eq!(again.text().await.unwrap().len(), 100);
    let hit = client().get(edge.url("/obj")).send().await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "TCP_HIT");
    assert_eq!(hit.text().await.unwrap(), "x".repeat(100));
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_the_edge_did_not_ask_for_is_a_502_and_opens_nothing() {
    let (origin, _) = scripted_origin(|_| {
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nRAW"
            .to_vec()
    })
    .await;
    let upgrade = b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    // A plain request on any route, and an upgrade on a caching route (which reproduces
    // Front Door: the edge forwards it without `Upgrade`).
    for (cache, request) in [
        (
            "{ enabled: false }",
            &b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        ),
        (
            "{ enabled: true }",
            &b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        ),
        ("{ enabled: true }", &upgrade[..]),
    ] {
        let edge = TestEdge::with_routes("", &site(cache, origin)).await;
        let answer = exchange(edge.addr, request).await;
        assert_refused(&answer, 502, "the origin answered 101 Switching Protocols");
        assert!(
            !answer.contains("RAW"),
            "origin bytes leaked through: {answer}"
        );
    }
}

/// Every spelling of a dot segment is refused before routing; an encoded unreserved
/// character is decoded before routing, and the origin gets the same normal form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_once_and_ambiguous_ones_refused() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let admin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let rules = format!(
        "routes:\n  - name: admin\n    patterns: [\"/admin/*\"]\n    origin_group: admin\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\norigin_groups:\n{}{}",
        group_yaml("web", origin.addr()),
        group_yaml("admin", admin.addr())
    );
    let edge = TestEdge::with_routes("", &rules).await;
    for path in [
        "/static/..;/admin/x",
        "/static/.%2e/admin/x",
        "/static/%2e./admin/x",
        "/static/..%2fadmin/x",
        "/static/..%5Cadmin/x",
        "/static/%2E%2E/admin/x",
        "/a%00b",
        "/a%zz",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let answer = exchange(edge.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{path}: {answer}");
        assert!(
            answer.contains("x-portico-error: bad-path"),
            "{path}: {answer}"
        );
        assert!(answer.contains("is not allowed: it "), "{path}: {answer}");
    }
    assert_eq!(
        origin.count() + admin.count(),
        0,
        "no ambiguous path reached an origin"
    );

    // `/%61dmin/x` is `/admin/x`: it takes the admin route, as the plain spelling does,
    // instead of slipping past it to the catch-all.
    let answer = exchange(
        edge.addr,
        b"GET /%61dmin/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(admin.requests()[0].uri, "/admin/x");
    let answer = exchange(
        edge.addr,
        b"GET /caf%C3%A9/%7euser?q=%61 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(
        origin.requests()[0].uri,
        "/caf%C3%A9/~user?q=%61",
        "the origin gets the normal form"
    );
}

/// A refused or unrouted path is quoted in the answer, but only its start: the answer
/// never hands back kilobytes of the client's input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_quotes_at_most_the_start_of_a_long_path() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let rules = format!(
        "routes:\n  - name: only\n    patterns: [\"/only/*\"]\n    origin_group: web\norigin_groups:\n{}",
        group_yaml("web", origin.addr()),
    );
    let edge = TestEdge::with_routes("", &rules).await;
    let long = "a".repeat(6000);
    for (path, status) in [
        (format!("/only/{long}%00"), 400),
        (format!("/nope/{long}"), 404),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let answer = exchange(edge.addr, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        assert!(
            body.len() < 400 && body.contains(&path[..100]) && body.contains("..."),
            "{} bytes: {body}",
            body.len()
        );
    }
    assert_eq!(origin.count(), 0);
}

/// A client's own `X-Forwarded-For` (and `Forwarded`, `X-Real-IP`) is replaced, unless the
/// client is a configured proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarding_headers_are_replaced_unless_from_a_trusted_proxy() {
    let origin = TestOrigin::ok(&[]).await;
    let rules = site("{ enabled: false }", origin.addr());
    for (trusted, expected) in [
        ("", "127.0.0.1"),
        ("trusted_proxies: [127.0.0.0/8]\n", "203.0.113.9, 127.0.0.1"),
    ] {
        let edge = TestEdge::with_routes(trusted, &rules).await;
        let answer = client()
            .get(edge.url("/who"))
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-real-ip", "203.0.113.9")
            .header("true-client-ip", "203.0.113.9")
            .header("x-client-ip", "203.0.113.9")
            .header("x-original-host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let seen = origin.requests().pop().unwrap();
        assert_eq!(seen.headers["x-forwarded-for"], expected);
        for claim in [
            "x-real-ip",
            "true-client-ip",
            "x-client-ip",
            "x-original-host",
        ] {
            assert_eq!(
                seen.headers.get(claim).is_some(),
                !trusted.is_empty(),
                "{claim}"
            );
        }
    }
}

/// A raw origin that keeps every byte it receives and answers `200` only once a request's
/// chunked body is complete (its `0` chunk and the blank line after any trailers).
/// Returns its address, the bytes and the count of complete requests.
async fn recording_origin() -> (SocketAddr, Arc<std::sync::Mutex<Vec<u8>>>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let complete = Arc::new(AtomicUsize::new(0));
    let (all, done) = (received.clone(), complete.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (all, done) = (all.clone(), done.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            mine.extend_from_slice(&chunk[..n]);
                            all.lock().unwrap().extend_from_slice(&chunk[..n]);
                        }
                    }
                    // The last chunk on a line of its own: a head whose last field value
                    // ends in `0` (a request id) ends in `0\r\n\r\n` too.
                    if mine.windows(7).any(|w| w == b"\r\n0\r\n\r\n") {
                        done.fetch_add(1, Ordering::SeqCst);
                        mine.clear();
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    (addr, received, complete)
}

/// Sends `parts` on a new connection, each in its own write (so a trailer line may straddle
/// two reads), and reads until the edge closes or `limit` passes.
async fn exchange_in_parts(addr: SocketAddr, parts: &[&[u8]]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for part in parts {
        let _ = stream.write_all(part).await;
        let _ = stream.flush().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut chunk).await {
            answer.extend_from_slice(&chunk[..n]);
            // A kept-alive 200 stays open: its whole answer is enough.
            if answer.ends_with(b"\r\n\r\nok") {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_in_chunked_trailers_is_a_400_and_no_origin_gets_the_request() {
    let (origin, received, complete) = recording_origin().await;
    let edge = TestEdge::with_routes("", &site("{ enabled: false }", origin)).await;
    let head: &[u8] =
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    let junk: [(&[&[u8]], &str); 5] = [
        (
            &[head, b"0\r\nno colon at all\r\n\r\n"],
            "trailer line without a colon",
        ),
        (
            &[head, b"0\r\nX-Ok: 1\r\nBad Name: v\r\n\r\n"],
            "invalid trailer field name",
        ),
        (
            &[head, b"0\r\nX-Sum: a\x01b\r\n\r\n"],
            "control character 0x01",
        ),
        // Obsolete line folding.
        (
            &[head, b"0\r\nX-Sum: a\r\n folded: b\r\n\r\n"],
            "invalid trailer field name",
        ),
        // The junk line split over two reads.
        (
            &[head, b"0\r\nju", b"nk\r\n\r\n"],
            "trailer line without a colon",
        ),
    ];
    for (parts, reason) in junk {
        let answer = exchange_in_parts(edge.addr, parts).await;
        assert_refused(&answer, 400, "could not read the request (InvalidTrailer");
        assert!(answer.contains(reason), "expected {reason:?}: {answer}");
        assert!(answer.contains("x-portico-error: bad-request"), "{answer}");
    }
    assert_eq!(
        complete.load(Ordering::SeqCst),
        0,
        "no origin got a complete request: {}",
        String::from_utf8_lossy(&received.lock().unwrap())
    );
    let seen = received.lock().unwrap().clone();
    for junk in [&b"no colon"[..], b"Bad Name", b"folded", b"junk", b"X-Sum"] {
        assert!(
            !seen.windows(junk.len()).any(|w| w == junk),
            "the origin saw the junk: {}",
            String::from_utf8_lossy(&seen)
        );
    }

    // Well-formed trailers (an empty value too, one line over two reads) are dropped and
    // the request goes on.
    for parts in [
        &[head, b"0\r\nX-Checksum: abc\r\nX-Empty:\r\n\r\n"][..],
        &[head, b"0\r\nX-Check", b"sum: abc\r\n\r\n"][..],
        &[head, b"0\r\n\r\n"][..],
    ] {
        let answer = exchange_in_parts(edge.addr, parts).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    }
    assert_eq!(complete.load(Ordering::SeqCst), 3);
}
