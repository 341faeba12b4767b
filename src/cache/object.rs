//! One cached object: its metadata, kept ready to use, and a body that readers can stream
//! while it is still being filled.
//!
//! The body is a list of `Bytes` chunks. A hit hands out clones of those chunks (a reference
//! count, no copy). A fill appends chunks and announces progress on a `watch` channel, so a
//! reader waiting on an object being filled wakes as each chunk lands. A fill that ends
//! without reaching the end of the body marks itself aborted: its readers then get an error
//! (the client sees a broken transfer) rather than a body that looks complete but is not.
//!
//! A fill that the store stops keeping (over `cache.memory_bytes`, see `store`) goes on
//! feeding the readers it already has, but drops each chunk once every one of them has
//! read it: it holds no more than what its slowest reader has yet to read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use parking_lot::{Mutex, RwLock};
use pingora_cache::key::{CompactCacheKey, HashBinary};
use pingora_cache::CacheMeta;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use tokio::sync::watch;

/// Bodies up to this size are copied into one chunk when they are committed: one chunk per
/// hit, and no small chunk pins a larger network buffer that the accounting cannot see.
const COALESCE_UP_TO: usize = 1 << 20;

/// Where a fill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillState {
    Filling,
    Complete,
    Aborted,
}

/// The parts of a [`CacheMeta`] the store keeps, so a hit builds its meta without decoding.
pub struct StoredMeta {
    pub fresh_until: SystemTime,
    /// When the object was stored or last revalidated (the reference point for `Age`).
    pub updated: SystemTime,
    pub stale_while_revalidate_sec: u32,
    pub stale_if_error_sec: u32,
    pub variance: Option<HashBinary>,
    pub header: ResponseHeader,
}

/// The header as the store keeps it: every name and value in an allocation of its own, in
/// order and with its case. A parsed header's names and values are views into the buffer
/// the head was read into (4 KiB), and a stored object would keep that buffer for its
/// whole life: a stored 1 KiB object held about 8 KiB.
pub fn compact_header(header: &ResponseHeader) -> ResponseHeader {
    let copy = || -> Result<ResponseHeader> {
        let count = Some(header.headers.len());
        let mut fresh = match header.has_case() {
            true => ResponseHeader::build(header.status, count)?,
            false => ResponseHeader::build_no_case(header.status, count)?,
        };
        fresh.set_version(header.version);
        fresh.set_reason_phrase(header.get_reason_phrase())?;
        let own = |value: &HeaderValue| HeaderValue::from_bytes(value.as_bytes());
        if header.has_case() {
            for (name, value) in header.case_header_iter() {
                let name = Bytes::copy_from_slice(name.as_slice());
                fresh.append_header(name, own(value).unwrap_or_else(|_| value.clone()))?;
            }
        } else {
            for (name, value) in header.headers.iter() {
                fresh.append_header(name.clone(), own(value).unwrap_or_else(|_| value.clone()))?;
            }
        }
        Ok(fresh)
    };
    // Every part was valid in the header it comes from; should a copy still fail, the
    // header is kept as it is.
    copy().unwrap_or_else(|_| header.clone())
}

impl StoredMeta {
    pub fn from_meta(meta: &CacheMeta) -> StoredMeta {
        StoredMeta {
            fresh_until: meta.fresh_until(),
            updated: meta.updated(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            variance: meta.variance(),
            header: compact_header(meta.response_header()),
        }
    }

    pub fn to_meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.updated,
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            self.header.clone(),
        );
        if let Some(variance) = self.variance {
            meta.set_variance(variance);
        }
        meta
    }

    /// Fresh, or stale within its `stale-while-revalidate` window at `now`.
    pub fn usable_without_origin(&self, now: SystemTime) -> bool {
        let window = std::time::Duration::from_secs(u64::from(self.stale_while_revalidate_sec));
        self.fresh_until
            .checked_add(window)
            .is_none_or(|until| now < until)
    }

    /// The same, stale from `now` on (a soft purge): `stale-*` windows count from `now`.
    pub fn stale_from(&self, now: SystemTime) -> StoredMeta {
        StoredMeta {
            fresh_until: self.fresh_until.min(now),
            updated: self.updated,
            stale_while_revalidate_sec: self.stale_while_revalidate_sec,
            stale_if_error_sec: self.stale_if_error_sec,
            variance: self.variance,
            header: self.header.clone(),
        }
    }

    /// Bytes the header costs in memory (an estimate: names, values and per-entry overhead).
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .header
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        headers + 128
    }
}

