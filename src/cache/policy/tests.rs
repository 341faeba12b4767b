//! The storage policy's tests: pure functions, no sockets.

use std::time::UNIX_EPOCH;

use super::*;

const HONOR: Freshness = Freshness {
    behavior: CacheBehavior::HonorOrigin,
    duration: None,
    default_ttl: Duration::ZERO,
    heuristic_max: Duration::from_secs(86_400),
    stale_while_revalidate: None,
    stale_if_error: None,
};

fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
    let mut r = ResponseHeader::build(status, None).unwrap();
    for (name, value) in headers {
        r.append_header(name.to_string(), *value).unwrap();
    }
    r
}

fn at(now: SystemTime) -> Received {
    Received {
        at: now,
        delay: Duration::ZERO,
        request_has_authorization: false,
        path_names_static_file: false,
    }
}

fn admit_at(r: &ResponseHeader, f: &Freshness, now: SystemTime) -> Result<CacheMeta, Refusal> {
    admit(r, f, at(now))
}

fn ttl(meta: &CacheMeta, now: SystemTime) -> u64 {
    meta.fresh_until()
        .duration_since(now)
        .map_or(0, |d| d.as_secs())
}

/// A whole second, so `Date` arithmetic is exact.
fn second() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn s_maxage_beats_max_age_beats_expires() {
    let now = SystemTime::now();
    let both = response(200, &[("cache-control", "max-age=10, s-maxage=20")]);
    assert_eq!(ttl(&admit_at(&both, &HONOR, now).unwrap(), now), 20);
    let expires = httpdate::fmt_http_date(now + Duration::from_secs(100));
    let max_age = response(
        200,
        &[("cache-control", "max-age=10"), ("expires", &expires)],
    );
    assert_eq!(ttl(&admit_at(&max_age, &HONOR, now).unwrap(), now), 10);
    let only_expires = response(200, &[("expires", &expires)]);
    let t = ttl(&admit_at(&only_expires, &HONOR, now).unwrap(), now);
    assert!((98..=100).contains(&t), "{t}");
}

#[test]
fn every_http_date_format_is_understood_and_a_bad_expires_is_stale() {
    let now = second();
    let date = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37
    for text in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        // Names in another case, or a weekday the date is not: the date it says.
        "SUN, 06 nov 1994 08:49:37 gMT",
        "Thu, 06 Nov 1994 08:49:37 GMT",
        "friday, 06-NOV-94 08:49:37 GMT",
        "Wed Nov  6 08:49:37 1994",
    ] {
        assert_eq!(http_date(text.as_bytes()), Some(date), "{text}");
    }
    // Anything else is still no date.
    for text in [
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994  08:49:37 GMT",
        "Sun, 06-Nov-1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08.49.37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "0",
    ] {
        assert_eq!(http_date(text.as_bytes()), None, "{text}");
    }
    // Expires − Date is the lifetime, whatever format each is in.
    let in_an_hour = now + Duration::from_secs(3600);
    let imf = httpdate::fmt_http_date(in_an_hour);
    let rfc850 = {
        let t = httpdate::HttpDate::from(in_an_hour).to_string();
        // "Tue, 15 Nov 1994 08:12:31 GMT" → "Tuesday, 15-Nov-94 08:12:31 GMT"
        let day = match &t[..3] {
            "Mon" => "Monday",
            "Tue" => "Tuesday",
            "Wed" => "Wednesday",
            "Thu" => "Thursday",
            "Fri" => "Friday",
            "Sat" => "Saturday",
            _ => "Sunday",
        };
        format!(
            "{day}, {}-{}-{} {} GMT",
            &t[5..7],
            &t[8..11],
            &t[14..16],
            &t[17..25]
        )
    };
    let asctime = {
        let t = httpdate::HttpDate::from(in_an_hour).to_string();
        let day: u32 = t[5..7].parse().unwrap();
        format!(
            "{} {} {day:>2} {} {}",
            &t[..3],
            &t[8..11],
            &t[17..25],
            &t[12..16]
        )
    };
    for expires in [&imf, &rfc850, &asctime] {
        assert_eq!(http_date(expires.as_bytes()), Some(in_an_hour), "{expires}");
        let r = response(
            200,
            &[
                ("expires", expires),
                ("date", &httpdate::fmt_http_date(now)),
            ],
        );
        assert_eq!(
            ttl(&admit_at(&r, &HONOR, now).unwrap(), now),
            3600,
            "{expires}"
        );
    }
    // Past, invalid or repeated: stale, so the default TTL never applies to it.
    let day = Freshness {
        default_ttl: Duration::from_secs(86_400),
        ..HONOR
    };
    for expires in [
        &["Thu, 01 Jan 1970 00:00:00 GMT"][..],
        &["0"],
        &["soon"],
        &[&imf, &imf],
    ] {
        let mut r = response(200, &[]);
        for e in expires {
            r.append_header("expires", *e).unwrap();
        }
        assert!(admit_at(&r, &day, now).is_err(), "{expires:?}");
    }
}

