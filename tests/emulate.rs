//! `portico emulate` as users run it: the built binary in front of a real app (the demo
//! origin, or a WebSocket-only backend), and `--config-out`'s files under `check` and `run`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{first_answer, free_port, Running};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The demo origin (HTTP, and WebSocket echo on `/chat` and `/legacy/*`) on 127.0.0.1:0.
async fn demo_origin() -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let demo = portico::demo::origin::DemoOrigin::new();
    tokio::spawn(demo.serve(listener, stopped));
    (addr, stop)
}

struct Ports {
    edge: u16,
    admin: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            edge: free_port(),
            admin: free_port(),
        }
    }

    fn args(&self) -> [String; 4] {
        [
            "--listen".into(),
            format!("127.0.0.1:{}", self.edge),
            "--admin".into(),
            format!("127.0.0.1:{}", self.admin),
        ]
    }
}

fn emulate(args: &[String], dir: &std::path::Path, name: &str) -> Running {
    let mut all = vec!["emulate"];
    all.extend(args.iter().map(String::as_str));
    Running::start(&all, dir, name)
}

/// Waits until the edge answers (it listens after its first probe round).
async fn ready(port: u16) {
    let _ = first_answer(
        &common::edge::client(),
        &format!("http://127.0.0.1:{port}/"),
    )
    .await;
}

