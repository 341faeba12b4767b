//! TLS end to end, with certificates from a test CA: HTTPS and `wss://` on the edge's TLS
//! listener, SNI, the HTTPS redirect, and verified TLS to origins.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::edge::{client, TestEdge};
use common::origin::TestOrigin;
use common::tls::{big_body, handshake_of_a_get, tls_node_yaml, HttpsOrigin, TestPki};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

const WWW: &str = "www.example.test";
const API: &str = "api.example.test";

/// Routes for both names: `/plain/*` to an HTTP origin (`http_only`: TLS ends at the edge), `/secure/*` to an HTTPS origin
/// (`https_only`, the test CA as the group's `ca_file`), `/untrusted/*` to the same HTTPS
/// origin without that CA, `/only-http/*` for `http` only, `/redirect/*` with
/// `https_redirect`, and `/chat` a WebSocket route.
fn rules(plain: SocketAddr, secure: SocketAddr, pki: &TestPki) -> String {
    let group = |name: &str, ca: &str| {
        format!(
            "  - name: {name}\n    {ca}origins:\n      - address: 127.0.0.1:9\n        https_port: {}\n        host_header: origin.internal\n",
            secure.port()
        )
    };
    format!(
        r#"routes:
  - name: plain
    patterns: ["/plain/*", "/chat"]
    origin_group: plain
    forwarding_protocol: http_only
  - name: secure
    patterns: ["/secure/*"]
    origin_group: secure
    forwarding_protocol: https_only
  - name: untrusted
    patterns: ["/untrusted/*"]
    origin_group: untrusted
    forwarding_protocol: https_only
  - name: only-http
    patterns: ["/only-http/*"]
    protocols: [http]
    origin_group: plain
    forwarding_protocol: http_only
  - name: redirect
    patterns: ["/redirect/*"]
    https_redirect: true
    protocols: [https]
    origin_group: plain
    forwarding_protocol: http_only
origin_groups:
  - name: plain
    origins:
      - address: {plain}
        host_header: origin.internal
{}{}"#,
        group(
            "secure",
            &format!("ca_file: {}\n    ", pki.ca_path().display())
        ),
        group("untrusted", ""),
    )
}

struct Setup {
    pki: TestPki,
    edge: TestEdge,
    plain: TestOrigin,
    secure: HttpsOrigin,
}

async fn setup() -> Setup {
    setup_with_listeners(1).await
}

/// The same with `tls` TLS listeners, each with the same certificates (`edge.addrs`: the
/// plain one first).
async fn setup_with_listeners(tls: usize) -> Setup {
    let pki = TestPki::new();
    let www = pki.issue("www", &[WWW]);
    let api = pki.issue("api", &[API]);
    let origin_cert = pki.issue("origin", &["origin.internal"]);
    let plain = TestOrigin::websocket_echo(Arc::new(|r: &common::origin::Recorded| {
        http::Response::new(bytes::Bytes::from(format!("plain origin {}", r.path())))
    }))
    .await;
    let secure = HttpsOrigin::start(&origin_cert).await;
    let mut node = tls_node_yaml(&[&www, &api], "");
    let listener =
        &node[node.find("  - address: 127.0.0.1:2\n").unwrap()..node.find("rules_dir").unwrap()];
    let more = (1..tls).map(|_| listener).collect::<String>();
    node = node.replacen("rules_dir", &format!("{more}rules_dir"), 1);
    let edge = TestEdge::start(&node, &rules(plain.addr(), secure.addr, &pki)).await;
    Setup {
        pki,
        edge,
        plain,
        secure,
    }
}

impl Setup {
    fn https(&self) -> reqwest::Client {
        self.pki
            .https_client(&[WWW, API], self.edge.tls_addr.expect("a TLS listener"))
    }

