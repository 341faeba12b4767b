//! Client-facing limits over raw sockets: the whole request head has a deadline (not just
//! each read), keep-alive connections an idle timeout, heads a size and a line count,
//! targets a length; methods and framings the edge does not implement are refused; and
//! pipelined requests are answered in order. Nothing refused reaches the origin.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::edge::{group_yaml, TestEdge};
use common::h2::{H2Edge, WWW};
use common::origin::TestOrigin;
use common::process::{first_answer, free_port, Running};
use common::tls::{tls_node_yaml, TestPki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One route on `/*` to group `web` at `origin`, caching off.
fn site(origin: SocketAddr) -> String {
    format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: false }}\nrule_sets: []\norigin_groups:\n{}",
        group_yaml("web", origin)
    )
}

/// Reads until the edge closes the connection (or resets it), at most `limit`; `None` if
/// it is still open then.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut chunk).await {
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&answer).into_owned())
}

/// Sends `bytes` on a new connection and reads the answer until the edge closes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("the edge kept the connection open")
}

/// Reads one whole response whose body is `Content-Length`-framed.
async fn read_response(stream: &mut TcpStream) -> String {
    read_responses(stream, 1).await.remove(0)
}

/// Reads `count` whole responses whose bodies are `Content-Length`-framed. Pipelined ones
/// may come in one read: what a read brings past one response is the start of the next.
async fn read_responses(stream: &mut TcpStream, count: usize) -> Vec<String> {
    let mut data = Vec::new();
    let mut responses = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while responses.len() < count {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if data.len() >= end + 4 + length {
                let rest = data.split_off(end + 4 + length);
                responses.push(String::from_utf8_lossy(&data).into_owned());
                data = rest;
                continue;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n @ 1..)) => data.extend_from_slice(&chunk[..n]),
            other => panic!(
                "no whole response ({other:?}) after {} of {count}: {}",
                responses.len(),
                String::from_utf8_lossy(&data)
            ),
        }
    }
    responses
}

/// Writes the start of a request head, then one more byte every `every` until the edge
/// closes the connection; returns what it answered and how long that took.
async fn slowloris(addr: SocketAddr, every: Duration) -> (String, Duration) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => match read {
                Ok(n @ 1..) => answer.extend_from_slice(&chunk[..n]),
                _ => break,
            },
            _ = ticker.tick() => {
                // Never a whole header line: the head can never complete.
                let _ = stream.write_all(b"x").await;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still open after 30 s"
        );
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

