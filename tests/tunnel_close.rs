//! `POST /tunnels/close` (each selector, each way) and the `chaos:` schedule, with real
//! WebSocket clients and origins.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::edge::{client, group_yaml, node_yaml, TestEdge};
use common::origin::{Recorded, TestOrigin};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

fn rules(origin: SocketAddr) -> String {
    format!(
        "routes:\n  - name: chat\n    patterns: [\"/chat/*\"]\n    origin_group: app\n    websocket: true\n  - name: feed\n    patterns: [\"/feed/*\"]\n    origin_group: app\n    websocket: true\norigin_groups:\n{}",
        group_yaml("app", origin)
    )
}

async fn echo_origin() -> TestOrigin {
    TestOrigin::websocket_echo(Arc::new(|_: &Recorded| http::Response::new(Bytes::new()))).await
}

/// A WebSocket through the edge to `path`, from `local` (a loopback address), checked to
/// echo before it is handed back.
async fn open(edge: &TestEdge, path: &str, local: [u8; 4]) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((local, 0))).unwrap();
    let stream = socket.connect(edge.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(edge.ws_url(path), stream)
        .await
        .unwrap_or_else(|e| panic!("upgrade to {path} failed: {e}"));
    assert_echoes(&mut ws).await;
    ws
}

async fn assert_echoes<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text("ping")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    assert!(
        matches!(reply, Ok(Some(Ok(Message::Text(ref t)))) if t.as_str() == "ping"),
        "no echo: {reply:?}"
    );
}

