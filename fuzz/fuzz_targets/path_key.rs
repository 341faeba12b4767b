//! Path and host normalisation and the cache key (`src/rules/path.rs`,
//! `src/rules/request.rs`, `src/cache/key.rs`).
//!
//! Invariants: no panic; normalising a normalised path or host is a no-op (and borrows);
//! a normalised path is still a valid request path, has no dot segment or backslash, spells
//! every percent-encoding with upper-case hex and decodes to the same bytes as the path it
//! came from (normalising never changes meaning); a host's letter case never matters; two
//! cache keys' hashes are equal exactly when their parts are (host, route, listener scope,
//! origin group, scheme, upstream path and query view).
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use portico::cache::key::{cache_key, KeyParts};
use portico::config::model::QueryStringMode;
use portico::rules::path::normalise_path;
use portico::rules::request::{host_without_port, normalise_host};
use portico::rules::Scheme;

/// Every valid `%XX` decoded; anything else kept as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[path = "common.rs"]
mod common;

/// One cache key's parts, from a line `host|route|listeners|group|scheme|origin_path|path|
/// query|mode|names` (lists comma-separated; scheme `http`, `https` or empty; query `~`
/// for none; mode `ignore`, `use_all`, `include` or `exclude`).
#[derive(Debug, Clone)]
struct Parts {
    host: String,
    route: String,
    listeners: Vec<String>,
    origin_group: String,
    scheme: Option<bool>,
    origin_path: String,
    path: String,
    query: Option<String>,
    mode: QueryStringMode,
}

fn list(text: &str) -> Vec<String> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').map(str::to_owned).collect()
    }
}

fn parts(line: &str) -> Parts {
    let mut f = line.split('|');
    let mut next = || f.next().unwrap_or_default().to_owned();
    let (host, route, listeners, origin_group, scheme) = (next(), next(), next(), next(), next());
    let (origin_path, path, query, mode, names) = (next(), next(), next(), next(), next());
    let mut names = list(&names);
    names.sort();
    Parts {
        host,
        route,
        listeners: list(&listeners),
        origin_group,
        scheme: match scheme.as_str() {
            "http" => Some(false),
            "https" => Some(true),
            _ => None,
        },
        origin_path,
        path,
        query: (query != "~").then_some(query),
        mode: match mode.as_str() {
            "use_all" => QueryStringMode::UseAll,
            "include" => QueryStringMode::Include(names),
            "exclude" => QueryStringMode::Exclude(names),
            _ => QueryStringMode::Ignore,
        },
    }
}

struct Input {
    path: String,
    host: Vec<u8>,
    a: Parts,
    b: Parts,
}

// Input: a request path, a `Host` value, and two cache keys' parts (see `Parts`; without a
// fourth line the second key is the first).
fuzz_target!(|data: &[u8]| {
    let mut raw = data.splitn(3, |b| *b == b'\n');
    let path = String::from_utf8_lossy(raw.next().unwrap_or_default()).into_owned();
    let host = raw.next().unwrap_or_default().to_vec();
    let lines = common::lines(raw.next().unwrap_or_default());
    let a = parts(lines.first().map_or("", String::as_str));
    let b = lines.get(1).map_or_else(|| a.clone(), |l| parts(l));
    let input = Input { path, host, a, b };
    // Paths, as the request line gives them (a valid origin-form path, no query).
    if let Ok(pq) = input.path.parse::<http::uri::PathAndQuery>() {
        if pq.query().is_none() && pq.as_str() == input.path {
            if let Ok(normal) = normalise_path(&input.path) {
                assert!(normal.starts_with('/'));
                assert!(!normal.contains('\\'), "{normal}");
                assert!(
                    normal.parse::<http::uri::PathAndQuery>().is_ok(),
                    "{normal:?} is no longer a valid path"
                );
                let again = normalise_path(&normal);
                assert!(
                    matches!(again, Ok(Cow::Borrowed(p)) if p == normal),
                    "not idempotent: {:?} -> {normal:?} -> {again:?}",
                    input.path
                );
                for segment in normal.split('/') {
                    assert!(segment != "." && segment != "..", "{normal}");
                }
                let bytes = normal.as_bytes();
                for (i, _) in normal.match_indices('%') {
                    let hex = &bytes[i + 1..i + 3];
                    assert!(
                        hex.iter()
                            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
                        "{normal}"
                    );
                }
                assert_eq!(
                    percent_decode(&normal),
                    percent_decode(&input.path),
                    "{:?} -> {normal:?} changed meaning",
                    input.path
                );
            }
        }
    }

    // Hosts.
    if let Ok(host) = normalise_host(&input.host) {
        let again = normalise_host(host.as_bytes());
        assert!(
            matches!(again, Ok(Cow::Borrowed(h)) if h == host),
            "not idempotent: {host:?} -> {again:?}"
        );
        let upper = input.host.to_ascii_uppercase();
        assert_eq!(normalise_host(&upper).as_deref(), Ok(&*host), "case");
        let name = host_without_port(&host);
        assert!(name.starts_with('[') || !name.contains(':'), "{name}");
        assert_eq!(
            cache_key(&host, "/", None, &QueryStringMode::UseAll),
            format!("{name}/")
        );
    } else {
        let upper = input.host.to_ascii_uppercase();
        assert!(normalise_host(&upper).is_err(), "case: {:?}", input.host);
    }

    // Cache keys: equal hashes exactly when the parts are equal.
    let (a, b) = (&input.a, &input.b);
    // The proxy's paths never carry a query: `?` starts the query view.
    if [&a.path, &a.origin_path, &b.path, &b.origin_path]
        .iter()
        .any(|p| p.contains('?'))
    {
        return;
    }
    let key = |p: &Parts| {
        let parts = KeyParts {
            host: &p.host,
            route: &p.route,
            listeners: &p.listeners,
            origin_group: &p.origin_group,
            scheme: p
                .scheme
                .map(|https| if https { Scheme::Https } else { Scheme::Http }),
            origin_path: &p.origin_path,
            path: &p.path,
            query: p.query.as_deref(),
            mode: &p.mode,
        };
        let view = (
            p.host.to_owned(),
            p.route.to_owned(),
            p.listeners.clone(),
            p.origin_group.to_owned(),
            p.scheme,
            parts.upstream_target(),
        );
        (parts.hash(), view)
    };
    let (hash_a, view_a) = key(a);
    let (hash_b, view_b) = key(b);
    assert_eq!(
        hash_a == hash_b,
        view_a == view_b,
        "{view_a:?} / {view_b:?}"
    );
});
