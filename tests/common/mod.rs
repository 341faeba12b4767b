//! Shared helpers for the integration tests (each test binary uses a subset): real origins
//! on `127.0.0.1:0` and an in-process edge.
#![allow(dead_code)]
pub mod check;
pub mod edge;
pub mod fleet;
pub mod gated;
pub mod h2;
pub mod health;
pub mod node;
pub mod origin;
pub mod process;
pub mod tiers;
pub mod tls;

/// Reads from a WebSocket until it ends (close frame, error or EOF); `false` if it is
/// still open after 10 s.
pub async fn ws_ends<S>(ws: &mut S) -> bool
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The `Sec-WebSocket-Key` of a raw upgrade request head, if it has one.
pub fn websocket_key(head: &[u8]) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    })
}

/// An origin's `101` to a WebSocket upgrade that sent `key`.
pub fn switching_protocols(key: &str) -> String {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
}

/// Reads a request head (through the blank line) from a raw connection; `None` if the peer
/// closes or fails first.
pub async fn read_request_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    Some(head)
}

/// Writes `request` (raw bytes, one or more requests ending in one that closes) to the
/// edge at `addr` and reads all it answers until it closes, within 10 s.
pub async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

/// Reads all the edge sends on `stream` until it closes, within 10 s.
pub async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the edge answers and closes in time")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A raw origin that runs `serve` on each connection it accepts, and counts them.
pub async fn counting_origin<F, Fut>(
    serve: F,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (origin, connections)
}

/// Reads `stream` at about 160 KiB a second (16 KiB every 100 ms) for `slowly`, panicking
/// if it ends meanwhile, then reads the rest as fast as it comes (within 30 s): all the
/// bytes read. A cut shows in the total only, once the megabytes queued before it are read.
pub async fn read_slowly_then_drain(
    stream: &mut tokio::net::TcpStream,
    slowly: std::time::Duration,
) -> usize {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut got = 0;
    let mut chunk = vec![0u8; 16 << 10];
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    while started.elapsed() < slowly {
        tick.tick().await;
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => panic!("cut after {got} bytes, {:?}", started.elapsed()),
            Ok(n) => got += n,
        }
    }
    let mut rest = vec![0u8; 1 << 16];
    let drain = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(n @ 1..) = stream.read(&mut rest).await {
            got += n;
        }
    });
    assert!(drain.await.is_ok(), "the rest never came");
    got
}
