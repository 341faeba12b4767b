//! The cache hooks' work: when a request may use the cache, its key, what a stored response
//! may answer, whether a response is stored, and the `X-Cache` value.
//!
//! An upgrade request never gets here with caching on: the rule engine marks it
//! (`CacheUse::Upgrade` or `WebSocketRoute`), so a stored `200` can never answer a WebSocket
//! handshake and a handshake's answer is never stored. Pingora itself does not guard this.

use std::time::SystemTime;

use pingora_cache::cache_control::CacheControl;
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, ForcedFreshness, NoCacheReason, RespCacheable};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::cache::policy::{self, Freshness, Received};
use crate::cache::{conditional, key, range_miss, status, store, unkeyed, vary, EdgeCache};
use crate::rules::request::{host_without_port, RequestFacts};
use crate::rules::{CacheUse, Scheme};

use super::respond::EdgeAnswer;
use super::RequestCtx;

/// `request_cache_filter`: turns the cache on for GET and HEAD on routes that cache, unless
/// the request carries input the key does not cover (`cache::unkeyed`).
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
    let downstream = &mut session.downstream_session;
    let body_empty = downstream.is_http2().then(|| downstream.is_body_empty());
    if let Some(reason) = unkeyed::unkeyed_input(&session.req_header().headers, body_empty) {
        log::debug!("request {}: not from the cache: {reason}", ctx.request_id);
        ctx.cache_status = status::UNCACHEABLE;
        return;
    }
    ctx.asks_for_part = range_miss::asks_for_part(session.req_header());
    // A part of a URL the store holds nothing of is a miss to come: it need not collapse
    // (`cache::range_miss`). Otherwise the lock stays, for stale-while-revalidate's sake.
    let collapse = !ctx.asks_for_part
        || key_parts(session, ctx).is_none_or(|parts| cache.store.holds_url(&parts.hash()));
    cache.enable(&mut session.cache, collapse);
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
    let authorized = super::headers::has_any_field(
        &session.req_header().headers,
        &[http::header::AUTHORIZATION],
    );
    (authorized && !policy::serves_authorized_request(meta.response_header()))
        .then_some(ForcedFreshness::ForceMiss)
}

/// `proxy_upstream_filter`: whether the request must be answered `504` ([`not_stored`])
/// instead of going upstream. It asked for a stored response only (`Cache-Control:
/// only-if-cached`, RFC 9111 §5.2.1.7) on a route that caches, and it is on its way
/// upstream, so the cache had nothing it may serve: no object, or a stale one outside
/// `stale-while-revalidate`. The other request directives stay ignored (README): honouring
/// `no-cache` would let any client send every request to the origin, while this one only
/// spares it. A `stale-while-revalidate` refresh runs as a subrequest with the client's
/// header, and goes upstream.
pub fn only_if_cached(session: &Session, ctx: &RequestCtx) -> bool {
    ctx.caching
        && session.subrequest_ctx.is_none()
        && CacheControl::from_req_headers(session.req_header())
            .is_some_and(|control| control.has_key("only-if-cached"))
}

/// The answer to an `only-if-cached` request the cache could not serve.
pub fn not_stored() -> EdgeAnswer<'static> {
    EdgeAnswer {
        status: 504,
        error: "only-if-cached",
        body: "the request accepts a stored response only (Cache-Control: only-if-cached) \
               and the edge holds none it may serve"
            .to_string(),
        location: None,
    }
}

/// `upstream_request_filter`: a miss for part of an object asks the origin for that part
/// (`cache::range_miss`); a refresh of a stored object fetches it whole.
pub fn forward_range(session: &Session, upstream: &mut RequestHeader, ctx: &RequestCtx) {
    if ctx.asks_for_part && session.cache.phase() == pingora_cache::CachePhase::Miss {
        range_miss::forward(session.req_header(), upstream);
    }
}

