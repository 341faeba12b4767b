//! Requests refused on their head alone, before anything else looks at them: sizes past
//! `limits:`, methods the edge does not implement, framing it will not forward; and an
//! HTTP/2 request's place in the connection caps ([`origin_place`]).
//!
//! Statuses follow RFC 9110: `414` for a target over `max_uri`, `431` for too many header
//! lines (and, from [`crate::connection`], a head over `max_request_head`), `400` for a
//! method that is too long to be one, `501` for a method or a transfer coding the edge
//! does not implement (§9.1: an unrecognised method is 501; methods are case-sensitive, so
//! `get` is not `GET`; `TRACE` is recognised but deliberately not implemented: it would
//! echo the client's cookies and credentials back through the edge).

use std::sync::Arc;

use bytes::Bytes;
use pingora_core::protocols::http::v2::server::BodyBudget;
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::respond::EdgeAnswer;
use super::RequestCtx;
use crate::config::model::ClientLimits;
use crate::connection::{ConnectionCaps, HeadLimit};

/// The error type (and `X-Portico-Error`) of an HTTP/2 request refused a place in the
/// connection caps ([`origin_place`]).
pub const OVER_CONNECTION_CAP: &str = "over-connection-cap";

/// `upstream_peer`, for an HTTP/2 request: a place in the connection caps for as long as it
/// goes to the origin. An HTTP/1 connection's place stands for its own descriptor and the
/// one origin connection it uses at a time (the node's cap is half the descriptors); each
/// stream of an HTTP/2 connection needs an origin connection of its own, so each takes a
/// place as a connection does. Without it one address with 256 connections of 100 streams
/// held 25,600 origin sockets (past the descriptor limit: `EMFILE` for every client and
/// probe), and each stream whose client opens no flow-control window about 450 KB of
/// response until `send_timeout`. A request refused gets `503`, or a stale copy within
/// `stale-if-error`.
pub fn origin_place(
    session: &Session,
    ctx: &mut RequestCtx,
    caps: &Arc<ConnectionCaps>,
) -> pingora_error::Result<()> {
    if ctx.origin_place.is_some()
        || session.subrequest_ctx.is_some()
        || !session.downstream_session.is_http2()
    {
        return Ok(());
    }
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    match caps.admit(client) {
        Some(place) => {
            ctx.origin_place = Some(place);
            Ok(())
        }
        None => Error::e_explain(
            ErrorType::Custom(OVER_CONNECTION_CAP),
            "the edge holds as many connections as its caps allow, for this client address \
             or in all (limits.max_connections_per_client, limits.max_connections; an HTTP/2 \
             request on its way to the origin counts as one)",
        ),
    }
}

/// No standard method is longer (`UPDATEREDIRECTREF` is 17 bytes).
const MAX_METHOD_LEN: usize = 32;

/// The methods the edge implements. `CONNECT` never gets here: Pingora refuses it first
/// (405, worded by [`head_error`]).
const IMPLEMENTED: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT",
];

/// The refusal for `request`, if its head breaks a limit.
pub fn refusal(request: &RequestHeader, limits: &ClientLimits) -> Option<EdgeAnswer<'static>> {
    let method = request.method.as_str();
    if method.len() > MAX_METHOD_LEN {
        return Some(answer(
            400,
            "bad-method",
            format!("the method is longer than {MAX_METHOD_LEN} bytes"),
        ));
    }
    let target = request.raw_path().len();
    if target > limits.max_uri {
        return Some(answer(
            414,
            "uri-too-long",
            format!(
                "the request target is {target} bytes; this edge takes at most {}",
                limits.max_uri
            ),
        ));
    }
    let lines = request.headers.len();
    if lines > limits.max_headers {
        return Some(answer(
            431,
            "too-many-headers",
            format!(
                "the request has {lines} header fields; this edge takes at most {}",
                limits.max_headers
            ),
        ));
    }
    if !has_framing_fields(request) {
        return None;
    }
    framing_refusal(request, limits.max_request_body)
}

/// Whether `request` has a `Content-Length` or `Transfer-Encoding` field.
fn has_framing_fields(request: &RequestHeader) -> bool {
    const FRAMING: [http::HeaderName; 2] = [
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
    ];
    super::headers::has_any_field(&request.headers, &FRAMING)
}

