//! Portico's cache store: pingora-cache's `Storage` in memory, bounded in bytes.
//!
//! Objects live in a sharded hash map under their full key (primary + `Vary` variance); a
//! key's shard is picked by its primary hash, so every variant of a URL shares one shard and
//! a per-shard index lists a URL's secondary variants (invalidation finds them all, and
//! their number is capped). Each slot holds at most one committed object and the fills in
//! progress for that key. A lookup prefers the newest fill, so readers that waited on the
//! cache lock stream the body as it arrives instead of waiting for the end, except while the
//! committed object may still be served without the origin (fresh, or stale within its
//! `stale-while-revalidate` window): a refresh that dies mid-body then cuts nobody short.
//! Every object has a generation id: eviction names the generation it chose, so it never
//! removes a newer object stored under the same key.
//!
//! The byte bound is enforced by pingora-cache's sharded LRU eviction manager, which the
//! store owns (pingora admits each committed object to it and purges what it evicts). The
//! store counts the bytes it actually holds, so the bound can be checked from outside.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use pingora_cache::eviction::{lru, EvictionManager};
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheEntryId, CacheEntryKeyRef, CacheKey, CacheMeta, Storage};
use pingora_error::{Error, ErrorType, Result};
use smallvec::SmallVec;

use super::object::{BodyReader, FillState, Object, StoredMeta};

const SHARDS: usize = 16;
/// Shards of the LRU (pingora's `Manager<N>` takes them as a constant). One: an exact LRU.
/// A sharded LRU evicts the oldest object of a shard picked at random, so an object alone
/// in its shard goes first however hot it is; with large objects and few of them per shard
/// that evicts hot objects. Hits rarely contend on the one shard: pingora_lru only takes its
/// write lock to promote an object that is not already near the head.
pub const EVICTION_SHARDS: usize = 1;

thread_local! {
    /// The key of this thread's last lookup, if it missed (see `MemoryStore::take_missed`).
    static LAST_MISS: Cell<Option<HashBinary>> = const { Cell::new(None) };
}

/// Secondary variants kept per URL (primary key) beyond its primary slot: junk `Vary`
/// values cannot split one URL into unbounded objects. A variant past the cap is served
/// from the origin, not stored.
pub const MAX_VARIANTS: usize = 32;

#[derive(Default)]
struct Shard {
    slots: HashMap<HashBinary, Slot>,
    /// Primary hash → the combined hashes of its secondary variant slots.
    variants: HashMap<HashBinary, SmallVec<[HashBinary; 4]>>,
}

impl Shard {
    /// Forgets slot `combined` (of URL `primary`) in the variant index.
    fn unindex(&mut self, primary: &HashBinary, combined: &HashBinary) {
        if primary == combined {
            return;
        }
        if let Some(list) = self.variants.get_mut(primary) {
            list.retain(|c| c != combined);
            if list.is_empty() {
                self.variants.remove(primary);
            }
        }
    }

    fn remove_if_empty(&mut self, primary: &HashBinary, combined: &HashBinary) {
        if self.slots.get(combined).is_some_and(Slot::is_empty) {
            self.slots.remove(combined);
            self.unindex(primary, combined);
        }
    }
}

#[derive(Default)]
struct Slot {
    committed: Option<Arc<Object>>,
    fills: SmallVec<[Arc<Object>; 1]>,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.committed.is_none() && self.fills.is_empty()
    }

    /// What a lookup serves: the newest fill (after a refresh starts, its body is the one to
    /// serve), unless the committed object may still be used without the origin.
    fn to_serve(&self) -> Option<&Arc<Object>> {
        match (&self.committed, self.fills.last()) {
            (Some(committed), Some(fill)) => Some(
                if committed
                    .meta
                    .load()
                    .usable_without_origin(SystemTime::now())
                {
                    committed
                } else {
                    fill
                },
            ),
            (committed, fill) => fill.or(committed.as_ref()),
        }
    }
}

/// The in-memory store. Lives for the whole process (pingora wants `&'static`).
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    eviction: lru::Manager<EVICTION_SHARDS>,
    bytes: AtomicUsize,
    objects: AtomicUsize,
    next_id: AtomicU64,
    max_object_bytes: usize,
}

