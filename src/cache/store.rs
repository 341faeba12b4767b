//! Portico's cache store: pingora-cache's `Storage` in memory, with a hard byte bound.
//!
//! Objects live in sharded tables (`cache::shard`) under their full key (primary + `Vary`
//! variance); a key's shard is picked by its primary hash, so every variant of a URL shares
//! one shard and a per-shard index lists a URL's secondary variants (invalidation finds them
//! all, and their number is capped). Each slot holds at most one committed object and the fills in
//! progress for that key. A lookup prefers the newest fill, so readers that waited on the
//! cache lock stream the body as it arrives instead of waiting for the end, except while the
//! committed object may still be served without the origin (fresh, or stale within its
//! `stale-while-revalidate` window): a refresh that dies mid-body then cuts nobody short.
//! Every object has a generation id: eviction names the generation it chose, so it never
//! removes a newer object stored under the same key.
//!
//! # The bound
//!
//! `cache.memory_bytes` bounds what the store holds, fills in progress included. `used`
//! counts committed objects plus what fills have *reserved*: a fill reserves its key text,
//! header, tags and index entries when it starts, then each body chunk before it keeps it.
//! A reservation that does not fit first evicts committed objects in the order of the
//! store's eviction clock (`cache::clock`: second chance, an approximate LRU whose hits take
//! no lock). When nothing committed is left to evict
//! (the rest of the budget is other fills' reservations), the fill is **abandoned for
//! storage**: it gives its reservation back, leaves its slot (no new reader finds it) and is
//! never committed, but it goes on feeding the readers it already has, so the client of the
//! miss (and any request collapsed onto it) gets the whole response. Such a fill keeps only
//! the chunks its readers have not read yet. A fill whose first reservation fails is not
//! started: pingora then streams the response without the cache.
//!
//! The slack over the bound, all of it outside the store's accounting:
//! - per fill in progress, less than one body chunk (a chunk is reserved before it is kept,
//!   so the overshoot is a `Bytes` header and the allocator's rounding; pingora reads an
//!   origin's body at most 64 KiB at a time);
//! - per abandoned fill, the chunks its slowest reader has still to read (pingora's miss
//!   loop reads the origin ahead of a slow client; for a client that keeps up, a chunk or
//!   two);
//! - per object, the allocator's rounding of its key, header and index entries, which are
//!   counted by estimate (`Object::overhead`: its struct, `OBJECT_BYTES`; its header,
//!   `StoredMeta::weight`; `INDEX_ENTRY_BYTES`), and its entry in the eviction clock (a
//!   weak pointer: 8 bytes, 16 with the queue's spare room).
//!
//! # Indexes
//!
//! Besides the shards, one index maps each cache tag and each host to its committed
//! objects, and lists the fills in progress. It is written when an object is committed,
//! replaced, evicted or purged, never on a lookup. A purge by tag or by host takes its
//! candidates from the index (one short hold of the index's lock), then removes or marks
//! each one under its shard's lock, one object at a time: a lookup waits at most for one
//! object's removal, never for a scan.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use http::HeaderName;
use parking_lot::Mutex;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheEntryId, CacheKey, CacheMeta, Storage};
use pingora_error::{Error, ErrorType, Result};
use smallvec::SmallVec;

use super::clock::Clock;
use super::object::{BodyReader, FillState, Object, StoredMeta};
use super::purge::Purge;
use super::shard::Shard;
pub use super::shard::MAX_VARIANTS;

const SHARDS: usize = 16;

thread_local! {
    /// The key of this thread's last lookup, if it missed (see `MemoryStore::take_missed`).
    static LAST_MISS: Cell<Option<HashBinary>> = const { Cell::new(None) };
}

/// Objects by id: one pointer and a control byte each (the id is the object's own).
#[derive(Default)]
struct Objects(HashTable<Arc<Object>>);

