//! Ranges on a miss: the client's `Range` goes to the origin as it asked.
//!
//! pingora-cache fetches the whole object on a miss, whatever part the client asked for,
//! to store it. That is the small-byte-range amplification of RangeAmp (Li et al., DSN
//! 2020): a client that varies the cache key (a query string the key keeps, a `Vary`
//! field) and asks for `bytes=0-0` each time makes the origin send whole objects for
//! requests of a hundred bytes. So a request for part of an object that the cache does
//! not hold is passed on with its `Range` (and its `If-Range`, which guards it): the
//! origin sends the part, which is not stored (a `206` never is); a `200` from an origin
//! that ignores ranges is stored as usual, and the client gets its part cut from it. An
//! object is stored by a request for all of it: one without `Range`, or with
//! `bytes=0-` (a player's first request).
//!
//! Such a request for a URL the store holds nothing of takes no part in the cache lock: it
//! does not wait behind another's part, and requests for the whole object do not wait
//! behind it (a fill that starts meanwhile is found by the lookup and read like a stored
//! object). When the store holds the URL, the lock stays (a stale object is then refreshed
//! by one request, and served meanwhile within `stale-while-revalidate`).
//!
//! Range-only clients (a download manager, a player that asks in bounded pieces) then never
//! fill the cache; fetching large objects in slices would serve them from it.

use http::header::{IF_RANGE, RANGE};
use http::Method;
use pingora_http::RequestHeader;

/// Ranges at or past pingora's limit on a range-set (its default `max_multipart_ranges`)
/// make it serve the whole object, so such a request is one for all of it.
const MAX_RANGES: usize = 200;

/// Whether `request` asks for part of the object: a `GET` or `HEAD` whose (first) `Range`
/// is a byte range-set pingora's range filter would honour, other than `bytes=0-`.
pub fn asks_for_part(request: &RequestHeader) -> bool {
    if request.method != Method::GET && request.method != Method::HEAD {
        return false;
    }
    request
        .headers
        .get(RANGE)
        .is_some_and(|range| is_partial_range(range.as_bytes()))
}

/// Puts the client's `Range` and `If-Range` back on the request to the origin (pingora's
/// cache filter removed them to fetch the whole object).
pub fn forward(client: &RequestHeader, upstream: &mut RequestHeader) {
    for name in [RANGE, IF_RANGE] {
        if let Some(value) = client.headers.get(&name) {
            let _ = upstream.insert_header(name, value.clone());
        }
    }
}

/// `bytes=` then comma-separated `first-last` specs (either may be empty, not both), the
/// syntax pingora accepts; anything else makes it serve the whole object. `bytes=0-` alone
/// is the whole object too.
fn is_partial_range(value: &[u8]) -> bool {
    let Some(equals) = value.iter().position(|&b| b == b'=') else {
        return false;
    };
    if !value[..equals].eq_ignore_ascii_case(b"bytes") {
        return false;
    }
    let (mut specs, mut from_start_to_end) = (0, false);
    for spec in value[equals + 1..].split(|&b| b == b',') {
        let spec = spec.trim_ascii();
        let Some(dash) = spec.iter().position(|&b| b == b'-') else {
            return false;
        };
        let (first, last) = (&spec[..dash], &spec[dash + 1..]);
        if !first.iter().chain(last).all(u8::is_ascii_digit) {
            return false;
        }
        if first.is_empty() && last.is_empty() {
            continue; // pingora skips `-`
        }
        specs += 1;
        from_start_to_end =
            !first.is_empty() && first.iter().all(|&b| b == b'0') && last.is_empty();
    }
    specs > 0 && specs < MAX_RANGES && !(specs == 1 && from_start_to_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, range: Option<&str>) -> RequestHeader {
        let mut request = RequestHeader::build(method, b"/big", None).unwrap();
        if let Some(range) = range {
            request.insert_header("range", range).unwrap();
        }
        request
    }

    #[test]
    fn bounded_suffix_and_later_open_ranges_ask_for_part() {
        for range in [
            "bytes=0-0",
            "bytes=5-6",
            "BYTES=100-",
            "bytes=-1",
            "bytes= 0-1 , 4-9",
            "bytes=0-,5-6",
            "bytes=0-99999999999",
            "bytes=-,0-0",
        ] {
            assert!(asks_for_part(&request("GET", Some(range))), "{range}");
        }
        assert!(asks_for_part(&request("HEAD", Some("bytes=1-2"))));
    }

    #[test]
    fn the_whole_object_no_range_or_one_pingora_ignores_asks_for_all() {
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES].join(","));
        for range in [
            "bytes=0-",
            "bytes=000-",
            " bytes=0-",
            "bytes=",
            "bytes=-",
            "items=0-1",
            "bytes=a-1",
            "bytes=1-2;3",
            "bytes 0-1",
            many.as_str(),
        ] {
            assert!(!asks_for_part(&request("GET", Some(range))), "{range}");
        }
        assert!(!asks_for_part(&request("GET", None)));
        assert!(!asks_for_part(&request("POST", Some("bytes=0-0"))));
    }

    #[test]
    fn forward_restores_range_and_if_range() {
        let mut client = request("GET", Some("bytes=0-0"));
        client.insert_header("if-range", "\"v1\"").unwrap();
        let mut upstream = request("GET", None);
        forward(&client, &mut upstream);
        assert_eq!(upstream.headers["range"], "bytes=0-0");
        assert_eq!(upstream.headers["if-range"], "\"v1\"");
        let mut plain = request("GET", None);
        forward(&request("GET", None), &mut plain);
        assert!(plain.headers.is_empty());
    }
}
