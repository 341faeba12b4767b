//! The admin listener (loopback by default): `GET /healthz` (503 while draining),
//! `GET /status`, `GET /metrics` (`metrics.rs`), `POST /purge`, `POST /reload`,
//! `POST /tunnels/close` ([`tunnels`]).
//!
//! During a binary upgrade the old process stops serving its admin listener once it has
//! handed its listening sockets over, and the new process binds the address as soon as it
//! is free (it retries while the old one holds it).
//!
//! With `admin.token_file` set (required off loopback), every endpoint but `/healthz` wants
//! `Authorization: Bearer <token>` and answers 401 without it. `/healthz` stays open: load
//! balancers probe it, and it tells nothing.
//!
//! `/status` lists the node, its routes, every origin group with its origins and their
//! health ([`status`]), from the configuration snapshot in force, and the cache's occupancy.
//! `/purge` is in `purge.rs`.

mod metrics;
mod purge;
pub use purge::purge_off_the_runtime;
pub mod tunnels;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde_json::json;

use crate::cache::EdgeCache;
use crate::config::model::AdminToken;
use crate::lifecycle::{Lifecycle, Phase, Reloads};
use crate::observability::{AccessLog, Metrics};
use crate::proxy::Snapshot;

pub mod status;

/// Serves the admin endpoints on `addr`.
pub struct Admin {
    pub addr: SocketAddr,
    pub token: Option<AdminToken>,
    pub cache: &'static EdgeCache,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Arc<Lifecycle>,
    pub access_log: AccessLog,
    /// `request_head_timeout` bounds each admin request's head and body too.
    pub limits: crate::config::model::ClientLimits,
}

/// Admin connections open at once: the API serves operators and load balancers, a few at
/// a time; more is a flood, closed on accept.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// What every admin request may read.
#[derive(Clone)]
struct Shared {
    cache: &'static EdgeCache,
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
    access_log: AccessLog,
    /// How long a request body may take to arrive.
    body_timeout: std::time::Duration,
}

impl Admin {
    /// Accepts admin connections on `listener` until `shutdown` turns true.
    pub async fn serve(&self, listener: tokio::net::TcpListener, mut shutdown: ShutdownWatch) {
        let mut phase = self.lifecycle.watch_phase();
        let shared = Shared {
            cache: self.cache,
            metrics: self.metrics.clone(),
            lifecycle: self.lifecycle.clone(),
            access_log: self.access_log.clone(),
            body_timeout: self.limits.request_head_timeout,
        };
        let head_timeout = self.limits.request_head_timeout;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        log::warn!("admin accept failed: {e}");
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
                // Free the address for the process this one hands over to.
                _ = phase.wait_for(|p| *p == Phase::HandingOver) => return,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                log::debug!("admin connection closed: {MAX_ADMIN_CONNECTIONS} already open");
                continue;
            };
            let token = self.token.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |request| {
                    let refused = refuse_unauthorized(&request, token.as_ref());
                    let shared = shared.clone();
                    async move {
                        Ok::<_, Infallible>(match refused {
                            Some(refusal) => refusal,
                            None => answer(request, &shared).await,
                        })
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                // hyper's head timer, unlike Pingora's, bounds the whole head (and the wait
                // for the next one on a kept-alive connection).
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(head_timeout)
                    .serve_connection(io, service)
                    .await
                {
                    log::debug!("admin connection ended: {e}");
                }
            });
        }
    }
}

#[async_trait]
impl BackgroundService for Admin {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut warned = false;
        loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    log::info!("admin listening on {}", self.addr);
                    return self.serve(listener, shutdown).await;
                }
                // After a binary upgrade, the old process holds the address a little longer.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    if !warned {
                        log::warn!("admin: {} is in use; retrying until it is free", self.addr);
                        warned = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                Err(e) => return log::error!("admin cannot listen on {}: {e}", self.addr),
            }
        }
    }
}

