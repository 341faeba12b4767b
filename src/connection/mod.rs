//! Client connections as the edge accepts them: caps on how many are open (globally and
//! per client address, [`ConnectionCaps`]), a deadline on the TLS handshake, then the
//! [`HeadGuard`] (`guard`): deadlines on request heads and on writes that Pingora does not
//! have, and the head's size counted as it arrives.
//!
//! On TLS listeners the edge runs the handshake itself, after the caps and within
//! `limits.tls_handshake_timeout` (see [`EdgeApp::serve_connection`]): Pingora's listener
//! would allow a fixed 60 s, and its connections count against no cap until their
//! handshake is over.

mod guard;
mod h2_resets;

/// Implements the facts Pingora asks a client connection for (its id, TLS state, proxy and
/// socket digests), and the release of its idle buffers, on a wrapper `$wrapper` by asking
/// its `inner` stream.
macro_rules! delegate_connection_facts {
    ($wrapper:ty) => {
        impl pingora_core::protocols::UniqueID for $wrapper {
            fn id(&self) -> pingora_core::protocols::UniqueIDType {
                self.inner.id()
            }
        }

        impl pingora_core::protocols::Ssl for $wrapper {
            fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
                self.inner.get_ssl()
            }

            fn get_ssl_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::tls::SslDigest>> {
                self.inner.get_ssl_digest()
            }

            fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::ALPN> {
                self.inner.selected_alpn_proto()
            }
        }

        impl pingora_core::protocols::IdleBuffers for $wrapper {
            fn release_idle_buffers(&mut self) -> bool {
                self.inner.release_idle_buffers()
            }
        }

        impl pingora_core::protocols::GetProxyDigest for $wrapper {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
                self.inner.get_proxy_digest()
            }

            fn set_proxy_digest(
                &mut self,
                digest: pingora_core::protocols::raw_connect::ProxyDigest,
            ) {
                self.inner.set_proxy_digest(digest)
            }
        }

        impl pingora_core::protocols::GetSocketDigest for $wrapper {
            fn get_socket_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::SocketDigest>> {
                self.inner.get_socket_digest()
            }

            fn set_socket_digest(&mut self, digest: pingora_core::protocols::SocketDigest) {
                self.inner.set_socket_digest(digest)
            }
        }
    };
}
use delegate_connection_facts;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;

use crate::config::model::ClientLimits;
use crate::proxy::Portico;

pub use guard::{watch_send_progress, HeadGuard, HeadLimit, RELEASE_AFTER};

/// Caps on client connections, global and per client address (see `limits:`).
///
/// A connection over a cap is closed at once, before anything reads it: at the
/// descriptor limit new clients would otherwise hang and the health probes fail with
/// `EMFILE`, marking healthy origins down. The global cap leaves `fd_reserve`
/// descriptors, and one per admitted client for its origin connection, free.
pub struct ConnectionCaps {
    max: usize,
    per_client: usize,
    open: AtomicUsize,
    clients: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its places. The stream wrapper around the
/// connection owns it ([`HeadGuard`], or the HTTP/2 reset watch), so it is held as long as
/// the client's socket is: through a WebSocket tunnel too, which the relay owns once
/// Pingora hands it over. (Tunnels that went uncounted let one address hold every
/// descriptor: 499 idle tunnels took all 1,024, and the health probes failed with EMFILE.)
pub struct Admitted {
    caps: Arc<ConnectionCaps>,
    client: Option<IpAddr>,
}

impl ConnectionCaps {
    pub fn new(limits: &ClientLimits) -> ConnectionCaps {
        let by_descriptors =
            open_files_limit().map(|nofile| (nofile.saturating_sub(limits.fd_reserve) / 2).max(1));
        let max = match (limits.max_connections, by_descriptors) {
            (Some(configured), Some(possible)) if configured > possible => {
                log::warn!("limits.max_connections {configured} is more than the descriptor limit allows; capping client connections at {possible}");
                possible
            }
            (Some(configured), _) => configured,
            (None, Some(possible)) => possible,
            (None, None) => usize::MAX,
        };
        log::info!(
            "client connections capped at {max}, {} per client address",
            limits.max_connections_per_client
        );
        ConnectionCaps {
            max,
            per_client: limits.max_connections_per_client,
            open: AtomicUsize::new(0),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The cap in force (after the descriptor limit).
    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for a connection from `client`, if both caps have one.
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Option<Admitted> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let mut admitted = Admitted {
            caps: self.clone(),
            client: None,
        };
        let Some(ip) = client.map(|ip| ip.to_canonical()) else {
            return Some(admitted);
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let count = clients.entry(ip).or_insert(0);
        if *count >= self.per_client {
            return None; // `admitted` gives the global place back
        }
        *count += 1;
        admitted.client = Some(ip);
        Some(admitted)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.caps.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.client {
            let mut clients = self.caps.clients.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = clients.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    clients.remove(&ip);
                }
            }
        }
    }
}

/// The soft `RLIMIT_NOFILE`, from `/proc/self/limits` (no `unsafe` needed); `None` when
/// unlimited or unknown.
fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The edge as a Pingora app: connections over a cap are closed; on a TLS listener the
/// handshake has `tls_handshake_timeout`; each HTTP/1 connection gets a [`HeadGuard`],
/// then the proxy. HTTP/2 (by ALPN) goes to the proxy as it is: its frames are not
/// request heads.
pub struct EdgeApp {
    pub proxy: Arc<HttpProxy<Portico>>,
    pub limits: ClientLimits,
    pub caps: Arc<ConnectionCaps>,
    /// The TLS listeners whose handshakes this app runs (`portico run`), by address.
    tls: Vec<(SocketAddr, Arc<Acceptor>)>,
}

impl EdgeApp {
    /// `caps` are the proxy's own (`Portico::caps`): its HTTP/2 requests count in them.
    pub fn new(
        proxy: Arc<HttpProxy<Portico>>,
        limits: ClientLimits,
        caps: Arc<ConnectionCaps>,
    ) -> EdgeApp {
        EdgeApp {
            proxy,
            limits,
            caps,
            tls: Vec::new(),
        }
    }

