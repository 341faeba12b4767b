//! How an origin's response frames its body, through the edge: chunked, chunked with a
//! `Content-Length` beside it (RFC 9112 §6.3: the length is ignored and removed), until the
//! connection closes, and lengths that cannot frame anything (a 502, and the connection is
//! not reused). Raw origins, so each response is exactly the bytes written here.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::edge::{client, node_yaml, TestEdge};
use tokio::io::AsyncWriteExt;

/// A raw origin that answers every request with `reply`, and closes the connection after
/// each when `close` (a close-delimited body ends only there). Counts connections.
async fn raw_origin(reply: &'static [u8], close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    common::counting_origin(move |mut stream| async move {
        while common::read_request_head(&mut stream).await.is_some() {
            if stream.write_all(reply).await.is_err() || close {
                return;
            }
        }
    })
    .await
}

/// One uncached route to `origin`, no retries.
fn rules(origin: SocketAddr) -> String {
    route_to(origin, false)
}

/// One route to `origin` with caching `enabled` or not, no retries.
fn route_to(origin: SocketAddr, enabled: bool) -> String {
    format!(
        "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: {enabled} }}\norigin_groups:\n  - name: web\n    max_retries: 0\n    origins:\n      - address: {origin}\n"
    )
}

/// `count` requests through a fresh edge to an origin answering `reply`: each status and
/// body, and the origin's connection count.
async fn through_edge(
    reply: &'static [u8],
    close: bool,
    count: usize,
) -> (Vec<(u16, String)>, usize) {
    let (origin, connections) = raw_origin(reply, close).await;
    // A body framed wrongly would wait for a close that never comes: bounded, so such a
    // failure is quick.
    let node = node_yaml("defaults:\n  origin_timeouts:\n    first_byte: 5s\n    total: 10s\n");
    let edge = TestEdge::start(&node, &rules(origin)).await;
    let http = client();
    let mut answers = Vec::new();
    for n in 0..count {
        let response = http.get(edge.url(&format!("/r{n}"))).send().await.unwrap();
        let status = response.status().as_u16();
        answers.push((status, response.text().await.unwrap_or_default()));
    }
    (answers, connections.load(Ordering::SeqCst))
}

