//! The node's life: configuration generations (live reload), drain on shutdown, and the
//! graceful binary upgrade.
//!
//! ```text
//!  start ──► generation 1 ──► its probes' first round ──► listeners accept
//!
//!  SIGHUP │ POST /reload │ a file changes under --watch │ an origin name's address changes
//!    └─► reload::next_generation: load + every check of `portico check`
//!          ├─ refused (file:line:col errors, or a change that needs a restart):
//!          │    nothing changes; /status and the log say why
//!          └─ generation N+1 built beside N (unchanged origins keep their health)
//!               ─► its probes' first round ─► certificates and log target swapped
//!               ─► snapshot swapped (atomic) ─► N's probes stop
//!             requests keep the generation they started with; tunnels belong to none
//!
//!  SIGTERM ─► /healthz 503 ─► drain_delay ─► listeners close ─► requests finish, tunnels
//!             get tunnel_drain_timeout ─► the rest closed (closed_by: shutdown) ─► exit 0
//!  SIGQUIT ─► (a `portico run --upgrade` waits) listening sockets handed over ─► plain-TCP
//!             tunnels handed over (crate::tunnel::handover) ─► the rest as SIGTERM
//!  SIGINT  ─► fast stop
//! ```
//!
//! Every long-lived task of the node selects on one signal: the probes of a generation on
//! its stop watch, tunnels on [`drain::Drain`], the watcher, the `chaos:` schedule
//! ([`chaos`]), origin names ([`resolve`]) and the reload loop on the node's shutdown
//! watch.

pub mod chaos;
pub mod drain;
pub mod notify;
pub mod reload;
pub mod resolve;
pub mod signals;
pub mod tunnels;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::ServiceReadyNotifier;
use tokio::sync::{mpsc, watch as tokio_watch};

use crate::config::model::NodeSettings;
use crate::observability::{AccessLog, Metrics};
use crate::proxy::Snapshot;
use crate::tls::tickets::Ticketer;
use crate::tls::ServerTls;
use drain::Drain;
use reload::ReloadError;

/// Where the node is in its life; `/healthz` answers 503 once it is past `Serving`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// SIGTERM: load balancers are told to go elsewhere; the listeners close soon.
    Draining,
    /// SIGQUIT: the listening sockets go to a new process; this one drains.
    HandingOver,
}

/// What the node does once drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenDrained {
    /// `portico run`: flush the access log and exit 0 (Pingora would wait out its whole
    /// grace period).
    ExitProcess,
    /// In-process hosting (tests): return to the caller.
    Return,
}

/// The outcome of the last reload, for `/status`.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub time_ms: u128,
    pub trigger: &'static str,
    /// The generation it produced, or every reason it was refused.
    pub result: Result<u64, Vec<String>>,
}

/// Reloads so far: how many took effect, how many were refused, and the last one.
#[derive(Clone, Debug, Default)]
pub struct Reloads {
    pub ok: u64,
    pub refused: u64,
    pub last: Option<ReloadRecord>,
}

/// The node's lifecycle: owns the live configuration generation and its probes.
pub struct Lifecycle {
    pub conf_path: PathBuf,
    pub current: Arc<ArcSwap<Snapshot>>,
    /// The settings the process started with: what a reload may not change.
    pub started: NodeSettings,
    /// Each listener's certificates (`None` for plain HTTP), replaced on reload.
    pub tls: Vec<(SocketAddr, Option<Arc<ServerTls>>)>,
    /// The session ticket keys the TLS listeners share, replaced on reload.
    pub tickets: Arc<Ticketer>,
    pub access_log: AccessLog,
    pub metrics: Arc<Metrics>,
    pub drain: &'static Drain,
    pub when_drained: WhenDrained,
    phase: tokio_watch::Sender<Phase>,
    /// Held through a reload (one at a time); holds the live generation's probe stop.
    live_probes: tokio::sync::Mutex<Option<tokio_watch::Sender<bool>>>,
    /// The last reload's record and the counts, written under one lock with the swap of
    /// `current`, so that a reader ([`Lifecycle::reload_view`]) never sees a generation
    /// without the reload that made it.
    reloads: parking_lot::Mutex<Reloads>,
    /// The runtime the probes run on: the lifecycle service's own.
    runtime: OnceLock<tokio::runtime::Handle>,
    requests: mpsc::UnboundedSender<&'static str>,
    requests_rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<&'static str>>>,
    /// `portico run --watch`: how often files are looked at.
    pub watch_files: Option<Duration>,
    /// This process took its listeners over from another (`portico run --upgrade`).
    pub upgraded: bool,
    /// Origin names resolved again ([`resolve`]): rounds so far and the last failure.
    pub origin_names: parking_lot::Mutex<crate::tier::discovery::ResolverState>,
}

