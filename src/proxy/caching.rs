//! The cache hooks' work: when a request may use the cache, its key, what a stored response
//! may answer, whether a response is stored, and the `X-Cache` value.
//!
//! An upgrade request never gets here with caching on: the rule engine marks it
//! (`CacheUse::Upgrade` or `WebSocketRoute`), so a stored `200` can never answer a WebSocket
//! handshake and a handshake's answer is never stored. Pingora itself does not guard this.

use std::time::SystemTime;

use pingora_cache::key::HashBinary;
use pingora_cache::{
    CacheKey, CacheMeta, ForcedFreshness, NoCacheReason, RespCacheable, VarianceBuilder,
};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::cache::policy::{self, Freshness};
use crate::cache::{key, status, EdgeCache};
use crate::rules::CacheUse;

use crate::rules::request::host_without_port;

use super::RequestCtx;

/// `request_cache_filter`: turns the cache on for GET and HEAD on routes that cache.
pub fn enable(session: &mut Session, ctx: &mut RequestCtx, cache: &'static EdgeCache) {
    let Some(decision) = &ctx.decision else {
        return;
    };
    if decision.cache != CacheUse::Enabled {
        return; // CONFIG_NOCACHE, or the upgrade status admission set
    }
    let method = &session.req_header().method;
    if method != http::Method::GET && method != http::Method::HEAD {
        ctx.cache_status = status::UNCACHEABLE;
        return;
    }
    cache.enable(&mut session.cache);
    ctx.caching = true;
}

/// `cache_key_callback`: the key of the routing decision (`cache::key`), with the object's
/// label (host + path + query view, for purges) as its text.
pub fn cache_key(session: &Session, ctx: &RequestCtx) -> Result<CacheKey> {
    let Some(parts) = key_parts(session, ctx) else {
        return Error::e_explain(ErrorType::InternalError, "cache key without a decision");
    };
    let request = session.req_header();
    let mut text = String::with_capacity(128);
    key::write_cache_key(
        &mut text,
        parts.host,
        request.uri.path(),
        request.uri.query(),
        parts.mode,
    );
    let mut key = CacheKey::new(text, "");
    // The hash is the decision's, not the label's; set once, so pingora never rehashes.
    key.set_primary_bin_override(parts.hash());
    Ok(key)
}

/// The parts of this request's cache key (`None` before routing). Also what the shield
/// ring hashes for requests the cache was not enabled for (`tier::route`).
pub fn key_parts<'a>(session: &'a Session, ctx: &'a RequestCtx) -> Option<key::KeyParts<'a>> {
    let (snapshot, decision) = (ctx.snapshot.as_ref()?, ctx.decision.as_ref()?);
    let request = session.req_header();
    Some(key::KeyParts::new(
        &snapshot.engine,
        decision,
        host_without_port(ctx.host()),
        request.uri.path(),
        request.uri.query(),
        ctx.scheme,
    ))
}

/// `cache_hit_filter`: a request with `Authorization` is answered from the cache only when
/// the stored response allows it (RFC 9111 §3.5); otherwise it goes to the origin.
pub fn hit_filter(session: &Session, meta: &CacheMeta) -> Option<ForcedFreshness> {
    let authorized = session
        .req_header()
        .headers
        .contains_key(http::header::AUTHORIZATION);
    (authorized && !policy::serves_authorized_request(meta.response_header()))
        .then_some(ForcedFreshness::ForceMiss)
}

/// `response_cache_filter`: stores the response or says why not.
pub fn admit_response(
    session: &Session,
    response: &ResponseHeader,
    ctx: &mut RequestCtx,
    cache: &EdgeCache,
) -> RespCacheable {
    let Some(freshness) = freshness(ctx, cache) else {
        return RespCacheable::Uncacheable(NoCacheReason::NeverEnabled);
    };
    let authorized = session
        .req_header()
        .headers
        .contains_key(http::header::AUTHORIZATION);
    match policy::admit(response, authorized, &freshness, SystemTime::now()) {
        Ok(meta) => RespCacheable::Cacheable(meta),
        Err(refusal) => {
            ctx.cache_refused = Some(refusal.x_cache());
            RespCacheable::Uncacheable(match refusal {
                policy::Refusal::PrivateNoStore => NoCacheReason::OriginNotCache,
                policy::Refusal::Uncacheable(reason) => NoCacheReason::Custom(reason),
            })
        }
    }
}

fn freshness(ctx: &RequestCtx, cache: &EdgeCache) -> Option<Freshness> {
    let (snapshot, decision) = (ctx.snapshot.as_ref()?, ctx.decision.as_ref()?);
    let route = snapshot.engine.route(decision.route);
    Some(Freshness {
        behavior: decision.cache_behavior,
        duration: decision.cache_duration,
        default_ttl: cache.default_ttl,
        stale_while_revalidate: route.cache.stale_while_revalidate,
        stale_if_error: route.cache.stale_if_error,
    })
}

/// `cache_vary_filter`: one variant per combination of the request headers `Vary` names.
pub fn variance(meta: &CacheMeta, request: &RequestHeader) -> Option<HashBinary> {
    let mut builder = VarianceBuilder::new();
    for value in meta.headers().get_all(http::header::VARY) {
        let Ok(names) = value.to_str() else { continue };
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let sent = request.headers.get(name).map_or(&b""[..], |v| v.as_bytes());
            builder.add_owned_name_value(name.to_ascii_lowercase(), sent.to_vec());
        }
    }
    builder.finalize()
}

/// `should_serve_stale`: during revalidation (`error` is `None`) whenever the object's
/// stale-while-revalidate window allows (pingora checks the window); on an error, unless
/// the client caused it. A 5xx from the origin, a refused connection and "no origin left to
/// try" all serve the stale object (within its stale-if-error window) rather than a 502.
pub fn serve_stale(error: Option<&Error>) -> bool {
    error.is_none_or(|e| e.esource() != &ErrorSource::Downstream)
}

/// The `X-Cache` value, once pingora's cache phase is final (`response_filter`).
pub fn x_cache(session: &Session, ctx: &RequestCtx) -> &'static str {
    if ctx.caching {
        status::for_phase(session.cache.phase(), ctx.cache_refused)
    } else {
        ctx.cache_status
    }
}
