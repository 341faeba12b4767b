//! `Surrogate-Control`, the Edge Architecture's cache field for surrogates (W3C Note
//! "Edge Architecture Specification 1.0", 2001; what Fastly and Akamai obey): an origin's
//! word to the CDN's caches, apart from what it tells browsers in `Cache-Control`.
//!
//! ```text
//! Surrogate-Control: max-age=3600+600, no-store;other-cdn, content="ESI/1.0"
//! ```
//!
//! A directive applies to this cache when it names no device (`;token`) or names
//! [`DEVICE_TOKEN`], which the edge announces on the requests it may store the answers to
//! (`Surrogate-Capability: portico="Surrogate/1.0"`). A directive aimed at this cache
//! wins over the same one aimed at every surrogate. This cache obeys `max-age` (its `+N`
//! is a grace period for when the origin fails: `stale-if-error=N`), `no-store` and
//! `no-store-remote` (a CDN is a remote surrogate). A member that does not parse (`max-age
//! =1`, `max-age=1x`) is ignored, alone; one with a name this cache does not know (`content`)
//! too. When at least one directive applies, the field decides the way `CDN-Cache-Control`
//! does (`cache::policy::directives`): `Cache-Control` and `Expires` are then ignored by
//! this cache. The field is passed on to clients unchanged (a tier below reads it too).

use pingora_cache::cache_control::{CacheControl, DirectiveKey, DirectiveMap, DirectiveValue};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

/// The name this cache answers to in `;token` targets.
pub const DEVICE_TOKEN: &str = "portico";

/// The request field an edge sends on requests whose answers it may store.
pub const CAPABILITY_NAME: &str = "surrogate-capability";

/// This cache's entry in `Surrogate-Capability`.
pub const CAPABILITY: &str = "portico=\"Surrogate/1.0\"";

const FIELD: &str = "surrogate-control";

/// Adds this cache to `request`'s `Surrogate-Capability`, after any surrogate in front of
/// it, unless it is there already (a shield asked by an edge, both Portico).
pub fn announce(request: &mut RequestHeader) -> Result<()> {
    let announced = request.headers.get_all(CAPABILITY_NAME).iter().any(|line| {
        split_outside_quotes(line.as_bytes(), b',').any(|member| {
            let device = member.trim_ascii().split(|b| *b == b'=').next();
            device.is_some_and(|d| d.eq_ignore_ascii_case(DEVICE_TOKEN.as_bytes()))
        })
    });
    if !announced {
        request.append_header(CAPABILITY_NAME, CAPABILITY)?;
    }
    Ok(())
}

/// The directives of `response`'s `Surrogate-Control` lines that apply to this cache, as
/// cache directives (`max-age`, `stale-if-error`, `no-store`); `None` when none applies.
pub fn applicable(response: &ResponseHeader) -> Option<CacheControl> {
    let mut lines = response.headers.get_all(FIELD).iter().peekable();
    lines.peek()?;
    let mut everyone = Directives::default();
    let mut mine = Directives::default();
    for line in lines {
        for member in split_outside_quotes(line.as_bytes(), b',') {
            let Some((directive, target)) = parse_member(member) else {
                continue;
            };
            match target {
                None => everyone.set(directive),
                Some(token) if token.eq_ignore_ascii_case(DEVICE_TOKEN.as_bytes()) => {
                    mine.set(directive)
                }
                Some(_) => {}
            }
        }
    }
    let chosen = Directives {
        max_age: mine.max_age.or(everyone.max_age),
        no_store: mine.no_store || everyone.no_store,
    };
    chosen.into_cache_control()
}

/// What this cache takes from the field.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Directives {
    /// Seconds fresh, and the grace period after them.
    max_age: Option<(u64, Option<u64>)>,
    no_store: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    MaxAge(u64, Option<u64>),
    NoStore,
}

impl Directives {
    fn set(&mut self, directive: Directive) {
        match directive {
            Directive::MaxAge(fresh, grace) => self.max_age = Some((fresh, grace)),
            Directive::NoStore => self.no_store = true,
        }
    }

    fn into_cache_control(self) -> Option<CacheControl> {
        let mut directives = DirectiveMap::new();
        if self.no_store {
            directives.insert(DirectiveKey::NoStore, None);
        }
        if let Some((fresh, grace)) = self.max_age {
            directives.insert(DirectiveKey::MaxAge, Some(seconds(fresh)));
            if let Some(grace) = grace {
                directives.insert(DirectiveKey::StaleIfError, Some(seconds(grace)));
            }
        }
        (!directives.is_empty()).then_some(CacheControl {
            directives,
            allow_float_seconds: false,
        })
    }
}

/// Delta-seconds as pingora-cache reads them (it caps what overflows a `u32`).
fn seconds(value: u64) -> DirectiveValue {
    DirectiveValue(value.to_string().into_bytes())
}

