//! `portico::testing` as a Rust user's tests use it: `FrontDoor::in_front_of(..)` before a
//! real WebSocket echo app, tunnels closed on demand, typed access-log records, and the
//! `examples/front_door.rs` program.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::origin::{Recorded, TestOrigin};
use futures_util::{SinkExt, StreamExt};
use portico::testing::{AccessRecord, CloseHow, FrontDoor, Selection};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// An app: WebSocket echo on every path; plain requests get 426 with a max-age (cacheable).
async fn app() -> TestOrigin {
    TestOrigin::websocket_echo(Arc::new(|_: &Recorded| {
        http::Response::builder()
            .status(426)
            .header("cache-control", "public, max-age=60")
            .body(Bytes::from_static(b"upgrade required"))
            .unwrap()
    }))
    .await
}

fn tunnels_closed_by<'a>(
    log: &'a [AccessRecord],
    by: &str,
) -> Vec<&'a portico::testing::TunnelLine> {
    log.iter()
        .filter_map(AccessRecord::tunnel)
        .filter(|t| t.closed_by == by)
        .collect()
}

#[tokio::test]
async fn a_cached_route_fails_the_upgrade_and_a_websocket_route_echoes() {
    let app = app().await;
    let edge = FrontDoor::in_front_of(app.addr())
        .cached("/legacy/*")
        .websocket("/chat")
        .start()
        .await
        .unwrap();
    match tokio_tungstenite::connect_async(edge.ws_url("/legacy/x")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 426),
        other => panic!("the cached route upgraded: {other:?}"),
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url("/chat"))
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));

    let log = edge
        .access_log_until(|l| l.len() >= 2, Duration::from_secs(10))
        .await;
    let requests: Vec<_> = log.iter().filter_map(AccessRecord::request).collect();
    assert_eq!(requests[0].upgrade, "reproduce");
    assert_eq!(requests[0].status, 426);
    assert_eq!(requests[1].route.as_deref(), Some("ws-chat"));
    assert_eq!(requests[1].status, 101);
}

#[tokio::test]
async fn close_tunnels_sends_a_going_away_close_and_the_record_says_admin() {
    let app = app().await;
    let edge = FrontDoor::in_front_of(app.addr())
        .websocket("/chat")
        .start()
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url("/chat"))
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));

    let closed = edge.close_tunnels(&Selection::all(), CloseHow::WebSocket(1001));
    assert_eq!(closed, 1);
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("no Close frame: {other:?}"),
    }
    let log = edge
        .access_log_until(
            |l| !tunnels_closed_by(l, "admin").is_empty(),
            Duration::from_secs(10),
        )
        .await;
    let record = tunnels_closed_by(&log, "admin")[0];
    assert_eq!(record.route, "ws-chat");
    assert!(record.bytes_client_to_origin > 0);
}

#[tokio::test]
async fn a_short_idle_timeout_closes_a_silent_tunnel() {
    let app = app().await;
    let edge = FrontDoor::in_front_of(app.addr())
        .websocket("/chat")
        .idle_timeout(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url("/chat"))
        .await
        .unwrap();
    assert!(common::ws_ends(&mut ws).await);
    let log = edge
        .access_log_until(
            |l| !tunnels_closed_by(l, "idle_timeout").is_empty(),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(tunnels_closed_by(&log, "idle_timeout").len(), 1);
    assert_eq!(edge.open_tunnels(), 0);
}

/// The example program, compiled into this test too.
#[path = "../examples/front_door.rs"]
mod front_door;

#[test]
fn the_front_door_example_runs() {
    front_door::main().unwrap();
}