fn assert_refused(answer: &str, status: u16, error: &str, reason: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status} ")),
        "expected {status}: {answer}"
    );
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(
        lower.contains(&format!("\r\nx-portico-error: {error}\r\n")),
        "expected X-Portico-Error {error}: {answer}"
    );
    assert!(
        answer.contains(reason),
        "expected \"{reason}\" in: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_a_byte_at_a_time_is_closed_at_its_deadline() {
    let origin = TestOrigin::ok(&[]).await;
    let edge = TestEdge::with_routes(
        "limits:\n  request_head_timeout: 1s\n",
        &site(origin.addr()),
    )
    .await;
    // A byte every 200 ms: Pingora's per-read timer (60 s) would never fire.
    let (answer, took) = slowloris(edge.addr, Duration::from_millis(200)).await;
    assert_refused(
        &answer,
        408,
        "request-head-timeout",
        "the request head did not arrive within 1s",
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_deadline_spares_slow_bodies_and_keep_alive_waits() {
    let origin = TestOrigin::ok(&[]).await;
    let edge = TestEdge::with_routes(
        "limits:\n  request_head_timeout: 1s\n  keepalive_timeout: 3s\n",
        &site(origin.addr()),
    )
    .await;
    let mut stream = TcpStream::connect(edge.addr).await.unwrap();
    // A body arriving over 1.5 s, past the head deadline: only the head has one.
    stream
        .write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n")
        .await
        .unwrap();
    let mut ticker = tokio::time::interval(Duration::from_millis(300));
    for byte in b"abcdef" {
        ticker.tick().await;
        stream.write_all(&[*byte]).await.unwrap();
    }
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Idle for longer than the head deadline, shorter than the keep-alive timeout: the next
    // request's head counts from its first byte.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream
        .write_all(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(origin.requests()[0].body, "abcdef");
    assert_eq!(origin.count_path("/second"), 1);

    // Then nothing: the edge closes the idle connection after keepalive_timeout, quietly.
    let idle = Instant::now();
    let rest = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("the idle connection was never closed");
    assert_eq!(rest, "", "an idle close sends nothing");
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );
}

/// Sends a `Content-Length: {length}` POST whose body comes `chunk` bytes every `every`
/// until the edge closes; returns what it answered and how long that took from the head.
async fn dribble_body(
    addr: SocketAddr,
    length: usize,
    chunk: usize,
    every: Duration,
) -> (String, Duration) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut sent = 0;
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(n @ 1..) => answer.extend_from_slice(&buffer[..n]),
                _ => break,
            },
            _ = ticker.tick(), if sent < length => {
                let n = chunk.min(length - sent);
                let _ = stream.write_all(&vec![b'x'; n]).await;
                sent += n;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still open after 30 s"
        );
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// A request body that dribbles (slow POST, "R-U-Dead-Yet") is cut with a 408 once its
/// waits use up `request_body_timeout` and what its bytes earned at `request_body_min_rate`;
/// Pingora's per-read timer alone never cut it. A body that keeps coming at the rate is
/// taken however long it takes, and an origin slow to answer after the body is not the
/// client's wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_dribbles_gets_408_and_one_that_flows_is_taken() {
    // Reads the whole body, then takes 1.5 s to answer how much it got: the client waits
    // on the origin after its body, which is not a body's wait.
    let (origin, _) = common::counting_origin(|mut stream| async move {
        let Some(head) = common::read_request_head(&mut stream).await else {
            return;
        };
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let length: usize = String::from_utf8_lossy(&head[..end])
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = head[end..].to_vec();
        let mut chunk = [0u8; 4096];
        while body.len() < length {
            match stream.read(&mut chunk).await {
                Ok(n @ 1..) => body.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let answer = format!("{} bytes", body.len());
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
    })
    .await;
    let edge = TestEdge::with_routes(
        "limits:\n  request_body_timeout: 1s\n  request_body_min_rate: 100\n",
        &site(origin),
    )
    .await;
    // 5 bytes a second against 100: cut about 1.1 s in.
    let (answer, took) = dribble_body(edge.addr, 1000, 1, Duration::from_millis(200)).await;
    assert_refused(&answer, 408, "request-body-timeout", "request_body_timeout");
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    // 1,500 bytes a second: the whole body takes 2 s, past the bare 1 s, and is taken.
    let (answer, _) = dribble_body(edge.addr, 3000, 300, Duration::from_millis(200)).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("3000 bytes"), "{answer}");
}

/// Each body has its own budget, also a request's pipelined behind the last one (whose
/// head the edge read with the previous body, not on its own): the first body's waits are
/// not charged to the second. Budget 2 s, no rate: the first body waits 1.6 s, the second
/// 1 s after the first answer; charged together they would pass 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_requests_body_has_a_budget_of_its_own() {
    let origin = TestOrigin::ok(&[]).await;
    let edge = TestEdge::with_routes(
        "limits:\n  request_body_timeout: 2s\n  request_body_min_rate: 0\n",
        &site(origin.addr()),
    )
    .await;
    let mut stream = TcpStream::connect(edge.addr).await.unwrap();
    stream
        .write_all(b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // The first body's byte, and the second request's head in the same write.
    stream
        .write_all(
            b"xPOST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let _ = stream.write_all(b"y").await;
    let second = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("the edge kept the connection open");
    assert!(second.starts_with("HTTP/1.1 200 "), "{second}");
    assert_eq!(origin.count_path("/second"), 1);
}

/// HTTP/2 connections have the HTTP/1 deadlines too: a client that opens one and sends no
/// preface is closed after `request_head_timeout`, and one whose streams are all done after
/// `keepalive_timeout` (Pingora kept both for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_have_head_and_keep_alive_deadlines() {
    let origin = TestOrigin::ok(&[]).await;
    let h2 = H2Edge::start(
        origin.addr(),
        "request_head_timeout: 1s\n  keepalive_timeout: 1s",
    )
    .await;
    let mut silent = h2.connect().await;
    let started = Instant::now();
    // The edge sends its settings, then closes.
    let mut sent = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut sent)).await;
    assert!(read.is_ok(), "a connection that sent no preface was kept");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let (client, connection) = h2::client::handshake(h2.connect().await).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get(format!("https://{WWW}/one"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("an idle HTTP/2 connection was kept")
        .unwrap()
        .ok();
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "{:?}",
        idle.elapsed()
    );
}

/// Over HTTP/2 a request body had no bound at all (Pingora read its DATA frames without a
/// timer): the same budget applies, and a stream whose body dribbles gets 408; one whose
/// body flows is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_that_dribbles_gets_408() {
    let origin = TestOrigin::ok(&[]).await;
    let h2 = H2Edge::start(
        origin.addr(),
        "request_body_timeout: 1s\n  request_body_min_rate: 100",
    )
    .await;
    let (client, connection) = h2::client::handshake(h2.connect().await).await.unwrap();
    tokio::spawn(connection);
    let origin = &origin;
    // Sends `length` bytes, `chunk` at a time every `every`; the response's status, its
    // X-Portico-Error and when it came.
    let post = |length: usize, chunk: usize, every: Duration| {
        let client = client.clone();
        async move {
            let mut client = client.ready().await.unwrap();
            let request = http::Request::post(format!("https://{WWW}/up"))
                .body(())
                .unwrap();
            let (response, mut body) = client.send_request(request, false).unwrap();
            let started = Instant::now();
            let send = async {
                let mut ticker = tokio::time::interval(every);
                let mut sent = 0;
                while sent < length {
                    ticker.tick().await;
                    let n = chunk.min(length - sent);
                    sent += n;
                    body.send_data(vec![b'x'; n].into(), sent == length)
                        .unwrap();
                }
                std::future::pending::<()>().await
            };
            let response = tokio::select! {
                response = response => response.unwrap(),
                _ = send => unreachable!(),
            };
            let error = response
                .headers()
                .get("x-portico-error")
                .map(|v| v.to_str().unwrap().to_string());
            (response.status().as_u16(), error, started.elapsed())
        }
    };
    let (status, error, took) = post(1000, 1, Duration::from_millis(200)).await;
    assert_eq!(
        (status, error.as_deref()),
        (408, Some("request-body-timeout"))
    );
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    let (status, _, _) = post(3000, 300, Duration::from_millis(200)).await;
    assert_eq!(status, 200);
    assert_eq!(origin.requests().last().unwrap().body.len(), 3000);
}

