//! The facts about a request that routing and rules look at, borrowed from the request
//! (the proxy) or from the command line (`portico explain`): one view, one code path.

use std::borrow::Cow;
use std::net::IpAddr;

use http::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The host, normalised (`normalise_host`: lower-case, it may carry a port).
    pub host: &'a str,
    pub path: &'a str,
    /// The query string without `?`, if any.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub client_ip: Option<IpAddr>,
    pub scheme: Scheme,
    /// The name of the listener the request came in on (`None`: an unnamed listener).
    pub listener: Option<&'a str>,
}

impl RequestFacts<'_> {
    /// The host without its port.
    pub fn host_name(&self) -> &str {
        strip_port(self.host)
    }

    /// Whether this is an RFC 6455 opening handshake; see [`is_websocket_upgrade`].
    pub fn is_websocket_upgrade(&self) -> bool {
        is_websocket_upgrade(self.method, self.headers)
    }

    /// The value of query parameter `name` (undecoded), if present.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }
}

/// `host:port`, `[v6]:port` or `host` to the host alone.
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    // Bytes, not a `char` pattern: the search for one ASCII byte is cheaper so.
    match host.bytes().rposition(|b| b == b':') {
        Some(colon) if host.as_bytes()[colon + 1..].iter().all(u8::is_ascii_digit) => {
            &host[..colon]
        }
        _ => host,
    }
}

/// Why a `Host` (or an absolute-form authority) was refused; the edge's 400 says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHost {
    Empty,
    NotText,
    BadName,
    BadPort,
    BadAddress,
    TooLong,
}

impl BadHost {
    pub fn reason(self) -> &'static str {
        match self {
            BadHost::Empty => "the Host is empty",
            BadHost::NotText => "the Host is not visible ASCII",
            BadHost::BadName => {
                "the Host is not a host name (letters, digits, '-', '_' and dots between labels)"
            }
            BadHost::BadPort => "the Host's port is not a number from 1 to 65535",
            BadHost::BadAddress => "the Host's bracketed address is not an IPv6 address",
            BadHost::TooLong => "the Host is longer than a DNS name may be",
        }
    }
}

/// Longest host name DNS allows (without a trailing dot).
pub const MAX_HOST_NAME: usize = 253;

/// Checks and normalises a `Host` value: `name[:port]` or `[v6]:port`, returned as
/// `name[:port]` with the name lower-cased, one trailing dot removed and an IPv6 literal in
/// its canonical text (`[2001:db8::1]`). Anything else is refused: the cache key and the
/// headers forwarded upstream are built from this value, never from the raw bytes.
///
/// A name is a DNS-style reg-name (RFC 3986 §3.2.2 narrowed to what DNS and IPv4 literals
/// use): labels of letters, digits, `-` and `_`, 1–63 bytes each, 253 bytes in all. The
/// port, when present, must be 1–65535 without a sign. Borrows `raw` when it is already
/// normal (the common case), so no allocation.
pub fn normalise_host(raw: &[u8]) -> Result<Cow<'_, str>, BadHost> {
    if host_is_normal(raw) {
        // The common case, in one pass: ASCII, so UTF-8.
        return std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(|_| BadHost::NotText);
    }
    normalise_host_in_full(raw)
}

/// [`normalise_host`] without its one-pass shortcut for a host already normal.
fn normalise_host_in_full(raw: &[u8]) -> Result<Cow<'_, str>, BadHost> {
    if raw.is_empty() {
        return Err(BadHost::Empty);
    }
    if !raw.iter().all(|b| b.is_ascii_graphic()) {
        return Err(BadHost::NotText);
    }
    // Visible ASCII is UTF-8.
    let text = std::str::from_utf8(raw).map_err(|_| BadHost::NotText)?;
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (address, after) = rest.split_once(']').ok_or(BadHost::BadAddress)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(BadHost::BadPort)?),
        };
        let ip: std::net::Ipv6Addr = address.parse().map_err(|_| BadHost::BadAddress)?;
        if let Some(port) = port {
            check_port(port)?;
        }
        let canonical = ip.to_string();
        if canonical == address {
            return Ok(Cow::Borrowed(text));
        }
        let mut out = String::with_capacity(canonical.len() + 8);
        out.push('[');
        out.push_str(&canonical);
        out.push(']');
        if let Some(port) = port {
            out.push(':');
            out.push_str(port);
        }
        return Ok(Cow::Owned(out));
    } else {
        match text.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        }
    };
    if let Some(port) = port {
        check_port(port)?;
    }
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.len() > MAX_HOST_NAME {
        return Err(BadHost::TooLong);
    }
    let has_upper = check_labels(trimmed.as_bytes()).ok_or(BadHost::BadName)?;
    if trimmed.len() == name.len() && !has_upper {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    out.extend(trimmed.chars().map(|c| c.to_ascii_lowercase()));
    if let Some(port) = port {
        out.push(':');
        out.push_str(port);
    }
    Ok(Cow::Owned(out))
}

