//! Hosting the proxy: under a Pingora `Server` for `portico run` and `portico demo`, or on a
//! tokio listener the caller bound (in-process tests bind `127.0.0.1:0`, which a Pingora
//! `Server` cannot report back).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::os::fd::AsRawFd;

use pingora_core::apps::ServerApp;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_proxy::HttpProxy;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cache::EdgeCache;
use crate::config::model::NodeSettings;
use crate::config::{self, ConfigError};
use crate::observability::AccessLog;
use crate::proxy::{Portico, Snapshot};
use crate::rules::{Engine, Scheme};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
}

/// A loaded node: its settings and the proxy ready to be hosted.
pub struct Node {
    pub settings: NodeSettings,
    pub current: Arc<ArcSwap<Snapshot>>,
    pub proxy: Portico,
}

impl Node {
    /// Loads and validates the configuration; warnings go to the log.
    pub fn load(conf_path: &Path) -> Result<Node, StartError> {
        let loaded = config::load(conf_path)?;
        for warning in &loaded.warnings {
            log::warn!("{warning}");
        }
        let settings = loaded.config.node.clone();
        let access_log = AccessLog::start(&settings.access_log).map_err(StartError::AccessLog)?;
        let current = Arc::new(ArcSwap::from_pointee(Snapshot::new(Engine::new(
            loaded.config,
        ))));
        let proxy = Portico {
            current: current.clone(),
            access_log,
            node_name: settings.name.clone(),
            scheme: Scheme::Http,
            cache: EdgeCache::leak(&settings),
        };
        Ok(Node {
            settings,
            current,
            proxy,
        })
    }

    /// Pingora's server settings, built from Portico's (Pingora's own YAML is not strict).
    pub fn server_conf(&self) -> ServerConf {
        ServerConf {
            threads: self.settings.threads,
            grace_period_seconds: Some(self.settings.grace_period.as_secs()),
            graceful_shutdown_timeout_seconds: Some(
                self.settings.graceful_shutdown_timeout.as_secs(),
            ),
            upstream_keepalive_pool_size: self.settings.upstream_keepalive_pool_size,
            ..ServerConf::default()
        }
    }

    /// Runs under a Pingora `Server` until a signal stops it (SIGTERM drains gracefully).
    pub fn run_forever(self) -> ! {
        let conf = self.server_conf();
        let listeners = self.settings.listeners.clone();
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let conf = server.configuration.clone();
        let admin = self.settings.admin.map(|addr| self.admin(addr));
        let mut service =
            pingora_proxy::http_proxy_service_with_name(&conf, self.proxy, "portico edge");
        for addr in &listeners {
            service.add_listener(
                ListenerConfig::tcp(addr.to_string()).l4_buffer(downstream_l4_buffer()),
            );
        }
        server.add_service(service);
        if let Some(admin) = admin {
            server.add_service(pingora_core::services::background::background_service(
                "portico admin",
                admin,
            ));
        }
        log::info!("portico {} listening on {listeners:?}", self.settings.name);
        server.run_forever()
    }

    /// The admin endpoints for this node, to be served on `addr`.
    pub fn admin(&self, addr: std::net::SocketAddr) -> crate::admin::Admin {
        crate::admin::Admin {
            addr,
            current: self.current.clone(),
            cache: self.proxy.cache,
        }
    }

    /// The proxy as a Pingora app, for [`serve`].
    pub fn into_app(self) -> Arc<HttpProxy<Portico>> {
        let conf = Arc::new(self.server_conf());
        Arc::new(pingora_proxy::http_proxy(&conf, self.proxy))
    }
}

/// L4 buffering for client connections. Pingora puts a 64 KiB read buffer in front of every
/// connection (it pays off under TLS, whose records arrive in small reads). On plain TCP the
/// HTTP/1 session reads into buffers of its own, so that buffer only adds a copy per request
/// and 64 KiB of resident memory per connection, which an idle WebSocket tunnel keeps for
/// its whole life (bench/RESULTS.md, scenario 5). Reads go straight to the socket instead.
/// (In-process tests host the app on their own listener and keep Pingora's default.)
pub fn downstream_l4_buffer() -> L4BufferSettings {
    L4BufferSettings::default().read(0)
}

/// Serves `app` on connections accepted from `listener` until `shutdown` turns true.
pub async fn serve(
    app: Arc<HttpProxy<Portico>>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, _) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                log::warn!("accept failed: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut l4 = pingora_core::protocols::l4::stream::Stream::from(stream);
            // The client address comes from the socket digest, as on Pingora's own listeners.
            let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
            l4.set_socket_digest(digest);
            let mut stream: pingora_core::protocols::Stream = Box::new(l4);
            // Keep-alive: the app hands the connection back while it stays reusable.
            while let Some(reused) = app.process_new(stream, &shutdown).await {
                stream = reused;
            }
        });
    }
}