/// RFC 9113 §8.2: an HTTP/2 request's fields go to an HTTP/1.1 origin as that needs them.
/// Its `cookie` fields (HTTP/2 clients send one per cookie) arrive as one line, joined with
/// "; " (an origin that reads one `Cookie` line lost the rest); a value that begins or ends
/// with whitespace (which HTTP/1.1 would trim away) is malformed: 400, nothing forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_fields_reach_the_origin_as_http1_needs_them() {
    let origin = TestOrigin::ok(&[]).await;
    let h2 = H2Edge::start(origin.addr(), "max_headers: 100").await;
    let (client, connection) = h2::client::handshake(h2.connect().await).await.unwrap();
    tokio::spawn(connection);
    let send = |fields: &[(&'static str, &'static str)]| {
        let client = client.clone();
        let mut request = http::Request::get(format!("https://{WWW}/fields"));
        for (name, value) in fields {
            request = request.header(*name, http::HeaderValue::from_static(value));
        }
        async move {
            let mut client = client.ready().await.unwrap();
            let (response, _) = client
                .send_request(request.body(()).unwrap(), true)
                .unwrap();
            response.await.unwrap()
        }
    };
    let response = send(&[("cookie", "a=1"), ("x-a", "1"), ("cookie", "b=2")]).await;
    assert_eq!(response.status(), 200);
    let received = origin.requests().pop().unwrap();
    let cookies: Vec<_> = received.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2"]);
    for padded in [" a", "a\t"] {
        let response = send(&[("x-a", padded)]).await;
        assert_eq!(response.status(), 400, "{padded:?}");
        assert_eq!(response.headers()["x-portico-error"], "padded-field-value");
    }
    assert_eq!(origin.count(), 1, "nothing malformed was forwarded");
}

/// RFC 9113 §8.1.1: a request that says `content-length: 0` and then sends DATA is
/// malformed. Pingora forwarded it at once, as a bodiless request the origin acted on;
/// now it waits for the stream's end: the body gets the request refused (or its stream
/// reset by the h2 library), and nothing reaches the origin. One whose stream ends with
/// an empty DATA frame goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_after_content_length_zero_is_never_forwarded() {
    let origin = TestOrigin::ok(&[]).await;
    let h2 = H2Edge::start(origin.addr(), "max_headers: 100").await;
    let (client, _connection) = h2.client().await;
    let post = |path: &'static str, body: &'static [u8]| {
        let (client, origin) = (client.clone(), &origin);
        async move {
            let mut client = client.ready().await.unwrap();
            let request = http::Request::post(format!("https://{WWW}{path}"))
                .header("content-length", "0")
                .body(())
                .unwrap();
            let (response, mut stream) = client.send_request(request, false).unwrap();
            // The body comes late: by then Pingora had sent the request on.
            let deadline = Instant::now() + Duration::from_millis(500);
            while origin.count_path(path) == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // (Fails if the stream is already over: answered without its body.)
            let _ = stream.send_data(bytes::Bytes::from_static(body), true);
            match response.await {
                Ok(response) => response.status().as_u16(),
                Err(e) => {
                    assert!(e.is_reset(), "{e}");
                    0
                }
            }
        }
    };
    let refused = post("/malformed", b"a body after all").await;
    assert!(matches!(refused, 0 | 400), "{refused}");
    assert_eq!(post("/well-formed", b"").await, 200);
    let forwarded: Vec<_> = origin.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        forwarded,
        ["/well-formed"],
        "the malformed request was forwarded"
    );
}

/// A body over `max_request_body` gets 413 with its reason: at once when its
/// `Content-Length` says so (nothing reaches the origin), and as soon as a chunked body
/// streams past it (the origin never gets the body's end). A body of the limit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_request_body_gets_413() {
    let origin = TestOrigin::ok(&[]).await;
    let edge =
        TestEdge::with_routes("limits:\n  max_request_body: 1KiB\n", &site(origin.addr())).await;
    let announced = exchange(
        edge.addr,
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_refused(
        &announced,
        413,
        "request-body-too-large",
        "limits.max_request_body",
    );
    assert_eq!(origin.count(), 0, "{:?}", origin.requests());
    let chunk = format!("200\r\n{}\r\n", "x".repeat(512));
    let chunked = |chunks: usize| {
        format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
            chunk.repeat(chunks)
        )
    };
    let streamed = exchange(edge.addr, chunked(3).as_bytes()).await;
    assert_refused(
        &streamed,
        413,
        "request-body-too-large",
        "limits.max_request_body",
    );
    // The origin's harness records a body it could not read whole as empty.
    let cut = origin.requests();
    assert!(cut.iter().all(|seen| seen.body.is_empty()), "{cut:?}");
    let within = exchange(edge.addr, chunked(2).as_bytes()).await;
    assert!(within.starts_with("HTTP/1.1 200 "), "{within}");
    // (The cut request may be recorded after this one: its end is seen when the edge
    // drops its connection.)
    let whole = origin
        .requests()
        .iter()
        .filter(|seen| seen.body.len() == 1024)
        .count();
    assert_eq!(whole, 1, "{:?}", origin.requests());
}

/// Bytes of a body too large for the sockets' buffers on loopback: the edge's writes wait.
const UNREAD_BODY: usize = 32 << 20;

