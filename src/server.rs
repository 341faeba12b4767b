//! Hosting the proxy: under a Pingora `Server` for `portico run` and `portico demo`, or on a
//! tokio listener the caller bound (in-process tests bind `127.0.0.1:0`, which a Pingora
//! `Server` cannot report back).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use std::os::fd::AsRawFd;

use pingora_core::apps::{HttpServerOptions, ServerApp};
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::listening::Service;
use pingora_core::services::ServiceReadyNotifier;
use pingora_proxy::HttpProxy;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cache::EdgeCache;
use crate::config::model::{ClientLimits, NodeSettings};
use crate::config::{self, ConfigError};
use crate::connection::{ConnectionCaps, EdgeApp};
use crate::lifecycle::drain::Drain;
use crate::lifecycle::signals::NodeSignals;
use crate::lifecycle::{Lifecycle, LifecycleService, WhenDrained};
use crate::observability::{AccessLog, Metrics};
use crate::proxy::headers::NodeHeaders;
use crate::proxy::{Portico, Snapshot};
use crate::rules::Engine;
use crate::tls::tickets::{TicketKeys, Ticketer};
use crate::tls::ServerTls;
use pingora_core::listeners::tls::Acceptor;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("listener {address}: {source}")]
    Tls {
        address: std::net::SocketAddr,
        source: crate::tls::certs::CertError,
    },
    #[error("tls_ticket_keys: {0}")]
    TicketKeys(#[from] crate::tls::tickets::TicketKeyError),
    #[error("cannot make a session ticket key: {0}")]
    Ticketer(rustls::Error),
    /// Validation admits only token names; this guards the step that puts it in headers.
    #[error("node name {0:?} cannot be sent in Via and CDN-Loop")]
    NodeName(String),
}

/// A loaded node: its settings and the proxy ready to be hosted.
pub struct Node {
    pub settings: NodeSettings,
    pub current: Arc<ArcSwap<Snapshot>>,
    pub proxy: Portico,
    /// Each listener with its certificates loaded (`None` for plain HTTP).
    pub listeners: Vec<(std::net::SocketAddr, Option<Arc<ServerTls>>)>,
    /// The session ticket keys the node's TLS listeners share (`tls::tickets`).
    pub tickets: Arc<Ticketer>,
    /// Reload, drain and upgrade; shared with the admin endpoints.
    pub lifecycle: Arc<Lifecycle>,
}

/// How `portico run` was asked to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Reload when a file under `conf/` or `rules/` changes.
    pub watch: bool,
    /// Take the listening sockets over from a running Portico (graceful binary upgrade).
    pub upgrade: bool,
}

/// How often `--watch` looks at the files.
const WATCH_EVERY: Duration = Duration::from_millis(250);

impl Node {
    /// Loads and validates the configuration; warnings go to the log.
    pub fn load(conf_path: &Path) -> Result<Node, StartError> {
        Node::load_with(conf_path, WhenDrained::Return, None, false)
    }

    fn load_with(
        conf_path: &Path,
        when_drained: WhenDrained,
        watch: Option<Duration>,
        upgraded: bool,
    ) -> Result<Node, StartError> {
        crate::tls::install_crypto_provider();
        let loaded = config::load(conf_path)?;
        for warning in &loaded.warnings {
            log::warn!("{warning}");
        }
        let settings = loaded.config.node.clone();
        let tickets = TicketKeys::load(&settings.tls_ticket_keys)?;
        let tickets = Arc::new(Ticketer::new(tickets).map_err(StartError::Ticketer)?);
        let listeners = settings
            .listeners
            .iter()
            .map(|listener| {
                let tls = listener
                    .tls
                    .as_ref()
                    .map(|tls| ServerTls::load(tls, tickets.clone()).map(Arc::new))
                    .transpose()
                    .map_err(|source| StartError::Tls {
                        address: listener.address,
                        source,
                    })?;
                Ok((listener.address, tls))
            })
            .collect::<Result<Vec<_>, StartError>>()?;
        let access_log = AccessLog::start(&settings.access_log).map_err(StartError::AccessLog)?;
        let metrics = Arc::new(Metrics::default());
        let current = Arc::new(ArcSwap::from_pointee(Snapshot::after(
            Engine::new(loaded.config),
            None,
            &metrics.routes,
        )));
        let drain = Drain::leak();
        let mut lifecycle = Lifecycle::new(
            conf_path.to_path_buf(),
            current.clone(),
            settings.clone(),
            listeners.clone(),
            tickets.clone(),
            access_log.clone(),
            metrics.clone(),
            drain,
            when_drained,
        );
        lifecycle.watch_files = watch;
        lifecycle.upgraded = upgraded;
        let proxy = Portico {
            current: current.clone(),
            access_log,
            node: NodeHeaders::new(&settings.name)
                .map_err(|_| StartError::NodeName(settings.name.clone()))?,
            cache: EdgeCache::leak(&settings),
            metrics,
            drain,
            bound: settings.listeners.iter().map(|l| l.address).collect(),
            limits: settings.limits,
            caps: Arc::new(ConnectionCaps::new(&settings.limits)),
        };
        Ok(Node {
            settings,
            current,
            proxy,
            listeners,
            tickets,
            lifecycle: Arc::new(lifecycle),
        })
    }

