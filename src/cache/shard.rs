//! One shard of the store: its committed objects and fills in progress by full key (primary
//! and variance), and each URL's secondary variants.
//!
//! The tables hold the objects' `Arc`s and find one by the key the object carries
//! (`Object::hash`): a committed object costs its table one pointer and a control byte, not
//! a second copy of its 16-byte key. Over a million objects that is about 50 bytes an
//! object less than a `HashMap` from key to slot. The key is a BLAKE2b digest, uniform but
//! unkeyed (shields must derive the same one), so anyone can grind URLs whose keys share
//! the bits a table probes with; the table's hash is the key hashed again with this
//! process's random seeds (`ahash`, a few instructions for 16 bytes, where `HashMap`'s
//! SipHash took about a hundred), so such URLs cannot be made to collide here.
//!
//! Committed objects are in a `GroupTable` (`cache::group_table`), whose lookup reads one
//! cache line before the object it finds, where `hashbrown` reads two: over a large cache a
//! random hit saves a memory access. Fills stay in a `hashbrown` table (few, and hot).
//!
//! A key's *slot* is its committed object, if any, and its fills, oldest first; a key with
//! neither has no slot. Fills are few at a time (one per key being fetched), so they have a
//! table of their own and a lookup on a table with none does not probe it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use ahash::RandomState;
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use pingora_cache::key::HashBinary;
use smallvec::SmallVec;

use super::group_table::GroupTable;
use super::object::Object;

/// Secondary variants kept per URL (primary key) beyond its primary slot: junk `Vary`
/// values cannot split one URL into unbounded objects. A new variant past the cap takes
/// the slot of a stored one (`variant_to_replace`): junk values cannot hold a URL's slots
/// for their lifetime either.
pub const MAX_VARIANTS: usize = 32;

/// A key's hash in the tables, under `seeds` (see the module doc).
fn table_hash(seeds: &RandomState, key: &HashBinary) -> u64 {
    seeds.hash_one(u128::from_le_bytes(*key))
}

#[derive(Default)]
pub struct Shard {
    /// Random for each shard of each process.
    seeds: RandomState,
    committed: GroupTable<Arc<Object>>,
    /// Each key's fills in progress, oldest first; never an empty list.
    fills: HashTable<Vec<Arc<Object>>>,
    /// Primary hash → the full keys of its secondary variants' slots.
    variants: HashMap<HashBinary, SmallVec<[HashBinary; 4]>>,
}

impl Shard {
    pub fn committed(&self, key: &HashBinary) -> Option<&Arc<Object>> {
        if self.committed.is_empty() {
            return None;
        }
        self.committed.find(table_hash(&self.seeds, key), |o| {
            // Its other lines load beside the key's (the hit reads them all).
            o.prefetch();
            o.hash == *key
        })
    }

    /// `key`'s fills in progress, oldest first.
    pub fn fills(&self, key: &HashBinary) -> &[Arc<Object>] {
        if self.fills.is_empty() {
            return &[];
        }
        self.fills
            .find(table_hash(&self.seeds, key), |list| first_is(list, key))
            .map_or(&[], Vec::as_slice)
    }

    /// Whether `key` has a slot: a committed object or a fill.
    pub fn holds(&self, key: &HashBinary) -> bool {
        self.committed(key).is_some() || !self.fills(key).is_empty()
    }

    /// What a lookup of `key` serves: the newest fill (after a refresh starts, its body is
    /// the one to serve), unless the committed object may still be used without the origin;
    /// and whether it is the committed object (a use, for the eviction clock).
    pub fn to_serve(&self, key: &HashBinary) -> Option<(&Arc<Object>, bool)> {
        match (self.committed(key), self.fills(key).last()) {
            (Some(committed), Some(_))
                if committed.meta().usable_without_origin(SystemTime::now()) =>
            {
                Some((committed, true))
            }
            (_, Some(fill)) => Some((fill, false)),
            (committed, None) => committed.map(|committed| (committed, true)),
        }
    }

