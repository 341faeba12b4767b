//! The built-in sample origin that `portico demo` starts on 127.0.0.1:8081.
//!
//! Routes:
//! - `/static/*`: cacheable text with an `ETag` (answers `If-None-Match` with 304), tagged
//!   `Cache-Tag: static, <extension>` for purges by tag;
//! - `/api/*`: uncacheable JSON;
//! - `/health`: `ok`;
//! - `/chat` and `/legacy/*`: WebSocket echo (a plain request gets a cacheable 426);
//! - anything else: 404.
//!
//! Every response carries `X-Demo-Origin-Count`, the number of requests served
//! for that path so far (this one included), so a demo can show cache hits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

const COUNT_HEADER: &str = "x-demo-origin-count";
const LAST_MODIFIED: &str = "Mon, 01 Jan 2024 00:00:00 GMT";
const TEXT: &str = "text/plain; charset=utf-8";
const NOT_WEBSOCKET: &str = "this endpoint speaks WebSocket; send an Upgrade: websocket request\n";
/// Largest WebSocket message or frame accepted (comfortably above 16 MiB).
const MAX_WS_SIZE: usize = 64 << 20;

/// The demo origin: a tiny HTTP/1.1 + WebSocket server with per-path counters.
#[derive(Debug, Default)]
pub struct DemoOrigin {
    counts: Mutex<HashMap<String, u64>>,
}

impl DemoOrigin {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Serves connections accepted from `listener` until `shutdown` turns true
    /// (or its sender is dropped). Open connections are dropped on shutdown.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let stop = async move {
            // An error means the sender is gone: nobody can ask us to stop any more, so stop now.
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stop);
        // Dropping the set at the end aborts every connection still open.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Usually transient (e.g. too many open files); keep serving.
                            log::warn!("demo origin: accept failed: {e}");
                            continue;
                        }
                    };
                    let origin = Arc::clone(&self);
                    connections.spawn(async move {
                        if let Err(e) = origin.serve_connection(stream).await {
                            log::debug!("demo origin: connection from {peer}: {e}");
                        }
                    });
                }
            }
        }
    }

    /// How many requests were served for `path`.
    pub fn count(&self, path: &str) -> u64 {
        self.lock().get(path).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A panic elsewhere cannot leave a counter map inconsistent.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self, path: &str) -> u64 {
        let mut counts = self.lock();
        let count = counts.entry(path.to_owned()).or_insert(0);
        *count += 1;
        *count
    }

    /// Serves one connection; a WebSocket upgrade is echoed in this same task,
    /// so aborting the task drops the tunnel too.
    async fn serve_connection(self: Arc<Self>, stream: tokio::net::TcpStream) -> hyper::Result<()> {
        let (upgrade_tx, mut upgrade_rx) = mpsc::unbounded_channel();
        let service = service_fn(move |req| {
            let (resp, upgrade) = self.handle(req);
            if let Some(upgrade) = upgrade {
                // The receiver outlives the connection, so this cannot fail.
                let _ = upgrade_tx.send(upgrade);
            }
            async move { Ok::<_, Infallible>(resp) }
        });
        http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await?;
        // HTTP/1 hands the connection over after a 101, so there is at most one.
        if let Ok(upgrade) = upgrade_rx.try_recv() {
            echo(upgrade.await?).await;
        }
        Ok(())
    }

    fn handle(&self, req: Request<Incoming>) -> (Response<Full<Bytes>>, Option<OnUpgrade>) {
        let path = req.uri().path().to_owned();
        let count = self.bump(&path);
        let mut upgrade = None;
        let mut resp = if path == "/chat" || path.starts_with("/legacy/") {
            let (resp, on_upgrade) = websocket(req);
            upgrade = on_upgrade;
            resp
        } else if path.starts_with("/static/") {
            static_object(&path, req.headers())
        } else if path.starts_with("/api/") {
            // `json!` would sort the keys; keep `path` first for readability.
            let body = format!(
                "{{\"path\":{},\"count\":{count}}}",
                serde_json::Value::from(path.as_str())
            );
            let mut resp = respond(StatusCode::OK, "application/json", body);
            set(&mut resp, header::CACHE_CONTROL, "no-store");
            resp
        } else if path == "/health" {
            respond(StatusCode::OK, TEXT, "ok\n")
        } else {
            respond(StatusCode::NOT_FOUND, TEXT, "not found\n")
        };
        resp.headers_mut()
            .insert(COUNT_HEADER, HeaderValue::from(count));
        (resp, upgrade)
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    set(&mut resp, header::CONTENT_TYPE, content_type);
    resp
}

fn set(resp: &mut Response<Full<Bytes>>, name: header::HeaderName, value: &'static str) {
    resp.headers_mut()
        .insert(name, HeaderValue::from_static(value));
}

fn static_object(path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let etag = format!("\"{:016x}\"", fnv1a(path.as_bytes()));
    let mut resp = if if_none_match(headers, &etag) {
        respond(StatusCode::NOT_MODIFIED, TEXT, Bytes::new())
    } else {
        respond(StatusCode::OK, TEXT, format!("static object {path}\n"))
    };
    set(&mut resp, header::CACHE_CONTROL, "public, max-age=60");
    set(&mut resp, header::LAST_MODIFIED, LAST_MODIFIED);
    let extension = path
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map_or("", |(_, extension)| extension);
    let tags = if extension.is_empty() {
        "static".to_string()
    } else {
        format!("static, {extension}")
    };
    if let Ok(value) = HeaderValue::from_str(&tags) {
        resp.headers_mut().insert("cache-tag", value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, value);
    }
    resp
}

