//! What the store hands pingora-cache for one request: a hit's handler, streaming a
//! complete or filling object, and a fill's (miss) handler, which reserves its bytes and
//! commits the object when the body is whole.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::storage::{HandleHit, HandleMiss, HitHandler, MissFinishType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheEntryId, CacheKey, CacheMeta, Storage};
use pingora_error::{Error, ErrorType, Result};

use super::MemoryStore;
use crate::cache::object::{BodyReader, FillState, Object};

/// A hit on `object`; `of_writer` for the request that fills it (pingora serves a miss from
/// its own fill: `lookup_streaming_write`).
pub(super) fn hit(object: &Arc<Object>, of_writer: bool) -> Result<(CacheMeta, HitHandler)> {
    let meta = object.meta().to_meta(object.clone());
    let counted = object.state() == FillState::Complete;
    Ok((
        meta,
        Box::new(Hit {
            reader: object.reader_of(of_writer),
            counted,
        }),
    ))
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

    fn whole_body(&self) -> Option<&[u8]> {
        self.reader.whole_body()
    }

    fn whole_body_chunks(&self) -> Option<&[Bytes]> {
        self.reader.whole_body_chunks()
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
pub(super) struct Fill {
    pub(super) store: &'static MemoryStore,
    pub(super) tag: [u8; 8],
    pub(super) object: Arc<Object>,
    pub(super) written: usize,
    /// Bytes of the budget this fill holds (overhead, then the body as it arrives).
    pub(super) reserved: usize,
    /// Over the budget: no longer stored, still feeding its readers.
    pub(super) abandoned: bool,
    pub(super) finished: bool,
    /// The body's length, when the origin gave it (`Content-Length`).
    pub(super) expected: Option<usize>,
    /// Its own request's client has gone; it goes on for others (`needed_without_downstream`)
    /// and asks again at each chunk.
    pub(super) client_gone: AtomicBool,
}

/// A fill whose own request's client has gone, and which no other request reads, goes on
/// only if at most this much of its body is left: finishing it stores the object for the
/// next client at little cost, while a larger rest would be read from the origin for
/// nobody (a client that asks for large objects under keys of its own and leaves at once
/// would make the origin send them whole, as a small range once did). nginx and Varnish
/// finish every cacheable fill; Portico finishes the nearly done ones.
pub const FINISH_WITHOUT_CLIENT_BYTES: usize = 1 << 20;

impl Fill {
    /// Whether a fill whose own client has gone is still worth reading from the origin:
    /// another request reads it, or at most [`FINISH_WITHOUT_CLIENT_BYTES`] of it is left
    /// (a body of unknown length is not). Counts and logs a `false`.
    fn needed_by_others(&self) -> bool {
        let left = self.expected.map(|len| len.saturating_sub(self.written));
        let needed = self.object.has_other_readers()
            || left.is_some_and(|left| left <= FINISH_WITHOUT_CLIENT_BYTES);
        if !needed {
            self.store.fills_stopped.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "cache fill of {} stopped at {} bytes: its client has gone, no one else reads it",
                self.object.label(),
                self.written
            );
        }
        needed
    }

    /// Gives up storing this fill: its reservation goes back, its slot forgets it, and from
    /// now on it keeps only what its readers have yet to read.
    fn abandon(&mut self) {
        self.abandoned = true;
        self.store.release(std::mem::take(&mut self.reserved));
        self.store.drop_fill(&self.object);
        self.store.abandoned.fetch_add(1, Ordering::Relaxed);
        log::debug!(
            "cache fill of {} abandoned at {} bytes: cache.memory_bytes is taken by fills in progress",
            self.object.label(),
            self.written
        );
    }
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        if self.client_gone.load(Ordering::Relaxed) && !eof && !self.needed_by_others() {
            // The client's side, as the first time its departure was seen: status 0, and
            // no line in the error log (`proxy::respond`).
            return Err(Error::explain(
                ErrorType::ConnectionClosed,
                "the client has gone and no other request reads the cache fill",
            )
            .into_down());
        }
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
            let cut = self.object.drop_read_chunks();
            self.store.readers_cut.fetch_add(cut, Ordering::Relaxed);
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
            log::debug!("cache fill of {} finished, not stored", self.object.label());
        }
        Ok(MissFinishType::Created(stored.unwrap_or(0)))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.tag)
    }

    fn entry_id(&self) -> Option<CacheEntryId> {
        Some(CacheEntryId::new(self.object.id))
    }

    /// Asked once its own request's client has gone (`needed_by_others`). If not needed,
    /// the request ends and the fill is dropped: stored nowhere, and the origin's
    /// connection closed. If needed, each later chunk asks again (`write_body`), so the
    /// fill stops once its other readers have left too.
    fn needed_without_downstream(&self) -> bool {
        self.client_gone.store(true, Ordering::Relaxed);
        self.needed_by_others()
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