/// Asks `path` on a new connection, reads nothing for `stall`, then reads until the edge
/// closes (10 s at most); the bytes that came.
async fn read_after_stalling(edge: &TestEdge, path: &str, stall: Duration) -> usize {
    let mut stream = TcpStream::connect(edge.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // The stall is the case under test: a client that stops reading.
    tokio::time::sleep(stall).await;
    let mut got = 0;
    let mut chunk = vec![0u8; 1 << 16];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(n @ 1..) = stream.read(&mut chunk).await {
            got += n;
        }
    });
    assert!(read.await.is_ok(), "the edge kept the connection open");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_send_timeout() {
    let origin = TestOrigin::start(std::sync::Arc::new(|_: &common::origin::Recorded| {
        let mut response = http::Response::new(bytes::Bytes::from(vec![b'x'; UNREAD_BODY]));
        response
            .headers_mut()
            .insert("cache-control", "max-age=600".parse().unwrap());
        response
    }))
    .await;
    let rules = format!(
        "routes:\n  - name: hits\n    patterns: [\"/hit/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: false }}\nrule_sets: []\norigin_groups:\n{}",
        group_yaml("web", origin.addr())
    );
    let node = "limits:\n  send_timeout: 500ms\ncache:\n  max_object_bytes: 64MiB\n";
    let edge = TestEdge::with_routes(node, &rules).await;
    // A client that reads keeps up, however long the whole body takes.
    let whole = read_after_stalling(&edge, "/hit/a", Duration::ZERO).await;
    assert!(whole > UNREAD_BODY, "a reading client got {whole} bytes");
    // One that stops reading, on a hit (no origin timer runs) and on pass-through.
    for path in ["/hit/a", "/pass"] {
        let got = read_after_stalling(&edge, path, Duration::from_secs(3)).await;
        assert!(
            got < UNREAD_BODY,
            "{path}: the edge waited, {got} bytes came"
        );
    }
}

/// A slow reader that keeps reading, past `send_timeout` many times over, is not cut: Linux
/// wakes a writer only when half its send buffer is free (megabytes, seconds apart at this
/// rate: the client was cut after 4 MB), so when `send_timeout` passes the edge asks the
/// client's TCP whether it took anything meanwhile (`TCP_INFO`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_that_keeps_reading_is_not_cut() {
    let origin = TestOrigin::start(std::sync::Arc::new(|_: &common::origin::Recorded| {
        http::Response::new(bytes::Bytes::from(vec![b'x'; UNREAD_BODY]))
    }))
    .await;
    let node = "limits:\n  send_timeout: 3s\n";
    let edge = TestEdge::with_routes(node, &site(origin.addr())).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    let mut stream = socket.connect(edge.addr).await.unwrap();
    let request = "GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    // About 160 KiB a second (well over what a wait needs) for seven seconds, then the rest.
    let got = common::read_slowly_then_drain(&mut stream, Duration::from_secs(7)).await;
    assert!(
        got > UNREAD_BODY,
        "the edge cut the client after {got} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_the_limits_get_431_414_400_or_501_and_reach_no_origin() {
    let origin = TestOrigin::ok(&[]).await;
    let edge = TestEdge::with_routes(
        "limits:\n  max_request_head: 4KiB\n  max_headers: 10\n  max_uri: 1KiB\n",
        &site(origin.addr()),
    )
    .await;
    // Exactly max_request_head bytes and no end of head yet: the edge has read all of it
    // (so its close is a FIN, not a reset) when it refuses to read on.
    let start = "GET / HTTP/1.1\r\nHost: a\r\nx-big: ";
    let big = format!("{start}{}", "a".repeat(4096 - start.len()));
    let eleven: String = (0..10).map(|i| format!("x-h{i}: v\r\n")).collect();
    let eleven = format!("GET / HTTP/1.1\r\nHost: a\r\n{eleven}\r\n");
    let many: String = (0..300).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(1024));
    let long_method = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "M".repeat(40));
    let cases: Vec<(&str, &[u8], u16, &str, &str)> = vec![
        (
            "a head over max_request_head",
            big.as_bytes(),
            431,
            "request-head-too-large",
            "the request head is larger than 4096 bytes",
        ),
        (
            "more header lines than max_headers",
            eleven.as_bytes(),
            431,
            "too-many-headers",
            "the request has 11 header fields; this edge takes at most 10",
        ),
        (
            "more header lines than Pingora parses",
            many.as_bytes(),
            431,
            "too-many-headers",
            "more header fields than this edge takes (10)",
        ),
        (
            "a target over max_uri",
            long_uri.as_bytes(),
            414,
            "uri-too-long",
            "the request target is 1025 bytes; this edge takes at most 1024",
        ),
        (
            "a 40-byte method",
            long_method.as_bytes(),
            400,
            "bad-method",
            "the method is longer than 32 bytes",
        ),
        (
            "TRACE",
            b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n",
            501,
            "method-not-implemented",
            "the method TRACE is not implemented",
        ),
        (
            "a lower-case method",
            b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
            501,
            "method-not-implemented",
            "the method get is not implemented",
        ),
    ];
    for (case, bytes, status, error, reason) in cases {
        let answer = exchange(edge.addr, bytes).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{case}: {answer}"
        );
        assert_refused(&answer, status, error, reason);
    }
    assert_eq!(origin.count(), 0, "a refused request reached the origin");
    // Within the limits, all is well.
    let fine = exchange(
        edge.addr,
        b"GET /fine HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framings_the_edge_does_not_implement_are_refused() {
    let origin = TestOrigin::ok(&[]).await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    let cases: [(&str, &[u8], u16, &str); 4] = [
        (
            "gzip, chunked",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            501,
            "transfer-coding-not-implemented",
        ),
        (
            "chunked twice",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            501,
            "transfer-coding-not-implemented",
        ),
        (
            "Content-Length 2^63",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\nabc",
            400,
            "bad-content-length",
        ),
        (
            "Content-Length 2^64-1",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\nabc",
            400,
            "bad-content-length",
        ),
    ];
    for (case, bytes, status, error) in cases {
        let answer = exchange(edge.addr, bytes).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{case}: {answer}"
        );
        assert_refused(&answer, status, error, "");
    }
    assert_eq!(origin.count(), 0, "a refused request reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let origin = TestOrigin::ok(&[]).await;
    let edge = TestEdge::with_routes("", &site(origin.addr())).await;
    let mut stream = TcpStream::connect(edge.addr).await.unwrap();
    stream
        .write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("the edge kept the connection open");
    let bodies: Vec<&str> = ["origin /one", "origin /two", "origin /three"]
        .into_iter()
        .filter(|body| all.contains(body))
        .collect();
    assert_eq!(bodies.len(), 3, "{all}");
    let at = |body: &str| all.find(body).unwrap();
    assert!(
        at("origin /one") < at("origin /two") && at("origin /two") < at("origin /three"),
        "{all}"
    );
    assert_eq!(all.matches("HTTP/1.1 200 ").count(), 3, "{all}");
}

