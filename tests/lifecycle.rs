//! The node's lifecycle with the built binary and real signals: SIGTERM drains, SIGHUP and
//! `--watch` reload, and a graceful binary upgrade hands the listeners over.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::edge::client;
use common::health::raw_origin;
use common::node::{stop_now, upgrade, NodeFiles};
use common::origin::TestOrigin;
use common::process::{first_answer, get_json, status_becomes, RequestLoop};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn route(name: &str, pattern: &str, group: &str, websocket: bool) -> String {
    format!("  - name: {name}\n    patterns: [\"{pattern}\"]\n    origin_group: {group}\n    websocket: {websocket}\n")
}

fn group(name: &str, addr: SocketAddr) -> String {
    format!("  - name: {name}\n    origins:\n      - name: {name}-1\n        address: {addr}\n        host_header: origin.internal\n")
}

async fn echo_origin() -> TestOrigin {
    TestOrigin::websocket_echo(Arc::new(|r| {
        http::Response::new(format!("echo-origin {}", r.path()).into())
    }))
    .await
}

/// One catch-all route to group `web_group`, of groups `a` and `b` (`b` answers
/// `x-origin: b`).
fn web_to(web_group: &str, a: &TestOrigin, b: &TestOrigin) -> String {
    format!(
        "routes:\n{}origin_groups:\n{}{}",
        route("web", "/*", web_group, false),
        group("a", a.addr()),
        group("b", b.addr())
    )
}

/// WebSocket routes under `/chat/*` and plain ones for the rest, both to `echo`.
fn chat_and_web(echo: &TestOrigin) -> String {
    format!(
        "routes:\n{}{}origin_groups:\n{}",
        route("chat", "/chat/*", "echo", true),
        route("web", "/*", "echo", false),
        group("echo", echo.addr()),
    )
}

