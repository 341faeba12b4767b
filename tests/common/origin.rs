//! A real HTTP/1.1 origin for integration tests: it records every request,
//! answers through a caller-supplied handler, can echo WebSockets, and can be
//! stopped and restarted on the same port to simulate an origin outage.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as received.
    pub uri: String,
    pub headers: HeaderMap,
    /// The request body (empty for WebSocket upgrades).
    pub body: Bytes,
}

impl Recorded {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

/// Builds the response for a (non-upgrade) request.
pub type Handler = Arc<dyn Fn(&Recorded) -> Response<Bytes> + Send + Sync>;

/// What the accept loop and every connection share.
struct Shared {
    handler: Handler,
    websocket: bool,
    log: Mutex<Vec<Recorded>>,
}

pub struct TestOrigin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping the sender stops the accept loop (also when the origin is dropped).
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl TestOrigin {
    /// Binds 127.0.0.1:0 and serves with `handler`; returns once listening.
    pub async fn start(handler: Handler) -> TestOrigin {
        Self::launch(handler, false).await
    }

    /// Answers 200 with body `origin <path>` and the given extra headers for every path.
    pub async fn ok(headers: &[(&str, &str)]) -> TestOrigin {
        Self::ok_on(SocketAddr::from(([127, 0, 0, 1], 0)), headers).await
    }

    /// [`TestOrigin::ok`], listening on `address` (another loopback address, a given port).
    pub async fn ok_on(address: SocketAddr, headers: &[(&str, &str)]) -> TestOrigin {
        let headers: Vec<(HeaderName, HeaderValue)> = headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
                (name, HeaderValue::from_str(value).expect("header value"))
            })
            .collect();
        let handler: Handler = Arc::new(move |req: &Recorded| {
            let mut resp = Response::new(Bytes::from(format!("origin {}", req.path())));
            resp.headers_mut().extend(headers.iter().cloned());
            resp
        });
        Self::launch_on(address, handler, false).await
    }

    /// Like `start`, but every valid WebSocket upgrade (on any path) becomes
    /// an echo tunnel; other requests go to `handler`.
    pub async fn websocket_echo(handler: Handler) -> TestOrigin {
        Self::launch(handler, true).await
    }

    async fn launch(handler: Handler, websocket: bool) -> TestOrigin {
        Self::launch_on(SocketAddr::from(([127, 0, 0, 1], 0)), handler, websocket).await
    }

    async fn launch_on(address: SocketAddr, handler: Handler, websocket: bool) -> TestOrigin {
        let listener = bind(address).expect("bind test origin");
        let shared = Arc::new(Shared {
            handler,
            websocket,
            log: Mutex::new(Vec::new()),
        });
        let mut origin = TestOrigin {
            addr: listener.local_addr().expect("local addr"),
            shared,
            running: None,
        };
        origin.run(listener);
        origin
    }

    fn run(&mut self, listener: TcpListener) {
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&self.shared), stop_rx));
        self.running = Some((stop_tx, task));
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of the requests received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    /// How many requests were received (upgrades included).
    pub fn count(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    /// How many requests were received for `path` (query ignored).
    pub fn count_path(&self, path: &str) -> usize {
        self.shared
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path() == path)
            .count()
    }

    /// Stops accepting and drops open connections (tunnels included); the port
    /// is released when this returns.
    pub async fn stop(&mut self) {
        if let Some((stop_tx, task)) = self.running.take() {
            drop(stop_tx);
            task.await.expect("test origin accept loop panicked");
        }
    }

    /// Starts again on the same port, retrying the bind for a few seconds.
    pub async fn restart(&mut self) {
        self.stop().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match bind(self.addr) {
                Ok(listener) => break listener,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("test origin: cannot rebind {}: {e}", self.addr)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.run(listener);
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
            }
        }
    }
    drop(listener);
    // Abort every open connection and wait until they are gone.
    connections.shutdown().await;
}

/// Serves one connection; an upgrade is echoed in this same task, so
/// aborting the task closes the tunnel too.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let (upgrade_tx, mut upgrade_rx) = mpsc::unbounded_channel();
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let upgrade_tx = upgrade_tx.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req, &upgrade_tx).await) }
    });
    let served = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    // HTTP/1 hands the connection over after a 101, so there is at most one.
    if let (Ok(()), Ok(upgrade)) = (served, upgrade_rx.try_recv()) {
        if let Ok(upgraded) = upgrade.await {
            echo(upgraded).await;
        }
    }
}

async fn handle(
    shared: &Shared,
    mut req: Request<Incoming>,
    upgrades: &mpsc::UnboundedSender<OnUpgrade>,
) -> Response<Full<Bytes>> {
    let mut recorded = Recorded {
        method: req.method().to_string(),
        uri: req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
        headers: req.headers().clone(),
        body: Bytes::new(),
    };
    let switch = if shared.websocket {
        accept_websocket(&req)
    } else {
        None
    };
    let resp = match switch {
        Some(resp) => {
            let _ = upgrades.send(hyper::upgrade::on(&mut req));
            resp
        }
        None => {
            recorded.body = match req.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => Bytes::new(),
            };
            (shared.handler)(&recorded).map(Full::new)
        }
    };
    shared.log.lock().unwrap().push(recorded);
    resp
}

/// Whether `name` lists `token` (comma-separated, case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The 101 response for a valid RFC 6455 upgrade request, echoing the first
/// offered subprotocol; `None` if `req` is not one.
fn accept_websocket<B>(req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let headers = req.headers();
    let valid = req.method() == http::Method::GET
        && has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
        && headers.get(header::SEC_WEBSOCKET_VERSION)? == "13";
    if !valid {
        return None;
    }
    let accept = derive_accept_key(headers.get(header::SEC_WEBSOCKET_KEY)?.as_bytes());
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()));
    if let Some(protocol) = protocol {
        resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    resp.body(Full::new(Bytes::new())).ok()
}

/// Echoes text and binary messages until the peer closes. tungstenite answers
/// pings itself and replies to a close frame with the same code and reason.
async fn echo(upgraded: Upgraded) {
    let config = WebSocketConfig {
        max_message_size: Some(64 << 20),
        max_frame_size: Some(64 << 20),
        ..WebSocketConfig::default()
    };
    let mut ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}
