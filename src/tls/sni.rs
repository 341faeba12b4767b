//! Picks a listener certificate by the SNI name a client sends: an exact name first, then a
//! wildcard one label up, then the first certificate (the default).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::LoadedCert;

#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, usize>,
}

impl SniResolver {
    /// `certs` in configuration order; on a name two certificates cover, the first wins.
    pub fn new(certs: Vec<LoadedCert>) -> SniResolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (index, cert) in certs.iter().enumerate() {
            for name in &cert.names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_insert(index),
                    None => exact.entry(name.clone()).or_insert(index),
                };
            }
        }
        SniResolver {
            certs: certs.into_iter().map(|c| c.certified).collect(),
            exact,
            wildcard,
        }
    }

    /// The index of the certificate for `name` (any case).
    pub fn pick(&self, name: Option<&str>) -> usize {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return 0;
        };
        if let Some(&index) = self.exact.get(&name) {
            return index;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent).copied())
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certs.get(self.pick(hello.server_name())).cloned()
    }
}
