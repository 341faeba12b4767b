//! Purge requests, as Front Door takes them: `{"domains": [...], "paths": ["/img/*", "/a.css"]}`.
//!
//! Paths match case-insensitively and ignore query strings: `/a.css` removes every stored
//! `/a.css?...` variant too. A path ending in `*` is a prefix (`/*` is everything). With no
//! `domains`, every domain is purged.

use serde::Deserialize;

use crate::rules::request::strip_port;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    #[serde(default)]
    domains: Vec<String>,
    paths: Vec<String>,
    /// On an edge: purge its shields too (`tier::purge`).
    #[serde(default)]
    shields: bool,
}

/// A validated purge: which stored keys it removes.
#[derive(Debug, PartialEq, Eq)]
pub struct Purge {
    /// Lower-cased, without ports; empty means every domain.
    domains: Vec<String>,
    paths: Vec<PathMatch>,
    pub shields: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum PathMatch {
    /// Lower-cased exact path.
    Exact(String),
    /// Lower-cased prefix (the path without its `*`).
    Prefix(String),
}

impl Purge {
    /// Parses and checks a purge request body; the error says what is wrong.
    pub fn parse(body: &[u8]) -> Result<Purge, String> {
        let body: PurgeBody = serde_json::from_slice(body).map_err(|e| {
            format!("the purge body must be JSON {{\"domains\": [..], \"paths\": [..]}}: {e}")
        })?;
        if body.paths.is_empty() {
            return Err("`paths` must name at least one path (\"/*\" purges everything)".into());
        }
        let mut paths = Vec::with_capacity(body.paths.len());
        for path in &body.paths {
            // Query strings take no part in a purge.
            let path = path
                .split('?')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !path.starts_with('/') {
                return Err(format!("purge path {path:?} must start with '/'"));
            }
            paths.push(match path.strip_suffix('*') {
                Some(prefix) => PathMatch::Prefix(prefix.to_string()),
                None => PathMatch::Exact(path),
            });
        }
        let mut domains = Vec::with_capacity(body.domains.len());
        for domain in &body.domains {
            let domain = strip_port(domain.trim()).to_ascii_lowercase();
            if domain.is_empty() || domain.contains('/') {
                return Err(format!("purge domain {domain:?} is not a host name"));
            }
            domains.push(domain);
        }
        Ok(Purge {
            domains,
            paths,
            shields: body.shields,
        })
    }

    /// Whether a stored object's key text (`host/path?query`) falls under this purge.
    pub fn matches(&self, key: &str) -> bool {
        let (host, rest) = key.find('/').map_or((key, ""), |i| key.split_at(i));
        if !self.domains.is_empty() && !self.domains.iter().any(|d| d == host) {
            return false;
        }
        let path = rest.split('?').next().unwrap_or_default();
        self.paths.iter().any(|p| match p {
            PathMatch::Exact(exact) => path.eq_ignore_ascii_case(exact),
            PathMatch::Prefix(prefix) => path
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge(json: &str) -> Purge {
        Purge::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn exact_paths_ignore_case_and_query() {
        let p = purge(r#"{"paths": ["/A.css?v=1"]}"#);
        assert!(p.matches("example.com/a.css"));
        assert!(p.matches("other.net/a.CSS?v=2"));
        assert!(!p.matches("example.com/a.css2"));
    }

    #[test]
    fn wildcards_are_prefixes() {
        let p = purge(r#"{"domains": ["Example.com:8080"], "paths": ["/img/*"]}"#);
        assert!(p.matches("example.com/img/x.png"));
        assert!(p.matches("example.com/IMG/y/z.png?q"));
        assert!(!p.matches("example.com/im"));
        assert!(!p.matches("other.com/img/x.png"));
        assert!(purge(r#"{"paths": ["/*"]}"#).matches("any.host/anything"));
    }

    #[test]
    fn bad_bodies_say_why() {
        for (body, says) in [
            ("not json", "must be JSON"),
            (r#"{"paths": []}"#, "at least one path"),
            (r#"{"paths": ["img/*"]}"#, "must start with '/'"),
            (r#"{"paths": ["/a"], "domains": [""]}"#, "not a host name"),
            (r#"{"paths": ["/a"], "extra": 1}"#, "unknown field"),
        ] {
            let error = Purge::parse(body.as_bytes()).unwrap_err();
            assert!(error.contains(says), "{body}: {error}");
        }
    }
}
