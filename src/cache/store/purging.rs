//! Purges and invalidations: what leaves the store on an admin's or an unsafe request's
//! word, found through the index (see the store's module doc, *Indexes*).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use pingora_cache::key::HashBinary;
use smallvec::SmallVec;

use super::MemoryStore;
use crate::cache::object::Object;
use crate::cache::purge::Purge;

/// What a purge did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCount {
    /// Objects removed (or marked stale, for a soft purge), fills in progress included.
    pub purged: usize,
    /// Objects the purge looked at: the index's candidates, not the whole store.
    pub examined: usize,
}

impl MemoryStore {
    /// Removes every committed object of the URL whose primary hash is `primary`, all its
    /// variants included (RFC 9111 §4.4: an unsafe request invalidates the target URI);
    /// returns how many. Fills under way are left to finish: they started from the origin.
    pub fn invalidate(&self, primary: &HashBinary) -> usize {
        let removed: SmallVec<[Arc<Object>; 4]> = {
            let mut shard = self.shard(primary).lock();
            let mut removed = SmallVec::new();
            for key in &shard.keys_of(primary) {
                removed.extend(shard.take_committed(key, |_| true));
                shard.forget_if_empty(primary, key);
            }
            removed
        };
        for object in &removed {
            self.forget(object);
        }
        removed.len()
    }

    /// Purges what `purge` names: by tag and by host from the index, by path among the
    /// host's objects (every host's without `domains`), fills in progress included. A hard
    /// purge removes them (a removed fill never commits, so a purge cannot be undone by a
    /// fill that started before it); a soft one marks them stale from now, so they are
    /// served per `stale-while-revalidate` / `stale-if-error` and revalidated.
    pub fn apply_purge(&self, purge: &Purge) -> PurgeCount {
        // One short hold of the index: the candidates, and the fills under way. Objects
        // committed after this were fetched after the purge began.
        let (mut candidates, fills) = {
            let index = self.index.lock();
            let mut candidates: Vec<Arc<Object>> = Vec::new();
            for tag in purge.tags() {
                if let Some(objects) = index.by_tag.get(tag) {
                    candidates.extend(objects.iter().cloned());
                }
            }
            if purge.has_paths() {
                if purge.domains().is_empty() {
                    for objects in index.by_host.values() {
                        candidates.extend(objects.iter().cloned());
                    }
                } else {
                    for domain in purge.domains() {
                        if let Some(objects) = index.by_host.get(domain.as_str()) {
                            candidates.extend(objects.iter().cloned());
                        }
                    }
                }
            }
            let fills: Vec<Arc<Object>> = index.fills.iter().cloned().collect();
            (candidates, fills)
        };
        // An object with two of the tags is one candidate.
        candidates.sort_unstable_by_key(|o| o.id);
        candidates.dedup_by_key(|o| o.id);
        let now = SystemTime::now();
        let mut count = PurgeCount {
            purged: 0,
            examined: candidates.len() + fills.len(),
        };
        for object in candidates {
            if !purge.matches(object.label(), object.meta().tags()) {
                continue;
            }
            let done = if purge.soft {
                self.mark_stale(&object, now)
            } else {
                self.remove_committed(&object)
            };
            count.purged += usize::from(done);
        }
        for fill in fills {
            if !purge.matches(fill.label(), fill.meta().tags()) {
                continue;
            }
            if purge.soft {
                fill.make_stale(now);
                count.purged += 1;
            } else {
                count.purged += usize::from(self.drop_fill(&fill));
            }
        }
        self.purge_examined
            .fetch_add(count.examined, Ordering::Relaxed);
        count
    }

    /// Removes `object` if it is still the committed object of its slot.
    fn remove_committed(&self, object: &Arc<Object>) -> bool {
        let primary = object.primary();
        let removed = {
            let mut shard = self.shard(&primary).lock();
            let removed = shard.take_committed(&object.hash, |c| Arc::ptr_eq(c, object));
            shard.forget_if_empty(&primary, &object.hash);
            removed
        };
        match removed {
            Some(object) => {
                self.forget(&object);
                true
            }
            None => false,
        }
    }

    /// Marks `object` stale from `now` (a soft purge); `false` if it left the store.
    fn mark_stale(&self, object: &Arc<Object>, now: SystemTime) -> bool {
        let shard = self.shard(&object.primary()).lock();
        let current = shard
            .committed(&object.hash)
            .is_some_and(|c| Arc::ptr_eq(c, object));
        if current {
            object.make_stale(now);
        }
        current
    }
}