    /// Runs the TLS handshake for connections accepted on these addresses (registered with
    /// Pingora as plain TCP listeners).
    pub fn with_tls(mut self, listeners: Vec<(SocketAddr, Arc<Acceptor>)>) -> EdgeApp {
        self.tls = listeners;
        self
    }

    /// The acceptor of the TLS listener that accepted `stream`, if it came from one: the
    /// listener with its local address, else one on the same port bound to every address.
    fn acceptor_for(&self, stream: &Stream) -> Option<Arc<Acceptor>> {
        if self.tls.is_empty() {
            return None;
        }
        let local = stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())?;
        let exact = self.tls.iter().find(|(a, _)| *a == local);
        let any = || {
            self.tls
                .iter()
                .find(|(a, _)| a.port() == local.port() && a.ip().is_unspecified())
        };
        exact.or_else(any).map(|(_, acceptor)| acceptor.clone())
    }

    /// One client connection, as accepted: the caps, then (with `tls`) the handshake within
    /// its deadline, then the guard and the proxy.
    pub async fn serve_connection(
        self: &Arc<Self>,
        stream: Stream,
        tls: Option<&Acceptor>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // Held by the connection's stream wrapper for the socket's life (see `Admitted`).
        let Some(admitted) = self.caps.admit(client) else {
            log::debug!("connection from {client:?} refused: over a connection cap");
            return None;
        };
        // Boxed: the handshake's state would otherwise stay in this connection's future
        // (and memory) for the connection's whole life.
        let stream = match tls {
            None => stream,
            Some(acceptor) => {
                watch_send_progress(&stream);
                let limit = self.limits.tls_handshake_timeout;
                Box::pin(tls_handshake(acceptor, stream, limit, client)).await?
            }
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            let stream: Stream = Box::new(h2_resets::ResetWatch::new(stream, admitted));
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let stream: Stream = Box::new(HeadGuard::new(stream, self.limits, admitted));
        crate::keepalive::serve_http1(&self.proxy, stream, shutdown).await
    }
}

/// The server side of a TLS handshake on `stream` (a TCP connection), if it finishes
/// within `limit`. A client that stalls or dribbles its handshake is closed at the deadline.
async fn tls_handshake(
    acceptor: &Acceptor,
    stream: Stream,
    limit: Duration,
    client: Option<IpAddr>,
) -> Option<Stream> {
    let l4 = match stream.into_any().downcast::<L4Stream>() {
        Ok(l4) => *l4,
        Err(_) => {
            log::error!("a TLS listener's connection is not a TCP stream; closed");
            return None;
        }
    };
    match tokio::time::timeout(limit, acceptor.tls_handshake(l4)).await {
        Ok(Ok(tls)) => Some(Box::new(tls)),
        Ok(Err(e)) => {
            log::debug!("TLS handshake with {client:?} failed: {e}");
            None
        }
        Err(_) => {
            log::debug!("TLS handshake with {client:?} not finished within {limit:?}; closed");
            None
        }
    }
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let tls = self.acceptor_for(&stream);
        self.serve_connection(stream, tls.as_deref(), shutdown)
            .await
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.proxy.as_ref()).await
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;
    use pingora_core::protocols::l4::stream::{L4BufferSettings, Stream as L4Stream};
    use pingora_core::protocols::IdleBuffers;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Every TLS connection, client or pooled, holds its TLS stream for its whole life: it
    /// keeps no room for its handshake's state (`vendor/README.md`, *Handshake boxed*: 4.7
    /// KiB before, as three rustls sessions' worth).
    #[test]
    fn a_tls_stream_keeps_no_room_for_its_handshake() {
        use pingora_core::protocols::tls::TlsStream;
        let size = std::mem::size_of::<TlsStream<L4Stream>>();
        assert!(size <= 2048, "{size}");
    }

    /// The idle release both protocols rely on (Pingora's TCP stream, `vendor/README.md`):
    /// released buffers stay released through reads that find nothing (an HTTP/2
    /// connection polls its transport while it idles), come back after a read that brings
    /// bytes or a write, and lose no byte either way.
    #[tokio::test]
    async fn released_buffers_come_back_with_bytes_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, connected) = tokio::join!(listener.accept(), TcpStream::connect(addr));
        let mut peer = connected.unwrap();
        let mut stream = L4Stream::from(accepted.unwrap().0);
        stream.set_buffer(L4BufferSettings::new(65536, 1460));

        assert!(stream.release_idle_buffers());
        assert!(!stream.release_idle_buffers(), "already released");
        let mut buf = [0u8; 64];
        assert!(
            stream.read(&mut buf).now_or_never().is_none(),
            "nothing to read yet"
        );
        assert!(
            !stream.release_idle_buffers(),
            "a read that found nothing took them back"
        );

        peer.write_all(b"hello").await.unwrap();
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert!(
            stream.release_idle_buffers(),
            "taken back after the bytes came"
        );

        peer.write_all(b"world").await.unwrap();
        stream.write_all(b"ok").await.unwrap();
        stream.flush().await.unwrap();
        assert!(stream.release_idle_buffers(), "taken back by the write");
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"world");
        let mut got = [0u8; 2];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ok");
    }
}
