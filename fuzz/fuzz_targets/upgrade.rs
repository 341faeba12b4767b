//! Upgrade detection: Portico's one definition of a WebSocket upgrade (a GET whose
//! `Connection` lists `upgrade` and whose `Upgrade` lists `websocket`), on random methods
//! and header lines.
//!
//! Invariants: no panic; the result does not depend on how a list is split into field
//! lines (RFC 9110 §5.3), on the letter case of header values, or on unrelated fields;
//! the free function and `RequestFacts` agree; and whatever Portico calls an upgrade,
//! Pingora treats as one too (else the tunnel would break after the `101`).
#![no_main]

use http::header::{HeaderName, HeaderValue, CONNECTION, UPGRADE};
use libfuzzer_sys::fuzz_target;
use portico::rules::{is_websocket_upgrade, RequestFacts, Scheme};

#[path = "common.rs"]
mod common;

fn headers(lines: &[(HeaderName, HeaderValue)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in lines {
        map.append(name.clone(), value.clone());
    }
    map
}

// Input: the method on the first line, then `Name: value` header lines.
fuzz_target!(|data: &[u8]| {
    let (first, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(method) = std::str::from_utf8(first) else {
        return;
    };
    let method = method.strip_suffix('\r').unwrap_or(method);
    let mut lines = Vec::new();
    for (name, value) in common::header_lines(rest) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_bytes(&value),
        ) {
            lines.push((name, value));
        }
    }
    let map = headers(&lines);
    let upgrade = is_websocket_upgrade(method, &map);

    // The same facts through `RequestFacts`.
    let facts = RequestFacts {
        method,
        host: "example.com",
        path: "/",
        query: None,
        headers: &map,
        client_ip: None,
        scheme: Scheme::Http,
        listener: None,
    };
    assert_eq!(facts.is_websocket_upgrade(), upgrade);

    // Each line split at its commas into lines of their own: the same list.
    let mut split = Vec::new();
    for (name, value) in &lines {
        for member in value.as_bytes().split(|b| *b == b',') {
            if let Ok(member) = HeaderValue::from_bytes(member) {
                split.push((name.clone(), member));
            }
        }
    }
    // Only when no member was lost (a member that is not a valid value on its own), and
    // every line is text: a line with obs-text bytes is no token list at all, so its
    // members count for nothing (fail closed), while split off they would.
    let members = |l: &[(HeaderName, HeaderValue)]| {
        l.iter()
            .map(|(_, v)| v.as_bytes().split(|b| *b == b',').count())
            .sum::<usize>()
    };
    let text = lines.iter().all(|(_, v)| v.to_str().is_ok());
    if text && members(&split) == members(&lines) {
        assert_eq!(
            is_websocket_upgrade(method, &headers(&split)),
            upgrade,
            "split {lines:?}"
        );
    }

    // Letter case of the values does not matter.
    let upper: Vec<_> = lines
        .iter()
        .map(|(n, v)| {
            let v = HeaderValue::from_bytes(&v.as_bytes().to_ascii_uppercase()).unwrap();
            (n.clone(), v)
        })
        .collect();
    assert_eq!(
        is_websocket_upgrade(method, &headers(&upper)),
        upgrade,
        "case {lines:?}"
    );

    // An unrelated field changes nothing.
    let mut more = lines.clone();
    more.insert(
        0,
        (
            HeaderName::from_static("x-extra"),
            HeaderValue::from_static("upgrade, websocket"),
        ),
    );
    assert_eq!(is_websocket_upgrade(method, &headers(&more)), upgrade);

    // Portico's upgrade is Pingora's upgrade (HTTP/1.1).
    if upgrade {
        assert!(map.contains_key(UPGRADE) && map.contains_key(CONNECTION));
        if let Ok(mut request) = pingora_http::RequestHeader::build(method, b"/", None) {
            request.set_version(http::Version::HTTP_11);
            for (name, value) in &lines {
                request.append_header(name.clone(), value.clone()).unwrap();
            }
            assert!(
                pingora_core::protocols::http::v1::common::is_upgrade_req(&request),
                "Portico sees an upgrade that Pingora does not: {lines:?}"
            );
        }
    }
});
