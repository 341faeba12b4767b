//! Header handling: what the edge adds on the way to the origin and back, and the rule
//! sets' header edits.

use http::header::{HeaderName, HeaderValue};
use std::io::Write;

use pingora_error::{ErrorType::InvalidHTTPHeader, OrErr, Result};
use pingora_http::{KnownHeaderName, RequestHeader, ResponseHeader};

use crate::cache::header::write_field;
use crate::config::model::{Action, HeaderAction, HeaderEdit};

use super::ctx::RequestCtx;

pub const REQUEST_ID: &str = "x-portico-ref";
pub const X_CACHE: &str = "x-cache";

// The names the edge adds on every request, checked once at compile time: an insert by a
// `&str` name checks its bytes each time.
static REQUEST_ID_NAME: KnownHeaderName = KnownHeaderName::lower(REQUEST_ID);
static X_CACHE_NAME: KnownHeaderName = KnownHeaderName::lower(X_CACHE);
static VIA: KnownHeaderName = KnownHeaderName::lower("via");
static X_FORWARDED_FOR: KnownHeaderName = KnownHeaderName::lower("x-forwarded-for");
static X_FORWARDED_PROTO: KnownHeaderName = KnownHeaderName::lower("x-forwarded-proto");
static X_FORWARDED_HOST: KnownHeaderName = KnownHeaderName::lower("x-forwarded-host");
static CDN_LOOP: KnownHeaderName = KnownHeaderName::lower("cdn-loop");

/// This node's name as the forwarding headers carry it, built once: most requests arrive
/// without `Via` or `CDN-Loop`, and then these values go in without a copy.
pub struct NodeHeaders {
    pub name: String,
    via: HeaderValue,
    cdn_loop: HeaderValue,
}

impl NodeHeaders {
    /// `name` was validated as a token (letters, digits, `-`, `_`, `.`).
    pub fn new(name: &str) -> Result<NodeHeaders> {
        let value = |text: String| {
            HeaderValue::from_str(&text).or_err(InvalidHTTPHeader, "node name in a header")
        };
        Ok(NodeHeaders {
            name: name.to_owned(),
            via: value(format!("1.1 {name}"))?,
            cdn_loop: value(name.to_owned())?,
        })
    }
}

/// A client's own claims about where it comes from and how it reached the edge. An origin
/// that believes them builds its answer on them (a redirect to the scheme or port claimed,
/// links under the prefix claimed), and that answer would be stored for everyone under a
/// key that does not hold them: so none is passed on from a client the node does not trust
/// (`trusted_proxies`); the edge says what it knows in `X-Forwarded-For`/`-Proto`/`-Host`.
/// Every `X-Forwarded…` field is one (the edge owns that namespace), and so are these:
/// the host a request was for (`X-Original-Host`, `X-HTTP-Host-Override`, which some
/// frameworks and IIS's ARR read as the host) and the client's address under the names
/// origins read it by (Rails reads `X-Client-IP`, CDNs write `True-Client-IP`).
const CLAIMS: [&str; 12] = [
    "forwarded",
    "forwarded-for",
    "forwarded-host",
    "front-end-https",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-host",
    "x-http-host-override",
    "x-original-host",
    "x-real-ip",
    "x-url-scheme",
];

/// Whether a client the node does not trust may not pass a field named `name` on: a claim
/// ([`CLAIMS`]), or any name with `_`, which CGI-style origins (WSGI, PHP, Rack) read as
/// `-` (`X_Forwarded_Host` is their `X-Forwarded-Host`, out of the edge's sight; nginx and
/// Apache drop such fields too).
fn is_client_claim(name: &str) -> bool {
    name.contains('_')
        || (matches!(name.as_bytes().first(), Some(b'f' | b't' | b'x'))
            && (name.starts_with("x-forwarded") || CLAIMS.contains(&name)))
}

