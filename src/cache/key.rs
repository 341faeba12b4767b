//! The cache key: what decides the response, so that no client can put its variant under
//! another's key (SPEC §4, issue 15).
//!
//! The key's hash (what the store, the cache lock and the shield ring use) is built from the
//! routing decision, never from raw request bytes:
//!
//! - the route, by name (its listener scope comes with it: one node may serve different
//!   sites on different listeners);
//! - the origin group, by name, after any `route_override`;
//! - the upstream path: the route's `origin_path` + the path after `url_rewrite`s;
//! - the query-string mode's view of the query (`ignore`, `use_all`, `include`, `exclude`);
//! - the scheme, when it picks the origin's port (`forwarding_protocol: match_request`);
//! - the normalised host: lower-cased, one trailing dot dropped, IPv6 in canonical form,
//!   **without its port**. The edge forwards exactly that host as `X-Forwarded-Host` (and to
//!   a shield as `Host`), so an origin never sees a port or a spelling the key ignored. A
//!   `Host` that is not a valid name or address is refused with 400 before routing.
//!
//! Names, not indexes, go into the hash: a shield running the same `rules/` derives the same
//! key, and a reload that keeps a route keeps its objects. Each part is length-prefixed so
//! that no two decisions frame to the same bytes. The parts are fed to the hasher one by
//! one: no key string is built for the hash.
//!
//! Besides the hash, each object keeps a readable label, `host` + the client's path + the
//! query view (e.g. `shop.example/a.css?v=2`): `POST /purge` matches domains and paths
//! against it, as clients name them.

use std::fmt::Write;

use pingora_cache::key::HashBinary;

use crate::config::model::{ForwardingProtocol, QueryStringMode};
use crate::rules::path::escaped_byte;
use crate::rules::{Decision, Engine, Scheme};

/// Bumped whenever the framing changes, so old and new keys never meet.
const KEY_VERSION: &[u8] = b"portico-key/2\0";

/// What the key hash reads: gathered on the stack and hashed in one call (a hasher's
/// `update` costs more than the copy for the dozen small pieces of a key), or streamed
/// once a long key outgrows the buffer.
struct KeyInput {
    buffer: [u8; 256],
    len: usize,
    stream: Option<blake2b_simd::State>,
}

impl KeyInput {
    fn new() -> KeyInput {
        KeyInput {
            buffer: [0; 256],
            len: 0,
            stream: None,
        }
    }

    fn params() -> blake2b_simd::Params {
        let mut params = blake2b_simd::Params::new();
        params.hash_length(16);
        params
    }

    /// Inlined: a key's dozen pieces are each a few bytes, and a call per piece cost more
    /// than its copy (43 instructions a piece, 14 pieces a request).
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.buffer.get_mut(self.len..end) {
            Some(room) if self.stream.is_none() => {
                room.copy_from_slice(bytes);
                self.len = end;
            }
            _ => self.put_streamed(bytes),
        }
    }

    /// A length prefix: [`KeyInput::put`] inlined with a fixed size, so one store.
    #[inline(always)]
    fn put_len(&mut self, len: usize) {
        self.put(&(len as u64).to_le_bytes());
    }

    /// Past the buffer: everything so far and from now on goes through the hasher.
    #[cold]
    #[inline(never)]
    fn put_streamed(&mut self, bytes: &[u8]) {
        let stream = self.stream.get_or_insert_with(|| {
            let mut stream = Self::params().to_state();
            stream.update(&self.buffer[..self.len]);
            stream
        });
        stream.update(bytes);
    }

    fn finish(self) -> HashBinary {
        let hash = match self.stream {
            Some(stream) => stream.finalize(),
            None => Self::params().hash(&self.buffer[..self.len]),
        };
        let mut out = HashBinary::default();
        out.copy_from_slice(hash.as_bytes());
        out
    }
}