impl Lifecycle {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conf_path: PathBuf,
        current: Arc<ArcSwap<Snapshot>>,
        started: NodeSettings,
        tls: Vec<(SocketAddr, Option<Arc<ServerTls>>)>,
        tickets: Arc<Ticketer>,
        access_log: AccessLog,
        metrics: Arc<Metrics>,
        drain: &'static Drain,
        when_drained: WhenDrained,
    ) -> Lifecycle {
        let (requests, requests_rx) = mpsc::unbounded_channel();
        Lifecycle {
            conf_path,
            current,
            started,
            tls,
            tickets,
            access_log,
            metrics,
            drain,
            when_drained,
            phase: tokio_watch::channel(Phase::Serving).0,
            live_probes: tokio::sync::Mutex::new(None),
            reloads: parking_lot::Mutex::new(Reloads::default()),
            runtime: OnceLock::new(),
            requests,
            requests_rx: parking_lot::Mutex::new(Some(requests_rx)),
            watch_files: None,
            upgraded: false,
            origin_names: Default::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn watch_phase(&self) -> tokio_watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// The generation serving new requests with the reloads so far, read together: the
    /// snapshot is never newer than the record of the reload that made it.
    pub fn reload_view(&self) -> (Arc<Snapshot>, Reloads) {
        let reloads = self.reloads.lock();
        (self.current.load_full(), reloads.clone())
    }

    /// Asks the lifecycle loop for a reload (SIGHUP); its outcome goes to the log.
    pub fn request_reload(&self, trigger: &'static str) {
        let _ = self.requests.send(trigger);
    }

    /// Builds the next generation from the files and swaps it in, or says why not.
    pub async fn reload(&self, trigger: &'static str) -> Result<u64, ReloadError> {
        let mut live_probes = self.live_probes.lock().await;
        let outcome = reload::next_generation(self).await;
        let mut reloads = self.reloads.lock();
        let result = match outcome {
            Ok((snapshot, probes)) => {
                let generation = snapshot.generation;
                self.current.store(snapshot);
                if let Some(old) = live_probes.replace(probes) {
                    old.send_replace(true);
                }
                reloads.ok += 1;
                Ok(generation)
            }
            Err(error) => {
                reloads.refused += 1;
                Err(error)
            }
        };
        reloads.last = Some(ReloadRecord {
            time_ms: crate::observability::records::now_ms(),
            trigger,
            result: result.as_ref().map(|g| *g).map_err(|e| e.lines().to_vec()),
        });
        drop(reloads);
        // Logged once the lock is let go: `/status` waits on it.
        match &result {
            Ok(generation) => log::info!("reload ({trigger}): generation {generation} is live"),
            Err(error) => log::error!(
                "reload ({trigger}) refused; generation {} keeps serving:\n{}",
                self.generation(),
                error.lines().join("\n")
            ),
        }
        result
    }

    /// Starts `snapshot`'s probes on the lifecycle runtime; the receiver turns true once
    /// their first round has finished. The sender stops them.
    fn start_probes(
        &self,
        snapshot: &Snapshot,
    ) -> (tokio_watch::Sender<bool>, tokio_watch::Receiver<bool>) {
        // Origin probes, and the shields' ring and its discovery (`crate::tier`).
        let probes = crate::tier::background(snapshot);
        let (stop, stopped) = tokio_watch::channel(false);
        let (ready, first_round) = tokio_watch::channel(false);
        let task = async move { probes.run(stopped, ServiceReadyNotifier::new(ready)).await };
        match self.runtime.get() {
            Some(runtime) => drop(runtime.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
        (stop, first_round)
    }

    /// The node's lifecycle loop, until `shutdown`: starts generation 1's probes and says
    /// `ready` after their first round, serves reload requests and the file watcher, then
    /// drains (and, under `portico run`, exits).
    pub async fn run(&self, mut shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        let _ = self.runtime.set(tokio::runtime::Handle::current());
        let (stop, mut first_round) = self.start_probes(&self.current.load());
        *self.live_probes.lock().await = Some(stop);
        tokio::select! {
            _ = first_round.wait_for(|done| *done) => {}
            _ = shutdown.changed() => {}
        }
        ready.notify_ready();
        notify::notify(&notify::ready_state(self.upgraded));
        let mut requests = self.requests_rx.lock().take();
        let watcher = self
            .watch_files
            .map(|every| watch::FileWatch::new(self, every));
        let mut watcher = std::pin::pin!(async {
            match watcher {
                Some(mut watcher) => watcher.run(self).await,
                None => std::future::pending().await,
            }
        });
        let mut chaos = std::pin::pin!(chaos::run(&self.current, self.drain));
        let mut origin_names = resolve::OriginNames::default();
        let mut origin_names = std::pin::pin!(origin_names.run(self));
        while !*shutdown.borrow() {
            tokio::select! {
                _ = &mut chaos => {}
                _ = &mut origin_names => {}
                Some(trigger) = async { requests.as_mut()?.recv().await } => {
                    let _ = self.reload(trigger).await;
                }
                _ = &mut watcher => {}
                // A dropped sender means nobody can stop us any more: stop now.
                changed = shutdown.changed() => if changed.is_err() { break },
            }
        }
        self.stop().await;
    }

    /// Listeners are closed: lets requests and tunnels finish, closes what is left.
    async fn stop(&self) {
        if self.phase() == Phase::Serving {
            self.set_phase(Phase::Draining);
        }
        if self.phase() == Phase::Draining {
            // After a handover the new process is the unit's main process already.
            notify::notify("STOPPING=1");
        }
        let node = &self.current.load().engine.config.node;
        let timeout = node.tunnel_drain_timeout;
        let mut handover = crate::tunnel::handover::HandoverReport::default();
        if self.phase() == Phase::HandingOver && node.tunnel_handover {
            // The new process has the listeners; it takes the plain-TCP tunnels too.
            let path = crate::tunnel::handover::socket_path(&node.upgrade_sock);
            handover = crate::tunnel::handover::hand_over(self.drain, &path).await;
            log::info!(
                "tunnel handover: {} handed over (holding {} bytes), {} kept (they drain here)",
                handover.handed_over,
                handover.held_bytes,
                handover.kept
            );
        }
        let (requests, tunnels) = (self.drain.requests_in_flight(), self.drain.open_tunnels());
        log::info!("draining: {requests} request(s) in flight, {tunnels} tunnel(s) open; tunnels get {timeout:?}");
        let report = self.drain.run(timeout).await;
        log::info!(
            "drained: {} tunnel(s) closed at the drain timeout, {} request(s) and {} tunnel(s) left",
            report.tunnels_closed,
            report.requests_left,
            report.tunnels_left
        );
        if self.phase() == Phase::HandingOver {
            log::info!(
                "upgrade: tunnels {} handed over, {} kept and drained ({} of them closed at the drain timeout)",
                handover.handed_over,
                tunnels,
                report.tunnels_closed
            );
        }
        if let Some(probes) = self.live_probes.lock().await.take() {
            probes.send_replace(true);
        }
        if self.when_drained == WhenDrained::ExitProcess {
            self.access_log.flush(Duration::from_secs(5));
            std::process::exit(0);
        }
    }
}

/// The lifecycle loop as a Pingora background service (`portico run`); the proxy service
/// depends on it, so listeners open only after generation 1's first probe round.
pub struct LifecycleService(pub Arc<Lifecycle>);

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for LifecycleService {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready_notifier: ServiceReadyNotifier,
    ) {
        self.0.run(shutdown, ready_notifier).await;
    }

    async fn start(&self, shutdown: ShutdownWatch) {
        let (ready, _) = tokio_watch::channel(false);
        self.0.run(shutdown, ServiceReadyNotifier::new(ready)).await;
    }
}