impl MemoryStore {
    pub fn new(memory_bytes: usize, max_object_bytes: usize) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            // Capacity is a per-shard preallocation hint, not a limit.
            eviction: lru::Manager::with_capacity(memory_bytes, 1024),
            bytes: AtomicUsize::new(0),
            objects: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            max_object_bytes,
        }
    }

    pub fn eviction(&self) -> &lru::Manager<EVICTION_SHARDS> {
        &self.eviction
    }

    /// Bytes held by committed objects (bodies and headers).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Committed objects.
    pub fn objects(&self) -> usize {
        self.objects.load(Ordering::Relaxed)
    }

    /// Whether a fill is under way for `key`.
    pub fn is_filling(&self, key: &CacheKey) -> bool {
        self.slot_matches(key, |slot| !slot.fills.is_empty())
    }

    /// Whether a fill is under way for `key` while its committed object may still be served
    /// without the origin (what a lookup then returns).
    pub fn is_refreshing(&self, key: &CacheKey) -> bool {
        let now = SystemTime::now();
        self.slot_matches(key, |slot| {
            !slot.fills.is_empty()
                && slot
                    .committed
                    .as_ref()
                    .is_some_and(|c| c.meta.load().usable_without_origin(now))
        })
    }

    /// Whether `key` holds an object, committed or filling.
    pub fn holds(&self, key: &CacheKey) -> bool {
        self.slot_matches(key, |slot| !slot.is_empty())
    }

    fn slot_matches(&self, key: &CacheKey, test: impl Fn(&Slot) -> bool) -> bool {
        let hash = key.combined_bin();
        self.shard(&key.primary_bin())
            .lock()
            .slots
            .get(&hash)
            .is_some_and(test)
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

    /// Removes every committed object of the URL whose primary hash is `primary`, all its
    /// variants included (RFC 9111 §4.4: an unsafe request invalidates the target URI);
    /// returns how many. Fills under way are left to finish: they started from the origin.
    pub fn invalidate(&self, primary: &HashBinary) -> usize {
        let removed: SmallVec<[Arc<Object>; 4]> = {
            let mut shard = self.shard(primary).lock();
            let mut combined: SmallVec<[HashBinary; 4]> = smallvec::smallvec![*primary];
            combined.extend(shard.variants.get(primary).into_iter().flatten().copied());
            let mut removed = SmallVec::new();
            for hash in &combined {
                if let Some(slot) = shard.slots.get_mut(hash) {
                    removed.extend(slot.committed.take());
                }
                shard.remove_if_empty(primary, hash);
            }
            removed
        };
        for object in &removed {
            self.forget(object);
        }
        removed.len()
    }

    /// Removes every object (committed or filling) whose key text `matches`; returns how many.
    /// Fills removed here never commit, so a purge cannot be undone by a fill that started
    /// before it.
    pub fn purge_matching(&self, matches: impl Fn(&str) -> bool) -> usize {
        let mut removed = Vec::new();
        let mut fills = 0;
        for shard in &self.shards {
            let mut guard = shard.lock();
            let Shard { slots, variants } = &mut *guard;
            slots.retain(|_, slot| {
                if slot.committed.as_ref().is_some_and(|o| matches(&o.label)) {
                    removed.extend(slot.committed.take());
                }
                let before = slot.fills.len();
                slot.fills.retain(|o| !matches(&o.label));
                fills += before - slot.fills.len();
                !slot.is_empty()
            });
            // Variant slots that went drop out of the index.
            variants.retain(|_, list| {
                list.retain(|c| slots.contains_key(c));
                !list.is_empty()
            });
        }
        for object in &removed {
            self.forget(object);
        }
        removed.len() + fills
    }

    /// Accounts for a committed object that left the store.
    fn forget(&self, object: &Object) {
        self.bytes.fetch_sub(object.weight(), Ordering::Relaxed);
        self.objects.fetch_sub(1, Ordering::Relaxed);
        self.eviction.remove(CacheEntryKeyRef::from_entry_id(
            &object.key,
            Some(CacheEntryId::new(object.id)),
        ));
    }

    /// Moves a finished fill into the slot's committed place; `None` if it was purged meanwhile.
    fn commit(&self, hash: &HashBinary, fill: &Arc<Object>) -> Option<usize> {
        let committed = Arc::new(fill.committed());
        let weight = committed.weight();
        let replaced = {
            let mut shard = self.shard(&fill.key.primary).lock();
            let slot = shard.slots.get_mut(hash)?;
            let position = slot.fills.iter().position(|o| Arc::ptr_eq(o, fill))?;
            slot.fills.remove(position);
            self.bytes.fetch_add(weight, Ordering::Relaxed);
            self.objects.fetch_add(1, Ordering::Relaxed);
            slot.committed.replace(committed)
        };
        if let Some(old) = replaced {
            self.forget(&old);
        }
        Some(weight)
    }

    fn drop_fill(&self, hash: &HashBinary, fill: &Arc<Object>) {
        let primary = fill.key.primary;
        let mut shard = self.shard(&primary).lock();
        if let Some(slot) = shard.slots.get_mut(hash) {
            slot.fills.retain(|o| !Arc::ptr_eq(o, fill));
            shard.remove_if_empty(&primary, hash);
        }
    }
}

