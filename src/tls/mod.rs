//! TLS: listeners that terminate `https://` and `wss://` (certificates chosen by SNI), and
//! the CA lists origins' certificates are verified against.

pub mod certs;
pub mod origin;
pub mod sni;

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::listeners::tls::TlsSettings;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::model::ListenerTls;
use certs::{CertError, LoadedCert};
pub use sni::SniResolver;

/// A TLS listener's certificates, loaded and indexed by name. A reload replaces them
/// ([`ServerTls::replace_certificates`]): handshakes from then on use the new ones.
pub struct ServerTls {
    resolver: Arc<ReloadableResolver>,
    http2: bool,
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
    pub fn load(config: &ListenerTls) -> Result<ServerTls, CertError> {
        let LoadedCertificates(resolver) = LoadedCertificates::load(config)?;
        Ok(ServerTls {
            resolver: Arc::new(ReloadableResolver(ArcSwap::from_pointee(resolver))),
            http2: config.http2,
        })
    }

    /// New handshakes use `certificates` from now on; open connections keep theirs.
    pub fn replace_certificates(&self, certificates: LoadedCertificates) {
        self.resolver.0.store(Arc::new(certificates.0));
    }

    /// Settings for a listener of Pingora's `Server` (TLS 1.2 and 1.3; h2 by ALPN if asked).
    pub fn pingora_settings(&self) -> pingora_error::Result<TlsSettings> {
        // Paths are unused once a resolver is set.
        let mut settings = TlsSettings::intermediate("", "")?;
        settings.set_cert_resolver(self.resolver.clone());
        if self.http2 {
            settings.enable_h2();
        }
        Ok(settings)
    }

    /// The same, as an acceptor for a listener the caller runs (in-process tests).
    pub fn acceptor(&self) -> pingora_core::listeners::tls::Acceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = if self.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        pingora_core::listeners::tls::Acceptor::from_server_config(Arc::new(config))
    }
}
