//! Tunnel timers with one-sided traffic: the idle timeout counts bytes either way, and the
//! maximum lifetime fires on a tunnel that carries nothing at all.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::edge::{group_yaml, TestEdge};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket origin that reads and counts messages and never sends a byte back.
async fn silent_sink() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (addr, received)
}

fn rules(origin: SocketAddr, limits: &str) -> String {
    format!(
        "routes:\n  - name: socket\n    patterns: [\"/*\"]\n    origin_group: sink\n    websocket: true\n{limits}origin_groups:\n{}",
        group_yaml("sink", origin)
    )
}

async fn tunnel_record(edge: &TestEdge) -> serde_json::Value {
    let lines = edge
        .wait_for_log(|l| l.iter().any(|r| r["kind"] == "tunnel"))
        .await;
    lines.into_iter().find(|r| r["kind"] == "tunnel").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_stream_outlives_the_idle_timeout_and_silence_both_ways_ends_it() {
    let (origin, received) = silent_sink().await;
    let edge = TestEdge::with_routes("", &rules(origin, "    tunnel_idle_timeout: 300ms\n")).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url("/push"))
        .await
        .unwrap();
    // Client to origin only, for five idle timeouts: the origin's leg is silent throughout.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        ws.send(Message::Text("tick".into()))
            .await
            .expect("the tunnel must stay open while bytes flow one way");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::SeqCst) < sent {
        assert!(
            Instant::now() < deadline,
            "the origin never got every message"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Now nothing moves either way: the edge closes the tunnel.
    assert!(
        common::ws_ends(&mut ws).await,
        "the silent tunnel stayed open"
    );
    let tunnel = tunnel_record(&edge).await;
    assert_eq!(tunnel["closed_by"], "idle_timeout", "{tunnel}");
    assert!(tunnel["duration_ms"].as_u64().unwrap() >= 1500, "{tunnel}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maximum_lifetime_ends_a_tunnel_that_carries_nothing() {
    let (origin, _) = silent_sink().await;
    let edge = TestEdge::with_routes("", &rules(origin, "    tunnel_max_lifetime: 300ms\n")).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url("/quiet"))
        .await
        .unwrap();
    assert!(
        common::ws_ends(&mut ws).await,
        "the tunnel outlived its maximum lifetime"
    );
    let tunnel = tunnel_record(&edge).await;
    assert_eq!(tunnel["closed_by"], "max_lifetime", "{tunnel}");
    let lived = tunnel["duration_ms"].as_u64().unwrap();
    assert!((300..5000).contains(&lived), "{tunnel}");
}
