//! TLS to origins: the CA list a group's origins are verified against, for traffic (through
//! Pingora's peers) and for health probes (through tokio-rustls).

use std::path::Path;
use std::sync::Arc;

use pingora_core::protocols::tls::CaType;
use pingora_core::utils::tls::{parse_x509, WrappedX509};
use rustls::pki_types::CertificateDer;

use super::certs::{read_chain, CertError};

/// The certificates of a PEM CA file, each checked to parse (Pingora's parser panics on a
/// malformed one). Read once, when the configuration is validated.
pub fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = read_chain(path)?;
    for der in &certs {
        if let Err(e) = x509_parser::parse_x509_certificate(der.as_ref()) {
            return Err(CertError::BadCertificate {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    }
    Ok(certs)
}

/// A group's CA certificates (checked by `read_ca`) in the form Pingora's peers take.
pub fn pingora_ca(certs: &[CertificateDer<'static>]) -> Arc<CaType> {
    let certs: Vec<_> = certs
        .iter()
        .map(|der| WrappedX509::new(der.as_ref().to_vec(), parse_x509))
        .collect();
    Arc::from(certs.into_boxed_slice())
}

/// A TLS client for health probes: the group's CA file, else the system roots.
pub fn probe_connector(ca: Option<&[CertificateDer<'static>]>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(certs) => {
            roots.add_parsable_certificates(certs.iter().cloned());
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                log::warn!("health probes: system root certificates: {error}");
            }
            roots.add_parsable_certificates(native.certs);
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(super::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .expect("AWS-LC supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
