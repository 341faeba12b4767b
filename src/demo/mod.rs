//! The demo: a built-in sample origin (HTTP + WebSocket echo) that `portico demo` starts
//! beside the edge, so the shipped configuration works with nothing else installed.

pub mod origin;
pub mod tiers;
pub mod tls;

use std::sync::Arc;

/// Binds `addr` and serves the demo origin on a thread of its own, for the process lifetime.
pub fn start_in_background(addr: &str) -> std::io::Result<Arc<origin::DemoOrigin>> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("portico-demo-origin")
        .build()?;
    let origin = origin::DemoOrigin::new();
    let serving = origin.clone();
    std::thread::Builder::new()
        .name("portico-demo-origin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let (_keep_open, shutdown) = tokio::sync::watch::channel(false);
                match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(listener) => {
                        if let Err(e) = serving.serve(listener, shutdown).await {
                            log::error!("demo origin stopped: {e}");
                        }
                    }
                    Err(e) => log::error!("demo origin cannot listen: {e}"),
                }
            });
        })?;
    Ok(origin)
}
