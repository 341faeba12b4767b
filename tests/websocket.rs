//! WebSocket through the edge: a real tungstenite client, a real echo origin.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::edge::{group_yaml, TestEdge};
use common::origin::{Handler, Recorded, TestOrigin};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Non-upgrade requests get a cacheable 200, as a page at the same URL would.
fn page_handler() -> Handler {
    Arc::new(|r: &Recorded| {
        http::Response::builder()
            .status(200)
            .header("cache-control", "public, max-age=60")
            .body(Bytes::from(format!("page {}", r.path())))
            .unwrap()
    })
}

/// Routes: `chat` (websocket), `nocache` (caching off), `cached-*` (caching on, one per mode).
fn ws_rules(origin: std::net::SocketAddr, extra_route: &str) -> String {
    format!(
        r#"routes:
  - name: chat
    patterns: ["/chat/*"]
    origin_group: echo
    websocket: true
    rule_sets: [try-to-cache, rewrite]
  - name: nocache
    patterns: ["/plain/*"]
    origin_group: echo
  - name: cached-reproduce
    patterns: ["/reproduce/*"]
    origin_group: echo
    cache: {{ enabled: true }}
  - name: cached-bypass
    patterns: ["/bypass/*"]
    origin_group: echo
    cache: {{ enabled: true }}
    on_cached_upgrade: bypass
  - name: cached-reject
    patterns: ["/reject/*"]
    origin_group: echo
    cache: {{ enabled: true }}
    on_cached_upgrade: reject
{extra_route}
rule_sets:
  - name: try-to-cache
    rules:
      - name: cache-it
        actions:
          - type: route_override
            caching: true
  - name: rewrite
    rules:
      - name: old-path
        conditions:
          - match: request_path
            operator: begins_with
            values: ["/chat/old/"]
        actions:
          - type: url_rewrite
            source_pattern: /chat/old/
            destination: /chat/new/
origin_groups:
{}"#,
        group_yaml("echo", origin)
    )
}

async fn setup(extra_route: &str) -> (TestOrigin, TestEdge) {
    let origin = TestOrigin::websocket_echo(page_handler()).await;
    let edge = TestEdge::with_routes("", &ws_rules(origin.addr(), extra_route)).await;
    (origin, edge)
}

