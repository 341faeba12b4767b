//! The cache lock, closing a race pingora-cache leaves open.
//!
//! pingora looks a key up and, on a miss, takes the key's lock: two steps. If the writer
//! that holds the lock registers its fill and releases the lock in between (it releases
//! as soon as the fill can be streamed), the late request finds no lock and becomes a
//! second writer: a second request upstream for a key that is already being fetched. This
//! lock checks for that case and turns the late request into a reader of the fill. The
//! writer may even have finished between the late request's lookup and its lock: a request
//! whose lookup missed also looks again when the key now holds a committed object, and one
//! whose lookup found a stale object when the key now holds a fresh one.

use pingora_cache::lock::{CacheKeyLock, CacheLock, LockStatus, Locked, WritePermit};
use pingora_cache::CacheKey;

use super::MemoryStore;

pub struct FillAwareLock {
    inner: CacheLock,
    store: &'static MemoryStore,
}

impl FillAwareLock {
    pub fn new(inner: CacheLock, store: &'static MemoryStore) -> FillAwareLock {
        FillAwareLock { inner, store }
    }
}

impl CacheKeyLock for FillAwareLock {
    fn lock(&self, key: &CacheKey, stale_writer: bool) -> Locked {
        // Read first, whatever the outcome, so the mark never outlives this lock call.
        let missed = MemoryStore::take_missed(key);
        let locked = self.inner.lock(key, stale_writer);
        let Locked::Write(permit) = locked else {
            return locked;
        };
        // A committed object counts only when this request's lookup found nothing: otherwise
        // it is one the request chose not to use (a forced miss), and looking again would loop.
        // A request about to refresh a stale object reads instead when a refresh is already
        // filling and the stale object may be served meanwhile (its lookup preferred it), or
        // when a refresh has finished since its lookup (the key holds a fresh object: a
        // thread preempted between its lookup and this lock would refetch it otherwise).
        let stored_since = if missed {
            self.store.holds(key)
        } else if stale_writer {
            self.store.is_refreshing(key) || self.store.is_fresh(key)
        } else {
            self.store.is_filling(key)
        };
        if !stored_since {
            return Locked::Write(permit);
        }
        // Wait on our own lock, then release it as done: the request looks up again and
        // finds the fill.
        match self.inner.lock(key, false) {
            read @ Locked::Read(_) => {
                self.inner.release(key, permit, LockStatus::Done);
                read
            }
            Locked::Write(other) => {
                self.inner.release(key, other, LockStatus::TransientError);
                Locked::Write(permit)
            }
        }
    }

    fn release(&self, key: &CacheKey, permit: WritePermit, reason: LockStatus) {
        self.inner.release(key, permit, reason);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use pingora_cache::trace::Span;
    use pingora_cache::{CacheMeta, Storage};
    use pingora_http::ResponseHeader;

    use super::*;

    fn parts() -> (&'static MemoryStore, FillAwareLock) {
        let store: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(1 << 20, 1 << 16)));
        (
            store,
            FillAwareLock::new(CacheLock::new(Duration::from_secs(5)), store),
        )
    }

    async fn store_object(store: &'static MemoryStore, key: &CacheKey) {
        store_object_for(store, key, Duration::from_secs(60)).await;
    }

    /// Stores an object fresh for `fresh` (zero: stale at once).
    async fn store_object_for(store: &'static MemoryStore, key: &CacheKey, fresh: Duration) {
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        let meta = CacheMeta::new(now + fresh, now, 0, 0, header);
        let span = Span::inactive();
        let mut miss = store
            .get_miss_handler(key, &meta, &span.handle())
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(b"x"), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    }

    async fn found(store: &'static MemoryStore, key: &CacheKey) -> bool {
        let span = Span::inactive();
        store.lookup(key, &span.handle()).await.unwrap().is_some()
    }

    /// Whether the lock made this request the writer (the permit is given back).
    fn writes(lock: &FillAwareLock, key: &CacheKey) -> bool {
        match lock.lock(key, false) {
            Locked::Write(permit) => {
                lock.release(key, permit, LockStatus::TransientError);
                true
            }
            Locked::Read(_) => false,
        }
    }

    #[tokio::test]
    async fn a_request_whose_lookup_missed_reads_what_was_stored_before_its_lock() {
        let (store, lock) = parts();
        let key = CacheKey::new("h/late", "");
        assert!(!found(store, &key).await);
        // Another request fetched and stored the object between this lookup and this lock.
        store_object(store, &key).await;
        assert!(!writes(&lock, &key));
        assert!(found(store, &key).await);
    }

    /// A request found the object stale, and a refresh stored a fresh one before this
    /// request took the lock (it was preempted in between): it reads, and finds the fresh
    /// object, rather than refreshing it again.
    #[tokio::test]
    async fn a_stale_writer_reads_what_a_refresh_stored_since_its_lookup() {
        let (store, lock) = parts();
        let key = CacheKey::new("h/refreshed", "");
        store_object_for(store, &key, Duration::ZERO).await;
        let Locked::Write(permit) = lock.lock(&key, true) else {
            panic!("a stale object with no refresh under way: this request refreshes it");
        };
        lock.release(&key, permit, LockStatus::TransientError);
        store_object_for(store, &key, Duration::from_secs(60)).await;
        if let Locked::Write(permit) = lock.lock(&key, true) {
            lock.release(&key, permit, LockStatus::TransientError);
            panic!("a stale writer refetched an object a refresh had just stored");
        }
        assert!(found(store, &key).await);
    }

    #[tokio::test]
    async fn a_forced_miss_on_a_stored_object_writes() {
        let (store, lock) = parts();
        let key = CacheKey::new("h/forced", "");
        store_object(store, &key).await;
        assert!(found(store, &key).await);
        assert!(writes(&lock, &key));
    }

    #[tokio::test]
    async fn a_miss_on_an_empty_key_writes_and_a_second_request_waits() {
        let (store, lock) = parts();
        let key = CacheKey::new("h/first", "");
        assert!(!found(store, &key).await);
        let Locked::Write(permit) = lock.lock(&key, false) else {
            panic!("the first request must write");
        };
        assert!(!found(store, &key).await);
        assert!(matches!(lock.lock(&key, false), Locked::Read(_)));
        lock.release(&key, permit, LockStatus::Done);
    }
}
