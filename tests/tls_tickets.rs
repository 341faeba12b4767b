//! TLS session tickets across a fleet: nodes given the same `tls_ticket_keys` files resume
//! each other's clients; a node with its own key, or with other files, does not; a reload
//! rotates the keys without ending the sessions sealed under the old one, and a binary
//! upgrade keeps them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::edge::{client, group_yaml, TestEdge};
use common::node::{stop_now, upgrade, NodeFiles};
use common::origin::TestOrigin;
use common::process::{first_answer, free_port};
use common::tls::{handshake_of_a_get, tls_node_yaml, Issued, TestPki};
use rustls::HandshakeKind::{Full, Resumed};

const WWW: &str = "www.example.test";

struct Fleet {
    pki: TestPki,
    www: Issued,
    rules: String,
    keys: tempfile::TempDir,
    _origin: TestOrigin,
}

impl Fleet {
    async fn new() -> Fleet {
        let pki = TestPki::new();
        let www = pki.issue("www", &[WWW]);
        let origin = TestOrigin::ok(&[]).await;
        let rules = format!(
            "routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: plain\n    forwarding_protocol: http_only\norigin_groups:\n{}",
            group_yaml("plain", origin.addr())
        );
        Fleet {
            pki,
            www,
            rules,
            keys: tempfile::tempdir().unwrap(),
            _origin: origin,
        }
    }

    /// A key file of 80 random bytes.
    fn key(&self, name: &str) -> PathBuf {
        let path = self.keys.path().join(name);
        let mut bytes = [0u8; 80];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn node_yaml(&self, keys: &[&Path]) -> String {
        let list = keys
            .iter()
            .map(|key| format!("\"{}\"", key.display()))
            .collect::<Vec<_>>()
            .join(", ");
        let extra = if keys.is_empty() {
            String::new()
        } else {
            format!("tls_ticket_keys: [{list}]\n")
        };
        tls_node_yaml(&[&self.www], &extra)
    }

    async fn node(&self, keys: &[&Path]) -> TestEdge {
        TestEdge::start(&self.node_yaml(keys), &self.rules).await
    }

    /// A new client (its own session store) speaking `version` only.
    fn client(
        &self,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Arc<rustls::ClientConfig> {
        Arc::new(self.pki.client_config_with(&[version]))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_given_the_same_key_files_resume_each_others_sessions() {
    let fleet = Fleet::new().await;
    let shared = fleet.key("shared");
    let other = fleet.key("other");
    let a = fleet.node(&[&shared]).await;
    let b = fleet.node(&[&shared]).await;
    let own = fleet.node(&[]).await;
    let elsewhere = fleet.node(&[&other]).await;
    let get = |edge: &TestEdge, client: &Arc<rustls::ClientConfig>| {
        let (addr, client) = (edge.tls_addr.unwrap(), client.clone());
        async move { handshake_of_a_get(addr, &client, WWW, "/resume").await }
    };
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = fleet.client(version);
        assert_eq!(get(&a, &client).await, Full, "{version:?}");
        assert_eq!(
            get(&b, &client).await,
            Resumed,
            "{version:?}: a ticket of a's on b"
        );
        assert_eq!(get(&a, &client).await, Resumed, "{version:?}: b's on a");
        for (name, node) in [("its own key", &own), ("other key files", &elsewhere)] {
            let client = fleet.client(version);
            assert_eq!(get(&a, &client).await, Full);
            assert_eq!(
                get(node, &client).await,
                Full,
                "{version:?}: a node with {name}"
            );
        }
    }
}

/// A rotation by reload: the new key first, the old one second. A session sealed under the
/// old key still resumes; new tickets are sealed under the new one, which a node still on
/// the old key alone cannot open. A reload that drops every key gives the node its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_ticket_keys_without_ending_sessions() {
    let fleet = Fleet::new().await;
    let (old, new) = (fleet.key("old"), fleet.key("new"));
    let rotated = fleet.node(&[&old]).await;
    let behind = fleet.node(&[&old]).await;
    let get = |edge: &TestEdge, client: &Arc<rustls::ClientConfig>| {
        let (addr, client) = (edge.tls_addr.unwrap(), client.clone());
        async move { handshake_of_a_get(addr, &client, WWW, "/resume").await }
    };
    let before = fleet.client(&rustls::version::TLS13);
    assert_eq!(get(&rotated, &before).await, Full);

    let node_file = rotated.dir.path().join("portico.yaml");
    std::fs::write(&node_file, fleet.node_yaml(&[&new, &old])).unwrap();
    assert_eq!(rotated.reload().await.0, 200);
    let name: String = std::fs::read(&new).unwrap()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(
        rotated.status().await["configuration"]["tls_tickets"],
        serde_json::json!({"keys": "shared", "count": 2, "sealing": name})
    );
    assert_eq!(
        get(&rotated, &before).await,
        Resumed,
        "sealed under the old key"
    );
    let after = fleet.client(&rustls::version::TLS13);
    assert_eq!(get(&rotated, &after).await, Full);
    assert_eq!(get(&behind, &after).await, Full, "sealed under the new key");

    // A key file that cannot be read refuses the reload; the keys in use stay.
    std::fs::write(
        &node_file,
        fleet.node_yaml(&[&fleet.keys.path().join("missing")]),
    )
    .unwrap();
    let (code, answer) = rotated.reload().await;
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer.to_string().contains("tls_ticket_keys[0]"),
        "{answer}"
    );
    assert_eq!(get(&rotated, &after).await, Resumed);

    std::fs::write(&node_file, fleet.node_yaml(&[])).unwrap();
    assert_eq!(rotated.reload().await.0, 200);
    assert_eq!(
        rotated.status().await["configuration"]["tls_tickets"]["keys"],
        "own"
    );
    assert_eq!(get(&rotated, &after).await, Full, "the node's own key now");
}

/// The process a binary upgrade starts reads the same key files: a client resumes the
/// session the old process gave it (`portico run` and `deploy/systemd/portico-upgrade`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_keeps_the_sessions_sealed_under_shared_keys() {
    let fleet = Fleet::new().await;
    let key = fleet.key("shared");
    let tls_port = free_port();
    let listener = format!(
        "  - address: 127.0.0.1:{tls_port}\n    tls:\n      certificates:\n        - {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
        fleet.www.cert.display(),
        fleet.www.key.display()
    );
    let keys = format!("tls_ticket_keys: [\"{}\"]\n", key.display());
    let node = NodeFiles::with("", &listener, &keys, &fleet.rules);
    let mut old = node.run(&[], "old");
    first_answer(&client(), &node.url("/ready")).await;
    let tls_addr = std::net::SocketAddr::from(([127, 0, 0, 1], tls_port));
    let returning = fleet.client(&rustls::version::TLS13);
    assert_eq!(
        handshake_of_a_get(tls_addr, &returning, WWW, "/resume").await,
        Full
    );

    let new_pid = upgrade(&node, &old, &[]);
    let exit = old
        .exited_within(std::time::Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("the old process did not exit:\n{}", old.printed()));
    assert!(exit.success(), "{}", old.printed());
    assert_eq!(
        handshake_of_a_get(tls_addr, &returning, WWW, "/resume").await,
        Resumed,
        "a session of the old process's, on the new one"
    );
    stop_now(&new_pid).await;
}
