//! A hash table whose lookup reads one cache line before the entry it finds: the store's
//! committed objects by key (`cache::shard`).
//!
//! `hashbrown` keeps its control bytes (one tag byte per bucket) apart from its buckets,
//! so a lookup over a large table waits for two cache misses before it reaches the value:
//! the control bytes, then the bucket they point to. Over a million stored objects each
//! random hit paid both (scenario 8 in `bench/notes.md`, session 32: `find` was three
//! dependent misses, the third being the object itself). Here seven entries and their tags
//! share one 64-byte line (a *group*), as in folly's F14: a lookup reads its group, compares
//! tags, and follows the one pointer that matches. The memory is the same as `hashbrown`'s
//! (9 bytes and a seventh a slot, against 9), at a similar load.
//!
//! Groups are probed in order from the key's home group. Instead of tombstones, each group
//! counts the entries that went on past it because it was full (F14's *overflow count*): a
//! lookup stops at the first group that sent none on, and a removal takes its entry's count
//! back from each group on its path. A count that reaches 255 stays there (the lookups
//! through it go on probing; a resize counts afresh).
//!
//! The hash must be uniform over its low bits (the home group) and its top 7 bits (the
//! tag): the store's is `ahash` with per-process seeds.

/// Entries a group holds: with the tags and the overflow count, 64 bytes of 8-byte entries.
const SLOTS: usize = 7;

/// Entries the table holds before it doubles, per group (a load of 6/7).
const MAX_PER_GROUP: usize = 6;

/// Groups in a new table's first allocation.
const FIRST_GROUPS: usize = 4;

/// One cache line of entries (see the module doc).
#[repr(C, align(64))]
struct Group<T> {
    /// Each slot's tag: 0 when empty, else `0x80` with the hash's top 7 bits.
    tags: [u8; SLOTS],
    /// Entries whose probe passed this group full (saturating: see the module doc).
    overflow: u8,
    slots: [Option<T>; SLOTS],
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Group {
            tags: [0; SLOTS],
            overflow: 0,
            slots: Default::default(),
        }
    }
}

/// The tag `hash` gives its entry (never 0, the empty slot's).
#[inline]
fn tag_of(hash: u64) -> u8 {
    0x80 | (hash >> 57) as u8
}

/// A hash table of `T`, each entry found by its hash and an equality (see the module doc).
pub struct GroupTable<T> {
    groups: Vec<Group<T>>,
    len: usize,
}

impl<T> Default for GroupTable<T> {
    fn default() -> Self {
        GroupTable {
            groups: Vec::new(),
            len: 0,
        }
    }
}

