//! The demo's optional TLS listener: a self-signed certificate for `localhost`, made at
//! start and printed with its SHA-256 fingerprint so a client can pin it.

use std::path::Path;

use crate::config::model::{CertificateFiles, ListenerTls};

/// Writes a fresh self-signed certificate and key into `dir`; returns the listener settings
/// and the certificate's fingerprint (`AA:BB:...`).
pub fn self_signed(dir: &Path) -> Result<(ListenerTls, String), String> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Portico demo (self-signed)");
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files = CertificateFiles {
        cert: dir.join("demo-cert.pem"),
        key: dir.join("demo-key.pem"),
    };
    std::fs::write(&files.cert, cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&files.key, key.serialize_pem()).map_err(|e| e.to_string())?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.der());
    let fingerprint = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok((
        ListenerTls {
            certificates: vec![files],
            http2: false,
        },
        fingerprint,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_loads_and_covers_localhost() {
        let dir = tempfile_dir();
        let (tls, fingerprint) = self_signed(&dir).unwrap();
        assert_eq!(fingerprint.len(), 32 * 3 - 1);
        let files = &tls.certificates[0];
        let loaded = crate::tls::certs::LoadedCert::load(&files.cert, &files.key).unwrap();
        assert!(loaded.covers("localhost"));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("portico-demo-tls-test-{}", std::process::id()))
    }
}