fn big_config() -> WebSocketConfig {
    WebSocketConfig {
        max_message_size: Some(64 << 20),
        max_frame_size: Some(64 << 20),
        ..WebSocketConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_binary_fragmented_ping_and_16_mib_echo_byte_identical() {
    let (_origin, edge) = setup("").await;
    let (mut ws, response) = tokio_tungstenite::connect_async_with_config(
        edge.ws_url("/chat/room"),
        Some(big_config()),
        false,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-cache"], "CONFIG_NOCACHE");
    assert!(response.headers().contains_key("x-portico-ref"));

    ws.send(Message::Text("héllo".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("héllo".into())
    );

    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::Binary(binary.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(binary));

    // One message in three frames: the origin reassembles it and echoes it whole.
    ws.send(Message::Frame(Frame::message(
        b"frag".to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        b"ment".to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        b"ed".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("fragmented".into())
    );

    ws.send(Message::Ping(b"are you there".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Pong(b"are you there".to_vec())
    );

    let huge: Vec<u8> = (0..16 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    ws.send(Message::Binary(huge.clone())).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(echoed) => assert!(echoed == huge, "16 MiB echo differs"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_cross_unchanged_and_the_tunnel_record_is_written_once() {
    let (_origin, edge) = setup("").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url("/chat/room"))
        .await
        .unwrap();
    ws.send(Message::Text("x".into())).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4321),
        reason: "bye now".into(),
    }))
    .await
    .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(
        echoed,
        Message::Close(Some(CloseFrame {
            code: CloseCode::Library(4321),
            reason: "bye now".into()
        }))
    );

    let lines = edge
        .wait_for_log(|l| l.iter().any(|r| r["kind"] == "tunnel"))
        .await;
    let handshake = lines.iter().find(|r| r["kind"] == "request").unwrap();
    assert_eq!(handshake["status"], 101);
    assert_eq!(handshake["upgrade"], "tunnel");
    let tunnels: Vec<_> = lines.iter().filter(|r| r["kind"] == "tunnel").collect();
    assert_eq!(tunnels.len(), 1);
    let tunnel = tunnels[0];
    assert_eq!(tunnel["request_id"], handshake["request_id"]);
    assert_eq!(tunnel["route"], "chat");
    assert!(tunnel["bytes_client_to_origin"].as_u64().unwrap() > 0);
    assert!(tunnel["bytes_origin_to_client"].as_u64().unwrap() > 0);
    assert!(
        ["client", "origin"].contains(&tunnel["closed_by"].as_str().unwrap()),
        "{tunnel}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocols_and_handshake_headers_reach_the_origin() {
    let (origin, edge) = setup("").await;
    let mut request = edge.ws_url("/chat/room").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "chat.v2, chat.v1".parse().unwrap(),
    );
    request
        .headers_mut()
        .insert("origin", "https://app.example.com".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v2");
    ws.send(Message::Text("ok".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("ok".into())
    );
    let seen = &origin.requests()[0];
    assert_eq!(
        seen.headers["upgrade"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase(),
        "websocket"
    );
    assert_eq!(seen.headers["origin"], "https://app.example.com");
    assert!(seen.headers.contains_key("sec-websocket-key"));
    assert_eq!(seen.headers["sec-websocket-version"], "13");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_changes_the_handshake_path_only() {
    let (origin, edge) = setup("").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url("/chat/old/room?t=1"))
        .await
        .unwrap();
    // A payload that looks like the rewritten path must cross untouched.
    ws.send(Message::Text("/chat/old/room".into()))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("/chat/old/room".into())
    );
    assert_eq!(origin.requests()[0].uri, "/chat/new/room?t=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_with_caching_off_tunnel_and_bypass_mode_tunnels() {
    let (_origin, edge) = setup("").await;
    for path in ["/plain/x", "/bypass/x"] {
        let (mut ws, response) = tokio_tungstenite::connect_async(edge.ws_url(path))
            .await
            .unwrap();
        assert_eq!(response.status(), 101, "{path}");
        ws.send(Message::Text(path.into())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Text(path.into())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reproduce_mode_fails_the_upgrade_exactly_as_front_door_does() {
    let (origin, edge) = setup("").await;
    let error = tokio_tungstenite::connect_async(edge.ws_url("/reproduce/socket"))
        .await
        .unwrap_err();
    match error {
        // The origin answered the plain GET with its page; the client sees that status.
        WsError::Http(response) => {
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["x-cache"], "UNCACHEABLE");
        }
        other => panic!("expected an HTTP answer, got {other:?}"),
    }
    let seen = &origin.requests()[0];
    assert!(
        !seen.headers.contains_key("upgrade"),
        "the origin must not see Upgrade: {:?}",
        seen.headers
    );
    let connection = seen
        .headers
        .get("connection")
        .map(|v| v.to_str().unwrap().to_ascii_lowercase());
    assert!(!connection.unwrap_or_default().contains("upgrade"));
    assert_eq!(seen.method, "GET");
    // Not stored: a second upgrade reaches the origin again.
    let _ = tokio_tungstenite::connect_async(edge.ws_url("/reproduce/socket"))
        .await
        .unwrap_err();
    assert_eq!(origin.count_path("/reproduce/socket"), 2);
    let lines = edge.wait_for_log(|l| l.len() >= 2).await;
    assert_eq!(lines[0]["upgrade"], "reproduce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_answers_426_naming_the_route() {
    let (origin, edge) = setup("").await;
    match tokio_tungstenite::connect_async(edge.ws_url("/reject/socket"))
        .await
        .unwrap_err()
    {
        WsError::Http(response) => {
            assert_eq!(response.status(), 426);
            assert_eq!(
                response.headers()["x-portico-error"],
                "cached-route-upgrade"
            );
        }
        other => panic!("expected 426, got {other:?}"),
    }
    // The body says why (read with a plain client: tungstenite keeps a refused
    // handshake's body only when it arrived in the same read as the head).
    let answer = common::edge::client()
        .get(edge.url("/reject/socket"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 426);
    let body = answer.text().await.unwrap();
    assert!(body.contains("cached-reject"), "{body}");
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_tunnels_exchange_a_hundred_messages_each() {
    let (_origin, edge) = setup("").await;
    let url = edge.ws_url("/chat/load");
    let clients = (0..200).map(|client| {
        let url = url.clone();
        tokio::spawn(async move {
            let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let (mut tx, mut rx) = ws.split();
            let writer = tokio::spawn(async move {
                for n in 0..100 {
                    tx.send(Message::Text(format!("{client}:{n}")))
                        .await
                        .unwrap();
                }
                tx
            });
            for n in 0..100 {
                assert_eq!(
                    rx.next().await.unwrap().unwrap(),
                    Message::Text(format!("{client}:{n}"))
                );
            }
            let mut tx = writer.await.unwrap();
            tx.close().await.unwrap();
        })
    });
    for handle in clients.collect::<Vec<_>>() {
        handle.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_and_recorded_as_idle_timeout() {
    let extra = "  - name: short-idle\n    patterns: [\"/idle/*\"]\n    origin_group: echo\n    websocket: true\n    tunnel_idle_timeout: 300ms\n";
    let (_origin, edge) = setup(extra).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url("/idle/x"))
        .await
        .unwrap();
    ws.send(Message::Text("one".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("one".into())
    );
    // Stay silent: the edge must close the tunnel by itself.
    assert!(
        common::ws_ends(&mut ws).await,
        "the idle tunnel stayed open"
    );
    let lines = edge
        .wait_for_log(|l| l.iter().any(|r| r["kind"] == "tunnel"))
        .await;
    let tunnel = lines.iter().find(|r| r["kind"] == "tunnel").unwrap();
    assert_eq!(tunnel["closed_by"], "idle_timeout", "{tunnel}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_past_its_lifetime_is_closed_and_recorded_as_max_lifetime() {
    let extra = "  - name: short-life\n    patterns: [\"/life/*\"]\n    origin_group: echo\n    websocket: true\n    tunnel_max_lifetime: 200ms\n";
    let (_origin, edge) = setup(extra).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(edge.ws_url("/life/x"))
        .await
        .unwrap();
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            ticks.tick().await;
            if ws.send(Message::Text("tick".into())).await.is_err() {
                return;
            }
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the tunnel outlived its maximum lifetime");
    let lines = edge
        .wait_for_log(|l| l.iter().any(|r| r["kind"] == "tunnel"))
        .await;
    let tunnel = lines.iter().find(|r| r["kind"] == "tunnel").unwrap();
    assert_eq!(tunnel["closed_by"], "max_lifetime", "{tunnel}");
    assert!(tunnel["duration_ms"].as_u64().unwrap() >= 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_page_is_never_served_to_an_upgrade_and_an_upgrade_is_never_stored() {
    let (origin, edge) = setup("").await;
    let client = common::edge::client();
    let get = |path: &'static str| {
        let request = client.get(edge.url(path)).send();
        async move { request.await.unwrap().headers()["x-cache"].clone() }
    };
    // A page for the URL is in the cache...
    assert_eq!(get("/reproduce/page").await, "TCP_MISS");
    assert_eq!(get("/reproduce/page").await, "TCP_HIT");
    assert_eq!(origin.count_path("/reproduce/page"), 1);
    // ...and the upgrade still goes to the origin (as a plain GET) and fails there.
    match tokio_tungstenite::connect_async(edge.ws_url("/reproduce/page"))
        .await
        .unwrap_err()
    {
        WsError::Http(response) => assert_eq!(response.headers()["x-cache"], "UNCACHEABLE"),
        other => panic!("expected an HTTP answer, got {other:?}"),
    }
    assert_eq!(origin.count_path("/reproduce/page"), 2);
    // An upgrade's answer is not stored: the first GET after it is a miss.
    let _ = tokio_tungstenite::connect_async(edge.ws_url("/reproduce/fresh")).await;
    assert_eq!(origin.count_path("/reproduce/fresh"), 1);
    assert_eq!(get("/reproduce/fresh").await, "TCP_MISS");
    assert_eq!(origin.count_path("/reproduce/fresh"), 2);
    // The same holds for bypass: the tunnel opens although a page is cached.
    assert_eq!(get("/bypass/page").await, "TCP_MISS");
    assert_eq!(get("/bypass/page").await, "TCP_HIT");
    let (_ws, response) = tokio_tungstenite::connect_async(edge.ws_url("/bypass/page"))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-cache"], "CONFIG_NOCACHE");
}

/// Requests that are not upgrades by Portico's definition (a GET with `Connection:
/// upgrade` and `Upgrade: websocket` on a tunnelling route) never reach the origin with
/// `Upgrade` or `Connection: upgrade`, whatever the route: Pingora's own policy would
/// re-add them. Each carries a valid key, so an origin that saw the upgrade would switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_upgrades_never_reach_the_origin_as_upgrades() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (origin, edge) = setup("").await;
    let key = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let variants = [
        ("GET", "Upgrade: websocket\r\n"),
        ("POST", "Connection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n"),
        ("GET", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
        ("GET", "Connection: keep-alive\r\nUpgrade: websocket\r\n"),
    ];
    let paths = [
        "/chat/x",
        "/plain/x",
        "/reproduce/x",
        "/bypass/x",
        "/reject/x",
    ];
    for prefix in paths {
        for (n, (method, headers)) in variants.iter().enumerate() {
            // A path of its own each time: on caching routes, a GET is stored.
            let path = format!("{prefix}{n}");
            let before = origin.count();
            let mut stream = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
            let request =
                format!("{method} {path} HTTP/1.1\r\nHost: t.example\r\n{headers}{key}\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let head = common::read_request_head(&mut stream)
                .await
                .expect("an answer");
            let status_line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap()
                .to_string();
            let what = format!("{method} {path} with {headers:?}");
            assert!(status_line.contains(" 200 "), "{what}: {status_line}");
            let mut rest = [0u8; 64];
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(50), stream.read(&mut rest))
                    .await;
            assert_eq!(
                origin.count(),
                before + 1,
                "{what}: reached the origin once"
            );
            let seen = origin.requests().pop().unwrap();
            assert!(
                seen.headers.get("upgrade").is_none(),
                "{what}: {:?}",
                seen.headers
            );
            let connection = seen
                .headers
                .get("connection")
                .map(|v| v.to_str().unwrap().to_ascii_lowercase())
                .unwrap_or_default();
            assert!(
                !connection.contains("upgrade"),
                "{what}: Connection: {connection}"
            );
        }
    }
}
