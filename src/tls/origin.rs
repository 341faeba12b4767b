//! TLS to origins: the CA list a group's origins are verified against, for traffic (through
//! Pingora's peers) and for health probes (through tokio-rustls).

use std::path::Path;
use std::sync::Arc;

use pingora_core::protocols::tls::CaType;
use pingora_core::utils::tls::{parse_x509, WrappedX509};

use super::certs::{read_chain, CertError};

/// The certificates of a PEM CA file, in the form Pingora's peers take.
pub fn load_ca(path: &Path) -> Result<Arc<CaType>, CertError> {
    let mut certs = Vec::new();
    for der in read_chain(path)? {
        // Pingora's parser panics on a malformed certificate: check first.
        if let Err(e) = x509_parser::parse_x509_certificate(der.as_ref()) {
            return Err(CertError::BadCertificate {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
        certs.push(WrappedX509::new(der.as_ref().to_vec(), parse_x509));
    }
    Ok(Arc::from(certs.into_boxed_slice()))
}

/// A TLS client for health probes: the group's CA file, else the system roots.
pub fn probe_connector(ca_file: Option<&Path>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => match read_chain(path) {
            Ok(certs) => {
                roots.add_parsable_certificates(certs);
            }
            // Validation read it at load; an empty store makes every probe fail with a reason.
            Err(e) => log::error!("health probes: {e}"),
        },
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                log::warn!("health probes: system root certificates: {error}");
            }
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