#[test]
fn corrected_age_counts_the_origin_date_and_an_upstream_age() {
    let now = second();
    let dated = |ago: u64| httpdate::fmt_http_date(now - Duration::from_secs(ago));
    // Date 30 s ago: 30 s of a 60 s lifetime are gone, and the hit's Age starts at 30.
    let r = response(
        200,
        &[("cache-control", "max-age=60"), ("date", &dated(30))],
    );
    let meta = admit_at(&r, &HONOR, now).unwrap();
    assert_eq!(ttl(&meta, now), 30);
    assert_eq!(meta.updated(), now - Duration::from_secs(30));
    // The stored Date is the origin's.
    assert_eq!(meta.headers()["date"], dated(30).as_str());
    // Age larger than the apparent age wins, plus the response delay.
    let r = response(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("date", &dated(5)),
            ("age", "20"),
        ],
    );
    let delayed = Received {
        delay: Duration::from_secs(2),
        ..at(now)
    };
    let meta = admit(&r, &HONOR, delayed).unwrap();
    assert_eq!(ttl(&meta, now), 38);
    assert!(
        !meta.headers().contains_key("age"),
        "Age is computed on hits"
    );
    // A Date in the future is age 0, not negative.
    let ahead = httpdate::fmt_http_date(now + Duration::from_secs(100));
    let r = response(200, &[("cache-control", "max-age=60"), ("date", &ahead)]);
    assert_eq!(ttl(&admit_at(&r, &HONOR, now).unwrap(), now), 60);
    // Expires is measured from Date, and the age is taken off it.
    let r = response(
        200,
        &[
            ("date", &dated(10)),
            (
                "expires",
                &httpdate::fmt_http_date(now + Duration::from_secs(50)),
            ),
        ],
    );
    assert_eq!(ttl(&admit_at(&r, &HONOR, now).unwrap(), now), 50);
    // A response without Date gets the time it arrived.
    let r = response(200, &[("cache-control", "max-age=60")]);
    let meta = admit_at(&r, &HONOR, now).unwrap();
    assert_eq!(
        meta.headers()["date"],
        httpdate::fmt_http_date(now).as_str()
    );
}

#[test]
fn no_store_and_private_win_over_override_always() {
    let now = SystemTime::now();
    let always = Freshness {
        behavior: CacheBehavior::OverrideAlways,
        duration: Some(Duration::from_secs(60)),
        ..HONOR
    };
    for cc in ["no-store", "private", "private, max-age=60"] {
        let r = response(200, &[("cache-control", cc)]);
        assert_eq!(
            admit_at(&r, &always, now).unwrap_err(),
            Refusal::PrivateNoStore
        );
    }
}

