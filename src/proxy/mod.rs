//! Portico's `ProxyHttp`: each hook hands off to a named module in a few lines.
//!
//! ```text
//!  client ──► request_filter ─────────── admission::admit: refuse / route / rules
//!               │  answered at the edge? (404 no route, redirect, 426, 508, 400) ──► logging
//!               ▼
//!             cache lookup (caching::) ─ a fresh hit skips the origin: cache_hit_head
//!               │                         (hit_head::) writes a plain hit's head from the
//!               │                         stored text, else response_filter runs on it
//!               ▼
//!             proxy_upstream_filter ──── caching::only_if_cached: 504, the origin spared
//!               ▼
//!             upstream_peer ──────────── limits::origin_place (HTTP/2: a place in the caps);
//!               │                         tier::route: a shield, by the cache key's hash; else
//!               │                         upstream::choose_peer: healthy → priority → weight
//!               ▼                         (fail_to_connect, error_while_proxy: retry::)
//!             upstream_request_filter ── upstream::prepare_request: path, Host, Via,
//!               │                         X-Forwarded-*, CDN-Loop, X-Portico-Ref, rule edits,
//!               │                         `reproduce`: Upgrade/Connection stripped;
//!               │                         a range miss's Range (caching::forward_range)
//!               ▼
//!             origin ──► upstream_response_filter: status; 1xx capped (upstream::), own
//!               │         HTTP version, hop-by-hop and a 204's framing dropped (caching::)
//!               ▼
//!             response_filter ────────── X-Portico-Ref, X-Cache, rule edits; a 101 opens the tunnel
//!               ▼
//!             logging ────────────────── access log line (a tunnel's: its handshake)
//!               ▼
//!             a 101: both connections ─► tunnel::relay on a task of its own: bytes both
//!                                         ways, idle and lifetime timers, the tunnel's
//!                                         record when it closes
//! ```

pub mod admission;
pub mod caching;
pub mod ctx;
pub mod h2_fields;
pub mod headers;
pub mod hit_head;
pub mod limits;
pub mod respond;
pub mod retry;
pub mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::{CacheKey, CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora_core::modules::http::HttpModules;
use pingora_core::protocols::tls::CaType;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, HitHead, ProxyHttp, Session};

use crate::cache::EdgeCache;
use crate::connection::HeadGuard;
use crate::lifecycle::drain::Drain;
use crate::observability::latency::{RouteStats, RouteStatsRegistry, NO_ROUTE};
use crate::observability::records::{now_ms, RequestRecord};
use crate::observability::{AccessLog, Metrics};
use crate::origin::OriginPool;
use crate::rules::{Engine, Scheme};
use crate::tunnel::relay::RelayOutcome;
use crate::tunnel::{ClosedBy, TunnelLog};

pub use ctx::RequestCtx;

/// One configuration generation, ready to serve: swapped whole on reload
/// ([`crate::lifecycle`]). A request keeps the generation it started with to its end.
pub struct Snapshot {
    /// 1 for the configuration the node started with, then one more per reload.
    pub generation: u64,
    pub engine: Engine,
    pub origins: OriginPool,
    /// Per origin group: the CA list its origins' certificates must chain to (`None`: the
    /// system roots).
    pub origin_cas: Vec<Option<Arc<CaType>>>,
    /// Per route (by index), then for requests no route matched: the counters behind the
    /// per-route metrics, looked up once per generation.
    pub route_stats: Vec<Arc<RouteStats>>,
    /// The shield ring and its probes, trusted edges (`crate::tier`).
    pub tiers: crate::tier::Tiers,
}

impl Snapshot {
    /// A first generation with counters of its own (for `explain` and tests).
    pub fn new(engine: Engine) -> Snapshot {
        Snapshot::after(engine, None, &RouteStatsRegistry::default())
    }

