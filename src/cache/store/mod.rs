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
//! - per abandoned fill, the chunks its own request's client has yet to read (pingora's
//!   miss loop reads the origin about as fast as that client takes the body: a chunk or
//!   two for a client that keeps up, a few MiB at worst for a slow one) and at most
//!   `object::READER_BACKLOG_BYTES` more for requests collapsed onto it: one further
//!   behind is cut off (`object::backlog`);
//! - per object, the allocator's rounding of its key, header and index entries, which are
//!   counted by estimate (`Object::overhead`: its struct, `OBJECT_BYTES`; its header,
//!   `StoredMeta::weight`; `INDEX_ENTRY_BYTES`), and its entry in the eviction clock (a
//!   weak pointer: 8 bytes, 16 with the queue's spare room).
//! - per block of shared header lines (`cache::shared_lines`) whose maker has left the store
//!   while other objects still hold it, the block (a few hundred bytes): only its maker
//!   counts it.
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use http::HeaderName;
use parking_lot::Mutex;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheEntryId, CacheKey, CacheMeta, Storage};
use pingora_error::{Error, ErrorType, Result};

use super::clock::Clock;
use super::object::{Object, StoredMeta};
use super::shard::Shard;
pub use super::shard::MAX_VARIANTS;

mod handlers;
mod index;
mod purging;

use handlers::{hit, Fill};
pub use handlers::{hit_object, meta_object};
use index::Index;
pub use purging::PurgeCount;

const SHARDS: usize = 16;

thread_local! {
    /// The key of this thread's last lookup, if it missed (see `MemoryStore::take_missed`).
    static LAST_MISS: Cell<Option<HashBinary>> = const { Cell::new(None) };
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
    /// Readers of abandoned fills cut off for falling too far behind (`object::backlog`).
    readers_cut: AtomicUsize,
    /// Fills stopped because their client had gone and no one else read them
    /// (`handlers::FINISH_WITHOUT_CLIENT_BYTES`).
    fills_stopped: AtomicUsize,
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
            readers_cut: AtomicUsize::new(0),
            fills_stopped: AtomicUsize::new(0),
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

    /// Readers of abandoned fills cut off for falling too far behind them, in all.
    pub fn readers_cut(&self) -> usize {
        self.readers_cut.load(Ordering::Relaxed)
    }

    /// Fills stopped because their client had gone and no other request read them, in all.
    pub fn fills_stopped(&self) -> usize {
        self.fills_stopped.load(Ordering::Relaxed)
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

    /// Whether `key`'s committed object is fresh (what a lookup would serve as a hit).
    pub fn is_fresh(&self, key: &CacheKey) -> bool {
        let now = SystemTime::now();
        self.in_shard(key, |shard, key| {
            shard
                .committed(key)
                .is_some_and(|c| SystemTime::from(c.meta().fresh_until) >= now)
        })
    }

    /// Whether `key` holds an object, committed or filling.
    pub fn holds(&self, key: &CacheKey) -> bool {
        self.in_shard(key, Shard::holds)
    }

    /// Whether URL `primary` holds an object of any variant, committed or filling.
    pub fn holds_url(&self, primary: &HashBinary) -> bool {
        let shard = self.shard(primary).lock();
        shard.keys_of(primary).iter().any(|key| shard.holds(key))
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

    /// Accounts for a committed object that left the store.
    fn forget(&self, object: &Object) {
        let weight = object.weight();
        self.bytes.fetch_sub(weight, Ordering::Relaxed);
        self.objects.fetch_sub(1, Ordering::Relaxed);
        self.release(weight);
        self.clock.depart(object);
        self.index.lock().remove(object);
    }

    /// Moves a finished fill into the slot's committed place, from the `reserved` bytes
    /// (what packing frees goes back: `Object::committed`); its weight, or `None` if it was
    /// purged meanwhile (nothing given back: the caller releases `reserved`).
    fn commit(&self, fill: &Arc<Object>, reserved: usize) -> Option<usize> {
        let committed = Arc::new(fill.committed());
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
        // A committed object weighs its fill's reservation less what packing freed; were it
        // ever heavier, the difference is taken, and the store evicts back under its bound.
        match reserved.checked_sub(weight) {
            Some(spare) => self.release(spare),
            None => {
                self.used.fetch_add(weight - reserved, Ordering::AcqRel);
                self.reserve(0);
            }
        }
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
            served.map(|(object, _)| hit(object, false)).transpose()?
        };
        LAST_MISS.with(|last| last.set(found.is_none().then_some(hash)));
        Ok(found)
    }
}

#[async_trait]
impl Storage for MemoryStore {
    /// Portico's purges take a URL with all its variants (`purging`; pingora's own purge
    /// paths, a `PURGE` method and an eviction manager, are not used): pingora need not
    /// hide variants stored before the URL's primary object, which it would judge by times
    /// corrected for the age each response arrived with (a variant that came from a shield
    /// with an older `Age` than the primary's would never be served).
    fn purges_variants(&'static self) -> bool {
        true
    }

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
            .map(|object| hit(object, true))
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
        let label = key.primary_key_str().unwrap_or_default();
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
        let replaced = {
            let primary = key.primary_bin();
            let mut index = self.index.lock();
            let mut shard = self.shard(&primary).lock();
            let mut replaced = None;
            let mut added = shard.add_fill(&primary, object.clone());
            if !added {
                // The URL has all its variants: a stored one gives its slot up.
                if let Some(victim) = shard.variant_to_replace(&primary) {
                    replaced = shard.take_committed(&victim, |_| true);
                    shard.forget_if_empty(&primary, &victim);
                    added = shard.add_fill(&primary, object.clone());
                }
            }
            if !added {
                drop(shard);
                drop(index);
                self.release(overhead);
                return Error::e_explain(
                    ErrorType::InternalError,
                    format!("more than {MAX_VARIANTS} variants of one URL in progress; not stored"),
                );
            }
            index.fills.insert(&object);
            replaced
        };
        // Accounted once the locks are given back (`forget` takes the index's).
        if let Some(old) = replaced {
            self.evicted.fetch_add(1, Ordering::Relaxed);
            self.forget(&old);
        }
        let expected = meta
            .response_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|len| len.to_str().ok()?.parse().ok());
        Ok(Box::new(Fill {
            store: self,
            tag: id.to_be_bytes(),
            object,
            written: 0,
            reserved: overhead,
            abandoned: false,
            finished: false,
            expected,
            client_gone: AtomicBool::new(false),
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

#[cfg(test)]
mod tests;