/// Whether `headers` has a field named in `names`. Most requests have none of the fields
/// this asks about: one pass over their few names costs less than a hashed lookup for each
/// name that finds nothing.
pub fn has_any_field(headers: &http::HeaderMap, names: &[HeaderName]) -> bool {
    headers.keys().any(|name| names.contains(name))
}

/// Every name the forwarding headers write or replace.
static WRITTEN_NAMES: [HeaderName; 6] = [
    http::header::VIA,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("cdn-loop"),
    HeaderName::from_static(REQUEST_ID),
];

/// Whether the forwarding headers write or replace `name`, or it is a client's claim.
/// Every request that goes upstream asks this of each of its fields, and most have none:
/// their names are set aside by their first letter (each written one starts `c`, `v` or
/// `x`) and a search for `_`, and only the rest compared.
fn is_forwarding_name(name: &HeaderName) -> bool {
    let text = name.as_str();
    is_client_claim(text)
        || (matches!(text.as_bytes().first(), Some(b'c' | b'v' | b'x'))
            && WRITTEN_NAMES.contains(name))
}

/// Forwarding headers for the origin: `Via`, `X-Forwarded-*`, `CDN-Loop` and the request id.
///
/// A request that has none of these fields (nor a client's claims), and whose rule sets
/// edit no request header after this, gets them as field lines written after its own
/// ([`RequestHeader::wire_fields_mut`], HTTP/1, which is how Portico talks to origins): the
/// same bytes, without six inserts into two header maps each. Any other request gets them
/// inserted, joined with or replacing what it has (`edits_follow`: an edit must see them).
pub fn add_forwarding_headers(
    upstream: &mut RequestHeader,
    ctx: &RequestCtx,
    node: &NodeHeaders,
    client_host: Option<HeaderValue>,
    edits_follow: bool,
) -> Result<()> {
    if !edits_follow && !upstream.headers.keys().any(is_forwarding_name) {
        write_forwarding_fields(upstream.wire_fields_mut(), ctx, node, client_host.as_ref());
        return Ok(());
    }
    insert_forwarding_headers(upstream, ctx, node, client_host)
}

/// The forwarding fields as field lines, in the order `insert_forwarding_headers` adds
/// them, for a request that has none of them.
fn write_forwarding_fields(
    out: &mut Vec<u8>,
    ctx: &RequestCtx,
    node: &NodeHeaders,
    client_host: Option<&HeaderValue>,
) {
    // Room for every line at once: grown line by line, the buffer was reallocated five
    // times a request. 48 bytes covers each line's name, separators and a short value.
    out.reserve(
        6 * 48 + node.via.len() + node.cdn_loop.len() + client_host.map_or(0, |host| host.len()),
    );
    let mut field = |name: &str, value: &[u8]| write_field(out, name.as_bytes(), value);
    field(VIA.case(), node.via.as_bytes());
    if let Some(ip) = ctx.client_ip.filter(|_| !ctx.tier.from_edge) {
        let mut text = [0u8; 64];
        field(X_FORWARDED_FOR.case(), format_ip(ip, &mut text));
    }
    field(X_FORWARDED_PROTO.case(), ctx.scheme.as_str().as_bytes());
    if let Some(host) = client_host {
        field(X_FORWARDED_HOST.case(), host.as_bytes());
    }
    field(CDN_LOOP.case(), node.cdn_loop.as_bytes());
    field(REQUEST_ID, ctx.request_id.as_bytes());
}

