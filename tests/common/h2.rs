//! An edge with an HTTP/2 TLS listener, and clients that speak h2 to it.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::edge::{group_yaml, TestEdge};
use super::tls::{tls_node_yaml, TestPki};

pub const WWW: &str = "www.example.com";

/// An edge whose TLS listener offers h2 (`limits` set), routing `/*` to `origin` (caching
/// off unless `start_with_cache`).
pub struct H2Edge {
    pub pki: TestPki,
    pub edge: TestEdge,
}

impl H2Edge {
    pub async fn start(origin: SocketAddr, limits: &str) -> H2Edge {
        H2Edge::start_with_cache(origin, limits, "{ enabled: false }").await
    }

    /// The same, with the route's `cache` set to `cache`.
    pub async fn start_with_cache(origin: SocketAddr, limits: &str, cache: &str) -> H2Edge {
        let pki = TestPki::new();
        let www = pki.issue("www", &[WWW]);
        let node = tls_node_yaml(&[&www], &format!("limits:\n  {limits}\n"))
            .replace("    tls:\n", "    tls:\n      http2: true\n");
        let rules = format!(
            "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\n    forwarding_protocol: http_only\n    cache: {cache}\nrule_sets: []\norigin_groups:\n{}",
            group_yaml("web", origin)
        );
        let edge = TestEdge::start(&node, &rules).await;
        H2Edge { pki, edge }
    }

    /// A TLS connection to the edge that chose `h2` by ALPN.
    pub async fn connect(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.edge.tls_addr.unwrap())
            .await
            .unwrap();
        self.connect_over(tcp).await
    }

    /// The same over `stream`, a connection to the edge's TLS listener (`tls_addr`).
    pub async fn connect_over<S>(&self, stream: S) -> tokio_rustls::client::TlsStream<S>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut config = self.pki.client_config();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tls = connector
            .connect(WWW.try_into().unwrap(), stream)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        tls
    }

    /// An h2 client on a new connection, and the task that drives the connection (it ends
    /// when the connection does).
    pub async fn client(
        &self,
    ) -> (
        h2::client::SendRequest<bytes::Bytes>,
        tokio::task::JoinHandle<Result<(), h2::Error>>,
    ) {
        let (client, connection) = h2::client::handshake(self.connect().await).await.unwrap();
        (client, tokio::spawn(connection))
    }
}