    /// Pingora's server settings, built from Portico's (Pingora's own YAML is not strict).
    pub fn server_conf(&self) -> ServerConf {
        // The lifecycle exits the process as soon as the node has drained; Pingora's grace
        // period only caps a drain that would hang.
        let drain_cap = self.settings.tunnel_drain_timeout + Duration::from_secs(15);
        ServerConf {
            threads: self.settings.threads,
            work_stealing: self.settings.work_stealing,
            grace_period_seconds: Some(self.settings.grace_period.max(drain_cap).as_secs()),
            graceful_shutdown_timeout_seconds: Some(
                self.settings.graceful_shutdown_timeout.as_secs(),
            ),
            upstream_keepalive_pool_size: self.settings.upstream_keepalive_pool_size,
            upgrade_sock: self.settings.upgrade_sock.display().to_string(),
            upgrade_close_timeout_ms: Some(self.settings.upgrade_close_timeout.as_millis() as u64),
            ..ServerConf::default()
        }
    }

    /// `portico run`: loads `conf_path` and runs under a Pingora `Server` until a signal
    /// stops it (see [`crate::lifecycle`] for what each signal does).
    pub fn run(
        conf_path: &Path,
        options: RunOptions,
    ) -> Result<std::convert::Infallible, StartError> {
        Node::load_for_run(conf_path, options)?.run_server(options)
    }

    /// Loads `conf_path` for [`Node::run_server`] (which `portico demo` also uses).
    pub fn load_for_run(conf_path: &Path, options: RunOptions) -> Result<Node, StartError> {
        if let Err(e) = crate::lifecycle::signals::install() {
            log::warn!("cannot install the signal handlers early: {e}");
        }
        let watch = options.watch.then_some(WATCH_EVERY);
        Node::load_with(conf_path, WhenDrained::ExitProcess, watch, options.upgrade)
    }

