//! Whether a response may be stored, and for how long: RFC 9111 for a shared cache, with
//! Front Door's cache behaviours layered on top. Pure functions, tested without sockets.
//!
//! Choices where the RFC leaves room (documented in the README):
//! - `no-store` and `private` always win, even over `override_always`;
//! - a response with `Set-Cookie` is never stored (a shared cache would hand one user's
//!   cookie to everyone);
//! - `Vary: *` is never stored;
//! - `override_always` overrides `no-cache` and every freshness directive, as Front Door does;
//! - statuses stored: 200, 203, 204, 300, 301, 308, 404, 410 (206 is not: ranges are served
//!   from whole objects);
//! - with no freshness information, the route's `duration` (for
//!   `override_if_origin_missing`) or the node's `cache_default_ttl` applies; `0s` means
//!   "do not store";
//! - a response that already aged in a cache upstream (a shield's hit carries `Age`) keeps
//!   aging here (RFC 9111 §4.2.3): its `Age` goes on counting from the upstream's, and a
//!   `max-age`/`s-maxage` lifetime has that much less left (an `Expires` date, a route's
//!   `duration` and `cache_default_ttl` are not shortened: they do not start at the origin).

use std::time::{Duration, SystemTime};

use pingora_cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora_cache::filters::calculate_expires_header_time;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

use crate::config::model::CacheBehavior;

/// What the route (and the rules that fired) say about freshness.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub behavior: CacheBehavior,
    pub duration: Option<Duration>,
    pub default_ttl: Duration,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
}

/// Why a response is not stored, with the `X-Cache` value it earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `no-store` or `private`.
    PrivateNoStore,
    /// Anything else: the reason is for logs.
    Uncacheable(&'static str),
}

impl Refusal {
    pub fn x_cache(self) -> &'static str {
        match self {
            Refusal::PrivateNoStore => "PRIVATE_NOSTORE",
            Refusal::Uncacheable(_) => "UNCACHEABLE",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::PrivateNoStore => "no-store or private",
            Refusal::Uncacheable(reason) => reason,
        }
    }
}

/// The statuses a shared cache stores here.
pub fn status_is_storable(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 300 | 301 | 308 | 404 | 410)
}

/// Decides whether `response` is stored and builds its metadata.
pub fn admit(
    response: &ResponseHeader,
    request_has_authorization: bool,
    freshness: &Freshness,
    now: SystemTime,
) -> Result<CacheMeta, Refusal> {
    let control = CacheControl::from_resp_headers(response);
    if control
        .as_ref()
        .is_some_and(|cc| cc.no_store() || cc.private())
    {
        return Err(Refusal::PrivateNoStore);
    }
    if !status_is_storable(response.status.as_u16()) {
        return Err(Refusal::Uncacheable("status not stored"));
    }
    if response.headers.contains_key(http::header::SET_COOKIE) {
        return Err(Refusal::Uncacheable("set-cookie"));
    }
    if response
        .headers
        .get_all(http::header::VARY)
        .iter()
        .any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii() == b"*")
        })
    {
        return Err(Refusal::Uncacheable("vary *"));
    }
    // RFC 9111 §3.5: a response to a request with Authorization is stored only if it says so.
    if request_has_authorization
        && !control
            .as_ref()
            .is_some_and(|cc| cc.allow_caching_authorized_req())
    {
        return Err(Refusal::Uncacheable("authorization"));
    }

    let origin_ttl = origin_freshness(control.as_ref(), response, now);
    let age = upstream_age(response);
    // A relative origin lifetime started when the origin answered, `age` ago.
    let aged = |(ttl, relative): (Duration, bool)| {
        if relative {
            ttl.saturating_sub(age)
        } else {
            ttl
        }
    };
    let ttl = match freshness.behavior {
        CacheBehavior::HonorOrigin => origin_ttl.map_or(freshness.default_ttl, aged),
        CacheBehavior::OverrideAlways => freshness.duration.unwrap_or(freshness.default_ttl),
        CacheBehavior::OverrideIfOriginMissing => origin_ttl
            .map(aged)
            .or(freshness.duration)
            .unwrap_or(freshness.default_ttl),
    };
    let (swr, sie) = stale_windows(control.as_ref(), freshness);
    // Stale at once is still worth storing when it can be revalidated (validators,
    // no-cache) or served stale; otherwise it would only cost memory.
    let revalidate_always = control.as_ref().is_some_and(|cc| cc.no_cache())
        && freshness.behavior != CacheBehavior::OverrideAlways;
    if ttl.is_zero() && !revalidate_always && !has_validator(response) && swr == 0 && sie == 0 {
        return Err(Refusal::Uncacheable("no freshness information"));
    }
    let fresh_until = if ttl.is_zero() {
        // Stored but stale at once: every use revalidates.
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    } else {
        now.checked_add(ttl).unwrap_or(now)
    };
    let mut header = response.clone();
    if let Some(cc) = &control {
        cc.strip_private_headers(&mut header);
    }
    // Stored as if it had been here for `age` already: the `Age` this node sends counts on.
    let created = now.checked_sub(age).unwrap_or(now);
    Ok(CacheMeta::new(fresh_until, created, swr, sie, header))
}

