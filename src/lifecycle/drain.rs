//! What a stopping node waits for: requests in flight and open tunnels.
//!
//! Every request holds an [`InFlight`] guard from its context's creation to its end, and
//! every tunnel a [`TunnelGuard`] from the moment its upgrade is sent upstream to the moment
//! its record is written. [`Drain::run`] waits for both counts to reach zero, up to the
//! tunnel drain timeout; then it tells the remaining tunnels to close (their relays select
//! on [`TunnelGuard::closing_or`], as every long-lived task selects on one drain signal in
//! linkerd2-proxy) and waits, bounded, for their records.
//!
//! The tunnels are also entered in a [`TunnelRegistry`] (route, client, close order), from
//! which `POST /tunnels/close` and the `chaos:` schedule pick tunnels to close one by one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::tunnels::{CloseOrder, TunnelRegistry};
use crate::config::model::CloseHow;
use crate::tunnel::ClosedBy;

/// How long tunnels told to close may take to write their records (the relay bounds its
/// own close at 5 s).
const CLOSE_GRACE: Duration = Duration::from_secs(7);

/// The node's requests in flight and open tunnels.
pub struct Drain {
    requests: AtomicUsize,
    tunnels: AtomicUsize,
    changed: Notify,
    close_tunnels: watch::Sender<bool>,
    /// Where relays learn that their tunnels go to a new process (binary upgrade).
    pub handover: crate::tunnel::handover::Handover,
    /// Every open tunnel, to be closed on demand.
    pub registry: TunnelRegistry,
}

/// What a drain found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Tunnels still open when the timeout passed, then closed (`closed_by: shutdown`).
    pub tunnels_closed: usize,
    /// Requests still running when the node gave up waiting.
    pub requests_left: usize,
    /// Tunnels whose record was not written within the close grace.
    pub tunnels_left: usize,
}

impl Drain {
    /// One per node, for the process's life (requests hold it without counting references).
    pub fn leak() -> &'static Drain {
        Box::leak(Box::new(Drain {
            requests: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            changed: Notify::new(),
            close_tunnels: watch::channel(false).0,
            handover: Default::default(),
            registry: TunnelRegistry::default(),
        }))
    }

    pub fn request(&'static self) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Counts and registers a tunnel of `route` for `client` until its guard is dropped.
    pub fn tunnel(&'static self, route: &str, client: Option<std::net::IpAddr>) -> TunnelGuard {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
        let (id, order) = self.registry.register(route, client);
        TunnelGuard {
            drain: self,
            id,
            order,
        }
    }

    /// Turns true when the node tells its tunnels to close.
    pub fn tunnel_close_signal(&self) -> watch::Receiver<bool> {
        self.close_tunnels.subscribe()
    }

    pub fn requests_in_flight(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    pub fn open_tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Acquire)
    }

    /// Waits until no request or tunnel is left, for at most `timeout`; then closes every
    /// tunnel still open and waits (bounded) for their records.
    pub async fn run(&self, timeout: Duration) -> DrainReport {
        let deadline = Instant::now() + timeout;
        self.wait_until(deadline, |d| {
            d.requests_in_flight() == 0 && d.open_tunnels() == 0
        })
        .await;
        let tunnels_closed = self.open_tunnels();
        if tunnels_closed > 0 {
            log::info!("closing {tunnels_closed} tunnel(s) still open after {timeout:?}");
        }
        self.close_tunnels.send_replace(true);
        self.registry.wake_all();
        self.wait_until(Instant::now() + CLOSE_GRACE, |d| d.open_tunnels() == 0)
            .await;
        DrainReport {
            tunnels_closed,
            requests_left: self.requests_in_flight(),
            tunnels_left: self.open_tunnels(),
        }
    }

    async fn wait_until(&self, deadline: Instant, done: impl Fn(&Drain) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change between the two is not missed.
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    fn release(&self, counter: &AtomicUsize) {
        if counter.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed.notify_waiters();
        }
    }
}

/// Held by a request until its context is dropped.
pub struct InFlight(&'static Drain);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.release(&self.0.requests);
    }
}

/// Held by a tunnel until its record is written.
pub struct TunnelGuard {
    drain: &'static Drain,
    id: u64,
    order: std::sync::Arc<CloseOrder>,
}

impl TunnelGuard {
    /// Resolves when the node tells its tunnels to close, when this tunnel is ordered to
    /// close ([`TunnelGuard::order`] says how), or once `also` holds: it is looked at
    /// whenever the node wakes its tunnels ([`TunnelRegistry::wake_all`], as the handover
    /// does when it asks for them).
    pub async fn closing_or(&self, also: impl Fn() -> bool) {
        let drain = self.drain;
        self.order
            .given_or(|| *drain.close_tunnels.borrow() || also())
            .await
    }

    /// This tunnel's own close order (admin or chaos), once given.
    pub fn order(&self) -> Option<(ClosedBy, CloseHow)> {
        self.order.get()
    }

    /// The relay runs: from now on the tunnel can be chosen to close on demand.
    pub fn relaying(&self) {
        self.order.set_relaying();
    }

    /// The node's handover, which this tunnel may be offered to.
    pub fn handover(&self) -> &'static crate::tunnel::handover::Handover {
        &self.drain.handover
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.drain.registry.remove(self.id);
        self.drain.release(&self.drain.tunnels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_node_drains_at_once() {
        let drain = Drain::leak();
        let report = drain.run(Duration::from_secs(30)).await;
        assert_eq!(report.tunnels_closed, 0);
        assert_eq!(report.requests_left, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_requests_then_returns_when_the_last_ends() {
        let drain = Drain::leak();
        let request = drain.request();
        let started = Instant::now();
        let ender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(request);
        });
        let report = drain.run(Duration::from_secs(30)).await;
        ender.await.unwrap();
        assert_eq!(report.requests_left, 0);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn tunnels_still_open_at_the_timeout_are_told_to_close() {
        let drain = Drain::leak();
        let tunnel = drain.tunnel("r", None);
        let relay = tokio::spawn(async move {
            tunnel.closing_or(|| false).await;
            drop(tunnel);
        });
        let started = Instant::now();
        let report = drain.run(Duration::from_secs(5)).await;
        // Bounded: a relay the close never reached would wait here for good.
        tokio::time::timeout(Duration::from_secs(60), relay)
            .await
            .expect("the relay was told to close")
            .unwrap();
        assert_eq!(report.tunnels_closed, 1);
        assert_eq!(report.tunnels_left, 0);
        assert!(started.elapsed() >= Duration::from_secs(5));
        assert_eq!(drain.open_tunnels(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_that_ignores_the_close_is_given_up_on() {
        let drain = Drain::leak();
        let stuck = drain.tunnel("r", None);
        let report = drain.run(Duration::from_secs(1)).await;
        assert_eq!(report.tunnels_left, 1);
        drop(stuck);
    }
}
