//! Whether a response may be stored, and for how long: RFC 9111 for a shared cache, with
//! Front Door's cache behaviours layered on top. Pure functions, tested without sockets.
//!
//! Choices where the RFC leaves room (documented in the README):
//! - `no-store` and `private` always win, even over `override_always`;
//! - a stored `Set-Cookie` is never kept (a shared cache would hand one user's cookie to
//!   everyone): a response with one is not stored unless `private="set-cookie"` or
//!   `no-cache="set-cookie"` keeps it out of the stored copy;
//! - `Vary: *` is never stored;
//! - RFC 9213's `CDN-Cache-Control`, when it holds a directive, is this cache's policy:
//!   `Cache-Control` and `Expires` are then ignored here (they still reach the client);
//! - `override_always` overrides `no-cache` and every freshness directive, as Front Door does;
//! - a page (HTML, JSON, XML) under a static file's name (`/account/x.css`) is not stored
//!   on a lifetime this cache gave it, only on the origin's own (web cache deception,
//!   `cache::deception`);
//! - any final status is stored when the origin gives it explicit freshness (RFC 9111 §3),
//!   except 206 and 304, and except a status this cache does not understand when
//!   `must-understand` is present (which, for a status it understands, overrides
//!   `no-store`, RFC 9111 §5.2.2.3); a configured lifetime (the
//!   route's `duration`, `cache_default_ttl`) only applies to the statuses RFC 9110 §15.1
//!   calls heuristically cacheable (206 is never stored: a range miss passes its part on,
//!   `cache::range_miss`, and stored ranges are cut from whole objects);
//! - a response the origin gives no lifetime gets `cache_default_ttl` when one is set, else
//!   RFC 9111 §4.2.2's heuristic (a tenth of the time since `Last-Modified`, at most
//!   `cache_heuristic_max`) if its status is heuristically cacheable or it is `public`;
//! - the age a response arrives with is RFC 9111 §4.2.3's corrected initial age (the
//!   origin's `Date` and any upstream `Age`), in whole seconds as both are; the origin's
//!   lifetime (`max-age`, `s-maxage`, `Expires` − `Date`) is shortened by it; a route's
//!   `duration` and `cache_default_ttl` are not (they start here).

use std::time::{Duration, SystemTime};

use http::header;
use pingora_cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

use crate::config::model::CacheBehavior;

mod age;
mod fields;

use age::date_value;
pub use age::{corrected_initial_age, http_date};
pub use fields::{merge_not_modified, strip_hop_by_hop, withheld};

/// What the route (and the rules that fired) say about freshness.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub behavior: CacheBehavior,
    pub duration: Option<Duration>,
    pub default_ttl: Duration,
    /// The longest lifetime RFC 9111 §4.2.2's `Last-Modified` heuristic gives (`0s`: none).
    pub heuristic_max: Duration,
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

/// Refusal reasons that say nothing about the key's next response, so they must not make
/// the key bypass the cache (and its collapsing) for everyone: an error or a partial
/// response is a moment's answer, and `authorization` belongs to one request.
pub const TRANSIENT_REASONS: &[&str] = &[
    REASON_AUTHORIZATION,
    REASON_ERROR_STATUS,
    REASON_PARTIAL,
    REASON_REFRESH,
    REASON_REQUEST_ERROR,
];
pub const REASON_AUTHORIZATION: &str = "authorization";
pub const REASON_ERROR_STATUS: &str = "error status without freshness";
pub const REASON_PARTIAL: &str = "partial content";
/// A refresh of a stored object was not storable: the stored object stays (and may still
/// be served within its stale windows), so the key keeps using the cache.
pub const REASON_REFRESH: &str = "refresh not storable";
/// A status that speaks of the request (its form, size, framing, timing), not of the
/// resource: stored under the URL's key, one client's oversized or malformed request
/// would answer everyone's ("cache-poisoned denial of service"). Never stored, whatever
/// freshness it carries; not remembered either (the next request is another request).
pub const REASON_REQUEST_ERROR: &str = "status about the request";
/// A page or API answer (its `Content-Type`) to a path named like a static file, which
/// only this cache, not the origin, would have given a lifetime (`cache::deception`).
pub const REASON_PAGE_AS_STATIC_FILE: &str = "page under a static file's name";

/// The statuses [`REASON_REQUEST_ERROR`] refuses: 400, 408, 411, 413, 417, 421, 431.
pub fn status_is_about_the_request(status: u16) -> bool {
    matches!(status, 400 | 408 | 411 | 413 | 417 | 421 | 431)
}

/// Final statuses this cache understands (RFC 9110 §15): what `must-understand` asks for.
/// Not 206 (ranges are served from whole objects) nor 304 (never a stored response of its
/// own).
pub fn status_is_understood(status: u16) -> bool {
    matches!(status,
        200..=205 | 300..=303 | 305 | 307 | 308 | 400..=418 | 421 | 422 | 426 | 500..=505)
}

