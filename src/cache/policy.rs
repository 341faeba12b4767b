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
//! - any final status is stored when the origin gives it explicit freshness (RFC 9111 §3),
//!   except 206 and 304, and except a status this cache does not understand when
//!   `must-understand` is present (which, for a status it understands, overrides
//!   `no-store`, RFC 9111 §5.2.2.3); a configured lifetime (the
//!   route's `duration`, `cache_default_ttl`) only applies to the statuses RFC 9110 §15.1
//!   calls heuristically cacheable (206 is never stored: ranges come from whole objects);
//! - a response the origin gives no lifetime gets `cache_default_ttl` when one is set, else
//!   RFC 9111 §4.2.2's heuristic (a tenth of the time since `Last-Modified`, at most
//!   `cache_heuristic_max`) if its status is heuristically cacheable or it is `public`;
//! - the age a response arrives with is RFC 9111 §4.2.3's corrected initial age (the
//!   origin's `Date` and any upstream `Age`), in whole seconds as both are; the origin's
//!   lifetime (`max-age`, `s-maxage`, `Expires` − `Date`) is shortened by it; a route's
//!   `duration` and `cache_default_ttl` are not (they start here).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName};
use pingora_cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

use crate::config::model::CacheBehavior;

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
];
pub const REASON_AUTHORIZATION: &str = "authorization";
pub const REASON_ERROR_STATUS: &str = "error status without freshness";
pub const REASON_PARTIAL: &str = "partial content";
/// A refresh of a stored object was not storable: the stored object stays (and may still
/// be served within its stale windows), so the key keeps using the cache.
pub const REASON_REFRESH: &str = "refresh not storable";

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
}

impl Received {
    pub fn now() -> Received {
        Received {
            at: SystemTime::now(),
            delay: Duration::ZERO,
            request_has_authorization: false,
        }
    }
}

/// The cache directives this cache obeys in `response`, and whether they came from a
/// targeted field (RFC 9213): `CDN-Cache-Control` when it is a valid Structured Field
/// Dictionary (`cache::targeted`) holding a directive, else `Cache-Control`. With the
/// targeted field, `Cache-Control` and `Expires` are ignored.
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
        _ => (CacheControl::from_resp_headers(response), false),
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

/// An HTTP-date in any of the three formats a recipient must accept (RFC 9110 §5.6.7):
/// IMF-fixdate, the obsolete RFC 850 form and asctime.
pub fn http_date(value: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(value).ok()?.trim();
    httpdate::parse_http_date(text)
        .ok()
        .or_else(|| lenient_http_date(text))
}