/// `response_cache_filter`: stores the response or says why not.
pub fn admit_response(
    session: &Session,
    response: &ResponseHeader,
    ctx: &mut RequestCtx,
) -> RespCacheable {
    let Some(freshness) = freshness(ctx) else {
        return RespCacheable::Uncacheable(NoCacheReason::NeverEnabled);
    };
    let received = Received {
        at: SystemTime::now(),
        delay: ctx.origin_first_byte.unwrap_or_default(),
        request_has_authorization: session
            .req_header()
            .headers
            .contains_key(http::header::AUTHORIZATION),
        path_names_static_file: crate::cache::deception::names_static_file(
            session.req_header().uri.path().as_bytes(),
        ),
    };
    // Answering a revalidation, pingora hands over the stored header with a few of the
    // 304's fields; RFC 9111 §4.3.4 wants all of them (`policy::merge_not_modified`).
    let merged;
    let response = match ctx.not_modified.take() {
        Some(not_modified) => {
            merged = policy::merge_not_modified(response, &not_modified);
            &merged
        }
        None => response,
    };
    match policy::admit(response, &freshness, received) {
        Ok(meta) => {
            // Usually empty, and then nothing is allocated.
            ctx.withheld = policy::withheld(response, meta.response_header());
            RespCacheable::Cacheable(meta)
        }
        Err(refusal) => {
            // The part a range miss asked the origin for is a miss to its client.
            let part = ctx.asks_for_part && refusal.reason() == policy::REASON_PARTIAL;
            ctx.cache_refused = Some(if part {
                status::MISS
            } else {
                refusal.x_cache()
            });
            // A refresh that cannot be stored leaves the stored object in place (RFC 9111
            // invalidates only on unsafe methods): the key must keep using the cache, or
            // that object could no longer be served stale when the origin then fails.
            let refreshing = session.cache.maybe_cache_meta().is_some();
            RespCacheable::Uncacheable(match refusal {
                policy::Refusal::PrivateNoStore => NoCacheReason::OriginNotCache,
                policy::Refusal::Uncacheable(_) if refreshing => {
                    NoCacheReason::Custom(policy::REASON_REFRESH)
                }
                policy::Refusal::Uncacheable(reason) => NoCacheReason::Custom(reason),
            })
        }
    }
}

/// `response_filter`: a miss's client gets what the stored copy left out (`withheld`).
pub fn restore_withheld(session: &Session, response: &mut ResponseHeader, ctx: &mut RequestCtx) {
    if ctx.withheld.is_empty() {
        return;
    }
    let fields = std::mem::take(&mut ctx.withheld);
    if matches!(
        session.cache.phase(),
        pingora_cache::CachePhase::Miss | pingora_cache::CachePhase::Expired
    ) {
        for (name, value) in fields {
            let _ = response.append_header(name, value);
        }
    }
}

/// `upstream_response_filter`: hop-by-hop fields go no further (RFC 9110 §7.6.1), nor a
/// `204`'s framing; a `304`
/// to this cache's revalidation is kept for `admit_response`; a non-error answer to an
/// unsafe method invalidates what is stored for its URL (RFC 9111 §4.4).
pub fn upstream_response(
    session: &Session,
    response: &mut ResponseHeader,
    ctx: &mut RequestCtx,
    cache: &EdgeCache,
) {
    policy::strip_hop_by_hop(response, false);
    if response.status == http::StatusCode::NO_CONTENT {
        // RFC 9110 §8.6: a 204 has no content, so no `Content-Length` either. One passed on
        // would frame the next response on a kept-alive connection as this one's body;
        // stored, it broke every hit.
        response.remove_header(&http::header::CONTENT_LENGTH);
        response.remove_header(&http::header::TRANSFER_ENCODING);
    }
    if ctx.caching
        && response.status == http::StatusCode::NOT_MODIFIED
        && session.cache.maybe_cache_meta().is_some()
    {
        ctx.not_modified = Some(Box::new(response.clone()));
    }
    let method = &session.req_header().method;
    if !method.is_safe() && (200..400).contains(&response.status.as_u16()) {
        invalidate(session, response, ctx, cache);
    }
}

/// Removes what is stored for the request's URL and for a same-origin `Location` and
/// `Content-Location` in the response, each keyed as a GET for it would be.
fn invalidate(session: &Session, response: &ResponseHeader, ctx: &RequestCtx, cache: &EdgeCache) {
    let request = session.req_header();
    let mut removed = invalidate_target(ctx, cache, request.uri.path(), request.uri.query());
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        let Some(target) = response.headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let origin = super::admission::request_host(request);
        if let Some((path, query)) = same_origin_target(target, origin, ctx.scheme) {
            removed += invalidate_target(ctx, cache, &path, query.as_deref());
        }
    }
    if removed > 0 {
        log::debug!(
            "request {}: {} invalidated {removed} stored response(s)",
            ctx.request_id,
            request.method
        );
    }
}