/// Whether `raw` is a host `normalise_host` would return as it is: a lower-case reg-name
/// with valid labels, no trailing dot, and an optional port of 1–65535. In one pass over
/// the bytes, with no UTF-8 check (the bytes it takes are ASCII): the check every request
/// with an ordinary `Host` takes. `false` says only "take the full check".
fn host_is_normal(raw: &[u8]) -> bool {
    let (mut label, mut at) = (0usize, 0usize);
    while at < raw.len() {
        match raw[at] {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label += 1,
            b'.' if (1..=63).contains(&label) => label = 0,
            b':' => break,
            _ => return false,
        }
        at += 1;
    }
    if !(1..=63).contains(&label) || at > MAX_HOST_NAME {
        return false;
    }
    let Some(port) = raw.get(at + 1..) else {
        return true; // no port
    };
    let mut value = 0u32;
    for &b in port {
        if !b.is_ascii_digit() {
            return false;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    (1..=5).contains(&port.len()) && (1..=65535).contains(&value)
}

/// Whether every dot-separated label of `name` has 1 to 63 letters, digits, `-` or `_`
/// (`None` if not), and then whether any letter is upper case; in one pass (every request).
fn check_labels(name: &[u8]) -> Option<bool> {
    let (mut label, mut has_upper) = (0usize, false);
    for &b in name {
        match b {
            b'.' if (1..=63).contains(&label) => label = 0,
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label += 1,
            b'A'..=b'Z' => (label, has_upper) = (label + 1, true),
            _ => return None,
        }
    }
    (1..=63).contains(&label).then_some(has_upper)
}

fn check_port(port: &str) -> Result<(), BadHost> {
    let digits = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u32>() {
        Ok(1..=65535) if digits => Ok(()),
        _ => Err(BadHost::BadPort),
    }
}

/// The name part of a normalised host (`[v6]` keeps its brackets): what the cache key and
/// `X-Forwarded-Host` carry. The port is dropped from both (see the README, "Cache key").
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.bytes().position(|b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

/// RFC 6455 §4.1: a GET whose `Connection` lists the token `upgrade` and whose `Upgrade`
/// lists `websocket`; case-insensitive, token-list aware, over every header line.
///
/// The one definition used by the proxy, `explain` and `check`.
pub fn is_websocket_upgrade(method: &str, headers: &HeaderMap) -> bool {
    method.eq_ignore_ascii_case("GET")
        && header_has_token(headers, http::header::CONNECTION, "upgrade")
        && header_has_token(headers, http::header::UPGRADE, "websocket")
}

/// Whether any `name` header line lists `token` (comma-separated, case-insensitive).
/// `Upgrade` tokens may carry a version (`websocket/13`), which is ignored.
pub fn header_has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',').any(|item| {
                let item = item.trim();
                let item = item.split('/').next().unwrap_or(item).trim();
                item.eq_ignore_ascii_case(token)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn upgrade_needs_get_connection_token_and_websocket() {
        let ok = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert!(is_websocket_upgrade("GET", &ok));
        assert!(!is_websocket_upgrade("POST", &ok));
        assert!(!is_websocket_upgrade(
            "GET",
            &headers(&[("upgrade", "websocket")])
        ));
        assert!(!is_websocket_upgrade(
            "GET",
            &headers(&[("connection", "upgrade"), ("upgrade", "h2c")])
        ));
        // "upgraded" is not the token "upgrade".
        assert!(!is_websocket_upgrade(
            "GET",
            &headers(&[("connection", "upgraded"), ("upgrade", "websocket")])
        ));
    }

    #[test]
    fn upgrade_reads_every_header_line() {
        let split = headers(&[
            ("connection", "keep-alive"),
            ("connection", "upgrade"),
            ("upgrade", "h2c, websocket/13"),
        ]);
        assert!(is_websocket_upgrade("get", &split));
    }

    #[test]
    fn hosts_are_normalised_or_refused() {
        let ok = |raw: &str| normalise_host(raw.as_bytes()).map(|h| h.into_owned());
        assert_eq!(ok("t.example"), Ok("t.example".into()));
        assert!(matches!(
            normalise_host(b"t.example:8080"),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(ok("T.Example:8080"), Ok("t.example:8080".into()));
        assert_eq!(ok("t.example."), Ok("t.example".into()));
        assert_eq!(ok("127.0.0.1:1"), Ok("127.0.0.1:1".into()));
        assert_eq!(ok("[::1]:8080"), Ok("[::1]:8080".into()));
        assert_eq!(ok("[2001:DB8:0::1]"), Ok("[2001:db8::1]".into()));
        assert_eq!(ok("_srv.example"), Ok("_srv.example".into()));
        for (raw, why) in [
            ("", BadHost::Empty),
            ("a b", BadHost::NotText),
            ("t.example\u{e9}", BadHost::NotText),
            ("t.example:", BadHost::BadPort),
            ("t.example:0", BadHost::BadPort),
            ("t.example:65536", BadHost::BadPort),
            ("t.example:+80", BadHost::BadPort),
            ("t.example:80:80", BadHost::BadPort),
            ("t..example", BadHost::BadName),
            ("t.example..", BadHost::BadName),
            (".", BadHost::BadName),
            (".t.example", BadHost::BadName),
            ("t.example/x", BadHost::BadName),
            ("t%2eexample", BadHost::BadName),
            ("[::1", BadHost::BadAddress),
            ("[nope]:80", BadHost::BadAddress),
            ("[::1]80", BadHost::BadPort),
        ] {
            assert_eq!(ok(raw), Err(why), "{raw:?}");
        }
        assert_eq!(ok(&"a".repeat(64)), Err(BadHost::BadName));
        assert_eq!(ok(&"A".repeat(63)), Ok("a".repeat(63)));
        assert_eq!(ok("x.Y-z_1"), Ok("x.y-z_1".into()));
        let long = vec!["a".repeat(60); 5].join(".");
        assert_eq!(ok(&long), Err(BadHost::TooLong));
    }

    #[test]
    fn a_host_said_normal_is_returned_as_it_is() {
        let long = vec!["a".repeat(60); 5].join(".");
        let edge = vec!["a".repeat(63); 4].join(".")[..253].to_string();
        let normal = [
            "t.example",
            "t.example:8080",
            "127.0.0.1:1",
            "_srv.example",
            "x.y-z_1",
            "a:65535",
            edge.as_str(),
        ];
        for raw in normal {
            assert!(host_is_normal(raw.as_bytes()), "{raw:?}");
            assert_eq!(
                normalise_host_in_full(raw.as_bytes()),
                Ok(Cow::Borrowed(raw)),
                "{raw:?}"
            );
        }
        // Each of these takes the full check, which refuses or rewrites it.
        let over = format!("{edge}a");
        let other = [
            "",
            "a b",
            "t.example\u{e9}",
            "t.example:",
            "t.example:0",
            "t.example:65536",
            "t.example:123456",
            "t.example:+80",
            "t.example:80:80",
            "t..example",
            ".",
            ".t.example",
            "t.example.",
            "t.example/x",
            "T.example",
            "[::1]:8080",
            ":80",
            long.as_str(),
            over.as_str(),
        ];
        for raw in other {
            assert!(!host_is_normal(raw.as_bytes()), "{raw:?}");
        }
        assert!(!host_is_normal(&"a".repeat(64).into_bytes()));
    }

    #[test]
    fn the_port_is_dropped_for_the_key() {
        assert_eq!(host_without_port("t.example:8080"), "t.example");
        assert_eq!(host_without_port("t.example"), "t.example");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