/// Statuses RFC 9110 §15.1 makes heuristically cacheable (206 aside): the only ones a
/// configured lifetime applies to.
pub fn status_is_heuristic(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// What the cache knows about the exchange besides the response.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// When the response header arrived.
    pub at: SystemTime,
    /// From sending the request to receiving the response header (RFC 9111 §4.2.3's
    /// `response_delay`).
    pub delay: Duration,
    pub request_has_authorization: bool,
    /// The request's path names a static file (`cache::deception::names_static_file`).
    pub path_names_static_file: bool,
}

impl Received {
    pub fn now() -> Received {
        Received {
            at: SystemTime::now(),
            delay: Duration::ZERO,
            request_has_authorization: false,
            path_names_static_file: false,
        }
    }
}

/// The cache directives this cache obeys in `response`, and whether they came from a
/// field targeted at CDNs: `CDN-Cache-Control` (RFC 9213) when it is a valid Structured
/// Field Dictionary (`cache::targeted`) holding a directive, else `Surrogate-Control` when
/// a directive of it applies to this cache (`cache::surrogate`), else `Cache-Control`.
/// With a targeted field, `Cache-Control` and `Expires` are ignored.
pub fn directives(response: &ResponseHeader) -> (Option<CacheControl>, bool) {
    let mut lines = response
        .headers
        .get_all(CDN_CACHE_CONTROL)
        .iter()
        .peekable();
    let valid =
        lines.peek().is_some() && lines.all(|line| super::targeted::is_valid_line(line.as_bytes()));
    match valid
        .then(|| CacheControl::from_resp_headers_named(CDN_CACHE_CONTROL, response))
        .flatten()
    {
        Some(targeted) if !targeted.directives.is_empty() => (Some(targeted), true),
        _ => match super::surrogate::applicable(response) {
            Some(surrogate) => (Some(surrogate), true),
            None => (CacheControl::from_resp_headers(response), false),
        },
    }
}

/// RFC 9213 §3: the targeted field for CDN caches, which an edge and a shield both are.
const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

