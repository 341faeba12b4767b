//! Certificates and keys from PEM files: loading, checking a key against its certificate,
//! the names a certificate covers and when it expires. Used by the TLS listeners at start
//! and by `portico check`, so both say the same thing about the same file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why a certificate/key pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key", path.display())]
    NoKey { path: PathBuf },
    #[error("{} is not a certificate Portico can read: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("the key in {} cannot be used: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

/// A certificate chain with its key, ready for a TLS listener.
pub struct LoadedCert {
    pub certified: Arc<CertifiedKey>,
    /// DNS names the leaf covers (subject alternative names, else the common name),
    /// lower-cased; wildcards kept as `*.example.com`.
    pub names: Vec<String>,
    pub not_after: SystemTime,
}

impl LoadedCert {
    /// Loads `cert` (a PEM chain, leaf first) and `key` (PEM), and checks they match.
    pub fn load(cert: &Path, key: &Path) -> Result<LoadedCert, CertError> {
        let chain = read_chain(cert)?;
        let private_key = read_key(key)?;
        let signing = super::crypto_provider()
            .key_provider
            .load_private_key(private_key)
            .map_err(|e| CertError::BadKey {
                path: key.to_path_buf(),
                reason: e.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(CertError::KeyMismatch {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                })
            }
            // Keys whose public half cannot be derived are taken as they are.
            Err(_) => {}
        }
        let leaf = certified.cert[0].clone();
        let (names, not_after) = leaf_facts(&leaf).map_err(|reason| CertError::BadCertificate {
            path: cert.to_path_buf(),
            reason,
        })?;
        Ok(LoadedCert {
            certified: Arc::new(certified),
            names,
            not_after,
        })
    }

    /// Whether this certificate covers `host` (lower-case, no port).
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|name| name_covers(name, host))
    }

    /// Time left before expiry; `None` if it has expired.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        self.not_after.duration_since(now).ok()
    }
}

/// Whether a certificate name (`www.example.com` or `*.example.com`) covers `host`. A
/// wildcard covers exactly one label, as in RFC 6125.
pub fn name_covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == host,
    }
}

/// Reads every certificate of a PEM file, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = read(path)?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| CertError::BadKey {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| CertError::NoKey {
            path: path.to_path_buf(),
        })
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// The DNS names and the expiry of a DER leaf certificate.
fn leaf_facts(der: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let seconds = cert.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    Ok((names, not_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_covers("*.example.com", "www.example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(name_covers("example.com", "example.com"));
        assert!(!name_covers("example.com", "www.example.com"));
    }
}
