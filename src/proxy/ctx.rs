//! Per-request state, carried from hook to hook.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::HeaderValue;
use smallvec::SmallVec;

use crate::lifecycle::drain::InFlight;
use crate::rules::{Decision, Scheme};
use crate::tunnel::TunnelState;

use super::Snapshot;

/// What one request learned on its way through the hooks.
pub struct RequestCtx {
    /// When the request's context was made (its head had arrived); the log's `time_ms` is
    /// counted back from its end, so that a request reads the clock twice, not three times.
    pub started: Instant,
    /// `X-Portico-Ref`: unique per request, sent to the origin and to the client.
    pub request_id: RequestId,
    /// The configuration this request runs on, even if a reload swaps it meanwhile.
    pub snapshot: Option<Arc<Snapshot>>,
    pub decision: Option<Decision>,
    pub scheme: Scheme,
    pub client_ip: Option<IpAddr>,
    /// The client is a proxy in `trusted_proxies`: its forwarding headers are kept.
    pub forwarding_trusted: bool,
    /// The request's host, checked and normalised (`rules::request::normalise_host`:
    /// `name[:port]`, lower-case); `None` for an HTTP/1.0 request that names none. The
    /// cache key, `X-Forwarded-Host` and a shield's `Host` all come from it.
    pub host: Option<HeaderValue>,
    /// The listener the request came in on (index into the node's `listeners`).
    pub listener: Option<usize>,
    /// On a shield, for a request from a trusted edge: the edge's listener name
    /// (`X-Portico-Listener`), which then stands for this node's own.
    pub edge_listener: Option<HeaderValue>,
    /// Status of a response the edge wrote itself.
    pub edge_status: Option<u16>,
    pub edge_error: Option<&'static str>,
    /// `X-Cache` for requests the cache was not enabled for.
    pub cache_status: &'static str,
    /// The cache was enabled for this request (its phase then gives `X-Cache`).
    pub caching: bool,
    /// The request asks for part of the object (`cache::range_miss`): on a miss its `Range`
    /// goes to the origin.
    pub asks_for_part: bool,
    /// `X-Cache` earned by a response the policy refused to store.
    pub cache_refused: Option<&'static str>,
    /// The origin's `304` to this cache's revalidation, whose fields update the stored
    /// header (`proxy::caching::admit_response`).
    pub not_modified: Option<Box<pingora_http::ResponseHeader>>,
    /// Fields of the origin's response kept out of the stored copy, put back on the miss's
    /// own answer (`proxy::caching::restore_withheld`).
    pub withheld: Vec<(http::HeaderName, HeaderValue)>,
    /// Indexes (in the group) of the origins tried so far, in order; the last is the
    /// current one.
    pub tried: SmallVec<[usize; 4]>,
    pub origin_index: Option<usize>,
    pub upstream_status: Option<u16>,
    /// Request body bytes received so far (`limits::count_body`).
    pub request_body_bytes: u64,
    /// The connection guard counts this request's body waits until its end
    /// (`HeadGuard::body_done`).
    pub body_guarded: bool,
    /// The origin to try again on a fresh connection (a reused one was closed under us),
    /// and whether that already happened once.
    pub retry_fresh: Option<usize>,
    pub retried_fresh: bool,
    /// When the request went to the origin (the last attempt), and how long its response
    /// header took to come back.
    pub upstream_sent: Option<Instant>,
    pub origin_first_byte: Option<std::time::Duration>,
    /// Why the last attempt failed (its connection, or the origin dropping it unanswered),
    /// for the answer when no origin is left.
    pub last_connect_error: Option<String>,
    /// The same failure as the client may be told it (no origin addresses).
    pub last_connect_reason: Option<String>,
    /// Status of the response header sent to the client (set in `response_filter`).
    pub response_status: Option<u16>,
    pub tunnel: Option<TunnelState>,
    /// An HTTP/2 request's place in the connection caps while it goes to the origin
    /// (`limits::origin_place`); freed with the context.
    pub origin_place: Option<crate::connection::Admitted>,
    /// Held to the request's end: a draining node waits for it.
    pub in_flight: Option<InFlight>,
    /// The shield side of the request (`crate::tier`).
    pub tier: crate::tier::TierCtx,
}