/// A date in one of the three formats with its names in another case (`THU`, `aug`,
/// `gMT`) or a weekday the date does not fall on: still the date it says (RFC 9110 §5.6.7
/// asks recipients to be robust, and the weekday adds nothing to the date). Any other
/// departure from the formats (another zone, a two-digit year in IMF-fixdate, missing
/// punctuation) is still no date.
fn lenient_http_date(text: &str) -> Option<SystemTime> {
    const SHORT: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const LONG: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    if text.len() > 40 || !text.is_ascii() {
        return None;
    }
    // Each word title-cased, the zone in capitals.
    let mut canonical = String::with_capacity(text.len());
    let mut at_word_start = true;
    for c in text.chars() {
        canonical.push(if at_word_start {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        at_word_start = !c.is_ascii_alphabetic();
    }
    let canonical = canonical.replace("Gmt", "GMT");
    let weekday = canonical.find(|c: char| !c.is_ascii_alphabetic())?;
    let names = if weekday > 3 { &LONG[..] } else { &SHORT[..] };
    names.iter().find_map(|name| {
        httpdate::parse_http_date(&format!("{name}{}", &canonical[weekday..])).ok()
    })
}

fn date_value(response: &ResponseHeader) -> Option<SystemTime> {
    http_date(response.headers.get(header::DATE)?.as_bytes())
}

/// RFC 9111 §4.2.3's `corrected_initial_age`: the larger of the apparent age (`now` −
/// `Date`) and the upstream's `Age` plus the response delay. Whole seconds: `Date` has no
/// finer resolution, so a response dated this second is of age 0.
pub fn corrected_initial_age(response: &ResponseHeader, received: Received) -> Duration {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let apparent =
        date_value(response).map_or(0, |date| secs(received.at).saturating_sub(secs(date)));
    let corrected =
        upstream_age(response).map_or(0, |age| age.saturating_add(received.delay.as_secs()));
    Duration::from_secs(apparent.max(corrected))
}

/// The `Age` an upstream cache gave the response (RFC 9111 §5.1: delta-seconds; anything
/// else counts as none).
fn upstream_age(response: &ResponseHeader) -> Option<u64> {
    // The first line's first member: `Age: 7200, 0` is 7200 old, as two lines would be.
    let value = response.headers.get(header::AGE)?.as_bytes();
    let digits = value
        .split(|b| *b == b',')
        .next()
        .unwrap_or(value)
        .trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Too large to count is as old as it gets.
    Some(
        std::str::from_utf8(digits)
            .ok()?
            .parse()
            .unwrap_or(u64::MAX / 2),
    )
}

fn has_validator(response: &ResponseHeader) -> bool {
    response.headers.contains_key(header::ETAG)
        || response.headers.contains_key(header::LAST_MODIFIED)
}

/// Removes hop-by-hop fields (RFC 9110 §7.6.1): `Connection` and the fields it lists,
/// `Keep-Alive`, `Proxy-Connection`, `TE` and `Upgrade` (a `101` is left alone); with
/// `framing`, also `Transfer-Encoding` (a stored copy is reframed when it is served).
pub fn strip_hop_by_hop(response: &mut ResponseHeader, framing: bool) {
    if response.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return; // the upgrade's own fields: the tunnel needs them
    }
    // Removing a name costs a hashed lookup: remove only the names present, found (with
    // what `Connection` lists) in one pass over the header's fields.
    let mut present: smallvec::SmallVec<[HeaderName; 4]> = smallvec::SmallVec::new();
    for (name, value) in response.headers.iter() {
        if !is_hop_by_hop(name) || (!framing && name == header::TRANSFER_ENCODING) {
            continue;
        }
        if name == header::CONNECTION {
            // A listed framing field is the connection's business: the body reader needs it.
            let listed = listed_names(value).filter(|name| framing || !is_framing(name));
            present.extend(listed);
        }
        if !present.contains(name) {
            present.push(name.clone());
        }
    }
    for name in &present {
        response.remove_header(name);
    }
}

/// Hop-by-hop whatever `Connection` says (`Transfer-Encoding` is framing: see callers),
/// told apart by length first: this runs over every response's names.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    match name.as_str().len() {
        2 => name == header::TE,
        7 => name == header::UPGRADE,
        10 => name == header::CONNECTION || name.as_str() == "keep-alive",
        16 => name.as_str() == "proxy-connection",
        17 => name == header::TRANSFER_ENCODING,
        _ => false,
    }
}

/// The fields `Connection` names, in all its lines.
fn connection_listed(response: &ResponseHeader) -> smallvec::SmallVec<[HeaderName; 2]> {
    response
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(listed_names)
        .collect()
}

/// The field names one `Connection` line lists. The usual options, `keep-alive` and
/// `close`, are skipped before a parse: `close` is no field, `Keep-Alive` is hop-by-hop
/// anyway, and parsing an unknown name copies it (on every response from an origin that
/// says `keep-alive`).
fn listed_names(value: &http::HeaderValue) -> impl Iterator<Item = HeaderName> + '_ {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|name| {
            !name.eq_ignore_ascii_case(b"keep-alive") && !name.eq_ignore_ascii_case(b"close")
        })
        .filter_map(|name| HeaderName::from_bytes(name).ok())
}

fn is_framing(name: &HeaderName) -> bool {
    name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH
}

/// The end-to-end fields of `response` that its stored copy lacks (`private=`/`no-cache=`
/// fields, `Set-Cookie` so named, an upstream `Age`): pingora sends a miss's client the
/// stored header, and these go back on it, so the client that caused the miss gets the
/// origin's response whole.
pub fn withheld(
    response: &ResponseHeader,
    stored: &ResponseHeader,
) -> Vec<(HeaderName, http::HeaderValue)> {
    let listed = connection_listed(response);
    response
        .headers
        .iter()
        .filter(|(name, _)| {
            !stored.headers.contains_key(*name) && !is_hop_by_hop(name) && !listed.contains(name)
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// The stored header updated by a `304` (RFC 9111 §3.2, §4.3.4): each field the `304`
/// carries replaces the stored one's lines, except hop-by-hop fields and the framing the
/// stored body depends on (`Content-Length`, `Transfer-Encoding`).
pub fn merge_not_modified(
    stored: &ResponseHeader,
    not_modified: &ResponseHeader,
) -> ResponseHeader {
    let mut update = not_modified.clone();
    strip_hop_by_hop(&mut update, true);
    update.remove_header(&header::CONTENT_LENGTH);
    let mut merged = stored.clone();
    for name in update.headers.keys() {
        merged.remove_header(name);
    }
    for (name, value) in update.headers.iter() {
        let _ = merged.append_header(name.clone(), value.clone());
    }
    merged
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
mod tests {
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
}
