//! Tunnels across a graceful binary upgrade, with the built binary and real sockets: many
//! tunnels echoing running sequences, a message in flight, a client that stopped reading,
//! and `wss://` tunnels, which stay and drain in the old process.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::edge::client;
use common::node::{upgrade, NodeFiles};
use common::process::{first_answer, free_port};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

/// Large messages both ways (the 16 MiB one, a flood).
fn big_messages() -> WebSocketConfig {
    WebSocketConfig {
        max_message_size: Some(64 << 20),
        max_frame_size: Some(64 << 20),
        ..WebSocketConfig::default()
    }
}

/// The byte at `offset` of every test payload: a long period, so a lost, repeated or
/// reordered run of bytes shows.
fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(7) % 251) as u8
}

/// A WebSocket origin that checks each connection's running sequence: an 8-byte binary
/// message must carry the next number (from 0) and is echoed; a wrong one ends the
/// connection with a Close that names it. `flood N` is answered with N pattern bytes in
/// 64 KiB binary messages (`flooded` counts what was sent); anything else is echoed.
struct SequenceOrigin {
    addr: SocketAddr,
    flooded: Arc<AtomicU64>,
}

impl SequenceOrigin {
    async fn start() -> SequenceOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flooded = Arc::new(AtomicU64::new(0));
        let counter = flooded.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve_sequence(tcp, counter.clone()));
            }
        });
        SequenceOrigin { addr, flooded }
    }
}

async fn serve_sequence(tcp: TcpStream, flooded: Arc<AtomicU64>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(big_messages())).await
    else {
        return;
    };
    let mut expected = 0u64;
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            Message::Binary(ref data) if data.len() == 8 => {
                let got = u64::from_be_bytes(data[..].try_into().unwrap());
                if got != expected {
                    let reason = format!("expected {expected}, got {got}");
                    let close = CloseFrame {
                        code: CloseCode::Protocol,
                        reason: reason.into(),
                    };
                    let _ = ws.close(Some(close)).await;
                    return;
                }
                expected += 1;
                message
            }
            Message::Text(ref text) if text.starts_with("flood ") => {
                let total: u64 = text["flood ".len()..].parse().unwrap();
                let mut offset = 0;
                while offset < total {
                    let len = (total - offset).min(64 << 10);
                    let chunk: Vec<u8> = (offset..offset + len).map(pattern).collect();
                    if ws.send(Message::Binary(chunk)).await.is_err() {
                        return;
                    }
                    offset += len;
                    flooded.store(offset, Ordering::Relaxed);
                }
                continue;
            }
            Message::Close(_) => continue, // tungstenite answers it
            other => other,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

fn chat_rules(origin: SocketAddr) -> String {
    format!(
        "routes:\n  - name: chat\n    patterns: [\"/chat/*\"]\n    origin_group: echo\n    websocket: true\n    forwarding_protocol: http_only\norigin_groups:\n  - name: echo\n    origins:\n      - name: echo-1\n        address: {origin}\n        host_header: origin.internal\n"
    )
}

type Tunnel = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn open_tunnel(port: u16, path: &str) -> Tunnel {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let url = format!("ws://127.0.0.1:{port}{path}");
    tokio_tungstenite::client_async_with_config(url, tcp, Some(big_messages()))
        .await
        .expect("upgrade")
        .0
}

/// Sends its tunnel's running sequence, one number every `pace`, and checks each echo;
/// `echoed` is how many came back. Ends when `stop` is set, with the first fault.
async fn keep_echoing(
    mut ws: Tunnel,
    echoed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    pace: Duration,
) -> Result<Tunnel, String> {
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let sent = Message::Binary(next.to_be_bytes().to_vec());
        ws.send(sent.clone())
            .await
            .map_err(|e| format!("send {next}: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(echo))) if echo == sent => {}
            other => return Err(format!("echo of {next}: {other:?}")),
        }
        next += 1;
        echoed.store(next, Ordering::Relaxed);
        tokio::time::sleep(pace).await;
    }
    Ok(ws)
}

