//! Smooth weighted round-robin, as a pingora-load-balancing `BackendSelection`.
//!
//! Pingora's own `RoundRobin` repeats each backend `weight` times in a row: with the
//! default weight of 50, two equal origins take turns in bursts of 50 requests. This
//! selection interleaves them instead (nginx's smooth weighted round-robin), so any run of
//! requests is split close to the weights: 50/50 alternates, 1/3 gives `a b b b`-like
//! cycles spread out, and so on. The cycle is computed once per balancer, on weights
//! divided by their greatest common divisor.
//!
//! Each candidate a selection offers is the next slot of the shared cycle, skipping
//! backends this selection already offered. A refused candidate (unhealthy, or already
//! tried) thus only uses up its slot, and the accepted picks are the cycle with the refused
//! backends left out: the remaining weights still hold exactly. A selection offers each
//! backend at most once and scans at most one cycle (then offers the rest in order).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use smallvec::SmallVec;

pub struct SmoothRoundRobin {
    backends: Box<[Backend]>,
    /// Indexes into `backends`, one full cycle.
    cycle: Box<[usize]>,
    next: AtomicUsize,
}

impl BackendSelection for SmoothRoundRobin {
    type Iter = SmoothIter;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> SmoothRoundRobin {
        let backends: Box<[Backend]> = backends.iter().cloned().collect();
        let weights: Vec<usize> = backends.iter().map(|b| b.weight.max(1)).collect();
        SmoothRoundRobin {
            cycle: smooth_cycle(&weights).into_boxed_slice(),
            backends,
            next: AtomicUsize::new(0),
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> SmoothIter {
        SmoothIter {
            selection: self.clone(),
            offered: SmallVec::new(),
            scanned: 0,
        }
    }
}

/// The candidates of one selection.
pub struct SmoothIter {
    selection: Arc<SmoothRoundRobin>,
    /// Backends offered so far (indexes into `backends`).
    offered: SmallVec<[usize; 8]>,
    /// Cycle slots used so far.
    scanned: usize,
}

impl BackendIter for SmoothIter {
    fn next(&mut self) -> Option<&Backend> {
        let selection = &self.selection;
        if self.offered.len() >= selection.backends.len() {
            return None;
        }
        while self.scanned < selection.cycle.len() {
            let slot = selection.next.fetch_add(1, Ordering::Relaxed);
            self.scanned += 1;
            let index = selection.cycle[slot % selection.cycle.len()];
            if !self.offered.contains(&index) {
                self.offered.push(index);
                return selection.backends.get(index);
            }
        }
        // Other selections took slots in between: offer whoever is left, in order.
        let index = (0..selection.backends.len()).find(|i| !self.offered.contains(i))?;
        self.offered.push(index);
        selection.backends.get(index)
    }
}

/// One cycle of smooth weighted round-robin over `weights` (each at least 1): every index
/// appears `weight / gcd` times, spread out.
fn smooth_cycle(weights: &[usize]) -> Vec<usize> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|&w| (w / divisor) as i64).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (current, weight) in current.iter_mut().zip(&weights) {
            *current += weight;
        }
        let Some(chosen) = (0..weights.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
        else {
            break;
        };
        current[chosen] -= total;
        cycle.push(chosen);
    }
    cycle
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(smooth_cycle(&[50, 50]), vec![0, 1]);
    }

    #[test]
    fn weights_are_spread_not_bunched() {
        assert_eq!(smooth_cycle(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        let cycle = smooth_cycle(&[100, 300]);
        assert_eq!(cycle.len(), 4);
        assert_eq!(cycle.iter().filter(|&&i| i == 0).count(), 1);
    }

    #[test]
    fn a_selection_offers_each_backend_once() {
        let backends: BTreeSet<Backend> = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .map(|a| Backend::new_with_weight(a, 1000).unwrap())
            .collect();
        let selection = Arc::new(SmoothRoundRobin::build(&backends));
        let mut iter = selection.iter(b"");
        let mut seen = Vec::new();
        while let Some(backend) = iter.next() {
            seen.push(backend.addr.to_string());
        }
        seen.sort();
        assert_eq!(seen, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
    }
}
