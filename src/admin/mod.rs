//! The admin listener (loopback by default): `GET /healthz`, `GET /status`, `GET /metrics`
//! (`metrics.rs`), `POST /purge`.
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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde_json::json;

use crate::cache::EdgeCache;
use crate::config::model::AdminToken;
use crate::observability::Metrics;
use crate::proxy::Snapshot;

pub mod status;

/// Serves the admin endpoints on `addr`.
pub struct Admin {
    pub addr: SocketAddr,
    pub token: Option<AdminToken>,
    pub current: Arc<ArcSwap<Snapshot>>,
    pub cache: &'static EdgeCache,
    pub metrics: Arc<Metrics>,
}

impl Admin {
    /// Accepts admin connections on `listener` until `shutdown` turns true.
    pub async fn serve(&self, listener: tokio::net::TcpListener, mut shutdown: ShutdownWatch) {
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
            };
            let current = self.current.clone();
            let cache = self.cache;
            let token = self.token.clone();
            let counters = self.metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let snapshot = current.load_full();
                    let refused = refuse_unauthorized(&request, token.as_ref());
                    let counters = counters.clone();
                    async move {
                        Ok::<_, Infallible>(match refused {
                            Some(refusal) => refusal,
                            None => answer(request, &snapshot, cache, &counters).await,
                        })
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
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
    async fn start(&self, shutdown: ShutdownWatch) {
        match tokio::net::TcpListener::bind(self.addr).await {
            Ok(listener) => {
                log::info!("admin listening on {}", self.addr);
                self.serve(listener, shutdown).await;
            }
            Err(e) => log::error!("admin cannot listen on {}: {e}", self.addr),
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

async fn answer(
    request: Request<hyper::body::Incoming>,
    snapshot: &Snapshot,
    cache: &'static EdgeCache,
    counters: &Metrics,
) -> Response<Full<Bytes>> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/healthz") => (200, "ok\n".to_string()),
        (&hyper::Method::GET, "/status") => {
            (200, status_json(snapshot, cache, counters).to_string())
        }
        (&hyper::Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(metrics::render(
                counters, snapshot, cache,
            ))));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return response;
        }
        (&hyper::Method::POST, "/purge") => purge::answer(request, cache, snapshot).await,
        (_, "/healthz" | "/status" | "/metrics") => (405, "use GET\n".to_string()),
        (_, "/purge") => (405, "use POST\n".to_string()),
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

fn status_json(snapshot: &Snapshot, cache: &EdgeCache, counters: &Metrics) -> serde_json::Value {
    let config = &snapshot.engine.config;
    let groups = status::origin_groups(&config.origin_groups, &snapshot.origins);
    let routes: Vec<_> = config
        .routes
        .iter()
        .map(|r| json!({"name": r.name, "websocket": r.websocket, "cache": r.cache.enabled}))
        .collect();
    let store = cache.store;
    let eviction = store.eviction();
    let cache = json!({
        "bytes": store.bytes(),
        "objects": store.objects(),
        "memory_bytes": config.node.cache_memory_bytes,
        "evicted_objects": pingora_cache::eviction::EvictionManager::evicted_items(eviction),
    });
    let tunnels = json!({"open": counters.open_tunnels()});
    let tiers = crate::tier::report::status(&snapshot.tiers);
    json!({"node": config.node.name, "routes": routes, "origin_groups": groups, "cache": cache, "tunnels": tunnels, "tiers": tiers})
}
