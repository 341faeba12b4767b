//! The facts about a request that routing and rules look at, borrowed from the request
//! (the proxy) or from the command line (`portico explain`): one view, one code path.

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
    /// The `Host` as received (it may carry a port).
    pub host: &'a str,
    pub path: &'a str,
    /// The query string without `?`, if any.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub client_ip: Option<IpAddr>,
    pub scheme: Scheme,
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
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
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
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