/// Three requests through the edge to an origin answering `reply` on a kept connection:
/// each gets `body`, over one origin connection.
async fn every_answer_is(reply: &'static [u8], body: &str) {
    let (answers, connections) = through_edge(reply, false, 3).await;
    assert!(
        answers.iter().all(|a| *a == (200, body.to_string())),
        "{answers:?}"
    );
    assert_eq!(connections, 1, "one connection, reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_arrives_whole_and_the_connection_is_reused() {
    let reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    every_answer_is(reply, "hello world").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_beside_chunked_is_ignored() {
    // The length (3) would cut the body short, and leave the rest to be read as the next
    // response: chunked framing wins (RFC 9112 §6.3).
    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    every_answer_is(reply, "hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_length_ends_where_the_origin_closes() {
    let reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end";
    let (answers, connections) = through_edge(reply, true, 2).await;
    assert!(
        answers
            .iter()
            .all(|a| *a == (200, "until the end".to_string())),
        "{answers:?}"
    );
    assert_eq!(
        connections, 2,
        "a close-delimited connection is never reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_that_frames_nothing_is_a_502_and_its_connection_is_dropped() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\nhello"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
    ] {
        let (answers, connections) = through_edge(reply, false, 2).await;
        let text = String::from_utf8_lossy(reply);
        assert!(
            answers.iter().all(|(s, _)| *s == 502),
            "{text:?}: {answers:?}"
        );
        assert_eq!(connections, 2, "{text:?}: the connection was not reused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_equal_length_frames_the_body() {
    // RFC 9110 §8.6: a list of one repeated value is that value.
    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello";
    every_answer_is(reply, "hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_next_request_finds_the_origin_connection_back_in_the_pool() {
    // The origin's connection goes back to the pool before the response's end reaches the
    // client: were it the other way round, the client's next request, on a connection of
    // its own, could find the pool empty and open a second origin connection.
    let (origin, connections) =
        raw_origin(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false).await;
    let edge = TestEdge::start(&node_yaml(""), &rules(origin)).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for n in 0..50 {
        let response = http.get(edge.url(&format!("/r{n}"))).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "hello");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one origin connection, reused by all 50"
    );
}

/// A head the edge refuses from an origin is a 502 that says why, without quoting the head:
/// what the edge would not pass on (here a cookie behind a bare CR, which a lenient parser
/// downstream could read as a field of its own) stays out of the answer too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_head_the_edge_refuses_is_not_quoted_back() {
    let reply =
        b"HTTP/1.1 200 OK\r\nx-a: a\rset-cookie: session=s3cr3t\r\ncontent-length: 2\r\n\r\nok";
    let (answers, _) = through_edge(reply, true, 1).await;
    let (status, body) = &answers[0];
    assert_eq!(*status, 502, "{body}");
    assert!(body.contains("invalid header value"), "{body}");
    assert!(!body.contains("s3cr3t") && !body.contains("buf:"), "{body}");
}

/// The head and body an HTTP/1.x client reads from `raw` (everything up to the close).
fn split_answer(raw: &str) -> (String, &str) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    (head.to_ascii_lowercase(), body)
}

/// RFC 9112 §6.1: no `Transfer-Encoding` to a client below HTTP/1.1, which would read the
/// chunks' framing as content. A chunked body goes to it close-delimited, uncached and
/// from the cache alike (a stored object without a length is written chunked to others).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_client_gets_a_chunked_body_close_delimited() {
    let reply = b"HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ntransfer-encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n";
    let (origin, _) = raw_origin(reply, false).await;
    for (rules, what) in [
        (rules(origin), "uncached"),
        (route_to(origin, true), "cached"),
    ] {
        let edge = TestEdge::start(&node_yaml(""), &rules).await;
        // A miss and a hit on the cached route; two passes on the other. A client that
        // asked to keep the connection is told it closes (the body ends there), not told
        // `keep-alive` and then closed.
        for (attempt, request) in [
            ("first", "GET /c HTTP/1.0\r\nHost: a\r\n\r\n"),
            (
                "second",
                "GET /c HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            ),
        ] {
            let raw = common::raw_exchange(edge.addr, request.as_bytes()).await;
            let (head, body) = split_answer(&raw);
            assert!(head.starts_with("http/1.1 200 "), "{what} {attempt}: {raw}");
            assert!(
                !head.contains("transfer-encoding"),
                "{what} {attempt}: {raw}"
            );
            assert!(
                head.contains("\r\nconnection: close"),
                "{what} {attempt}: {raw}"
            );
            assert_eq!(body, "hello world", "{what} {attempt}");
        }
        // An HTTP/1.1 client still gets the chunks.
        let raw = common::raw_exchange(
            edge.addr,
            b"GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        let (head, body) = split_answer(&raw);
        assert!(head.contains("transfer-encoding: chunked"), "{what}: {raw}");
        assert_eq!(
            body.to_ascii_lowercase(),
            "b\r\nhello world\r\n0\r\n\r\n",
            "{what}"
        );
    }
}

/// RFC 9112 §6.1: the edge decodes `chunked` only. A body in another transfer coding is a
/// 502 that says why, on an uncached route and a cached one alike, and nothing is stored:
/// kept, the coding was dropped from the stored head and the coded bytes served as the
/// representation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coding_other_than_chunked_is_a_502_and_never_stored() {
    let reply = b"HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ntransfer-encoding: gzip\r\n\r\nnot really gzip";
    let (origin, connections) = raw_origin(reply, true).await;
    let mut asked = 0;
    for (rules, what) in [
        (rules(origin), "uncached"),
        (route_to(origin, true), "cached"),
    ] {
        let edge = TestEdge::start(&node_yaml(""), &rules).await;
        for attempt in ["first", "second"] {
            let response = client().get(edge.url("/g")).send().await.unwrap();
            assert_eq!(response.status(), 502, "{what} {attempt}");
            let body = response.text().await.unwrap();
            assert!(body.contains("transfer coding"), "{what} {attempt}: {body}");
            asked += 1;
        }
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        asked,
        "nothing was served from the cache"
    );
}
