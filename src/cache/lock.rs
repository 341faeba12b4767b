//! The cache lock, closing a race pingora-cache leaves open.
//!
//! pingora looks a key up and, on a miss, takes the key's lock: two steps. If the writer
//! that holds the lock registers its fill and releases the lock in between (it releases
//! as soon as the fill can be streamed), the late request finds no lock and becomes a
//! second writer: a second request upstream for a key that is already being fetched. This
//! lock checks for that case and turns the late request into a reader of the fill.

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
        let locked = self.inner.lock(key, stale_writer);
        let Locked::Write(permit) = locked else {
            return locked;
        };
        // Only fills count: a committed object under the key is one this request chose not
        // to use (a forced miss), and sending it back to look again would loop.
        if stale_writer || !self.store.is_filling(key) {
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