/// Decides whether `response` is stored and builds its metadata (the stored header is a
/// cleaned copy; the client gets `response` as it is).
pub fn admit(
    response: &ResponseHeader,
    freshness: &Freshness,
    received: Received,
) -> Result<CacheMeta, Refusal> {
    let now = received.at;
    let (control, targeted) = directives(response);
    let status = response.status.as_u16();
    // RFC 9111 §5.2.2.3: `must-understand` stores only a status the cache understands, and
    // then `no-store` is for caches that do not.
    let must_understand = control
        .as_ref()
        .is_some_and(|cc| cc.has_key("must-understand"));
    if must_understand && !status_is_understood(status) {
        return Err(Refusal::Uncacheable("status not understood"));
    }
    if control
        .as_ref()
        .is_some_and(|cc| (cc.no_store() && !must_understand) || cc.private())
    {
        return Err(Refusal::PrivateNoStore);
    }
    if status == 206 {
        return Err(Refusal::Uncacheable(REASON_PARTIAL));
    }
    if status_is_about_the_request(status) {
        return Err(Refusal::Uncacheable(REASON_REQUEST_ERROR));
    }
    if !(200..600).contains(&status) || status == 304 {
        return Err(Refusal::Uncacheable("status not storable"));
    }
    if response.headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == b"*")
    }) {
        return Err(Refusal::Uncacheable("vary *"));
    }
    // RFC 9111 §3.5: a response to a request with Authorization is stored only if it says so.
    if received.request_has_authorization
        && !control
            .as_ref()
            .is_some_and(|cc| cc.allow_caching_authorized_req())
    {
        return Err(Refusal::Uncacheable(REASON_AUTHORIZATION));
    }

    // The copy that is stored: no hop-by-hop fields, nor those `private=`/`no-cache=` name.
    let mut stored = response.clone();
    strip_hop_by_hop(&mut stored, true);
    if let Some(cc) = &control {
        cc.strip_private_headers(&mut stored);
    }
    if stored.headers.contains_key(header::SET_COOKIE) {
        return Err(Refusal::Uncacheable("set-cookie"));
    }

    let age = corrected_initial_age(response, received);
    let heuristic = status_is_heuristic(status);
    let origin_ttl = origin_lifetime(control.as_ref(), targeted, response, now)
        .map(|lifetime| lifetime.saturating_sub(age));
    // RFC 9111 §4.2.2: a heuristically cacheable status, or any marked `public`, may get a
    // lifetime from its `Last-Modified` when the origin gives none.
    let public = control.as_ref().is_some_and(|cc| cc.public());
    let from_last_modified = || {
        (heuristic || public)
            .then(|| heuristic_lifetime(response, freshness.heuristic_max, now))
            .flatten()
            .map(|lifetime| lifetime.saturating_sub(age))
    };
    // A configured default is the operator's word: it wins over the heuristic.
    let silent_origin = || match freshness.default_ttl {
        Duration::ZERO => from_last_modified().unwrap_or(Duration::ZERO),
        configured => configured,
    };
    // A configured lifetime applies only to heuristically cacheable statuses; any other
    // status is stored on the origin's word alone.
    let ttl = if heuristic {
        Some(match freshness.behavior {
            CacheBehavior::HonorOrigin => origin_ttl.unwrap_or_else(silent_origin),
            CacheBehavior::OverrideAlways => freshness.duration.unwrap_or(freshness.default_ttl),
            CacheBehavior::OverrideIfOriginMissing => origin_ttl
                .or(freshness.duration)
                .unwrap_or_else(silent_origin),
        })
    } else {
        origin_ttl.or_else(from_last_modified)
    };
    let overridden = heuristic && freshness.behavior == CacheBehavior::OverrideAlways;
    let Some(ttl) = ttl else {
        return Err(Refusal::Uncacheable(if status >= 500 {
            REASON_ERROR_STATUS
        } else {
            "no explicit freshness for this status"
        }));
    };
    if received.path_names_static_file
        && (overridden || origin_ttl.is_none())
        && response
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| super::deception::is_page_type(value.as_bytes()))
    {
        return Err(Refusal::Uncacheable(REASON_PAGE_AS_STATIC_FILE));
    }
    let (swr, sie) = stale_windows(control.as_ref(), freshness);
    // Stale at once is still worth storing when it can be revalidated (validators,
    // no-cache) or served stale; otherwise it would only cost memory.
    let revalidate_always = control.as_ref().is_some_and(|cc| cc.no_cache()) && !overridden;
    if ttl.is_zero() && !revalidate_always && !has_validator(response) && swr == 0 && sie == 0 {
        return Err(Refusal::Uncacheable(if status >= 500 {
            REASON_ERROR_STATUS
        } else {
            "no freshness information"
        }));
    }
    let fresh_until = if ttl.is_zero() {
        // Stored but stale at once: every use revalidates.
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    } else {
        now.checked_add(ttl).unwrap_or(now)
    };
    // The Age a hit sends is computed from `created`; a stored one would only be stale.
    stored.remove_header(&header::AGE);
    // RFC 9110 §6.6.1: a recipient with a clock adds the Date the origin left out.
    if !stored.headers.contains_key(header::DATE) {
        let _ = stored.insert_header(header::DATE, httpdate::fmt_http_date(now));
    }
    // Stored as if it had been here for `age` already: the `Age` this node sends counts on.
    let created = now.checked_sub(age).unwrap_or(now);
    Ok(CacheMeta::new(fresh_until, created, swr, sie, stored))
}

/// The origin's freshness lifetime (RFC 9111 §4.2.1): `s-maxage`, `max-age` (zero for
/// `no-cache`), else `Expires` − `Date` (not under a `targeted` field). An `Expires` that is
/// invalid, repeated, or in the past means a lifetime of zero (already stale), never "no
/// information".
fn origin_lifetime(
    control: Option<&CacheControl>,
    targeted: bool,
    response: &ResponseHeader,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(ttl) = control.and_then(|cc| cc.fresh_duration()) {
        return Some(ttl);
    }
    if targeted {
        return None;
    }
    let mut expires = response.headers.get_all(header::EXPIRES).iter();
    let first = expires.next()?;
    let Some(expires) = expires
        .next()
        .is_none()
        .then(|| http_date(first.as_bytes()))
        .flatten()
    else {
        return Some(Duration::ZERO);
    };
    let date = date_value(response).unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// RFC 9111 §4.2.2's heuristic, as the RFC suggests it: a tenth of the time between the
/// response's `Last-Modified` and its `Date` (a document unchanged for ten days is likely
/// to stay so for one more), at most `max`. `None` without a valid `Last-Modified`, or
/// with one after `Date`.
fn heuristic_lifetime(
    response: &ResponseHeader,
    max: Duration,
    now: SystemTime,
) -> Option<Duration> {
    if max.is_zero() {
        return None;
    }
    let modified = http_date(response.headers.get(header::LAST_MODIFIED)?.as_bytes())?;
    let date = date_value(response).unwrap_or(now);
    let unchanged_for = date.duration_since(modified).ok()?;
    Some((unchanged_for / 10).min(max))
}

fn has_validator(response: &ResponseHeader) -> bool {
    response.headers.contains_key(header::ETAG)
        || response.headers.contains_key(header::LAST_MODIFIED)
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
    directives(stored)
        .0
        .is_some_and(|cc| cc.allow_caching_authorized_req())
}

#[cfg(test)]
mod tests;