impl Objects {
    /// Ids are handed out in sequence: a multiply spreads them over the table's buckets
    /// (its low bits) and its control bytes (its top bits).
    fn hash(id: u64) -> u64 {
        id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn insert(&mut self, object: &Arc<Object>) {
        let id = object.id;
        match self
            .0
            .entry(Objects::hash(id), |o| o.id == id, |o| Objects::hash(o.id))
        {
            Entry::Occupied(mut occupied) => *occupied.get_mut() = object.clone(),
            Entry::Vacant(vacant) => {
                vacant.insert(object.clone());
            }
        }
    }

    fn remove(&mut self, id: u64) {
        if let Ok(entry) = self.0.find_entry(Objects::hash(id), |o| o.id == id) {
            entry.remove();
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Object>> {
        self.0.iter()
    }
}

/// Committed objects by tag and by host, and the fills in progress (see the module doc).
#[derive(Default)]
struct Index {
    by_tag: HashMap<Box<str>, Objects>,
    by_host: HashMap<Box<str>, Objects>,
    fills: Objects,
}

impl Index {
    fn add(&mut self, object: &Arc<Object>) {
        for tag in object.meta().tags().iter() {
            self.by_tag.entry(tag.clone()).or_default().insert(object);
        }
        let host = object.host();
        match self.by_host.get_mut(host) {
            Some(objects) => objects.insert(object),
            None => self.by_host.entry(host.into()).or_default().insert(object),
        }
    }

    fn remove(&mut self, object: &Object) {
        fn take(map: &mut HashMap<Box<str>, Objects>, name: &str, id: u64) {
            if let Some(objects) = map.get_mut(name) {
                objects.remove(id);
                if objects.0.is_empty() {
                    map.remove(name);
                }
            }
        }
        for tag in object.meta().tags().iter() {
            take(&mut self.by_tag, tag, object.id);
        }
        take(&mut self.by_host, object.host(), object.id);
    }
}

/// What a purge did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCount {
    /// Objects removed (or marked stale, for a soft purge), fills in progress included.
    pub purged: usize,
    /// Objects the purge looked at: the index's candidates, not the whole store.
    pub examined: usize,
}

/// The in-memory store. Lives for the whole process (pingora wants `&'static`).
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    /// The eviction order of committed objects.
    clock: Clock,
    /// `cache.memory_bytes`.
    budget: usize,
    /// Committed bytes plus fills' reservations: never over `budget`.
    used: AtomicUsize,
    /// Committed bytes only.
    bytes: AtomicUsize,
    objects: AtomicUsize,
    evicted: AtomicUsize,
    /// Fills abandoned for storage to stay within the budget.
    abandoned: AtomicUsize,
    /// Objects purges looked at, in all (how well the index narrows purges).
    purge_examined: AtomicUsize,
    next_id: AtomicU64,
    max_object_bytes: usize,
    tag_headers: Vec<HeaderName>,
    index: Mutex<Index>,
}

impl MemoryStore {
    pub fn new(memory_bytes: usize, max_object_bytes: usize) -> MemoryStore {
        MemoryStore::with_tag_headers(memory_bytes, max_object_bytes, Vec::new())
    }