/// After an answer of the edge's own, a connection is kept for the next request only if
/// nothing of the request is left unread: a body the edge did not read is not drained on
/// a guess but ends the connection, so bytes in it that look like a request are never
/// taken for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_edges_own_answer_an_unread_body_closes_the_connection() {
    let origin = TestOrigin::ok(&[]).await;
    let rules = format!(
        "routes:\n  - name: site\n    domains: [a]\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: false }}\nrule_sets: []\norigin_groups:\n{}",
        group_yaml("web", origin.addr())
    );
    let edge = TestEdge::with_routes("", &rules).await;
    let exchange = |requests: String| async move {
        let mut stream = TcpStream::connect(edge.addr).await.unwrap();
        stream.write_all(requests.as_bytes()).await.unwrap();
        read_to_close(&mut stream, Duration::from_secs(10))
            .await
            .expect("the edge kept the connection open")
    };

    let without_body = "GET /one HTTP/1.1\r\nHost: elsewhere\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let all = exchange(without_body.to_string()).await;
    assert!(all.starts_with("HTTP/1.1 404 "), "{all}");
    assert!(all.contains("origin /two"), "{all}");
    assert_eq!(all.matches("HTTP/1.1 ").count(), 2, "{all}");

    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let with_body = format!(
        "POST /one HTTP/1.1\r\nHost: elsewhere\r\nContent-Length: {}\r\n\r\n{smuggled}GET /three HTTP/1.1\r\nHost: a\r\n\r\n",
        smuggled.len()
    );
    let all = exchange(with_body).await;
    assert!(all.starts_with("HTTP/1.1 404 "), "{all}");
    assert!(all.contains("\r\nConnection: close\r\n"), "{all}");
    assert_eq!(all.matches("HTTP/1.1 ").count(), 1, "{all}");
    let paths: Vec<String> = origin.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(paths, ["/two"]);
}

