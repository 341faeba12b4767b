//! What crosses the edge → shield hop, each way.
//!
//! **Request.** The edge forwards the client's request as it came: its path and query (in
//! origin-form), no rule edits, no `origin_path`, with the normalised host its cache key
//! used as `Host` (lower-case, no port). The shield runs the same `rules/` on it, so it
//! reaches the same route, the same rule actions and the same cache key. Only the facts the
//! shield cannot see are carried: the client's address (appended to `X-Forwarded-For`),
//! scheme (`X-Forwarded-Proto`) and the name of the edge listener it came in on
//! (`X-Portico-Listener`, for routes scoped by `listeners:`; the shield's node file names
//! its listeners alike). A shield believes them only from an address in its
//! `trusted_edges`, and with them the edge's request id (`X-Portico-Ref`), so one id names
//! the request on every tier; from anyone else they are a client's claims, and ignored. `Via` and
//! `CDN-Loop` get this node's name, so a loop through tiers ends in `508`. A WebSocket
//! upgrade crosses too (with `shield_all`), and each tier handles it as its rules say.
//!
//! **Response.** The shield's `X-Cache` says whether it answered from its cache. The edge
//! reads it only on a response from a shield it chose (a client or an origin cannot forge
//! it), removes it before its own cache stores the response, and answers `TCP_REMOTE_HIT`
//! instead of its own `TCP_MISS` when the shield's was a hit.

use std::net::IpAddr;

use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::cache::status;
use crate::proxy::headers::{self, NodeHeaders, X_CACHE};
use crate::proxy::RequestCtx;
use crate::rules::Scheme;

use super::Tiers;

/// The edge's listener name, for routes scoped by `listeners:` (believed from trusted edges
/// only, like `X-Forwarded-Proto`).
pub const LISTENER: &str = "x-portico-listener";

/// On a shield, for a request from a trusted edge: the client's address, scheme and
/// listener as the edge saw them, so the rules decide as they did on the edge.
pub fn adopt_edge_facts(session: &Session, ctx: &mut RequestCtx, tiers: &Tiers) {
    if !tiers.trusts(ctx.client_ip) {
        return;
    }
    let request = session.req_header();
    ctx.tier.from_edge = true;
    if let Some(ip) = last_forwarded_for(request) {
        ctx.client_ip = Some(ip);
    }
    // One id for the request on every tier: the shield's log line and the origin's
    // `X-Portico-Ref` carry the edge's.
    if let Some(id) = request
        .headers
        .get(crate::proxy::headers::REQUEST_ID)
        .and_then(crate::proxy::ctx::RequestId::adopt)
    {
        ctx.request_id = id;
    }
    match request
        .headers
        .get("x-forwarded-proto")
        .map(|v| v.as_bytes())
    {
        Some(b"https") => ctx.scheme = Scheme::Https,
        Some(b"http") => ctx.scheme = Scheme::Http,
        _ => {}
    }
    ctx.edge_listener = request.headers.get(LISTENER).cloned();
}