#[test]
fn no_cache_is_stored_stale_and_override_always_overrides_it() {
    let now = SystemTime::now();
    let r = response(200, &[("cache-control", "no-cache")]);
    let meta = admit_at(&r, &HONOR, now).unwrap();
    assert!(!meta.is_fresh(now));
    let always = Freshness {
        behavior: CacheBehavior::OverrideAlways,
        duration: Some(Duration::from_secs(60)),
        ..HONOR
    };
    assert_eq!(ttl(&admit_at(&r, &always, now).unwrap(), now), 60);
}

#[test]
fn qualified_private_and_no_cache_drop_their_fields_from_the_stored_copy_only() {
    let now = SystemTime::now();
    let r = response(
        200,
        &[
            (
                "cache-control",
                "max-age=60, private=\"x-user\", no-cache=\"set-cookie\"",
            ),
            ("x-user", "alice"),
            ("set-cookie", "s=1"),
            ("x-other", "kept"),
        ],
    );
    let meta = admit_at(&r, &HONOR, now).unwrap();
    assert_eq!(ttl(&meta, now), 60, "a qualified no-cache is not stale");
    assert!(!meta.headers().contains_key("x-user"));
    assert!(!meta.headers().contains_key("set-cookie"));
    assert_eq!(meta.headers()["x-other"], "kept");
    assert!(
        r.headers.contains_key("x-user"),
        "the response itself is whole"
    );
}

#[test]
fn hop_by_hop_fields_are_not_stored() {
    let now = SystemTime::now();
    let r = response(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("transfer-encoding", "chunked"),
            ("x-end", "kept"),
        ],
    );
    let meta = admit_at(&r, &HONOR, now).unwrap();
    for name in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(!meta.headers().contains_key(name), "{name} was stored");
    }
    assert_eq!(meta.headers()["x-end"], "kept");
    // Forwarded: the same minus framing, which the connection still needs.
    let mut forwarded = r.clone();
    strip_hop_by_hop(&mut forwarded, false);
    assert!(forwarded.headers.contains_key("transfer-encoding"));
    assert!(!forwarded.headers.contains_key("x-hop"));
    // A 101 keeps its Upgrade and Connection.
    let mut switching = response(101, &[("connection", "upgrade"), ("upgrade", "websocket")]);
    strip_hop_by_hop(&mut switching, false);
    assert!(switching.headers.contains_key("upgrade"));
}

#[test]
fn last_modified_gives_a_tenth_of_its_age_when_nothing_else_gives_a_lifetime() {
    let now = second();
    let date = httpdate::fmt_http_date(now);
    let ago = |secs: u64| httpdate::fmt_http_date(now - Duration::from_secs(secs));
    let unchanged_for = |status: u16, secs: u64, extra: &[(&str, &str)]| {
        let mut r = response(status, extra);
        r.append_header("date", &date).unwrap();
        r.append_header("last-modified", ago(secs)).unwrap();
        r
    };
    let lifetime = |r: &ResponseHeader, f: &Freshness| ttl(&admit_at(r, f, now).unwrap(), now);
    // Every heuristically cacheable status, and any other marked `public`.
    for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        assert_eq!(
            lifetime(&unchanged_for(status, 100_000, &[]), &HONOR),
            10_000
        );
    }
    let public = [("cache-control", "public")];
    assert_eq!(
        lifetime(&unchanged_for(599, 100_000, &public), &HONOR),
        10_000
    );
    assert!(admit_at(&unchanged_for(302, 100_000, &[]), &HONOR, now).is_err());
    // At most `heuristic_max`; less the age it arrives with.
    assert_eq!(
        lifetime(&unchanged_for(200, 9_000_000, &[]), &HONOR),
        86_400
    );
    let aged = unchanged_for(200, 100_000, &[("age", "1000")]);
    assert_eq!(lifetime(&aged, &HONOR), 9_000);
    // The origin's word and a configured default win; `0s` turns the heuristic off, and
    // so do `no-cache` and a `Last-Modified` after `Date` (stored stale: validators).
    let said = unchanged_for(200, 100_000, &[("cache-control", "max-age=5")]);
    assert_eq!(lifetime(&said, &HONOR), 5);
    let hour = Freshness {
        default_ttl: Duration::from_secs(3_600),
        ..HONOR
    };
    assert_eq!(lifetime(&unchanged_for(200, 100_000, &[]), &hour), 3_600);
    let off = Freshness {
        heuristic_max: Duration::ZERO,
        ..HONOR
    };
    assert_eq!(lifetime(&unchanged_for(200, 100_000, &[]), &off), 0);
    let no_cache = unchanged_for(200, 100_000, &[("cache-control", "no-cache")]);
    assert_eq!(lifetime(&no_cache, &HONOR), 0);
    let mut future = response(200, &[("date", &date)]);
    future
        .append_header(
            "last-modified",
            httpdate::fmt_http_date(now + Duration::from_secs(60)),
        )
        .unwrap();
    assert_eq!(lifetime(&future, &HONOR), 0);
    // override_always ignores the origin, its `Last-Modified` too.
    let always = Freshness {
        behavior: CacheBehavior::OverrideAlways,
        ..HONOR
    };
    assert_eq!(lifetime(&unchanged_for(200, 100_000, &[]), &always), 0);
}