/// Invalidates the key a GET for `path?query` on this request's host would use, if the
/// rules cache it.
fn invalidate_target(
    ctx: &RequestCtx,
    cache: &EdgeCache,
    path: &str,
    query: Option<&str>,
) -> usize {
    let Some(snapshot) = ctx.snapshot.as_ref() else {
        return 0;
    };
    let engine = &snapshot.engine;
    let headers = http::HeaderMap::new();
    let facts = RequestFacts {
        method: "GET",
        host: ctx.host(),
        path,
        query,
        headers: &headers,
        client_ip: ctx.client_ip,
        scheme: ctx.scheme,
        listener: ctx.listener_name(),
    };
    let Ok(decision) = engine.decide(&facts) else {
        return 0;
    };
    if decision.cache != CacheUse::Enabled {
        return 0;
    }
    let parts = key::KeyParts::new(
        engine,
        &decision,
        host_without_port(ctx.host()),
        path,
        query,
        ctx.scheme,
    );
    cache.store.invalidate(&parts.hash())
}

/// The path and query of `target` (a URI reference) when it names this request's origin
/// (`host` as the client sent it, `scheme`): a relative reference always does; an absolute
/// one when its scheme, host and port are the request's.
fn same_origin_target(
    target: &str,
    host: &str,
    scheme: Scheme,
) -> Option<(String, Option<String>)> {
    let uri: http::Uri = target.parse().ok()?;
    if let Some(authority) = uri.authority() {
        if !uri.scheme_str()?.eq_ignore_ascii_case(scheme.as_str()) {
            return None;
        }
        let default_port = match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };
        let port = authority.port_u16().unwrap_or(default_port);
        let (host, own_port) = split_port(host, default_port);
        if !authority.host().eq_ignore_ascii_case(host) || port != own_port {
            return None;
        }
    } else if !uri.path().starts_with('/') {
        return None; // a relative path: resolving it is not worth the guess
    }
    Some((uri.path().to_owned(), uri.query().map(str::to_owned)))
}

/// `name[:port]` → (name, port or `default`).
fn split_port(host: &str, default: u16) -> (&str, u16) {
    let name = host_without_port(host);
    let port = host[name.len()..]
        .strip_prefix(':')
        .and_then(|p| p.parse().ok())
        .unwrap_or(default);
    (name, port)
}

/// `cache_not_modified_filter`: a client's conditional request answered from a stored
/// response (`cache::conditional`).
pub fn not_modified(session: &Session, response: &ResponseHeader) -> bool {
    conditional::not_modified(session.req_header(), response)
}

/// What the route and the node say about freshness, from the request's configuration
/// generation (so a reload changes the node's defaults too).
fn freshness(ctx: &RequestCtx) -> Option<Freshness> {
    let (snapshot, decision) = (ctx.snapshot.as_ref()?, ctx.decision.as_ref()?);
    let route = snapshot.engine.route(decision.route);
    let node = &snapshot.engine.config.node;
    Some(Freshness {
        behavior: decision.cache_behavior,
        duration: decision.cache_duration,
        default_ttl: node.cache_default_ttl,
        heuristic_max: node.cache_heuristic_max,
        stale_while_revalidate: route.cache.stale_while_revalidate,
        stale_if_error: route.cache.stale_if_error,
    })
}

/// `cache_vary_filter`: one variant per combination of the (normalised) request fields
/// `Vary` names (`cache::vary`).
///
/// pingora asks on every lookup; a hit from the store reads `Vary` from the stored text
/// rather than build the header that only a hit's slow path needs (`StoredMeta::to_meta`).
pub fn variance(meta: &CacheMeta, request: &RequestHeader) -> Option<HashBinary> {
    match store::meta_object(meta) {
        Some(object) => {
            let stored = object.meta();
            vary::variance_of(object.header(&stored).vary(), request)
        }
        None => vary::variance(meta.response_header(), request),
    }
}

