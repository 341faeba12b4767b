//! Nodes of a multi-tier fleet on loopback, each in a runtime (and thread) of its own, so
//! that stopping one really stops it: its listener closes and every connection it holds
//! (pooled keep-alives from edges included) is dropped, as when a process dies.
//!
//! Listeners are bound before the nodes start ([`reserve`]), so that configs can name each
//! other's addresses (an edge names its shields; a loop test's shield names its edge).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use portico::server::Node;

/// A loopback listener on an ephemeral port, for a node to start on later.
pub fn reserve() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

pub struct FleetNode {
    pub name: String,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// A node file for `name`: `extra` holds its tier lines (`tier:`, `shields:`...).
pub fn node_yaml(name: &str, extra: &str) -> String {
    format!("name: {name}\nlisteners:\n  - address: 127.0.0.1:1\nrules_dir: rules\naccess_log: access.log\nserver:\n  threads: 1\n{extra}")
}

impl FleetNode {
    /// Starts node `name` on `listener` with the node file `node` and the rules `rules`.
    pub fn start(
        name: &str,
        node: &str,
        rules: &str,
        listener: std::net::TcpListener,
    ) -> FleetNode {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("rules")).expect("rules dir");
        std::fs::write(dir.path().join("portico.yaml"), node).expect("write conf");
        std::fs::write(dir.path().join("rules/rules.yaml"), rules).expect("write rules");
        let addr = listener.local_addr().expect("addr");
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind admin");
        let admin_addr = admin.local_addr().expect("admin addr");
        let mut node = FleetNode {
            name: name.to_string(),
            addr,
            admin_addr,
            dir,
            running: None,
        };
        node.run(listener, admin);
        node
    }

    fn run(&mut self, listener: std::net::TcpListener, admin: std::net::TcpListener) {
        let conf = self.dir.path().join("portico.yaml");
        let (stop, stopped) = oneshot::channel::<()>();
        let (loaded, load_result) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("node runtime");
            runtime.block_on(serve(&conf, listener, admin, stopped, loaded));
            // Tasks still running (connections, tunnels) die with the runtime.
            runtime.shutdown_background();
        });
        if let Ok(Err(error)) = load_result.recv() {
            panic!("node {} refused its config:\n{error}", self.name);
        }
        self.running = Some((stop, thread));
    }

    /// Stops the node: every connection it holds closes, and once this returns its listener
    /// refuses connections.
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            let _ = stop.send(());
            thread.join().expect("node thread panicked");
            // The runtime's tasks (the accept loop among them) are dropped in the
            // background: until then the kernel still completes handshakes into the
            // listener's backlog, and resets them when it closes. A test that stops a
            // node means a node that refuses, so wait for that.
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::net::TcpStream::connect(self.addr).is_ok() {
                assert!(Instant::now() < deadline, "{} still listens", self.addr);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Starts the node again on the same addresses (a fresh process: its cache is empty).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (listener, admin) = loop {
            match (
                std::net::TcpListener::bind(self.addr),
                std::net::TcpListener::bind(self.admin_addr),
            ) {
                (Ok(listener), Ok(admin)) => break (listener, admin),
                (Err(e), _) | (_, Err(e)) => {
                    assert!(Instant::now() < deadline, "cannot bind again: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        self.run(listener, admin);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// The admin `/status` document.
    pub async fn status(&self) -> serde_json::Value {
        let text = reqwest::get(self.admin_url("/status"))
            .await
            .expect("GET /status")
            .text()
            .await
            .expect("status body");
        serde_json::from_str(&text).expect("status is JSON")
    }

    /// Objects in this node's cache.
    pub async fn cached_objects(&self) -> u64 {
        self.status().await["cache"]["objects"]
            .as_u64()
            .expect("cache.objects")
    }

    /// The access log's lines so far (parsed JSON).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits up to 10 s until `wanted` holds for the access log's lines.
    pub async fn wait_for_log(
        &self,
        wanted: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.log_lines();
            if wanted(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{}: access log never matched; it holds {lines:#?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FleetNode {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    conf: &Path,
    listener: std::net::TcpListener,
    admin: std::net::TcpListener,
    stopped: oneshot::Receiver<()>,
    loaded: mpsc::Sender<Result<(), String>>,
) {
    let node = match Node::load(conf) {
        Ok(node) => node,
        Err(e) => {
            let _ = loaded.send(Err(e.to_string()));
            return;
        }
    };
    let _ = loaded.send(Ok(()));
    listener.set_nonblocking(true).expect("nonblocking");
    admin.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let admin_listener = tokio::net::TcpListener::from_std(admin).expect("admin listener");
    let (shutdown, watch) = watch::channel(false);
    let admin = node.admin(admin_listener.local_addr().expect("admin addr"));
    let admin_shutdown = watch.clone();
    tokio::spawn(async move { admin.serve(admin_listener, admin_shutdown).await });
    // The listener serves as the node file's first one (with its TLS, if it has some).
    let tls = node.listeners.first().and_then(|(_, tls)| tls.clone());
    tokio::spawn(portico::server::serve_node(
        node,
        vec![(listener, tls)],
        watch,
    ));
    let _ = stopped.await;
    let _ = shutdown.send(true);
}