#[test]
fn override_if_origin_missing_only_fills_the_gap() {
    let now = SystemTime::now();
    let missing = Freshness {
        behavior: CacheBehavior::OverrideIfOriginMissing,
        duration: Some(Duration::from_secs(30)),
        ..HONOR
    };
    let silent = response(200, &[]);
    assert_eq!(ttl(&admit_at(&silent, &missing, now).unwrap(), now), 30);
    let said = response(200, &[("cache-control", "max-age=5")]);
    assert_eq!(ttl(&admit_at(&said, &missing, now).unwrap(), now), 5);
}

#[test]
fn silent_origin_uses_the_default_ttl_and_zero_means_not_stored() {
    let now = SystemTime::now();
    let silent = response(200, &[]);
    assert_eq!(
        admit_at(&silent, &HONOR, now).unwrap_err(),
        Refusal::Uncacheable("no freshness information")
    );
    let day = Freshness {
        default_ttl: Duration::from_secs(86_400),
        ..HONOR
    };
    assert_eq!(ttl(&admit_at(&silent, &day, now).unwrap(), now), 86_400);
}

#[test]
fn explicit_freshness_stores_any_final_status_and_configured_lifetimes_only_heuristic_ones() {
    let now = SystemTime::now();
    let day = Freshness {
        behavior: CacheBehavior::OverrideAlways,
        duration: Some(Duration::from_secs(86_400)),
        default_ttl: Duration::from_secs(86_400),
        ..HONOR
    };
    // Statuses this cache does not know too (RFC 9111 §3 asks for understanding only of
    // 206, 304 and under `must-understand`).
    for status in [200, 302, 307, 403, 500, 503, 299, 499, 599] {
        let r = response(status, &[("cache-control", "max-age=60")]);
        assert_eq!(
            ttl(&admit_at(&r, &HONOR, now).unwrap(), now),
            60,
            "{status}"
        );
    }
    for status in [200, 404, 405, 414, 501] {
        assert!(status_is_heuristic(status));
        let r = response(status, &[]);
        assert_eq!(
            ttl(&admit_at(&r, &day, now).unwrap(), now),
            86_400,
            "{status}"
        );
    }
    // Not heuristically cacheable: no configured lifetime, even override_always.
    for status in [302, 403, 500, 503] {
        let r = response(status, &[]);
        assert!(admit_at(&r, &day, now).is_err(), "{status}");
        let said = response(status, &[("cache-control", "max-age=5")]);
        assert_eq!(
            ttl(&admit_at(&said, &day, now).unwrap(), now),
            5,
            "{status}"
        );
    }
    // Partial, or an error without freshness: reasons the predictor does not remember
    // where they say nothing of the next response.
    let cc = ("cache-control", "max-age=60");
    for (r, reason) in [
        (response(206, &[cc]), REASON_PARTIAL),
        (response(502, &[]), REASON_ERROR_STATUS),
    ] {
        assert_eq!(
            admit_at(&r, &HONOR, now).unwrap_err(),
            Refusal::Uncacheable(reason)
        );
        assert!(TRANSIENT_REASONS.contains(&reason));
    }
}

