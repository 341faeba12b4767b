//! Large WebSocket payloads cross a plain-TCP tunnel by `splice(2)` (see
//! `src/tunnel/relay/splice.rs`): every test sends frames large enough to be spliced, mixed
//! with small ones, through a real edge, and checks the bytes that come out against the
//! bytes that went in, byte for byte. Each also checks that splicing did happen.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::edge::{client, group_yaml, TestEdge};
use common::origin::{Recorded, TestOrigin};
use futures_util::{SinkExt, StreamExt};
use portico::tunnel::relay::spliced_bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Splicing is off unless the node turns it on (`server.tunnel_splice`).
const SPLICE_ON: &str = "  tunnel_splice: true\n";

fn rules(origin: SocketAddr) -> String {
    format!(
        "routes:\n  - name: chat\n    patterns: [\"/chat/*\"]\n    origin_group: app\n    websocket: true\norigin_groups:\n{}",
        group_yaml("app", origin)
    )
}

/// A frame header for a payload of `len` bytes, masked (a client's) or not (an origin's).
fn header(opcode_and_fin: u8, len: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![opcode_and_fin];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(bit | len as u8),
        126..=65535 => {
            out.push(bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
    out
}

/// Payload bytes that differ with their position and `seed`: a lost, repeated or
/// misplaced stretch does not compare equal.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 7 + i * 13 + seed * 31) % 251) as u8)
        .collect()
}

/// Sizes that take both paths: large payloads (spliced), small ones (copied) between them,
/// and sizes around the splice threshold (16 KiB still to come after a read).
const SIZES: [usize; 12] = [
    1 << 20,
    5,
    64 << 10,
    64 << 10,
    125,
    64 << 10,
    200_000,
    0,
    16 << 10,
    40_000,
    3,
    (1 << 20) + 7,
];

/// A stream of frames of [`SIZES`], `rounds` times, masked or not.
fn frames(rounds: usize, masked: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for round in 0..rounds {
        for (i, &len) in SIZES.iter().enumerate() {
            let mask = masked.then_some([1, 2, 3, (i + round) as u8]);
            out.extend_from_slice(&header(0x82, len, mask));
            out.extend_from_slice(&pattern(len, i + round * SIZES.len()));
        }
    }
    out
}

/// An origin that answers one upgrade with a 101 and hands the connection to the test.
async fn raw_origin() -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let Some(head) = common::read_request_head(&mut stream).await else {
                continue;
            };
            let key = common::websocket_key(&head).unwrap_or_default();
            let answer = common::switching_protocols(&key);
            if stream.write_all(answer.as_bytes()).await.is_ok() {
                let _ = tx.send(stream).await;
            }
        }
    });
    (addr, rx)
}

/// A raw client's upgrade through the edge: the client's socket after the 101's head (and
/// nothing more: the origin sends nothing until the test does), and the origin's socket.
async fn raw_tunnel(
    edge: &TestEdge,
    origins: &mut mpsc::Receiver<TcpStream>,
) -> (TcpStream, TcpStream) {
    let mut raw = TcpStream::connect(edge.addr).await.unwrap();
    raw.write_all(b"GET /chat/x HTTP/1.1\r\nHost: t.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = raw.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "closed early: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let origin = tokio::time::timeout(Duration::from_secs(10), origins.recv())
        .await
        .expect("the origin got no upgrade")
        .unwrap();
    (raw, origin)
}

/// Reads to the end in small bites, yielding after each: a slow reader, so the edge's
/// writes block and its splices wait on the reader (backpressure).
async fn read_slowly(mut stream: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut got = Vec::new();
    let mut bite = [0u8; 3000];
    loop {
        let n = stream.read(&mut bite).await.unwrap();
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&bite[..n]);
        tokio::task::yield_now().await;
    }
}

/// The first offset where two byte strings differ, for a readable failure.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len())))
}

#[tokio::test]
async fn large_and_small_messages_cross_byte_exact_both_ways_through_an_echo() {
    let origin =
        TestOrigin::websocket_echo(Arc::new(|_: &Recorded| http::Response::new(Bytes::new())))
            .await;
    let edge = TestEdge::with_routes(SPLICE_ON, &rules(origin.addr())).await;
    let config = WebSocketConfig {
        max_message_size: Some(16 << 20),
        max_frame_size: Some(16 << 20),
        ..WebSocketConfig::default()
    };
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(edge.ws_url("/chat/big"), Some(config), false)
            .await
            .unwrap();
    let before = spliced_bytes();
    let (mut sink, mut stream) = ws.split();
    let messages: Vec<Vec<u8>> = (0..3)
        .flat_map(|round| {
            SIZES
                .iter()
                .enumerate()
                .map(move |(i, &len)| pattern(len, i + 100 * round))
        })
        .collect();
    let sent = messages.clone();
    // All of them at once: the echo comes back while the client is still sending.
    let sender = tokio::spawn(async move {
        for message in sent {
            sink.send(Message::binary(message)).await.unwrap();
        }
        sink
    });
    for (i, expected) in messages.iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap_or_else(|_| panic!("message {i} never came back"));
        match got {
            Some(Ok(Message::Binary(data))) => assert!(
                data[..] == expected[..],
                "message {i} ({} bytes) came back as {} bytes, first difference at {:?}",
                expected.len(),
                data.len(),
                first_difference(&data, expected)
            ),
            other => panic!("message {i}: {other:?}"),
        }
    }
    let _sink = sender.await.unwrap();
    // Both ways, most of each large payload went by splice.
    let large: usize = messages
        .iter()
        .filter(|m| m.len() >= 64 << 10)
        .map(Vec::len)
        .sum();
    let spliced = spliced_bytes() - before;
    assert!(
        spliced as usize >= large,
        "only {spliced} bytes spliced of {} large payload bytes each way",
        large
    );
}