/// Whether any `If-None-Match` entry (weakly) matches `etag`, or is `*`.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

/// 64-bit FNV-1a: a stable, dependency-free hash for ETags.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether `headers` has `name` with `token` in its comma-separated list (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Answers a WebSocket upgrade with 101 (and the pending upgrade to echo on);
/// anything else gets a cacheable 426.
fn websocket(mut req: Request<Incoming>) -> (Response<Full<Bytes>>, Option<OnUpgrade>) {
    let headers = req.headers();
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let is_upgrade = req.method() == Method::GET
        && has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let key = match key {
        Some(key) if is_upgrade => key,
        _ => {
            let mut resp = respond(StatusCode::UPGRADE_REQUIRED, TEXT, NOT_WEBSOCKET);
            set(&mut resp, header::CACHE_CONTROL, "public, max-age=60");
            set(&mut resp, header::UPGRADE, "websocket");
            set(&mut resp, header::SEC_WEBSOCKET_VERSION, "13");
            return (resp, None);
        }
    };
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()))
        .and_then(|p| HeaderValue::from_str(p).ok());

    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    set(&mut resp, header::CONNECTION, "upgrade");
    set(&mut resp, header::UPGRADE, "websocket");
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        resp.headers_mut()
            .insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = protocol {
        resp.headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }

    (resp, Some(hyper::upgrade::on(&mut req)))
}

/// Echoes text and binary messages until the peer closes. tungstenite answers
/// pings itself and replies to a close frame with the same code and reason.
async fn echo(upgraded: Upgraded) {
    let config = WebSocketConfig {
        max_message_size: Some(MAX_WS_SIZE),
        max_frame_size: Some(MAX_WS_SIZE),
        ..WebSocketConfig::default()
    };
    let mut ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(msg) if msg.is_text() || msg.is_binary() => {
                if let Err(e) = ws.send(msg).await {
                    log::debug!("demo origin: websocket send failed: {e}");
                    return;
                }
            }
            // Pings, pongs and close: tungstenite queues any reply and flushes it on the next read.
            Ok(_) => {}
            Err(e) => {
                log::debug!("demo origin: websocket closed: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;

    type Running = tokio::task::JoinHandle<std::io::Result<()>>;

    /// Starts an origin on an ephemeral port; it is ready once the listener is bound.
    async fn start() -> (Arc<DemoOrigin>, SocketAddr, watch::Sender<bool>, Running) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let origin = DemoOrigin::new();
        let task = tokio::spawn(Arc::clone(&origin).serve(listener, rx));
        (origin, addr, tx, task)
    }

    /// One request on a fresh connection; returns the raw response.
    async fn get(addr: SocketAddr, path: &str, extra: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: demo\r\n{extra}Connection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        stream.read_to_string(&mut resp).await.unwrap();
        resp.to_ascii_lowercase()
    }

    #[tokio::test]
    async fn static_counts_and_revalidates() {
        let (origin, addr, _tx, _task) = start().await;
        let first = get(addr, "/static/a.css", "").await;
        assert!(first.starts_with("http/1.1 200"), "{first}");
        assert!(first.contains("x-demo-origin-count: 1\r\n"), "{first}");
        assert!(
            first.contains("cache-control: public, max-age=60"),
            "{first}"
        );
        assert!(first.contains("static object /static/a.css\n"), "{first}");
        assert!(first.contains("cache-tag: static, css"), "{first}");
        let second = get(addr, "/static/a.css?v=2", "").await;
        assert!(second.contains("x-demo-origin-count: 2\r\n"), "{second}");
        assert_eq!(origin.count("/static/a.css"), 2);

        let etag = first
            .lines()
            .find_map(|l| l.strip_prefix("etag: "))
            .unwrap()
            .to_owned();
        let third = get(addr, "/static/a.css", &format!("If-None-Match: {etag}\r\n")).await;
        assert!(third.starts_with("http/1.1 304"), "{third}");
        assert!(third.contains("x-demo-origin-count: 3\r\n"), "{third}");
    }

    #[tokio::test]
    async fn other_routes() {
        let (_origin, addr, _tx, _task) = start().await;
        let api = get(addr, "/api/x", "").await;
        assert!(api.contains("cache-control: no-store"), "{api}");
        assert!(api.ends_with(r#"{"path":"/api/x","count":1}"#), "{api}");
        assert!(get(addr, "/health", "").await.ends_with("\r\n\r\nok\n"));
        assert!(get(addr, "/nope", "").await.starts_with("http/1.1 404"));
        let chat = get(addr, "/chat", "").await;
        assert!(chat.starts_with("http/1.1 426"), "{chat}");
        assert!(chat.contains("cache-control: public, max-age=60"), "{chat}");
        assert!(
            chat.ends_with(&NOT_WEBSOCKET.to_ascii_lowercase()),
            "{chat}"
        );
        assert!(get(addr, "/legacy/x", "").await.starts_with("http/1.1 426"));
    }

    #[tokio::test]
    async fn websocket_echo() {
        let (origin, addr, tx, task) = start().await;
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://{addr}/chat"),
            )
            .unwrap();
        req.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("echo, other"),
        );
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()[header::SEC_WEBSOCKET_PROTOCOL], "echo");
        assert_eq!(resp.headers()[COUNT_HEADER], "1");

        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        let big = vec![7u8; 16 << 20];
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));

        let close = CloseFrame {
            code: CloseCode::Library(4000),
            reason: "bye".into(),
        };
        ws.close(Some(close.clone())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Close(Some(close))
        );
        assert_eq!(origin.count("/chat"), 1);

        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        // Once shut down, the origin no longer listens.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