type Tunnel =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn echoes(ws: &mut Tunnel, text: &str) -> bool {
    if ws.send(Message::text(text)).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(5), ws.next()).await,
        Ok(Some(Ok(message))) if message == Message::text(text)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_then_closes_tunnels_at_the_drain_timeout() {
    let echo = echo_origin().await;
    let (slow, _) = raw_origin(Duration::from_millis(1500), true).await;
    let rules = format!(
        "routes:\n{}{}origin_groups:\n{}{}",
        route("chat", "/chat/*", "echo", true),
        route("slow", "/slow/*", "slow", false),
        group("echo", echo.addr()),
        group("slow", slow)
    );
    // On single-threaded runtimes (a one-thread node's default; this node has two threads).
    let node = NodeFiles::new(
        "  drain_delay: 1s\n  tunnel_drain_timeout: 2s\n  work_stealing: false\n",
        &rules,
    );
    let mut edge = node.run(&[], "edge");
    let http = client();
    assert_eq!(
        first_answer(&http, &node.admin("/healthz")).await.status(),
        200
    );
    first_answer(&http, &node.url("/chat/ready")).await;

    let mut tunnels = Vec::new();
    for _ in 0..10 {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/chat/x", node.port))
                .await
                .expect("upgrade");
        tunnels.push(ws);
    }
    let in_flight = tokio::spawn({
        let url = node.url("/slow/request");
        async move { client().get(url).send().await.map(|r| r.status().as_u16()) }
    });
    // The slow origin has the request before the signal.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    edge.signal("TERM");

    let to_503 = status_becomes(&http, &node.admin("/healthz"), 503, Duration::from_secs(1))
        .await
        .expect("/healthz turns 503 at once");
    assert!(to_503 < Duration::from_millis(900), "{to_503:?}");
    assert_eq!(in_flight.await.unwrap().expect("answered"), 200);
    // During the drain the tunnels still work.
    assert!(echoes(&mut tunnels[0], "still here").await);

    let status = edge
        .exited_within(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no exit; output:\n{}", edge.printed()));
    assert!(status.success(), "exit 0: {status:?}\n{}", edge.printed());
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "drain_delay 1s + tunnel_drain_timeout 2s, then exit: {took:?}"
    );
    for ws in &mut tunnels {
        assert!(common::ws_ends(ws).await, "the tunnel was closed");
    }
    let closed: Vec<_> = node.records("tunnel");
    assert_eq!(closed.len(), 10, "one record per tunnel: {closed:?}");
    assert!(
        closed.iter().all(|r| r["closed_by"] == "shutdown"),
        "{closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_an_idle_node_stops_at_once_on_sigterm() {
    let (a, b) = (
        echo_origin().await,
        TestOrigin::ok(&[("x-origin", "b")]).await,
    );
    let rules = |group_name: &str| web_to(group_name, &a, &b);
    let node = NodeFiles::new("", &rules("a"));
    let mut edge = node.run(&[], "edge");
    let http = client();
    let first = edge.first_answer(&http, &node.url("/x")).await;
    assert_eq!(first.text().await.unwrap(), "echo-origin /x");

    node.write_rules(&rules("b"));
    edge.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = http.get(node.url("/x")).send().await.unwrap();
        if answer.headers().get("x-origin").is_some_and(|v| v == "b") {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP never took effect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = get_json(&http, &node.admin("/status")).await;
    assert_eq!(status["configuration"]["generation"], 2);
    assert_eq!(status["configuration"]["last_reload"]["trigger"], "SIGHUP");

    // Nothing to drain: the process is gone right after the drain delay (default 5 s here).
    let signalled = Instant::now();
    edge.signal("TERM");
    let exit = edge
        .exited_within(Duration::from_secs(12))
        .await
        .expect("exit");
    assert!(exit.success());
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "{:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_on_edit_and_refuses_a_half_written_file() {
    let (a, b) = (
        echo_origin().await,
        TestOrigin::ok(&[("x-origin", "b")]).await,
    );
    let rules = |group_name: &str| web_to(group_name, &a, &b);
    let node = NodeFiles::new("", &rules("a"));
    let mut edge = node.run(&["--watch"], "edge");
    let http = client();
    edge.first_answer(&http, &node.url("/x")).await;
    let served_by = |http: &reqwest::Client| {
        let request = http.get(node.url("/x")).send();
        async move {
            let answer = request.await.unwrap();
            match answer.headers().get("x-origin") {
                Some(_) => "b",
                None => "a",
            }
        }
    };
    let until = |wanted: &'static str| {
        let http = http.clone();
        async move {
            let started = Instant::now();
            while served_by(&http).await != wanted {
                assert!(started.elapsed() < Duration::from_secs(2), "not within 2 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    node.write_rules(&rules("b"));
    until("b").await;

    // Cut mid-line: refused, and b keeps serving.
    let full = rules("a");
    let cut = &full[..full.find("origin_group").unwrap() + 10];
    node.write_rules(cut);
    let started = Instant::now();
    loop {
        let status = get_json(&http, &node.admin("/status")).await;
        if status["configuration"]["last_reload"]["result"] == "refused" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served_by(&http).await, "b");

    node.write_rules(&full);
    until("a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_drops_no_request_and_keeps_old_tunnels_until_the_drain_ends() {
    let echo = echo_origin().await;
    let rules = chat_and_web(&echo);
    // With the handover off, tunnels drain in the old process.
    let node = NodeFiles::new(
        "  tunnel_drain_timeout: 3s\n  tunnel_handover: false\n",
        &rules,
    );
    let mut old = node.run(&[], "old");
    let http = client();
    old.first_answer(&http, &node.url("/ready")).await;
    let (mut tunnel, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/chat/old", node.port))
            .await
            .expect("upgrade");

    // A request loop on new connections each time, across the whole upgrade.
    let requests = RequestLoop::start(node.url("/loop"), true);

    // The documented steps, as `systemctl reload` runs them.
    let script_out = node.dir.path().join("upgrade-script.out");
    let script = std::process::Command::new(format!(
        "{}/deploy/systemd/portico-upgrade",
        env!("CARGO_MANIFEST_DIR")
    ))
    .arg(old.pid().to_string())
    .arg(node.conf())
    .env("PORTICO_BIN", env!("CARGO_BIN_EXE_portico"))
    .stdout(std::fs::File::create(&script_out).unwrap())
    .stderr(std::process::Stdio::inherit())
    .status()
    .unwrap();
    assert!(script.success());
    let said = std::fs::read_to_string(&script_out).unwrap();
    let new_pid = said
        .lines()
        .find_map(|line| line.split("hands over to ").nth(1))
        .unwrap_or_else(|| panic!("no new pid in {said:?}"))
        .trim()
        .to_string();
    // The old process keeps its tunnel through its drain.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(echoes(&mut tunnel, "during the upgrade").await);
    let exit = old
        .exited_within(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the old process never exited:\n{}", old.printed()));
    assert!(exit.success(), "{}", old.printed());
    assert!(
        common::ws_ends(&mut tunnel).await,
        "closed at the end of the drain"
    );

    // The new process serves, its admin included, and the loop never failed.
    assert_eq!(
        first_answer(&http, &node.admin("/healthz")).await.status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sent, failed) = requests.finish().await;
    assert!(sent > 50, "the loop ran");
    assert!(
        failed.is_empty(),
        "failures {failed:?}\nold:\n{}\nupgrade:\n{}",
        old.printed(),
        std::fs::read_to_string(&script_out).unwrap_or_default()
    );
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/chat/new", node.port))
            .await
            .expect("the new process tunnels");
    drop(ws);
    let shutdown: Vec<_> = node
        .records("tunnel")
        .into_iter()
        .filter(|r| r["closed_by"] == "shutdown")
        .collect();
    assert_eq!(shutdown.len(), 1, "the old tunnel's record");
    stop_now(&new_pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_stops_portico_run_at_once_with_the_address_and_reason() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let node = NodeFiles::new("", "routes: []\n");
    let conf = std::fs::read_to_string(node.conf()).unwrap().replace(
        &format!("127.0.0.1:{}\n", node.port),
        &format!("127.0.0.1:{port}\n"),
    );
    std::fs::write(node.conf(), conf).unwrap();
    let mut edge = node.run(&[], "edge");
    let exit = edge
        .exited_within(Duration::from_secs(5))
        .await
        .expect("exits within 5 s");
    assert!(!exit.success());
    let printed = edge.printed();
    assert!(
        printed.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && printed.contains("in use"),
        "{printed}"
    );
}

/// Runs `deploy/systemd/portico-upgrade` on `old` (with `env` for the new process) and
/// returns the new process's pid.
/// Each tunnel sends its own running sequence and checks the echoes come back in order.
async fn echo_sequence(tunnels: &mut [Tunnel], next: &mut [u32], rounds: u32) {
    for _ in 0..rounds {
        for (i, ws) in tunnels.iter_mut().enumerate() {
            let text = format!("tunnel {i} message {}", next[i]);
            assert!(echoes(ws, &text).await, "tunnel {i} lost {text:?}");
            next[i] += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_hands_open_tunnels_to_the_new_process() {
    let echo = echo_origin().await;
    let rules = format!(
        "routes:\n{}origin_groups:\n{}",
        route("chat", "/chat/*", "echo", true),
        group("echo", echo.addr()),
    );
    // A long drain: an old process that waited for its tunnels would show. On
    // single-threaded runtimes, as a one-thread node's default.
    let node = NodeFiles::new(
        "  tunnel_drain_timeout: 60s\n  work_stealing: false\n",
        &rules,
    );
    let mut old = node.run(&[], "old");
    let http = client();
    old.first_answer(&http, &node.url("/ready")).await;
    let mut tunnels = Vec::new();
    for i in 0..20 {
        let url = format!("ws://127.0.0.1:{}/chat/{i}", node.port);
        tunnels.push(
            tokio_tungstenite::connect_async(url)
                .await
                .expect("upgrade")
                .0,
        );
    }
    let mut next = vec![0u32; tunnels.len()];
    echo_sequence(&mut tunnels, &mut next, 3).await;
    // A message on its way when the upgrade happens: sent now, read after.
    let big = "x".repeat(1 << 20);
    tunnels[0].send(Message::text(big.clone())).await.unwrap();

    let quit = Instant::now();
    let new_pid = upgrade(&node, &old, &[]);
    let exit = old
        .exited_within(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("the old process kept its tunnels:\n{}", old.printed()));
    let took = quit.elapsed();
    assert!(exit.success(), "{}", old.printed());
    assert!(took < Duration::from_secs(15), "{took:?}");
    let printed = old.printed();
    assert!(printed.contains("20 handed over"), "{printed}");

    // The old process is gone; every tunnel goes on, in order, through the new one.
    match tokio::time::timeout(Duration::from_secs(5), tunnels[0].next()).await {
        Ok(Some(Ok(message))) => assert!(message == Message::text(big), "the big message changed"),
        other => panic!("the big message was lost: {other:?}"),
    }
    echo_sequence(&mut tunnels, &mut next, 3).await;
    let metrics = node.metrics(&http).await;
    assert!(
        metrics.contains("portico_tunnels_adopted_total 20\n"),
        "{metrics}"
    );

    for ws in &mut tunnels {
        ws.close(None).await.unwrap();
    }
    // One record per tunnel, written by the new process, covering the whole tunnel.
    let records = node.wait_for_records("tunnel", 20).await;
    assert_eq!(records.len(), 20, "{records:?}");
    let ids: std::collections::HashSet<_> = records
        .iter()
        .map(|r| r["request_id"].to_string())
        .collect();
    assert_eq!(ids.len(), 20, "{records:?}");
    for record in &records {
        // The client's Close, answered by the origin, which then closes the connection.
        assert_eq!(record["closed_by"], "origin", "{record}");
        assert!(
            record["duration_ms"].as_u64().unwrap() >= took.as_millis() as u64,
            "{record}"
        );
        assert!(
            record["bytes_client_to_origin"].as_u64().unwrap() > 6 * 20,
            "{record}"
        );
    }
    stop_now(&new_pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_reads_another_handover_version_refuses_and_tunnels_drain() {
    let echo = echo_origin().await;
    let rules = format!(
        "routes:\n{}origin_groups:\n{}",
        route("chat", "/chat/*", "echo", true),
        group("echo", echo.addr()),
    );
    let node = NodeFiles::new("  tunnel_drain_timeout: 3s\n", &rules);
    let mut old = node.run(&[], "old");
    let http = client();
    old.first_answer(&http, &node.url("/ready")).await;
    let (mut tunnel, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/chat/old", node.port))
            .await
            .expect("upgrade");
    assert!(echoes(&mut tunnel, "before").await);
    let new_pid = upgrade(&node, &old, &[("PORTICO_TEST_HANDOVER_VERSION", "99")]);
    // The old process keeps the tunnel working until its drain ends.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !old.printed().contains("tunnel handover refused") {
        assert!(Instant::now() < deadline, "{}", old.printed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(echoes(&mut tunnel, "after the refusal").await);
    let exit = old
        .exited_within(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the old process never exited:\n{}", old.printed()));
    assert!(exit.success());
    assert!(
        common::ws_ends(&mut tunnel).await,
        "closed at the drain's end"
    );
    let new_said = std::fs::read_to_string(node.dir.path().join("new.out")).unwrap();
    assert!(new_said.contains("tunnel handover refused"), "{new_said}");
    let records = node.records("tunnel");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["closed_by"], "shutdown");
    stop_now(&new_pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_tunnel_keeps_its_lifetime_deadline() {
    keeps_its_deadline("tunnel_max_lifetime", "max_lifetime").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_tunnel_keeps_its_idle_deadline() {
    keeps_its_deadline("tunnel_idle_timeout", "idle_timeout").await;
}

/// A tunnel whose `limit` is 9 s is handed over about 6 s after it opened (and after its
/// last byte): it still ends about 9 s after that, as `closed_by`.
async fn keeps_its_deadline(limit: &str, closed_by: &str) {
    let echo = echo_origin().await;
    let rules = format!(
        "routes:\n{}    {limit}: 9s\norigin_groups:\n{}",
        route("chat", "/chat/*", "echo", true),
        group("echo", echo.addr()),
    );
    let node = NodeFiles::new("  tunnel_drain_timeout: 60s\n", &rules);
    let mut old = node.run(&[], "old");
    let http = client();
    old.first_answer(&http, &node.url("/ready")).await;
    let (mut tunnel, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/chat/life", node.port))
            .await
            .expect("upgrade");
    let opened = Instant::now();
    let new_pid = upgrade(&node, &old, &[]);
    old.exited_within(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("the old process kept its tunnel:\n{}", old.printed()));
    assert!(old.printed().contains("1 handed over"), "{}", old.printed());
    // The deadline counts from the tunnel's opening (or its last byte), not from its
    // adoption about 5 s later: it ends about 9 s after it opened.
    assert!(
        common::ws_ends(&mut tunnel).await,
        "the tunnel outlived its lifetime"
    );
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_secs(8) && lived < Duration::from_millis(12_500),
        "{lived:?}"
    );
    let records = node.wait_for_records("tunnel", 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["closed_by"], closed_by, "{records:?}");
    let duration = records[0]["duration_ms"].as_u64().unwrap();
    assert!((8_500..11_000).contains(&duration), "{records:?}");
    stop_now(&new_pid).await;
}

/// A connection the node accepted before a drain, whose request comes only once the node
/// has stopped listening, is answered (with `Connection: close`), not closed unanswered:
/// its client could not know. (Pingora's own first read gives up at the stop.)
/// A running node (`settings` added to its node section) whose stop is held up for 20 s by
/// an open tunnel, with the echo origin behind it.
async fn node_held_up_by_a_tunnel(
    settings: &str,
) -> (TestOrigin, NodeFiles, common::process::Running, Tunnel) {
    let echo = echo_origin().await;
    let rules = chat_and_web(&echo);
    let node = NodeFiles::new(&format!("{settings}  tunnel_drain_timeout: 20s\n"), &rules);
    let mut edge = node.run(&[], "edge");
    edge.first_answer(&client(), &node.url("/ready")).await;
    let (tunnel, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/chat/keep", node.port))
            .await
            .expect("upgrade");
    (echo, node, edge, tunnel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_before_the_drain_has_its_first_request_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A tunnel keeps the draining node up for its drain timeout.
    let (_echo, node, edge, _tunnel) = node_held_up_by_a_tunnel("").await;
    let http = client();
    let mut early = tokio::net::TcpStream::connect(("127.0.0.1", node.port))
        .await
        .unwrap();
    // The listener accepts in order: a later connection answered means `early` was accepted.
    let later = http
        .get(node.url("/later"))
        .header("connection", "close")
        .send()
        .await
        .unwrap();
    assert_eq!(later.status(), 200);

    edge.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !edge.printed().contains("service 'portico edge' exited") {
        assert!(Instant::now() < deadline, "no stop:\n{}", edge.printed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", node.port))
            .await
            .is_err(),
        "the node still listens"
    );

    early
        .write_all(b"GET /early HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), early.read_to_end(&mut answer))
        .await
        .expect("the answer ends")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.ends_with("echo-origin /early"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_when_the_node_stops() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A tunnel keeps the stopping node up for 20 s; an idle connection is closed long before.
    let (_echo, node, edge, _tunnel) = node_held_up_by_a_tunnel("  drain_delay: 1s\n").await;
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", node.port))
        .await
        .unwrap();
    idle.write_all(b"GET /kept HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        while !answer.ends_with(b"echo-origin /kept") {
            let n = idle.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before its answer ended");
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(answered.is_ok(), "no whole answer");
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(!text.contains("connection: close"), "kept alive: {text}");

    let signalled = Instant::now();
    edge.signal("TERM");
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut chunk))
        .await
        .expect("the idle connection is closed while the tunnel still drains");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
}