#[test]
fn must_understand_stores_only_understood_statuses_and_then_overrides_no_store() {
    let now = SystemTime::now();
    let cc = ("cache-control", "no-store, must-understand, max-age=60");
    assert_eq!(
        ttl(&admit_at(&response(200, &[cc]), &HONOR, now).unwrap(), now),
        60
    );
    assert_eq!(
        admit_at(&response(299, &[cc]), &HONOR, now).unwrap_err(),
        Refusal::Uncacheable("status not understood")
    );
    let plain = ("cache-control", "must-understand, max-age=60");
    assert!(admit_at(&response(299, &[plain]), &HONOR, now).is_err());
    // Without it, `no-store` wins.
    let no_store = ("cache-control", "no-store, max-age=60");
    assert_eq!(
        admit_at(&response(200, &[no_store]), &HONOR, now).unwrap_err(),
        Refusal::PrivateNoStore
    );
}

#[test]
fn statuses_about_the_request_are_never_stored() {
    let now = SystemTime::now();
    for status in [400, 408, 411, 413, 417, 421, 431] {
        let fresh = response(status, &[("cache-control", "public, max-age=600")]);
        assert_eq!(
            admit_at(&fresh, &HONOR, now).unwrap_err(),
            Refusal::Uncacheable(REASON_REQUEST_ERROR),
            "{status}"
        );
    }
    assert!(TRANSIENT_REASONS.contains(&REASON_REQUEST_ERROR));
    // Statuses about the resource still are, on the origin's word.
    for status in [404, 405, 410, 414, 451] {
        let fresh = response(status, &[("cache-control", "max-age=600")]);
        assert!(admit_at(&fresh, &HONOR, now).is_ok(), "{status}");
    }
}

#[test]
fn a_repeated_directive_counts_once_as_first_given() {
    let now = SystemTime::now();
    let lifetime = |headers: &[(&str, &str)]| {
        admit_at(&response(200, headers), &HONOR, now).map(|meta| ttl(&meta, now))
    };
    let cc = "cache-control";
    assert_eq!(lifetime(&[(cc, "max-age=1800, max-age=1")]), Ok(1800));
    assert_eq!(
        lifetime(&[(cc, "max-age=1800"), (cc, "max-age=1")]),
        Ok(1800)
    );
    assert_eq!(lifetime(&[(cc, "max-age=1, max-age=1800")]), Ok(1));
    assert_eq!(
        lifetime(&[(cc, "s-maxage=60"), (cc, "s-maxage=5, max-age=9")]),
        Ok(60)
    );
}

