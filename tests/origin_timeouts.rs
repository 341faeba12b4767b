//! Origin-side timeouts on raw sockets: a hung origin gets the client a 504 in time
//! (`first_byte`), a body that stalls (`read`) or never ends (`total`) ends the response,
//! and `stale-if-error` covers them.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::edge::{client, node_yaml, TestEdge};
use tokio::io::AsyncWriteExt;

/// How an origin answers its n-th request (0-based).
#[derive(Clone, Copy)]
enum Answer {
    /// The whole response at once.
    Whole(&'static str),
    /// Reads the request and never answers.
    Hang,
    /// A storable header promising 100 bytes, 10 of them, then silence.
    StallBody,
    /// A storable header promising 100 000 bytes, then one byte every 50 ms: never
    /// silent for long, never done.
    Dribble,
    /// Waits this long, then sends the whole response.
    After(Duration, &'static str),
    /// `count` `103 Early Hints`, `gap` apart, then `then` (or silence).
    Hints {
        count: usize,
        gap: Duration,
        then: Option<&'static str>,
    },
}

/// A raw origin answering request `n` with `script[n]` (the last entry repeats).
async fn scripted_origin(script: Vec<Answer>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (script, count) = (script.clone(), count.clone());
            tokio::spawn(async move {
                while common::read_request_head(&mut stream).await.is_some() {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    match script[n.min(script.len() - 1)] {
                        Answer::Whole(response) => {
                            if stream.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        Answer::StallBody => {
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 100\r\n\r\n0123456789")
                                .await;
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        Answer::Dribble => {
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 100000\r\n\r\n")
                                .await;
                            for _ in 0..100_000 {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                if stream.write_all(b"x").await.is_err() {
                                    return;
                                }
                            }
                        }
                        Answer::Hints { count, gap, then } => {
                            for _ in 0..count {
                                let hint = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n";
                                if stream.write_all(hint).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(gap).await;
                            }
                            match then {
                                Some(response) => {
                                    if stream.write_all(response.as_bytes()).await.is_err() {
                                        return;
                                    }
                                }
                                None => tokio::time::sleep(Duration::from_secs(3600)).await,
                            }
                        }
                        Answer::After(wait, response) => {
                            tokio::time::sleep(wait).await;
                            if stream.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn rules(origin: SocketAddr, cache: bool) -> String {
    rules_with(
        origin,
        cache,
        "read: 500ms, first_byte: 500ms, total: 1500ms",
    )
}

/// One route to a one-origin group with `timeouts` (the inside of a YAML flow map).
fn rules_with(origin: SocketAddr, cache: bool, timeouts: &str) -> String {
    format!(
        "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: {cache} }}\norigin_groups:\n  - name: web\n    max_retries: 0\n    timeouts: {{ {timeouts} }}\n    origins:\n      - address: {origin}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_origin_is_a_504_with_a_reason_within_the_first_byte_timeout() {
    let (origin, _) = scripted_origin(vec![Answer::Hang]).await;
    let edge = TestEdge::start(&node_yaml(""), &rules(origin, false)).await;
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), client().get(edge.url("/a")).send())
        .await
        .expect("answered, not held")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(answer.status(), 504);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let body = answer.text().await.unwrap();
    assert!(
        body.contains("ReadTimedout")
            && body.contains("no response head within 500ms of the request (timeouts.first_byte)"),
        "{body}"
    );
}

/// An origin that takes no more of an upload for the whole `write` timeout, and has not
/// begun an answer, is a timed-out origin: a 504 then, not after a `first_byte` wait more
/// (the client waited `write` + `first_byte`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_stops_reading_an_upload_is_a_504_within_the_write_timeout() {
    let (origin, _) = scripted_origin(vec![Answer::Hang]).await;
    let timeouts = "write: 500ms, first_byte: 8s, read: 8s, total: 20s";
    let edge = TestEdge::start(&node_yaml(""), &rules_with(origin, false, timeouts)).await;
    // Far more than the sockets between the client and the origin hold.
    let body = vec![b'u'; 64 << 20];
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(15),
        client().post(edge.url("/upload")).body(body).send(),
    )
    .await
    .expect("answered, not held");
    let took = started.elapsed();
    let answer = answer.expect("an answer while the upload is still going");
    assert_eq!(answer.status(), 504);
    assert!(took < Duration::from_secs(6), "{took:?}");
    let body = answer.text().await.unwrap();
    assert!(body.contains("WriteTimedout"), "{body}");
}

/// `first_byte` and `read` are separate: a long `read` does not hold a hung origin's client,
/// and a short `read` does not cut an origin that takes a while to start its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_bounds_the_wait_for_the_head_and_read_only_the_body() {
    let (hung, _) = scripted_origin(vec![Answer::Hang]).await;
    let edge = TestEdge::start(
        &node_yaml(""),
        &rules_with(hung, false, "read: 60s, first_byte: 500ms"),
    )
    .await;
    let answer = tokio::time::timeout(Duration::from_secs(20), client().get(edge.url("/a")).send())
        .await
        .expect("answered within first_byte, not read")
        .unwrap();
    assert_eq!(answer.status(), 504);
    assert!(answer.text().await.unwrap().contains("timeouts.first_byte"));

    let (slow, _) = scripted_origin(vec![Answer::After(
        Duration::from_secs(1),
        "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate",
    )])
    .await;
    let edge = TestEdge::start(
        &node_yaml(""),
        &rules_with(slow, false, "read: 200ms, first_byte: 30s"),
    )
    .await;
    let answer = client().get(edge.url("/b")).send().await.unwrap();
    assert_eq!(answer.status(), 200, "the head may take up to first_byte");
    assert_eq!(answer.text().await.unwrap(), "late");
}

/// An origin that never falls silent for `read` but never finishes is cut at `total`: the
/// client gets a short body and a closed connection, the log an error that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_never_ends_is_cut_at_the_total_deadline() {
    let (origin, _) = scripted_origin(vec![Answer::Dribble]).await;
    let edge = TestEdge::start(
        &node_yaml(""),
        &rules_with(origin, false, "read: 5s, first_byte: 1s, total: 1s"),
    )
    .await;
    let answer = client().get(edge.url("/endless")).send().await.unwrap();
    assert_eq!(answer.status(), 200, "the header was relayed");
    let body = tokio::time::timeout(Duration::from_secs(20), answer.bytes())
        .await
        .expect("the body ends at total, not after 100 000 bytes at 20 a second");
    assert!(body.is_err(), "a cut body is an error for the client");
    let lines = edge.wait_for_log(|l| !l.is_empty()).await;
    let error = lines[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("timeouts.total"), "{}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_ends_the_response_instead_of_holding_the_client() {
    let (origin, _) = scripted_origin(vec![Answer::StallBody]).await;
    let edge = TestEdge::start(&node_yaml(""), &rules(origin, false)).await;
    let answer = client().get(edge.url("/big")).send().await.unwrap();
    assert_eq!(answer.status(), 200, "the header was relayed");
    let body = tokio::time::timeout(Duration::from_secs(10), answer.bytes())
        .await
        .expect("the body ends, not hangs");
    assert!(
        body.is_err(),
        "a short body is an error for the client, never a complete 200"
    );
    let lines = edge.wait_for_log(|l| !l.is_empty()).await;
    assert!(
        lines[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the log says the response failed: {}",
        lines[0]
    );
}

/// A stored object past `max-age` whose origin now fails. A hung origin never sent a header,
/// so the stale copy answers (at `first_byte`). A body that stalls (`read`) or never ends
/// (`total`) came after a header the client already has, so that response is cut short;
/// but the failed refresh replaces nothing, and the next request (the origin hung) still
/// gets the complete stale copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_covers_a_hung_origin_and_survives_a_stalled_refresh() {
    for script in [
        vec![Answer::Hang],
        vec![Answer::StallBody, Answer::Hang],
        vec![Answer::Dribble, Answer::Hang],
    ] {
        let mut answers = vec![Answer::Whole(
            "HTTP/1.1 200 OK\r\ncache-control: max-age=1, stale-if-error=600\r\ncontent-length: 5\r\n\r\nfresh",
        )];
        answers.extend(script.iter().copied());
        let (origin, seen) = scripted_origin(answers).await;
        let edge = TestEdge::start(&node_yaml(""), &rules(origin, true)).await;
        let first = client().get(edge.url("/s")).send().await.unwrap();
        assert_eq!(first.headers()["x-cache"], "TCP_MISS");
        assert_eq!(first.text().await.unwrap(), "fresh");
        // Wait out max-age (the object's own clock, seconds).
        tokio::time::sleep(Duration::from_millis(2100)).await;
        if matches!(script[0], Answer::StallBody | Answer::Dribble) {
            let cut = client().get(edge.url("/s")).send().await.unwrap();
            let body = tokio::time::timeout(Duration::from_secs(10), cut.bytes()).await;
            assert!(body.expect("ends in time").is_err(), "cut short");
        }
        let stale =
            tokio::time::timeout(Duration::from_secs(10), client().get(edge.url("/s")).send())
                .await
                .expect("answered in time")
                .unwrap();
        assert_eq!(stale.status(), 200);
        assert_eq!(stale.headers()["x-cache"], "TCP_EXPIRED_HIT");
        assert_eq!(stale.text().await.unwrap(), "fresh");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1 + script.len(),
            "each refresh was tried"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_timeout_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("portico.yaml"),
        node_yaml("defaults:\n  origin_timeouts: { connect: 0s }\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/rules.yaml"),
        rules("127.0.0.1:9".parse().unwrap(), false).replace("read: 500ms", "read: 2d"),
    )
    .unwrap();
    let error = portico::config::load(&dir.path().join("portico.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("portico.yaml:9:") && error.contains("defaults.origin_timeouts.connect"),
        "{error}"
    );
    assert!(
        error.contains("rules.yaml:9:") && error.contains("timeouts.read"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_and_total_are_checked_at_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("portico.yaml"),
        node_yaml("defaults:\n  origin_timeouts: { first_byte: 0s, total: 3d }\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/rules.yaml"),
        rules_with(
            "127.0.0.1:9".parse().unwrap(),
            false,
            "first_byte: 10s, total: 5s",
        ),
    )
    .unwrap();
    let error = portico::config::load(&dir.path().join("portico.yaml"))
        .unwrap_err()
        .to_string();
    for expected in [
        "defaults.origin_timeouts.first_byte",
        "defaults.origin_timeouts.total",
        "timeouts.total",
        "cannot be shorter than first_byte",
    ] {
        assert!(error.contains(expected), "{expected}: {error}");
    }
    assert!(error.contains("rules.yaml:9:"), "{error}");
}

/// One route to a one-origin group that does not retry.
fn one_origin_no_retry(origin: SocketAddr) -> String {
    format!(
        "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\norigin_groups:\n  - name: web\n    max_retries: 0\n    origins:\n      - address: {origin}\n"
    )
}

/// An origin that answers the first request of each connection (keep-alive, as far as the
/// edge can tell) and hangs up on the second without a word: every reuse is a keep-alive
/// race lost. A one-origin group must still answer every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_race_is_retried_on_a_fresh_connection_to_the_same_origin() {
    let (origin, connections) = common::counting_origin(|mut stream| async move {
        if common::read_request_head(&mut stream).await.is_none() {
            return;
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
        // The next request arrives, and the connection closes under it.
        let _ = common::read_request_head(&mut stream).await;
    })
    .await;
    let edge = TestEdge::start(&node_yaml(""), &one_origin_no_retry(origin)).await;
    let http = client();
    for n in 0..20 {
        let answer = http.get(edge.url(&format!("/r{n}"))).send().await.unwrap();
        assert_eq!(
            answer.status(),
            200,
            "request {n}: {}",
            answer.text().await.unwrap()
        );
    }
    assert!(
        connections.load(Ordering::SeqCst) >= 10,
        "connections were reused, then renewed"
    );
}

/// An origin that sends bytes past its response's `Content-Length`: the client gets the
/// body and nothing more, and the connection those bytes polluted is not reused (they would
/// be read as the next response's head). The edge reads an origin's body up to its length
/// and no further, so the bytes stay on the connection, where the pool's check finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_an_origin_sends_past_its_body_reach_no_client_and_its_connection_is_not_reused() {
    let (origin, connections) = common::counting_origin(|mut stream| async move {
        while common::read_request_head(&mut stream).await.is_some() {
            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 204 Nope\r\n\r\n";
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
    })
    .await;
    let edge = TestEdge::start(&node_yaml(""), &one_origin_no_retry(origin)).await;
    let http = client();
    for n in 0..3 {
        let answer = http.get(edge.url(&format!("/r{n}"))).send().await.unwrap();
        assert_eq!(answer.status(), 200, "request {n}");
        assert_eq!(answer.text().await.unwrap(), "ok", "request {n}");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        3,
        "each request had a connection of its own"
    );
}

/// One origin connection, as the test sees it: `close` makes the origin close its side,
/// `closed` says when the edge closed its side in turn.
struct OriginConnection {
    close: tokio::sync::oneshot::Sender<()>,
    closed: tokio::sync::oneshot::Receiver<()>,
}

/// An origin that answers every request on a connection with `ok` until told to close
/// it; each connection it accepts is sent on the returned channel.
async fn closing_origin() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<OriginConnection>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let (accepted, connections) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (close, mut close_asked) = tokio::sync::oneshot::channel();
            let (closed_by_edge, closed) = tokio::sync::oneshot::channel();
            let _ = accepted.send(OriginConnection { close, closed });
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        head = common::read_request_head(&mut stream) => {
                            if head.is_none() {
                                return;
                            }
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                        _ = &mut close_asked => break,
                    }
                }
                let _ = stream.shutdown().await;
                let mut rest = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
                let _ = closed_by_edge.send(());
            });
        }
    });
    (origin, connections)
}

/// The edge keeps an origin connection for the next request, and closes it soon after
/// the origin closes its side (the edge's pool sweeps idle connections every second),
/// not at its next request: a server that closes idle connections must not leave the
/// edge holding sockets in CLOSE_WAIT. The next request goes out on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_origin_connection_is_reused_and_closed_when_the_origin_closes_it() {
    let (origin, mut connections) = closing_origin().await;
    let rules = format!(
        "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\norigin_groups:\n  - name: web\n    origins:\n      - address: {origin}\n"
    );
    let edge = TestEdge::start(&node_yaml(""), &rules).await;
    let http = client();
    let get = |path: &'static str| {
        let request = http.get(edge.url(path)).send();
        async move {
            let answer = request.await.unwrap();
            assert_eq!(answer.status(), 200, "{path}");
            assert_eq!(answer.text().await.unwrap(), "ok", "{path}");
        }
    };
    get("/first").await;
    let first = connections.recv().await.unwrap();
    get("/again").await;
    // A new connection is announced before its first answer is written.
    assert!(
        connections.try_recv().is_err(),
        "the second request reused the connection"
    );

    first.close.send(()).unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), first.closed).await;
    assert!(
        matches!(closed, Ok(Ok(()))),
        "the edge kept the closed connection open for {:?}",
        started.elapsed()
    );

    get("/second").await;
    assert!(connections.try_recv().is_ok(), "a second connection");
}

