//! `portico::testing` in a program: an app that answers "hello", the emulated Front Door in
//! front of it, a request through the edge, a WebSocket upgrade on a cached route that
//! fails as on Front Door, and the access log read back as typed records.
//!
//! `cargo run --example front_door` (`tests/testing_api.rs` runs it too).

use std::time::Duration;

use portico::testing::FrontDoor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app_addr = app.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = app.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = conn.read(&mut head).await;
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });

    let edge = FrontDoor::in_front_of(app_addr)
        .cached("/legacy/*")
        .websocket("/chat")
        .idle_timeout(Duration::from_secs(2))
        .start()
        .await?;
    println!(
        "edge on {}, admin on {}",
        edge.url("/"),
        edge.admin_url("/status")
    );

    let answer = get(edge.addr(), "/legacy/page", "").await?;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
        "{answer}"
    );

    // An upgrade on the cached route reaches the app as a plain GET: no 101.
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let answer = get(edge.addr(), "/legacy/socket", upgrade).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let log = edge
        .access_log_until(|lines| lines.len() >= 2, Duration::from_secs(10))
        .await;
    for line in &log {
        let request = line.request().ok_or("a request line")?;
        println!(
            "{} {} -> {} ({}, upgrade: {})",
            request.method, request.path, request.status, request.cache, request.upgrade
        );
    }
    assert_eq!(
        log[1].request().map(|r| r.upgrade.as_str()),
        Some("reproduce")
    );
    Ok(())
}

async fn get(
    edge: std::net::SocketAddr,
    path: &str,
    extra: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut conn = tokio::net::TcpStream::connect(edge).await?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n{extra}Connection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await?;
    // Up to the app's 5-byte body: an upgrade request's connection may stay open.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.ends_with(b"hello") {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