/// `should_serve_stale`: during revalidation (`error` is `None`) whenever the object's
/// stale-while-revalidate window allows (pingora checks the window); on an error, unless
/// the client caused it. A 5xx from the origin, a refused connection and "no origin left to
/// try" all serve the stale object (within its stale-if-error window) rather than a 502.
pub fn serve_stale(error: Option<&Error>) -> bool {
    error.is_none_or(|e| e.esource() != &ErrorSource::Downstream)
}

/// `continue_fill_without_downstream`: a miss whose client has gone goes on filling only
/// while its fill is needed (another request reads it, or little of it is left: the
/// store's `Fill`). Before the origin's answer there is no fill yet, and stopping loses
/// nothing: requests waiting on the cache lock take the miss over.
pub fn fill_needed_without_client(session: &mut Session) -> bool {
    session
        .cache
        .miss_handler()
        .is_some_and(|fill| fill.needed_without_downstream())
}

/// The `X-Cache` value, once pingora's cache phase is final (`response_filter`).
pub fn x_cache(session: &Session, ctx: &RequestCtx) -> &'static str {
    if ctx.caching {
        status::for_phase(session.cache.phase(), ctx.cache_refused)
    } else {
        ctx.cache_status
    }
}

/// Records and returns this response's `X-Cache` as this edge reports it (`x_cache`, with a
/// shield's hit on this edge's miss told as a remote hit).
pub fn settle_cache_status(session: &Session, ctx: &mut RequestCtx) -> &'static str {
    ctx.cache_status = crate::tier::hop::edge_status(x_cache(session, ctx), ctx);
    ctx.cache_status
}

/// `response_filter`: the cache-tag headers (`cache.tag_headers`) are the origin's message to
/// this cache, not to clients, so they are removed, as Fastly does with `Surrogate-Key` and
/// Cloudflare with `Cache-Tag` (unless `cache.strip_tag_headers: false`). A trusted edge
/// asking a shield gets them: it tags its own copy with them. The stored copy keeps them.
pub fn strip_tag_headers(response: &mut ResponseHeader, ctx: &RequestCtx) {
    let stripped = stripped_tag_headers(ctx);
    let tagged = |name: &http::HeaderName| stripped.contains(name);
    if response.headers.keys().any(tagged) && !remove_fields_in_order(response, tagged) {
        // Out of order rather than not at all.
        for name in stripped {
            response.remove_header(name);
        }
    }
}

/// The tag headers this request's answer goes without (none for a trusted edge, or with
/// `cache.strip_tag_headers: false`).
pub fn stripped_tag_headers(ctx: &RequestCtx) -> &[http::HeaderName] {
    match &ctx.snapshot {
        Some(snapshot) => {
            let node = &snapshot.engine.config.node;
            let strips = node.cache_strip_tag_headers && !ctx.tier.from_edge;
            if strips {
                &node.cache_tag_headers
            } else {
                &[]
            }
        }
        None => &[],
    }
}

/// Removes the fields `dropped` names from `response`, the others keeping their order
/// (`remove_header` moves the last field into the gap, and a hit written from the stored
/// text, `proxy::hit_head`, must have the same head as one that comes this way); `false`,
/// with `response` as it was, when the header could not be rebuilt.
fn remove_fields_in_order(
    response: &mut ResponseHeader,
    dropped: impl Fn(&http::HeaderName) -> bool,
) -> bool {
    let count = Some(response.headers.len());
    let built = match response.has_case() {
        true => ResponseHeader::build(response.status, count),
        false => ResponseHeader::build_no_case(response.status, count),
    };
    let Ok(mut kept) = built else {
        return false;
    };
    kept.set_version(response.version);
    let _ = kept.set_reason_phrase(response.get_reason_phrase());
    {
        let mut cases = response.case_header_iter();
        for (name, value) in response.headers.iter() {
            let case = cases.next();
            if dropped(name) {
                continue;
            }
            let appended = match case {
                Some((case, _)) => kept.append_header(case, value.clone()),
                None => kept.append_header(name.clone(), value.clone()),
            };
            if appended.is_err() {
                return false;
            }
        }
    }
    *kept.extensions_mut() = std::mem::take(response.extensions_mut());
    *response = kept;
    true
}