async fn admin_status(admin: u16) -> serde_json::Value {
    let text = common::edge::client()
        .get(format!("http://127.0.0.1:{admin}/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The edge on `port` behaves as the front-door emulation of the demo origin should: a
/// cached route's upgrade fails with the origin's own answer, as on a `reproduce` route,
/// and the WebSocket route echoes. Returns the open (silent) echo tunnel.
async fn front_door_behaviour(
    port: u16,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let legacy = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/legacy/x")).await;
    match legacy {
        Err(WsError::Http(response)) => {
            assert_eq!(
                response.status(),
                426,
                "the origin's status for a plain GET"
            );
            assert_eq!(
                response.headers()["x-cache"],
                "UNCACHEABLE",
                "reproduce strips the upgrade"
            );
        }
        other => panic!("the cached route must not upgrade: {other:?}"),
    }
    let (mut chat, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/chat"))
        .await
        .unwrap();
    chat.send(Message::text("hi")).await.unwrap();
    assert_eq!(chat.next().await.unwrap().unwrap(), Message::text("hi"));
    chat
}

/// Waits up to 10 s for the process's output to contain `wanted`.
async fn printed(running: &Running, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = running.printed();
        if out.contains(wanted) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "never printed {wanted:?}:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_door_reproduces_the_cached_upgrade_failure_echoes_and_closes_idle_tunnels() {
    let (origin, _stop) = demo_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let mut args: Vec<String> = [
        "--origin",
        &format!("http://{origin}"),
        "--cached",
        "/legacy/*",
        "--websocket",
        "/chat",
        "--idle-timeout",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(ports.args());
    let edge = emulate(&args, dir.path(), "front-door");
    ready(ports.edge).await;
    let out = edge.printed();
    assert!(
        out.contains(&format!("http://127.0.0.1:{}", ports.edge)),
        "{out}"
    );
    assert!(
        out.contains(&format!("http://127.0.0.1:{}", ports.admin)),
        "{out}"
    );
    assert!(
        out.contains("cached-legacy") && out.contains("ws-chat"),
        "{out}"
    );

    let mut chat = front_door_behaviour(ports.edge).await;
    // Silent for the idle timeout: the edge closes the tunnel and says why.
    assert!(
        common::ws_ends(&mut chat).await,
        "the idle tunnel stayed open"
    );
    printed(&edge, r#""closed_by":"idle_timeout""#).await;
}

/// A backend that speaks only WebSocket: every plain request gets 426.
async fn websocket_only_backend() -> common::origin::TestOrigin {
    common::origin::TestOrigin::websocket_echo(Arc::new(|_: &common::origin::Recorded| {
        http::Response::builder()
            .status(426)
            .body(Bytes::from_static(b"websocket only"))
            .unwrap()
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agc_marks_a_websocket_only_backend_unhealthy_unless_the_probe_is_tcp() {
    let backend = websocket_only_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let base = |ports: &Ports| {
        let mut args: Vec<String> = [
            "--profile",
            "agc",
            "--origin",
            &format!("http://{}", backend.addr()),
            "--websocket",
            "/ws",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(ports.args());
        args
    };

    // AGC's default probe: GET / gets 426, so the backend is unhealthy, and says so.
    let ports = Ports::new();
    let _agc = emulate(&base(&ports), dir.path(), "agc-default");
    ready(ports.edge).await;
    let status = admin_status(ports.admin).await;
    let origin = &status["origin_groups"][0]["origins"][0];
    assert_eq!(origin["health"], "unhealthy", "{origin}");
    assert_eq!(origin["last_error"]["status"], 426, "{origin}");
    let refused =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", ports.edge)).await;
    let Err(WsError::Http(response)) = refused else {
        panic!("an unhealthy backend must not upgrade: {refused:?}");
    };
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-portico-error"], "no-healthy-origin");
    let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
    assert!(
        body.contains("HealthCheckPolicy") && body.contains("TCP"),
        "{body}"
    );
    assert!(body.contains("GET / expecting 200-399"), "{body}");
    assert!(!body.contains(&backend.addr().to_string()), "{body}");

    // With a TCP probe (AGC's fix), the same backend is healthy and tunnels.
    let ports = Ports::new();
    let mut args = base(&ports);
    args.extend(["--probe".to_string(), "tcp".to_string()]);
    let _tcp = emulate(&args, dir.path(), "agc-tcp");
    ready(ports.edge).await;
    let status = admin_status(ports.admin).await;
    assert_eq!(
        status["origin_groups"][0]["origins"][0]["health"], "healthy",
        "{status}"
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", ports.edge))
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
}

/// Runs `portico check` on `conf`, asserts it passes, and returns what it printed.
fn check_accepts(conf: &std::path::Path) -> String {
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "-c"])
        .arg(conf)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{said}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_out_writes_files_that_check_accepts_and_run_serves_the_same_way() {
    let (origin, _stop) = demo_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("grown");
    let ports = Ports::new();
    let mut args: Vec<String> = [
        "--origin",
        &format!("http://{origin}"),
        "--cached",
        "/legacy/*",
        "--websocket",
        "/chat",
        "--drop-tunnels-every",
        "30s",
        "--config-out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(ports.args());
    let mut writer = emulate(&args, dir.path(), "config-out");
    let exit = writer.exited_within(Duration::from_secs(30)).await;
    assert!(exit.is_some_and(|s| s.success()), "{}", writer.printed());
    let conf = out.join("conf/portico.yaml");
    assert!(out.join("rules/emulate.yaml").exists());

    let said = check_accepts(&conf);
    assert!(said.contains("configuration OK (3 routes"), "{said}");

    let _run = Running::start(&["run", "-c", conf.to_str().unwrap()], dir.path(), "run");
    ready(ports.edge).await;
    let status = admin_status(ports.admin).await;
    let routes: Vec<&str> = status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["ws-chat", "cached-legacy", "pass-root"]);
    drop(front_door_behaviour(ports.edge).await);
}

#[test]
fn bad_flags_are_refused_before_anything_runs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["emulate", "--origin", "ftp://x", "--listen", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("scheme must be http or https"), "{said}");
}

/// An admin listener beyond loopback needs a bearer token, as under `portico run`: the flag
/// gives it one (a relative path is taken from where `emulate` runs).
#[test]
fn an_admin_listener_beyond_loopback_needs_a_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let emulate = |extra: &[&str], out: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .current_dir(dir.path())
            .args(["emulate", "--origin", "http://127.0.0.1:1"])
            .args(["--admin", "0.0.0.0:9999", "--config-out", out])
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = emulate(&[], "open");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("set admin.token_file"), "{said}");

    std::fs::write(dir.path().join("token"), format!("{}\n", "t".repeat(48))).unwrap();
    let written = emulate(&["--admin-token-file", "token"], "guarded");
    let said = String::from_utf8_lossy(&written.stderr);
    assert!(written.status.success(), "{said}");
    let conf = dir.path().join("guarded/conf/portico.yaml");
    check_accepts(&conf);
    let text = std::fs::read_to_string(&conf).unwrap();
    let token = dir.path().join("token");
    assert!(
        text.contains(&format!("  token_file: \"{}\"\n", token.display())),
        "{text}"
    );
}