    /// The generation after `previous` (the first when `None`): unchanged origins keep
    /// their health, and routes their counters in `stats`.
    pub fn after(
        engine: Engine,
        previous: Option<&Snapshot>,
        stats: &RouteStatsRegistry,
    ) -> Snapshot {
        let origins = OriginPool::after(&engine.config.origin_groups, previous.map(|p| &p.origins));
        let origin_cas = engine
            .config
            .origin_groups
            .iter()
            .map(|group| {
                let ca = group.ca.as_ref()?;
                Some(crate::tls::origin::pingora_ca(&ca.certs))
            })
            .collect();
        let route_names = engine.config.routes.iter().map(|r| r.name.as_str());
        let route_stats = stats.for_routes(route_names.chain([NO_ROUTE]));
        let node = &engine.config.node;
        let tiers = crate::tier::Tiers::new(node.tier, &node.tiers);
        Snapshot {
            generation: previous.map_or(1, |p| p.generation + 1),
            engine,
            origins,
            origin_cas,
            route_stats,
            tiers,
        }
    }

    /// The counters of route `index`, or of requests no route matched.
    pub fn route_stats(&self, route: Option<usize>) -> &RouteStats {
        let last = self.route_stats.len() - 1;
        &self.route_stats[route.unwrap_or(last).min(last)]
    }
}

/// The edge node's proxy.
pub struct Portico {
    pub current: Arc<ArcSwap<Snapshot>>,
    pub access_log: AccessLog,
    /// This node's name, and the forwarding header values made from it.
    pub node: headers::NodeHeaders,
    pub cache: &'static EdgeCache,
    pub metrics: Arc<Metrics>,
    /// Counts requests in flight and open tunnels, for the drain on shutdown.
    pub drain: &'static Drain,
    /// The address each of the node's listeners is bound to, in `listeners` order (the
    /// configured ones, or the ephemeral ports in-process tests bound instead): how a
    /// request's listener, and so its `listeners:` scope, is known.
    pub bound: Vec<std::net::SocketAddr>,
    /// What a request head may hold (`limits:`).
    pub limits: crate::config::model::ClientLimits,
    /// The node's connection caps, shared with the listener (`connection::EdgeApp`): an
    /// HTTP/2 request on its way to the origin takes a place in them
    /// (`limits::origin_place`).
    pub caps: Arc<crate::connection::ConnectionCaps>,
}

/// Keeps why an attempt failed (a connect failure, or an origin that dropped the request
/// unanswered), so that a retry which then finds no origin left says why.
fn remember_failed_attempt(ctx: &mut RequestCtx, e: &Error) {
    ctx.last_connect_error = Some(e.to_string());
    ctx.last_connect_reason = Some(respond::reason_for_client(e, ctx));
}

#[async_trait]
impl ProxyHttp for Portico {
    /// Boxed: the context is about 800 bytes, and Pingora moves it by value from
    /// `new_ctx` into the request's future (three copies per request unboxed).
    type CTX = Box<RequestCtx>;