/// The forwarding headers inserted into `upstream`'s fields. Names are `KnownHeaderName`s
/// (neither parsed nor copied on insert, nor parsed for a lookup).
fn insert_forwarding_headers(
    upstream: &mut RequestHeader,
    ctx: &RequestCtx,
    node: &NodeHeaders,
    client_host: Option<HeaderValue>,
) -> Result<()> {
    append_list(upstream, &VIA, &node.via)?;
    if !ctx.forwarding_trusted && !ctx.tier.from_edge {
        // A client's own claims about where it comes from are not passed on: the origin
        // would take the first `X-Forwarded-For` entry for the client's address. (Most
        // requests have none: one pass over the request's few names finds any.)
        while let Some(name) = upstream
            .headers
            .keys()
            .find(|name| is_client_claim(name.as_str()))
            .cloned()
        {
            upstream.remove_header(&name);
        }
    }
    // From a trusted edge the client is already the list's last entry (`tier::hop`).
    if let Some(ip) = ctx.client_ip.filter(|_| !ctx.tier.from_edge) {
        let mut text = [0u8; 64];
        let value = HeaderValue::from_bytes(format_ip(ip, &mut text))
            .or_err(InvalidHTTPHeader, "client address in a header")?;
        append_list(upstream, &X_FORWARDED_FOR, &value)?;
    }
    let proto = HeaderValue::from_static(ctx.scheme.as_str());
    upstream.insert_header(&X_FORWARDED_PROTO, proto)?;
    if let Some(host) = client_host {
        upstream.insert_header(&X_FORWARDED_HOST, host)?;
    }
    append_list(upstream, &CDN_LOOP, &node.cdn_loop)?;
    upstream.insert_header(&REQUEST_ID_NAME, ctx.request_id.header_value())?;
    Ok(())
}

