//! A cache miss whose client leaves: the fill goes on only while another request reads it
//! or little of it is left (`FINISH_WITHOUT_CLIENT_BYTES`); otherwise the edge stops
//! reading the origin, which would else send a whole large object for nobody.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::edge::{client, group_yaml, TestEdge};
use common::health::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// An origin that answers every request with a cacheable body of `size` bytes: its head
/// and the body up to the first of `pauses` at once, each further part once the test lets
/// it (a permit to `resume`; `finish` for the last). It counts the body bytes the kernel
/// took from it and notes when a response ended (whole or cut off by the edge).
struct PacedOrigin {
    addr: std::net::SocketAddr,
    sent: Arc<AtomicUsize>,
    ended: Arc<AtomicBool>,
    resume: Arc<Semaphore>,
}

impl PacedOrigin {
    async fn start(size: usize, pauses: &[usize]) -> PacedOrigin {
        let pauses = pauses.to_vec();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = PacedOrigin {
            addr: listener.local_addr().unwrap(),
            sent: Arc::default(),
            ended: Arc::default(),
            resume: Arc::new(Semaphore::new(0)),
        };
        let (sent, ended, resume) = (
            origin.sent.clone(),
            origin.ended.clone(),
            origin.resume.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (sent, ended, resume) = (sent.clone(), ended.clone(), resume.clone());
                let pauses = pauses.clone();
                tokio::spawn(async move {
                    read_head(&mut stream).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nCache-Control: max-age=600\r\n\r\n"
                    );
                    if stream.write_all(head.as_bytes()).await.is_ok() {
                        let block = vec![b'x'; 64 << 10];
                        let mut left = size;
                        while left > 0 {
                            let done = size - left;
                            if pauses.contains(&done) {
                                resume.acquire().await.unwrap().forget();
                            }
                            let next_pause = pauses.iter().find(|&&at| at > done);
                            let limit = next_pause.map_or(left, |at| at - done);
                            let n = block.len().min(limit);
                            if stream.write_all(&block[..n]).await.is_err() {
                                break;
                            }
                            sent.fetch_add(n, Ordering::SeqCst);
                            left -= n;
                        }
                    }
                    ended.store(true, Ordering::SeqCst);
                });
            }
        });
        origin
    }

    /// Lets the paused response go on, waits until it ends (whole or cut off by the edge),
    /// and returns the body bytes sent.
    async fn finish(&self) -> usize {
        self.resume.add_permits(1);
        wait_until("the origin's response ends", || {
            self.ended.load(Ordering::SeqCst)
        })
        .await;
        self.sent.load(Ordering::SeqCst)
    }
}

async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    head
}

async fn edge_for(origin: &PacedOrigin) -> TestEdge {
    let rules = format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    cache: {{ enabled: true }}\norigin_groups:\n{}",
        group_yaml("web", origin.addr)
    );
    let node = "cache:\n  memory_bytes: 1GiB\n  max_object_bytes: 512MiB\n";
    TestEdge::with_routes(node, &rules).await
}