    /// A TLS connection to the edge's TLS listener for `name`, made with `config`.
    async fn connect_tls(
        &self,
        name: &str,
        config: rustls::ClientConfig,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp =
            tokio::net::TcpStream::connect(self.edge.tls_addr.expect("a TLS listener")).await?;
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_the_edge_to_an_http_origin_and_to_a_verified_https_origin() {
    let s = setup().await;
    let https = s.https();
    let response = https
        .get(format!("https://{WWW}/plain/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "plain origin /plain/a");
    let seen = &s.plain.requests()[0];
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    let response = https
        .get(format!("https://{WWW}/secure/b"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "tls origin /secure/b");
    assert_eq!(s.secure.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_of_each_domain() {
    let s = setup().await;
    // The client verifies the name: a wrong certificate would fail the handshake.
    let https = s.https();
    for name in [WWW, API] {
        let response = https
            .get(format!("https://{name}/plain/sni"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(response.status(), 200, "{name}");
    }
    // And directly: the leaf the edge sends for each name covers that name.
    for name in [WWW, API] {
        let tls = s.connect_tls(name, s.pki.client_config()).await.unwrap();
        let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
        let sans = format!(
            "{:?}",
            cert.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(sans.contains(name), "{name}: {sans}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_echoes_byte_identical_including_a_1_mib_binary_message() {
    let s = setup().await;
    let tcp = tokio::net::TcpStream::connect(s.edge.tls_addr.unwrap())
        .await
        .unwrap();
    let request = format!("wss://{WWW}/chat").into_client_request().unwrap();
    let config = WebSocketConfig {
        max_message_size: Some(8 << 20),
        max_frame_size: Some(8 << 20),
        ..WebSocketConfig::default()
    };
    let (mut ws, response) = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        Some(config),
        Some(Connector::Rustls(Arc::new(s.pki.client_config()))),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-cache"], "CONFIG_NOCACHE");
    ws.send(Message::Text("over tls".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("over tls".into())
    );
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(Message::Binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(big));
    ws.close(None).await.unwrap();
    let lines = s
        .edge
        .wait_for_log(|l| l.iter().any(|r| r["kind"] == "tunnel"))
        .await;
    let tunnel = lines.iter().find(|r| r["kind"] == "tunnel").unwrap();
    // The client sent the close; the origin answers it and closes its socket first.
    assert!(
        ["client", "origin"].contains(&tunnel["closed_by"].as_str().unwrap()),
        "{tunnel}"
    );
    assert!(tunnel["bytes_client_to_origin"].as_u64().unwrap() > 1 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_redirect_and_protocol_only_routes() {
    let s = setup().await;
    let response = client()
        .get(s.edge.url("/redirect/x?q=1"))
        .header("host", WWW)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        format!("https://{WWW}/redirect/x?q=1")
    );
    // Over HTTPS the same route serves.
    let https = s.https();
    let response = https
        .get(format!("https://{WWW}/redirect/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A route for http only does not match an https request.
    let response = https
        .get(format!("https://{WWW}/only-http/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-portico-error"], "no-route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_certificate_from_an_unknown_ca_gives_a_502_with_the_reason() {
    let s = setup().await;
    let response = s
        .https()
        .get(format!("https://{WWW}/untrusted/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(
        body.to_ascii_lowercase().contains("certificate"),
        "the 502 must say why: {body}"
    );
    assert!(body.contains("UnknownIssuer"), "{body}");
    assert!(
        !body.contains("origin.internal"),
        "the 502 names the origin: {body}"
    );
    // Never downgraded to plain HTTP, and the origin served nothing.
    assert_eq!(s.secure.count(), 0);
    assert_eq!(s.plain.count(), 0);
    let lines = s.edge.wait_for_log(|l| !l.is_empty()).await;
    let error = lines[0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(error.contains("certificate"), "{}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_over_tls_verify_the_origin_certificate() {
    let pki = TestPki::new();
    let www = pki.issue("www", &[WWW]);
    let secure = HttpsOrigin::start(&pki.issue("origin", &["origin.internal"])).await;
    let group = |name: &str, ca: &str| {
        format!(
            "  - name: {name}\n    {ca}health_probe: {{ protocol: http, method: GET, path: /health, use_tls: true, interval: 100ms, timeout: 2s }}\n    origins:\n      - address: 127.0.0.1:9\n        https_port: {}\n        host_header: origin.internal\n",
            secure.addr.port()
        )
    };
    let rules = format!(
        "routes:\n  - name: a\n    domains: [{WWW}]\n    patterns: [\"/*\"]\n    origin_group: trusted\n    forwarding_protocol: https_only\norigin_groups:\n{}{}",
        group("trusted", &format!("ca_file: {}\n    ", pki.ca_path().display())),
        group("untrusted", ""),
    );
    let edge = TestEdge::start(&tls_node_yaml(&[&www], ""), &rules).await;
    // Probes run in the background: wait for both verdicts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        let status = edge.status().await;
        let probed =
            |g: usize| status["origin_groups"][g]["origins"][0]["probes"].as_u64() > Some(0);
        if probed(0) && probed(1) {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no probe verdicts: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let trusted = &status["origin_groups"][0]["origins"][0];
    let untrusted = &status["origin_groups"][1]["origins"][0];
    assert_eq!(trusted["health"], "healthy", "{trusted}");
    assert_eq!(trusted["last_probe"]["status"], 200, "{trusted}");
    assert_eq!(untrusted["health"], "unhealthy", "{untrusted}");
    let error = untrusted["last_error"]["error"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(error.contains("certificate"), "{untrusted}");
    assert!(
        secure.count() >= 1,
        "the trusted probe reached the origin over TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_alpn_when_asked_and_websockets_still_upgrade_over_http1() {
    let pki = TestPki::new();
    let www = pki.issue("www", &[WWW]);
    let origin = TestOrigin::websocket_echo(Arc::new(|r: &common::origin::Recorded| {
        http::Response::new(bytes::Bytes::from(format!("plain origin {}", r.path())))
    }))
    .await;
    let rules = format!(
        "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\n    forwarding_protocol: http_only\norigin_groups:\n{}",
        common::edge::group_yaml("web", origin.addr())
    );
    let node = tls_node_yaml(&[&www], "").replace("    tls:\n", "    tls:\n      http2: true\n");
    let edge = TestEdge::start(&node, &rules).await;
    let tls_addr = edge.tls_addr.unwrap();
    let response = pki
        .https_client(&[WWW], tls_addr)
        .get(format!("https://{WWW}/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()["x-cache"], "CONFIG_NOCACHE");
    assert_eq!(response.text().await.unwrap(), "plain origin /page");
    // A WebSocket client offers no ALPN (or http/1.1): the handshake is HTTP/1.1.
    let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let request = format!("wss://{WWW}/socket").into_client_request().unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        None,
        Some(Connector::Rustls(Arc::new(pki.client_config()))),
    )
    .await
    .unwrap();
    ws.send(Message::Text("h1 upgrade".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("h1 upgrade".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_are_both_accepted() {
    let s = setup().await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut s.pki.ca_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = s
            .connect_tls(WWW, config)
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
    }
}

/// A client that comes back resumes its TLS session (a key exchange, no signature: the
/// most costly step of a full handshake), however many clients came in between: the
/// edge's tickets carry the sessions. (rustls alone remembers 256 sessions, two a TLS
/// 1.3 connection: none of 300 returning clients resumed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_clients_resume_their_tls_sessions_however_many_came_between() {
    const CLIENTS: usize = 300;
    let s = setup().await;
    let clients: Vec<Arc<rustls::ClientConfig>> = (0..CLIENTS)
        .map(|_| Arc::new(s.pki.client_config()))
        .collect();
    for client in &clients {
        assert_eq!(
            handshake_of_a_get(s.edge.tls_addr.unwrap(), client, WWW, "/plain/resume").await,
            rustls::HandshakeKind::Full
        );
    }
    let mut resumed = 0;
    for client in &clients {
        if handshake_of_a_get(s.edge.tls_addr.unwrap(), client, WWW, "/plain/resume").await
            == rustls::HandshakeKind::Resumed
        {
            resumed += 1;
        }
    }
    assert_eq!(
        resumed, CLIENTS,
        "returning clients that resumed their sessions"
    );
}

/// A ticket one of the node's TLS listeners issued resumes the session on another: the
/// ticket key is the process's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_on_another_tls_listener_of_the_node() {
    let s = setup_with_listeners(2).await;
    let (first, second) = (s.edge.addrs[1], s.edge.addrs[2]);
    let client = Arc::new(s.pki.client_config());
    assert_eq!(
        handshake_of_a_get(first, &client, WWW, "/plain/resume").await,
        rustls::HandshakeKind::Full
    );
    assert_eq!(
        handshake_of_a_get(second, &client, WWW, "/plain/resume").await,
        rustls::HandshakeKind::Resumed
    );
}

/// A reload reads the certificate files again: new handshakes get the new certificate, a
/// connection opened before keeps working, and an unreadable file is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_the_listener_certificates() {
    let pki = TestPki::new();
    let served = pki.issue("served", &[WWW]);
    let plain = TestOrigin::ok(&[]).await;
    let rules = format!(
        "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: plain\n    forwarding_protocol: http_only\norigin_groups:\n{}",
        common::edge::group_yaml("plain", plain.addr())
    );
    let edge = TestEdge::start(&tls_node_yaml(&[&served], ""), &rules).await;
    let tls_addr = edge.tls_addr.unwrap();
    let before = pki.https_client(&[WWW, API], tls_addr);
    assert_eq!(
        before
            .get(format!("https://{WWW}/a"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        before.get(format!("https://{API}/a")).send().await.is_err(),
        "the first certificate does not cover {API}"
    );

    // The same files, now holding a certificate for both names.
    let both = pki.issue("both", &[WWW, API]);
    std::fs::copy(&both.cert, &served.cert).unwrap();
    std::fs::copy(&both.key, &served.key).unwrap();
    assert_eq!(edge.reload().await.0, 200);
    let after = pki.https_client(&[WWW, API], tls_addr);
    assert_eq!(
        after
            .get(format!("https://{API}/a"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The connection made before the reload is still served.
    assert_eq!(
        before
            .get(format!("https://{WWW}/b"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    std::fs::write(&served.key, "not a key").unwrap();
    let (code, answer) = edge.reload().await;
    assert_eq!(code, 422, "{answer}");
    let fresh = pki.https_client(&[WWW, API], tls_addr);
    assert_eq!(
        fresh
            .get(format!("https://{API}/c"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// One HTTP/1.1 response with a `Content-Length` read from `stream`: its status line and
/// body.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut data = Vec::new();
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert_ne!(n, 0, "closed before a whole head");
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(data[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = data.split_off(head_end);
    let already = body.len();
    assert!(already <= length, "more than one response");
    body.resize(length, 0);
    stream.read_exact(&mut body[already..]).await.unwrap();
    (head.lines().next().unwrap().to_string(), body)
}

/// Pingora's view of an origin connection's TLS (`Ssl::get_ssl`, which hooks may read):
/// the origin's certificate once the handshake is done, now read from the connection when
/// first asked for (`vendor/README.md`, *Peer certificates kept once*).
#[tokio::test]
async fn an_origin_connection_shows_the_origins_certificate() {
    use pingora_core::connectors::TransportConnector;
    use pingora_core::upstreams::peer::HttpPeer;
    use portico::tls::origin::{pingora_ca, read_ca};
    let pki = TestPki::new();
    let issued = pki.issue("origin", &["origin.internal"]);
    let origin = HttpsOrigin::start(&issued).await;
    let mut peer = HttpPeer::new(origin.addr, true, "origin.internal".into());
    peer.options.ca = Some(pingora_ca(&read_ca(&pki.ca_path()).unwrap()));
    let stream = TransportConnector::new(None)
        .new_stream(&peer)
        .await
        .unwrap();

    let leaf = rustls_pemfile::certs(&mut std::fs::read(&issued.cert).unwrap().as_slice())
        .next()
        .unwrap()
        .unwrap();
    let tls = stream.get_ssl().expect("a TLS connection");
    assert_eq!(tls.peer_certificate_der(), Some(leaf.as_ref()));
    assert_eq!(tls.peer_cert_chain_der().map(<[_]>::len), Some(1));
    assert!(tls.current_cipher_name().is_some());
}

/// A TLS connection to an origin that idles in the keep-alive pool until the pool's sweep
/// frees its buffers (the second sweep, a second apart, that finds it idle; `vendor/README.md`,
/// *Idle buffers*) is reused and reads a large answer whole. The wait is the idle time under
/// test, not a synchronisation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_tls_connection_idle_in_the_pool_past_its_release_serves_as_before() {
    let s = setup().await;
    let https = s.https();
    let first = https
        .get(format!("https://{WWW}/secure/first"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.text().await.unwrap(), "tls origin /secure/first");

    // Idle through two sweeps of the pool, whatever the phase of its one-second timer.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let big = https
        .get(format!("https://{WWW}/secure/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 200);
    assert!(
        big.bytes().await.unwrap() == big_body(),
        "the answer came whole"
    );
    assert_eq!(
        s.secure.connections(),
        1,
        "the pooled connection was reused"
    );
}

/// A keep-alive connection over TLS that idled long enough for the edge to free its
/// buffers (`RELEASE_AFTER`: rustls' record buffer and the TCP stream's read and write
/// buffers; `vendor/README.md`, *Idle buffers*, *Idle buffers released* under rustls)
/// serves as before on the same connection: a GET, then a 256 KiB upload that crosses every
/// buffer's size, each byte through. The waits are the idle time under test, not a
/// synchronisation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_idle_past_its_buffers_release_serves_as_before() {
    use portico::connection::RELEASE_AFTER;
    use tokio::io::AsyncWriteExt;
    let s = setup().await;
    let mut tls = s.connect_tls(WWW, s.pki.client_config()).await.unwrap();
    let deadline = std::time::Duration::from_secs(10);
    let get = format!("GET /plain/first HTTP/1.1\r\nHost: {WWW}\r\n\r\n");
    tls.write_all(get.as_bytes()).await.unwrap();
    let (status, body) = tokio::time::timeout(deadline, read_response(&mut tls))
        .await
        .unwrap();
    assert_eq!(
        (status.as_str(), &body[..]),
        ("HTTP/1.1 200 OK", &b"plain origin /plain/first"[..])
    );

    tokio::time::sleep(RELEASE_AFTER * 2).await;
    let get = format!("GET /plain/second HTTP/1.1\r\nHost: {WWW}\r\n\r\n");
    tls.write_all(get.as_bytes()).await.unwrap();
    let (status, body) = tokio::time::timeout(deadline, read_response(&mut tls))
        .await
        .expect("an answer after the release");
    assert_eq!(
        (status.as_str(), &body[..]),
        ("HTTP/1.1 200 OK", &b"plain origin /plain/second"[..])
    );

    tokio::time::sleep(RELEASE_AFTER * 2).await;
    let upload: Vec<u8> = (0..256 * 1024).map(|i: u32| (i * 7 % 251) as u8).collect();
    let post = format!(
        "POST /plain/upload HTTP/1.1\r\nHost: {WWW}\r\nContent-Length: {}\r\n\r\n",
        upload.len()
    );
    tls.write_all(post.as_bytes()).await.unwrap();
    tls.write_all(&upload).await.unwrap();
    let (status, _) = tokio::time::timeout(deadline, read_response(&mut tls))
        .await
        .expect("an answer to the upload");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let requests = s.plain.requests();
    let seen = requests.last().unwrap();
    assert_eq!(seen.path(), "/plain/upload");
    assert!(seen.body[..] == upload[..], "the upload arrived whole");
}