/// The parts of one request's cache key, borrowed from the decision and the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyParts<'a> {
    /// Normalised host without its port (`rules::request::host_without_port`).
    pub host: &'a str,
    pub route: &'a str,
    /// The route's listener scope (empty: every listener).
    pub listeners: &'a [String],
    pub origin_group: &'a str,
    /// `Some` only when the request's scheme picks the origin's port (`match_request`).
    pub scheme: Option<Scheme>,
    /// The route's `origin_path`, or `""`.
    pub origin_path: &'a str,
    /// The path after rewrites (the client's when no rewrite fired).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub mode: &'a QueryStringMode,
}

impl<'a> KeyParts<'a> {
    /// The key of `decision` for a request to `host` (normalised, without port) with the
    /// client's `path` and `query`, received over `scheme`.
    pub fn new(
        engine: &'a Engine,
        decision: &'a Decision,
        host: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        scheme: Scheme,
    ) -> KeyParts<'a> {
        let route = engine.route(decision.route);
        KeyParts {
            host,
            route: &route.name,
            listeners: &route.listeners,
            origin_group: &engine.config.origin_groups[decision.origin_group].name,
            scheme: (route.forwarding_protocol == ForwardingProtocol::MatchRequest)
                .then_some(scheme),
            origin_path: route.origin_path.as_deref().unwrap_or(""),
            path: decision.rewritten_path.as_deref().unwrap_or(path),
            query,
            mode: engine.query_string(decision),
        }
    }

    /// The key's hash: what the store, the cache lock and the shield ring see.
    /// BLAKE2b with a 16-byte digest (`blake2b_simd`: its AVX2 compression where the CPU
    /// has it), the same bytes as any BLAKE2b-128: edges and shields must agree.
    pub fn hash(&self) -> HashBinary {
        let mut input = KeyInput::new();
        input.put(KEY_VERSION);
        for field in [
            self.host,
            self.route,
            self.origin_group,
            self.scheme.map_or("", Scheme::as_str),
        ] {
            input.put_len(field.len());
            input.put(field.as_bytes());
        }
        input.put_len(self.origin_path.len() + self.path.len());
        input.put(self.origin_path.as_bytes());
        input.put(self.path.as_bytes());
        input.put_len(8);
        input.put_len(self.listeners.len());
        for listener in self.listeners {
            input.put_len(listener.len());
            input.put(listener.as_bytes());
        }
        // Last, so it needs no length: the query view, piece by piece.
        for_query_view(self.query, self.mode, |piece| input.put(piece.as_bytes()));
        input.finish()
    }

    /// The upstream path and query view as one line (for `explain`).
    pub fn upstream_target(&self) -> String {
        let mut out = format!("{}{}", self.origin_path, self.path);
        for_query_view(self.query, self.mode, |piece| out.push_str(piece));
        out
    }

    /// The parts as `portico explain` prints them.
    pub fn describe(&self) -> String {
        let scope = if self.listeners.is_empty() {
            "every listener".to_string()
        } else {
            format!("listeners [{}]", self.listeners.join(", "))
        };
        let mut out = String::new();
        let _ = write!(
            out,
            "host {} | route {} ({scope}) | origin group {} | scheme {} | upstream {}",
            self.host,
            self.route,
            self.origin_group,
            self.scheme
                .map_or("any (forwarding_protocol fixes it)", Scheme::as_str),
            self.upstream_target(),
        );
        out
    }
}

/// Calls `piece` with `?`, `&` and the query pairs the mode keeps, in request order.
fn for_query_view(query: Option<&str>, mode: &QueryStringMode, mut piece: impl FnMut(&str)) {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return;
    };
    match mode {
        QueryStringMode::Ignore => {}
        QueryStringMode::UseAll => {
            piece("?");
            piece(query);
        }
        QueryStringMode::Include(names) | QueryStringMode::Exclude(names) => {
            let include = matches!(mode, QueryStringMode::Include(_));
            let mut first = true;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                if pair_is_keyed(pair, names, include) {
                    piece(if first { "?" } else { "&" });
                    piece(pair);
                    first = false;
                }
            }
        }
    }
}

