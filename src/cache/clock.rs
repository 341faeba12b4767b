//! The store's eviction order: CLOCK (second chance), an approximation of LRU whose hit
//! costs one flag store in the object and no lock.
//!
//! An exact LRU moves an object to the front of a list on every hit: a lock, a hash lookup
//! of the object's node and the relinking of its neighbours. Over a large cache each of
//! those is a cache miss, and they were about a third of what a lookup cost on random hits
//! over 300,000 objects. Here committed objects wait in a queue in the order they were
//! stored; a hit only marks its object `referenced`. Eviction takes objects from the head:
//! one referenced since it was queued is unmarked and goes to the tail (its second
//! chance), the first unmarked one is the victim. An object used since it was last passed
//! over is never evicted before one that was not.
//!
//! An object that leaves the store otherwise (purged, invalidated, replaced by a newer
//! fill) stays in the queue as a departed entry: a weak pointer, which keeps the object's
//! own struct (not its body or header) until the queue drops it. The queue drops departed
//! entries as the head passes them, and all at once when they outnumber the objects still
//! stored, so they cost at most as much as the live entries.
//!
//! One eviction passes over at most `SECOND_CHANCES` referenced objects: on a cache where
//! everything was used since the last eviction, the head is then taken as it is (FIFO),
//! rather than clearing a million marks while a fill waits.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::object::Object;

/// Referenced objects one eviction gives a second chance before it takes the head as is.
const SECOND_CHANCES: usize = 128;

/// Departed entries tolerated before the queue is swept, whatever their share.
const SWEEP_FLOOR: usize = 1024;

#[derive(Default)]
struct Queue {
    entries: VecDeque<Weak<Object>>,
    /// Entries whose object has left the store (see the module doc).
    departed: usize,
}

/// The eviction order of committed objects (see the module doc).
#[derive(Default)]
pub struct Clock {
    queue: Mutex<Queue>,
}

impl Clock {
    /// Queues a newly committed object, last to be evicted.
    pub fn admit(&self, object: &Arc<Object>) {
        object.resident.store(true, Ordering::Release);
        self.queue.lock().entries.push_back(Arc::downgrade(object));
    }

    /// Marks a use of `object` (a hit): it gets a second chance.
    pub fn touch(object: &Object) {
        if !object.referenced.load(Ordering::Relaxed) {
            object.referenced.store(true, Ordering::Relaxed);
        }
    }

    /// Notes that `object` left the store other than by `victim` (its entry is departed).
    /// Once departed entries outnumber the live ones, drops them all: a pass over the
    /// queue, paid for by the departures since the last one. Hits never wait for it; the
    /// store never calls this while it holds a shard.
    pub fn depart(&self, object: &Object) {
        if !object.resident.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut queue = self.queue.lock();
        queue.departed += 1;
        let live = queue.entries.len().saturating_sub(queue.departed);
        if queue.departed > SWEEP_FLOOR && queue.departed > live {
            queue.entries.retain(|entry| resident(entry).is_some());
            queue.departed = 0;
        }
    }

    /// The object to evict next, taken out of the queue (and no longer resident); `None`
    /// when nothing committed is left.
    pub fn victim(&self) -> Option<Arc<Object>> {
        let mut queue = self.queue.lock();
        let mut chances = SECOND_CHANCES;
        while let Some(entry) = queue.entries.pop_front() {
            let Some(object) = resident(&entry) else {
                queue.departed = queue.departed.saturating_sub(1);
                continue;
            };
            if chances > 0 && object.referenced.swap(false, Ordering::Relaxed) {
                chances -= 1;
                queue.entries.push_back(entry);
                continue;
            }
            object.resident.store(false, Ordering::Release);
            return Some(object);
        }
        None
    }

    /// Entries in the queue, departed ones included (for tests).
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queue.lock().entries.len()
    }
}

/// The entry's object, if it is still stored.
fn resident(entry: &Weak<Object>) -> Option<Arc<Object>> {
    entry
        .upgrade()
        .filter(|object| object.resident.load(Ordering::Acquire))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::object::tests::object;

    fn ids(clock: &Clock) -> Vec<u64> {
        std::iter::from_fn(|| clock.victim().map(|o| o.id)).collect()
    }

    #[test]
    fn the_oldest_unused_object_goes_first_and_a_used_one_gets_a_second_chance() {
        let clock = Clock::default();
        let objects: Vec<_> = (1..=4).map(|id| object(id, &["x"])).collect();
        for object in &objects {
            clock.admit(object);
        }
        Clock::touch(&objects[0]);
        Clock::touch(&objects[2]);
        assert_eq!(clock.victim().unwrap().id, 2);
        // 1 spent its second chance above; 3 gets its own now and goes after 4 and 1.
        assert_eq!(ids(&clock), [4, 1, 3]);
        assert!(objects.iter().all(|o| !o.resident.load(Ordering::Relaxed)));
    }

    #[test]
    fn departed_objects_are_skipped_and_swept_once_they_outnumber_the_rest() {
        let clock = Clock::default();
        let objects: Vec<_> = (0..3 * SWEEP_FLOOR as u64)
            .map(|id| object(id, &["x"]))
            .collect();
        for object in &objects {
            clock.admit(object);
        }
        // Two thirds leave the store (purged, replaced): swept once they outnumber the rest.
        for (n, object) in objects[..2 * SWEEP_FLOOR].iter().enumerate() {
            clock.depart(object);
            clock.depart(object); // counted once
            let swept = n + 1 > 3 * SWEEP_FLOOR / 2;
            assert_eq!(clock.queued() < 3 * SWEEP_FLOOR, swept, "after {n}");
        }
        let late = object(u64::MAX, &["x"]);
        clock.admit(&late);
        let order = ids(&clock);
        assert_eq!(order.len(), SWEEP_FLOOR + 1);
        assert_eq!(order[0], 2 * SWEEP_FLOOR as u64);
        assert_eq!(order.last(), Some(&u64::MAX));
    }

    #[test]
    fn a_departed_object_is_never_a_victim_even_while_a_reader_holds_it() {
        let clock = Clock::default();
        let (held, other) = (object(1, &["x"]), object(2, &["x"]));
        clock.admit(&held);
        clock.admit(&other);
        clock.depart(&held);
        assert_eq!(ids(&clock), [2]);
        drop(held);
    }

    #[test]
    fn when_everything_was_used_the_head_goes_after_the_second_chances_run_out() {
        let clock = Clock::default();
        let objects: Vec<_> = (0..2 * SECOND_CHANCES as u64)
            .map(|id| object(id, &["x"]))
            .collect();
        for object in &objects {
            clock.admit(object);
            Clock::touch(object);
        }
        assert_eq!(clock.victim().unwrap().id, SECOND_CHANCES as u64);
    }
}