/// What the store's indexes cost per entry (a tag or the host pointing at an object): the
/// hash-map slot, its id and pointer, and the map's spare capacity. Counted in the object's
/// weight, so `cache.memory_bytes` bounds the indexes too.
pub const INDEX_ENTRY_BYTES: usize = 48;

/// The body: chunks, of which the first `dropped` are gone (a fill no longer stored drops
/// what all its readers have read). Always 0 for a stored object.
#[derive(Default)]
struct Chunks {
    dropped: usize,
    list: Vec<Bytes>,
}

impl Chunks {
    /// Chunk `n`, counting from the start of the body.
    fn get(&self, n: usize) -> Option<&Bytes> {
        self.list.get(n.checked_sub(self.dropped)?)
    }
}

/// A stored or filling object. Shared by the store and every reader through an `Arc`, so
/// purging or evicting it never cuts a reader short.
pub struct Object {
    /// Generation: tells a replaced object from its successor under the same key.
    pub id: u64,
    pub key: CompactCacheKey,
    /// The store's slot for it (the key's combined hash: primary and variance).
    pub hash: HashBinary,
    /// The cache key's text (`host/path?query`), for purges by domain and path.
    pub label: Box<str>,
    /// Its cache tags (`cache::tags`), normalised.
    pub tags: Box<[Box<str>]>,
    pub meta: ArcSwap<StoredMeta>,
    chunks: RwLock<Chunks>,
    state: watch::Sender<FillState>,
    /// While it fills: where each of its readers is (the next chunk each will read), so a
    /// fill the store no longer keeps can drop what they all have read.
    cursors: Mutex<Vec<Weak<AtomicUsize>>>,
    /// The bytes the store accounted for this object when it was committed (0 while it
    /// fills). Fixed then, so that what is added is exactly what is later taken away, even
    /// if a revalidation changes the header.
    accounted: usize,
}

impl Object {
    pub fn filling(
        id: u64,
        key: CompactCacheKey,
        hash: HashBinary,
        label: Box<str>,
        tags: Box<[Box<str>]>,
        meta: StoredMeta,
    ) -> Object {
        Object {
            id,
            key,
            hash,
            label,
            tags,
            meta: ArcSwap::from_pointee(meta),
            chunks: RwLock::new(Chunks::default()),
            state: watch::channel(FillState::Filling).0,
            cursors: Mutex::new(Vec::new()),
            accounted: 0,
        }
    }

    pub fn state(&self) -> FillState {
        *self.state.borrow()
    }

    /// The host part of the label (empty for a request without `Host`).
    pub fn host(&self) -> &str {
        self.label.split('/').next().unwrap_or_default()
    }

    pub fn body_len(&self) -> usize {
        self.chunks.read().list.iter().map(Bytes::len).sum()
    }

    /// What the object costs besides its body: key text, header, tags and its index entries
    /// (one per tag, one for its host). Reserved when its fill starts.
    pub fn overhead(&self) -> usize {
        let tags: usize = self.tags.iter().map(|t| t.len() + 16).sum();
        self.label.len()
            + self.meta.load().weight()
            + tags
            + (self.tags.len() + 1) * INDEX_ENTRY_BYTES
    }

    /// The bytes the store accounts for this committed object.
    pub fn weight(&self) -> usize {
        self.accounted
    }

