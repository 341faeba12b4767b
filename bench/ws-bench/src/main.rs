//! WebSocket load client and echo origin for `bench/run`.
//!
//! ```text
//! ws-bench echo-server ADDR                      # the echo origin (one thread)
//! ws-bench echo URL CONNS SIZE SECS [WARMUP]     # closed-loop echo load (one thread)
//! ws-bench idle URL CONNS HOLD_SECS READY_FILE   # opens CONNS idle tunnels and holds them
//! ```
//!
//! `echo` keeps one message in flight per connection: send SIZE bytes (binary), wait for the
//! echo, repeat. It prints one line of `key=value` pairs: messages per second, MB/s of
//! echoed payload (10^6 bytes, one way), p50 and p99 round-trip latency in ms, errors.
//! Samples taken during the WARMUP seconds (default 1) are discarded.
//!
//! `idle` opens CONNS connections (256 handshakes at a time), sends one small message on
//! each and waits for its echo, so every tunnel is established end to end. It then writes
//! READY_FILE (`opened=N failed=M`), holds the connections without traffic for HOLD_SECS
//! or until SIGTERM, and closes them by exiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match args.first().map(String::as_str) {
        Some("echo-server") if args.len() == 2 => runtime.block_on(echo_server(&args[1])),
        Some("echo") if args.len() == 5 || args.len() == 6 => {
            let warmup = args.get(5).map_or(1.0, |w| num(w));
            runtime.block_on(echo_load(
                &args[1],
                num(&args[2]) as usize,
                num(&args[3]) as usize,
                num(&args[4]),
                warmup,
            ))
        }
        Some("idle") if args.len() == 5 => runtime.block_on(idle(
            &args[1],
            num(&args[2]) as usize,
            num(&args[3]),
            &args[4],
        )),
        _ => {
            eprintln!(
                "usage: ws-bench echo-server ADDR | echo URL CONNS SIZE SECS [WARMUP] | \
                 idle URL CONNS HOLD_SECS READY_FILE"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("ws-bench: {e}");
        std::process::exit(1);
    }
}

fn num(text: &str) -> f64 {
    text.parse().unwrap_or_else(|_| {
        eprintln!("ws-bench: not a number: {text}");
        std::process::exit(2)
    })
}

type BoxError = Box<dyn std::error::Error>;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig {
        max_message_size: Some(64 << 20),
        max_frame_size: Some(64 << 20),
        ..WebSocketConfig::default()
    }
}

async fn echo_server(addr: &str) -> Result<(), BoxError> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await
            else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                let reply = match message {
                    Message::Binary(_) | Message::Text(_) => message,
                    Message::Close(_) => break,
                    _ => continue, // pings are answered by tungstenite itself
                };
                if ws.send(reply).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn echo_load(
    url: &str,
    conns: usize,
    size: usize,
    secs: f64,
    warmup: f64,
) -> Result<(), BoxError> {
    let start = Instant::now() + Duration::from_millis(200); // after the handshakes
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true).await?;
        tasks.push(tokio::spawn(async move {
            let mut ws = ws;
            let payload = vec![0x5a_u8; size];
            let mut samples: Vec<u64> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            tokio::time::sleep_until(start.into()).await;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                if ws.send(Message::Binary(payload.clone())).await.is_err() {
                    errors += 1;
                    break;
                }
                match ws.next().await {
                    Some(Ok(Message::Binary(echo))) if echo.len() == size => {}
                    _ => {
                        errors += 1;
                        break;
                    }
                }
                if sent >= measure_from {
                    samples.push(sent.elapsed().as_nanos() as u64);
                }
            }
            let _ = ws.close(None).await;
            (samples, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (samples, e) = task.await?;
        all.extend(samples);
        errors += e;
    }
    all.sort_unstable();
    let count = all.len() as f64;
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((p * count).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1e6
    };
    println!(
        "msgs_per_s={:.1} mb_per_s={:.2} p50_ms={:.3} p99_ms={:.3} samples={} errors={}",
        count / secs,
        count * size as f64 / secs / 1e6,
        pct(0.50),
        pct(0.99),
        all.len(),
        errors
    );
    Ok(())
}

async fn idle(url: &str, conns: usize, hold: f64, ready_file: &str) -> Result<(), BoxError> {
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let gate = gate.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.ok()?;
            ws.send(Message::Text("hi".into())).await.ok()?;
            match ws.next().await {
                Some(Ok(Message::Text(_))) => Some(ws),
                _ => None,
            }
        }));
    }
    let mut open = Vec::with_capacity(conns);
    for task in tasks {
        if let Some(ws) = task.await? {
            open.push(ws);
        }
    }
    let report = format!("opened={} failed={}\n", open.len(), conns - open.len());
    eprint!("ws-bench idle: {report}");
    std::fs::write(ready_file, report)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(hold)) => {}
        _ = term.recv() => {}
    }
    drop(open);
    Ok(())
}
