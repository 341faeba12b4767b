//! The cache key: normalised host + path + the query-string mode's view of the query.
//!
//! The host is lower-cased and loses its port: clients reach one edge as `ip:port`, a name
//! or `name:port`, and all of them mean the same object.

use std::fmt::Write;

use crate::config::model::QueryStringMode;
use crate::rules::request::strip_port;

/// Writes the key's text form into `out` (cleared first), reusing its allocation.
pub fn write_cache_key(
    out: &mut String,
    host: &str,
    path: &str,
    query: Option<&str>,
    mode: &QueryStringMode,
) {
    out.clear();
    for c in strip_port(host).chars() {
        out.push(c.to_ascii_lowercase());
    }
    out.push_str(path);
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return;
    };
    match mode {
        QueryStringMode::Ignore => {}
        QueryStringMode::UseAll => {
            let _ = write!(out, "?{query}");
        }
        QueryStringMode::Include(names) | QueryStringMode::Exclude(names) => {
            let include = matches!(mode, QueryStringMode::Include(_));
            let mut first = true;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let name = pair.split('=').next().unwrap_or(pair);
                if names.iter().any(|n| n == name) == include {
                    out.push(if first { '?' } else { '&' });
                    out.push_str(pair);
                    first = false;
                }
            }
        }
    }
}

/// The key as a new string (for `explain` and tests).
pub fn cache_key(host: &str, path: &str, query: Option<&str>, mode: &QueryStringMode) -> String {
    let mut out = String::with_capacity(host.len() + path.len() + query.map_or(0, str::len) + 1);
    write_cache_key(&mut out, host, path, query, mode);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_normalised() {
        let mode = QueryStringMode::UseAll;
        assert_eq!(
            cache_key("Example.COM:8080", "/a", None, &mode),
            cache_key("example.com", "/a", None, &mode)
        );
    }

    #[test]
    fn query_string_modes() {
        let q = Some("b=2&a=1&utm=x");
        assert_eq!(cache_key("h", "/p", q, &QueryStringMode::Ignore), "h/p");
        assert_eq!(
            cache_key("h", "/p", q, &QueryStringMode::UseAll),
            "h/p?b=2&a=1&utm=x"
        );
        assert_eq!(
            cache_key("h", "/p", q, &QueryStringMode::Include(vec!["a".into()])),
            "h/p?a=1"
        );
        assert_eq!(
            cache_key("h", "/p", q, &QueryStringMode::Exclude(vec!["utm".into()])),
            "h/p?b=2&a=1"
        );
    }
}