/// Whether one `&`-separated pair goes into the key, its names read as any origin might
/// read them: percent-decoded (`+` a space) before or after the split, split at `;` too
/// (older form parsers, Rack's among them), and trimmed (PHP drops leading spaces).
/// `include` keys the pair when any of those names is listed, in any ASCII case;
/// `exclude` leaves it out only when every one is listed exactly. So no spelling gets a
/// parameter that matters past the key: `?utm=1;callback=x` under `exclude: [utm]`,
/// `?a%3Bid=x` and `?+id=x` under `include: [id]` are keyed whole.
fn pair_is_keyed(pair: &str, names: &[String], include: bool) -> bool {
    let decoded = if pair.contains(['%', '+']) {
        std::borrow::Cow::Owned(percent_decoded(pair))
    } else {
        std::borrow::Cow::Borrowed(pair)
    };
    let mut candidates = decoded
        .split(['&', ';'])
        .filter(|part| !part.is_empty())
        .map(|part| part.split('=').next().unwrap_or(part).trim_ascii());
    if include {
        candidates.any(|name| names.iter().any(|n| name.eq_ignore_ascii_case(n)))
    } else {
        !candidates.all(|name| names.iter().any(|n| name == n))
    }
}

/// `text` percent-decoded, `+` as a space (a bad escape stays as it is; bytes that are no
/// UTF-8 become U+FFFD, which no listed name holds).
fn percent_decoded(text: &str) -> String {
    let raw = text.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let (byte, width) = match (escaped_byte(raw, i), raw[i]) {
            (Some(decoded), _) => (decoded, 3),
            (None, b'+') => (b' ', 1),
            (None, other) => (other, 1),
        };
        out.push(byte);
        i += width;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes an object's label (`host` + client path + query view) into `out`, cleared first.
/// `host` is the normalised host; its port, if any, is left out.
pub fn write_cache_key(
    out: &mut String,
    host: &str,
    path: &str,
    query: Option<&str>,
    mode: &QueryStringMode,
) {
    out.clear();
    out.push_str(crate::rules::request::host_without_port(host));
    out.push_str(path);
    for_query_view(query, mode, |piece| out.push_str(piece));
}

/// An object's label as a new string (for `explain` and tests). The host is lower-cased
/// here, for callers that pass it as typed.
pub fn cache_key(host: &str, path: &str, query: Option<&str>, mode: &QueryStringMode) -> String {
    let mut out = String::with_capacity(host.len() + path.len() + query.map_or(0, str::len) + 1);
    write_cache_key(&mut out, &host.to_ascii_lowercase(), path, query, mode);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BLAKE2b-128 (RustCrypto's) over the framing `KeyParts::hash` uses, written out.
    fn reference_hash(parts: &KeyParts) -> HashBinary {
        use blake2::Digest;
        let mut reference = blake2::Blake2b::<blake2::digest::consts::U16>::new();
        reference.update(KEY_VERSION);
        let scheme = parts.scheme.map_or("", Scheme::as_str);
        let path = format!("{}{}", parts.origin_path, parts.path);
        for field in [parts.host, parts.route, parts.origin_group, scheme, &path] {
            reference.update((field.len() as u64).to_le_bytes());
            reference.update(field);
        }
        reference.update(8u64.to_le_bytes());
        reference.update((parts.listeners.len() as u64).to_le_bytes());
        for listener in parts.listeners {
            reference.update((listener.len() as u64).to_le_bytes());
            reference.update(listener);
        }
        for_query_view(parts.query, parts.mode, |piece| reference.update(piece));
        reference.finalize().into()
    }

    /// The key's hash is BLAKE2b-128 over the framed parts, byte for byte as before the
    /// hash moved to `blake2b_simd`: shields and edges of different builds must agree.
    /// Short keys are hashed from a stack buffer, long ones streamed.
    #[test]
    fn the_hash_is_blake2b_128_of_the_framed_parts() {
        let listeners = ["public".to_string()];
        let mode = QueryStringMode::UseAll;
        let parts = KeyParts {
            host: "shop.example",
            route: "site",
            listeners: &listeners,
            origin_group: "web",
            scheme: Some(Scheme::Https),
            origin_path: "/v2",
            path: "/a/b",
            query: Some("x=1&y=2"),
            mode: &mode,
        };
        assert_eq!(parts.hash(), reference_hash(&parts));
        for path in ["/".repeat(180), "/".repeat(190), "/".repeat(400)] {
            let long = KeyParts {
                path: &path,
                ..parts
            };
            assert_eq!(long.hash(), reference_hash(&long), "{}", path.len());
        }
        let bare = KeyParts {
            listeners: &[],
            scheme: None,
            query: None,
            ..parts
        };
        assert_eq!(bare.hash(), reference_hash(&bare));
    }

    #[test]
    fn host_is_normalised() {
        let mode = QueryStringMode::UseAll;
        assert_eq!(
            cache_key("Example.COM:8080", "/a", None, &mode),
            cache_key("example.com", "/a", None, &mode)
        );
    }

    #[test]
    fn no_spelling_of_a_parameter_gets_past_the_key() {
        let view = |q: &str, mode: &QueryStringMode| cache_key("h", "/p", Some(q), mode);
        let include = QueryStringMode::Include(vec!["a".into()]);
        // Included names decoded and in any case: `%61`, `A` and `a+` are keyed.
        assert_eq!(view("%61=evil&b=1", &include), "h/p?%61=evil");
        assert_eq!(view("A=evil&b=1", &include), "h/p?A=evil");
        assert_eq!(view("b=1&%41=x", &include), "h/p?%41=x");
        // A pair whose `;` part is included is keyed whole, as is one an origin that does
        // not split on `;` reads as `a`.
        assert_eq!(view("b=1;a=evil&c=2", &include), "h/p?b=1;a=evil");
        assert_eq!(view("a=1;b=2", &include), "h/p?a=1;b=2");
        assert_eq!(view("ab=1&a%2=2", &include), "h/p");
        let exclude = QueryStringMode::Exclude(vec!["utm".into()]);
        // Left out only when every name in the pair is excluded, decoded, in its case.
        assert_eq!(view("utm=1&a=2", &exclude), "h/p?a=2");
        assert_eq!(view("%75tm=1&a=2", &exclude), "h/p?a=2");
        assert_eq!(
            view("utm=1;callback=evil", &exclude),
            "h/p?utm=1;callback=evil"
        );
        assert_eq!(view("UTM=1", &exclude), "h/p?UTM=1");
        assert_eq!(view("utm;utm=2", &exclude), "h/p");
    }

    #[test]
    fn names_are_read_decoded_resplit_and_trimmed() {
        assert_eq!(percent_decoded("a%20b+c%7E%7%zz"), "a b c~%7%zz");
        let id = ["id".to_string()];
        for keyed in [
            "id=1", "ID=1", "%69d=1", "+id=1", "%20id=1", "a%3Bid=1", "x%26id=1", "id%3d1",
        ] {
            assert!(pair_is_keyed(keyed, &id, true), "{keyed}");
        }
        for other in ["idx=1", "i_d=1", "a=id"] {
            assert!(!pair_is_keyed(other, &id, true), "{other}");
        }
        let utm = ["utm".to_string()];
        assert!(!pair_is_keyed("utm=1", &utm, false));
        assert!(!pair_is_keyed("%75tm=1", &utm, false));
        for keyed in ["utm=1;a=2", "utm=x%26id=1", "UTM=1", "utm2=1"] {
            assert!(pair_is_keyed(keyed, &utm, false), "{keyed}");
        }
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
