//! The edge cache: the store, its eviction, the cache lock and the policy around them.
//!
//! - `key`: the cache key, from the routing decision (host, route, origin group, upstream
//!   path and query view, scheme);
//! - `meta`, `object`, `store`: the bounded in-memory store (pingora-cache `Storage`);
//! - `shard`, `group_table`: one shard of the store's objects by key, and the table that
//!   finds a committed one in one cache line;
//! - `hit_lines`: where a hit's head needs more than a copy of a stored header's text;
//! - `clock`: the store's eviction order (second chance, an approximate LRU);
//! - `lock`: the cache lock (request collapsing), with a race closed;
//! - `policy`: RFC 9111 shared-cache rules and Front Door's cache behaviours;
//! - `vary`: variants, with their request fields normalised;
//! - `conditional`: clients' conditional requests answered from stored responses;
//! - `range_miss`: a request for part of an object the cache lacks gets that part;
//! - `status`: `X-Cache` values from pingora's cache phase;
//! - `purge`: purge requests by domain, path and tag, hard or soft;
//! - `tags`: the cache tags a response carries (`Cache-Tag`, `Surrogate-Key`).

pub mod clock;
pub mod conditional;
pub mod deception;
pub mod group_table;
pub mod header;
pub mod hit_lines;
pub mod key;
pub mod lock;
pub mod meta;
pub mod object;
pub mod policy;
pub mod purge;
pub mod range_miss;
pub mod shard;
pub mod shared_lines;
pub mod status;
pub mod store;
pub mod surrogate;
pub mod tags;
pub mod targeted;
pub mod unkeyed;
pub mod vary;

#[cfg(test)]
mod key_tests;

use std::time::Duration;

use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::predictor::Predictor;
use pingora_cache::{CacheOptionOverrides, HttpCache};

use crate::config::model::NodeSettings;

pub use store::MemoryStore;

const MAX_LOCK_RETRIES: usize = 8;

/// Everything pingora-cache needs, alive for the whole process (it takes `&'static`s).
pub struct EdgeCache {
    pub store: &'static MemoryStore,
    lock: &'static CacheKeyLockImpl,
    /// Remembers keys whose responses were not cacheable, so later requests for them skip
    /// the lookup and the cache lock instead of queueing behind one another.
    predictor: &'static Predictor<16>,
    lock_timeout: Duration,
    max_object_bytes: usize,
}

impl EdgeCache {
    /// Builds the cache for a node. Called once per node: the parts are leaked on purpose.
    pub fn leak(settings: &NodeSettings) -> &'static EdgeCache {
        let memory = usize::try_from(settings.cache_memory_bytes).unwrap_or(usize::MAX);
        let max_object = usize::try_from(settings.cache_max_object_bytes).unwrap_or(usize::MAX);
        let store: &'static MemoryStore = Box::leak(Box::new(MemoryStore::with_tag_headers(
            memory,
            max_object,
            settings.cache_tag_headers.clone(),
        )));
        let lock: &'static CacheKeyLockImpl = Box::leak(Box::new(lock::FillAwareLock::new(
            CacheLock::new(settings.cache_lock_timeout),
            store,
        )));
        let predictor = Box::leak(Box::new(Predictor::new(
            1024,
            Some(|reason: &str| policy::TRANSIENT_REASONS.contains(&reason)),
        )));
        Box::leak(Box::new(EdgeCache {
            store,
            lock,
            predictor,
            lock_timeout: settings.cache_lock_timeout,
            max_object_bytes: max_object,
        }))
    }

    /// Turns caching on for one request (from `request_cache_filter`); `collapse`: it takes
    /// part in the cache lock (not a request for part of an object, `range_miss`).
    pub fn enable(&'static self, cache: &mut HttpCache, collapse: bool) {
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(self.lock_timeout);
        // A safety net: a request sent back to look again more often than this goes to the
        // origin uncached rather than waiting on.
        overrides.max_lock_retries = Some(MAX_LOCK_RETRIES);
        // No eviction manager: the store evicts by itself, within its budget (`store`).
        cache.enable(
            self.store,
            None,
            Some(self.predictor),
            collapse.then_some(self.lock),
            Some(overrides),
        );
        cache.set_max_file_size_bytes(self.max_object_bytes);
    }
}
