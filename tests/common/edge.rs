//! An edge started in-process on `127.0.0.1:0`, on a config written to a temp folder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use portico::server::Node;

pub struct TestEdge {
    pub addr: SocketAddr,
    /// Every listener's address, in the node file's order.
    pub addrs: Vec<SocketAddr>,
    /// The TLS listener, when the node file has one.
    pub tls_addr: Option<SocketAddr>,
    /// The admin endpoints (`/status`, `/healthz`, `/purge`), also on an ephemeral port.
    pub admin_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    shutdown: watch::Sender<bool>,
}

/// A node file listening nowhere in particular (the test binds its own socket), logging to
/// `access.log` in the temp folder. `extra` is appended (e.g. a `defaults:` block).
pub fn node_yaml(extra: &str) -> String {
    format!("name: test-edge\nlisteners:\n  - address: 127.0.0.1:1\nrules_dir: rules\naccess_log: access.log\nserver:\n  threads: 1\n{extra}")
}

/// An origin group named `name` with one origin at `addr`.
pub fn group_yaml(name: &str, addr: SocketAddr) -> String {
    format!("  - name: {name}\n    origins:\n      - address: {addr}\n        host_header: origin.internal\n")
}

impl TestEdge {
    /// Starts an edge with the node file `node` and one rules file `rules`.
    pub async fn start(node: &str, rules: &str) -> TestEdge {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("rules")).expect("rules dir");
        std::fs::write(dir.path().join("portico.yaml"), node).expect("write conf");
        std::fs::write(dir.path().join("rules/rules.yaml"), rules).expect("write rules");
        let node = Node::load(&dir.path().join("portico.yaml"))
            .unwrap_or_else(|e| panic!("config refused:\n{e}"));
        // One ephemeral port per listener of the node file, in its order (so that each
        // stands for its listener's name); a plain one is added if the file has none.
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for (_, tls) in &node.listeners {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addrs.push(listener.local_addr().expect("addr"));
            listeners.push((listener, tls.clone()));
        }
        if node.listeners.iter().all(|(_, tls)| tls.is_some()) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addrs.push(listener.local_addr().expect("addr"));
            listeners.push((listener, None));
        }
        let first = |tls: bool| {
            listeners
                .iter()
                .zip(&addrs)
                .find(|((_, t), _)| t.is_some() == tls)
                .map(|(_, addr)| *addr)
        };
        let addr = first(false).expect("a plain listener");
        let tls_addr = first(true);
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin");
        let admin_addr = admin_listener.local_addr().expect("admin addr");
        let admin = node.admin(admin_addr);
        let (shutdown, watch) = watch::channel(false);
        let admin_shutdown = watch.clone();
        tokio::spawn(async move { admin.serve(admin_listener, admin_shutdown).await });
        // Like `portico run`: connections wait until the first probe round has finished.
        tokio::spawn(portico::server::serve_node(node, listeners, watch));
        TestEdge {
            addr,
            addrs,
            tls_addr,
            admin_addr,
            dir,
            shutdown,
        }
    }

    /// Starts an edge whose rules are `routes` plus the given origin groups.
    pub async fn with_routes(extra_node: &str, rules: &str) -> TestEdge {
        TestEdge::start(&node_yaml(extra_node), rules).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// The admin `/status` document.
    pub async fn status(&self) -> serde_json::Value {
        let text = self.admin_text("/status").await;
        serde_json::from_str(&text).expect("status is JSON")
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.admin_text("/metrics").await
    }

    /// The body of admin `GET path`.
    async fn admin_text(&self, path: &str) -> String {
        client()
            .get(self.admin_url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: body: {e}"))
    }

    /// Replaces the rules file (the next reload reads it).
    pub fn write_rules(&self, rules: &str) {
        std::fs::write(self.dir.path().join("rules/rules.yaml"), rules).expect("write rules");
    }

    /// `POST /reload`: the status and the JSON answer.
    pub async fn reload(&self) -> (u16, serde_json::Value) {
        let response = client()
            .post(self.admin_url("/reload"))
            .send()
            .await
            .expect("POST /reload");
        let status = response.status().as_u16();
        let text = response.text().await.expect("reload body");
        (
            status,
            serde_json::from_str(&text).expect("reload answers JSON"),
        )
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// Access-log lines (parsed JSON), waiting up to 10 s until `wanted` holds for them.
    pub async fn wait_for_log(
        &self,
        wanted: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(self.access_log_path()).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if wanted(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "access log never matched; it holds:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A plain HTTP client that follows no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}