impl<T> GroupTable<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry of hash `hash` that `eq` accepts.
    #[inline]
    pub fn find(&self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&T> {
        let (group, slot) = self.locate(hash, eq)?;
        self.groups[group].slots[slot].as_ref()
    }

    /// Puts `value` in, in place of the entry of hash `hash` that `eq` accepts, if any,
    /// which it returns. `rehash` gives an entry's hash when the table grows.
    pub fn insert(
        &mut self,
        hash: u64,
        value: T,
        eq: impl FnMut(&T) -> bool,
        rehash: impl Fn(&T) -> u64,
    ) -> Option<T> {
        if let Some((group, slot)) = self.locate(hash, eq) {
            return self.groups[group].slots[slot].replace(value);
        }
        if self.len >= self.groups.len() * MAX_PER_GROUP {
            self.grow(rehash);
        }
        self.place(hash, value);
        self.len += 1;
        None
    }

    /// Takes out the entry of hash `hash` that `eq` accepts, if `which` accepts it too.
    pub fn remove_if(
        &mut self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
        which: impl FnOnce(&T) -> bool,
    ) -> Option<T> {
        let (group, slot) = self.locate(hash, eq)?;
        let found = &mut self.groups[group];
        if !found.slots[slot].as_ref().is_some_and(which) {
            return None;
        }
        found.tags[slot] = 0;
        let value = found.slots[slot].take();
        // The groups it passed no longer send it on.
        let mask = self.groups.len() - 1;
        let mut at = hash as usize & mask;
        while at != group {
            let passed = &mut self.groups[at];
            if passed.overflow != u8::MAX {
                passed.overflow -= 1;
            }
            at = (at + 1) & mask;
        }
        self.len -= 1;
        value
    }

    /// Every entry, in no order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.groups
            .iter()
            .flat_map(|group| group.slots.iter().flatten())
    }

    /// Where the entry of hash `hash` that `eq` accepts is: its group and slot.
    #[inline]
    fn locate(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<(usize, usize)> {
        if self.len == 0 {
            return None;
        }
        let (tag, mask) = (tag_of(hash), self.groups.len() - 1);
        let mut at = hash as usize & mask;
        // At most every group: a full table's counts are all non-zero.
        for _ in 0..self.groups.len() {
            let group = &self.groups[at];
            for slot in 0..SLOTS {
                if group.tags[slot] == tag && group.slots[slot].as_ref().is_some_and(&mut eq) {
                    return Some((at, slot));
                }
            }
            if group.overflow == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
        None
    }

    /// Puts `value`, whose key is not in the table, in the first free slot on its path.
    fn place(&mut self, hash: u64, value: T) {
        let (tag, mask) = (tag_of(hash), self.groups.len() - 1);
        let mut at = hash as usize & mask;
        loop {
            let group = &mut self.groups[at];
            if let Some(slot) = group.tags.iter().position(|&t| t == 0) {
                group.tags[slot] = tag;
                group.slots[slot] = Some(value);
                return;
            }
            group.overflow = group.overflow.saturating_add(1);
            at = (at + 1) & mask;
        }
    }

    /// Doubles the groups (or makes the first ones) and places every entry again.
    fn grow(&mut self, rehash: impl Fn(&T) -> u64) {
        let count = (self.groups.len() * 2).max(FIRST_GROUPS);
        let old = std::mem::replace(&mut self.groups, Vec::with_capacity(count));
        self.groups.resize_with(count, Group::default);
        for group in old {
            for value in group.slots.into_iter().flatten() {
                self.place(rehash(&value), value);
            }
        }
    }

    /// The bytes its groups take.
    #[cfg(test)]
    pub fn allocated_bytes(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Group<T>>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;

    /// Entries whose hash is their key: the tests choose collisions.
    fn insert(table: &mut GroupTable<(u64, u32)>, hash: u64, value: u32) -> Option<u32> {
        table
            .insert(hash, (hash, value), |e| e.0 == hash, |e| e.0)
            .map(|e| e.1)
    }

    fn find(table: &GroupTable<(u64, u32)>, hash: u64) -> Option<u32> {
        table.find(hash, |e| e.0 == hash).map(|e| e.1)
    }

    fn remove(table: &mut GroupTable<(u64, u32)>, hash: u64) -> Option<u32> {
        table
            .remove_if(hash, |e| e.0 == hash, |_| true)
            .map(|e| e.1)
    }

    #[test]
    fn a_group_of_object_pointers_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Group<Arc<u64>>>(), 64);
        assert_eq!(std::mem::align_of::<Group<Arc<u64>>>(), 64);
    }

    #[test]
    fn an_empty_table_finds_nothing_and_allocates_nothing() {
        let mut table = GroupTable::default();
        assert_eq!(find(&table, 7), None);
        assert_eq!(remove(&mut table, 7), None);
        assert_eq!(table.allocated_bytes(), 0);
        assert!(table.is_empty());
    }

    #[test]
    fn an_insert_replaces_the_entry_eq_accepts_and_returns_it() {
        let mut table = GroupTable::default();
        assert_eq!(insert(&mut table, 5, 1), None);
        assert_eq!(insert(&mut table, 5, 2), Some(1));
        assert_eq!((find(&table, 5), table.len()), (Some(2), 1));
    }

    #[test]
    fn remove_if_leaves_an_entry_its_check_refuses() {
        let mut table = GroupTable::default();
        insert(&mut table, 9, 1);
        assert!(table.remove_if(9, |e| e.0 == 9, |e| e.1 == 2).is_none());
        assert_eq!(find(&table, 9), Some(1));
        assert_eq!(table.remove_if(9, |e| e.0 == 9, |e| e.1 == 1), Some((9, 1)));
        assert_eq!((find(&table, 9), table.len()), (None, 0));
    }

    /// Entries that share a home group and a tag overflow into the next groups; removing
    /// the first ones leaves the later ones found, and the counts return to zero.
    #[test]
    fn colliding_entries_overflow_and_are_found_after_removals() {
        let mut table = GroupTable::default();
        // Home group 0 and the same tag (the top bits) for all: only `eq` tells them apart.
        let hashes: Vec<u64> = (0..20).map(|n| (n << 8) * 64).collect();
        // Few enough not to grow: every entry stays in the first four groups' path.
        for (n, &hash) in hashes.iter().take(20).enumerate() {
            assert_eq!(insert(&mut table, hash, n as u32), None);
        }
        for (n, &hash) in hashes.iter().enumerate() {
            assert_eq!(find(&table, hash), Some(n as u32), "entry {n}");
        }
        for &hash in &hashes[..10] {
            assert!(remove(&mut table, hash).is_some());
        }
        for (n, &hash) in hashes.iter().enumerate() {
            let expected = (n >= 10).then_some(n as u32);
            assert_eq!(find(&table, hash), expected, "entry {n}");
        }
        for &hash in &hashes[10..] {
            assert!(remove(&mut table, hash).is_some());
        }
        assert!(table
            .groups
            .iter()
            .all(|g| g.overflow == 0 && g.tags == [0; 7]));
    }

    /// Against `HashMap`, over inserts, replacements and removals of clustered hashes
    /// through several doublings.
    #[test]
    fn it_agrees_with_a_hash_map_through_growth_and_removals() {
        let mut table = GroupTable::default();
        let mut model = HashMap::new();
        // A simple generator: no dependency, the same sequence every run.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for step in 0..60_000u32 {
            let r = next();
            // A few hundred distinct keys, some sharing low bits and tags.
            let hash = (r % 700).wrapping_mul(0x0100_0000_0000_0041) | ((r % 3) << 58);
            match r % 5 {
                0..=2 => assert_eq!(
                    insert(&mut table, hash, step),
                    model.insert(hash, step),
                    "insert at step {step}"
                ),
                3 => assert_eq!(remove(&mut table, hash), model.remove(&hash), "step {step}"),
                _ => assert_eq!(find(&table, hash), model.get(&hash).copied(), "step {step}"),
            }
            assert_eq!(table.len(), model.len());
        }
        for (hash, value) in &model {
            assert_eq!(find(&table, *hash), Some(*value));
        }
        assert_eq!(table.iter().count(), model.len());
    }
}
