//! A client that stops reading a large response costs the edge a bounded amount of its own
//! memory: what the kernel's socket buffers hold is the kernel's, and the edge keeps no
//! more than a few of the origin's reads in between. Measured where it matters, on the
//! built `portico run` (its allocator, its direct pass-through path).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{first_answer, free_port, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const CLIENTS: usize = 20;
const BODY: usize = 64 << 20;
const MIB: usize = 1 << 20;

/// `VmRSS` of process `pid`, in bytes.
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

/// An origin that answers every request with `BODY` bytes (`no-store`), as fast as the edge
/// takes them, and counts the bytes it has written.
async fn fast_origin() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let written = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let big = head.starts_with(b"GET /big");
                let length = if big { BODY } else { 2 };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncache-control: no-store\r\ncontent-length: {length}\r\n\r\n"
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 << 10];
                let mut sent = 0;
                while sent < length {
                    let n = chunk.len().min(length - sent);
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                    written.fetch_add(n, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, written)
}

/// `portico run` with one uncached route to `origin` and `extra` node settings, answering;
/// its port, and the directory it runs in (removed when dropped).
async fn portico_run(origin: SocketAddr, extra: &str) -> (Running, u16, tempfile::TempDir) {
    portico_run_with(origin, "", extra).await
}

/// The same, with `listeners` (YAML list items) beside its plain listener.
async fn portico_run_with(
    origin: SocketAddr,
    listeners: &str,
    extra: &str,
) -> (Running, u16, tempfile::TempDir) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let port = free_port();
    std::fs::create_dir(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("portico.yaml"),
        format!(
            "name: slow-readers\nlisteners:\n  - address: 127.0.0.1:{port}\n{listeners}rules_dir: rules\naccess_log: off\nserver:\n  threads: 1\n{extra}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules/site.yaml"),
        format!(
            "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    forwarding_protocol: http_only\n    cache: {{ enabled: false }}\norigin_groups:\n{}",
            common::edge::group_yaml("web", origin)
        ),
    )
    .unwrap();
    let edge = Running::start(
        &["run", "-c", dir.join("portico.yaml").to_str().unwrap()],
        dir,
        "portico",
    );
    let client = reqwest::Client::new();
    let warm = first_answer(&client, &format!("http://127.0.0.1:{port}/warm")).await;
    assert_eq!(warm.status(), 200);
    (edge, port, temp)
}

/// Twenty clients ask for 64 MiB each and read none of it. Once the origin can send no
/// more (every buffer on the way is full), the edge's resident memory has grown by less
/// than 1 MiB a client. Pingora's direct pass-through path batched everything the origin
/// had sent while the client was not reading into one write buffer: about 8 MiB a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_little_of_the_edges_memory() {
    let (origin, written) = fast_origin().await;
    let (edge, port, _dir) = portico_run(origin, "").await;
    let baseline = rss(edge.pid());

    let mut stalled: Vec<TcpStream> = Vec::new();
    for i in 0..CLIENTS {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        let request = format!("GET /big/{i} HTTP/1.1\r\nHost: site.test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    let last = until_the_origin_stops(&written).await;
    assert!(
        last < CLIENTS * BODY,
        "the clients' responses went through whole: nothing was held"
    );
    let growth = rss(edge.pid()).saturating_sub(baseline);
    println!(
        "{CLIENTS} stalled clients: the origin sent {} MiB; the edge grew by {:.1} MiB",
        last / MIB,
        growth as f64 / MIB as f64
    );
    assert!(
        growth < CLIENTS * MIB,
        "the edge grew by {:.1} MiB for {CLIENTS} stalled clients",
        growth as f64 / MIB as f64
    );
    drop(stalled);
}

/// Waits until the origin has sent all it can (nothing more for half a second); returns
/// what it has sent.
async fn until_the_origin_stops(written: &AtomicUsize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut still_since) = (0, Instant::now());
    while still_since.elapsed() < Duration::from_millis(500) {
        assert!(
            Instant::now() < deadline,
            "the origin never stopped sending"
        );
        let now = written.load(Ordering::Relaxed);
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

/// The same over HTTP/2: one client opens 100 streams for 64 MiB each and grants them no
/// flow-control window. Each stream's writer waits for a window that never opens; behind
/// it Pingora had four more of the origin's reads queued (and four more in the batch after
/// them): the edge grew by about 45 MiB for this client. One read ahead: about 19 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_that_get_no_window_hold_little_of_the_edges_memory() {
    const STREAMS: usize = 100;
    let (origin, written) = fast_origin().await;
    let pki = common::tls::TestPki::new();
    let www = pki.issue("www", &[common::h2::WWW]);
    let tls_port = free_port();
    let listener = format!(
        "  - address: 127.0.0.1:{tls_port}\n    tls:\n      http2: true\n      certificates:\n        - cert_file: {}\n          key_file: {}\n",
        www.cert.display(),
        www.key.display()
    );
    let (edge, _, _dir) = portico_run_with(origin, &listener, "").await;
    let mut config = pki.client_config();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            common::h2::WWW.try_into().unwrap(),
            TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap(),
        )
        .await
        .unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    // One answered stream first, so the baseline has the connection's own buffers.
    let mut client = client.ready().await.unwrap();
    let warm = http::Request::get(format!("https://{}/warm", common::h2::WWW))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(warm, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let baseline = rss(edge.pid());
    let mut held = Vec::new();
    for i in 0..STREAMS {
        client = client.ready().await.unwrap();
        let request = http::Request::get(format!("https://{}/big/{i}", common::h2::WWW))
            .body(())
            .unwrap();
        held.push(client.send_request(request, true).unwrap().0);
    }
    for response in held.iter_mut() {
        assert_eq!(response.await.unwrap().status(), 200);
    }
    let sent = until_the_origin_stops(&written).await;
    assert!(sent < STREAMS * BODY, "the streams went through whole");
    let growth = rss(edge.pid()).saturating_sub(baseline);
    println!(
        "{STREAMS} streams with no window: the origin sent {} MiB; the edge grew by {:.1} MiB",
        sent / MIB,
        growth as f64 / MIB as f64
    );
    assert!(
        growth < STREAMS * (320 << 10),
        "the edge grew by {:.1} MiB for {STREAMS} stalled streams",
        growth as f64 / MIB as f64
    );
    assert!(!connection.is_finished());
}

/// A slow reader that keeps reading, past `send_timeout` many times over, is not cut under
/// `portico run` either: Linux wakes a writer only when half its send buffer is free
/// (seconds apart at this rate), so when `send_timeout` passes the edge asks the client's
/// TCP whether it took anything meanwhile. The kernel was asked to wake writes sooner
/// (`TCP_NOTSENT_LOWAT`) on the in-process listener only: under `portico run` such a
/// client was cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_that_keeps_reading_is_not_cut_under_portico_run() {
    let (origin, _) = fast_origin().await;
    let (_edge, port, _dir) = portico_run(origin, "limits:\n  send_timeout: 2s\n").await;
    let socket = TcpSocket::new_v4().unwrap();
    let mut stream = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let request = "GET /big HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    // About 160 KiB a second for eight seconds, then the rest.
    let got = common::read_slowly_then_drain(&mut stream, Duration::from_secs(8)).await;
    assert!(got > BODY, "the edge cut the client after {got} bytes");
}
