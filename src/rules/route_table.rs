//! Route selection, as Front Door does it: the most specific domain, then the most specific
//! pattern (an exact path before the longest prefix), then methods and protocols.
//!
//! Compiled once per configuration into hash maps so that matching costs a handful of
//! lookups whatever the number of routes, and allocates nothing. The maps hash with aHash
//! (keyed per process, as std's SipHash is, so a client cannot aim at one bucket, and a few
//! times faster on a short path or host; a request pays two or three lookups).

use std::collections::HashMap as StdHashMap;

type HashMap<K, V> = StdHashMap<K, V, ahash::RandomState>;

use smallvec::SmallVec;

use crate::config::model::{DomainPattern, PathPattern, Route};

use super::request::{strip_port, Scheme};

/// Why no route took a request; rendered in the edge's 404 body and by `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    NoRouteForPath,
    MethodNotAccepted { route: usize },
    ProtocolNotAccepted { route: usize },
    BadHost,
}

/// A matched route; `https_redirect` is set when the route wants HTTPS and the request is HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    pub route: usize,
    pub https_redirect: bool,
}

/// The routes declaring one pattern: several only when their listener scopes are disjoint
/// (checked at load), so at most one of them takes a given listener.
type Claimants = SmallVec<[usize; 1]>;

#[derive(Debug, Default)]
struct PathTable {
    exact: HashMap<Box<str>, Claimants>,
    /// Keyed by the prefix including its trailing '/'.
    prefixes: HashMap<Box<str>, Claimants>,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    exact_hosts: HashMap<Box<str>, PathTable>,
    /// Keyed by the suffix with its leading dot (`.example.com`).
    wildcard_hosts: HashMap<Box<str>, PathTable>,
    any_host: PathTable,
}

/// Longest host name DNS allows; longer ones are refused without a lookup.
const MAX_HOST: usize = 253;

impl RouteTable {
    pub fn new(routes: &[Route]) -> RouteTable {
        let mut table = RouteTable::default();
        for (index, route) in routes.iter().enumerate() {
            if route.domains.is_empty() {
                table.any_host.add(index, &route.patterns);
                continue;
            }
            for domain in &route.domains {
                let path_table = match domain {
                    DomainPattern::Exact(host) => {
                        table.exact_hosts.entry(host.as_str().into()).or_default()
                    }
                    DomainPattern::Wildcard(suffix) => table
                        .wildcard_hosts
                        .entry(suffix.as_str().into())
                        .or_default(),
                };
                path_table.add(index, &route.patterns);
            }
        }
        table
    }

    /// The route for a request, or why there is none.
    pub fn match_request(
        &self,
        routes: &[Route],
        host: &str,
        path: &str,
        method: &str,
        scheme: Scheme,
        listener: Option<&str>,
    ) -> Result<RouteMatch, Miss> {
        let request = Lookup {
            path,
            method,
            scheme,
            listener,
        };
        let mut buffer = [0u8; MAX_HOST];
        let host = lowercase_into(strip_port(host), &mut buffer).ok_or(Miss::BadHost)?;
        let mut miss = Miss::NoRouteForPath;
        if let Some(table) = self.exact_hosts.get(host) {
            if let Some(found) = table.find(routes, &request, &mut miss) {
                return Ok(found);
            }
        }
        // `a.b.example.com` tries `.b.example.com`, then `.example.com`, then `.com`.
        let mut rest = if self.wildcard_hosts.is_empty() {
            ""
        } else {
            host
        };
        while let Some(dot) = rest.find('.') {
            let suffix = &rest[dot..];
            if let Some(table) = self.wildcard_hosts.get(suffix) {
                if let Some(found) = table.find(routes, &request, &mut miss) {
                    return Ok(found);
                }
            }
            rest = &suffix[1..];
        }
        self.any_host.find(routes, &request, &mut miss).ok_or(miss)
    }

    /// Whether any route serves `host` (any-host routes serve every host).
    pub fn serves_host(&self, host: &str) -> bool {
        let mut buffer = [0u8; MAX_HOST];
        let Some(host) = lowercase_into(strip_port(host), &mut buffer) else {
            return false;
        };
        let any = !self.any_host.exact.is_empty() || !self.any_host.prefixes.is_empty();
        let wildcard = || {
            let mut rest = host;
            while let Some(dot) = rest.find('.') {
                if self.wildcard_hosts.contains_key(&rest[dot..]) {
                    return true;
                }
                rest = &rest[dot + 1..];
            }
            false
        };
        any || self.exact_hosts.contains_key(host) || wildcard()
    }
}

impl PathTable {
    fn add(&mut self, route: usize, patterns: &[PathPattern]) {
        for pattern in patterns {
            let claimants = match pattern {
                PathPattern::Exact(path) => self.exact.entry(path.as_str().into()),
                PathPattern::Prefix(prefix) => self.prefixes.entry(prefix.as_str().into()),
            };
            claimants.or_default().push(route);
        }
    }

    /// Exact path first, then prefixes from the longest; a route that refuses the method or
    /// protocol lets a less specific one try, and is remembered as the reason if none does.
    /// Routes scoped to other listeners are passed over as if absent.
    fn find(&self, routes: &[Route], request: &Lookup<'_>, miss: &mut Miss) -> Option<RouteMatch> {
        let path = request.path;
        let in_scope = |&&route: &&usize| {
            let scope = &routes[route].listeners;
            scope.is_empty()
                || request
                    .listener
                    .is_some_and(|name| scope.iter().any(|s| s == name))
        };
        let exact = self.exact.get(path).into_iter().flatten();
        // Each `/` from the last, by bytes (cheaper than a `char` pattern's searcher).
        let slashes = (0..path.len())
            .rev()
            .filter(|&at| path.as_bytes()[at] == b'/');
        let prefixes = slashes
            .filter_map(|slash| self.prefixes.get(&path[..=slash]))
            .flatten();
        for &route in exact.chain(prefixes).filter(in_scope) {
            match accept(&routes[route], route, request.method, request.scheme) {
                Ok(found) => return Some(found),
                Err(reason) if *miss == Miss::NoRouteForPath => *miss = reason,
                Err(_) => {}
            }
        }
        None
    }
}

/// What route matching looks at besides the host.
struct Lookup<'a> {
    path: &'a str,
    method: &'a str,
    scheme: Scheme,
    /// The name of the listener the request came in on (`None`: an unnamed one).
    listener: Option<&'a str>,
}

fn accept(route: &Route, index: usize, method: &str, scheme: Scheme) -> Result<RouteMatch, Miss> {
    if !route.methods.contains(method) {
        return Err(Miss::MethodNotAccepted { route: index });
    }
    let https_redirect = match scheme {
        Scheme::Https if !route.protocols.https => {
            return Err(Miss::ProtocolNotAccepted { route: index })
        }
        Scheme::Http if !route.protocols.http || route.https_redirect => {
            if !route.https_redirect {
                return Err(Miss::ProtocolNotAccepted { route: index });
            }
            true
        }
        _ => false,
    };
    Ok(RouteMatch {
        route: index,
        https_redirect,
    })
}

/// Lower-cases an ASCII host into `buffer`; `None` if it is too long or not ASCII.
fn lowercase_into<'b>(host: &str, buffer: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let bytes = host.as_bytes();
    if bytes.len() > MAX_HOST || !host.is_ascii() {
        return None;
    }
    let out = &mut buffer[..bytes.len()];
    for (to, from) in out.iter_mut().zip(bytes) {
        *to = from.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}