    /// No downstream modules. Pingora's default adds its response compression module,
    /// disabled: it still cost every request a context, two boxed hook futures and a
    /// body-filter call. Portico does not compress (an origin's encoding passes as is).
    /// With no module and no `response_body_filter`, a plain hit's body is written as
    /// stored (`hit_head`'s `body_unfiltered`), and so is a range of a large one
    /// (`cache_hit_body_unfiltered`): adding either means clearing both.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Box<RequestCtx> {
        // Written into its heap block, not built on the stack and copied (816 bytes).
        let mut ctx = Box::write(Box::new_uninit(), RequestCtx::new());
        ctx.in_flight = Some(self.drain.request());
        ctx
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        // The head is in: its deadline no longer applies; a body's waits are counted.
        // (Pingora reads the framing fields here rather than later: no more work.)
        let body_to_come = !session.downstream_session.is_body_done();
        if let Some(guard) = HeadGuard::of(session.downstream_session.stream()) {
            guard.head_done(body_to_come);
            ctx.body_guarded = body_to_come;
        } else if session.downstream_session.is_http2() {
            // The guard's `send_timeout` and body budget cover HTTP/1; HTTP/2 has neither.
            session
                .downstream_session
                .set_write_timeout(Some(self.limits.send_timeout));
            session
                .downstream_session
                .set_h2_body_budget(Some(limits::body_budget(&self.limits)));
        }
        // RFC 9112 §9.3.2: requests a client pipelined are answered in order; without this
        // Pingora closes the connection after the first and drops the rest.
        session.downstream_session.set_pipelining_enabled(true);
        // RFC 9112 §9.6: a FIN after a complete request is a half-close, not an abort; the
        // answer still goes out (HAProxy's default; Pingora's drops the request). A client
        // that is really gone fails the first write, and origin deadlines bound the rest.
        session.downstream_session.set_abort_on_close(false);
        // RFC 9110 §15.2: HTTP/1.0 defines no 1xx, so none is sent to its clients.
        if session.req_header().version == http::Version::HTTP_10 {
            session.downstream_session.set_ignore_info_resp(true);
        }
        // Nor any number of them to the others (counted as they are written).
        session
            .downstream_session
            .set_info_resp_limit(Some(upstream::MAX_INTERIM_RESPONSES));
        Ok(())
    }

    fn request_head_error(&self, error: &Error) -> Option<(ResponseHeader, bytes::Bytes)> {
        limits::head_error(error, &self.limits)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let snapshot = self.current.load_full();
        ctx.scheme = if session
            .digest()
            .is_some_and(|digest| digest.ssl_digest.is_some())
        {
            Scheme::Https
        } else {
            Scheme::Http
        };
        // An IPv4 client on a dual-stack listener arrives as `::ffff:a.b.c.d`: conditions,
        // logs and `X-Forwarded-For` see the IPv4 address it is.
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_canonical());
        ctx.forwarding_trusted = ctx.client_ip.is_some_and(|ip| {
            let trusted = &snapshot.engine.config.node.trusted_proxies;
            trusted.iter().any(|network| network.contains(ip))
        });
        ctx.listener = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .and_then(|local| listener_index(&self.bound, *local));
        ctx.snapshot = Some(snapshot.clone());
        if let Some(answer) = limits::refusal(session.req_header(), &self.limits) {
            // A client that sends such a head gets no second chance on this connection.
            session.set_keepalive(None);
            return answer.send(session, ctx).await.map(|_| true);
        }
        if session.req_header().version == http::Version::HTTP_2 {
            if let Some(answer) = h2_fields::refusal(session.req_header()) {
                return answer.send(session, ctx).await.map(|_| true);
            }
            if let Some(answer) = h2_fields::zero_length_refusal(session).await? {
                return answer.send(session, ctx).await.map(|_| true);
            }
            h2_fields::join_cookies(session.req_header_mut());
        }
        limits::merge_content_length(session.req_header_mut());
        crate::tier::hop::adopt_edge_facts(session, ctx, &snapshot.tiers);
        if crate::tier::purge::is_purge(session, ctx) {
            let serve = crate::tier::purge::serve(session, ctx, self.cache);
            return Box::pin(serve).await.map(|()| true);
        }
        if let Some(answer) = limits::unimplemented_method(session.req_header()) {
            session.set_keepalive(None);
            return answer.send(session, ctx).await.map(|_| true);
        }
        admission::admit(session, ctx, &snapshot, &self.node.name).await
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        caching::enable(session, ctx, self.cache);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Self::CTX) -> Result<CacheKey> {
        let key = caching::cache_key(session, ctx)?;
        ctx.tier.key_hash = Some(key.primary_bin()); // the shield ring's key
        Ok(key)
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        _ctx: &mut Self::CTX,
    ) -> Result<Option<ForcedFreshness>> {
        Ok(caching::hit_filter(session, meta))
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // A tunnel's bytes are no request body (the relay usually has them by then).
        if let Some(chunk) = body.as_ref().filter(|_| !session.was_upgraded()) {
            let max_body = self.limits.max_request_body;
            limits::count_body(&mut ctx.request_body_bytes, chunk, max_body)?;
        }
        if end_of_stream && ctx.body_guarded {
            if let Some(guard) = HeadGuard::of(session.downstream_session.stream()) {
                guard.body_done();
            }
        }
        Ok(())
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<bool> {
        if caching::only_if_cached(session, ctx) {
            caching::settle_cache_status(session, ctx); // a miss, as the cache saw it
            return caching::not_stored()
                .send(session, ctx)
                .await
                .map(|()| false);
        }
        Ok(true)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        response: &ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<RespCacheable> {
        Ok(caching::admit_response(session, response, ctx))
    }

    fn cache_hit_head(&self, session: &mut Session, ctx: &mut Self::CTX) -> Option<HitHead> {
        hit_head::serialize(session, ctx)
    }

    /// No body filter and no downstream module (`init_downstream_modules`): a range of a
    /// hit may go out as stored.
    fn cache_hit_body_unfiltered(&self) -> bool {
        true
    }

    fn cache_not_modified_filter(
        &self,
        session: &Session,
        response: &ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<bool> {
        Ok(caching::not_modified(session, response))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Self::CTX,
        request: &RequestHeader,
    ) -> Option<HashBinary> {
        caching::variance(meta, request)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
        error: Option<&Error>,
    ) -> bool {
        caching::serve_stale(error)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        limits::origin_place(session, ctx, &self.caps)?;
        let snapshot = snapshot(ctx)?;
        let (peer, towards) = match crate::tier::route::shield_peer(session, ctx, &snapshot) {
            Some(shield) => (shield, upstream::Towards::Shield),
            None => (
                upstream::choose_peer(ctx, &snapshot)?,
                upstream::Towards::Origin,
            ),
        };
        session.origin_deadlines = ctx
            .decision
            .as_ref()
            .map(|d| upstream::deadlines(&snapshot, d.origin_group, towards));
        if let Some(tunnel) = &ctx.tunnel {
            let log = self.tunnel_log(ctx);
            let guard = self.drain.tunnel(log.route(), log.client);
            tunnel.prepare(session, log, guard);
        }
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        caching::forward_range(session, upstream_request, ctx);
        if ctx.tier.shield.is_some() {
            return crate::tier::hop::prepare_shield_request(upstream_request, ctx, &self.node);
        }
        let snapshot = snapshot(ctx)?;
        ctx.upstream_sent = Some(std::time::Instant::now());
        upstream::prepare_request(upstream_request, ctx, &snapshot, &self.node)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.upstream_status = Some(response.status.as_u16());
        upstream::own_version(response);
        ctx.origin_first_byte = ctx.upstream_sent.map(|sent| sent.elapsed());
        crate::tier::hop::take_remote_status(response, ctx);
        caching::upstream_response(session, response, ctx, self.cache);
        upstream::check_response(response, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.response_status = Some(response.status.as_u16());
        caching::restore_withheld(session, response, ctx);
        caching::strip_tag_headers(response, ctx);
        caching::settle_cache_status(session, ctx);
        headers::add_response_headers(response, ctx)?;
        if let (Some(snapshot), Some(decision)) = (&ctx.snapshot, &ctx.decision) {
            headers::edit_response(response, snapshot.engine.fired_actions(decision))?;
        }
        if response.status == http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(tunnel) = &mut ctx.tunnel {
                tunnel.open();
                self.metrics.tunnel_opened();
                // The handshake's line is written now; the tunnel's when it closes.
                self.log_request(session, None, ctx);
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        e: Box<Error>,
    ) -> Box<Error> {
        remember_failed_attempt(ctx, &e);
        retry::after_connect_failure(session, peer, ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        upstream_reused: bool,
    ) -> Box<Error> {
        remember_failed_attempt(ctx, &e);
        retry::after_proxy_error(session, peer, ctx, e, upstream_reused)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let code = respond::status_for_failure(e);
        // The connection is closed after this answer (`can_reuse_downstream: false`): say
        // so in it, or a client may send its next request into the closing connection.
        session.set_keepalive(None);
        // After interim (1xx) heads a final one may still go out (RFC 9110 §15.2): a
        // deadline that passes after a `103` is still a 504.
        let final_head_sent = session
            .response_written()
            .is_some_and(|head| !head.status.is_informational() || head.status == 101);
        if code > 0 && !final_head_sent {
            let answer = respond::failure_answer(code, e, ctx);
            if let Err(write_error) = answer.send(session, ctx).await {
                log::debug!(
                    "request {}: could not write the error response: {write_error}",
                    ctx.request_id
                );
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn continue_fill_without_downstream(&self, session: &mut Session, _: &mut Self::CTX) -> bool {
        caching::fill_needed_without_client(session)
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, error: &Error) -> bool {
        let clients = respond::is_clients_doing(error);
        if clients {
            log::debug!("request failed on the client's side: {error}");
        }
        clients
    }

    fn suppress_proxy_warn_log(
        &self,
        session: &Session,
        ctx: &Self::CTX,
        error: &Error,
        _context: pingora_proxy::ProxyWarnLogContext,
    ) -> bool {
        self.suppress_error_log(session, ctx, error)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        // The connection may carry another request: its wait starts now. (An upgraded one
        // carries a tunnel, which has timers of its own.)
        if !session.downstream_session.was_upgraded() && !session.is_upgrade_handed_off() {
            if let Some(guard) = HeadGuard::of(session.downstream_session.stream()) {
                guard.await_next_request();
            }
        }
        let Some(tunnel) = ctx.tunnel.take().filter(|t| t.opened.is_some()) else {
            self.log_request(session, e, ctx);
            return;
        };
        if e.is_none() && session.is_upgrade_handed_off() {
            return; // the relay writes the tunnel's record when it closes
        }
        // The tunnel ended before its handoff.
        let closed_by = e.map_or(ClosedBy::Error, |error| {
            ClosedBy::from_error(error, session.is_process_shutting_down())
        });
        self.tunnel_log(ctx).write(&RelayOutcome {
            closed_by,
            bytes_client_to_origin: 0,
            bytes_origin_to_client: 0,
            duration: tunnel.duration(),
        });
    }
}

impl Portico {
    /// What a tunnel's record carries from its request.
    fn tunnel_log(&self, ctx: &RequestCtx) -> TunnelLog {
        let route = ctx
            .decision
            .as_ref()
            .zip(ctx.snapshot.as_ref())
            .map_or("", |(d, s)| s.engine.route(d.route).name.as_str());
        TunnelLog::new(
            self.access_log.clone(),
            self.metrics.clone(),
            ctx.request_id.as_str(),
            route,
            ctx.client_ip,
            origin_name(ctx),
        )
    }
}

/// Which bound listener accepted a connection on `local`: the one bound to exactly that
/// address, else one on that port bound to the unspecified address (`0.0.0.0`, `[::]`).
fn listener_index(bound: &[std::net::SocketAddr], local: std::net::SocketAddr) -> Option<usize> {
    let local_ip = local.ip().to_canonical();
    bound
        .iter()
        .position(|b| b.port() == local.port() && b.ip().to_canonical() == local_ip)
        .or_else(|| {
            bound
                .iter()
                .position(|b| b.port() == local.port() && b.ip().is_unspecified())
        })
}

fn snapshot(ctx: &RequestCtx) -> Result<Arc<Snapshot>> {
    ctx.snapshot.clone().ok_or_else(|| {
        Error::explain(
            pingora_error::ErrorType::InternalError,
            "no configuration snapshot on the request",
        )
    })
}

fn origin_name(ctx: &RequestCtx) -> Option<&str> {
    let (snapshot, decision, index) = (
        ctx.snapshot.as_ref()?,
        ctx.decision.as_ref()?,
        ctx.origin_index?,
    );
    Some(
        snapshot.engine.config.origin_groups[decision.origin_group].origins[index]
            .name
            .as_str(),
    )
}

/// The names of the origins this request was sent to, in order.
fn tried_names(ctx: &RequestCtx) -> Vec<&str> {
    let origins = ctx
        .snapshot
        .as_ref()
        .zip(ctx.decision.as_ref())
        .and_then(|(s, d)| s.engine.config.origin_groups.get(d.origin_group))
        .map_or(&[][..], |group| group.origins.as_slice());
    ctx.tried
        .iter()
        .filter_map(|&index| origins.get(index).map(|o| o.name.as_str()))
        .collect()
}

impl Portico {
    fn log_request(&self, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
        let status = ctx
            .edge_status
            .or(ctx.response_status)
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        self.metrics.record_request(ctx.cache_status, status);
        let duration = ctx.started.elapsed();
        if let Some(snapshot) = &ctx.snapshot {
            snapshot
                .route_stats(ctx.decision.as_ref().map(|d| d.route))
                .observe(ctx.cache_status, duration, ctx.origin_first_byte);
        }
        // With the log off, build nothing: the record's lists and strings cost allocations.
        if !self.access_log.is_on() {
            return;
        }
        let request = session.req_header();
        let engine = ctx.snapshot.as_ref().map(|s| &s.engine);
        let decision = ctx.decision.as_ref();
        let route = engine
            .zip(decision)
            .map(|(engine, d)| engine.route(d.route));
        let mut rule_sets = Vec::new();
        let mut rules = Vec::new();
        if let (Some(engine), Some(decision)) = (engine, decision) {
            for fired in &decision.fired {
                let set = engine.config.rule_sets[fired.set as usize].name.as_str();
                if !rule_sets.contains(&set) {
                    rule_sets.push(set);
                }
                rules.push(engine.rule(*fired).name.as_str());
            }
        }
        let record = RequestRecord {
            kind: "request",
            time_ms: now_ms().saturating_sub(duration.as_millis()),
            request_id: ctx.request_id.as_str(),
            client: ctx.client_ip,
            method: request.method.as_str(),
            host: admission::request_host(request),
            path: request.uri.path(),
            status,
            route: route.map(|r| r.name.as_str()),
            rule_sets,
            rules,
            cache: ctx.cache_status,
            upgrade: decision.map_or("none", |d| d.upgrade.as_str()),
            origin: origin_name(ctx),
            upstream_status: ctx.upstream_status,
            attempts: ctx.tried.len() as u8,
            tried: tried_names(ctx),
            shield: ctx
                .tier
                .shield
                .zip(ctx.tier.ring.as_ref())
                .map(|(i, ring)| ring.name(i)),
            shield_cache: ctx.tier.remote_status,
            duration_ms: duration.as_millis() as u64,
            bytes: session.body_bytes_sent(),
            error: e.map(|e| e.to_string()),
        };
        self.access_log.write(&record);
    }
}

#[cfg(test)]
mod tests {
    use super::listener_index;

    #[test]
    fn a_connection_finds_its_listener_by_local_address() {
        let bound: Vec<std::net::SocketAddr> = ["127.0.0.1:8080", "0.0.0.0:8443", "[::]:9000"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let at = |local: &str| listener_index(&bound, local.parse().unwrap());
        assert_eq!(at("127.0.0.1:8080"), Some(0));
        // A listener on the unspecified address takes connections to any of the host's.
        assert_eq!(at("10.1.2.3:8443"), Some(1));
        assert_eq!(at("[2001:db8::1]:9000"), Some(2));
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        assert_eq!(at("[::ffff:127.0.0.1]:8080"), Some(0));
        assert_eq!(at("10.1.2.3:8080"), None);
        assert_eq!(at("127.0.0.1:1"), None);
    }
}
