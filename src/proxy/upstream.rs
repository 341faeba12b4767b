//! The origin side: which origin gets the request, how the peer is set up for it
//! (timeouts, upgrade policy) and what the forwarded request looks like.

use std::time::Duration;

use pingora_core::protocols::http::authority::raw_target_authority;
use pingora_core::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::OriginDeadlines;

use crate::config::model::{Action, ForwardingProtocol, OriginTimeouts};
use crate::rules::{Scheme, UpgradeHandling};

use super::ctx::RequestCtx;
use super::headers::{self, NodeHeaders};
use super::Snapshot;

/// Picks the next origin not yet tried and builds its peer.
pub fn choose_peer(ctx: &mut RequestCtx, snapshot: &Snapshot) -> Result<Box<HttpPeer>> {
    let Some(decision) = &ctx.decision else {
        return Error::e_explain(
            ErrorType::InternalError,
            "no routing decision before upstream_peer",
        );
    };
    let fresh = ctx.retry_fresh.take();
    let again = fresh.and_then(|index| snapshot.origins.origin(decision.origin_group, index));
    let Some(chosen) = again.or_else(|| snapshot.origins.select(decision.origin_group, &ctx.tried))
    else {
        let group = &snapshot.engine.config.origin_groups[decision.origin_group];
        if group.when_all_unhealthy == crate::config::model::WhenAllUnhealthy::Refuse
            && ctx.tried.is_empty()
        {
            let health = snapshot.origins.health(decision.origin_group);
            return Error::e_explain(
                ErrorType::Custom(crate::origin::refusal::NO_HEALTHY_ORIGIN),
                crate::origin::refusal::explain(group, health),
            );
        }
        let group = &group.name;
        // The last attempt's error is the reason worth telling (an untrusted certificate...).
        let last = ctx
            .last_connect_error
            .as_deref()
            .map_or(String::new(), |e| format!("; last error: {e}"));
        return Error::e_explain(
            ErrorType::ConnectNoRoute,
            format!("origin group \"{group}\" has no origin left to try{last}"),
        );
    };
    let route = snapshot.engine.route(decision.route);
    let tls = match route.forwarding_protocol {
        ForwardingProtocol::HttpOnly => false,
        ForwardingProtocol::HttpsOnly => true,
        ForwardingProtocol::MatchRequest => ctx.scheme == Scheme::Https,
    };
    let address = if tls {
        chosen.origin.https_address
    } else {
        chosen.origin.address
    };
    // With TLS, SNI and the certificate's expected name are the origin's host header.
    let mut peer = HttpPeer::new(address, tls, chosen.origin.host_header.clone());
    if fresh.is_some() {
        // A key no pooled connection has: Pingora must open a new one.
        peer.group_key = fresh_connection_key();
    }
    if tls {
        peer.options.ca = snapshot.origin_cas[decision.origin_group].clone();
    }
    let timeouts = snapshot.engine.config.origin_groups[decision.origin_group].timeouts;
    peer.options.connection_timeout = Some(timeouts.connect);
    peer.options.total_connection_timeout = Some(timeouts.tls_handshake);
    apply_io_timeouts(&mut peer, &timeouts);
    apply_upgrade_policy(&mut peer, ctx);
    ctx.tried.push(chosen.index);
    ctx.origin_index = Some(chosen.index);
    Ok(Box::new(peer))
}

/// Where a request goes: the origin group, or a shield that fetches from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Towards {
    Origin,
    Shield,
}

/// The group's `first_byte` and `total` deadlines, which the vendored proxy enforces on
/// the upstream's response (Pingora has only a per-read timer). Towards a shield they
/// start earlier than the shield's own towards the origin by at most its cache lock's
/// wait and its connect and handshake, so a shield gets that much more: a shield's own
/// `504`, with its reason, reaches the client rather than the edge's guess.
pub fn deadlines(snapshot: &Snapshot, origin_group: usize, towards: Towards) -> OriginDeadlines {
    let timeouts = snapshot.engine.config.origin_groups[origin_group].timeouts;
    let head_start = match towards {
        Towards::Origin => Duration::ZERO,
        Towards::Shield => snapshot.engine.config.node.cache_lock_timeout + timeouts.tls_handshake,
    };
    OriginDeadlines {
        first_byte: timeouts.first_byte + head_start,
        total: timeouts.total + head_start,
    }
}

/// A peer's per-read and per-write timeouts: the origin group's, towards its origins and
/// towards a shield alike (a shield relays the origin's pace).
pub fn apply_io_timeouts(peer: &mut HttpPeer, timeouts: &OriginTimeouts) {
    peer.options.read_timeout = Some(timeouts.read);
    peer.options.write_timeout = Some(timeouts.write);
}

/// A connection-pool key used once.
fn fresh_connection_key() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The peer's upgrade handling for this request (an origin's or a shield's peer).
///
/// One definition of an upgrade, Portico's: a `GET` with `Connection: upgrade` and
/// `Upgrade: websocket` on a route that tunnels. Every other request goes out with upgrades
/// denied, so Pingora's default policy cannot re-add `Connection: Upgrade` to a request
/// that merely carries `Upgrade: websocket` (or `h2c`, or is a POST), nor to an upgrade a
/// caching route strips (Front Door's failure: the origin never sees an upgrade).
pub fn apply_upgrade_policy(peer: &mut HttpPeer, ctx: &RequestCtx) {
    match ctx.decision.as_ref().map(|d| d.upgrade) {
        Some(UpgradeHandling::Tunnel) => {
            if let Some(tunnel) = &ctx.tunnel {
                peer.options.read_timeout = Some(tunnel.limits.idle_timeout);
            }
        }
        _ => {
            peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::deny_upgrades();
        }
    }
}

