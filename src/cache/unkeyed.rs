//! Request input the cache key does not cover, which an origin may still answer by: a
//! request that carries some neither reads nor fills the cache.
//!
//! The key is the routing decision (`cache::key`); `Vary` adds the fields an origin names.
//! Anything else an origin reads from a request can make its answer differ from the one
//! stored under the same key, and a client who sends it could have that answer stored for
//! everyone (cache poisoning, or "cache-poisoned denial of service" when the answer is an
//! error):
//!
//! - *content in a GET or HEAD* (RFC 9110 §9.3.1: it has no defined meaning, and an origin
//!   that reads it answers by it);
//! - *fields that override the method or the target*, which frameworks honour:
//!   `X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override` (a GET answered as a
//!   DELETE: a 404 or 405 stored for the page), `X-Original-URL`, `X-Rewrite-URL` (another
//!   page's answer stored for this one).
//!
//! Such a request goes to the origin as it came, and its answer is not stored
//! (`X-Cache: UNCACHEABLE`). Clients' claims about the connection (`X-Forwarded-Scheme`,
//! `X-Forwarded-Port` and the like) are not forwarded at all: see `proxy::headers`.

use http::{header, HeaderMap};

/// The fields that override a request's method or target, all `x-`.
const OVERRIDES: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// Why a request with `fields` may not use the cache, if it may not. `body_empty`: whether it has no
/// content, when its framing is not in its fields (HTTP/2: the stream's end); `None` for
/// HTTP/1, where `Content-Length` and `Transfer-Encoding` say (RFC 9112 §6.3).
pub fn unkeyed_input(fields: &HeaderMap, body_empty: Option<bool>) -> Option<&'static str> {
    if body_empty == Some(false) {
        return Some("request content");
    }
    // One pass over the request's few names (every request asks, hits included): a name
    // that does not start `x-` is done after two bytes, or two comparisons of known names.
    for name in fields.keys() {
        let text = name.as_str();
        if text.starts_with("x-") {
            if OVERRIDES.contains(&text) {
                return Some("method or target override");
            }
        } else if name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH
                && fields.get(name).is_some_and(|v| v.as_bytes() != b"0"))
        {
            return Some("request content");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::RequestHeader;

    fn request(fields: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/page", None).unwrap();
        for (name, value) in fields {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    #[test]
    fn overrides_in_any_case_keep_a_request_from_the_cache() {
        for name in OVERRIDES
            .iter()
            .chain(&["X-HTTP-Method-Override", "X-Original-URL"])
        {
            let overriding = request(&[("accept", "*/*"), (name, "DELETE")]);
            assert_eq!(
                unkeyed_input(&overriding.headers, None),
                Some("method or target override"),
                "{name}"
            );
        }
    }

    #[test]
    fn content_keeps_a_request_from_the_cache() {
        let content = Some("request content");
        assert_eq!(unkeyed_input(&request(&[]).headers, Some(false)), content);
        let sized = request(&[("content-length", "10")]);
        assert_eq!(unkeyed_input(&sized.headers, None), content);
        let chunked = request(&[("transfer-encoding", "chunked")]);
        assert_eq!(unkeyed_input(&chunked.headers, None), content);
    }

    #[test]
    fn ordinary_requests_use_the_cache() {
        let plain = request(&[
            ("host", "example.com"),
            ("accept", "*/*"),
            ("x-requested-with", "XMLHttpRequest"),
            ("x-http-method-overrides", "no such field"),
            ("content-length", "0"),
        ]);
        assert_eq!(unkeyed_input(&plain.headers, None), None);
        assert_eq!(unkeyed_input(&plain.headers, Some(true)), None);
    }
}
