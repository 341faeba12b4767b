//! Range parsing: Pingora's `Range` handling as the edge uses it on cache hits
//! (`range_header_filter`, in the vendored pingora-proxy), on random `Range` (and
//! `If-Range`) values and body lengths.
//!
//! Invariants: no panic; a single range is non-empty and inside the body, and the 206's
//! `Content-Range` and `Content-Length` say exactly that range; multiple ranges are
//! non-empty, inside the body, ascending and disjoint; an unsatisfiable range is a 416
//! whose `Content-Range` is `bytes */<length>`; no range leaves the 200 as it was (but
//! for `Accept-Ranges`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{range_header_filter, RangeType};

#[path = "common.rs"]
mod common;

// Input: the body length on the first line, the `Range` value on the second, then
// optional `If-Range: <value>` and settings `@etag=1` (the response has an ETag) and
// `@max=<n>` (the multipart range limit).
fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (Some(length), Some(range)) = (parts.next(), parts.next()) else {
        return;
    };
    let rest = parts.next().unwrap_or_default();
    let Some(length) = std::str::from_utf8(length)
        .ok()
        .and_then(|l| l.trim().parse::<usize>().ok())
        .filter(|l| *l <= 1 << 40)
    else {
        return;
    };
    let range = range.strip_suffix(b"\r").unwrap_or(range);
    let settings = common::lines(rest);
    let mut request = RequestHeader::build("GET", b"/", None).unwrap();
    if request.insert_header("range", range).is_err() {
        return;
    }
    for (name, value) in common::header_lines(rest) {
        if name.eq_ignore_ascii_case(b"if-range")
            && request.insert_header("if-range", value).is_err()
        {
            return;
        }
    }
    let mut response = ResponseHeader::build(200, None).unwrap();
    response
        .insert_header("content-length", length.to_string())
        .unwrap();
    if common::setting(&settings, "@etag") == Some("1") {
        response.insert_header("etag", "\"v1\"").unwrap();
    }
    let before = format!("{:?}", response.headers);
    let max = common::setting(&settings, "@max").and_then(|m| m.parse::<usize>().ok());
    let header = |r: &ResponseHeader, name: &str| {
        r.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    match range_header_filter(&request, &mut response, max) {
        RangeType::None => {
            // The whole 200, as it was (Pingora adds `Accept-Ranges: bytes`).
            assert_eq!(response.status, 200);
            response.remove_header("accept-ranges");
            assert_eq!(before, format!("{:?}", response.headers));
        }
        RangeType::Single(range) => {
            assert!(range.start < range.end, "an empty range {range:?}");
            assert!(range.end <= length, "{range:?} past {length}");
            assert_eq!(response.status, 206);
            assert_eq!(
                header(&response, "content-range").as_deref(),
                Some(format!("bytes {}-{}/{length}", range.start, range.end - 1).as_str())
            );
            assert_eq!(
                header(&response, "content-length"),
                Some((range.end - range.start).to_string())
            );
        }
        RangeType::Multi(info) => {
            assert!(info.ranges.len() >= 2);
            let mut last_end = 0;
            for range in &info.ranges {
                assert!(range.start < range.end, "an empty range {range:?}");
                assert!(range.end <= length, "{range:?} past {length}");
                assert!(
                    range.start >= last_end,
                    "overlapping or out of order: {:?}",
                    info.ranges
                );
                last_end = range.end;
            }
            assert_eq!(response.status, 206);
        }
        RangeType::Invalid => {
            assert_eq!(response.status, 416);
            assert_eq!(
                header(&response, "content-range"),
                Some(format!("bytes */{length}"))
            );
        }
    }
});