/// A 401 for a request without the token, when there is one (`/healthz` never needs it).
fn refuse_unauthorized<B>(
    request: &Request<B>,
    token: Option<&AdminToken>,
) -> Option<Response<Full<Bytes>>> {
    let token = token?;
    if request.uri().path() == "/healthz" {
        return None;
    }
    let presented = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if presented.is_some_and(|p| token.admits(p)) {
        return None;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"the admin endpoints need Authorization: Bearer <the token in admin.token_file>\n",
    )));
    *response.status_mut() = hyper::StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    Some(response)
}

async fn answer(request: Request<hyper::body::Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let (snapshot, reloads) = shared.lifecycle.reload_view();
    let (status, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/healthz") => match shared.lifecycle.phase() {
            Phase::Serving => (200, "ok\n".to_string()),
            _ => (503, "draining\n".to_string()),
        },
        (&hyper::Method::GET, "/status") => {
            (200, status_json(&snapshot, &reloads, shared).to_string())
        }
        (&hyper::Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(metrics::render(
                &shared.metrics,
                &snapshot,
                &reloads,
                shared.cache,
                shared.lifecycle.drain,
                &shared.access_log,
            ))));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return response;
        }
        (&hyper::Method::POST, "/purge") => {
            purge::answer(request, shared.cache, &snapshot, shared.body_timeout).await
        }
        (&hyper::Method::POST, "/tunnels/close") => {
            tunnels::answer(request, shared.lifecycle.drain, shared.body_timeout).await
        }
        (&hyper::Method::POST, "/reload") => match shared.lifecycle.reload("admin").await {
            Ok(generation) => (200, json!({ "generation": generation }).to_string()),
            Err(error) => (
                422,
                json!({ "generation": shared.lifecycle.generation(), "errors": error.lines() })
                    .to_string(),
            ),
        },
        (_, "/healthz" | "/status" | "/metrics") => (405, "use GET\n".to_string()),
        (_, "/purge" | "/reload" | "/tunnels/close") => (405, "use POST\n".to_string()),
        _ => (
            404,
            "unknown admin endpoint; try /status, /metrics or /healthz\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

fn status_json(snapshot: &Snapshot, reloads: &Reloads, shared: &Shared) -> serde_json::Value {
    let (cache, counters) = (shared.cache, &shared.metrics);
    let config = &snapshot.engine.config;
    let groups = status::origin_groups(&config.origin_groups, &snapshot.origins);
    let routes: Vec<_> = config
        .routes
        .iter()
        .map(|r| json!({"name": r.name, "websocket": r.websocket, "cache": r.cache.enabled}))
        .collect();
    let store = cache.store;
    let cache = json!({
        "bytes": store.bytes(),
        "used_bytes": store.used(),
        "objects": store.objects(),
        "memory_bytes": config.node.cache_memory_bytes,
        "evicted_objects": store.evicted(),
        "abandoned_fills": store.abandoned(),
        "readers_cut": store.readers_cut(),
        "fills_stopped": store.fills_stopped(),
        "purge_examined": store.purge_examined(),
    });
    let tunnels = json!({"open": counters.open_tunnels()});
    let lifecycle = &shared.lifecycle;
    let last_reload = reloads.last.as_ref().map(|reload| {
        let (result, detail) = match &reload.result {
            Ok(generation) => ("ok", json!({ "generation": generation })),
            Err(errors) => ("refused", json!({ "errors": errors })),
        };
        json!({"time_ms": reload.time_ms as u64, "trigger": reload.trigger, "result": result, "detail": detail})
    });
    let origin_names = lifecycle.origin_names.lock().clone();
    let configuration = json!({
        "generation": snapshot.generation,
        "reloads": {"ok": reloads.ok, "refused": reloads.refused},
        "last_reload": last_reload,
        "origin_names": {"resolutions": origin_names.resolutions, "last_error": origin_names.last_error},
        "phase": format!("{:?}", lifecycle.phase()).to_ascii_lowercase(),
        "tls_tickets": lifecycle.tickets.status(),
    });
    let tiers = crate::tier::report::status(&snapshot.tiers);
    json!({"node": config.node.name, "configuration": configuration, "routes": routes, "origin_groups": groups, "cache": cache, "tunnels": tunnels, "tiers": tiers})
}