    /// Runs under a Pingora `Server` until a signal stops it.
    pub fn run_server(mut self, options: RunOptions) -> ! {
        let upgrade = options.upgrade;
        set_process_switches(&self.settings);
        // Pingora retries a busy address for about 30 s, then panics a thread and runs on
        // without it: find out first, and stop with the reason. (An upgrade receives its
        // sockets instead of binding them.)
        if !upgrade {
            let admin = self.settings.admin.as_ref().map(|a| a.address);
            for address in self.listeners.iter().map(|(a, _)| *a).chain(admin) {
                if let Err(e) = std::net::TcpListener::bind(address) {
                    eprintln!("portico: cannot listen on {address}: {e}");
                    std::process::exit(1);
                }
            }
        }
        let conf = self.server_conf();
        let listeners = std::mem::take(&mut self.listeners);
        let opt = Opt {
            upgrade,
            ..Opt::default()
        };
        if upgrade && self.settings.tunnel_handover {
            // Ready before Pingora waits for the listeners, so the old process finds it.
            self.adopt_tunnels();
        }
        let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
        server.bootstrap();
        let conf = server.configuration.clone();
        let admin = self.settings.admin.as_ref().map(|a| self.admin(a.address));
        let lifecycle = self.lifecycle.clone();
        // Every client connection passes the edge's own guard (request-head deadlines and
        // size) before Pingora's HTTP session reads it.
        // TLS listeners are plain TCP to Pingora: the app runs each handshake, after the
        // connection caps and within `limits.tls_handshake_timeout` (Pingora's listener
        // allows a fixed 60 s).
        let mut acceptors = Vec::new();
        for (address, tls) in &listeners {
            match tls.as_ref().map(|tls| tls.acceptor()) {
                None => {}
                Some(Ok(acceptor)) => acceptors.push((*address, Arc::new(acceptor))),
                Some(Err(e)) => {
                    log::error!("listener {address}: cannot set up TLS: {e}");
                    std::process::exit(1);
                }
            }
        }
        let limits = self.settings.limits;
        let caps = self.proxy.caps.clone();
        let app = EdgeApp::new(
            Arc::new(edge_proxy(&conf, self.proxy, &limits)),
            limits,
            caps,
        )
        .with_tls(acceptors);
        let mut service = Service::new("portico edge".to_string(), app);
        for (address, tls) in &listeners {
            let listener = ListenerConfig::tcp(address.to_string());
            // TLS records arrive in small reads: Pingora's read buffer pays off there.
            service.add_listener(if tls.is_some() {
                listener
            } else {
                listener.l4_buffer(downstream_l4_buffer())
            });
        }
        let addresses: Vec<String> = listeners
            .iter()
            .map(|(a, tls)| format!("{}://{a}", if tls.is_some() { "https" } else { "http" }))
            .collect();
        // The proxy starts listening only after generation 1's first probe round.
        let life = server.add_service(pingora_core::services::background::background_service(
            "portico lifecycle",
            LifecycleService(lifecycle.clone()),
        ));
        server.add_service(service).add_dependency(&life);
        if let Some(admin) = admin {
            server.add_service(pingora_core::services::background::background_service(
                "portico admin",
                admin,
            ));
        }
        log::info!("portico {} listening on {addresses:?}", self.settings.name);
        server.run(RunArgs {
            shutdown_signal: Box::new(NodeSignals(lifecycle)),
        });
        std::process::exit(0)
    }

    /// Listens for the tunnels of the process this one replaces, and relays them on a
    /// runtime of their own. It lives as long as the process, which exits after its drain.
    fn adopt_tunnels(&self) {
        use crate::tunnel::handover;
        let path = handover::socket_path(&self.settings.upgrade_sock);
        let listener = match handover::listen(&path) {
            Ok(listener) => listener,
            Err(e) => {
                log::warn!(
                    "tunnel handover: cannot listen on {}: {e}; the old process's tunnels drain there",
                    path.display()
                );
                return;
            }
        };
        let node = handover::Adoption {
            drain: self.proxy.drain,
            access_log: self.proxy.access_log.clone(),
            metrics: self.proxy.metrics.clone(),
        };
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                log::warn!("tunnel handover: no runtime: {e}");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("portico-adopted-tunnels".into())
            .spawn(move || {
                runtime.block_on(async move {
                    handover::adopt(listener, path, node).await;
                    std::future::pending::<()>().await
                })
            });
        if let Err(e) = spawned {
            log::warn!("tunnel handover: no thread: {e}");
        }
    }

    /// The admin endpoints for this node, to be served on `addr`.
    pub fn admin(&self, addr: std::net::SocketAddr) -> crate::admin::Admin {
        crate::admin::Admin {
            addr,
            token: self.settings.admin.as_ref().and_then(|a| a.token.clone()),
            cache: self.proxy.cache,
            metrics: self.proxy.metrics.clone(),
            lifecycle: self.lifecycle.clone(),
            access_log: self.proxy.access_log.clone(),
            limits: self.settings.limits,
        }
    }

