//! The proxy end to end: a real client, the edge in-process, real origins on loopback.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::edge::{client, group_yaml, TestEdge};
use common::origin::{Recorded, TestOrigin};

fn rules(routes: &str, rule_sets: &str, groups: &str) -> String {
    format!("routes:\n{routes}\nrule_sets:\n{rule_sets}\norigin_groups:\n{groups}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_reaches_its_origin_with_host_origin_path_and_forwarding_headers() {
    let origin = TestOrigin::ok(&[("cache-control", "no-store")]).await;
    let routes = "  - name: app\n    domains: [shop.example.com]\n    patterns: [\"/app/*\"]\n    origin_group: web\n    origin_path: /v2\n";
    let edge = TestEdge::with_routes(
        "",
        &rules(routes, "  []", &group_yaml("web", origin.addr())),
    )
    .await;

    let response = client()
        .get(edge.url("/app/items?id=7"))
        .header("host", "Shop.Example.com:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-portico-ref"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(response.headers()["x-cache"], "CONFIG_NOCACHE");
    assert_eq!(response.text().await.unwrap(), "origin /v2/app/items");

    let seen = &origin.requests()[0];
    assert_eq!(seen.uri, "/v2/app/items?id=7");
    assert_eq!(seen.headers["host"], "origin.internal");
    assert_eq!(seen.headers["via"], "1.1 test-edge");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    // Normalised as in the cache key: lower-case, the client's port dropped (issue 15).
    assert_eq!(seen.headers["x-forwarded-host"], "shop.example.com");
    assert_eq!(seen.headers["cdn-loop"], "test-edge");
    assert_eq!(seen.headers["x-portico-ref"], request_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_host_or_path_gets_the_edges_404_and_nothing_is_forwarded() {
    let origin = TestOrigin::ok(&[]).await;
    let routes = "  - name: app\n    domains: [shop.example.com]\n    patterns: [\"/app/*\"]\n    origin_group: web\n";
    let edge = TestEdge::with_routes(
        "",
        &rules(routes, "  []", &group_yaml("web", origin.addr())),
    )
    .await;

    let wrong_path = client()
        .get(edge.url("/nowhere"))
        .header("host", "shop.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_path.status(), 404);
    assert_eq!(wrong_path.headers()["x-portico-error"], "no-route");
    assert!(wrong_path.headers().contains_key("x-portico-ref"));
    assert_eq!(
        wrong_path.text().await.unwrap(),
        "no route for host \"shop.example.com\" and path \"/nowhere\"\n"
    );

    let wrong_host = client()
        .get(edge.url("/app/x"))
        .header("host", "evil.example.net")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_host.status(), 404);
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_request_for_a_foreign_host_is_never_proxied() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = TestOrigin::ok(&[]).await;
    let routes = "  - name: app\n    domains: [shop.example.com]\n    patterns: [\"/*\"]\n    origin_group: web\n";
    let edge = TestEdge::with_routes(
        "",
        &rules(routes, "  []", &group_yaml("web", origin.addr())),
    )
    .await;

    let send = |request: &'static [u8]| async move {
        let mut stream = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    // The URI's authority names the target (RFC 9112 §3.2.2): a host this edge does not serve.
    let answer = send(b"GET http://evil.example.net/steal HTTP/1.1\r\nHost: evil.example.net\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(
        answer.contains("no route for host \"evil.example.net\""),
        "{answer}"
    );
    // Authority and Host disagree: Pingora refuses the request before any hook runs.
    let answer = send(b"GET http://evil.example.net/steal HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_and_loops_are_refused_at_the_edge() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = TestOrigin::ok(&[]).await;
    let routes = "  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\n";
    let edge = TestEdge::with_routes(
        "",
        &rules(routes, "  []", &group_yaml("web", origin.addr())),
    )
    .await;

    let mut stream = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    stream
        .write_all(b"GET /static/../admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let looped = client()
        .get(edge.url("/x"))
        .header("cdn-loop", "other, test-edge")
        .send()
        .await
        .unwrap();
    assert_eq!(looped.status(), 508);
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_rewrite_and_header_actions_apply() {
    let origin = TestOrigin::ok(&[("x-origin-secret", "1")]).await;
    let routes =
        "  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\n    rule_sets: [edits]\n";
    let sets = r#"  - name: edits
    rules:
      - name: moved
        conditions:
          - match: request_path
            operator: begins_with
            values: ["/old-shop/"]
        actions:
          - type: url_redirect
            status: 301
            host: shop.example.com
            path: /shop/
        stop_evaluating: true
      - name: rewrite
        conditions:
          - match: request_path
            operator: begins_with
            values: ["/legacy/"]
        actions:
          - type: url_rewrite
            source_pattern: /legacy/
            destination: /modern/
      - name: headers
        actions:
          - type: modify_request_header
            header_action: overwrite
            name: X-Edge-Tag
            value: blue
          - type: modify_request_header
            header_action: delete
            name: X-Drop-Me
          - type: modify_response_header
            header_action: delete
            name: X-Origin-Secret
          - type: modify_response_header
            header_action: append
            name: X-Served-By
            value: portico
"#;
    let edge =
        TestEdge::with_routes("", &rules(routes, sets, &group_yaml("web", origin.addr()))).await;

    let redirect = client()
        .get(edge.url("/old-shop/a?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 301);
    assert_eq!(
        redirect.headers()["location"],
        "http://shop.example.com/shop/?x=1"
    );
    assert_eq!(origin.count(), 0);

    let response = client()
        .get(edge.url("/legacy/a/b?q=2"))
        .header("x-drop-me", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("x-origin-secret"));
    assert_eq!(response.headers()["x-served-by"], "portico");
    let seen = &origin.requests()[0];
    assert_eq!(seen.uri, "/modern/a/b?q=2");
    assert_eq!(seen.headers["x-edge-tag"], "blue");
    assert!(!seen.headers.contains_key("x-drop-me"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_only_routes_redirect_plain_http_with_308() {
    let origin = TestOrigin::ok(&[]).await;
    let routes = "  - name: secure\n    domains: [secure.example.com]\n    patterns: [\"/*\"]\n    protocols: [https]\n    https_redirect: true\n    origin_group: web\n";
    let edge = TestEdge::with_routes(
        "",
        &rules(routes, "  []", &group_yaml("web", origin.addr())),
    )
    .await;
    let response = client()
        .get(edge.url("/pay?x=1"))
        .header("host", "secure.example.com:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        "https://secure.example.com/pay?x=1"
    );
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_can_send_a_request_to_another_origin_group() {
    let blue = TestOrigin::ok(&[]).await;
    let green = TestOrigin::ok(&[]).await;
    let routes =
        "  - name: all\n    patterns: [\"/*\"]\n    origin_group: blue\n    rule_sets: [canary]\n";
    let sets = "  - name: canary\n    rules:\n      - name: to-green\n        conditions:\n          - match: request_header\n            selector: X-Canary\n            values: [\"yes\"]\n        actions:\n          - type: route_override\n            origin_group: green\n";
    let groups = format!(
        "{}{}",
        group_yaml("blue", blue.addr()),
        group_yaml("green", green.addr())
    );
    let edge = TestEdge::with_routes("", &rules(routes, sets, &groups)).await;
    client().get(edge.url("/a")).send().await.unwrap();
    client()
        .get(edge.url("/a"))
        .header("x-canary", "YES")
        .send()
        .await
        .unwrap();
    assert_eq!((blue.count(), green.count()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_origin_fails_over_for_idempotent_requests_and_the_log_shows_it() {
    let mut alive = TestOrigin::ok(&[]).await;
    let dead = common::health::closed_port();
    let routes = "  - name: all\n    patterns: [\"/*\"]\n    origin_group: pair\n";
    // The dead origin has the better priority, so it is always tried first.
    let groups = format!("  - name: pair\n    max_retries: 1\n    origins:\n      - address: {dead}\n        priority: 1\n      - address: {}\n        priority: 2\n", alive.addr());
    let edge = TestEdge::with_routes("", &rules(routes, "  []", &groups)).await;

    let response = client().get(edge.url("/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(alive.count(), 1);
    let lines = edge
        .wait_for_log(|l| l.iter().any(|r| r["path"] == "/x"))
        .await;
    assert_eq!(lines[0]["attempts"], 2);

    // POST is not idempotent: no retry, a 502 with a reason.
    let post = client()
        .post(edge.url("/y"))
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 502);
    assert_eq!(post.headers()["x-portico-error"], "origin-failure");
    assert_eq!(alive.count(), 1);

    // Every origin down: the retry budget runs out and the edge says so with a 502.
    alive.stop().await;
    let none_left = client().get(edge.url("/z")).send().await.unwrap();
    assert_eq!(none_left.status(), 502);
    assert!(none_left
        .text()
        .await
        .unwrap()
        .contains("could not get a response from the origin"));

    // The edge closes the connection after such an answer, and says so in it: a keep-alive
    // client must not send its next request into a closing connection.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    stream
        .write_all(b"GET /w HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_json_line_per_request() {
    let handler: common::origin::Handler = Arc::new(|_: &Recorded| {
        http::Response::builder()
            .status(201)
            .body(Bytes::from_static(b"made"))
            .unwrap()
    });
    let origin = TestOrigin::start(handler).await;
    let routes = "  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\n";
    let edge = TestEdge::with_routes(
        "",
        &rules(routes, "  []", &group_yaml("web", origin.addr())),
    )
    .await;
    let response = client()
        .put(edge.url("/thing"))
        .body("x")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-portico-ref"]
        .to_str()
        .unwrap()
        .to_string();
    let lines = edge.wait_for_log(|l| !l.is_empty()).await;
    let line = &lines[0];
    assert_eq!(line["request_id"], id.as_str());
    assert_eq!(line["method"], "PUT");
    assert_eq!(line["path"], "/thing");
    assert_eq!(line["status"], 201);
    assert_eq!(line["upstream_status"], 201);
    assert_eq!(line["route"], "all");
    assert_eq!(line["cache"], "CONFIG_NOCACHE");
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["bytes"], 4);
}

/// Sends `request` (given the edge's address, for `Host`) on one connection to an edge
/// in front of a raw origin that answers each request head with `answer(head)`, and
/// returns what the client read to the end and the heads the origin saw.
async fn exchange_with_raw_origin(
    answer: fn(&[u8]) -> &'static str,
    request: impl FnOnce(&str) -> String,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                while let Some(head) = common::read_request_head(&mut stream).await {
                    let _ = seen_tx.send(String::from_utf8_lossy(&head).into_owned());
                    if stream.write_all(answer(&head).as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let routes = "  - name: app\n    patterns: [\"/*\"]\n    origin_group: web\n";
    let edge = TestEdge::with_routes("", &rules(routes, "  []", &group_yaml("web", origin))).await;
    let address = edge.url("").trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(request(&address).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    (String::from_utf8(answer).unwrap(), seen_rx)
}

/// Field names keep the case they came in, both ways, whatever mix of customary, lower and
/// other cases a head has (Pingora keeps a map of names' case only once some name is not
/// in its customary case, see vendor/README.md): the origin sees the client's names as
/// sent, and the client the origin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_names_keep_their_case_both_ways() {
    let (answer, mut seen) = exchange_with_raw_origin(
        |_| {
            "HTTP/1.1 200 OK\r\nServer: raw\r\nx-lower: 1\r\nETag: \"e\"\r\n\
             X-Odd-Case: 2\r\ncontent-type: text/plain\r\nSet-Cookie: a=1\r\n\
             set-cookie: b=2\r\nContent-Length: 2\r\n\r\nok"
        },
        |address| {
            format!(
                "GET /case HTTP/1.1\r\nHost: {address}\r\nuser-agent: t\r\nAccept: */*\r\n\
                 X-Mixed-Case: m\r\nx-lower: l\r\nACCEPT-LANGUAGE: en\r\nConnection: close\r\n\r\n"
            )
        },
    )
    .await;
    assert!(
        answer.contains(
            "\r\nServer: raw\r\nx-lower: 1\r\nETag: \"e\"\r\nX-Odd-Case: 2\r\n\
             content-type: text/plain\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n"
        ),
        "{answer}"
    );
    let seen = seen.recv().await.unwrap();
    assert!(
        seen.contains(
            "\r\nuser-agent: t\r\nAccept: */*\r\nX-Mixed-Case: m\r\nx-lower: l\r\n\
             ACCEPT-LANGUAGE: en\r\n"
        ),
        "{seen}"
    );
}

/// Each request on a kept-alive connection starts from nothing of the one before it
/// (Pingora's request header is emptied and reused by each worker thread, see
/// vendor/README.md): the origin sees each head's own fields, case and target only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_on_a_connection_starts_from_a_clean_header() {
    let (answer, mut seen) = exchange_with_raw_origin(
        |_| "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        |address| {
            format!(
                "GET /first?q=1 HTTP/1.1\r\nHost: {address}\r\nx-odd-CASE: 1\r\n\
                 X-Only-First: a\r\nACCEPT: text/html\r\n\r\n\
                 GET /second HTTP/1.1\r\nHost: {address}\r\nAccept: */*\r\n\r\n\
                 GET /third HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
            )
        },
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{answer}");
    let first = seen.recv().await.unwrap();
    assert!(first.starts_with("GET /first?q=1 HTTP/1.1\r\n"), "{first}");
    assert!(first.contains("\r\nx-odd-CASE: 1\r\nX-Only-First: a\r\nACCEPT: text/html\r\n"));
    let second = seen.recv().await.unwrap();
    assert!(second.starts_with("GET /second HTTP/1.1\r\n"), "{second}");
    assert!(second.contains("\r\nAccept: */*\r\n"), "{second}");
    let third = seen.recv().await.unwrap();
    assert!(third.starts_with("GET /third HTTP/1.1\r\n"), "{third}");
    for later in [&second, &third] {
        let lower = later.to_ascii_lowercase();
        assert!(
            !lower.contains("x-odd-case") && !lower.contains("x-only-first"),
            "{later}"
        );
        assert!(
            !later.contains("ACCEPT:") && !lower.contains("text/html"),
            "{later}"
        );
    }
}

/// An origin's obsolete line folding (RFC 9112 §5.2) reaches the client as one line, each
/// fold one space, while the unfolded fields of the same head and the next response on the
/// connection pass as they came (the edge looks for folds once per head).
#[tokio::test]
async fn an_origins_folded_field_reaches_the_client_on_one_line() {
    let (answer, _) = exchange_with_raw_origin(
        |head| {
            if head.starts_with(b"GET /folded ") {
                "HTTP/1.1 200 OK\r\nX-Before: b\r\nX-Folded: one\r\n  two\r\n\tthree\r\n\
                 X-Tab: a\tb\r\nContent-Length: 2\r\n\r\nok"
            } else {
                "HTTP/1.1 200 OK\r\nX-Plain: p q\r\nContent-Length: 2\r\n\r\nok"
            }
        },
        |address| {
            format!(
                "GET /folded HTTP/1.1\r\nHost: {address}\r\n\r\n\
                 GET /plain HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
            )
        },
    )
    .await;
    let (first, second) = answer.split_at(answer.find("okHTTP/1.1").expect("two responses") + 2);
    assert!(
        first.contains("\r\nX-Before: b\r\nX-Folded: one two three\r\nX-Tab: a\tb\r\n"),
        "{first}"
    );
    assert!(second.contains("\r\nX-Plain: p q\r\n"), "{second}");
}

/// RFC 9112 §9.6: a client that half-closes after a complete request (`printf … | ncat`,
/// `shutdown(SHUT_WR)`) still gets its answer, then the connection closes. Pingora took the
/// FIN for an abort and dropped the request: the client read nothing. Both a pass-through
/// route, a cacheable miss and two pipelined requests; the origin answers only once the
/// client's FIN is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    // One permit per request the client has sent and half-closed after.
    let client_done = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = client_done.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let gate = gate.clone();
            tokio::spawn(async move {
                while common::read_request_head(&mut stream).await.is_some() {
                    gate.acquire().await.unwrap().forget();
                    let answer = "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n\
                                  Content-Length: 8\r\n\r\nanswered";
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let routes = "  - name: cached\n    patterns: [\"/cached/*\"]\n    origin_group: web\n    cache: { enabled: true }\n  - name: app\n    patterns: [\"/*\"]\n    origin_group: web\n";
    let edge = TestEdge::with_routes("", &rules(routes, "  []", &group_yaml("web", origin))).await;
    for paths in [
        &["/passed"][..],
        &["/cached/object"],
        &["/first", "/second"],
    ] {
        let mut stream = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        for path in paths {
            let request = format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
        }
        stream.shutdown().await.unwrap();
        client_done.add_permits(paths.len());
        let answer = common::read_to_close(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{paths:?}: {answer:?}");
        assert!(
            answer.ends_with("\r\n\r\nanswered"),
            "{paths:?}: {answer:?}"
        );
        assert_eq!(
            answer.matches("answered").count(),
            paths.len(),
            "{answer:?}"
        );
    }
}
