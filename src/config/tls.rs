//! Stage 2 for TLS: listener certificates and origin CA files. Every certificate is loaded
//! here exactly as the listener will load it, so `portico check` and `portico run` agree.
//!
//! - unreadable files, files without a certificate or key, a key that does not match its
//!   certificate, an expired certificate: errors;
//! - a certificate that expires within 14 days: a warning;
//! - a certificate name that no route serves: a warning (checked once routes are built);
//! - session ticket key files that cannot be read, of the wrong size or naming the same
//!   key: errors; ticket keys on a node without a TLS listener: a warning.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::diagnostics::{FileId, Report};
use super::file::{FileListenerTls, FileNode};
use super::model::{CertificateFiles, DomainPattern, ListenerTls, OriginCa, Route};
use crate::tls::certs::{name_covers, CertError, LoadedCert};
use crate::tls::tickets::key_name;

const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Names covered by one listener certificate, kept for the check against routes.
pub struct CertNames {
    pub file: FileId,
    pub at: String,
    pub names: Vec<String>,
}

pub fn build_listener_tls(
    report: &mut Report,
    file: FileId,
    conf_dir: &Path,
    at: &str,
    raw: &FileListenerTls,
    names: &mut Vec<CertNames>,
) -> ListenerTls {
    if raw.certificates.is_empty() {
        report.error(
            file,
            &format!("{at}.certificates"),
            "a TLS listener needs at least one certificate",
        );
    }
    let now = SystemTime::now();
    let mut certificates = Vec::with_capacity(raw.certificates.len());
    for (i, pair) in raw.certificates.iter().enumerate() {
        let at = format!("{at}.certificates[{i}]");
        let files = CertificateFiles {
            cert: conf_dir.join(&pair.cert_file),
            key: conf_dir.join(&pair.key_file),
        };
        match LoadedCert::load(&files.cert, &files.key) {
            Ok(loaded) => {
                check_expiry(report, file, &format!("{at}.cert_file"), &loaded, now);
                names.push(CertNames {
                    file,
                    at: format!("{at}.cert_file"),
                    names: loaded.names,
                });
            }
            Err(error) => {
                let field = match error {
                    CertError::Unreadable { ref path, .. }
                    | CertError::NoKey { ref path }
                    | CertError::BadKey { ref path, .. }
                        if *path == files.key =>
                    {
                        "key_file"
                    }
                    CertError::KeyMismatch { .. } => "key_file",
                    _ => "cert_file",
                };
                report.error(file, &format!("{at}.{field}"), error.to_string());
            }
        }
        certificates.push(files);
    }
    ListenerTls {
        certificates,
        http2: raw.http2,
    }
}

/// `tls_ticket_keys`: each file read as the listeners will read it.
pub fn build_ticket_keys(
    report: &mut Report,
    file: FileId,
    conf_dir: &Path,
    raw: &FileNode,
) -> Vec<std::path::PathBuf> {
    let mut names: Vec<([u8; 16], usize)> = Vec::new();
    let mut paths = Vec::with_capacity(raw.tls_ticket_keys.len());
    for (i, text) in raw.tls_ticket_keys.iter().enumerate() {
        let at = format!("tls_ticket_keys[{i}]");
        let path = conf_dir.join(text);
        match key_name(&path) {
            Err(error) => report.error(file, &at, error.to_string()),
            Ok(name) => match names.iter().find(|(seen, _)| *seen == name) {
                Some((_, first)) => report.error(
                    file,
                    &at,
                    format!("{} names the same key as tls_ticket_keys[{first}] (their first 16 bytes are equal)", path.display()),
                ),
                None => names.push((name, i)),
            },
        }
        paths.push(path);
    }
    if !paths.is_empty() && raw.listeners.iter().all(|l| l.tls.is_none()) {
        report.warning(
            file,
            "tls_ticket_keys",
            "no listener has tls: the ticket keys are not used",
        );
    }
    paths
}

fn check_expiry(report: &mut Report, file: FileId, at: &str, cert: &LoadedCert, now: SystemTime) {
    let expires = httpdate::fmt_http_date(cert.not_after);
    match cert.remaining(now) {
        None => report.error(file, at, format!("the certificate expired on {expires}")),
        Some(left) if left < EXPIRY_WARNING => report.warning(
            file,
            at,
            format!(
                "the certificate expires on {expires}, in {} day(s)",
                left.as_secs() / 86_400
            ),
        ),
        Some(_) => {}
    }
}

/// Warns about certificate names that no route serves (a route without domains serves all).
pub fn check_names_served(report: &mut Report, names: &[CertNames], routes: &[Route]) {
    if routes.iter().any(|r| r.domains.is_empty()) {
        return;
    }
    for cert in names {
        for name in &cert.names {
            let served = routes.iter().flat_map(|r| &r.domains).any(|d| match d {
                DomainPattern::Exact(host) => name_covers(name, host),
                // `*.example.com` (suffix `.example.com`) serves a wildcard certificate for
                // the same suffix, and any name below it.
                DomainPattern::Wildcard(suffix) => name
                    .strip_prefix('*')
                    .map_or(name.ends_with(suffix.as_str()), |n| n == suffix),
            });
            if !served {
                report.warning(
                    cert.file,
                    &cert.at,
                    format!("the certificate covers \"{name}\", which no route serves"),
                );
            }
        }
    }
}

/// An origin group's CA file: resolved against its rules file and read once, at load.
pub fn build_ca_file(
    report: &mut Report,
    file: FileId,
    at: &str,
    dir: &Path,
    raw: &str,
) -> Option<OriginCa> {
    let path = dir.join(raw);
    match crate::tls::origin::read_ca(&path) {
        Ok(certs) => Some(OriginCa { path, certs }),
        Err(error) => {
            report.error(file, at, error.to_string());
            None
        }
    }
}