    /// The proxy as a Pingora app behind the edge's connection guard, for [`serve`].
    pub fn into_app(self) -> Arc<EdgeApp> {
        set_process_switches(&self.settings);
        let conf = Arc::new(self.server_conf());
        let limits = self.settings.limits;
        let caps = self.proxy.caps.clone();
        Arc::new(EdgeApp::new(
            Arc::new(edge_proxy(&conf, self.proxy, &limits)),
            limits,
            caps,
        ))
    }
}

/// Pingora's proxy around Portico's hooks, with the client limits that apply to HTTP/2
/// connections (HTTP/1 ones have the connection guard): the preface and settings must come
/// within `request_head_timeout` (Pingora waited for ever), and a connection with no
/// stream open for `keepalive_timeout` is closed (Pingora kept it for ever).
fn edge_proxy(conf: &Arc<ServerConf>, proxy: Portico, limits: &ClientLimits) -> HttpProxy<Portico> {
    let mut edge = pingora_proxy::http_proxy(conf, proxy);
    let mut options = HttpServerOptions::default();
    options.h2_handshake_timeout = Some(limits.request_head_timeout);
    options.h2_idle_timeout = Some(limits.keepalive_timeout);
    edge.server_options = Some(options);
    edge
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

/// Runs `node`'s lifecycle (probes, reloads) and, once generation 1's first probe round
/// has finished, serves its proxy on `listeners` until `shutdown` turns true; then drains
/// as `portico run` does and returns: the in-process twin of [`Node::run`].
///
/// `listeners[i]` stands for the node's listener `i` (its name scopes routes), whatever
/// address it was actually bound to.
pub async fn serve_node(
    mut node: Node,
    listeners: Vec<(TcpListener, Option<Arc<ServerTls>>)>,
    shutdown: watch::Receiver<bool>,
) {
    let lifecycle = node.lifecycle.clone();
    let (ready, mut first_round) = watch::channel(false);
    let life_shutdown = shutdown.clone();
    let life = tokio::spawn(async move {
        lifecycle
            .run(life_shutdown, ServiceReadyNotifier::new(ready))
            .await
    });
    if first_round.wait_for(|done| *done).await.is_err() || *shutdown.borrow() {
        let _ = life.await;
        return;
    }
    for (i, (listener, _)) in listeners.iter().enumerate() {
        if let (Some(slot), Ok(addr)) = (node.proxy.bound.get_mut(i), listener.local_addr()) {
            *slot = addr;
        }
    }
    let app = node.into_app();
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, tls) in listeners {
        let acceptor = match tls.map(|tls| tls.acceptor()).transpose() {
            Ok(acceptor) => acceptor.map(Arc::new),
            Err(e) => {
                log::error!("a TLS listener cannot start: {e}");
                continue;
            }
        };
        tasks.spawn(serve(app.clone(), listener, acceptor, shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    let _ = life.await;
}

/// Serves `app` on connections accepted from `listener` until `shutdown` turns true.
/// With `tls`, each connection's TLS handshake comes first.
pub async fn serve(
    app: Arc<EdgeApp>,
    listener: TcpListener,
    tls: Option<Arc<Acceptor>>,
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
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut l4 = pingora_core::protocols::l4::stream::Stream::from(stream);
            // The client address comes from the socket digest, as on Pingora's own listeners.
            let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
            l4.set_socket_digest(digest);
            // The caps, the TLS handshake's deadline and the head guard: as under Pingora.
            let Some(mut stream) = app
                .serve_connection(Box::new(l4), tls.as_deref(), &shutdown)
                .await
            else {
                return;
            };
            // Keep-alive: the app hands the connection back while it stays reusable.
            while let Some(reused) = app.process_new(stream, &shutdown).await {
                stream = reused;
            }
        });
    }
}

/// The settings that hold for the whole process, set at start and by each reload: tunnels'
/// `splice`, batched sends, and Pingora's measure of how long each stream's reads and
/// writes wait, off because Portico never reads it (two clock reads per waiting read, per
/// request and side).
pub(crate) fn set_process_switches(settings: &NodeSettings) {
    crate::tunnel::relay::set_splice(settings.tunnel_splice);
    pingora_core::protocols::http::v1::common::set_send_batching(settings.batch_sends);
    pingora_core::protocols::l4::stream::set_pending_time_tracking(false);
}