    /// A store whose objects are tagged by the headers `tag_headers` (`cache::tags`).
    pub fn with_tag_headers(
        memory_bytes: usize,
        max_object_bytes: usize,
        tag_headers: Vec<HeaderName>,
    ) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            clock: Clock::default(),
            budget: memory_bytes,
            used: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            objects: AtomicUsize::new(0),
            evicted: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            purge_examined: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            max_object_bytes,
            tag_headers,
            index: Mutex::new(Index::default()),
        }
    }

    /// Bytes held by committed objects (bodies, headers, key text, tags and index entries).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Committed bytes plus what fills in progress have reserved (at most `memory_bytes`).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Committed objects.
    pub fn objects(&self) -> usize {
        self.objects.load(Ordering::Relaxed)
    }

    /// Objects evicted to make room, in all.
    pub fn evicted(&self) -> usize {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Fills abandoned for storage (the response went on, uncached), in all.
    pub fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Objects purges have looked at, in all.
    pub fn purge_examined(&self) -> usize {
        self.purge_examined.load(Ordering::Relaxed)
    }

    /// Whether a fill is under way for `key`.
    pub fn is_filling(&self, key: &CacheKey) -> bool {
        self.in_shard(key, |shard, key| !shard.fills(key).is_empty())
    }

    /// Whether a fill is under way for `key` while its committed object may still be served
    /// without the origin (what a lookup then returns).
    pub fn is_refreshing(&self, key: &CacheKey) -> bool {
        let now = SystemTime::now();
        self.in_shard(key, |shard, key| {
            !shard.fills(key).is_empty()
                && shard
                    .committed(key)
                    .is_some_and(|c| c.meta().usable_without_origin(now))
        })
    }

    /// Whether `key` holds an object, committed or filling.
    pub fn holds(&self, key: &CacheKey) -> bool {
        self.in_shard(key, Shard::holds)
    }

    fn in_shard(&self, key: &CacheKey, test: impl Fn(&Shard, &HashBinary) -> bool) -> bool {
        test(&self.shard(&key.primary_bin()).lock(), &key.combined_bin())
    }

    /// Whether the last lookup on this thread was a miss for `key` (and forgets it).
    ///
    /// pingora-cache takes the cache lock right after a lookup that missed, in the same poll
    /// (the lookup never waits), so this tells the lock that this request found nothing:
    /// anything in the slot now was stored after it looked. A lock taken after a hit that
    /// was treated as a miss (a forced miss) finds no mark.
    pub fn take_missed(key: &CacheKey) -> bool {
        LAST_MISS.with(|last| last.take()) == Some(key.combined_bin())
    }

    /// The shard of a URL: by its primary hash, so all its variants are together.
    fn shard(&self, primary: &HashBinary) -> &Mutex<Shard> {
        &self.shards[primary[0] as usize % SHARDS]
    }

    /// Takes `need` bytes of the budget, evicting committed objects (in the clock's order)
    /// while it does not fit; `false` when it cannot fit (nothing left to evict).
    fn reserve(&self, need: usize) -> bool {
        loop {
            let used = self.used.load(Ordering::Acquire);
            if used.saturating_add(need) <= self.budget {
                if self
                    .used
                    .compare_exchange_weak(used, used + need, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if !self.evict_one() {
                return false;
            }
        }
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Evicts the committed object the clock names; `false` when there is none.
    fn evict_one(&self) -> bool {
        let Some(victim) = self.clock.victim() else {
            return false;
        };
        let primary = victim.primary();
        let removed = {
            let mut shard = self.shard(&primary).lock();
            let removed = shard.take_committed(&victim.hash, |o| Arc::ptr_eq(o, &victim));
            shard.forget_if_empty(&primary, &victim.hash);
            removed
        };
        // Already gone (purged meanwhile): the clock still shrank, so the caller may retry.
        if let Some(object) = removed {
            self.evicted.fetch_add(1, Ordering::Relaxed);
            self.forget(&object);
        }
        true
    }

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
            if !purge.matches(&object.label, object.meta().tags()) {
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
            if !purge.matches(&fill.label, fill.meta().tags()) {
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

    /// Accounts for a committed object that left the store.
    fn forget(&self, object: &Object) {
        self.bytes.fetch_sub(object.weight(), Ordering::Relaxed);
        self.objects.fetch_sub(1, Ordering::Relaxed);
        self.release(object.weight());
        self.clock.depart(object);
        self.index.lock().remove(object);
    }

    /// Moves a finished fill into the slot's committed place, from the `reserved` bytes
    /// (what packing frees goes back: `Object::committed`); its weight, or `None` if it was
    /// purged meanwhile (nothing given back: the caller releases `reserved`).
    fn commit(&self, fill: &Arc<Object>, reserved: usize) -> Option<usize> {
        let committed = Arc::new(fill.committed(reserved));
        let weight = committed.weight();
        let primary = fill.primary();
        let replaced = {
            // The index's lock first, then the shard's (the order everywhere): a purge sees
            // the object either as a fill or committed and indexed, never neither.
            let mut index = self.index.lock();
            let replaced = {
                let mut shard = self.shard(&primary).lock();
                if !shard.remove_fill(fill) {
                    return None;
                }
                self.bytes.fetch_add(weight, Ordering::Relaxed);
                self.objects.fetch_add(1, Ordering::Relaxed);
                // Queued while the shard is held: a purge that finds it committed finds it
                // queued too.
                self.clock.admit(&committed);
                shard.put_committed(committed.clone())
            };
            index.fills.remove(fill.id);
            index.add(&committed);
            replaced
        };
        self.release(reserved - weight);
        if let Some(old) = replaced {
            self.forget(&old);
        }
        Some(weight)
    }

    /// Takes a fill out of its slot and out of the index (purged, aborted, abandoned or
    /// finished unstored); `false` if it was no longer in its slot.
    fn drop_fill(&self, fill: &Arc<Object>) -> bool {
        let primary = fill.primary();
        let mut index = self.index.lock();
        index.fills.remove(fill.id);
        let mut shard = self.shard(&primary).lock();
        let dropped = shard.remove_fill(fill);
        shard.forget_if_empty(&primary, &fill.hash);
        dropped
    }
}

fn hit(object: &Arc<Object>) -> Result<(CacheMeta, HitHandler)> {
    let meta = object.meta().to_meta(object.clone());
    let counted = object.state() == FillState::Complete;
    Ok((
        meta,
        Box::new(Hit {
            reader: object.reader(),
            counted,
        }),
    ))
}

impl MemoryStore {
    /// A lookup: the committed object (or a fill in progress) a request may be served from.
    fn find(&self, key: &CacheKey) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let found = {
            let shard = self.shard(&key.primary_bin()).lock();
            let served = shard.to_serve(&hash);
            if let Some((committed, true)) = served {
                committed.prefetch_head();
                Clock::touch(committed); // a use: it gets a second chance
            }
            served.map(|(object, _)| hit(object)).transpose()?
        };
        LAST_MISS.with(|last| last.set(found.is_none().then_some(hash)));
        Ok(found)
    }
}

#[async_trait]
impl Storage for MemoryStore {
    /// Every lookup is answered here, in place: the store never waits.
    fn lookup_now(
        &'static self,
        key: &CacheKey,
    ) -> Option<Result<Option<(CacheMeta, HitHandler)>>> {
        Some(self.find(key))
    }

    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        self.find(key)
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(id) = streaming_write_tag
            .and_then(|tag| <[u8; 8]>::try_from(tag).ok())
            .map(u64::from_be_bytes)
        else {
            return self.lookup(key, _trace).await;
        };
        let hash = key.combined_bin();
        let shard = self.shard(&key.primary_bin()).lock();
        shard
            .fills(&hash)
            .iter()
            .find(|o| o.id == id)
            .map(hit)
            .transpose()
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let hash = key.combined_bin();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let label = key.primary_key_str().unwrap_or_default().into();
        let tags = super::tags::of_response(meta.response_header(), &self.tag_headers);
        let object = Arc::new(Object::filling(
            id,
            key.primary_bin(),
            hash,
            label,
            StoredMeta::from_meta(meta, tags),
        ));
        let overhead = object.overhead();
        if !self.reserve(overhead) {
            self.abandoned.fetch_add(1, Ordering::Relaxed);
            return Error::e_explain(
                ErrorType::InternalError,
                "cache.memory_bytes is taken by fills in progress; not stored",
            );
        }
        {
            let primary = key.primary_bin();
            let mut index = self.index.lock();
            let mut shard = self.shard(&primary).lock();
            if !shard.add_fill(&primary, object.clone()) {
                drop(shard);
                drop(index);
                self.release(overhead);
                return Error::e_explain(
                    ErrorType::InternalError,
                    format!("more than {MAX_VARIANTS} variants of one URL; not stored"),
                );
            }
            index.fills.insert(&object);
        }
        Ok(Box::new(Fill {
            store: self,
            tag: id.to_be_bytes(),
            object,
            written: 0,
            reserved: overhead,
            abandoned: false,
            finished: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = target.key().combined_bin();
        let primary = target.key().primary;
        let wanted = match target {
            PurgeTarget::Exact(entry) => entry.entry_id().map(CacheEntryId::get),
            PurgeTarget::Active(_) => None,
        };
        let (removed, fills) = {
            let mut index = self.index.lock();
            let mut shard = self.shard(&primary).lock();
            if !shard.holds(&hash) {
                return Ok(PurgeOutcome::NotFound);
            }
            let removed = shard.take_committed(&hash, |o| wanted.is_none_or(|id| o.id == id));
            let fills = if matches!(purge_type, PurgeType::Invalidation) {
                shard.take_fills(&hash)
            } else {
                Vec::new()
            };
            for fill in &fills {
                index.fills.remove(fill.id);
            }
            shard.forget_if_empty(&primary, &hash);
            (removed, fills)
        };
        drop(fills);
        let Some(object) = removed else {
            return Ok(PurgeOutcome::NotFound);
        };
        self.forget(&object);
        Ok(PurgeOutcome::Purged(Some(CacheEntryId::new(object.id))))
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let tags = super::tags::of_response(meta.response_header(), &self.tag_headers);
        let stored = StoredMeta::from_meta(meta, tags);
        // The index's lock first, as everywhere: the `304` may have changed the tags.
        let delta = {
            let mut index = self.index.lock();
            let shard = self.shard(&key.primary_bin()).lock();
            let Some(object) = shard.committed(&hash) else {
                return Ok(false);
            };
            let retag = object.meta().tags() != stored.tags();
            if retag {
                index.remove(object);
            }
            let delta = object.reaccount(stored);
            if retag {
                index.add(object);
            }
            // Counted under the shard's lock: an eviction after it takes away the new weight.
            if delta >= 0 {
                self.bytes.fetch_add(delta as usize, Ordering::Relaxed);
                self.used.fetch_add(delta as usize, Ordering::AcqRel);
            } else {
                self.bytes
                    .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
                self.release(delta.unsigned_abs());
            }
            delta
        };
        // A header that grew may have taken the store past its bound: evict back under it
        // (not under the locks above, which eviction takes itself).
        if delta > 0 {
            self.reserve(0);
        }
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// The stored object a hit's meta came from (`None` for another storage's meta).
pub fn meta_object(meta: &CacheMeta) -> Option<&Object> {
    meta.header_source()?.as_any().downcast_ref::<Object>()
}

/// The complete object a hit is served from (`None` for an object still filling, or a hit
/// from another storage).
pub fn hit_object(handler: &HitHandler) -> Option<Arc<Object>> {
    let hit = handler.as_any().downcast_ref::<Hit>()?;
    hit.reader.is_complete().then(|| hit.reader.object.clone())
}

/// A hit: streams the object's body, complete or still filling.
struct Hit {
    reader: BodyReader,
    /// Only complete objects count as accesses: a fill is admitted when it commits, and an
    /// aborted one must not linger in the eviction manager's books.
    counted: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        self.reader.next().await
    }

    /// A hit holds nothing to give back: dropped, not finished.
    fn finish_is_noop(&self) -> bool {
        true
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn whole_body(&mut self) -> Option<&[u8]> {
        self.reader.whole_body()
    }

    fn can_seek(&self) -> bool {
        self.reader.can_seek()
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        self.reader.seek(start, end)
    }

    fn should_count_access(&self) -> bool {
        self.counted
    }

    fn get_eviction_weight(&self) -> usize {
        self.reader.object.weight()
    }

    fn entry_id(&self) -> Option<CacheEntryId> {
        Some(CacheEntryId::new(self.reader.object.id))
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A fill in progress. Dropped without `finish`, it aborts: readers get an error, and
/// nothing is stored.
struct Fill {
    store: &'static MemoryStore,
    tag: [u8; 8],
    object: Arc<Object>,
    written: usize,
    /// Bytes of the budget this fill holds (overhead, then the body as it arrives).
    reserved: usize,
    /// Over the budget: no longer stored, still feeding its readers.
    abandoned: bool,
    finished: bool,
}

impl Fill {
    /// Gives up storing this fill: its reservation goes back, its slot forgets it, and from
    /// now on it keeps only what its readers have yet to read.
    fn abandon(&mut self) {
        self.abandoned = true;
        self.store.release(std::mem::take(&mut self.reserved));
        self.store.drop_fill(&self.object);
        self.store.abandoned.fetch_add(1, Ordering::Relaxed);
        log::debug!(
            "cache fill of {} abandoned at {} bytes: cache.memory_bytes is taken by fills in progress",
            self.object.label,
            self.written
        );
    }
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        self.written += data.len();
        if self.written > self.store.max_object_bytes {
            return Error::e_explain(
                ErrorType::InternalError,
                format!(
                    "object exceeds cache.max_object_bytes ({} bytes)",
                    self.store.max_object_bytes
                ),
            );
        }
        if !self.abandoned {
            if self.store.reserve(data.len()) {
                self.reserved += data.len();
            } else {
                self.abandon();
            }
        }
        // A stored chunk gets an allocation of its own: the chunk Pingora hands over is a
        // view into its read buffer, and keeping the view would keep the whole buffer (a
        // 1 KiB object held about 8 KiB). A fill the store gave up on streams as it came.
        let data = match self.abandoned {
            true => data,
            false => Bytes::copy_from_slice(&data),
        };
        self.object.append(data);
        if self.abandoned {
            self.object.drop_read_chunks();
        }
        if eof {
            self.object.end(FillState::Complete);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        self.finished = true;
        self.object.end(FillState::Complete);
        // Not stored (abandoned, or purged while it filled): still a success for this
        // response, whose readers must get the rest of the body. An error here would make
        // pingora drop the cache (and the reader of the client it is still feeding).
        let reserved = std::mem::take(&mut self.reserved);
        let stored = match self.abandoned {
            true => None,
            false => self.store.commit(&self.object, reserved),
        };
        if stored.is_none() {
            self.store.release(reserved);
            self.store.drop_fill(&self.object);
            log::debug!("cache fill of {} finished, not stored", self.object.label);
        }
        Ok(MissFinishType::Created(stored.unwrap_or(0)))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.tag)
    }

    fn entry_id(&self) -> Option<CacheEntryId> {
        Some(CacheEntryId::new(self.object.id))
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if !self.finished {
            self.object.end(FillState::Aborted);
            self.store.release(std::mem::take(&mut self.reserved));
            self.store.drop_fill(&self.object);
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
