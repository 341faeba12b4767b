//! Portico's signals, as Pingora's `Server` sees them (`ShutdownSignalWatch`):
//!
//! - `SIGHUP`: reload the configuration (the process keeps running);
//! - `SIGTERM`: `/healthz` turns `503 draining` at once; after `drain_delay` the listeners
//!   close and the node drains (see [`super`]);
//! - `SIGQUIT`: graceful binary upgrade: the listening sockets go to the process started
//!   with `portico run --upgrade`, then this one drains;
//! - `SIGINT`: fast stop.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use super::{Lifecycle, Phase};

pub struct NodeSignals(pub Arc<Lifecycle>);

/// Installs Portico's signal handlers for the whole process, so that a `SIGHUP` that
/// arrives before the server loop listens does not end the process (its default action).
pub fn install() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        for kind in [
            SignalKind::hangup(),
            SignalKind::terminate(),
            SignalKind::quit(),
            SignalKind::interrupt(),
        ] {
            drop(signal(kind)?);
        }
        Ok(())
    })
}

#[async_trait]
impl ShutdownSignalWatch for NodeSignals {
    async fn recv(&self) -> ShutdownSignal {
        let lifecycle = &self.0;
        let (Ok(mut hangup), Ok(mut terminate), Ok(mut quit), Ok(mut interrupt)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
        ) else {
            log::error!("cannot listen for signals; stopping");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    log::info!("SIGHUP: reloading the configuration");
                    lifecycle.request_reload("SIGHUP");
                }
                _ = terminate.recv() => {
                    lifecycle.set_phase(Phase::Draining);
                    let delay = lifecycle.current.load().engine.config.node.drain_delay;
                    log::info!("SIGTERM: draining; /healthz says 503, listeners close in {delay:?}");
                    tokio::time::sleep(delay).await;
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = quit.recv() => {
                    lifecycle.set_phase(Phase::HandingOver);
                    log::info!("SIGQUIT: handing the listening sockets to the new process");
                    return ShutdownSignal::GracefulUpgrade;
                }
                _ = interrupt.recv() => {
                    log::info!("SIGINT: stopping now");
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}