#[test]
fn surrogate_control_aimed_at_this_cache_decides_over_cache_control_and_expires() {
    let now = SystemTime::now();
    let later = httpdate::fmt_http_date(now + Duration::from_secs(3600));
    let earlier = httpdate::fmt_http_date(now - Duration::from_secs(3600));
    let lifetime = |headers: &[(&str, &str)]| {
        admit_at(&response(200, headers), &HONOR, now).map(|meta| ttl(&meta, now))
    };
    let sc = "surrogate-control";
    assert_eq!(lifetime(&[(sc, "max-age=3600")]), Ok(3600));
    // Shorter or longer than `Cache-Control`'s, and whatever `Expires` says.
    assert_eq!(
        lifetime(&[(sc, "max-age=1"), ("cache-control", "max-age=3600")]),
        Ok(1)
    );
    assert_eq!(
        lifetime(&[(sc, "max-age=3600"), ("cache-control", "max-age=1")]),
        Ok(3600)
    );
    assert_eq!(
        lifetime(&[(sc, "max-age=60"), ("expires", &earlier)]),
        Ok(60)
    );
    assert!(lifetime(&[(sc, "max-age=0"), ("expires", &later)]).is_err());
    // `no-store` from either side of the pair, the targeted field's word wins.
    assert_eq!(
        lifetime(&[
            (sc, "no-store"),
            ("cache-control", "max-age=600"),
            ("expires", &later)
        ]),
        Err(Refusal::PrivateNoStore)
    );
    assert_eq!(
        lifetime(&[(sc, "max-age=600;portico"), ("cache-control", "no-store")]),
        Ok(600)
    );
    // Aimed elsewhere, malformed or unknown: `Cache-Control` decides.
    for ignored in [
        "max-age=600;other-cdn",
        "max-age =600",
        "content=\"ESI/1.0\"",
    ] {
        assert_eq!(
            lifetime(&[(sc, ignored), ("cache-control", "max-age=5")]),
            Ok(5),
            "{ignored}"
        );
    }
    // `CDN-Cache-Control` is the standard one: it wins over both.
    assert_eq!(
        lifetime(&[("cdn-cache-control", "max-age=7"), (sc, "max-age=600")]),
        Ok(7)
    );
    // The grace period after `+` serves the object stale when the origin fails.
    let graced = admit_at(&response(200, &[(sc, "max-age=60+600")]), &HONOR, now).unwrap();
    assert!(graced.serve_stale_if_error(now + Duration::from_secs(600)));
}

#[test]
fn cdn_cache_control_is_this_caches_policy_over_cache_control_and_expires() {
    let now = SystemTime::now();
    let later = httpdate::fmt_http_date(now + Duration::from_secs(3600));
    let lifetime = |headers: &[(&str, &str)]| {
        admit_at(&response(200, headers), &HONOR, now).map(|meta| ttl(&meta, now))
    };
    // RFC 9213: the targeted field decides, either way.
    assert_eq!(
        lifetime(&[
            ("cdn-cache-control", "max-age=30"),
            ("cache-control", "max-age=600")
        ]),
        Ok(30)
    );
    assert_eq!(
        lifetime(&[
            ("cdn-cache-control", "max-age=600"),
            ("cache-control", "no-store")
        ]),
        Ok(600)
    );
    // A field that is no Structured Field Dictionary, or gives a lifetime the wrong
    // type, is ignored whole (a directive in capitals is no key).
    for invalid in ["max-age=600, &&&", "max-age=\"600\"", "MaX-aGe=600"] {
        let headers = [
            ("cdn-cache-control", invalid),
            ("cache-control", "no-store"),
        ];
        assert_eq!(
            lifetime(&headers),
            Err(Refusal::PrivateNoStore),
            "{invalid}"
        );
    }
    assert_eq!(
        lifetime(&[("CDN-Cache-Control", "max-age=60")]),
        Ok(60),
        "the field's name in any case"
    );
    for said in ["private", "no-store"] {
        let headers = [
            ("cdn-cache-control", said),
            ("cache-control", "max-age=600"),
            ("expires", later.as_str()),
        ];
        assert_eq!(lifetime(&headers), Err(Refusal::PrivateNoStore), "{said}");
    }
    // `no-cache` stores it stale: every use revalidates.
    let no_cache = admit_at(
        &response(
            200,
            &[
                ("cdn-cache-control", "no-cache"),
                ("cache-control", "max-age=600"),
            ],
        ),
        &HONOR,
        now,
    );
    assert!(no_cache.unwrap().fresh_until() <= now);
    // `Expires` is ignored under it: `max-age=0` is stale, and a lone directive without
    // a lifetime leaves none (no default TTL here).
    assert!(lifetime(&[
        ("cdn-cache-control", "max-age=0"),
        ("expires", later.as_str())
    ])
    .is_err());
    assert!(lifetime(&[("cdn-cache-control", "public"), ("expires", later.as_str())]).is_err());
    // An empty or directive-less field is no policy: `Cache-Control` decides.
    for empty in ["", " , "] {
        assert_eq!(
            lifetime(&[
                ("cdn-cache-control", empty),
                ("cache-control", "max-age=60")
            ]),
            Ok(60),
            "{empty:?}"
        );
    }
    // `Authorization` follows the targeted field too.
    let stored = response(
        200,
        &[
            ("cdn-cache-control", "public, max-age=60"),
            ("cache-control", "max-age=60"),
        ],
    );
    assert!(serves_authorized_request(&stored));
}