    /// Makes `object` the committed object of its key; returns the one it replaces.
    pub fn put_committed(&mut self, object: Arc<Object>) -> Option<Arc<Object>> {
        let (key, seeds) = (object.hash, &self.seeds);
        self.committed.insert(
            table_hash(seeds, &key),
            object,
            |o| o.hash == key,
            |o| table_hash(seeds, &o.hash),
        )
    }

    /// Takes `key`'s committed object if `which` accepts it.
    pub fn take_committed(
        &mut self,
        key: &HashBinary,
        which: impl FnOnce(&Arc<Object>) -> bool,
    ) -> Option<Arc<Object>> {
        let hash = table_hash(&self.seeds, key);
        self.committed.remove_if(hash, |o| o.hash == *key, which)
    }

    /// Adds a fill for its key (of URL `primary`); `false` when that key would be one
    /// variant of the URL too many (nothing added).
    pub fn add_fill(&mut self, primary: &HashBinary, fill: Arc<Object>) -> bool {
        let key = fill.hash;
        if key != *primary && !self.holds(&key) {
            let variants = self.variants.entry(*primary).or_default();
            if variants.len() >= MAX_VARIANTS {
                return false;
            }
            variants.push(key);
        }
        let seeds = &self.seeds;
        let entry = self.fills.entry(
            table_hash(seeds, &key),
            |list| first_is(list, &key),
            |list| list.first().map_or(0, |o| table_hash(seeds, &o.hash)),
        );
        match entry {
            Entry::Occupied(mut occupied) => occupied.get_mut().push(fill),
            Entry::Vacant(vacant) => {
                vacant.insert(vec![fill]);
            }
        }
        true
    }

    /// Takes `fill` out of its key's fills; `false` if it was not there.
    pub fn remove_fill(&mut self, fill: &Arc<Object>) -> bool {
        let key = fill.hash;
        let Ok(mut entry) = self
            .fills
            .find_entry(table_hash(&self.seeds, &key), |list| first_is(list, &key))
        else {
            return false;
        };
        let list = entry.get_mut();
        let Some(position) = list.iter().position(|o| Arc::ptr_eq(o, fill)) else {
            return false;
        };
        list.remove(position);
        if list.is_empty() {
            entry.remove();
        }
        true
    }

    /// Takes all of `key`'s fills.
    pub fn take_fills(&mut self, key: &HashBinary) -> Vec<Arc<Object>> {
        self.fills
            .find_entry(table_hash(&self.seeds, key), |list| first_is(list, key))
            .map_or_else(|_| Vec::new(), |entry| entry.remove().0)
    }

    /// The stored variant of URL `primary` whose slot a new variant takes once the URL has
    /// `MAX_VARIANTS`: one not used since the eviction clock last passed it (junk values
    /// are never asked for again), else the oldest. Only a variant with no fill in progress:
    /// taking its object then frees its slot. `None` when there is none.
    pub fn variant_to_replace(&self, primary: &HashBinary) -> Option<HashBinary> {
        let variants = self.variants.get(primary)?;
        let mut stored = variants
            .iter()
            .filter(|key| self.fills(key).is_empty())
            .filter_map(|key| self.committed(key));
        let oldest = stored.clone().next()?;
        let unused = stored.find(|o| !o.referenced.load(std::sync::atomic::Ordering::Relaxed));
        Some(unused.unwrap_or(oldest).hash)
    }

    /// The full keys of URL `primary`'s slots: its own and its secondary variants'.
    pub fn keys_of(&self, primary: &HashBinary) -> SmallVec<[HashBinary; 4]> {
        let mut keys: SmallVec<[HashBinary; 4]> = smallvec::smallvec![*primary];
        keys.extend(self.variants.get(primary).into_iter().flatten().copied());
        keys
    }