/// Polls until `done` holds, for at most `limit`.
async fn until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill(pid: &str) {
    std::process::Command::new("kill")
        .args(["-INT", pid])
        .status()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tunnels_keep_their_sequences_and_the_old_process_exits_within_5_s() {
    const TUNNELS: usize = 1000;
    let origin = SequenceOrigin::start().await;
    // A long drain: an old process that waited for its tunnels would show.
    let node = NodeFiles::with(
        "  tunnel_drain_timeout: 60s\n",
        "",
        "limits:\n  max_connections_per_client: 5000\n",
        &chat_rules(origin.addr),
    );
    let mut old = node.run(&[], "old");
    let http = client();
    first_answer(&http, &node.url("/ready")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut echoed = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..TUNNELS {
        let ws = open_tunnel(node.port, &format!("/chat/{i}")).await;
        let count = Arc::new(AtomicU64::new(0));
        echoed.push(count.clone());
        // Spread over the pace: about 4,000 echoes a second in all.
        let pace = Duration::from_millis(250);
        tasks.push(tokio::spawn(keep_echoing(ws, count, stop.clone(), pace)));
    }
    let counts = |echoed: &[Arc<AtomicU64>]| -> Vec<u64> {
        echoed.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    };
    until(Duration::from_secs(60), "every tunnel's first echo", || {
        counts(&echoed).iter().all(|&n| n >= 1)
    })
    .await;

    let new_pid = upgrade(&node, &old, &[]);
    let quit = Instant::now();
    let exit = old
        .exited_within(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the old process kept its tunnels:\n{}", old.printed()));
    let took = quit.elapsed();
    assert!(exit.success(), "{}", old.printed());
    let printed = old.printed();
    assert!(printed.contains("1000 handed over"), "{printed}");
    println!("SIGQUIT to the old process's exit with {TUNNELS} tunnels echoing: {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}\n{printed}");

    // Every tunnel goes on, in order, through the new process.
    let at_exit = counts(&echoed);
    until(
        Duration::from_secs(60),
        "three echoes per tunnel after the upgrade",
        || {
            counts(&echoed)
                .iter()
                .zip(&at_exit)
                .all(|(now, then)| *now >= then + 3)
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut faults = Vec::new();
    let mut tunnels = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(ws) => tunnels.push(ws),
            Err(fault) => faults.push(format!("tunnel {i}: {fault}")),
        }
    }
    assert!(
        faults.is_empty(),
        "{} faults: {:?}",
        faults.len(),
        &faults[..faults.len().min(10)]
    );
    let metrics = node.metrics(&http).await;
    assert!(
        metrics.contains("portico_tunnels_adopted_total 1000\n"),
        "{metrics}"
    );
    for ws in &mut tunnels {
        ws.close(None).await.unwrap();
    }
    let records = node.wait_for_records("tunnel", TUNNELS).await;
    assert_eq!(records.len(), TUNNELS);
    kill(&new_pid);
}

/// Writes a client's (masked) WebSocket binary frame head for `len` payload bytes.
fn binary_frame_head(len: u64, mask: [u8; 4]) -> Vec<u8> {
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&mask);
    head
}

/// Opens a tunnel by hand on a raw socket: the `101`'s head is read, nothing more.
async fn raw_tunnel(port: u16, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_message_half_sent_at_the_upgrade_arrives_whole() {
    const SIZE: u64 = 16 << 20;
    let origin = SequenceOrigin::start().await;
    let node = NodeFiles::new("  tunnel_drain_timeout: 60s\n", &chat_rules(origin.addr));
    let mut old = node.run(&[], "old");
    first_answer(&client(), &node.url("/ready")).await;

    let mut tcp = raw_tunnel(node.port, "/chat/big").await;
    let mask = [0x5a, 0x17, 0xc3, 0x88];
    let masked: Vec<u8> = (0..SIZE)
        .map(|i| pattern(i) ^ mask[(i % 4) as usize])
        .collect();
    tcp.write_all(&binary_frame_head(SIZE, mask)).await.unwrap();
    // Half the message is on its way (through the old process) when the upgrade happens.
    let half = (SIZE / 2) as usize;
    tcp.write_all(&masked[..half]).await.unwrap();
    let new_pid = upgrade(&node, &old, &[]);
    old.exited_within(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the old process kept its tunnel:\n{}", old.printed()));
    assert!(old.printed().contains("1 handed over"), "{}", old.printed());
    tcp.write_all(&masked[half..]).await.unwrap();

    // The echo: one unmasked binary frame with the same 16 MiB.
    let mut head = [0u8; 10];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(head[..2], [0x82, 127], "{head:?}");
    assert_eq!(u64::from_be_bytes(head[2..].try_into().unwrap()), SIZE);
    let mut echo = vec![0u8; SIZE as usize];
    tcp.read_exact(&mut echo).await.unwrap();
    let first_wrong = (0..SIZE).find(|&i| echo[i as usize] != pattern(i));
    assert_eq!(first_wrong, None, "the message changed");
    kill(&new_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stopped_reading_gets_the_held_bytes_in_order_after_the_upgrade() {
    const SIZE: u64 = 8 << 20;
    let origin = SequenceOrigin::start().await;
    let node = NodeFiles::new("  tunnel_drain_timeout: 60s\n", &chat_rules(origin.addr));
    let mut old = node.run(&[], "old");
    first_answer(&client(), &node.url("/ready")).await;

    // A client with a small receive buffer that asks for 8 MiB and does not read: the
    // kernel buffers fill, and the old process's relay holds bytes it cannot write.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], node.port)))
        .await
        .unwrap();
    let url = format!("ws://127.0.0.1:{}/chat/flood", node.port);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(big_messages()))
        .await
        .expect("upgrade");
    ws.send(Message::text(format!("flood {SIZE}")))
        .await
        .unwrap();
    // Until the origin's sending stalls (or ends): the kernel buffers towards the client
    // are full, and the relay is blocked holding what it read last (checked below).
    let mut last = (u64::MAX, Instant::now());
    until(Duration::from_secs(30), "the flood to stall", || {
        let sent = origin.flooded.load(Ordering::Relaxed);
        if sent != last.0 {
            last = (sent, Instant::now());
        }
        sent > 0 && last.1.elapsed() > Duration::from_millis(300)
    })
    .await;

    let new_pid = upgrade(&node, &old, &[]);
    old.exited_within(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the old process kept its tunnel:\n{}", old.printed()));
    let printed = old.printed();
    let held: usize = printed
        .split("1 handed over (holding ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(held > 0, "the relay held nothing: {printed}");

    // Now the client reads: all 8 MiB, in order, through the new process.
    let mut offset = 0u64;
    while offset < SIZE {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => {
                for (i, byte) in data.iter().enumerate() {
                    assert_eq!(
                        *byte,
                        pattern(offset + i as u64),
                        "byte {}",
                        offset + i as u64
                    );
                }
                offset += data.len() as u64;
            }
            other => panic!("after {offset} bytes: {other:?}"),
        }
    }
    assert_eq!(offset, SIZE);
    println!("the old relay held {held} bytes for the client; all {SIZE} arrived in order");
    kill(&new_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_tunnels_stay_in_the_old_process_and_drain_there() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let origin = SequenceOrigin::start().await;
    let pki = common::tls::TestPki::new();
    let www = pki.issue("www", &["www.test"]);
    let tls_port = free_port();
    let listener = format!(
        "  - address: 127.0.0.1:{tls_port}\n    tls:\n      certificates:\n        - cert_file: {}\n          key_file: {}\n",
        www.cert.display(),
        www.key.display()
    );
    let node = NodeFiles::with(
        "  tunnel_drain_timeout: 3s\n",
        &listener,
        "",
        &chat_rules(origin.addr),
    );
    let mut old = node.run(&[], "old");
    first_answer(&client(), &node.url("/ready")).await;
    let connector = tokio_tungstenite::Connector::Rustls(Arc::new(pki.client_config()));
    let wss = |path: &str| {
        let request = format!("wss://www.test{path}")
            .into_client_request()
            .unwrap();
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
            tokio_tungstenite::client_async_tls_with_config(request, tcp, None, Some(connector))
                .await
                .expect("wss upgrade")
                .0
        }
    };
    let mut tunnel = wss("/chat/secure").await;
    let one = Message::Binary(0u64.to_be_bytes().to_vec());
    tunnel.send(one.clone()).await.unwrap();
    assert_eq!(tunnel.next().await.unwrap().unwrap(), one);

    let new_pid = upgrade(&node, &old, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !old.printed().contains("tunnel handover:") {
        assert!(Instant::now() < deadline, "{}", old.printed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The old process still relays it; a new wss tunnel goes to the new process.
    let two = Message::Binary(1u64.to_be_bytes().to_vec());
    tunnel.send(two.clone()).await.unwrap();
    assert_eq!(tunnel.next().await.unwrap().unwrap(), two);
    let mut fresh = wss("/chat/fresh").await;
    fresh.send(one.clone()).await.unwrap();
    assert_eq!(fresh.next().await.unwrap().unwrap(), one);

    // At the drain's end the old process closes it and exits.
    assert!(
        common::ws_ends(&mut tunnel).await,
        "closed at the drain's end"
    );
    let exit = old
        .exited_within(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("the old process never exited:\n{}", old.printed()));
    assert!(exit.success());
    let printed = old.printed();
    assert!(
        printed.contains("upgrade: tunnels 0 handed over, 1 kept and drained (1 of them closed at the drain timeout)"),
        "{printed}"
    );
    let records = node.wait_for_records("tunnel", 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["closed_by"], "shutdown", "{records:?}");
    fresh.close(None).await.unwrap();
    kill(&new_pid);
}