#[tokio::test]
async fn slow_readers_both_ways_get_every_byte_in_order_and_the_record_counts_them() {
    let (origin_addr, mut origins) = raw_origin().await;
    let edge = TestEdge::with_routes(SPLICE_ON, &rules(origin_addr)).await;
    let (client, origin) = raw_tunnel(&edge, &mut origins).await;
    let before = spliced_bytes();
    let to_origin = frames(3, true);
    let to_client = frames(3, false);
    let (client_read, mut client_write) = client.into_split();
    let (origin_read, mut origin_write) = origin.into_split();
    // Each side writes all it has (then ends its side) while the other reads slowly.
    let sent = to_origin.clone();
    let client_writer = tokio::spawn(async move {
        client_write.write_all(&sent).await.unwrap();
        client_write.shutdown().await.unwrap();
        client_write
    });
    let sent = to_client.clone();
    let origin_writer = tokio::spawn(async move {
        origin_write.write_all(&sent).await.unwrap();
        origin_write.shutdown().await.unwrap();
        origin_write
    });
    let (at_origin, at_client) = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join(read_slowly(origin_read), read_slowly(client_read)),
    )
    .await
    .expect("the tunnel stalled");
    let _ = (client_writer.await.unwrap(), origin_writer.await.unwrap());
    assert!(
        at_origin == to_origin,
        "client to origin: {} of {} bytes, first difference at {:?}",
        at_origin.len(),
        to_origin.len(),
        first_difference(&at_origin, &to_origin)
    );
    assert!(
        at_client == to_client,
        "origin to client: {} of {} bytes, first difference at {:?}",
        at_client.len(),
        to_client.len(),
        first_difference(&at_client, &to_client)
    );
    let spliced = spliced_bytes() - before;
    // Of about 14 MiB in large payloads (both ways), at most 32 KiB a frame is copied.
    assert!(spliced >= 8 << 20, "only {spliced} bytes spliced");
    let lines = edge
        .wait_for_log(|lines| lines.iter().any(|l| l["kind"] == "tunnel"))
        .await;
    let record = lines.iter().find(|l| l["kind"] == "tunnel").unwrap();
    assert_eq!(record["bytes_client_to_origin"], to_origin.len() as u64);
    assert_eq!(record["bytes_origin_to_client"], to_client.len() as u64);
}

/// `POST /tunnels/close` with `body`: the number closed.
async fn close(edge: &TestEdge, body: &str) -> u64 {
    let response = client()
        .post(edge.admin_url("/tunnels/close"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    answer["closed"].as_u64().unwrap()
}

/// Splits an origin's (unmasked) frame stream into (first byte, payload) pairs; `None`
/// when it does not end on a frame boundary.
fn parse_frames(mut bytes: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 2 {
            return None;
        }
        let (len, at) = match bytes[1] & 0x7f {
            126 => (
                u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(bytes.get(2..10)?.try_into().unwrap()) as usize,
                10,
            ),
            short => (short as usize, 2),
        };
        let payload = bytes.get(at..at + len)?;
        out.push((bytes[0], payload));
        bytes = &bytes[at + len..];
    }
    Some(out)
}

#[tokio::test]
async fn a_close_ordered_while_large_frames_stream_lands_between_two_frames() {
    let (origin_addr, mut origins) = raw_origin().await;
    let edge = TestEdge::with_routes(SPLICE_ON, &rules(origin_addr)).await;
    let (mut client, mut origin) = raw_tunnel(&edge, &mut origins).await;
    let before = spliced_bytes();
    // The origin streams frames of every size without a pause, until the edge closes.
    let streamer = tokio::spawn(async move {
        for round in 0usize.. {
            for (i, &len) in SIZES.iter().enumerate() {
                let mut frame = header(0x82, len, None);
                frame.extend_from_slice(&pattern(len, i + round * SIZES.len()));
                if origin.write_all(&frame).await.is_err() {
                    return;
                }
            }
        }
    });
    // Once a few megabytes have arrived, the close is ordered: a large frame is almost
    // surely on its way, part of it in the edge's pipe.
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    while got.len() < 6 << 20 {
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(spliced_bytes() > before, "nothing was spliced");
    assert_eq!(close(&edge, r#"{"all": true, "how": "close"}"#).await, 1);
    tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut got))
        .await
        .expect("the edge never closed")
        .unwrap();
    streamer.abort();
    let frames = parse_frames(&got).expect("the stream does not end on a frame boundary");
    let (close, data) = frames.split_last().unwrap();
    assert_eq!(close.0, 0x88, "the last frame is not a Close");
    assert_eq!(&close.1[..2], &1001u16.to_be_bytes());
    assert!(data.len() > SIZES.len(), "only {} frames", data.len());
    for (n, (first, payload)) in data.iter().enumerate() {
        let (round, i) = (n / SIZES.len(), n % SIZES.len());
        assert_eq!(*first, 0x82, "frame {n}");
        assert!(
            *payload == pattern(SIZES[i], i + round * SIZES.len()),
            "frame {n} ({} bytes) differs",
            payload.len()
        );
    }
}