#[test]
fn set_cookie_and_vary_star_are_not_stored() {
    let now = SystemTime::now();
    let cc = ("cache-control", "max-age=60");
    for (r, why) in [
        (response(200, &[cc, ("set-cookie", "a=b")]), "set-cookie"),
        (response(200, &[cc, ("vary", "accept, *")]), "vary *"),
    ] {
        assert_eq!(
            admit_at(&r, &HONOR, now).unwrap_err(),
            Refusal::Uncacheable(why)
        );
    }
}

#[test]
fn authorization_needs_public_s_maxage_or_must_revalidate() {
    let now = SystemTime::now();
    let authorized = Received {
        request_has_authorization: true,
        ..at(now)
    };
    let plain = response(200, &[("cache-control", "max-age=60")]);
    assert!(admit(&plain, &HONOR, authorized).is_err());
    assert!(!serves_authorized_request(&plain));
    let public = response(200, &[("cache-control", "public, max-age=60")]);
    assert!(admit(&public, &HONOR, authorized).is_ok());
    assert!(serves_authorized_request(&public));
}

#[test]
fn a_page_under_a_static_files_name_is_stored_only_on_the_origins_word() {
    let now = SystemTime::now();
    let static_name = Received {
        path_names_static_file: true,
        ..at(now)
    };
    let always = Freshness {
        behavior: CacheBehavior::OverrideAlways,
        duration: Some(Duration::from_secs(3600)),
        ..HONOR
    };
    let default_ttl = Freshness {
        default_ttl: Duration::from_secs(600),
        ..HONOR
    };
    let page = response(200, &[("content-type", "text/html; charset=utf-8")]);
    let api = response(200, &[("content-type", "application/json")]);
    let explicit = response(
        200,
        &[
            ("content-type", "text/html"),
            ("cache-control", "max-age=60"),
        ],
    );
    let stylesheet = response(200, &[("content-type", "text/css")]);
    let refused = Err(Refusal::Uncacheable(REASON_PAGE_AS_STATIC_FILE));
    // This cache's lifetime for a page named like a file: refused.
    assert_eq!(admit(&page, &always, static_name).map(|_| ()), refused);
    assert_eq!(admit(&api, &default_ttl, static_name).map(|_| ()), refused);
    // `override_always` over the origin's own lifetime is still this cache's.
    assert_eq!(admit(&explicit, &always, static_name).map(|_| ()), refused);
    // The origin's own lifetime, an asset's type, or a path not named like a file: stored.
    assert!(admit(&explicit, &HONOR, static_name).is_ok());
    assert!(admit(&stylesheet, &always, static_name).is_ok());
    assert!(admit(&page, &always, at(now)).is_ok());
}

