//! Front Door in your own Rust tests (feature `testing`): the edge of `portico emulate`,
//! started in-process on `127.0.0.1:0` in front of your app.
//!
//! [`FrontDoor`] builds the same configuration `portico emulate` builds (and through the
//! same validating build), writes it to a temporary folder, and serves it on the caller's
//! tokio runtime, with its admin endpoints. The [`Edge`] it hands back knows its
//! addresses, closes tunnels on demand as a maintenance event would
//! ([`Edge::close_tunnels`]), and reads its access log as typed records
//! ([`Edge::access_log`]). Dropping it stops the edge and removes the folder.
//!
//! ```
//! use std::time::Duration;
//! use portico::testing::{AccessRecord, FrontDoor};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A tiny app: every request gets "hello", cacheable for a minute.
//! let app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let app_addr = app.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((mut conn, _)) = app.accept().await {
//!         tokio::spawn(async move {
//!             let mut head = [0u8; 4096];
//!             let _ = conn.read(&mut head).await;
//!             let _ = conn
//!                 .write_all(b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: 5\r\n\r\nhello")
//!                 .await;
//!         });
//!     }
//! });
//!
//! let edge = FrontDoor::in_front_of(app_addr)
//!     .cached("/legacy/*")
//!     .websocket("/chat")
//!     .idle_timeout(Duration::from_secs(2))
//!     .start()
//!     .await?;
//!
//! // A plain request through the edge.
//! let mut conn = tokio::net::TcpStream::connect(edge.addr()).await?;
//! conn.write_all(b"GET /legacy/page HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n").await?;
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 200"));
//! assert!(answer.ends_with("hello"));
//!
//! // Its access-log line, typed.
//! let log = edge
//!     .access_log_until(|lines| !lines.is_empty(), Duration::from_secs(10))
//!     .await;
//! let line = log[0].request().expect("a request line");
//! assert_eq!(line.route.as_deref(), Some("cached-legacy"));
//! assert_eq!(line.cache, "TCP_MISS");
//! # Ok(())
//! # }
//! ```

mod records;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use crate::config::model::CloseHow;
pub use crate::emulate::{Probe, Profile};
pub use crate::lifecycle::tunnels::Selection;
pub use records::{AccessRecord, RequestLine, TunnelLine};

use crate::emulate::Emulation;
use crate::lifecycle::drain::Drain;
use crate::observability::AccessLog;
use crate::server::Node;
use crate::tunnel::ClosedBy;