/// One member (`name[=value][;token]`, trimmed): the directive this cache obeys and the
/// device it names, or `None` for one it ignores.
fn parse_member(member: &[u8]) -> Option<(Directive, Option<&[u8]>)> {
    let mut parts = split_outside_quotes(member.trim_ascii(), b';');
    let directive = parts.next()?;
    let target = parts.next();
    if parts.next().is_some() || target.is_some_and(|t| !is_token(t)) {
        return None; // one device at most, named by a token
    }
    let (name, value) = match directive.iter().position(|b| *b == b'=') {
        Some(at) => (&directive[..at], Some(&directive[at + 1..])),
        None => (directive, None),
    };
    if !is_token(name) {
        return None; // `max-age =1`: not the directive it looks like
    }
    let known = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
    if known("max-age") {
        let value = value?;
        let (fresh, grace) = match value.iter().position(|b| *b == b'+') {
            Some(at) => (&value[..at], Some(delta_seconds(&value[at + 1..])?)),
            None => (value, None),
        };
        Some((Directive::MaxAge(delta_seconds(fresh)?, grace), target))
    } else if (known("no-store") || known("no-store-remote")) && value.is_none() {
        Some((Directive::NoStore, target))
    } else {
        None
    }
}

/// Digits only (no sign, space or fraction), saturating.
fn delta_seconds(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// RFC 9110 §5.6.2's token characters, at least one.
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// `bytes` split at each `separator` outside a quoted string (`content="ESI/1.0, x"`).
fn split_outside_quotes(bytes: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    let mut escaped = false;
    bytes.split(move |b| {
        if escaped {
            escaped = false;
        } else if quoted && *b == b'\\' {
            escaped = true;
        } else if *b == b'"' {
            quoted = !quoted;
        } else if *b == separator && !quoted {
            return true;
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(lines: &[&str]) -> Option<CacheControl> {
        let mut response = ResponseHeader::build(200, None).unwrap();
        for line in lines {
            response.append_header(FIELD, *line).unwrap();
        }
        applicable(&response)
    }

    fn max_age(lines: &[&str]) -> Option<u32> {
        control(lines).and_then(|cc| cc.max_age().unwrap())
    }

    #[test]
    fn max_age_in_any_case_with_extensions_and_huge_values() {
        assert_eq!(max_age(&["max-age=3600"]), Some(3600));
        assert_eq!(max_age(&["MaX-aGe=3600"]), Some(3600));
        assert_eq!(max_age(&["foobar, max-age=60"]), Some(60));
        assert_eq!(max_age(&["content=\"ESI/1.0, x\", max-age=60"]), Some(60));
        assert_eq!(max_age(&["max-age=2147483648"]), Some(2147483648));
        // pingora-cache caps what overflows a `u32` at 2^31 - 1.
        assert_eq!(max_age(&["max-age=99999999999"]), Some(i32::MAX as u32));
        assert_eq!(max_age(&["max-age=0"]), Some(0));
    }

    #[test]
    fn a_member_that_does_not_parse_is_ignored_alone() {
        for bad in [
            "max-age =100",
            "max-age= 100",
            "max-age=1x",
            "max-age",
            "max-age=-1",
        ] {
            assert!(control(&[bad]).is_none(), "{bad}");
            assert_eq!(max_age(&[bad, "max-age=5"]), Some(5), "{bad}");
        }
        assert!(control(&["foo"]).is_none());
        assert!(control(&["content=\"ESI/1.0\""]).is_none());
        assert!(control(&[]).is_none());
    }

    #[test]
    fn targets_pick_this_cache_and_win_over_untargeted_directives() {
        assert_eq!(max_age(&["max-age=3600;portico"]), Some(3600));
        assert_eq!(max_age(&["max-age=3600;Portico"]), Some(3600));
        assert!(control(&["max-age=3600;not-for-you"]).is_none());
        assert_eq!(max_age(&["max-age=10;portico, max-age=3600"]), Some(10));
        assert_eq!(max_age(&["max-age=3600", "max-age=10;portico"]), Some(10));
        assert_eq!(max_age(&["max-age=10;other, max-age=3600"]), Some(3600));
        assert!(control(&["max-age=1;a;b"]).is_none());
    }

    #[test]
    fn the_capability_is_announced_once_after_the_ones_in_front() {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        announce(&mut request).unwrap();
        announce(&mut request).unwrap();
        let lines = |r: &RequestHeader| -> Vec<String> {
            let all = r.headers.get_all(CAPABILITY_NAME).iter();
            all.map(|v| v.to_str().unwrap().to_string()).collect()
        };
        assert_eq!(lines(&request), [CAPABILITY]);
        let mut behind = RequestHeader::build("GET", b"/", None).unwrap();
        behind
            .append_header(CAPABILITY_NAME, "front=\"Surrogate/1.0 ESI/1.0\"")
            .unwrap();
        announce(&mut behind).unwrap();
        assert_eq!(
            lines(&behind),
            ["front=\"Surrogate/1.0 ESI/1.0\"", CAPABILITY]
        );
    }

    #[test]
    fn no_store_and_the_grace_period() {
        assert!(control(&["no-store"]).unwrap().no_store());
        assert!(control(&["no-store-remote"]).unwrap().no_store());
        assert!(control(&["no-store;elsewhere"]).is_none());
        assert!(control(&["no-store=1"]).is_none());
        let graced = control(&["max-age=60+600"]).unwrap();
        assert_eq!(graced.max_age().unwrap(), Some(60));
        assert_eq!(graced.stale_if_error().unwrap(), Some(600));
        assert!(control(&["max-age=60+"]).is_none());
    }
}