#[test]
fn stale_windows_come_from_cache_control_then_the_route() {
    let now = SystemTime::now();
    let route = Freshness {
        stale_while_revalidate: Some(Duration::from_secs(7)),
        stale_if_error: Some(Duration::from_secs(9)),
        ..HONOR
    };
    let r = response(200, &[("cache-control", "max-age=1, stale-if-error=50")]);
    let meta = admit_at(&r, &route, now).unwrap();
    assert_eq!(meta.stale_while_revalidate_sec(), 7);
    assert_eq!(meta.stale_if_error_sec(), 50);
}

#[test]
fn an_upstream_age_is_counted() {
    let now = SystemTime::now();
    let aged = response(200, &[("cache-control", "max-age=60"), ("age", "50")]);
    let meta = admit_at(&aged, &HONOR, now).unwrap();
    assert_eq!(ttl(&meta, now), 10, "50 of its 60 s were spent upstream");
    assert_eq!(
        meta.updated(),
        now - Duration::from_secs(50),
        "its Age counts on"
    );
    // Older than its lifetime: stale on arrival, so stored only if it can revalidate.
    let spent = response(200, &[("cache-control", "max-age=60"), ("age", "70")]);
    assert!(admit_at(&spent, &HONOR, now).is_err());
    let revalidatable = response(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("age", "70"),
            ("etag", "\"v1\""),
        ],
    );
    assert_eq!(ttl(&admit_at(&revalidatable, &HONOR, now).unwrap(), now), 0);
    // An Expires lifetime loses the age too; a route's override starts here.
    let expires = httpdate::fmt_http_date(now + Duration::from_secs(30));
    let dated = response(200, &[("expires", &expires), ("age", "20")]);
    let t = ttl(&admit_at(&dated, &HONOR, now).unwrap(), now);
    assert!((8..=10).contains(&t), "{t}");
    let always = Freshness {
        behavior: CacheBehavior::OverrideAlways,
        duration: Some(Duration::from_secs(100)),
        ..HONOR
    };
    assert_eq!(ttl(&admit_at(&aged, &always, now).unwrap(), now), 100);
    // An Age that is not delta-seconds is no age.
    for junk in ["soon", "-5", "1.5", "", "soon, 70"] {
        let r = response(200, &[("cache-control", "max-age=60"), ("age", junk)]);
        assert_eq!(ttl(&admit_at(&r, &HONOR, now).unwrap(), now), 60, "{junk}");
    }
    // A list on one line counts by its first member, as two lines do.
    let r = response(200, &[("cache-control", "max-age=60"), ("age", "20, 0")]);
    assert_eq!(ttl(&admit_at(&r, &HONOR, now).unwrap(), now), 40);
    let r = response(200, &[("cache-control", "max-age=60"), ("age", "70, 0")]);
    assert!(admit_at(&r, &HONOR, now).is_err(), "stale on arrival");
}

#[test]
fn a_304_updates_every_stored_field_but_framing_and_hop_by_hop() {
    let stored = response(
        200,
        &[
            ("cache-control", "max-age=10"),
            ("content-length", "8"),
            ("etag", "\"v1\""),
            ("x-version", "1"),
            ("x-list", "a"),
            ("x-list", "b"),
            ("x-untouched", "kept"),
        ],
    );
    let not_modified = response(
        304,
        &[
            ("cache-control", "max-age=600"),
            ("content-length", "0"),
            ("x-version", "2"),
            ("x-list", "c"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ],
    );
    let merged = merge_not_modified(&stored, &not_modified);
    assert_eq!(merged.status, 200);
    assert_eq!(merged.headers["cache-control"], "max-age=600");
    assert_eq!(merged.headers["content-length"], "8");
    assert_eq!(merged.headers["x-version"], "2");
    let list: Vec<_> = merged.headers.get_all("x-list").iter().collect();
    assert_eq!(list, ["c"]);
    assert_eq!(merged.headers["x-untouched"], "kept");
    assert_eq!(merged.headers["etag"], "\"v1\"");
    assert!(!merged.headers.contains_key("x-hop"));
    assert!(!merged.headers.contains_key("connection"));
}