/// Why an edge did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The emulation's configuration was refused (each diagnostic is in the text).
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Node(#[from] crate::server::StartError),
    #[error("cannot bind or write the edge's files: {0}")]
    Io(#[from] std::io::Error),
}

/// An edge to be started in front of an app (see the [module](self) example).
#[derive(Debug, Clone)]
pub struct FrontDoor {
    emulation: Emulation,
}

impl FrontDoor {
    /// Azure Front Door's behaviour in front of the app at `origin` (plain HTTP).
    pub fn in_front_of(origin: SocketAddr) -> FrontDoor {
        FrontDoor {
            emulation: Emulation::new(&format!("http://{origin}"), Profile::FrontDoor),
        }
    }

    /// Application Gateway for Containers' behaviour instead (no caching, its default
    /// HTTP probe unless [`FrontDoor::probe`] says otherwise).
    pub fn agc(mut self) -> FrontDoor {
        self.emulation.profile = Profile::Agc;
        self
    }

    /// A route with caching on for `pattern` (`/legacy/*`, `/exact`): upgrades fail there.
    pub fn cached(mut self, pattern: &str) -> FrontDoor {
        self.emulation.cached.push(pattern.to_owned());
        self
    }

    /// A WebSocket route for `pattern`: upgrades are tunnelled.
    pub fn websocket(mut self, pattern: &str) -> FrontDoor {
        self.emulation.websocket.push(pattern.to_owned());
        self
    }

    /// Tunnels with no bytes either way for this long are closed (default 5 min).
    pub fn idle_timeout(mut self, timeout: Duration) -> FrontDoor {
        self.emulation.idle_timeout = format!("{}ms", timeout.as_millis());
        self
    }

    /// Tunnels open this long are closed (default 4 h).
    pub fn max_lifetime(mut self, lifetime: Duration) -> FrontDoor {
        self.emulation.max_lifetime = format!("{}ms", lifetime.as_millis());
        self
    }

    pub fn probe(mut self, probe: Probe) -> FrontDoor {
        self.emulation.probe = Some(probe);
        self
    }

    /// Every `every`, about `fraction` of the open tunnels are closed `how`.
    pub fn drop_tunnels_every(
        mut self,
        every: Duration,
        fraction: f64,
        how: CloseHow,
    ) -> FrontDoor {
        self.emulation.drop_every = Some(format!("{}ms", every.as_millis()));
        self.emulation.drop_fraction = fraction;
        self.emulation.drop_how = how.name();
        self
    }

    /// Binds `127.0.0.1:0` (and an admin listener), loads the configuration and serves it
    /// on the current tokio runtime. Connections made before the origin's first probe
    /// round has finished wait for it.
    pub async fn start(mut self) -> Result<Edge, StartError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (addr, admin_addr) = (listener.local_addr()?, admin.local_addr()?);
        self.emulation.listen = addr;
        self.emulation.admin = admin_addr;
        self.emulation.access_log = Some("access.log".into());
        let dir = unique_dir();
        let (conf, _) = self.emulation.write(&dir).map_err(StartError::Config)?;
        let node = Node::load(&conf)?;
        let drain = node.proxy.drain;
        let access_log = node.proxy.access_log.clone();
        let admin_api = node.admin(admin_addr);
        let (shutdown, stop) = watch::channel(false);
        let admin_stop = stop.clone();
        tokio::spawn(async move { admin_api.serve(admin, admin_stop).await });
        tokio::spawn(crate::server::serve_node(
            node,
            vec![(listener, None)],
            stop,
        ));
        Ok(Edge {
            addr,
            admin_addr,
            dir,
            log_path: conf.with_file_name("access.log"),
            drain,
            access_log,
            shutdown,
        })
    }
}

fn unique_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "portico-testing-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A running edge; dropping it stops it.
pub struct Edge {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    dir: PathBuf,
    log_path: PathBuf,
    drain: &'static Drain,
    access_log: AccessLog,
    shutdown: watch::Sender<bool>,
}

impl Edge {
    /// Where the edge listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where its admin endpoints listen (`/status`, `/metrics`, `/tunnels/close`...).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// `http://<edge>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://<edge>/<path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// Closes the chosen open tunnels `how`, as `POST /tunnels/close` does (their records
    /// say `closed_by: admin`); returns how many were told to close. They close at once,
    /// but a Close frame may wait for the end of the frame in flight.
    pub fn close_tunnels(&self, selection: &Selection, how: CloseHow) -> usize {
        self.drain.registry.close(selection, ClosedBy::Admin, how)
    }

    /// Tunnels open now.
    pub fn open_tunnels(&self) -> usize {
        self.drain.open_tunnels()
    }

    /// Every access-log line written so far.
    pub async fn access_log(&self) -> Vec<AccessRecord> {
        let log = self.access_log.clone();
        // The writer thread writes what it has queued, then the file is read.
        let _ = tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(5))).await;
        let text = tokio::fs::read_to_string(&self.log_path)
            .await
            .unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The access log once `done` holds for it, or as it is after `timeout`.
    pub async fn access_log_until(
        &self,
        done: impl Fn(&[AccessRecord]) -> bool,
        timeout: Duration,
    ) -> Vec<AccessRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.access_log().await;
            if done(&lines) || Instant::now() >= deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