fn hit(object: &Arc<Object>) -> (CacheMeta, HitHandler) {
    let meta = object.meta.load().to_meta();
    let counted = object.state() == FillState::Complete;
    (
        meta,
        Box::new(Hit {
            reader: object.reader(),
            counted,
        }),
    )
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let shard = self.shard(&key.primary_bin()).lock();
        let found = shard.slots.get(&hash).and_then(Slot::to_serve).map(hit);
        LAST_MISS.with(|last| last.set(found.is_none().then_some(hash)));
        Ok(found)
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
        Ok(shard
            .slots
            .get(&hash)
            .and_then(|slot| slot.fills.iter().find(|o| o.id == id))
            .map(hit))
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
        let object = Arc::new(Object::filling(
            id,
            key.to_compact(),
            label,
            StoredMeta::from_meta(meta),
        ));
        {
            let primary = key.primary_bin();
            let mut shard = self.shard(&primary).lock();
            let known = shard.slots.contains_key(&hash);
            if !known && hash != primary {
                let variants = shard.variants.entry(primary).or_default();
                if variants.len() >= MAX_VARIANTS {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        format!("more than {MAX_VARIANTS} variants of one URL; not stored"),
                    );
                }
                variants.push(hash);
            }
            shard
                .slots
                .entry(hash)
                .or_default()
                .fills
                .push(object.clone());
        }
        Ok(Box::new(Fill {
            store: self,
            hash,
            tag: id.to_be_bytes(),
            object,
            written: 0,
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
        let removed = {
            let mut shard = self.shard(&primary).lock();
            let Some(slot) = shard.slots.get_mut(&hash) else {
                return Ok(PurgeOutcome::NotFound);
            };
            let removed = match (&slot.committed, wanted) {
                (Some(object), Some(id)) if object.id != id => None,
                _ => slot.committed.take(),
            };
            if matches!(purge_type, PurgeType::Invalidation) {
                slot.fills.clear();
            }
            shard.remove_if_empty(&primary, &hash);
            removed
        };
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
        let shard = self.shard(&key.primary_bin()).lock();
        let Some(object) = shard
            .slots
            .get(&hash)
            .and_then(|slot| slot.committed.as_ref())
        else {
            return Ok(false);
        };
        object.meta.store(Arc::new(StoredMeta::from_meta(meta)));
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
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

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
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
    hash: HashBinary,
    tag: [u8; 8],
    object: Arc<Object>,
    written: usize,
    finished: bool,
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
        self.object.append(data);
        if eof {
            self.object.end(FillState::Complete);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        self.finished = true;
        self.object.end(FillState::Complete);
        match self.store.commit(&self.hash, &self.object) {
            Some(weight) => Ok(MissFinishType::Created(weight)),
            None => Error::e_explain(
                ErrorType::InternalError,
                "the object was purged while it was being filled; not stored",
            ),
        }
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
            self.store.drop_fill(&self.hash, &self.object);
        }
    }
}

/// The eviction manager as pingora wants it.
pub fn eviction_manager(store: &'static MemoryStore) -> &'static (dyn EvictionManager + Sync) {
    &store.eviction
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
