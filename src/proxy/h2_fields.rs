//! An HTTP/2 request's fields as the HTTP/1.1 request to the origin needs them
//! (RFC 9113 §8.2).
//!
//! The h2 library has already refused names with upper case or separators, values with
//! CR, LF or NUL, and connection-specific fields. Two rules are left to the edge, which
//! forwards to origins in HTTP/1.1:
//! - §8.2.1: a value must not begin or end with whitespace. HTTP/1.1 trims it, so a
//!   request that says `x-a: " a"` to the edge would say `x-a: a` to the origin: refused
//!   (`400`) as malformed, as the RFC asks of an intermediary.
//! - §8.2.3: HTTP/2 clients send each cookie as a field of its own (for header
//!   compression); HTTP/1.1 allows one `Cookie` line (RFC 6265 §5.4), and origins that
//!   read one line lose the others. They are joined with `"; "` before anything reads them
//!   (rules, the log, the origin).
//!
//! And one of framing (§8.1.1): a request whose `content-length` is 0 but whose stream has
//! not ended yet goes on only once it has ended. Pingora sent it on at once, as a complete
//! request without a body, and DATA that followed (a malformed request) was dropped or
//! reset after the origin had acted on it; now such DATA gets the request refused before
//! anything is sent.
//!
//! HTTP/1.1 requests pass through untouched; none of these rules costs them anything.

use http::header::{CONTENT_LENGTH, COOKIE};
use pingora_error::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::respond::EdgeAnswer;

/// The refusal for an HTTP/2 `request` whose fields HTTP/1.1 cannot carry as they are.
pub fn refusal(request: &RequestHeader) -> Option<EdgeAnswer<'static>> {
    let padded = request.headers.iter().find(|(_, value)| {
        let value = value.as_bytes();
        let is_space = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
        is_space(value.first()) || is_space(value.last())
    })?;
    Some(EdgeAnswer {
        status: 400,
        error: "padded-field-value",
        body: format!(
            "the value of field `{}` begins or ends with whitespace, which an HTTP/2 request \
             may not have (RFC 9113 §8.2.1)",
            padded.0
        ),
        location: None,
    })
}

/// For an HTTP/2 request that says `content-length: 0`: waits for its stream's end, and
/// refuses it if a body comes instead. (The h2 library resets such a stream itself, RFC 9113
/// §8.1.1, which comes back as an error, as does a stream that does not end within the body
/// budget: either way nothing goes on.)
pub async fn zero_length_refusal(session: &mut Session) -> Result<Option<EdgeAnswer<'static>>> {
    let zero = session
        .req_header()
        .headers
        .get(CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() == b"0");
    if !zero {
        return Ok(None);
    }
    loop {
        match session.downstream_session.read_request_body().await? {
            None => return Ok(None),
            Some(data) if data.is_empty() => continue,
            Some(_) => {
                return Ok(Some(EdgeAnswer {
                    status: 400,
                    error: "body-past-content-length",
                    body: "the request says `content-length: 0` but sends a body (RFC 9113 §8.1.1)"
                        .to_string(),
                    location: None,
                }))
            }
        }
    }
}

/// Joins an HTTP/2 request's `cookie` fields into one, in their order.
pub fn join_cookies(request: &mut RequestHeader) {
    let mut values = request.headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for value in request.headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    // Made of valid values and "; ": valid too.
    if let Ok(joined) = http::HeaderValue::from_bytes(&joined) {
        let _ = request.insert_header(COOKIE, joined);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h2_request(fields: &[(&'static str, &'static str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request.set_version(http::Version::HTTP_2);
        for (name, value) in fields {
            request.append_header(*name, *value).unwrap();
        }
        request
    }

    #[test]
    fn a_value_that_begins_or_ends_with_whitespace_is_refused() {
        for value in [" a", "a ", "\ta", "a\t", " "] {
            let request = h2_request(&[("x-ok", "fine"), ("x-a", value)]);
            let refusal = refusal(&request).expect(value);
            assert_eq!(refusal.status, 400);
            assert!(refusal.body.contains("`x-a`"), "{}", refusal.body);
        }
        for value in ["a", "a b", "", "a\tb"] {
            assert!(
                refusal(&h2_request(&[("x-a", value)])).is_none(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn cookies_are_joined_in_order_and_the_rest_is_untouched() {
        let mut request = h2_request(&[
            ("cookie", "a=1"),
            ("x-a", "1"),
            ("cookie", "b=2"),
            ("cookie", "c=3"),
        ]);
        join_cookies(&mut request);
        let cookies: Vec<_> = request.headers.get_all(COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2; c=3"]);
        assert_eq!(request.headers["x-a"], "1");
        let mut one = h2_request(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one.headers.get_all(COOKIE).iter().count(), 1);
    }
}
