//! `portico run` as users start it: the built binary under a Pingora `Server`, in front of
//! the built-in demo origin, on the shipped rules.

mod common;

use common::process::{first_answer, free_port, Running};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portico_run_serves_the_shipped_rules_in_front_of_the_demo_origin() {
    let origin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin_listener.local_addr().unwrap();
    let (_stop_origin, stop) = tokio::sync::watch::channel(false);
    let demo = portico::demo::origin::DemoOrigin::new();
    tokio::spawn(demo.clone().serve(origin_listener, stop));

    // The shipped rules, with the demo origin's address swapped for the test's.
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    common::process::shipped_rules_into(dir.path(), origin_addr);
    let (port, admin_port, tls_port) = (free_port(), free_port(), free_port());
    // Plus a TLS listener, as Pingora's Server runs it (certificate resolver by SNI).
    let pki = common::tls::TestPki::new();
    let cert = pki.issue("localhost", &["localhost"]);
    let tls_listener = format!(
        "  - address: 127.0.0.1:{tls_port}\n    tls:\n      certificates:\n        - {{ cert_file: {}, key_file: {} }}\n",
        cert.cert.display(),
        cert.key.display()
    );
    let conf = std::fs::read_to_string(format!("{root}/conf/portico.yaml"))
        .unwrap()
        .replace(
            "  - address: 127.0.0.1:8080\n",
            &format!("  - address: 127.0.0.1:{port}\n{tls_listener}"),
        )
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin_port}"))
        .replace("rules_dir: ../rules", "rules_dir: rules");
    std::fs::write(dir.path().join("portico.yaml"), conf).unwrap();

    let _edge = Running::portico_run(&dir.path().join("portico.yaml"));
    let base = format!("http://127.0.0.1:{port}");
    let client = common::edge::client();
    let first = first_answer(&client, &format!("{base}/static/a.css")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-demo-origin-count"], "1");
    assert_eq!(first.headers()["x-cache"], "TCP_MISS");
    assert!(first.headers().contains_key("x-portico-ref"));
    assert_eq!(first.headers()["x-content-type-options"], "nosniff");

    // The README's caching demo: the second fetch is a hit, and the origin saw one request.
    let second = client
        .get(format!("{base}/static/a.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.headers()["x-cache"], "TCP_HIT");
    assert_eq!(second.text().await.unwrap(), first.text().await.unwrap());
    assert_eq!(demo.count("/static/a.css"), 1);
    let api = client.get(format!("{base}/api/x")).send().await.unwrap();
    assert_eq!(api.headers()["x-cache"], "CONFIG_NOCACHE");

    // HTTPS on the TLS listener. The host is part of the key: `localhost` is a new object.
    let tls_addr: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let https = pki.https_client(&["localhost"], tls_addr);
    for expected in ["TCP_MISS", "TCP_HIT"] {
        let response = https
            .get(format!("https://localhost:{tls_port}/static/a.css"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-cache"], expected);
    }

    let missing = client.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["x-portico-error"], "no-route");

    // The admin listener is its own service: poll it too.
    let status_text = first_answer(&client, &format!("http://127.0.0.1:{admin_port}/status"))
        .await
        .text()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status_text).unwrap();
    assert_eq!(status["node"], "portico-edge-1");
    assert_eq!(status["origin_groups"][0]["name"], "demo");
    assert_eq!(
        status["origin_groups"][0]["origins"][0]["address"],
        origin_addr.to_string()
    );
    // The proxy listens only after the first probe round, so the probe has already run.
    let demo_origin = &status["origin_groups"][0]["origins"][0];
    assert_eq!(demo_origin["health"], "healthy", "{demo_origin}");
    assert_eq!(demo_origin["last_probe"]["status"], 200, "{demo_origin}");

    // The Front Door failure case on the default settings, and the working WebSocket route.
    let legacy = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/legacy/x")).await;
    assert!(
        legacy.is_err(),
        "the legacy (cached) route must not upgrade"
    );
    let (mut chat, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/chat"))
        .await
        .unwrap();
    use futures_util::{SinkExt, StreamExt};
    chat.send(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
        .await
        .unwrap();
    assert_eq!(
        chat.next().await.unwrap().unwrap(),
        tokio_tungstenite::tungstenite::Message::Text("hi".into())
    );
}

/// Under Pingora's `Server` the proxy service depends on the probe service: the listener
/// opens only once the first probe round is over, so the first request already knows
/// which origin is sick (its probe takes the whole 1 s timeout to fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portico_run_listens_only_after_the_first_probe_round() {
    // Accepts connections and never answers.
    let sick = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sick_addr = sick.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = sick.accept().await {
            held.push(stream);
        }
    });
    let alive = common::origin::TestOrigin::ok(&[("x-origin", "alive")]).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("portico.yaml"),
        format!("name: probe-edge\nlisteners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin_port}\nserver:\n  threads: 1\nrules_dir: rules\naccess_log: off\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/rules.yaml"),
        format!("routes:\n  - name: all\n    patterns: [\"/*\"]\n    origin_group: web\nrule_sets: []\norigin_groups:\n  - name: web\n    origins:\n      - name: sick\n        address: {sick_addr}\n        priority: 1\n      - name: alive\n        address: {}\n        priority: 2\n    health_probe: {{ path: /health, interval: 30s, timeout: 1s }}\n", alive.addr()),
    )
    .unwrap();
    let _edge = Running::portico_run(&dir.path().join("portico.yaml"));
    let client = common::edge::client();
    let first = first_answer(&client, &format!("http://127.0.0.1:{port}/first")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-origin"], "alive");
    let status: serde_json::Value = serde_json::from_str(
        &client
            .get(format!("http://127.0.0.1:{admin_port}/status"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let origins = &status["origin_groups"][0]["origins"];
    assert_eq!(origins[0]["health"], "unhealthy", "{origins}");
    assert_eq!(origins[0]["last_error"]["error"], "timed out after 1s");
    assert_eq!(origins[1]["health"], "healthy", "{origins}");
}

/// The built edge's jemalloc carries the settings `.cargo/config.toml` gives it (its slab
/// sizes: about 30 bytes less per stored 1 KiB object) and is built without its
/// cache-oblivious padding (`Cargo.toml`: a page less per block of 16 KiB or more). A
/// build that lost either would still run; this says so.
#[test]
fn the_built_edge_carries_its_allocator_settings() {
    let config =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.cargo/config.toml"))
            .expect(".cargo/config.toml");
    let wanted = config
        .lines()
        .find_map(|line| line.strip_prefix("JEMALLOC_SYS_WITH_MALLOC_CONF = "))
        .expect("the allocator's settings in .cargo/config.toml");
    assert!(wanted.starts_with("\"slab_sizes:"), "{wanted}");
    // jemalloc prints its build-time settings at exit when asked (and nothing else, with
    // every other section left out).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("--version")
        .env(
            "_RJEM_MALLOC_CONF",
            "stats_print:true,stats_print_opts:mdablxeh",
        )
        .output()
        .expect("portico --version runs");
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("config.malloc_conf: {wanted}\n")),
        "the edge's jemalloc was built without {wanted}:\n{stderr}"
    );
    assert!(
        stderr.contains("config.cache_oblivious: false\n"),
        "the edge's jemalloc pads large blocks with a page:\n{stderr}"
    );
}

/// A client that cuts its request head short (closes or resets its connection inside it)
/// is its own doing: logged at debug, never as an error a client could repeat at will to
/// fill the log. Pingora logged an error for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_the_client_cuts_short_is_no_error_in_the_log() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    common::process::shipped_rules_into(dir.path(), "127.0.0.1:9".parse().unwrap());
    let (port, admin_port) = (free_port(), free_port());
    let conf = std::fs::read_to_string(format!("{root}/conf/portico.yaml"))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin_port}"))
        .replace("rules_dir: ../rules", "rules_dir: rules");
    let conf_path = dir.path().join("portico.yaml");
    std::fs::write(&conf_path, conf).unwrap();
    let mut edge = Running::start_logging(
        &["run", "-c", conf_path.to_str().unwrap()],
        dir.path(),
        "edge",
        "info,pingora_proxy=debug",
    );
    let base = format!("http://127.0.0.1:{port}");
    let nowhere = edge
        .first_answer(&common::edge::client(), &format!("{base}/nowhere"))
        .await;
    assert_eq!(nowhere.status(), 404);

    for reset in [false, true] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.write_all(b"GET /static/a.css HTT").await.unwrap();
        if reset {
            socket2::SockRef::from(&stream)
                .set_linger(Some(std::time::Duration::ZERO))
                .unwrap();
        }
        drop(stream);
    }
    // Both reach the log (at debug) within the deadline; none as an error.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&edge.output).unwrap();
        if log.matches("Fail to proxy").count() >= 2 || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let cut: Vec<_> = log
        .lines()
        .filter(|l| l.contains("Fail to proxy"))
        .collect();
    assert_eq!(cut.len(), 2, "{log}");
    assert!(cut.iter().all(|l| l.contains(" DEBUG ")), "{log}");
    assert!(!log.contains(" ERROR "), "{log}");
}
