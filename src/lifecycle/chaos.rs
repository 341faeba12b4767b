//! The `chaos.close_tunnels` schedule: every `every`, about `fraction` of the open tunnels
//! are closed `how` (`closed_by: chaos` in their records), so that clients' reconnect
//! logic meets maintenance closes in a soak test before it meets them in production.
//!
//! It runs in the lifecycle loop, beside the reload requests and the file watcher, and
//! stops with it when the node's shutdown begins (a draining node closes its tunnels
//! itself). The settings are read at each tick, so a reload may start, change or stop it.

use std::time::Duration;

use arc_swap::ArcSwap;

use super::drain::Drain;
use super::tunnels::Selection;
use crate::proxy::Snapshot;
use crate::tunnel::ClosedBy;

/// While the schedule is off, how often a reload may have turned it on.
const RECHECK: Duration = Duration::from_secs(1);

/// Runs the schedule of the live configuration; never returns (the caller drops it).
pub async fn run(current: &ArcSwap<Snapshot>, drain: &'static Drain) {
    loop {
        let Some(schedule) = current.load().engine.config.node.chaos else {
            tokio::time::sleep(RECHECK).await;
            continue;
        };
        tokio::time::sleep(schedule.every).await;
        // What is configured now (a reload may have changed it during the wait).
        let Some(schedule) = current.load().engine.config.node.chaos else {
            continue;
        };
        let selection = Selection {
            fraction: schedule.fraction,
            ..Selection::all()
        };
        let closed = drain
            .registry
            .close(&selection, ClosedBy::Chaos, schedule.how);
        if closed > 0 {
            log::info!(
                "chaos: {closed} of {} tunnel(s) told to close ({})",
                drain.open_tunnels(),
                schedule.how.name()
            );
        }
    }
}
