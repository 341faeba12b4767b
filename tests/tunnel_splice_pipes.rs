//! A tunnel holds a pipe only while it splices: made for its first large message, given
//! back once it has been quiet a while (src/tunnel/relay/splice.rs, `PIPE_KEEP`). Alone in
//! its binary: it counts this process's pipes.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::edge::{group_yaml, TestEdge};
use common::origin::{Recorded, TestOrigin};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The pipes this process holds open (each pipe is two descriptors).
fn pipe_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

#[tokio::test]
async fn a_tunnel_holds_pipes_only_while_it_splices() {
    let origin =
        TestOrigin::websocket_echo(Arc::new(|_: &Recorded| http::Response::new(Bytes::new())))
            .await;
    let rules = format!(
        "routes:\n  - name: chat\n    patterns: [\"/chat/*\"]\n    origin_group: app\n    websocket: true\norigin_groups:\n{}",
        group_yaml("app", origin.addr())
    );
    let edge = TestEdge::with_routes("  tunnel_splice: true\n", &rules).await;
    let config = WebSocketConfig {
        max_message_size: Some(4 << 20),
        max_frame_size: Some(4 << 20),
        ..WebSocketConfig::default()
    };
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(edge.ws_url("/chat/p"), Some(config), false)
            .await
            .unwrap();
    // Small messages: no pipe.
    let before = pipe_fds();
    for _ in 0..10 {
        ws.send(Message::binary(vec![7u8; 100])).await.unwrap();
        assert!(matches!(ws.next().await, Some(Ok(Message::Binary(d))) if d.len() == 100));
    }
    assert_eq!(pipe_fds(), before, "small messages made a pipe");
    // A large one each way: a pipe per direction, 2 descriptors each.
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Binary(d))) => assert!(d[..] == big[..], "the echo differs"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        pipe_fds(),
        before + 4,
        "no pipe per direction while splicing"
    );
    // Quiet: both pipes are given back within PIPE_KEEP (2 s) and a timer tick.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pipe_fds() > before {
        assert!(Instant::now() < deadline, "the pipes were kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The tunnel goes on, and splices again with a new pipe.
    ws.send(Message::binary(big.clone())).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Binary(d))) => assert!(d[..] == big[..], "the echo differs"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pipe_fds(), before + 4);
}