/// `POST /tunnels/close` with `body`: the number closed.
async fn close(edge: &TestEdge, body: &str) -> u64 {
    let response = client()
        .post(edge.admin_url("/tunnels/close"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    answer["closed"].as_u64().unwrap()
}

/// Waits for `n` tunnel records closed by `by`; returns them.
async fn closed_by(edge: &TestEdge, by: &str, n: usize) -> Vec<serde_json::Value> {
    let lines = edge
        .wait_for_log(|lines| {
            lines
                .iter()
                .filter(|l| l["kind"] == "tunnel" && l["closed_by"] == by)
                .count()
                >= n
        })
        .await;
    lines
        .into_iter()
        .filter(|l| l["kind"] == "tunnel" && l["closed_by"] == by)
        .collect()
}

/// What a client sees next: the end of its WebSocket, as a short name.
async fn ending<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the tunnel stays open");
    match next {
        Some(Ok(Message::Close(Some(frame)))) => format!("close {}", u16::from(frame.code)),
        Some(Err(WsError::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            "rst".into()
        }
        Some(Err(WsError::Protocol(
            tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ))) => "fin".into(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn all_closes_every_tunnel_with_a_fin_and_each_record_says_admin() {
    let origin = echo_origin().await;
    let edge = TestEdge::with_routes("", &rules(origin.addr())).await;
    let mut tunnels = Vec::new();
    for path in ["/chat/a", "/chat/b", "/feed/c"] {
        tunnels.push(open(&edge, path, [127, 0, 0, 1]).await);
    }
    assert_eq!(close(&edge, r#"{"all": true, "how": "fin"}"#).await, 3);
    for ws in &mut tunnels {
        assert_eq!(ending(ws).await, "fin");
    }
    let records = closed_by(&edge, "admin", 3).await;
    assert_eq!(records.len(), 3);
}

#[tokio::test]
async fn a_route_a_client_and_a_fraction_choose_their_tunnels_only() {
    let origin = echo_origin().await;
    let edge = TestEdge::with_routes("", &rules(origin.addr())).await;
    let mut chat = vec![
        open(&edge, "/chat/1", [127, 0, 0, 1]).await,
        open(&edge, "/chat/2", [127, 0, 0, 1]).await,
    ];
    let mut feed = open(&edge, "/feed/1", [127, 0, 0, 1]).await;
    let mut other_client = open(&edge, "/feed/2", [127, 0, 0, 2]).await;

    assert_eq!(close(&edge, r#"{"route": "chat", "how": "rst"}"#).await, 2);
    for ws in &mut chat {
        assert_eq!(ending(ws).await, "rst");
    }
    assert_echoes(&mut feed).await;
    assert_echoes(&mut other_client).await;

    assert_eq!(
        close(&edge, r#"{"client": "127.0.0.2", "how": "fin"}"#).await,
        1
    );
    assert_eq!(ending(&mut other_client).await, "fin");
    assert_echoes(&mut feed).await;

    // Of 4 open tunnels, half is exactly 2 (a share that is not whole rounds at random).
    let mut more = Vec::new();
    for i in 0..3 {
        more.push(open(&edge, &format!("/feed/more{i}"), [127, 0, 0, 1]).await);
    }
    more.push(feed);
    assert_eq!(close(&edge, r#"{"fraction": 0.5}"#).await, 2);
    let mut ended = 0;
    for ws in &mut more {
        ws.send(Message::text("still there?")).await.ok();
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => {}
            _ => ended += 1,
        }
    }
    assert_eq!(ended, 2);
    assert_eq!(closed_by(&edge, "admin", 5).await.len(), 5);
}

/// An origin that answers every upgrade with a 101 and then runs `then` on the connection.
async fn raw_ws_origin<F, Fut>(then: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let then = Arc::new(then);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let then = then.clone();
            tokio::spawn(async move {
                let Some(head) = common::read_request_head(&mut stream).await else {
                    return;
                };
                let key = common::websocket_key(&head).unwrap_or_default();
                let answer = common::switching_protocols(&key);
                if stream.write_all(answer.as_bytes()).await.is_ok() {
                    then(stream).await;
                }
            });
        }
    });
    addr
}

/// An unmasked frame header for a payload of `len` bytes.
fn header(opcode_and_fin: u8, len: usize) -> Vec<u8> {
    let mut out = vec![opcode_and_fin];
    match len {
        0..=125 => out.push(len as u8),
        126..=65535 => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i + seed) % 251) as u8).collect()
}

#[tokio::test]
async fn a_close_frame_waits_for_the_end_of_the_frame_in_progress() {
    // The origin sends half a frame, then the rest only once the test says so: after the
    // close was ordered. The Close must come after the whole frame.
    let (rest_tx, rest_rx) = tokio::sync::watch::channel(false);
    let origin = raw_ws_origin(move |mut stream| {
        let mut rest = rest_rx.clone();
        async move {
            let payload = pattern(1000, 0);
            let mut first = header(0x82, 1000);
            first.extend_from_slice(&payload[..500]);
            stream.write_all(&first).await.unwrap();
            let _ = rest.wait_for(|go| *go).await;
            stream.write_all(&payload[500..]).await.unwrap();
            let mut sink = [0u8; 1024];
            while let Ok(1..) = stream.read(&mut sink).await {}
        }
    })
    .await;
    let edge = TestEdge::with_routes("", &rules(origin)).await;
    let mut raw = TcpStream::connect(edge.addr).await.unwrap();
    raw.write_all(b"GET /chat/x HTTP/1.1\r\nHost: t.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    // The 101's head, then the 4-byte frame header and 500 payload bytes.
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let body_start = loop {
        let n = raw.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= end + 4 + 504 {
                break end + 4;
            }
        }
    };
    assert!(got.starts_with(b"HTTP/1.1 101"));
    assert_eq!(close(&edge, r#"{"all": true, "how": "close"}"#).await, 1);
    rest_tx.send_replace(true);
    let mut after = got.split_off(body_start);
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut after))
        .await
        .expect("the edge never closed")
        .unwrap();
    let mut expected = header(0x82, 1000);
    expected.extend_from_slice(&pattern(1000, 0));
    expected.extend_from_slice(&[0x88, 12, 0x03, 0xE9]);
    expected.extend_from_slice(b"going away");
    assert_eq!(after, expected);
    assert_eq!(closed_by(&edge, "admin", 1).await.len(), 1);
}

#[tokio::test]
async fn a_client_gets_a_clean_1001_close_while_large_fragmented_messages_stream() {
    // 1 MiB messages in four 256 KiB frames, without a pause: whenever the close is
    // ordered, a frame is almost surely on its way.
    const FRAME: usize = 256 << 10;
    let origin = raw_ws_origin(|mut stream| async move {
        for message in 0usize.. {
            for part in 0..4 {
                let opcode = if part == 0 { 0x2 } else { 0x0 };
                let fin = if part == 3 { 0x80 } else { 0 };
                let mut frame = header(opcode | fin, FRAME);
                frame.extend_from_slice(&pattern(FRAME, message + part));
                if stream.write_all(&frame).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let edge = TestEdge::with_routes("", &rules(origin)).await;
    let config = WebSocketConfig {
        max_message_size: Some(8 << 20),
        max_frame_size: Some(1 << 20),
        ..WebSocketConfig::default()
    };
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(edge.ws_url("/chat/big"), Some(config), false)
            .await
            .unwrap();
    let check = |message: usize, data: &[u8]| {
        assert_eq!(data.len(), 4 * FRAME);
        for part in 0..4 {
            assert!(
                data[part * FRAME..(part + 1) * FRAME] == pattern(FRAME, message + part)[..],
                "message {message} part {part} differs"
            );
        }
    };
    for message in 0..2 {
        match ws.next().await {
            Some(Ok(Message::Binary(data))) => check(message, &data),
            other => panic!("no message: {other:?}"),
        }
    }
    assert_eq!(
        close(&edge, r#"{"route": "chat", "how": "close"}"#).await,
        1
    );
    let mut message = 2;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => {
                check(message, &data);
                message += 1;
            }
            Ok(Some(Ok(Message::Close(Some(frame))))) => break frame.code,
            other => panic!("not a clean close: {other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Away);
    assert!(matches!(
        ws.next().await,
        None | Some(Err(WsError::ConnectionClosed))
    ));
    assert_eq!(closed_by(&edge, "admin", 1).await.len(), 1);
}

#[tokio::test]
async fn the_chaos_schedule_closes_about_its_fraction_each_period() {
    let origin = echo_origin().await;
    let edge = TestEdge::with_routes("", &rules(origin.addr())).await;
    let mut tunnels = Vec::new();
    for i in 0..40 {
        tunnels.push(open(&edge, &format!("/chat/{i}"), [127, 0, 0, 1]).await);
    }
    // Every tunnel is open: the schedule starts now, by a reload.
    let chaos = "chaos:\n  close_tunnels: { every: 1s, fraction: 0.25, how: close_1001 }\n";
    std::fs::write(edge.dir.path().join("portico.yaml"), node_yaml(chaos)).unwrap();
    let (status, answer) = edge.reload().await;
    assert_eq!(status, 200, "{answer}");
    // Expected: 10 at the first tick, then 7 or 8 of the 30 left.
    let records = closed_by(&edge, "chaos", 15).await;
    let mut times: Vec<u64> = records
        .iter()
        .map(|r| r["time_ms"].as_u64().unwrap())
        .collect();
    times.sort_unstable();
    // Ticks are 1 s apart and a tick's closes take milliseconds: a gap splits them.
    let mut ticks = vec![1usize];
    for pair in times.windows(2) {
        if pair[1] - pair[0] > 400 {
            ticks.push(0);
        }
        *ticks.last_mut().unwrap() += 1;
    }
    assert!(
        (8..=12).contains(&ticks[0]),
        "first tick closed {}: {ticks:?}",
        ticks[0]
    );
    if let Some(&second) = ticks.get(1) {
        assert!(
            (4..=11).contains(&second),
            "second tick closed {second}: {ticks:?}"
        );
    }
    drop(tunnels);
}

#[tokio::test]
async fn bad_close_requests_are_refused_and_close_nothing() {
    let origin = echo_origin().await;
    let edge = TestEdge::with_routes("", &rules(origin.addr())).await;
    let mut ws = open(&edge, "/chat/x", [127, 0, 0, 1]).await;
    for body in [r#"{}"#, r#"{"all": true, "how": "close_1006"}"#, "not json"] {
        let response = client()
            .post(edge.admin_url("/tunnels/close"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
    }
    assert_echoes(&mut ws).await;
}
