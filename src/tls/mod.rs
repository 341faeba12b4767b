//! TLS: listeners that terminate `https://` and `wss://` (certificates chosen by SNI), and
//! the CA lists origins' certificates are verified against.

pub mod certs;
pub mod origin;
pub mod sni;

use std::sync::Arc;

use pingora_core::listeners::tls::TlsSettings;

use crate::config::model::ListenerTls;
use certs::{CertError, LoadedCert};
pub use sni::SniResolver;

/// A TLS listener's certificates, loaded and indexed by name.
pub struct ServerTls {
    resolver: Arc<SniResolver>,
    http2: bool,
}

impl ServerTls {
    pub fn load(config: &ListenerTls) -> Result<ServerTls, CertError> {
        let certs = config
            .certificates
            .iter()
            .map(|files| LoadedCert::load(&files.cert, &files.key))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ServerTls {
            resolver: Arc::new(SniResolver::new(certs)),
            http2: config.http2,
        })
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