impl RequestCtx {
    pub fn new() -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            request_id: RequestId::next(),
            snapshot: None,
            decision: None,
            scheme: Scheme::Http,
            client_ip: None,
            forwarding_trusted: false,
            host: None,
            listener: None,
            edge_listener: None,
            edge_status: None,
            edge_error: None,
            cache_status: crate::cache::status::CONFIG_NOCACHE,
            caching: false,
            asks_for_part: false,
            cache_refused: None,
            not_modified: None,
            withheld: Vec::new(),
            tried: SmallVec::new(),
            origin_index: None,
            upstream_status: None,
            request_body_bytes: 0,
            body_guarded: false,
            retry_fresh: None,
            retried_fresh: false,
            upstream_sent: None,
            origin_first_byte: None,
            last_connect_error: None,
            last_connect_reason: None,
            response_status: None,
            tunnel: None,
            origin_place: None,
            in_flight: None,
            tier: Default::default(),
        }
    }
}

impl RequestCtx {
    /// The normalised host (`name[:port]`), or `""` when the request named none.
    pub fn host(&self) -> &str {
        self.host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    }

    /// The name routes' `listeners:` are matched against: the edge's, for a request a shield
    /// took from a trusted edge; else this node's listener's, if it has one.
    pub fn listener_name(&self) -> Option<&str> {
        if self.tier.from_edge {
            return self.edge_listener.as_ref().and_then(|v| v.to_str().ok());
        }
        let snapshot = self.snapshot.as_ref()?;
        snapshot
            .engine
            .config
            .node
            .listeners
            .get(self.listener?)?
            .name
            .as_deref()
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx::new()
    }
}

/// A request's id: 24 hex digits, a per-process prefix (so restarts do not repeat ids) and
/// a counter, built without formatting. Held inline: a cache hit writes the digits into
/// its head and its log record and allocates nothing for them; a header value is made
/// only where a header map carries the id.
#[derive(Clone, Copy, Debug)]
pub struct RequestId([u8; ID_DIGITS]);

const ID_DIGITS: usize = 24;

impl RequestId {
    fn next() -> RequestId {
        static PREFIX: OnceLock<u32> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
            nanos ^ std::process::id().rotate_left(16)
        });
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut digits = [0u8; ID_DIGITS];
        write_hex(&mut digits[..8], u64::from(prefix));
        write_hex(&mut digits[8..], count);
        RequestId(digits)
    }

    /// The id another Portico node gave the request (a shield adopts its trusted edge's, so
    /// one id names the request on every tier): 24 hex digits, or `None`.
    pub fn adopt(value: &HeaderValue) -> Option<RequestId> {
        let digits = <[u8; ID_DIGITS]>::try_from(value.as_bytes()).ok()?;
        digits
            .iter()
            .all(u8::is_ascii_hexdigit)
            .then_some(RequestId(digits))
    }

    /// The digits, for a head written as text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Hex digits only (`next`, `adopt`): always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The id as a field value, marked sensitive: HPACK then writes it as a literal never
    /// indexed (RFC 7541 §6.2.3). A value no other message repeats would only take a place
    /// in each HTTP/2 connection's table, pushing out the fields that do repeat (`Server`,
    /// `Content-Type`, `Cache-Control`...), which then go out in full again. HTTP/1 writes
    /// it as any other value.
    pub fn header_value(&self) -> HeaderValue {
        let mut value =
            HeaderValue::from_bytes(&self.0).expect("hex digits are a valid header value");
        value.set_sensitive(true);
        value
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes the low `out.len()` hex digits of `value`, most significant first.
fn write_hex(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_24_hex_digits_and_differ() {
        let (a, b) = (RequestId::next(), RequestId::next());
        for id in [&a, &b] {
            assert_eq!(id.as_str().len(), 24);
            assert!(id.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        }
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str()[..8], b.as_str()[..8], "one prefix per process");
    }

    #[test]
    fn only_an_id_of_ours_is_adopted() {
        let id = RequestId::next();
        assert_eq!(
            RequestId::adopt(&id.header_value()).unwrap().as_str(),
            id.as_str()
        );
        for bad in [
            "",
            "xyz",
            "0123456789abcdef0123456",
            "0123456789abcdef0123456g",
        ] {
            assert!(
                RequestId::adopt(&HeaderValue::from_static(bad)).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn hex_digits_are_the_value_in_base_16() {
        let mut out = [0u8; 16];
        write_hex(&mut out, 0x0123_4567_89ab_cdef);
        assert_eq!(&out, b"0123456789abcdef");
        let mut short = [0u8; 4];
        write_hex(&mut short, 0xabc);
        assert_eq!(&short, b"0abc");
    }
}
