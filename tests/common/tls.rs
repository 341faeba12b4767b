//! A test PKI (a CA and the certificates it issues, made with rcgen), an HTTPS origin, and
//! clients that trust the test CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::net::TcpListener;

/// A certificate authority for one test.
pub struct TestPki {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    pub dir: tempfile::TempDir,
}

/// PEM files of one issued certificate.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Portico Test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        TestPki {
            ca_cert,
            ca_key,
            dir,
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a certificate for `names`, written as `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        self.issue_with(file, names, |_| {})
    }

    /// Like `issue`, letting the test adjust the parameters (e.g. validity dates).
    pub fn issue_with(
        &self,
        file: &str,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    /// A rustls client configuration that trusts only this CA.
    pub fn client_config(&self) -> rustls::ClientConfig {
        self.client_config_with(rustls::DEFAULT_VERSIONS)
    }

    /// A client trusting this CA that speaks only `versions`.
    pub fn client_config_with(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    /// An HTTP client trusting this CA, with `names` resolved to `addr`.
    pub fn https_client(&self, names: &[&str], addr: SocketAddr) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem().as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none());
        for name in names {
            builder = builder.resolve(name, addr);
        }
        builder.build().unwrap()
    }
}

/// An HTTPS origin on `127.0.0.1:0` with the certificate `issued`; answers
/// `tls origin <path>` (a path ending `/big`: [`big_body`]) and counts requests and
/// connections.
pub struct HttpsOrigin {
    pub addr: SocketAddr,
    pub count: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
}

/// What an [`HttpsOrigin`] answers to a path ending `/big`: 256 KiB, many TLS records.
pub fn big_body() -> Bytes {
    (0..256 * 1024).map(|i: u32| (i * 7 % 251) as u8).collect()
}

impl HttpsOrigin {
    pub async fn start(issued: &Issued) -> HttpsOrigin {
        let chain = rustls_pemfile::certs(&mut std::fs::read(&issued.cert).unwrap().as_slice())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut std::fs::read(&issued.key).unwrap().as_slice())
            .unwrap()
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (counter, accepted) = (count.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, counter) = (acceptor.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let path = request.uri().path();
                            let body = match path.ends_with("/big") {
                                true => big_body(),
                                false => Bytes::from(format!("tls origin {path}")),
                            };
                            async move { Ok::<_, Infallible>(http::Response::new(Full::new(body))) }
                        });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpsOrigin {
            addr,
            count,
            connections,
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A node file with a plain listener and a TLS listener serving `certs` (first = default).
pub fn tls_node_yaml(certs: &[&Issued], extra: &str) -> String {
    let mut list = String::new();
    for issued in certs {
        list.push_str(&format!(
            "        - cert_file: {}\n          key_file: {}\n",
            issued.cert.display(),
            issued.key.display()
        ));
    }
    format!(
        "name: test-edge\nlisteners:\n  - address: 127.0.0.1:1\n  - address: 127.0.0.1:2\n    tls:\n      certificates:\n{list}rules_dir: rules\naccess_log: access.log\nserver:\n  threads: 1\n{extra}"
    )
}

/// The file name, for messages.
pub fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// A GET of `path` for `host` on a new TLS connection to `listener` made with `config`
/// (whose session store is its own), read to the end: how the handshake went.
pub async fn handshake_of_a_get(
    listener: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    path: &str,
) -> rustls::HandshakeKind {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(listener).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    // The answer comes after the session tickets, which the client keeps as it reads.
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    tls.get_ref().1.handshake_kind().unwrap()
}
