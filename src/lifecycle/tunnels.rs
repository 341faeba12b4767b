//! The registry of open tunnels: what the drain counts, and what `POST /tunnels/close` and
//! the `chaos:` schedule choose from.
//!
//! Each tunnel is entered when its upgrade is sent upstream (by [`super::drain::Drain`],
//! which hands out its guard) and leaves when its record is written. An entry knows the
//! tunnel's route and client, and holds the tunnel's [`CloseOrder`]: the cell its relay
//! watches, woken by an order of its own and by the node's drain. Only tunnels whose
//! relay runs (past the `101`) can be chosen.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::model::CloseHow;
use crate::tunnel::ClosedBy;

/// Which open tunnels to close: those of `route` and `client` (when given), then about
/// `fraction` of them, chosen at random.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub route: Option<String>,
    pub client: Option<IpAddr>,
    /// 1.0 closes every matching tunnel.
    pub fraction: f64,
}

impl Selection {
    pub fn all() -> Selection {
        Selection {
            route: None,
            client: None,
            fraction: 1.0,
        }
    }
}

/// A tunnel's order to close, set once, by the admin API or the chaos schedule.
#[derive(Default)]
pub struct CloseOrder {
    order: parking_lot::Mutex<Option<(ClosedBy, CloseHow)>>,
    given: Notify,
    /// Its relay runs (the `101` went through): it can be chosen.
    relaying: AtomicBool,
}

impl CloseOrder {
    /// The order, once given.
    pub fn get(&self) -> Option<(ClosedBy, CloseHow)> {
        *self.order.lock()
    }

    /// Resolves once an order is given or `node_closing` holds (it is checked whenever the
    /// order is woken: [`TunnelRegistry::wake_all`] wakes every tunnel's when the node tells
    /// them to close). One wait for both keeps an idle tunnel's task small: a second
    /// waiter on the node's signal took 160 bytes of each.
    pub async fn given_or(&self, node_closing: impl Fn() -> bool) {
        loop {
            let notified = self.given.notified();
            tokio::pin!(notified);
            // Registered before the check, so an order given between the two is not missed.
            notified.as_mut().enable();
            if self.get().is_some() || node_closing() {
                return;
            }
            notified.await;
        }
    }

    pub fn set_relaying(&self) {
        self.relaying.store(true, Ordering::Release);
    }

    /// Gives the order unless one was given already.
    fn give(&self, by: ClosedBy, how: CloseHow) -> bool {
        let mut order = self.order.lock();
        if order.is_some() {
            return false;
        }
        *order = Some((by, how));
        self.given.notify_waiters();
        true
    }
}

struct Entry {
    route: Arc<str>,
    client: Option<IpAddr>,
    order: Arc<CloseOrder>,
}

/// Every open tunnel, by a number of its own.
#[derive(Default)]
pub struct TunnelRegistry {
    next: AtomicU64,
    open: parking_lot::Mutex<HashMap<u64, Entry>>,
}

impl TunnelRegistry {
    /// Enters a tunnel; the number takes it out again ([`TunnelRegistry::remove`]).
    pub fn register(&self, route: &str, client: Option<IpAddr>) -> (u64, Arc<CloseOrder>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let order = Arc::new(CloseOrder::default());
        let entry = Entry {
            route: route.into(),
            client,
            order: order.clone(),
        };
        self.open.lock().insert(id, entry);
        (id, order)
    }

    pub fn remove(&self, id: u64) {
        self.open.lock().remove(&id);
    }

    /// Wakes every tunnel's relay to look at the node's signal again
    /// ([`CloseOrder::given_or`]).
    pub fn wake_all(&self) {
        for entry in self.open.lock().values() {
            entry.order.given.notify_waiters();
        }
    }

    /// Orders the chosen tunnels to close; says how many were ordered. Of `n` matching
    /// tunnels, `fraction × n` are chosen, rounded up or down at random in proportion (so
    /// that repeated ticks over few tunnels close the fraction on average).
    pub fn close(&self, selection: &Selection, by: ClosedBy, how: CloseHow) -> usize {
        let mut candidates: Vec<Arc<CloseOrder>> = self
            .open
            .lock()
            .values()
            .filter(|e| e.order.relaying.load(Ordering::Acquire) && e.order.get().is_none())
            .filter(|e| selection.route.as_deref().is_none_or(|r| *e.route == *r))
            .filter(|e| selection.client.is_none_or(|c| e.client == Some(c)))
            .map(|e| e.order.clone())
            .collect();
        let mut random = Random::seeded();
        let exact = selection.fraction.clamp(0.0, 1.0) * candidates.len() as f64;
        let mut count = exact.floor() as usize;
        if random.unit() < exact - exact.floor() {
            count += 1;
        }
        let count = count.min(candidates.len());
        // A partial Fisher-Yates shuffle: the first `count` are a uniform choice.
        for i in 0..count {
            let j = i + random.below(candidates.len() - i);
            candidates.swap(i, j);
        }
        candidates[..count]
            .iter()
            .filter(|order| order.give(by, how))
            .count()
    }
}

/// splitmix64: enough to pick tunnels at random (nothing here needs to be unguessable).
struct Random(u64);

impl Random {
    fn seeded() -> Random {
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Random(nanos ^ CALLS.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// In [0, n), n > 0.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(routes: &[&str]) -> (TunnelRegistry, Vec<Arc<CloseOrder>>) {
        let registry = TunnelRegistry::default();
        let orders = routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let client = Some(IpAddr::from([10, 0, 0, i as u8]));
                let (_, order) = registry.register(route, client);
                order.set_relaying();
                order
            })
            .collect();
        (registry, orders)
    }

    #[test]
    fn a_route_or_a_client_picks_its_tunnels_only() {
        let (registry, orders) = registry(&["chat", "chat", "feed"]);
        let chat = Selection {
            route: Some("chat".into()),
            ..Selection::all()
        };
        assert_eq!(registry.close(&chat, ClosedBy::Admin, CloseHow::Fin), 2);
        assert!(orders[2].get().is_none());
        // Already ordered tunnels are not counted twice.
        assert_eq!(registry.close(&chat, ClosedBy::Admin, CloseHow::Fin), 0);
        let client = Selection {
            client: Some(IpAddr::from([10, 0, 0, 2])),
            ..Selection::all()
        };
        assert_eq!(registry.close(&client, ClosedBy::Admin, CloseHow::Rst), 1);
        assert_eq!(orders[2].get(), Some((ClosedBy::Admin, CloseHow::Rst)));
    }

    #[test]
    fn a_fraction_closes_that_share_and_a_tunnel_before_its_101_is_never_chosen() {
        let (registry, _) = registry(&["a"; 10]);
        let (_, waiting) = registry.register("a", None);
        let half = Selection {
            fraction: 0.5,
            ..Selection::all()
        };
        assert_eq!(registry.close(&half, ClosedBy::Chaos, CloseHow::Fin), 5);
        assert_eq!(
            registry.close(&Selection::all(), ClosedBy::Admin, CloseHow::Fin),
            5
        );
        assert!(waiting.get().is_none());
    }

    #[test]
    fn a_small_fraction_of_few_tunnels_closes_that_share_on_average() {
        let mut closed = 0;
        for _ in 0..1000 {
            let (registry, _) = registry(&["a"; 3]);
            let tenth = Selection {
                fraction: 0.1,
                ..Selection::all()
            };
            closed += registry.close(&tenth, ClosedBy::Chaos, CloseHow::Fin);
        }
        // 300 expected; the bounds are many standard deviations (about 16) wide.
        assert!((200..400).contains(&closed), "{closed}");
    }
}
