//! The tunnel after the handoff, byte for byte, with raw sockets on both sides: bytes that
//! Pingora had already read past the headers (the origin's first bytes sent with its 101,
//! the client's first bytes sent behind its upgrade request) are relayed first, and the
//! bytes need not be WebSocket frames at all.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::edge::{group_yaml, TestEdge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

const UPGRADE_REQUEST: &[u8] = b"GET /raw HTTP/1.1\r\nHost: edge.test\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

fn rules(origin: SocketAddr) -> String {
    format!(
        "routes:\n  - name: raw\n    patterns: [\"/*\"]\n    origin_group: raw\n    websocket: true\n\
         origin_groups:\n{}",
        group_yaml("raw", origin)
    )
}

/// Reads until `buf` holds `needle`, and returns everything read.
async fn read_until(stream: &mut TcpStream, mut buf: Vec<u8>, needle: &[u8]) -> Vec<u8> {
    let mut chunk = [0u8; 4096];
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let n = timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("timed out waiting for bytes")
            .unwrap();
        assert!(
            n > 0,
            "closed before {:?} arrived; got {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

fn after_headers(buf: &[u8]) -> &[u8] {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    &buf[end..]
}

/// An origin that answers 101 with `greeting` in the same write, then echoes every byte.
async fn raw_origin(greeting: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_until(&mut stream, Vec::new(), b"\r\n\r\n").await;
                let mut answer = SWITCHING.to_vec();
                answer.extend_from_slice(greeting);
                stream.write_all(&answer).await.unwrap();
                // Bytes that came with the request head are not the tunnel's: the edge must
                // hold the client's early bytes until the 101.
                assert!(after_headers(&head).is_empty(), "bytes before the 101");
                let mut chunk = [0u8; 4096];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => stream.write_all(&chunk[..n]).await.unwrap(),
                    }
                }
            });
        }
    });
    addr
}

/// Starts an origin that greets with `greeting`, and the edge; sends the upgrade request
/// with `early` bytes behind it in the same write; reads until `until` has arrived.
/// Returns the edge, the client's socket and what came after the 101's headers.
async fn open_tunnel(
    greeting: &'static [u8],
    early: &[u8],
    until: &[u8],
) -> (TestEdge, TcpStream, Vec<u8>) {
    let origin = raw_origin(greeting).await;
    let edge = TestEdge::with_routes("", &rules(origin)).await;
    let mut client = TcpStream::connect(edge.addr).await.unwrap();
    let mut first_write = UPGRADE_REQUEST.to_vec();
    first_write.extend_from_slice(early);
    client.write_all(&first_write).await.unwrap();
    let got = read_until(&mut client, Vec::new(), until).await;
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let tunnelled = after_headers(&got).to_vec();
    (edge, client, tunnelled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_with_the_101_reach_the_client_first() {
    let greeting: &[u8] = b"\x00\xffgreeting sent in the same write as the 101";
    let (_edge, mut client, got) = open_tunnel(greeting, b"", b"same write as the 101").await;
    assert_eq!(got, greeting);
    // And the tunnel carries arbitrary bytes both ways afterwards.
    let payload: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    client.write_all(&payload).await.unwrap();
    let mut echoed = vec![0u8; payload.len()];
    timeout(WAIT, client.read_exact(&mut echoed))
        .await
        .expect("timed out waiting for the echo")
        .unwrap();
    assert!(echoed == payload, "the echo differs from what was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_behind_the_upgrade_request_reach_the_origin_after_the_101() {
    let early: &[u8] = b"early bytes, sent before the 101 came back";
    // The origin echoes them once it has switched protocols.
    let (_edge, _client, got) = open_tunnel(b"", early, b"before the 101 came back").await;
    assert_eq!(got, early);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_record_counts_the_bytes_both_ways() {
    let (edge, mut client, _) = open_tunnel(b"hello", b"", b"hello").await;
    client.write_all(&[7u8; 1000]).await.unwrap();
    let mut echoed = [0u8; 1000];
    timeout(WAIT, client.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    drop(client);
    let lines = edge
        .wait_for_log(|l| l.iter().any(|r| r["kind"] == "tunnel"))
        .await;
    let tunnel = lines.iter().find(|r| r["kind"] == "tunnel").unwrap();
    assert_eq!(tunnel["bytes_client_to_origin"], 1000, "{tunnel}");
    assert_eq!(tunnel["bytes_origin_to_client"], 1005, "{tunnel}");
    assert_eq!(tunnel["closed_by"], "client", "{tunnel}");
    assert_eq!(tunnel["route"], "raw", "{tunnel}");
}