/// `ip` as text in `buf` (at most 45 bytes: IPv6 with an IPv4 tail). IPv4, the common case,
/// is written digit by digit: `fmt` costs about ten times as much, on every request.
fn format_ip(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    let std::net::IpAddr::V4(v4) = ip else {
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(cursor, "{ip}");
        let len = cursor.position() as usize;
        return &buf[..len];
    };
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            buf[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            buf[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        buf[len] = b'0' + octet % 10;
        len += 1;
    }
    &buf[..len]
}

/// `X-Forwarded-Host` (and a shield's `Host`): the normalised host without its port, exactly
/// the host the cache key used; `None` when the request named no host (HTTP/1.0).
pub fn forwarded_host(ctx: &RequestCtx) -> Result<Option<HeaderValue>> {
    let Some(host) = &ctx.host else {
        return Ok(None);
    };
    let full = host.as_bytes();
    let name = crate::rules::request::host_without_port(ctx.host()).as_bytes();
    if name.len() == full.len() {
        return Ok(Some(host.clone()));
    }
    HeaderValue::from_bytes(name)
        .or_err(InvalidHTTPHeader, "host in a header")
        .map(Some)
}

/// Adds `value` to a comma-separated list header, creating it if absent.
fn append_list(
    upstream: &mut RequestHeader,
    name: &KnownHeaderName,
    value: &HeaderValue,
) -> Result<()> {
    let joined = match upstream.headers.get(name.name()).map(HeaderValue::as_bytes) {
        Some(existing) if !existing.is_empty() => {
            let mut joined = Vec::with_capacity(existing.len() + 2 + value.len());
            joined.extend_from_slice(existing);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(value.as_bytes());
            HeaderValue::from_bytes(&joined).or_err(InvalidHTTPHeader, "joined list header")?
        }
        _ => value.clone(),
    };
    upstream.insert_header(name, joined)
}

/// The request id and `X-Cache` on every response to the client.
pub fn add_response_headers(response: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    response.insert_header(&REQUEST_ID_NAME, ctx.request_id.header_value())?;
    // `from_static`: the X-Cache values are constants, so no copy.
    response.insert_header(&X_CACHE_NAME, HeaderValue::from_static(ctx.cache_status))?;
    Ok(())
}

/// The header operations an edit needs, on either a request or a response header.
trait EditableHeader {
    fn delete(&mut self, name: &HeaderName);
    fn append(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<()>;
    fn overwrite(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<()>;
}

macro_rules! editable_header {
    ($type:ty) => {
        impl EditableHeader for $type {
            fn delete(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
            fn append(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<()> {
                self.append_header(name.clone(), value.clone()).map(|_| ())
            }
            fn overwrite(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<()> {
                self.insert_header(name.clone(), value.clone())
            }
        }
    };
}

editable_header!(RequestHeader);
editable_header!(ResponseHeader);

/// Applies the request-header edits of the rules that fired, in firing order.
pub fn edit_request<'a>(
    upstream: &mut RequestHeader,
    actions: impl Iterator<Item = &'a Action>,
) -> Result<()> {
    for action in actions {
        if let Action::ModifyRequestHeader(edit) = action {
            apply(edit, upstream)?;
        }
    }
    Ok(())
}

/// Applies the response-header edits of the rules that fired, in firing order.
pub fn edit_response<'a>(
    response: &mut ResponseHeader,
    actions: impl Iterator<Item = &'a Action>,
) -> Result<()> {
    for action in actions {
        if let Action::ModifyResponseHeader(edit) = action {
            apply(edit, response)?;
        }
    }
    Ok(())
}

fn apply(edit: &HeaderEdit, header: &mut impl EditableHeader) -> Result<()> {
    match (edit.action, &edit.value) {
        (HeaderAction::Delete, _) | (_, None) => {
            header.delete(&edit.name);
            Ok(())
        }
        (HeaderAction::Append, Some(value)) => header.append(&edit.name, value),
        (HeaderAction::Overwrite, Some(value)) => header.overwrite(&edit.name, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_forwarding_name_and_claim_is_recognised() {
        for name in &WRITTEN_NAMES {
            assert!(is_forwarding_name(name), "{name}");
        }
        let claims = CLAIMS.iter().chain(&[
            "x-forwarded-for",
            "x-forwarded-scheme",
            "x-forwarded-protocol",
            "x-forwarded-uri",
            "x_forwarded_host",
            "x_http_method_override",
            "accept_language",
        ]);
        for claim in claims {
            assert!(is_client_claim(claim), "{claim}");
            assert!(
                is_forwarding_name(&HeaderName::from_static(claim)),
                "{claim}"
            );
        }
        for name in ["host", "accept", "x-other", "cookie", "forwarding-notes"] {
            assert!(
                !is_forwarding_name(&HeaderName::from_static(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn client_addresses_are_written_as_std_writes_them() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "192.168.10.200",
            "::1",
            "2001:db8::ff00:42:8329",
            "::ffff:10.0.0.1",
        ] {
            let ip: std::net::IpAddr = text.parse().unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(format_ip(ip, &mut buf), ip.to_string().as_bytes(), "{text}");
        }
    }

    fn forwarded(existing: &[(&'static str, &'static str)], ip: &str) -> RequestHeader {
        forwarded_from(existing, ip, true)
    }

    /// `trusted`: the client is one of `trusted_proxies`.
    fn forwarded_from(
        existing: &[(&'static str, &'static str)],
        ip: &str,
        trusted: bool,
    ) -> RequestHeader {
        let mut upstream = RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in existing {
            upstream.append_header(*name, *value).unwrap();
        }
        let mut ctx = RequestCtx::new();
        ctx.client_ip = Some(ip.parse().unwrap());
        ctx.forwarding_trusted = trusted;
        let host = Some(HeaderValue::from_static("Shop.Example:8080"));
        // As if an edit followed: the fields go into the header, where these tests look.
        add_forwarding_headers(
            &mut upstream,
            &ctx,
            &NodeHeaders::new("edge-1").unwrap(),
            host,
            true,
        )
        .unwrap();
        upstream
    }

    /// A request as HTTP/1 writes it, with `existing` fields and the forwarding headers.
    fn wire_of(
        existing: &[(&'static str, &'static str)],
        ctx: &RequestCtx,
        host: Option<&'static str>,
        edits_follow: bool,
    ) -> (Vec<u8>, usize) {
        let mut upstream = RequestHeader::build("GET", b"/", None).unwrap();
        upstream.insert_header("host", "shop.example").unwrap();
        for (name, value) in existing {
            upstream.append_header(*name, *value).unwrap();
        }
        let host = host.map(HeaderValue::from_static);
        let node = NodeHeaders::new("edge-1").unwrap();
        add_forwarding_headers(&mut upstream, ctx, &node, host, edits_follow).unwrap();
        let mut wire = bytes::BytesMut::new();
        upstream.header_to_h1_wire(&mut wire);
        (wire.to_vec(), upstream.wire_fields().len())
    }

    /// Field lines (a request with no forwarding field, no edit after) are the bytes the
    /// inserted fields are written as; a request with one of them gets the inserts.
    #[test]
    fn field_lines_are_what_the_inserted_fields_would_be() {
        for (ip, host, https, from_edge) in [
            ("192.0.2.7", Some("shop.example"), false, false),
            ("2001:db8::ff00:42:8329", None, true, false),
            ("10.0.0.1", Some("shop.example"), true, true),
        ] {
            let mut ctx = RequestCtx::new();
            ctx.client_ip = Some(ip.parse().unwrap());
            ctx.tier.from_edge = from_edge;
            if https {
                ctx.scheme = crate::rules::Scheme::Https;
            }
            let (lines, written) = wire_of(&[], &ctx, host, false);
            let (inserted, none) = wire_of(&[], &ctx, host, true);
            assert!(written > 0 && none == 0, "{ip}");
            assert_eq!(
                String::from_utf8_lossy(&lines),
                String::from_utf8_lossy(&inserted),
                "{ip}"
            );
        }
        let ctx = RequestCtx::new();
        for existing in [("x-forwarded-for", "203.0.113.9"), ("Via", "1.1 cdn")] {
            let (wire, written) = wire_of(&[existing], &ctx, None, false);
            assert_eq!(written, 0, "{existing:?}");
            assert_eq!(wire, wire_of(&[existing], &ctx, None, true).0);
        }
    }

    #[test]
    fn a_first_hop_starts_each_list() {
        let upstream = forwarded(&[], "192.0.2.7");
        assert_eq!(upstream.headers["via"], "1.1 edge-1");
        assert_eq!(upstream.headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(upstream.headers["x-forwarded-proto"], "http");
        assert_eq!(upstream.headers["x-forwarded-host"], "Shop.Example:8080");
        assert_eq!(upstream.headers["cdn-loop"], "edge-1");
        assert_eq!(upstream.headers[REQUEST_ID].len(), 24);
    }

    #[test]
    fn later_hops_append_to_the_lists() {
        let upstream = forwarded(
            &[
                ("via", "1.0 corp-proxy"),
                ("x-forwarded-for", "198.51.100.1"),
                ("cdn-loop", "other-cdn"),
            ],
            "2001:db8::ffff:192.0.2.1",
        );
        assert_eq!(upstream.headers["via"], "1.0 corp-proxy, 1.1 edge-1");
        assert_eq!(
            upstream.headers["x-forwarded-for"],
            "198.51.100.1, 2001:db8::ffff:c000:201"
        );
        assert_eq!(upstream.headers["cdn-loop"], "other-cdn, edge-1");
        // One line each: the lists were rewritten, not repeated.
        assert_eq!(upstream.headers.get_all("via").iter().count(), 1);
    }

    #[test]
    fn a_clients_own_forwarding_headers_are_replaced_unless_it_is_a_trusted_proxy() {
        let claims = [
            ("x-forwarded-for", "203.0.113.66"),
            ("forwarded", "for=203.0.113.66"),
            ("x-real-ip", "203.0.113.66"),
        ];
        let upstream = forwarded_from(&claims, "192.0.2.7", false);
        assert_eq!(upstream.headers["x-forwarded-for"], "192.0.2.7");
        assert!(upstream.headers.get("forwarded").is_none());
        assert!(upstream.headers.get("x-real-ip").is_none());
        let upstream = forwarded_from(&claims, "192.0.2.7", true);
        assert_eq!(
            upstream.headers["x-forwarded-for"],
            "203.0.113.66, 192.0.2.7"
        );
        assert_eq!(upstream.headers["x-real-ip"], "203.0.113.66");
    }
}
