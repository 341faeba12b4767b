//! TLS: listeners that terminate `https://` and `wss://` (certificates chosen by SNI), and
//! the CA lists origins' certificates are verified against.

pub mod certs;
pub mod origin;
pub mod sni;
pub mod tickets;

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::model::ListenerTls;
use certs::{CertError, LoadedCert};
pub use sni::SniResolver;
use tickets::Ticketer;

/// A TLS listener's certificates, loaded and indexed by name. A reload replaces them
/// ([`ServerTls::replace_certificates`]): handshakes from then on use the new ones.
pub struct ServerTls {
    resolver: Arc<ReloadableResolver>,
    http2: bool,
    /// The node's, shared by all its TLS listeners.
    tickets: Arc<Ticketer>,
}

/// The listener's current certificates, swapped whole on reload.
#[derive(Debug)]
struct ReloadableResolver(ArcSwap<SniResolver>);

impl ResolvesServerCert for ReloadableResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().resolve(hello)
    }
}

/// Certificates loaded for a listener, not yet in use.
pub struct LoadedCertificates(SniResolver);

impl LoadedCertificates {
    pub fn load(config: &ListenerTls) -> Result<LoadedCertificates, CertError> {
        let certs = config
            .certificates
            .iter()
            .map(|files| LoadedCert::load(&files.cert, &files.key))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LoadedCertificates(SniResolver::new(certs)))
    }
}

impl ServerTls {
    /// The listener `config`, sealing its session tickets with the node's `tickets`.
    pub fn load(config: &ListenerTls, tickets: Arc<Ticketer>) -> Result<ServerTls, CertError> {
        let LoadedCertificates(resolver) = LoadedCertificates::load(config)?;
        Ok(ServerTls {
            resolver: Arc::new(ReloadableResolver(ArcSwap::from_pointee(resolver))),
            http2: config.http2,
            tickets,
        })
    }

    /// New handshakes use `certificates` from now on; open connections keep theirs.
    pub fn replace_certificates(&self, certificates: LoadedCertificates) {
        self.resolver.0.store(Arc::new(certificates.0));
    }

    /// The listener's acceptor: TLS 1.2 and 1.3, h2 by ALPN if asked, and session
    /// resumption for any number of clients: a client that comes back resumes its session
    /// from a ticket ([`tickets`]). Without tickets rustls remembers 256 sessions, fewer
    /// than an edge's returning clients. The same acceptor for `portico run` and in-process
    /// listeners.
    pub fn acceptor(&self) -> Result<pingora_core::listeners::tls::Acceptor, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.ticketer = self.tickets.clone();
        config.alpn_protocols = if self.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(pingora_core::listeners::tls::Acceptor::from_server_config(
            Arc::new(config),
        ))
    }
}

/// The cryptography of the edge's TLS (listeners, their keys, health probes): AWS-LC,
/// whose RSA-2048 signature (a full handshake's largest cost with an RSA certificate)
/// takes half of ring's time on x86-64 (222 against 433 µs on the benchmark machine, as
/// OpenSSL's 207: both use AVX-512 IFMA where the CPU has it).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes [`crypto_provider`]'s the process's default, so that the TLS Pingora sets up
/// for origins and shields uses it too (Pingora installs ring unless one is installed).
/// Once per process: later calls leave the first provider installed.
pub fn install_crypto_provider() {
    let _ = CryptoProvider::install_default(Arc::unwrap_or_clone(crypto_provider()));
}
