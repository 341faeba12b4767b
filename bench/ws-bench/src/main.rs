//! WebSocket load client and echo origin for `bench/run`, and two small HTTP/1.1 clients.
//!
//! ```text
//! ws-bench echo-server ADDR                      # the echo origin (one thread)
//! ws-bench echo URL CONNS SIZE SECS [WARMUP]     # closed-loop echo load (one thread)
//! ws-bench idle URL CONNS HOLD_SECS READY_FILE   # opens CONNS idle tunnels and holds them
//! ws-bench http-idle ADDR PATH CONNS HOLD_SECS READY_FILE
//!                                                # CONNS idle keep-alive HTTP connections
//! ws-bench http-fill ADDR PREFIX COUNT CONNS     # GET PREFIX0 .. PREFIX{COUNT-1} once each
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
//!
//! `http-idle` is the same for plain HTTP/1.1 (scenario 7): each connection sends one
//! `GET PATH` and reads the whole response, then stays open without traffic. READY_FILE
//! gets `opened=N failed=M` once all are done; at the end (HOLD_SECS or SIGTERM) it prints
//! `opened=N failed=M closed_by_server=K`, K counting connections the server closed while
//! they idled.
//!
//! `http-fill` requests COUNT distinct URLs over CONNS keep-alive connections (scenario 8
//! fills a cache with them) and prints `requests=N errors=M secs=S`; an error is a status
//! other than 200 or a failed connection (which is then opened again).
//!
//! Both send `Host: ADDR`, as `wrk` does for `http://ADDR/`, so the cache keys match.

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
        Some("http-idle") if args.len() == 6 => runtime.block_on(http_idle(
            &args[1],
            &args[2],
            num(&args[3]) as usize,
            num(&args[4]),
            &args[5],
        )),
        Some("http-fill") if args.len() == 5 => runtime.block_on(http_fill(
            &args[1],
            &args[2],
            num(&args[3]) as usize,
            num(&args[4]) as usize,
        )),
        _ => {
            eprintln!(
                "usage: ws-bench echo-server ADDR | echo URL CONNS SIZE SECS [WARMUP] | \
                 idle URL CONNS HOLD_SECS READY_FILE | \
                 http-idle ADDR PATH CONNS HOLD_SECS READY_FILE | \
                 http-fill ADDR PREFIX COUNT CONNS"
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

// --- plain HTTP/1.1 (scenarios 7 and 8) ----------------------------------------------------

type HttpConn = tokio::io::BufReader<tokio::net::TcpStream>;

async fn http_connect(addr: &str) -> std::io::Result<HttpConn> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(tokio::io::BufReader::with_capacity(4096, stream))
}

fn bad_response(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Sends `GET path` and reads the whole response (Content-Length or chunked); returns its
/// status. The connection is then ready for the next request.
async fn http_get(conn: &mut HttpConn, addr: &str, path: &str) -> std::io::Result<u16> {
    use tokio::io::AsyncWriteExt;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.get_mut().write_all(request.as_bytes()).await?;
    let mut line = String::new();
    read_line(conn, &mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad_response("no status line"))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        read_line(conn, &mut line).await?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break; // the empty line ends the head
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    if chunked {
        loop {
            read_line(conn, &mut line).await?;
            let size = line.trim_end().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size.trim(), 16).map_err(|_| bad_response("chunk"))?;
            if size == 0 {
                while line != "\r\n" {
                    read_line(conn, &mut line).await?; // trailers, then the empty line
                }
                break;
            }
            skip(conn, size + 2).await?;
        }
    } else if let Some(n) = length {
        skip(conn, n).await?;
    } else if status != 204 && status != 304 {
        return Err(bad_response(
            "no Content-Length (the connection would not be reused)",
        ));
    }
    Ok(status)
}

/// One line into `line` (its previous content dropped); end of stream is an error.
async fn read_line(conn: &mut HttpConn, line: &mut String) -> std::io::Result<()> {
    use tokio::io::AsyncBufReadExt;
    line.clear();
    match conn.read_line(line).await? {
        0 => Err(bad_response("connection closed mid-response")),
        _ => Ok(()),
    }
}

/// Reads and drops exactly `n` bytes.
async fn skip(conn: &mut HttpConn, n: u64) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let copied = tokio::io::copy(&mut conn.take(n), &mut tokio::io::sink()).await?;
    if copied == n {
        Ok(())
    } else {
        Err(bad_response("body cut short"))
    }
}

async fn http_idle(
    addr: &str,
    path: &str,
    conns: usize,
    hold: f64,
    ready_file: &str,
) -> Result<(), BoxError> {
    use tokio::io::AsyncReadExt;
    let gate = Arc::new(Semaphore::new(256));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (gate, addr, path) = (gate.clone(), addr.to_owned(), path.to_owned());
        let (opened_tx, mut stop_rx) = (opened_tx.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.ok();
            let conn = match http_connect(&addr).await {
                Ok(mut conn) => match http_get(&mut conn, &addr, &path).await {
                    Ok(200) => Some(conn),
                    _ => None,
                },
                Err(_) => None,
            };
            drop(permit);
            let _ = opened_tx.send(conn.is_some());
            let mut conn = conn?;
            // Idle until told to stop; a read that completes first means the server closed
            // the connection (or sent something unasked).
            let mut byte = [0u8; 1];
            tokio::select! {
                _ = conn.read(&mut byte) => Some(true),
                _ = stop_rx.changed() => Some(false),
            }
        }));
    }
    drop(opened_tx);
    let mut opened = 0;
    for _ in 0..conns {
        // Each task reports once, then keeps its sender while it idles.
        opened += usize::from(opened_rx.recv().await.unwrap_or(false));
    }
    let report = format!("opened={opened} failed={}", conns - opened);
    eprintln!("ws-bench http-idle: {report}");
    std::fs::write(ready_file, format!("{report}\n"))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(hold)) => {}
        _ = term.recv() => {}
    }
    stop_tx.send(true)?;
    let mut closed = 0;
    for task in tasks {
        closed += usize::from(task.await? == Some(true));
    }
    drop(stop_rx);
    println!("{report} closed_by_server={closed}");
    Ok(())
}

async fn http_fill(addr: &str, prefix: &str, count: usize, conns: usize) -> Result<(), BoxError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (next, addr, prefix) = (next.clone(), addr.to_owned(), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            let (mut conn, mut errors) = (None, 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return errors;
                }
                if conn.is_none() {
                    conn = http_connect(&addr).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                match http_get(c, &addr, &format!("{prefix}{i}")).await {
                    Ok(200) => {}
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        conn = None;
                    }
                }
            }
        }));
    }
    let mut errors = 0;
    for task in tasks {
        errors += task.await?;
    }
    println!(
        "requests={count} errors={errors} secs={:.1}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