/// A client that closes its side while the origin has not answered may only have
/// half-closed (RFC 9112 §9.6): the request runs on to the origin's answer, which is
/// written and logged, and then the connection ends. (Pingora took the FIN for an abort and
/// closed the origin's connection at once.) A client really gone fails that write; the
/// origin's deadlines bound the wait before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_before_the_answer_still_has_its_request_completed() {
    let (seen, mut events) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let go = Arc::new(tokio::sync::Notify::new());
    let answer_now = go.clone();
    let (origin, _) = common::counting_origin(move |mut stream| {
        let seen = seen.clone();
        let answer_now = answer_now.clone();
        async move {
            if common::read_request_head(&mut stream).await.is_none() {
                return;
            }
            let _ = seen.send("request");
            answer_now.notified().await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            let mut rest = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
        }
    })
    .await;
    let rules = rules_with(origin, false, "first_byte: 60s, total: 120s");
    let edge = TestEdge::start(&node_yaml(""), &rules).await;
    let mut client = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(
        arrived,
        Ok(Some("request")),
        "the request reached the origin"
    );
    drop(client);
    go.notify_one();
    let lines = edge
        .wait_for_log(|l| l.iter().any(|r| r["path"] == "/slow"))
        .await;
    assert_eq!(lines[0]["upstream_status"], 200, "{:?}", lines[0]);
}