    pub fn append(&self, data: Bytes) {
        if !data.is_empty() {
            self.chunks.write().list.push(data);
            self.state.send_modify(|_| {});
        }
    }

    /// Drops the chunks every live reader has read (for a fill the store no longer keeps;
    /// with no reader left, all of them).
    pub fn drop_read_chunks(&self) {
        let slowest = {
            let mut cursors = self.cursors.lock();
            cursors.retain(|c| c.strong_count() > 0);
            cursors
                .iter()
                .filter_map(Weak::upgrade)
                .map(|c| c.load(Ordering::Acquire))
                .min()
        };
        let mut chunks = self.chunks.write();
        let end = chunks.dropped + chunks.list.len();
        let upto = slowest.unwrap_or(end).min(end);
        if upto > chunks.dropped {
            let n = upto - chunks.dropped;
            chunks.list.drain(..n);
            chunks.dropped = upto;
        }
    }

    pub fn end(&self, state: FillState) {
        self.state.send_if_modified(|current| {
            let change = *current == FillState::Filling;
            if change {
                *current = state;
            }
            change
        });
    }

    /// The complete object as it should stay in the store (small bodies in one chunk),
    /// accounted as `accounted` bytes.
    pub fn committed(&self, accounted: usize) -> Object {
        let chunks = self.chunks.read();
        debug_assert_eq!(
            chunks.dropped, 0,
            "a fill that dropped chunks is never committed"
        );
        let chunks = &chunks.list;
        let total: usize = chunks.iter().map(Bytes::len).sum();
        let body = if chunks.len() > 1 && total <= COALESCE_UP_TO {
            let mut one = BytesMut::with_capacity(total);
            for chunk in chunks.iter() {
                one.extend_from_slice(chunk);
            }
            vec![one.freeze()]
        } else {
            chunks.clone()
        };
        Object {
            id: self.id,
            key: self.key.clone(),
            hash: self.hash,
            label: self.label.clone(),
            tags: self.tags.clone(),
            meta: ArcSwap::new(self.meta.load_full()),
            chunks: RwLock::new(Chunks {
                dropped: 0,
                list: body,
            }),
            state: watch::channel(FillState::Complete).0,
            cursors: Mutex::new(Vec::new()),
            accounted,
        }
    }

    /// A reader from the start of the body. A reader of a fill tells the fill where it is
    /// (one small allocation); a reader of a complete object costs nothing more.
    pub fn reader(self: &Arc<Self>) -> BodyReader {
        let cursor = (self.state() == FillState::Filling).then(|| {
            let cursor = Arc::new(AtomicUsize::new(0));
            self.cursors.lock().push(Arc::downgrade(&cursor));
            cursor
        });
        BodyReader {
            object: self.clone(),
            next_chunk: 0,
            chunk_start: 0,
            from: 0,
            to: None,
            progress: self.state.subscribe(),
            cursor,
        }
    }
}

/// Reads an object's body chunk by chunk, waiting for chunks still to come. A complete
/// object can also be read from a byte range (`seek`), for `Range` requests on hits.
pub struct BodyReader {
    pub object: Arc<Object>,
    next_chunk: usize,
    /// Offset in the body where `next_chunk` starts.
    chunk_start: usize,
    /// The range being read: bytes before `from` are skipped, reading stops at `to`.
    from: usize,
    to: Option<usize>,
    progress: watch::Receiver<FillState>,
    /// Shared with the object while it fills: `next_chunk`, as the fill sees it.
    cursor: Option<Arc<AtomicUsize>>,
}

