//! Dates and ages (RFC 9110 §5.6.7, RFC 9111 §4.2.3): the three HTTP-date formats, and the
//! age a response arrives with.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header;
use pingora_http::ResponseHeader;

use super::Received;

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

pub(super) fn date_value(response: &ResponseHeader) -> Option<SystemTime> {
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