/// Rewrites the forwarded request: path (rewrite + `origin_path`), `Host`, forwarding
/// headers, the rule sets' header edits, and the stripped upgrade in `reproduce` mode.
pub fn prepare_request(
    upstream: &mut RequestHeader,
    ctx: &RequestCtx,
    snapshot: &Snapshot,
    node: &NodeHeaders,
) -> Result<()> {
    let (Some(decision), Some(origin_index)) = (&ctx.decision, ctx.origin_index) else {
        return Error::e_explain(
            ErrorType::InternalError,
            "no routing decision before upstream_request_filter",
        );
    };
    let engine = &snapshot.engine;
    let route = engine.route(decision.route);
    let origin = &engine.config.origin_groups[decision.origin_group].origins[origin_index];

    if decision.rewritten_path.is_some() || route.origin_path.is_some() {
        let path = decision
            .rewritten_path
            .as_deref()
            .unwrap_or(upstream.uri.path());
        let prefix = route.origin_path.as_deref().unwrap_or("");
        let target = match upstream.uri.query() {
            Some(query) => format!("{prefix}{path}?{query}"),
            None => format!("{prefix}{path}"),
        };
        let uri = target.parse::<http::Uri>().map_err(|e| {
            Error::because(
                ErrorType::InvalidHTTPHeader,
                "rewritten path is not a valid URI",
                e,
            )
        })?;
        upstream.set_uri(uri);
    } else {
        to_origin_form(upstream)?;
    }
    upstream.insert_header(http::header::HOST, origin.host_value.clone())?;
    // The host the key used, never the client's bytes (case, port, or a header of its own).
    let forwarded_host = headers::forwarded_host(ctx)?;
    if forwarded_host.is_none() {
        upstream.remove_header("x-forwarded-host");
    }
    let edits_follow = engine
        .fired_actions(decision)
        .any(|action| matches!(action, Action::ModifyRequestHeader(_)));
    headers::add_forwarding_headers(upstream, ctx, node, forwarded_host, edits_follow)?;
    headers::edit_request(upstream, engine.fired_actions(decision))?;
    if ctx.caching {
        // The origin may aim `Surrogate-Control` at this cache by its name.
        crate::cache::surrogate::announce(upstream)?;
    }
    if decision.upgrade == UpgradeHandling::Reproduce {
        upstream.remove_header(&http::header::UPGRADE);
        upstream.remove_header(&http::header::CONNECTION);
    }
    Ok(())
}

/// Absolute-form targets (`GET http://host/p`) and HTTP/2 requests with an authority go
/// upstream in origin-form (`GET /p`). Pingora 0.9.1 keeps an HTTP/1 absolute-form target
/// only in the raw target (`uri.authority()` is `None`), and would otherwise send it on
/// with the authority swapped for the peer's; so the raw target is what is checked.
pub fn to_origin_form(upstream: &mut RequestHeader) -> Result<()> {
    let absolute = raw_target_authority(upstream.raw_path())
        .authority()
        .is_some();
    if !absolute && upstream.uri.authority().is_none() {
        return Ok(());
    }
    let path_and_query = upstream.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // An absolute-form target without a path (`http://host`) asks for `/`.
    let target = if path_and_query.starts_with('/') {
        path_and_query.to_string()
    } else {
        format!("/{path_and_query}")
    };
    let uri = target
        .parse::<http::Uri>()
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "bad request target", e))?;
    upstream.set_uri(uri);
    Ok(())
}

/// `upstream_response_filter`: refuses a `101` the edge did not ask for, and a transfer
/// coding it does not decode; each becomes a 502 that says why.
///
/// Only a request the edge tunnels (a WebSocket upgrade it forwarded) may switch protocols;
/// a `101` to anything else (a plain request, or an upgrade whose `Upgrade` the edge
/// stripped to reproduce Front Door) would hand the client a connection that is neither
/// HTTP nor a tunnel. The edge decodes `chunked` only (RFC 9112 §6.1): a body in another
/// transfer coding (`gzip` as one) would be stored with the coding dropped and its coded
/// bytes served as the representation; nginx refuses such a response too. A `204` or `304`,
/// which has no body, may name the coding a body would have had (RFC 9112 §6.1): it passes.
/// (A `HEAD`'s answer does not: a cache may have fetched it as a `GET`.)
pub fn check_response(response: &ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    let why = if response.status == http::StatusCode::SWITCHING_PROTOCOLS && ctx.tunnel.is_none() {
        "the origin answered 101 Switching Protocols to a request the edge did not forward as an upgrade"
    } else if !matches!(response.status.as_u16(), 204 | 304)
        && !super::limits::transfer_coding_is_chunked_or_none(&response.headers)
    {
        "the origin sent a transfer coding other than chunked, which the edge does not decode"
    } else {
        return Ok(());
    };
    let mut e = Error::explain(ErrorType::InvalidHTTPHeader, why);
    e.as_up();
    Err(e)
}

/// Interim responses (1xx but `101`) relayed to one client, at most. RFC 9110 §15.2 has a
/// proxy pass them on, but an origin can send any number (one test's sent 100,000 `103`s,
/// 12 MB, all copied to the client): past this many the rest are dropped. The client's
/// session counts them as it writes them (`set_info_resp_limit`): a filter sees a whole
/// batch of the origin's tasks before any is written, so it cannot tell which to drop.
pub const MAX_INTERIM_RESPONSES: u8 = 8;

/// `upstream_response_filter`: RFC 9110 §2.5, a proxy sends its own HTTP version: an
/// origin's `HTTP/1.0` status line is not passed on as it came.
pub fn own_version(response: &mut ResponseHeader) {
    if response.version != http::Version::HTTP_11 {
        response.set_version(http::Version::HTTP_11);
    }
}