/// RFC 9110 §8.6: a `Content-Length` that came as a list of one repeated value (`2, 2`) or
/// on several lines goes on as one value, so no origin that refuses the repetition, or
/// reads only one of the lines, sees it. Pingora has already refused values that disagree,
/// and [`refusal`] any that is not a number.
pub fn merge_content_length(request: &mut RequestHeader) {
    if !has_framing_fields(request) {
        return;
    }
    let mut values = request.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return;
    };
    if values.next().is_none() && !first.as_bytes().contains(&b',') {
        return;
    }
    let one = first
        .as_bytes()
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default();
    if let Ok(one) = http::HeaderValue::from_bytes(one.trim_ascii()) {
        let _ = request.insert_header(http::header::CONTENT_LENGTH, one);
    }
}

/// The refusal for a method the edge does not implement. Asked after a shield has served
/// its edges' `PURGE` (`tier::purge`), which no one else may send.
pub fn unimplemented_method(request: &RequestHeader) -> Option<EdgeAnswer<'static>> {
    let method = request.method.as_str();
    (!IMPLEMENTED.contains(&method)).then(|| {
        answer(
            501,
            "method-not-implemented",
            format!(
                "the method {method} is not implemented by this edge (methods are case-sensitive)"
            ),
        )
    })
}

/// Whether a message's `Transfer-Encoding` is absent or exactly `chunked` (one field line,
/// one coding, in any case): the only coding the edge implements, for requests and origins'
/// responses alike (`upstream::check_response`).
pub fn transfer_coding_is_chunked_or_none(headers: &http::HeaderMap) -> bool {
    let mut codings = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    match codings.next() {
        None => true,
        Some(first) => {
            first
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
                && codings.next().is_none()
        }
    }
}

/// RFC 9112 §6.1: a transfer coding the edge does not implement is 501; only `chunked`
/// alone is (Pingora already refuses, with 400, codings where `chunked` is not last). A
/// `Content-Length` no origin can represent (over 2^63−1) is 400.
fn framing_refusal(request: &RequestHeader, max_body: u64) -> Option<EdgeAnswer<'static>> {
    if !transfer_coding_is_chunked_or_none(&request.headers) {
        return Some(answer(
            501,
            "transfer-coding-not-implemented",
            "this edge implements only Transfer-Encoding: chunked (alone)".into(),
        ));
    }
    for value in request.headers.get_all(http::header::CONTENT_LENGTH) {
        for number in value.as_bytes().split(|&b| b == b',') {
            let Some(length) = std::str::from_utf8(number)
                .ok()
                .and_then(|n| n.trim().parse::<i64>().ok())
                .and_then(|n| u64::try_from(n).ok())
            else {
                return Some(answer(
                    400,
                    "bad-content-length",
                    "Content-Length must be a number from 0 to 2^63-1".into(),
                ));
            };
            if max_body > 0 && length > max_body {
                return Some(body_too_large(max_body));
            }
        }
    }
    None
}

/// The answer to a body over `limits.max_request_body` (`max_body` bytes), announced by
/// its `Content-Length` or found while it streams in.
fn body_too_large(max_body: u64) -> EdgeAnswer<'static> {
    answer(413, BODY_TOO_LARGE, body_too_large_reason(max_body))
}

/// `X-Portico-Error` of a 413.
pub const BODY_TOO_LARGE: &str = "request-body-too-large";

fn body_too_large_reason(max_body: u64) -> String {
    format!("the request body is larger than this edge takes ({max_body} bytes, limits.max_request_body)")
}

/// `request_body_filter`: counts a streamed body's bytes; past `max_body` (not 0) the
/// request fails with a 413 (the body announced no length, or the edge would have refused
/// it at once), and the origin never gets the body's end.
pub fn count_body(received: &mut u64, chunk: &Bytes, max_body: u64) -> pingora_error::Result<()> {
    *received += chunk.len() as u64;
    if max_body > 0 && *received > max_body {
        return Error::e_explain(ErrorType::HTTPStatus(413), body_too_large_reason(max_body));
    }
    Ok(())
}

/// Why Pingora could not parse a head, in words fit to send back: the parser's own reason
/// where the context is the refused head (`respond::quotes_a_head`). Other contexts may
/// quote a field's value (`Content-Length`): bounded.
fn unreadable_head_reason(e: &Error) -> String {
    match e.context.as_ref().map(|c| c.as_str()) {
        Some(context) if super::respond::quotes_a_head(context) => e.root_cause().to_string(),
        Some(context) => super::respond::bounded(context.to_owned()),
        None => "malformed".to_owned(),
    }
}