/// The origin's freshness lifetime: `no-cache` (zero), `s-maxage`, `max-age`, then `Expires`;
/// `true` when it is relative to the response's generation (the directives), `false` for an
/// `Expires` date (already what is left).
fn origin_freshness(
    control: Option<&CacheControl>,
    response: &ResponseHeader,
    now: SystemTime,
) -> Option<(Duration, bool)> {
    control
        .and_then(|cc| cc.fresh_duration())
        .map(|ttl| (ttl, true))
        .or_else(|| {
            calculate_expires_header_time(response)
                .map(|expires| (expires.duration_since(now).unwrap_or(Duration::ZERO), false))
        })
}

/// The `Age` an upstream cache gave the response (RFC 9111 §5.1: delta-seconds; anything
/// else counts as none).
fn upstream_age(response: &ResponseHeader) -> Duration {
    response
        .headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

fn has_validator(response: &ResponseHeader) -> bool {
    response.headers.contains_key(http::header::ETAG)
        || response.headers.contains_key(http::header::LAST_MODIFIED)
}

/// Stale windows in seconds: `Cache-Control` first, then the route's settings.
fn stale_windows(control: Option<&CacheControl>, freshness: &Freshness) -> (u32, u32) {
    let secs =
        |d: Option<Duration>| d.map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    let swr = control
        .and_then(|cc| cc.serve_stale_while_revalidate_duration())
        .or(freshness.stale_while_revalidate);
    let sie = control
        .and_then(|cc| cc.serve_stale_if_error_duration())
        .or(freshness.stale_if_error);
    (secs(swr), secs(sie))
}

/// Whether a request carrying `Authorization` may be answered with this stored response.
pub fn serves_authorized_request(stored: &ResponseHeader) -> bool {
    CacheControl::from_resp_headers(stored).is_some_and(|cc| cc.allow_caching_authorized_req())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HONOR: Freshness = Freshness {
        behavior: CacheBehavior::HonorOrigin,
        duration: None,
        default_ttl: Duration::ZERO,
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

    fn ttl(meta: &CacheMeta, now: SystemTime) -> u64 {
        meta.fresh_until()
            .duration_since(now)
            .map_or(0, |d| d.as_secs())
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        let now = SystemTime::now();
        let both = response(200, &[("cache-control", "max-age=10, s-maxage=20")]);
        assert_eq!(ttl(&admit(&both, false, &HONOR, now).unwrap(), now), 20);
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(100));
        let max_age = response(
            200,
            &[("cache-control", "max-age=10"), ("expires", &expires)],
        );
        assert_eq!(ttl(&admit(&max_age, false, &HONOR, now).unwrap(), now), 10);
        let only_expires = response(200, &[("expires", &expires)]);
        let t = ttl(&admit(&only_expires, false, &HONOR, now).unwrap(), now);
        assert!((98..=100).contains(&t), "{t}");
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
                admit(&r, false, &always, now).unwrap_err(),
                Refusal::PrivateNoStore
            );
        }
    }

    #[test]
    fn no_cache_is_stored_stale_and_override_always_overrides_it() {
        let now = SystemTime::now();
        let r = response(200, &[("cache-control", "no-cache")]);
        let meta = admit(&r, false, &HONOR, now).unwrap();
        assert!(!meta.is_fresh(now));
        let always = Freshness {
            behavior: CacheBehavior::OverrideAlways,
            duration: Some(Duration::from_secs(60)),
            ..HONOR
        };
        assert_eq!(ttl(&admit(&r, false, &always, now).unwrap(), now), 60);
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
        assert_eq!(ttl(&admit(&silent, false, &missing, now).unwrap(), now), 30);
        let said = response(200, &[("cache-control", "max-age=5")]);
        assert_eq!(ttl(&admit(&said, false, &missing, now).unwrap(), now), 5);
    }

    #[test]
    fn silent_origin_uses_the_default_ttl_and_zero_means_not_stored() {
        let now = SystemTime::now();
        let silent = response(200, &[]);
        assert_eq!(
            admit(&silent, false, &HONOR, now).unwrap_err(),
            Refusal::Uncacheable("no freshness information")
        );
        let day = Freshness {
            default_ttl: Duration::from_secs(86_400),
            ..HONOR
        };
        assert_eq!(ttl(&admit(&silent, false, &day, now).unwrap(), now), 86_400);
    }

    #[test]
    fn set_cookie_vary_star_and_odd_statuses_are_not_stored() {
        let now = SystemTime::now();
        let cc = ("cache-control", "max-age=60");
        for (r, why) in [
            (response(200, &[cc, ("set-cookie", "a=b")]), "set-cookie"),
            (response(200, &[cc, ("vary", "accept, *")]), "vary *"),
            (response(206, &[cc]), "status not stored"),
            (response(500, &[cc]), "status not stored"),
        ] {
            assert_eq!(
                admit(&r, false, &HONOR, now).unwrap_err(),
                Refusal::Uncacheable(why)
            );
        }
    }

    #[test]
    fn authorization_needs_public_s_maxage_or_must_revalidate() {
        let now = SystemTime::now();
        let plain = response(200, &[("cache-control", "max-age=60")]);
        assert!(admit(&plain, true, &HONOR, now).is_err());
        assert!(!serves_authorized_request(&plain));
        let public = response(200, &[("cache-control", "public, max-age=60")]);
        assert!(admit(&public, true, &HONOR, now).is_ok());
        assert!(serves_authorized_request(&public));
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
        let meta = admit(&r, false, &route, now).unwrap();
        assert_eq!(meta.stale_while_revalidate_sec(), 7);
        assert_eq!(meta.stale_if_error_sec(), 50);
    }

    #[test]
    fn an_upstream_age_is_counted() {
        let now = SystemTime::now();
        let aged = response(200, &[("cache-control", "max-age=60"), ("age", "50")]);
        let meta = admit(&aged, false, &HONOR, now).unwrap();
        assert_eq!(ttl(&meta, now), 10, "50 of its 60 s were spent upstream");
        assert_eq!(
            meta.updated(),
            now - Duration::from_secs(50),
            "its Age counts on"
        );
        // Older than its lifetime: stale on arrival, so stored only if it can revalidate.
        let spent = response(200, &[("cache-control", "max-age=60"), ("age", "70")]);
        assert!(admit(&spent, false, &HONOR, now).is_err());
        let revalidatable = response(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("age", "70"),
                ("etag", "\"v1\""),
            ],
        );
        assert_eq!(
            ttl(&admit(&revalidatable, false, &HONOR, now).unwrap(), now),
            0
        );
        // An Expires date is already what is left; a route's override starts here.
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let dated = response(200, &[("expires", &expires), ("age", "20")]);
        assert!(ttl(&admit(&dated, false, &HONOR, now).unwrap(), now) >= 28);
        let always = Freshness {
            behavior: CacheBehavior::OverrideAlways,
            duration: Some(Duration::from_secs(100)),
            ..HONOR
        };
        assert_eq!(ttl(&admit(&aged, false, &always, now).unwrap(), now), 100);
        // An Age that is not delta-seconds is no age.
        let junk = response(200, &[("cache-control", "max-age=60"), ("age", "soon")]);
        assert_eq!(ttl(&admit(&junk, false, &HONOR, now).unwrap(), now), 60);
    }
}