/// A request over a raw connection in HTTP version `version`; all the edge answers.
async fn raw_answer(edge: &TestEdge, version: &str) -> String {
    let request = format!("GET /h HTTP/{version}\r\nHost: t.example\r\nConnection: close\r\n\r\n");
    common::raw_exchange(edge.addr, request.as_bytes()).await
}

/// RFC 9110 §15.2: interim responses are passed on, but not without end (an origin sent
/// 100,000 `103`s, all copied to the client), and never to an HTTP/1.0 client. The limit
/// holds however the origin's bytes arrive: each response in its own write, or all in one
/// (the edge then reads them as one batch; a limit applied while the batch was filtered
/// dropped the batch's first ones too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_are_relayed_up_to_a_limit_and_never_to_http_1_0() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let hint = "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n";
    let one_write = format!("{}{ok}", hint.repeat(20)).leak();
    let apart = Answer::Hints {
        count: 20,
        gap: Duration::ZERO,
        then: Some(ok),
    };
    for answer in [apart, Answer::Whole(one_write)] {
        let (origin, _) = scripted_origin(vec![answer]).await;
        let edge = TestEdge::start(&node_yaml(""), &rules(origin, false)).await;
        let answer = raw_answer(&edge, "1.1").await;
        assert_eq!(answer.matches("HTTP/1.1 103 ").count(), 8, "{answer}");
        assert!(
            answer.contains("200 OK\r\n") && answer.ends_with("ok"),
            "{answer}"
        );
        let old = raw_answer(&edge, "1.0").await;
        assert!(!old.contains(" 103 "), "{old}");
        assert!(old.contains(" 200 OK\r\n") && old.ends_with("ok"), "{old}");
    }
}

/// `first_byte` waits for the final response head: interim responses do not stop it, and
/// the client, which had its interim responses, then gets the 504 with its reason (Pingora
/// wrote no error response once any head, even an interim one, had gone out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_do_not_hold_a_request_past_first_byte() {
    let hints = Answer::Hints {
        count: 1000,
        gap: Duration::from_millis(100),
        then: None,
    };
    let (origin, _) = scripted_origin(vec![hints]).await;
    let edge = TestEdge::start(&node_yaml(""), &rules(origin, false)).await;
    let started = Instant::now();
    let answer = raw_answer(&edge, "1.1").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!answer.contains(" 200 "), "{answer}");
    let hints = answer.matches("HTTP/1.1 103 ").count();
    assert!((1..=8).contains(&hints), "{hints} hints: {answer}");
    let last_head = &answer[answer.rfind("HTTP/1.1 ").unwrap()..];
    assert!(last_head.starts_with("HTTP/1.1 504 "), "{answer}");
    assert!(last_head.contains("first_byte"), "{answer}");
}
