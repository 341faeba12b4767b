//! Purge requests: `{"domains": [...], "paths": ["/img/*", "/a.css"], "tags": [...],
//! "soft": false}`.
//!
//! Paths match case-insensitively and ignore query strings: `/a.css` removes every stored
//! `/a.css?...` variant too. A path ending in `*` is a prefix (`/*` is everything). Tags
//! (`cache::tags`) match without regard to ASCII case. An object goes when its path matches
//! *or* it carries one of the tags; with `domains`, only objects of those hosts go. With no
//! `domains`, every domain is purged. `soft` marks the objects stale instead of removing
//! them: they are then served per `stale-while-revalidate` / `stale-if-error` and
//! revalidated.

use serde::Deserialize;

use crate::rules::request::strip_port;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    soft: bool,
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
    /// Normalised (`cache::tags::normalise`).
    tags: Vec<Box<str>>,
    /// Mark stale instead of removing.
    pub soft: bool,
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
            format!("the purge body must be JSON {{\"domains\": [..], \"paths\": [..], \"tags\": [..], \"soft\": false}}: {e}")
        })?;
        if body.paths.is_empty() && body.tags.is_empty() {
            return Err(
                "`paths` or `tags` must name at least one path or tag (\"/*\" purges everything)"
                    .into(),
            );
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
        let mut tags = Vec::with_capacity(body.tags.len());
        for tag in &body.tags {
            match super::tags::normalise(tag.trim().as_bytes()) {
                Some(tag) => tags.push(tag),
                None => {
                    return Err(format!(
                    "purge tag {tag:?} is not a tag (1 to {} visible ASCII characters, no comma)",
                    super::tags::MAX_TAG_LEN
                ))
                }
            }
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
            tags,
            soft: body.soft,
            shields: body.shields,
        })
    }

    /// The hosts this purge is limited to (empty: every host).
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Whether it names paths (then objects are looked for by host).
    pub fn has_paths(&self) -> bool {
        !self.paths.is_empty()
    }

    /// The tags it names.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|t| &**t)
    }

    /// Whether a stored object, with key text `key` (`host/path?query`) and tags `tags`,
    /// falls under this purge.
    pub fn matches(&self, key: &str, tags: &[Box<str>]) -> bool {
        let (host, rest) = key.find('/').map_or((key, ""), |i| key.split_at(i));
        if !self.domains.is_empty() && !self.domains.iter().any(|d| d == host) {
            return false;
        }
        if tags.iter().any(|t| self.tags.contains(t)) {
            return true;
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

    impl Purge {
        fn matches_path(&self, key: &str) -> bool {
            self.matches(key, &[])
        }
    }

    #[test]
    fn exact_paths_ignore_case_and_query() {
        let p = purge(r#"{"paths": ["/A.css?v=1"]}"#);
        assert!(p.matches_path("example.com/a.css"));
        assert!(p.matches_path("other.net/a.CSS?v=2"));
        assert!(!p.matches_path("example.com/a.css2"));
    }

    #[test]
    fn wildcards_are_prefixes() {
        let p = purge(r#"{"domains": ["Example.com:8080"], "paths": ["/img/*"]}"#);
        assert!(p.matches_path("example.com/img/x.png"));
        assert!(p.matches_path("example.com/IMG/y/z.png?q"));
        assert!(!p.matches_path("example.com/im"));
        assert!(!p.matches_path("other.com/img/x.png"));
        assert!(purge(r#"{"paths": ["/*"]}"#).matches_path("any.host/anything"));
    }

    #[test]
    fn tags_match_any_case_and_domains_still_limit_them() {
        let tagged =
            |tags: &[&str]| -> Vec<Box<str>> { tags.iter().map(|t| (*t).into()).collect() };
        let p = purge(r#"{"tags": ["Sale", " shelf-2 "], "soft": true}"#);
        assert!(p.soft);
        assert!(p.matches("a.example/x", &tagged(&["other", "sale"])));
        assert!(p.matches("b.example/y", &tagged(&["shelf-2"])));
        assert!(!p.matches("a.example/x", &tagged(&["sales"])));
        assert!(
            !p.matches("a.example/x", &[]),
            "no path given: paths match nothing"
        );
        let p = purge(r#"{"domains": ["a.example"], "tags": ["sale"], "paths": ["/keep-me-not"]}"#);
        assert!(p.matches("a.example/x", &tagged(&["sale"])));
        assert!(p.matches("a.example/keep-me-not", &[]));
        assert!(!p.matches("b.example/x", &tagged(&["sale"])));
        assert!(!purge(r#"{"paths": ["/a"]}"#).soft);
    }

    #[test]
    fn bad_bodies_say_why() {
        for (body, says) in [
            ("not json", "must be JSON"),
            (r#"{"paths": []}"#, "at least one path or tag"),
            (r#"{"tags": ["a b"]}"#, "is not a tag"),
            (r#"{"tags": [""]}"#, "is not a tag"),
            (r#"{"paths": ["img/*"]}"#, "must start with '/'"),
            (r#"{"paths": ["/a"], "domains": [""]}"#, "not a host name"),
            (r#"{"paths": ["/a"], "extra": 1}"#, "unknown field"),
        ] {
            let error = Purge::parse(body.as_bytes()).unwrap_err();
            assert!(error.contains(says), "{body}: {error}");
        }
    }
}