    /// Forgets `key` (of URL `primary`) in the variant index once it has no slot.
    pub fn forget_if_empty(&mut self, primary: &HashBinary, key: &HashBinary) {
        if primary == key || self.holds(key) {
            return;
        }
        if let Some(list) = self.variants.get_mut(primary) {
            list.retain(|c| c != key);
            if list.is_empty() {
                self.variants.remove(primary);
            }
        }
    }
}

fn first_is(list: &[Arc<Object>], key: &HashBinary) -> bool {
    list.first().is_some_and(|o| o.hash == *key)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use pingora_cache::CacheMeta;
    use pingora_http::ResponseHeader;

    use super::*;
    use crate::cache::object::StoredMeta;
    use crate::cache::tags::Tags;

    fn object(id: u64, primary: HashBinary, hash: HashBinary) -> Arc<Object> {
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        let meta = StoredMeta::from_meta(&meta, Tags::default());
        Arc::new(Object::filling(id, primary, hash, "h/p", meta))
    }

    fn key(n: u8, variant: u8) -> HashBinary {
        let mut key = [n; 16];
        key[15] = variant;
        key
    }

    #[test]
    fn a_key_holds_one_committed_object_and_its_fills_oldest_first() {
        let mut shard = Shard::default();
        let (first, second) = (
            object(1, key(1, 0), key(1, 0)),
            object(2, key(1, 0), key(1, 0)),
        );
        assert!(shard.add_fill(&key(1, 0), first.clone()));
        assert!(shard.add_fill(&key(1, 0), second.clone()));
        assert!(Arc::ptr_eq(shard.to_serve(&key(1, 0)).unwrap().0, &second));
        assert!(shard.remove_fill(&first));
        assert!(!shard.remove_fill(&first), "taken already");
        assert!(shard.put_committed(first.clone()).is_none());
        assert!(Arc::ptr_eq(
            &shard.put_committed(second.clone()).unwrap(),
            &first
        ));
        assert_eq!(shard.fills(&key(1, 0)).len(), 1);
        assert!(shard.take_committed(&key(1, 0), |o| o.id == 1).is_none());
        assert!(shard.take_committed(&key(1, 0), |o| o.id == 2).is_some());
        assert_eq!(shard.take_fills(&key(1, 0)).len(), 1);
        assert!(!shard.holds(&key(1, 0)));
        assert!(shard.to_serve(&key(2, 0)).is_none());
    }

    /// Keys are an unkeyed digest: what a table probes with must not be a part of it that
    /// URLs can be ground to share, nor the same from one shard or process to the next.
    #[test]
    fn the_table_hash_is_the_whole_key_under_random_seeds() {
        let (a, b) = (Shard::default(), Shard::default());
        let (mut one, mut other) = ([7; 16], [7; 16]);
        one[0] = 1;
        other[0] = 2;
        assert_ne!(table_hash(&a.seeds, &one), table_hash(&a.seeds, &other));
        assert_ne!(table_hash(&a.seeds, &one), table_hash(&b.seeds, &one));
    }

    #[test]
    fn a_variant_is_indexed_while_it_has_a_slot_and_capped() {
        let mut shard = Shard::default();
        let primary = key(3, 0);
        let fills: Vec<_> = (1..=MAX_VARIANTS as u8)
            .map(|v| object(u64::from(v), primary, key(3, v)))
            .collect();
        for fill in &fills {
            assert!(shard.add_fill(&primary, fill.clone()));
        }
        let extra = object(99, primary, key(3, 200));
        assert!(!shard.add_fill(&primary, extra), "one variant too many");
        // A second fill of a variant already there is no new variant.
        assert!(shard.add_fill(&primary, object(100, primary, key(3, 1))));
        assert_eq!(shard.keys_of(&primary).len(), MAX_VARIANTS + 1);
        assert!(shard.remove_fill(&fills[1]));
        shard.forget_if_empty(&primary, &key(3, 2));
        assert_eq!(shard.keys_of(&primary).len(), MAX_VARIANTS);
        assert!(shard.add_fill(&primary, object(101, primary, key(3, 201))));
    }
}