/// A client that asks for `path`, reads the head and `body` bytes of the body, and leaves
/// (closes its connection).
async fn ask_and_leave(edge: &TestEdge, path: &str, body: usize) {
    let mut stream = TcpStream::connect(edge.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", edge.addr);
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut got = 0;
    let mut buf = vec![0u8; 64 << 10];
    while got < body {
        let n = stream
            .read(&mut buf[..(body - got).min(64 << 10)])
            .await
            .unwrap();
        assert!(n > 0, "the body ended at {got} bytes");
        got += n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_fill_whose_client_leaves_is_stopped() {
    const SIZE: usize = 256 << 20;
    let origin = PacedOrigin::start(SIZE, &[1 << 20]).await;
    let edge = edge_for(&origin).await;
    ask_and_leave(&edge, "/big.bin", 0).await;
    // The client has gone; the origin may go on.
    let sent = origin.finish().await;
    assert!(
        sent < SIZE / 4,
        "the origin sent {sent} of {SIZE} bytes for a client that had gone"
    );
    let status = edge.status().await;
    assert_eq!(status["cache"]["fills_stopped"], 1, "{status}");
    assert_eq!(status["cache"]["objects"], 0, "{status}");
    let metrics = edge.metrics().await;
    assert!(
        metrics.contains("portico_cache_fills_stopped_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_another_request_reads_goes_on_without_its_client() {
    const SIZE: usize = 8 << 20;
    let origin = PacedOrigin::start(SIZE, &[1 << 20]).await;
    let edge = edge_for(&origin).await;
    // The first client's request starts the fill; a second joins it.
    let mut first = TcpStream::connect(edge.addr).await.unwrap();
    let request = format!("GET /shared.bin HTTP/1.1\r\nHost: {}\r\n\r\n", edge.addr);
    first.write_all(request.as_bytes()).await.unwrap();
    assert!(read_head(&mut first).await.starts_with(b"HTTP/1.1 200"));
    let second = client().get(edge.url("/shared.bin")).send().await.unwrap();
    assert_eq!(second.status(), 200);
    // The first leaves with 7 MiB still to come: the second still reads the fill.
    drop(first);
    origin.resume.add_permits(1);
    let body = second.bytes().await.expect("the whole body");
    assert_eq!(body.len(), SIZE);
    assert_eq!(origin.sent.load(Ordering::SeqCst), SIZE);
    let status = edge.status().await;
    assert_eq!(status["cache"]["fills_stopped"], 0, "{status}");
    let again = client().get(edge.url("/shared.bin")).send().await.unwrap();
    assert_eq!(again.headers()["x-cache"], "TCP_HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_stops_once_the_other_request_reading_it_has_gone_too() {
    const SIZE: usize = 64 << 20;
    let origin = PacedOrigin::start(SIZE, &[1 << 20, 2 << 20]).await;
    let edge = edge_for(&origin).await;
    let request = format!("GET /both.bin HTTP/1.1\r\nHost: {}\r\n\r\n", edge.addr);
    let mut first = TcpStream::connect(edge.addr).await.unwrap();
    first.write_all(request.as_bytes()).await.unwrap();
    assert!(read_head(&mut first).await.starts_with(b"HTTP/1.1 200"));
    let mut second = TcpStream::connect(edge.addr).await.unwrap();
    second.write_all(request.as_bytes()).await.unwrap();
    assert!(read_head(&mut second).await.starts_with(b"HTTP/1.1 200"));
    // The first leaves; the fill goes on for the second, which reads its second MiB.
    drop(first);
    origin.resume.add_permits(1);
    let mut got = 0;
    let mut buf = vec![0u8; 64 << 10];
    while got < 2 << 20 {
        let n = second.read(&mut buf).await.unwrap();
        assert!(n > 0, "the second client's body ended at {got} bytes");
        got += n;
    }
    // Now the second leaves too: no one reads the fill.
    drop(second);
    let sent = origin.finish().await;
    assert!(
        sent < SIZE / 2,
        "the origin sent {sent} of {SIZE} bytes after both clients had gone"
    );
    let status = edge.status().await;
    assert_eq!(status["cache"]["fills_stopped"], 1, "{status}");
    assert_eq!(status["cache"]["objects"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_done_fill_is_finished_and_stored_without_its_client() {
    // Of 1.5 MiB, the client reads 1 MiB and leaves: the rest is under the bound.
    const SIZE: usize = 3 << 19;
    let origin = PacedOrigin::start(SIZE, &[1 << 20]).await;
    let edge = edge_for(&origin).await;
    ask_and_leave(&edge, "/nearly.bin", 1 << 20).await;
    assert_eq!(origin.finish().await, SIZE);
    let edge_status = edge.status().await;
    assert_eq!(edge_status["cache"]["fills_stopped"], 0, "{edge_status}");
    let again = client().get(edge.url("/nearly.bin")).send().await.unwrap();
    assert_eq!(again.headers()["x-cache"], "TCP_HIT");
    assert_eq!(again.bytes().await.unwrap().len(), SIZE);
}

/// The same over HTTP/2: a client that resets its stream leaves a miss as one that closes
/// its connection does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_fill_whose_http2_client_resets_its_stream_is_stopped() {
    const SIZE: usize = 64 << 20;
    let origin = PacedOrigin::start(SIZE, &[1 << 20]).await;
    let h2 =
        common::h2::H2Edge::start_with_cache(origin.addr, "max_headers: 100", "{ enabled: true }")
            .await;
    let (mut client, connection) = h2.client().await;
    let request = http::Request::get(format!("https://{}/big.bin", common::h2::WWW))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    // Dropping the body's stream unread resets it (`CANCEL`); the connection stays.
    drop(response);
    let sent = origin.finish().await;
    assert!(
        sent < SIZE / 2,
        "the origin sent {sent} of {SIZE} bytes for a stream that was reset"
    );
    let status = h2.edge.status().await;
    assert_eq!(status["cache"]["fills_stopped"], 1, "{status}");
    assert!(!connection.is_finished(), "the connection is still open");
}