/// `portico run` as a child process, node `name` with `extra` node settings and `rules`,
/// once its listener answers: the temp dir and the process (both kept for the test's
/// length) and the listener's address.
async fn portico_run(
    name: &str,
    extra: &str,
    rules: &str,
) -> (tempfile::TempDir, Running, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("portico.yaml"),
        format!("name: {name}\nlisteners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin_port}\nserver:\n  threads: 1\n  upgrade_sock: upgrade.sock\nrules_dir: rules\naccess_log: access.log\n{extra}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("rules/rules.yaml"), rules).unwrap();
    let conf = dir.path().join("portico.yaml").display().to_string();
    let node = Running::start(&["run", "-c", &conf], dir.path(), "run");
    let client = reqwest::Client::new();
    let ready = first_answer(&client, &format!("http://127.0.0.1:{port}/ready")).await;
    assert_eq!(ready.status(), 200);
    (dir, node, format!("127.0.0.1:{port}").parse().unwrap())
}

/// Under `portico run` (Pingora's listeners: each client stream has a write buffer), a
/// kept-alive connection that idles frees its write buffer and allocates it again for the
/// next response: responses after an idle wait come whole, whether smaller or larger than
/// the buffer (1,460 bytes), and so do pipelined ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_portico_run_idle_keep_alive_connections_answer_whole() {
    let origin = TestOrigin::start(std::sync::Arc::new(|req: &common::origin::Recorded| {
        let size: usize = req.path().trim_start_matches("/size/").parse().unwrap_or(1);
        hyper::Response::new(bytes::Bytes::from(vec![b'x'; size]))
    }))
    .await;
    let (_dir, _node, addr) = portico_run("idle-edge", "", &site(origin.addr())).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body_of = |response: &str, size: usize| {
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(body, "x".repeat(size), "{response}");
    };
    // Idle past the point where the edge frees the write buffer (one second), or not.
    let idles = [1200, 1200, 50, 50];
    for (size, idle) in [10, 5000, 1460, 3].into_iter().zip(idles) {
        stream
            .write_all(format!("GET /size/{size} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        body_of(&read_response(&mut stream).await, size);
        tokio::time::sleep(Duration::from_millis(idle)).await;
    }
    stream
        .write_all(
            b"GET /size/2000 HTTP/1.1\r\nHost: a\r\n\r\nGET /size/7 HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .unwrap();
    let pipelined = read_responses(&mut stream, 2).await;
    body_of(&pipelined[0], 2000);
    body_of(&pipelined[1], 7);
    let sized = origin.requests();
    let sized = sized.iter().filter(|r| r.path().starts_with("/size/"));
    assert_eq!(sized.count(), 6);
}

/// `portico run` hosts the proxy on Pingora's own listeners: the deadline holds there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_portico_run_a_slow_head_is_closed_at_its_deadline() {
    let origin = TestOrigin::ok(&[]).await;
    let extra = "limits:\n  request_head_timeout: 1s\n";
    let (_dir, _node, addr) = portico_run("limits-edge", extra, &site(origin.addr())).await;
    let (answer, took) = slowloris(addr, Duration::from_millis(200)).await;
    assert_refused(
        &answer,
        408,
        "request-head-timeout",
        "the request head did not arrive within 1s",
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    assert_eq!(origin.count_path("/slow"), 0);
}

/// Opens `n` connections from `from` (a loopback address) that send nothing; returns them
/// split into those the edge closed within `within` and those it kept open.
async fn flood(
    addr: SocketAddr,
    from: std::net::IpAddr,
    n: usize,
    within: Duration,
) -> (usize, Vec<TcpStream>) {
    let mut streams = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        streams.push(socket.connect(addr).await.unwrap());
    }
    // All at once: each either reads EOF (closed) or times out (held).
    let checks = streams.into_iter().map(|mut stream| async move {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(within, stream.read(&mut byte)).await {
            Ok(_) => None,
            Err(_) => Some(stream),
        }
    });
    let results = futures_util::future::join_all(checks).await;
    let closed = results.iter().filter(|r| r.is_none()).count();
    (closed, results.into_iter().flatten().collect())
}

/// A request from `from`; the status line, or `None` if the edge closed without one.
async fn request_from(addr: SocketAddr, from: std::net::IpAddr, path: &str) -> Option<String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_to_close(&mut stream, Duration::from_secs(10)).await?;
    Some(answer.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_connections() {
    let origin = TestOrigin::ok(&[]).await;
    let edge = TestEdge::with_routes(
        "limits:\n  max_connections_per_client: 4\n",
        &site(origin.addr()),
    )
    .await;
    let flooder: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    // The edge accepts only after its first probe round: wait for it to answer.
    assert_eq!(
        request_from(edge.addr, other, "/ready").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let (closed, held) = flood(edge.addr, flooder, 10, Duration::from_secs(2)).await;
    assert_eq!((closed, held.len()), (6, 4), "per-client cap of 4");
    // The flooder gets no more; anyone else is served.
    assert_eq!(
        request_from(edge.addr, flooder, "/more").await.as_deref(),
        Some("")
    );
    assert_eq!(
        request_from(edge.addr, other, "/other").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    // Its places come back when its connections close.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if request_from(edge.addr, flooder, "/again").await.as_deref() == Some("HTTP/1.1 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "the places never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.count_path("/more"), 0);
}

/// A WebSocket tunnel keeps its place under the caps for its whole life (its client's
/// socket and its origin's are open as long): one address cannot hold more tunnels than
/// its share. They were not counted once the relay took them, and 499 idle tunnels from
/// one address took all of an edge's 1,024 descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_count_against_the_connection_caps() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let origin = TestOrigin::websocket_echo(std::sync::Arc::new(|_: &common::origin::Recorded| {
        http::Response::new(bytes::Bytes::from_static(b"page"))
    }))
    .await;
    let rules = format!(
        "routes:\n  - name: ws\n    patterns: [\"/ws\"]\n    origin_group: web\n    websocket: true\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: false }}\norigin_groups:\n{}",
        group_yaml("web", origin.addr())
    );
    let edge = TestEdge::with_routes("limits:\n  max_connections_per_client: 3\n", &rules).await;
    let flooder: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(
        request_from(edge.addr, other, "/ready").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let mut tunnels = Vec::new();
    for n in 0..3 {
        let url = format!("ws://{}/ws", edge.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.send(Message::text(format!("hello {n}"))).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("hello {n}")));
        tunnels.push(ws);
    }
    // Three tunnels hold the address's three places.
    assert_eq!(
        request_from(edge.addr, flooder, "/more").await.as_deref(),
        Some(""),
        "a fourth connection from the tunnels' address was served"
    );
    assert_eq!(
        request_from(edge.addr, other, "/other").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    // A tunnel that ends gives its place back.
    let mut ended = tunnels.pop().unwrap();
    ended.close(None).await.unwrap();
    while ended.next().await.is_some_and(|m| m.is_ok()) {}
    drop(ended);
    let deadline = Instant::now() + Duration::from_secs(5);
    while request_from(edge.addr, flooder, "/again").await.as_deref() != Some("HTTP/1.1 200 OK") {
        assert!(
            Instant::now() < deadline,
            "the tunnel's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Under `portico run` with few descriptors: the cap keeps `fd_reserve` free, so a flood
/// of idle connections is cut at the cap and the probes (new connections every interval)
/// keep passing instead of failing with EMFILE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_cap_probes_keep_working_and_new_clients_are_closed() {
    let origin = TestOrigin::ok(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    // 256 descriptors, 64 reserved: (256 - 64) / 2 = 96 client connections.
    std::fs::write(
        dir.path().join("portico.yaml"),
        format!("name: limits-edge\nlisteners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin_port}\nserver:\n  threads: 1\n  upgrade_sock: upgrade.sock\nrules_dir: rules\naccess_log: access.log\nlimits:\n  fd_reserve: 64\n"),
    )
    .unwrap();
    let rules = format!(
        "{}    health_probe: {{ path: /health, interval: 200ms, timeout: 1s }}\n",
        site(origin.addr())
    );
    std::fs::write(dir.path().join("rules/rules.yaml"), rules).unwrap();
    let conf = dir.path().join("portico.yaml").display().to_string();
    let output = dir.path().join("run.out");
    let file = std::fs::File::create(&output).unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec {} run -c {conf}",
            env!("CARGO_BIN_EXE_portico")
        ))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::from(file.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(file))
        .spawn()
        .unwrap();
    // Ready once it answers; without keep-alive, so that no connection of ours stays.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let ready = first_answer(&client, &format!("http://127.0.0.1:{port}/ready")).await;
    assert_eq!(ready.status(), 200);
    drop(ready);
    let printed = std::fs::read_to_string(&output).unwrap();
    assert!(
        printed.contains("client connections capped at 96"),
        "{printed}"
    );

    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (closed, held) = flood(
        addr,
        "127.0.0.1".parse().unwrap(),
        150,
        Duration::from_secs(2),
    )
    .await;
    // The per-client default (256) is above the cap: the global cap is what cuts.
    assert_eq!((closed, held.len()), (54, 96));
    // The next connection is closed at once, not left hanging.
    let started = Instant::now();
    assert_eq!(
        request_from(addr, "127.0.0.2".parse().unwrap(), "/late")
            .await
            .as_deref(),
        Some("")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // Three more probes pass while the flood holds its connections.
    let probes = origin.count_path("/health");
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.count_path("/health") < probes + 3 {
        assert!(Instant::now() < deadline, "the probes stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status =
        common::process::get_json(&client, &format!("http://127.0.0.1:{admin_port}/status")).await;
    let probed = &status["origin_groups"][0]["origins"][0];
    assert_eq!(probed["health"], "healthy", "{status}");
    assert_eq!(probed["last_probe"]["passed"], true, "{status}");
    assert_eq!(probed["consecutive_failures"], 0, "{status}");
    drop(held);
    let printed = std::fs::read_to_string(&output).unwrap();
    assert!(!printed.contains("Too many open files"), "{printed}");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_has_deadlines_a_cap_and_calls_broken_chunks_a_400() {
    let origin = TestOrigin::ok(&[]).await;
    let edge = TestEdge::with_routes(
        "limits:\n  request_head_timeout: 2s\n",
        &site(origin.addr()),
    )
    .await;
    let admin = edge.admin_addr;
    // Broken chunking is a malformed request, not a body too large.
    let answer = exchange(
        admin,
        b"POST /purge HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("purge body unreadable"), "{answer}");

    // A head a byte at a time is closed at the head deadline.
    let (_, took) = slowloris(admin, Duration::from_millis(200)).await;
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );
    // A body that stops: 408 at the deadline.
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST /purge HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"paths\"")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("the admin kept a stalled body open");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "answered after {took:?}"
    );
    // At most 64 connections: the rest are closed at once.
    let (closed, held) = flood(
        admin,
        "127.0.0.1".parse().unwrap(),
        70,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!((closed, held.len()), (6, 64));
}

/// `site`, forwarded over plain HTTP whatever the client's scheme (TLS ends at the edge).
fn tls_site(origin: SocketAddr) -> String {
    site(origin).replace(
        "    origin_group: web\n",
        "    origin_group: web\n    forwarding_protocol: http_only\n",
    )
}

/// The start of a TLS ClientHello: a handshake record promising 512 bytes, and 4 of them.
const PARTIAL_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

/// Opens a TCP connection to a TLS listener, sends the start of a ClientHello and then one
/// byte every `every` (never `None`: nothing after the start) that cannot finish it within
/// the test; returns how long the edge took to close the connection (`None`: still open
/// after 20 s).
async fn stalled_tls_handshake(addr: SocketAddr, every: Option<Duration>) -> Option<Duration> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(PARTIAL_CLIENT_HELLO).await.unwrap();
    let mut chunk = [0u8; 1024];
    let mut ticker = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await;
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => match read {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                // A TLS alert, if any, then the close.
                Ok(_) => {}
            },
            _ = ticker.tick(), if every.is_some() => {
                let _ = stream.write_all(&[0]).await;
            }
            _ = &mut deadline => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_stalls_or_dribbles_is_closed_at_its_deadline() {
    let origin = TestOrigin::ok(&[]).await;
    let pki = TestPki::new();
    let cert = pki.issue("www", &["www.example.test"]);
    let edge = TestEdge::start(
        &tls_node_yaml(&[&cert], "limits:\n  tls_handshake_timeout: 1s\n"),
        &tls_site(origin.addr()),
    )
    .await;
    let tls_addr = edge.tls_addr.expect("a TLS listener");
    for every in [None, Some(Duration::from_millis(200))] {
        let took = stalled_tls_handshake(tls_addr, every)
            .await
            .unwrap_or_else(|| panic!("{every:?}: still open after 20 s"));
        assert!(
            took >= Duration::from_millis(900),
            "{every:?}: closed after {took:?}, before the deadline"
        );
    }
    // A client that completes its handshake is served as before.
    let answer = pki
        .https_client(&["www.example.test"], tls_addr)
        .get("https://www.example.test/ok")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}

/// Under `portico run` the edge runs the handshakes of Pingora's listeners itself, so the
/// deadline holds there too (Pingora's own is a fixed 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_portico_run_a_stalled_tls_handshake_is_closed_at_its_deadline() {
    let origin = TestOrigin::ok(&[]).await;
    let pki = TestPki::new();
    let (_dir, _node, tls_addr) = portico_run_tls(&pki, &tls_site(origin.addr())).await;
    let took = stalled_tls_handshake(tls_addr, None)
        .await
        .expect("closed, not held for Pingora's 60 s");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
}

/// Under `portico run` over TLS, an idle keep-alive connection also frees the TCP stream's
/// 64 KiB read buffer under the TLS session: requests after an idle wait, with bodies
/// larger than the buffer, and their responses come whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_portico_run_idle_tls_keep_alive_connections_answer_whole() {
    let origin = TestOrigin::start(std::sync::Arc::new(|req: &common::origin::Recorded| {
        let size: usize = req.path().trim_start_matches("/size/").parse().unwrap_or(1);
        let mut body = format!("{} ", req.body.len()).into_bytes();
        body.resize(body.len() + size, b'x');
        hyper::Response::new(bytes::Bytes::from(body))
    }))
    .await;
    let pki = TestPki::new();
    let (_dir, _node, tls_addr) = portico_run_tls(&pki, &tls_site(origin.addr())).await;
    let client = pki.https_client(&["www.example.test"], tls_addr);
    // Idle past the point where the edge frees the buffers (one second), or not.
    let idles = [1200, 1200, 50, 1200];
    let sizes = [(10, 0), (70_000, 100_000), (1460, 3), (3, 200_000)];
    for ((size, sent), idle) in sizes.into_iter().zip(idles) {
        let answer = client
            .post(format!("https://www.example.test/size/{size}"))
            .body(vec![b'y'; sent])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let body = answer.text().await.unwrap();
        assert_eq!(
            body,
            format!("{sent} {}", "x".repeat(size)),
            "{size}, {sent}"
        );
        tokio::time::sleep(Duration::from_millis(idle)).await;
    }
    let sized = origin.requests();
    let sized = sized.iter().filter(|r| r.path().starts_with("/size/"));
    assert_eq!(sized.count(), 4);
}

/// `portico run` with a TLS listener for `www.example.test` (issued by `pki`) beside a
/// plain one, `rules` and a 1 s handshake limit, once it answers: the temp dir and the
/// process (both kept for the test's length) and the TLS listener's address.
async fn portico_run_tls(pki: &TestPki, rules: &str) -> (tempfile::TempDir, Running, SocketAddr) {
    let cert = pki.issue("www", &["www.example.test"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let (port, tls_port) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("portico.yaml"),
        format!(
            "name: limits-edge\nlisteners:\n  - address: 127.0.0.1:{port}\n  - address: 127.0.0.1:{tls_port}\n    tls:\n      certificates:\n        - cert_file: {}\n          key_file: {}\nserver:\n  threads: 1\n  upgrade_sock: upgrade.sock\nrules_dir: rules\naccess_log: access.log\nlimits:\n  tls_handshake_timeout: 1s\n",
            cert.cert.display(),
            cert.key.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("rules/rules.yaml"), rules).unwrap();
    let conf = dir.path().join("portico.yaml").display().to_string();
    let node = Running::start(&["run", "-c", &conf], dir.path(), "run");
    let ready = first_answer(
        &reqwest::Client::new(),
        &format!("http://127.0.0.1:{port}/ready"),
    )
    .await;
    assert_eq!(ready.status(), 200);
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let answer = pki
        .https_client(&["www.example.test"], tls_addr)
        .get("https://www.example.test/ok")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "the TLS listener serves");
    (dir, node, tls_addr)
}

/// Each HTTP/2 request on its way to the origin takes a place in the connection caps, as an
/// HTTP/1 connection does (each needs an origin connection): one address could otherwise
/// hold 100 origin sockets per connection, past the descriptor limit. Over the cap a
/// request gets a `503` at once; a place comes back when its request ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_to_the_origin_count_against_the_connection_caps() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let (release, released) = tokio::sync::watch::channel(false);
    let arrived = Arc::new(AtomicUsize::new(0));
    let seen = arrived.clone();
    let (origin, _) = common::counting_origin(move |mut stream| {
        let (seen, mut released) = (seen.clone(), released.clone());
        async move {
            while common::read_request_head(&mut stream).await.is_some() {
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = released.wait_for(|go| *go).await;
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let h2 = H2Edge::start(origin, "max_connections_per_client: 4").await;
    let (client, _connection) = h2.client().await;
    let send_all = |count: usize, set: &mut tokio::task::JoinSet<(u16, String)>| {
        for n in 0..count {
            let client = client.clone();
            set.spawn(async move {
                let mut client = client.ready().await.unwrap();
                let request = http::Request::get(format!("https://{WWW}/held{n}"))
                    .body(())
                    .unwrap();
                let (response, _) = client.send_request(request, true).unwrap();
                let response = response.await.unwrap();
                let error = response
                    .headers()
                    .get("x-portico-error")
                    .map_or(String::new(), |v| v.to_str().unwrap().to_owned());
                (response.status().as_u16(), error)
            });
        }
    };
    async fn next(set: &mut tokio::task::JoinSet<(u16, String)>) -> (u16, String) {
        let next = tokio::time::timeout(Duration::from_secs(10), set.join_next());
        next.await.expect("an answer in time").unwrap().unwrap()
    }

    // Ten at once on one connection: it holds one of the address's four places, three
    // requests the rest, and the other seven are answered while those three are held.
    let mut set = tokio::task::JoinSet::new();
    send_all(10, &mut set);
    for _ in 0..7 {
        assert_eq!(
            next(&mut set).await,
            (503, "over-connection-cap".to_owned())
        );
    }
    // The three with places may still be on their way to the origin.
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrived.load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "the placed requests never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    release.send(true).unwrap();
    for _ in 0..3 {
        assert_eq!(next(&mut set).await, (200, String::new()));
    }
    assert_eq!(arrived.load(Ordering::SeqCst), 3);
    // Their places come back once each request has ended (just after its answer).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        send_all(3, &mut set);
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(next(&mut set).await);
        }
        if answers.iter().all(|(status, _)| *status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the places never came back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
