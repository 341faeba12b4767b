//! `portico demo --tiers`: the demo origin, two shields and two edges in one process, on the
//! configurations of `conf/examples/` (the same rules for every node, as on a real fleet).
//!
//! Each node is the same proxy `portico run` serves, hosted on listeners this process binds
//! (as the in-process tests do); all of them stop on Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::sync::watch;

use crate::server::Node;
use crate::tls::ServerTls;

/// The fleet's node files in `conf/examples/`, shields first (edges probe them at start).
pub const NODES: [&str; 4] = ["shield-1", "shield-2", "edge-1", "edge-2"];

/// Runs the fleet described by `dir/<node>.yaml` until Ctrl-C.
pub fn run(dir: &Path) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("portico-fleet")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the fleet's runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let (shutdown, stop) = watch::channel(false);
        let lines = match start_fleet(dir, stop).await {
            Ok(lines) => lines,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        println!("portico demo --tiers: a two-tier fleet in one process");
        println!("  origin    http://127.0.0.1:8081  (the demo origin)");
        for line in &lines {
            println!("  {line}");
        }
        println!("try (the first fetch fills one shield, the other edge then gets it from there):");
        println!("  curl -si localhost:8080/static/a.css | grep -i x-cache   # TCP_MISS");
        println!("  curl -si localhost:8082/static/a.css | grep -i x-cache   # TCP_REMOTE_HIT");
        let _ = tokio::signal::ctrl_c().await;
        let _ = shutdown.send(true);
        ExitCode::SUCCESS
    })
}

/// Starts every node of `dir` (in [`NODES`] order) on the current runtime until `stop`
/// turns true; the fleet's map, one line per node.
pub async fn start_fleet(dir: &Path, stop: watch::Receiver<bool>) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for name in NODES {
        let conf = dir.join(format!("{name}.yaml"));
        let line = start(&conf, stop.clone())
            .await
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        lines.push(line);
    }
    Ok(lines)
}

/// Loads and starts one node; its line of the fleet's map.
async fn start(conf: &Path, stop: watch::Receiver<bool>) -> Result<String, String> {
    let node = Node::load(conf).map_err(|e| e.to_string())?;
    let settings = node.settings.clone();
    let mut listeners: Vec<(tokio::net::TcpListener, Option<Arc<ServerTls>>)> = Vec::new();
    for (address, tls) in &node.listeners {
        listeners.push((bind(*address).await?, tls.clone()));
    }
    let mut line = format!("{:<9} {}", settings.name, urls(&node.listeners));
    if let Some(admin) = &settings.admin {
        let listener = bind(admin.address).await?;
        let served = node.admin(admin.address);
        let stop = stop.clone();
        tokio::spawn(async move { served.serve(listener, stop).await });
        line.push_str(&format!("  admin http://{}", admin.address));
    }
    let shields = &settings.tiers.shields;
    if !shields.is_empty() {
        let list: Vec<String> = shields.iter().map(|s| s.address.to_string()).collect();
        line.push_str(&format!("  shields {}", list.join(", ")));
    }
    tokio::spawn(crate::server::serve_node(node, listeners, stop));
    Ok(line)
}

async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))
}

fn urls(listeners: &[(SocketAddr, Option<Arc<ServerTls>>)]) -> String {
    listeners
        .iter()
        .map(|(a, tls)| format!("{}://{a}", if tls.is_some() { "https" } else { "http" }))
        .collect::<Vec<_>>()
        .join(" ")
}
