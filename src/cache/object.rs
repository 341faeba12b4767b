//! One cached object: its metadata, kept ready to use, and a body that readers can stream
//! while it is still being filled.
//!
//! The body is a list of `Bytes` chunks. A hit hands out clones of those chunks (a reference
//! count, no copy). A fill appends chunks and announces progress on a `watch` channel, so a
//! reader waiting on an object being filled wakes as each chunk lands. A fill that ends
//! without reaching the end of the body marks itself aborted: its readers then get an error
//! (the client sees a broken transfer) rather than a body that looks complete but is not.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
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

impl StoredMeta {
    pub fn from_meta(meta: &CacheMeta) -> StoredMeta {
        StoredMeta {
            fresh_until: meta.fresh_until(),
            updated: meta.updated(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            variance: meta.variance(),
            header: meta.response_header_copy(),
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

/// A stored or filling object. Shared by the store and every reader through an `Arc`, so
/// purging or evicting it never cuts a reader short.
pub struct Object {
    /// Generation: tells a replaced object from its successor under the same key.
    pub id: u64,
    pub key: CompactCacheKey,
    /// The cache key's text (`host/path?query`), for purges by domain and path.
    pub label: Box<str>,
    pub meta: ArcSwap<StoredMeta>,
    chunks: RwLock<Vec<Bytes>>,
    state: watch::Sender<FillState>,
    /// The bytes the store accounted for this object when it was committed (0 while it
    /// fills). Fixed then, so that what is added is exactly what is later taken away, even
    /// if a revalidation changes the header.
    accounted: usize,
}

impl Object {
    pub fn filling(id: u64, key: CompactCacheKey, label: Box<str>, meta: StoredMeta) -> Object {
        Object {
            id,
            key,
            label,
            meta: ArcSwap::from_pointee(meta),
            chunks: RwLock::new(Vec::new()),
            state: watch::channel(FillState::Filling).0,
            accounted: 0,
        }
    }

    pub fn state(&self) -> FillState {
        *self.state.borrow()
    }

    pub fn body_len(&self) -> usize {
        self.chunks.read().iter().map(Bytes::len).sum()
    }

    /// Memory the object takes now: body, header and key text.
    fn measure(&self) -> usize {
        self.body_len() + self.meta.load().weight() + self.label.len()
    }

    /// The bytes the store accounts for this committed object.
    pub fn weight(&self) -> usize {
        self.accounted
    }

    pub fn append(&self, data: Bytes) {
        if !data.is_empty() {
            self.chunks.write().push(data);
            self.state.send_modify(|_| {});
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

    /// The complete object as it should stay in the store: small bodies in one chunk.
    pub fn committed(&self) -> Object {
        let chunks = self.chunks.read();
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
        let mut committed = Object {
            id: self.id,
            key: self.key.clone(),
            label: self.label.clone(),
            meta: ArcSwap::new(self.meta.load_full()),
            chunks: RwLock::new(body),
            state: watch::channel(FillState::Complete).0,
            accounted: 0,
        };
        committed.accounted = committed.measure();
        committed
    }

    pub fn reader(self: &Arc<Self>) -> BodyReader {
        BodyReader {
            object: self.clone(),
            next_chunk: 0,
            chunk_start: 0,
            from: 0,
            to: None,
            progress: self.state.subscribe(),
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

    fn object(chunks: &[&'static str]) -> Arc<Object> {
        let meta = StoredMeta {
            fresh_until: SystemTime::now(),
            updated: SystemTime::now(),
            stale_while_revalidate_sec: 0,
            stale_if_error_sec: 0,
            variance: None,
            header: ResponseHeader::build(200, None).unwrap(),
        };
        let object = Object::filling(1, CompactCacheKey::default(), "h/p".into(), meta);
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
            "h/p".into(),
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
