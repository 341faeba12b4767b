//! Conditional requests from clients answered from a stored response (RFC 9110 §13.1,
//! RFC 9111 §4.3.2): `If-None-Match` by weak comparison, else `If-Modified-Since`
//! against the stored `Last-Modified` (or, lacking it, its `Date`).

use http::header;
use pingora_http::{RequestHeader, ResponseHeader};

use super::policy::http_date;

/// Whether `request` gets a `304` instead of `stored` (a `200` that would be sent).
pub fn not_modified(request: &RequestHeader, stored: &ResponseHeader) -> bool {
    if !matches!(request.method, http::Method::GET | http::Method::HEAD)
        || stored.status != http::StatusCode::OK
    {
        return false;
    }
    let mut none_match = request
        .headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .peekable();
    if none_match.peek().is_some() {
        // Evaluated alone: If-Modified-Since is ignored when If-None-Match is present.
        let etag = stored.headers.get(header::ETAG).map(|v| v.as_bytes());
        return none_match.any(|line| list_matches(line.as_bytes(), etag));
    }
    let mut since = request.headers.get_all(header::IF_MODIFIED_SINCE).iter();
    let (Some(since), None) = (since.next(), since.next()) else {
        return false; // absent, or more than one member: ignored
    };
    let Some(since) = http_date(since.as_bytes()) else {
        return false; // not an HTTP-date: ignored
    };
    let modified = stored
        .headers
        .get(header::LAST_MODIFIED)
        .or_else(|| stored.headers.get(header::DATE))
        .and_then(|v| http_date(v.as_bytes()));
    modified.is_some_and(|modified| modified <= since)
}

/// Whether an `If-None-Match` field line matches the stored entity tag (weak comparison:
/// `W/` ignored on both sides). `*` matches any stored response.
fn list_matches(line: &[u8], stored: Option<&[u8]>) -> bool {
    if line.trim_ascii() == b"*" {
        return true;
    }
    let Some(stored) = stored.and_then(opaque_tag) else {
        return false;
    };
    let mut rest = line;
    loop {
        rest = rest.trim_ascii_start();
        while let Some(after) = rest.strip_prefix(b",") {
            rest = after.trim_ascii_start();
        }
        if rest.is_empty() {
            return false;
        }
        let Some((tag, after)) = next_tag(rest) else {
            return false; // malformed: nothing more can be read reliably
        };
        if tag == stored {
            return true;
        }
        rest = after;
    }
}

/// The opaque tag (quotes included) of one entity tag, without `W/`.
fn opaque_tag(etag: &[u8]) -> Option<&[u8]> {
    let (tag, rest) = next_tag(etag.trim_ascii())?;
    rest.trim_ascii().is_empty().then_some(tag)
}

/// Splits `W/"x"` or `"x"` off the start of `input`: the quoted tag and what follows.
/// The tag may itself hold commas, so quotes are followed, not commas.
fn next_tag(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let input = input.strip_prefix(b"W/").unwrap_or(input);
    if input.first() != Some(&b'"') {
        return None;
    }
    let end = 1 + input[1..].iter().position(|b| *b == b'"')?;
    Some(input.split_at(end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in headers {
            r.append_header(name.to_string(), *value).unwrap();
        }
        r
    }

    fn stored(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (name, value) in headers {
            r.append_header(name.to_string(), *value).unwrap();
        }
        r
    }

    #[test]
    fn if_none_match_uses_weak_comparison_over_the_whole_list() {
        let strong = stored(&[("etag", "\"a,b\"")]);
        let weak = stored(&[("etag", "W/\"v1\"")]);
        for (inm, target, expected) in [
            ("\"a,b\"", &strong, true),
            ("W/\"a,b\"", &strong, true),
            ("\"x\", \"a,b\"", &strong, true),
            ("\"a\"", &strong, false),
            ("\"v1\"", &weak, true),
            ("\"x\" , W/\"v1\"", &weak, true),
            ("*", &weak, true),
            ("\"v2\"", &weak, false),
            ("garbage", &weak, false),
        ] {
            assert_eq!(
                not_modified(&request(&[("if-none-match", inm)]), target),
                expected,
                "{inm}"
            );
        }
        // Several field lines are one list.
        let two_lines = request(&[("if-none-match", "\"x\""), ("if-none-match", "W/\"v1\"")]);
        assert!(not_modified(&two_lines, &weak));
        // No stored ETag: only * matches.
        assert!(!not_modified(
            &request(&[("if-none-match", "\"v1\"")]),
            &stored(&[])
        ));
    }

    #[test]
    fn if_modified_since_against_last_modified_then_date() {
        let modified = "Wed, 21 Oct 2026 07:28:00 GMT";
        let page = stored(&[("last-modified", modified), ("etag", "\"v1\"")]);
        for (since, expected) in [
            (modified, true),
            ("Thu, 22 Oct 2026 07:28:00 GMT", true),
            ("Wednesday, 21-Oct-26 07:28:00 GMT", true),
            ("Tue, 20 Oct 2026 07:28:00 GMT", false),
            ("not a date", false),
        ] {
            assert_eq!(
                not_modified(&request(&[("if-modified-since", since)]), &page),
                expected,
                "{since}"
            );
        }
        // If-None-Match decides alone when present.
        let both = request(&[("if-none-match", "\"v2\""), ("if-modified-since", modified)]);
        assert!(!not_modified(&both, &page));
        // No Last-Modified: the stored Date stands in.
        let dated = stored(&[("date", modified)]);
        assert!(not_modified(
            &request(&[("if-modified-since", modified)]),
            &dated
        ));
        // Not for other statuses or methods.
        let mut gone = page.clone();
        gone.set_status(404).unwrap();
        assert!(!not_modified(
            &request(&[("if-modified-since", modified)]),
            &gone
        ));
        let mut post = request(&[("if-none-match", "*")]);
        post.set_method(http::Method::POST);
        assert!(!not_modified(&post, &page));
    }
}