/// The last `X-Forwarded-For` entry: the one the edge appended.
fn last_forwarded_for(request: &RequestHeader) -> Option<IpAddr> {
    let last = request
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

/// `upstream_request_filter` towards a shield: the client's request plus the hop headers.
pub fn prepare_shield_request(
    upstream: &mut RequestHeader,
    ctx: &RequestCtx,
    node: &NodeHeaders,
) -> Result<()> {
    // Origin-form, with the normalised host the edge's key used as `Host` (the shield
    // normalises it to the same key), and the listener the edge's routes were scoped by.
    crate::proxy::upstream::to_origin_form(upstream)?;
    if let Some(host) = headers::forwarded_host(ctx)? {
        upstream.insert_header(http::header::HOST, host)?;
    }
    match ctx.listener_name() {
        Some(name) => upstream.insert_header(LISTENER, name)?,
        None => {
            upstream.remove_header(LISTENER);
        }
    }
    // An upgrade goes on as the client sent it, whatever its handling here: the shield
    // decides the same (`tier::route`).
    headers::add_forwarding_headers(upstream, ctx, node, None, false)
}

/// `upstream_response_filter` on an edge: keeps the shield's `X-Cache` (as one of the known
/// values) and removes it from the response, with the shield's `X-Portico-Ref` (this
/// request's own id, which the edge adds again). Neither is stored: a hit on an object
/// whose stored header has them could not be written from its text (`proxy::hit_head`).
pub fn take_remote_status(response: &mut ResponseHeader, ctx: &mut RequestCtx) {
    if ctx.tier.shield.is_none() {
        return;
    }
    ctx.tier.remote_status = response
        .headers
        .get(X_CACHE)
        .and_then(|v| known_status(v.as_bytes()));
    response.remove_header(X_CACHE);
    response.remove_header(headers::REQUEST_ID);
}

/// The `X-Cache` a shield sent, as this node's constant (anything else is unknown).
fn known_status(value: &[u8]) -> Option<&'static str> {
    [
        status::HIT,
        status::REMOTE_HIT,
        status::MISS,
        status::REVALIDATED,
        status::EXPIRED_HIT,
        status::PRIVATE_NOSTORE,
        status::UNCACHEABLE,
        status::CONFIG_NOCACHE,
    ]
    .into_iter()
    .find(|known| known.as_bytes() == value)
}

/// The edge's `X-Cache`: its own miss becomes `TCP_REMOTE_HIT` when the shield answered
/// from its cache (fresh or stale; a shield of its own shield counts too).
pub fn edge_status(own: &'static str, ctx: &RequestCtx) -> &'static str {
    let remote_hit = matches!(
        ctx.tier.remote_status,
        Some(status::HIT | status::REMOTE_HIT | status::EXPIRED_HIT)
    );
    if own == status::MISS && remote_hit && ctx.tier.shield.is_some() {
        status::REMOTE_HIT
    } else {
        own
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edges_entry_is_the_last_one() {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request
            .append_header("x-forwarded-for", "203.0.113.9, 198.51.100.4")
            .unwrap();
        assert_eq!(
            last_forwarded_for(&request),
            Some("198.51.100.4".parse().unwrap())
        );
        request
            .append_header("x-forwarded-for", "192.0.2.1")
            .unwrap();
        assert_eq!(
            last_forwarded_for(&request),
            Some("192.0.2.1".parse().unwrap())
        );
        let mut junk = RequestHeader::build("GET", b"/", None).unwrap();
        junk.append_header("x-forwarded-for", "unknown").unwrap();
        assert_eq!(last_forwarded_for(&junk), None);
    }

    #[test]
    fn only_a_shields_hit_is_a_remote_hit() {
        let mut ctx = RequestCtx::new();
        ctx.tier.remote_status = Some(status::HIT);
        // Not from a shield (an origin's X-Cache is never read): unchanged.
        assert_eq!(edge_status(status::MISS, &ctx), status::MISS);
        ctx.tier.shield = Some(0);
        assert_eq!(edge_status(status::MISS, &ctx), status::REMOTE_HIT);
        assert_eq!(edge_status(status::HIT, &ctx), status::HIT);
        assert_eq!(
            edge_status(status::PRIVATE_NOSTORE, &ctx),
            status::PRIVATE_NOSTORE
        );
        ctx.tier.remote_status = Some(status::MISS);
        assert_eq!(edge_status(status::MISS, &ctx), status::MISS);
    }

    #[test]
    fn a_shields_x_cache_is_taken_off_the_response() {
        let mut ctx = RequestCtx::new();
        let mut response = ResponseHeader::build(200, None).unwrap();
        response.insert_header(X_CACHE, "TCP_HIT").unwrap();
        take_remote_status(&mut response, &mut ctx);
        assert_eq!(ctx.tier.remote_status, None, "not from a shield: not read");
        ctx.tier.shield = Some(1);
        take_remote_status(&mut response, &mut ctx);
        assert_eq!(ctx.tier.remote_status, Some(status::HIT));
        assert!(response.headers.get(X_CACHE).is_none());
        response.insert_header(X_CACHE, "TCP_HIT, forged").unwrap();
        take_remote_status(&mut response, &mut ctx);
        assert_eq!(ctx.tier.remote_status, None);
    }
}
