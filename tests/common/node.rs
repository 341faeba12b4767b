//! A node run as the built binary from files in a temp folder, and its graceful binary
//! upgrade through `deploy/systemd/portico-upgrade`.

use super::process::{free_port, Running};

/// A node's files and ports in a temp folder.
pub struct NodeFiles {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
}

impl NodeFiles {
    /// A node with `server` settings (YAML lines under `server:`) and `rules`.
    pub fn new(server: &str, rules: &str) -> NodeFiles {
        NodeFiles::with(server, "", "", rules)
    }

    /// A node with `server` settings, more `listeners` (YAML list items), `top` level
    /// settings (YAML lines) and `rules`.
    pub fn with(server: &str, listeners: &str, top: &str, rules: &str) -> NodeFiles {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        let (port, admin_port) = (free_port(), free_port());
        std::fs::write(
            dir.path().join("portico.yaml"),
            format!("name: life-edge\nlisteners:\n  - address: 127.0.0.1:{port}\n{listeners}admin:\n  address: 127.0.0.1:{admin_port}\nserver:\n  threads: 2\n  upgrade_sock: upgrade.sock\n{server}{top}rules_dir: rules\naccess_log: access.log\n"),
        )
        .unwrap();
        let files = NodeFiles {
            dir,
            port,
            admin_port,
        };
        files.write_rules(rules);
        files
    }

    pub fn conf(&self) -> String {
        self.dir.path().join("portico.yaml").display().to_string()
    }

    pub fn write_rules(&self, rules: &str) {
        std::fs::write(self.dir.path().join("rules/rules.yaml"), rules).unwrap();
    }

    pub fn run(&self, extra: &[&str], name: &str) -> Running {
        let conf = self.conf();
        let mut args = vec!["run", "-c", conf.as_str()];
        args.extend_from_slice(extra);
        Running::start(&args, self.dir.path(), name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The node's `/metrics` text, once its admin listener answers (after an upgrade the
    /// new process binds it as soon as the old one lets it go).
    pub async fn metrics(&self, http: &reqwest::Client) -> String {
        super::process::first_answer(http, &self.admin("/metrics"))
            .await
            .text()
            .await
            .unwrap()
    }

    /// Polls the access log until it has `count` records of kind `kind` (for at most 10 s).
    pub async fn wait_for_records(&self, kind: &str, count: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let records = self.records(kind);
            if records.len() >= count || std::time::Instant::now() > deadline {
                return records;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The access log's records of kind `kind`.
    pub fn records(&self, kind: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|record| record["kind"] == kind)
            .collect()
    }
}

/// Upgrades `old` to a new process with the upgrade script (`env` added to the new
/// process's environment); returns the new process's pid.
pub fn upgrade(node: &NodeFiles, old: &Running, env: &[(&str, &str)]) -> String {
    let script_out = node.dir.path().join("upgrade-script.out");
    let mut script = std::process::Command::new(format!(
        "{}/deploy/systemd/portico-upgrade",
        env!("CARGO_MANIFEST_DIR")
    ));
    script
        .arg(old.pid().to_string())
        .arg(node.conf())
        .env("PORTICO_BIN", env!("CARGO_BIN_EXE_portico"))
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&script_out).unwrap())
        .stderr(std::fs::File::create(node.dir.path().join("new.out")).unwrap());
    for (name, value) in env {
        script.env(name, value);
    }
    assert!(script.status().unwrap().success());
    let said = std::fs::read_to_string(&script_out).unwrap();
    said.lines()
        .find_map(|line| line.split("hands over to ").nth(1))
        .unwrap_or_else(|| panic!("no new pid in {said:?}"))
        .trim()
        .to_string()
}

/// Stops the process `pid` (an upgraded one: not this test's child) with `SIGINT` and
/// waits until it has exited (gone, or a zombie nobody reaped yet): a process that spins
/// on after a fast stop fails the test instead of outliving it.
pub async fn stop_now(pid: &str) {
    let sent = std::process::Command::new("kill")
        .args(["-INT", pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -INT {pid}");
    let stat = format!("/proc/{pid}/stat");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let state = std::fs::read_to_string(&stat).ok();
        // The state is the field after the command's parenthesised name.
        let exited = state
            .as_deref()
            .and_then(|s| s.rsplit_once(") "))
            .is_none_or(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'));
        if exited {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} still runs 10 s after SIGINT"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
