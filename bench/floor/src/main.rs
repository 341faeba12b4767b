//! The floor for `bench/run`: the smallest proxies Pingora 0.9.1 allows, one worker thread.
//!
//! ```text
//! pingora-floor pass  LISTEN_ADDR ORIGIN_ADDR   # one upstream_peer, nothing else
//! pingora-floor cache LISTEN_ADDR ORIGIN_ADDR   # the same plus pingora-cache's MemCache
//! ```
//!
//! `cache` stores what the origin marks cacheable (`Cache-Control`, as pingora-cache reads
//! it; no default TTL), keyed by the request target alone: one origin, one site. `MemCache`
//! has no size bound and no eviction. Upgrades (WebSocket) are tunnelled by Pingora itself
//! and never go near the cache. SIGTERM stops the server within about a second.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use pingora::cache::cache_control::CacheControl;
use pingora::cache::filters::{request_cacheable, resp_cacheable};
use pingora::cache::{CacheKey, CacheMetaDefaults, MemCache, RespCacheable};
use pingora::http::{ResponseHeader, StatusCode};
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

/// pingora-cache takes its store as `&'static`.
static STORE: std::sync::LazyLock<MemCache> = std::sync::LazyLock::new(MemCache::new);

/// Only what the origin says is cacheable: no TTL for responses without one.
static DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(no_default_ttl, 0, 0);

fn no_default_ttl(_: StatusCode) -> Option<Duration> {
    None
}

struct Floor {
    origin: SocketAddr,
    cache: bool,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.origin, false, String::new())))
    }

    fn request_cache_filter(&self, session: &mut Session, _: &mut ()) -> Result<()> {
        if self.cache && request_cacheable(session.req_header()) && !session.is_upgrade_req() {
            session.cache.enable(&*STORE, None, None, None, None);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, _: &mut ()) -> Result<CacheKey> {
        let target = session.req_header().uri.path_and_query();
        Ok(CacheKey::new(target.map_or("/", |t| t.as_str()), ""))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _: &mut (),
    ) -> Result<RespCacheable> {
        let control = CacheControl::from_resp_headers(resp);
        let authorized = session.req_header().headers.contains_key("authorization");
        Ok(resp_cacheable(
            control.as_ref(),
            resp.clone(),
            authorized,
            &DEFAULTS,
        ))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cache, listen, origin) = match args.as_slice() {
        [mode, listen, origin] if mode == "pass" || mode == "cache" => {
            let Ok(origin) = origin.parse::<SocketAddr>() else {
                eprintln!("pingora-floor: not an address: {origin}");
                std::process::exit(2);
            };
            (mode == "cache", listen.as_str(), origin)
        }
        _ => {
            eprintln!("usage: pingora-floor pass|cache LISTEN_ADDR ORIGIN_ADDR");
            std::process::exit(2);
        }
    };
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Floor { origin, cache });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
