//! Tunnel half-close, on raw sockets at both ends: a client that sends a WebSocket Close
//! and shuts its write half still gets what the origin sends afterwards; the end is passed
//! on to the origin as a half-close; and `tunnel_linger` ends a tunnel whose other side
//! never closes.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::edge::{group_yaml, TestEdge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A client's masked Close frame without a payload.
const CLIENT_CLOSE: [u8; 6] = [0x88, 0x80, 1, 2, 3, 4];
/// The origin's late reply: an unmasked text frame `late reply`, then its Close frame.
const LATE_REPLY: &[u8] = b"\x81\x0alate reply\x88\x00";

/// What the origin does once it has read the client's end.
#[derive(Clone, Copy)]
enum AfterEnd {
    /// Waits 50 ms, sends `LATE_REPLY`, closes.
    ReplyLate,
    /// Keeps its side open and silent for ever.
    StayOpen,
}

/// A raw WebSocket origin for one connection: answers the upgrade, reads until the
/// client's end arrives (EOF: the edge passed the half-close on), reports what it read,
/// then acts as `after` says.
async fn raw_origin(after: AfterEnd) -> (SocketAddr, oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, reported) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = common::read_request_head(&mut stream).await.unwrap();
        let key = common::websocket_key(&head).expect("a Sec-WebSocket-Key");
        let answer = common::switching_protocols(&key);
        stream.write_all(answer.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        let _ = report.send(received);
        match after {
            AfterEnd::ReplyLate => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stream.write_all(LATE_REPLY).await.unwrap();
                stream.shutdown().await.unwrap();
            }
            AfterEnd::StayOpen => {
                // Holds its side open (the test ends long before).
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(stream);
            }
        }
    });
    (addr, reported)
}

async fn edge(origin: SocketAddr, route_extra: &str) -> TestEdge {
    let rules = format!(
        "routes:\n  - name: socket\n    patterns: [\"/*\"]\n    origin_group: raw\n    websocket: true\n{route_extra}origin_groups:\n{}",
        group_yaml("raw", origin)
    );
    TestEdge::with_routes("", &rules).await
}

/// Opens a tunnel through the edge with a hand-written handshake; returns the connection
/// once the `101` has been read (nothing past it: the origin sends nothing first).
async fn open_tunnel(edge: &TestEdge) -> TcpStream {
    let mut stream = TcpStream::connect(edge.addr).await.unwrap();
    let request = format!(
        "GET /chat HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        edge.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "EOF in the 101");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    stream
}

async fn tunnel_record(edge: &TestEdge) -> serde_json::Value {
    let lines = edge
        .wait_for_log(|l| l.iter().any(|r| r["kind"] == "tunnel"))
        .await;
    lines.into_iter().find(|r| r["kind"] == "tunnel").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_sent_after_the_client_closed_its_side_reaches_the_client() {
    let (origin, origin_read) = raw_origin(AfterEnd::ReplyLate).await;
    let edge = edge(origin, "").await;
    let mut client = open_tunnel(&edge).await;
    client.write_all(&CLIENT_CLOSE).await.unwrap();
    client.shutdown().await.unwrap();

    // The origin saw the Close frame and then the end of the client's side.
    let read = tokio::time::timeout(Duration::from_secs(10), origin_read)
        .await
        .expect("the client's half-close never reached the origin")
        .unwrap();
    assert_eq!(read, CLIENT_CLOSE);
    // The reply the origin sent 50 ms later arrives whole, then the end.
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
        .await
        .expect("the tunnel never ended")
        .unwrap();
    assert_eq!(got, LATE_REPLY);

    let tunnel = tunnel_record(&edge).await;
    assert_eq!(tunnel["closed_by"], "client", "{tunnel}");
    assert_eq!(
        tunnel["bytes_client_to_origin"],
        CLIENT_CLOSE.len(),
        "{tunnel}"
    );
    assert_eq!(
        tunnel["bytes_origin_to_client"],
        LATE_REPLY.len(),
        "{tunnel}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_linger_time_ends_a_tunnel_whose_other_side_never_closes() {
    let (origin, origin_read) = raw_origin(AfterEnd::StayOpen).await;
    // The idle timeout is far away: only the linger time can end this tunnel soon.
    let edge = edge(
        origin,
        "    tunnel_linger: 300ms\n    tunnel_idle_timeout: 1m\n",
    )
    .await;
    let mut client = open_tunnel(&edge).await;
    client.write_all(&CLIENT_CLOSE).await.unwrap();
    client.shutdown().await.unwrap();
    let half_closed = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), origin_read)
        .await
        .expect("the client's half-close never reached the origin")
        .unwrap();

    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
        .await
        .expect("the tunnel outlived its linger time")
        .unwrap();
    let waited = half_closed.elapsed();
    assert!(got.is_empty(), "{got:?}");
    assert!(
        waited >= Duration::from_millis(300),
        "closed before the linger time: {waited:?}"
    );

    let tunnel = tunnel_record(&edge).await;
    assert_eq!(tunnel["closed_by"], "client", "{tunnel}");
    assert_eq!(
        tunnel["bytes_client_to_origin"],
        CLIENT_CLOSE.len(),
        "{tunnel}"
    );
    assert_eq!(tunnel["bytes_origin_to_client"], 0, "{tunnel}");
}