fn answer(status: u16, error: &'static str, body: String) -> EdgeAnswer<'static> {
    EdgeAnswer {
        status,
        error,
        body,
        location: None,
    }
}

/// The budget a request body's waits have (`request_body_timeout`, `request_body_min_rate`):
/// the HTTP/1 connection guard and Pingora's HTTP/2 session both count by it.
pub fn body_budget(limits: &ClientLimits) -> BodyBudget {
    BodyBudget {
        timeout: limits.request_body_timeout,
        min_rate: limits.request_body_min_rate,
    }
}

/// The guard's limit that stopped a read of the client's connection, if one did.
pub fn client_limit(e: &Error) -> Option<&HeadLimit> {
    e.root_cause()
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<HeadLimit>())
}

/// The edge's answer to a request head it did not take: one it stopped reading
/// ([`HeadLimit`]), one Pingora could not parse (too many lines: 431; anything else: 400
/// with Pingora's reason) or a `CONNECT` (405: Pingora refuses the method before any hook
/// runs). `None` (a broken connection) leaves it to Pingora, which closes in silence.
pub fn head_error(e: &Error, limits: &ClientLimits) -> Option<(ResponseHeader, Bytes)> {
    let cause = e.root_cause();
    let limit = client_limit(e);
    let (status, error, body) = match limit {
        Some(HeadLimit::Timeout(_)) => (408, "request-head-timeout", limit?.to_string()),
        Some(HeadLimit::TooLarge(_)) => (431, "request-head-too-large", limit?.to_string()),
        // A body's limit: answered by `fail_to_proxy` (`respond::failure_answer`).
        Some(HeadLimit::SlowBody(..)) => return None,
        // httparse's "too many headers": past the edge's own count too.
        None if cause.to_string() == "too many headers" => (
            431,
            "too-many-headers",
            format!(
                "the request has more header fields than this edge takes ({})",
                limits.max_headers
            ),
        ),
        None if e.etype() == &ErrorType::HTTPStatus(405) => (
            405,
            "connect-refused",
            "CONNECT is not served by this edge".into(),
        ),
        None if e.etype() == &ErrorType::InvalidHTTPHeader => (
            400,
            "bad-request",
            format!(
                "the edge could not read the request (InvalidHTTPHeader): {}",
                unreadable_head_reason(e)
            ),
        ),
        None => return None,
    };
    let body = Bytes::from(format!("{body}\n"));
    let mut header = super::respond::answer_header(status, error, body.len()).ok()?;
    header
        .insert_header(http::header::CONNECTION, "close")
        .ok()?;
    Some((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chunked_once_is_a_transfer_coding_the_edge_decodes() {
        let check = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for value in values {
                headers.append(http::header::TRANSFER_ENCODING, value.parse().unwrap());
            }
            transfer_coding_is_chunked_or_none(&headers)
        };
        assert!(check(&[]));
        assert!(check(&["chunked"]));
        assert!(check(&["Chunked "]));
        assert!(!check(&["gzip"]));
        assert!(!check(&["gzip, chunked"]));
        assert!(!check(&["gzip", "chunked"]));
        assert!(!check(&["chunked, chunked"]));
        assert!(!check(&["identity"]));
    }

    fn request(lengths: &[&str]) -> RequestHeader {
        let mut request = RequestHeader::build("POST", b"/", None).unwrap();
        for length in lengths {
            request
                .append_header(http::header::CONTENT_LENGTH, *length)
                .unwrap();
        }
        request
    }

    fn lengths(request: &RequestHeader) -> Vec<&[u8]> {
        let all = request.headers.get_all(http::header::CONTENT_LENGTH);
        all.iter().map(|v| v.as_bytes()).collect()
    }

    #[test]
    fn a_repeated_content_length_becomes_one() {
        for sent in [&["2, 2"][..], &["2", "2"], &[" 2 ,2"], &["2", "2, 2"]] {
            let mut merged = request(sent);
            merge_content_length(&mut merged);
            assert_eq!(lengths(&merged), [b"2"], "{sent:?}");
        }
        for sent in [&[][..], &["2"]] {
            let mut kept = request(sent);
            merge_content_length(&mut kept);
            assert_eq!(lengths(&kept), lengths(&request(sent)));
        }
    }
}