impl BodyReader {
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self
                .to
                .is_some_and(|to| self.chunk_start.max(self.from) >= to)
            {
                return Ok(None);
            }
            // Mark the state seen *before* looking at the chunks: a chunk appended after this
            // point changes the state's version, so the wait below cannot miss it.
            let state = *self.progress.borrow_and_update();
            let chunk = self.object.chunks.read().get(self.next_chunk).cloned();
            if let Some(chunk) = chunk {
                let start = self.chunk_start;
                self.next_chunk += 1;
                if let Some(cursor) = &self.cursor {
                    cursor.store(self.next_chunk, Ordering::Release);
                }
                self.chunk_start += chunk.len();
                let from = self.from.saturating_sub(start).min(chunk.len());
                let to = self
                    .to
                    .map_or(chunk.len(), |to| to.saturating_sub(start).min(chunk.len()));
                if from >= to {
                    continue; // entirely before the range
                }
                return Ok(Some(chunk.slice(from..to)));
            }
            match state {
                FillState::Complete => return Ok(None),
                FillState::Aborted => {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "the cache fill this response was streaming from was aborted",
                    )
                }
                FillState::Filling => {
                    if self.progress.changed().await.is_err() {
                        // The object is gone with its sender: treat it as aborted.
                        return Error::e_explain(
                            ErrorType::InternalError,
                            "the cache fill this response was streaming from vanished",
                        );
                    }
                }
            }
        }
    }

    /// Whether `seek` can be used: only on complete objects, whose length is known.
    pub fn can_seek(&self) -> bool {
        self.object.state() == FillState::Complete
    }

    /// Restarts reading at `start`, up to `end` (exclusive) or the end of the body.
    pub fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.object.body_len();
        if start >= len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("range start {start} is past the body ({len} bytes)"),
            );
        }
        self.next_chunk = 0;
        self.chunk_start = 0;
        self.from = start;
        self.to = Some(end.unwrap_or(len).min(len));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::ResponseHeader;

    #[test]
    fn a_compacted_header_keeps_case_order_and_values_but_not_the_read_buffer() {
        // Values that are views into a larger buffer, as a parsed head's are.
        let buffer = Bytes::from(vec![b'v'; 4096]);
        let inside = |p: *const u8| buffer.as_ptr_range().contains(&p);
        let mut header = ResponseHeader::build(203, None).unwrap();
        header.set_reason_phrase(Some("Fine")).unwrap();
        for name in ["X-First", "cache-control", "X-First"] {
            let value = pingora_http::header_value_from_raw(buffer.slice(10..20));
            header.append_header(name.to_string(), value).unwrap();
        }
        assert!(inside(header.headers["x-first"].as_bytes().as_ptr()));

        let stored = compact_header(&header);
        assert_eq!(stored.status, 203);
        assert_eq!(stored.get_reason_phrase(), Some("Fine"));
        let names: Vec<_> = stored
            .case_header_iter()
            .map(|(name, value)| {
                assert!(!inside(value.as_bytes().as_ptr()), "still a view");
                assert_eq!(value.as_bytes(), &buffer[10..20]);
                String::from_utf8(name.as_slice().to_vec()).unwrap()
            })
            .collect();
        assert_eq!(names, ["X-First", "X-First", "cache-control"]);
        let mut wire = Vec::new();
        stored.header_to_h1_wire(&mut wire);
        let mut before = Vec::new();
        header.header_to_h1_wire(&mut before);
        assert_eq!(wire, before);
    }

    fn object(chunks: &[&'static str]) -> Arc<Object> {
        let meta = StoredMeta {
            fresh_until: SystemTime::now(),
            updated: SystemTime::now(),
            stale_while_revalidate_sec: 0,
            stale_if_error_sec: 0,
            variance: None,
            header: ResponseHeader::build(200, None).unwrap(),
        };
        let object = Object::filling(
            1,
            CompactCacheKey::default(),
            [0; 16],
            "h/p".into(),
            Box::default(),
            meta,
        );
        for chunk in chunks {
            object.append(Bytes::from_static(chunk.as_bytes()));
        }
        object.end(FillState::Complete);
        Arc::new(object)
    }

    async fn read_all(reader: &mut BodyReader) -> String {
        let mut out = String::new();
        while let Some(chunk) = reader.next().await.unwrap() {
            out.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn ranges_span_chunks() {
        let object = object(&["abc", "defg", "hij"]);
        let mut reader = object.reader();
        assert_eq!(read_all(&mut reader).await, "abcdefghij");
        for (start, end, expected) in [
            (0, Some(3), "abc"),
            (2, Some(8), "cdefgh"),
            (5, None, "fghij"),
            (9, Some(99), "j"),
        ] {
            reader.seek(start, end).unwrap();
            assert_eq!(read_all(&mut reader).await, expected, "{start}..{end:?}");
        }
        assert!(reader.seek(10, None).is_err());
    }

    #[tokio::test]
    async fn a_reader_waits_for_chunks_and_an_aborted_fill_is_an_error() {
        let meta_object = object(&[]);
        let filling = Arc::new(Object::filling(
            2,
            CompactCacheKey::default(),
            [0; 16],
            "h/p".into(),
            Box::default(),
            StoredMeta::from_meta(&meta_object.meta.load().to_meta()),
        ));
        let mut reader = filling.reader();
        assert!(!reader.can_seek());
        let writer = filling.clone();
        let task = tokio::spawn(async move {
            writer.append(Bytes::from_static(b"part"));
            writer.end(FillState::Aborted);
        });
        assert_eq!(reader.next().await.unwrap().unwrap(), "part");
        assert!(
            reader.next().await.is_err(),
            "an aborted fill must not look complete"
        );
        task.await.unwrap();
    }

    #[tokio::test]
    async fn an_abandoned_fill_keeps_only_what_its_readers_have_not_read() {
        let filling = Arc::new(Object::filling(
            3,
            CompactCacheKey::default(),
            [0; 16],
            "h/p".into(),
            Box::default(),
            StoredMeta::from_meta(&object(&[]).meta.load().to_meta()),
        ));
        let mut fast = filling.reader();
        let mut slow = filling.reader();
        for chunk in ["a", "b", "c"] {
            filling.append(Bytes::from_static(chunk.as_bytes()));
        }
        assert_eq!(fast.next().await.unwrap().unwrap(), "a");
        assert_eq!(fast.next().await.unwrap().unwrap(), "b");
        assert_eq!(slow.next().await.unwrap().unwrap(), "a");
        filling.drop_read_chunks();
        assert_eq!(filling.chunks.read().dropped, 1, "only what both have read");
        drop(slow);
        filling.drop_read_chunks();
        assert_eq!(filling.chunks.read().dropped, 2);
        filling.append(Bytes::from_static(b"d"));
        filling.end(FillState::Complete);
        assert_eq!(read_all(&mut fast).await, "cd");
    }

    /// Found by the `range` fuzz target (a vendored pingora-proxy patch): a suffix range on
    /// an empty stored body became the empty range 0..0, whose `Content-Range` end
    /// (`end - 1`) underflowed; `bytes=-0` was an empty 206 too.
    #[test]
    fn ranges_on_an_empty_body_or_of_zero_bytes_are_never_an_empty_206() {
        use pingora_proxy::{range_header_filter, RangeType};
        let answer = |length: usize, range: &str| {
            let mut request = pingora_http::RequestHeader::build("GET", b"/", None).unwrap();
            request.insert_header("range", range).unwrap();
            let mut response = ResponseHeader::build(200, None).unwrap();
            response.insert_header("content-length", length).unwrap();
            let range = range_header_filter(&request, &mut response, None);
            (range, response.status.as_u16())
        };
        assert_eq!(answer(0, "bytes=-5"), (RangeType::None, 200));
        assert_eq!(answer(0, "bytes=0-"), (RangeType::None, 200));
        assert_eq!(answer(10, "bytes=-0"), (RangeType::Invalid, 416));
        assert_eq!(answer(10, "bytes=-3"), (RangeType::Single(7..10), 206));
    }
}
