//! RFC 9111 for a shared cache: `Cache-Control`, `Expires`/`Date`/`Age`, `Vary` and
//! conditional requests, on random responses and requests (`src/cache/policy/`,
//! `vary.rs`, `conditional.rs`).
//!
//! Invariants: no panic; an HTTP-date that parses prints back to the same instant; `Vary`
//! normalisation is idempotent, and a request whose token-list fields differ only in letter
//! case or spacing selects the same variant; `If-None-Match: *` matches any stored 200; a
//! stored response is never a 206, a `no-store`/`private` one, one with `Vary: *` or a
//! stored `Set-Cookie`, and its stored copy keeps no hop-by-hop field and no `Age`, has a
//! `Date`, and was created no later than it arrived.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pingora_http::{RequestHeader, ResponseHeader};
use portico::cache::{conditional, policy, vary};
use portico::config::model::CacheBehavior;

#[path = "common.rs"]
mod common;

// Input: the response's status on the first line, its `Name: value` header lines, a blank
// line, then the request's header lines. Settings lines anywhere (`@key=value`):
// `@behavior=` honor_origin | override_always | override_if_origin_missing, `@duration=`,
// `@default_ttl=`, `@swr=`, `@sie=` (seconds), `@at=` (arrival, seconds since 1970),
// `@delay=` (ms), `@auth=1` (the request had Authorization), `@head=1`, and `@date=` (a
// date to parse alone).
fuzz_target!(|data: &[u8]| {
    let (response_part, request_part) = common::split_blank(data);
    let settings: Vec<String> = common::lines(data)
        .into_iter()
        .filter_map(|l| l.strip_prefix('@').map(str::to_owned))
        .collect();

    // HTTP-dates: what parses prints back to the same instant.
    if let Some(date) = common::setting(&settings, "date") {
        if let Some(at) = policy::http_date(date.as_bytes()) {
            let printed = httpdate::fmt_http_date(at);
            assert_eq!(policy::http_date(printed.as_bytes()), Some(at), "{printed}");
        }
    }

    let mut response_lines = response_part.splitn(2, |b| *b == b'\n');
    let status = std::str::from_utf8(response_lines.next().unwrap_or_default())
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(200);
    let Ok(mut response) = ResponseHeader::build(status, None) else {
        return;
    };
    for (name, value) in common::header_lines(response_lines.next().unwrap_or_default()) {
        if !name.starts_with(b"@") {
            let _ = response.append_header(
                String::from_utf8_lossy(&name).into_owned(),
                value.as_slice(),
            );
        }
    }
    let method = if common::setting(&settings, "head") == Some("1") {
        "HEAD"
    } else {
        "GET"
    };
    let mut request = RequestHeader::build(method, b"/", None).unwrap();
    for (name, value) in common::header_lines(request_part) {
        if !name.starts_with(b"@") {
            let _ = request.append_header(
                String::from_utf8_lossy(&name).into_owned(),
                value.as_slice(),
            );
        }
    }
    const REQUEST_FIELDS: &[&str] = &[
        "accept-encoding",
        "accept-language",
        "if-none-match",
        "if-modified-since",
        "cookie",
        "authorization",
    ];
    // Vary: the normal form is a fixed point, and case or spacing in token lists picks
    // the same variant.
    for field in REQUEST_FIELDS {
        let name = HeaderName::from_static(field);
        let once = vary::normalise(&name, request.headers.get_all(&name));
        let Ok(value) = HeaderValue::from_bytes(&once) else {
            panic!("normalised {field} is no header value: {once:?}");
        };
        let mut again = http::HeaderMap::new();
        again.append(name.clone(), value);
        assert_eq!(
            vary::normalise(&name, again.get_all(&name)),
            once,
            "{field}"
        );
    }
    let variance = vary::variance(&response, &request);
    assert_eq!(variance, vary::variance(&response, &request));
    let mut respelled = request.clone();
    for field in ["accept-encoding", "accept-language"] {
        let lines: Vec<Vec<u8>> = request
            .headers
            .get_all(field)
            .iter()
            .map(|v| {
                v.as_bytes()
                    .to_ascii_uppercase()
                    .split(|b| *b == b',')
                    .map(|m| m.trim_ascii())
                    .collect::<Vec<_>>()
                    .join(&b" ,  "[..])
            })
            .collect();
        respelled.remove_header(field);
        for line in lines {
            if let Ok(line) = HeaderValue::from_bytes(&line) {
                respelled.append_header(field, line).unwrap();
            }
        }
    }
    let same_lines = ["accept-encoding", "accept-language"].iter().all(|f| {
        request.headers.get_all(*f).iter().count() == respelled.headers.get_all(*f).iter().count()
    });
    if same_lines {
        assert_eq!(
            vary::variance(&response, &respelled),
            variance,
            "respelled {request:?}"
        );
    }

    // Conditional requests.
    let modified = conditional::not_modified(&request, &response);
    if status == 200
        && request
            .headers
            .get_all("if-none-match")
            .iter()
            .any(|v| v.as_bytes().trim_ascii() == b"*")
    {
        assert!(modified, "If-None-Match: * against a stored 200");
    }

    // Storage.
    let behavior = match common::setting(&settings, "behavior") {
        Some("override_always") => CacheBehavior::OverrideAlways,
        Some("override_if_origin_missing") => CacheBehavior::OverrideIfOriginMissing,
        _ => CacheBehavior::HonorOrigin,
    };
    let secs = |key: &str| {
        common::setting(&settings, key)
            .and_then(|v| v.parse::<u32>().ok())
            .map(|s| Duration::from_secs(s as u64))
    };
    let freshness = policy::Freshness {
        behavior,
        duration: secs("duration"),
        default_ttl: secs("default_ttl").unwrap_or_default(),
        stale_while_revalidate: secs("swr"),
        stale_if_error: secs("sie"),
    };
    let received = policy::Received {
        // Arrival is the clock's now in the proxy: before year 10000, as HTTP-dates are.
        at: UNIX_EPOCH
            + Duration::from_secs(
                common::number(&settings, "at", 1_700_000_000u64).min(253_402_300_799),
            ),
        delay: Duration::from_millis(common::number(&settings, "delay", 0u64).min(1 << 30)),
        request_has_authorization: common::setting(&settings, "auth") == Some("1"),
    };
    let _ = policy::corrected_initial_age(&response, received);
    let _ = policy::serves_authorized_request(&response);
    match policy::admit(&response, &freshness, received) {
        Err(_) => {}
        Ok(meta) => {
            assert_ne!(status, 206);
            let control = pingora_cache::cache_control::CacheControl::from_resp_headers(&response);
            assert!(!control
                .as_ref()
                .is_some_and(|cc| cc.no_store() || cc.private()));
            let stored = meta.response_header();
            for field in [
                "connection",
                "transfer-encoding",
                "upgrade",
                "keep-alive",
                "te",
                "age",
                "set-cookie",
            ] {
                assert!(
                    !stored.headers.contains_key(field),
                    "stored {field}: {stored:?}"
                );
            }
            assert!(stored.headers.contains_key("date"));
            assert!(!response.headers.get_all("vary").iter().any(|v| v
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii() == b"*")));
            assert!(meta.created() <= received.at);
            let _ = policy::withheld(&response, stored);
            let merged = policy::merge_not_modified(stored, &response);
            assert!(!merged.headers.contains_key("connection"));
        }
    }
});
