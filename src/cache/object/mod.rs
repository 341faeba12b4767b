//! One cached object: its metadata, kept ready to use, and a body that readers can stream
//! while it is still being filled.
//!
//! A fill's body is a list of `Bytes` chunks: it appends chunks and announces progress on
//! a `watch` channel, so a reader waiting on an object being filled wakes as each chunk
//! lands. A committed object never changes (the store commits a new object built from the
//! fill), so its body needs no lock. Most bodies are small, and are packed after their
//! header's text in one exact-size allocation the object owns (`Body::Packed`); a plain
//! hit copies it into its head's buffer, other reads get a view that holds the object.
//! Larger bodies keep their `Bytes` chunks, which a hit hands out as clones (a reference
//! count, no copy). A fill that ends
//! without reaching the end of the body marks itself aborted: its readers then get an error
//! (the client sees a broken transfer) rather than a body that looks complete but is not.
//!
//! A fill that the store stops keeping (over `cache.memory_bytes`, see `store`) goes on
//! feeding the readers it already has, but drops each chunk once they have read it, and
//! cuts off a reader that falls too far behind the request that fills it (`backlog`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use pingora_cache::key::HashBinary;
use pingora_cache::meta::ResponseHeaderSource;
use pingora_http::ResponseHeader;
use tokio::sync::watch;

pub use super::header::HeaderView;
pub use super::meta::StoredMeta;

mod backlog;
mod reader;

pub use backlog::READER_BACKLOG_BYTES;

pub use reader::BodyReader;

/// Bodies up to this size are copied into one chunk when they are committed: one chunk per
/// hit, and no small chunk pins a larger network buffer that the accounting cannot see.
const COALESCE_UP_TO: usize = 1 << 20;

/// Bodies up to this size are packed: kept in one allocation of their exact size, with no
/// reference count of their own (`Body::Packed`), their header's own text beside the key's
/// (`Object::own`), so none of the 32-byte counts a shared `Bytes` adds. Larger bodies keep
/// the chunks they came in, whose reference counts let a hit hand them out without a copy;
/// a packed body goes out as a view of its object (`Object::chunk`), or copied straight
/// from the object into a plain hit's head buffer (`whole_body`).
const WITH_TEXT_UP_TO: usize = 4 << 10;

/// Where a fill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillState {
    Filling,
    Complete,
    Aborted,
}

/// What the store's tables cost per entry (a tag or the host pointing at an object, the
/// object in its shard): a pointer, a control byte and the table's spare capacity, with room
/// to spare. Counted in the object's weight, so `cache.memory_bytes` bounds the indexes too.
pub const INDEX_ENTRY_BYTES: usize = 48;

/// What an object costs besides its key, header, tags and index entries: the `Object` in
/// its `Arc` (with the two counts), and the reference count of a body it does not pack
/// (jemalloc's 32-byte class; counted for every object, as a bound). Counted in its weight:
/// over a million 1 KiB objects this is a fifth of what they take, too much to leave
/// outside the bound.
pub const OBJECT_BYTES: usize =
    std::mem::size_of::<Object>() + 2 * std::mem::size_of::<usize>() + 32;

/// A body: inline when it is packed, the most common case (16 bytes, no lock); anything
/// else behind one thin pointer.
enum Body {
    /// A committed body up to `WITH_TEXT_UP_TO`, whose header's own text the object keeps
    /// (`Object::own`). Empty: no body.
    Packed(Box<[u8]>),
    Other(Box<OtherBody>),
}

/// Sized by its committed forms (40 bytes, jemalloc's 48 class): a fill, larger and
/// short-lived, is boxed on its own, so a stored body's box is not sized by it (80 bytes).
enum OtherBody {
    /// A committed body over `WITH_TEXT_UP_TO` in one chunk.
    One(Bytes),
    /// A committed body over `COALESCE_UP_TO`, in the chunks it came in.
    Many(Box<[Bytes]>),
    Filling(Box<Fill>),
}

/// A fill's body so far and its progress, as its readers wait on it.
struct Fill {
    chunks: RwLock<Chunks>,
    state: watch::Sender<FillState>,
    /// Where each reader is (the next chunk each will read), so a fill the store no longer
    /// keeps can drop what they have read (`backlog`).
    cursors: Mutex<backlog::Cursors>,
}

/// A fill's chunks, of which the first `dropped` are gone (a fill no longer stored drops
/// what all its readers have read; never one that is committed).
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
///
/// In declared order (`repr(C)`), so that the four fields `prefetch` asks through are less
/// than a line apart: see there.
#[repr(C)]
pub struct Object {
    /// The cache key's text (`host/path?query`, for purges by domain and path: `label`),
    /// then, once its body is packed, the text of the header it was committed with, which
    /// that header reads here (`StoredHeader::pack`, `Object::header`). One exact-size
    /// allocation for both: the text is alone in the body's, whose size is often exactly
    /// one of the allocator's classes (1 KiB).
    own: Box<[u8]>,
    /// Replaced whole by a revalidation or a soft purge; held only while it is copied. Its
    /// lock is taken last, inside the store's index and shard locks.
    meta: RwLock<StoredMeta>,
    /// Generation: tells a replaced object from its successor under the same key.
    pub id: u64,
    /// The store's slot for it (the key's combined hash: primary and variance; a variant
    /// keeps its primary in its meta, see `primary`).
    pub hash: HashBinary,
    body: Body,
    /// The length of the label at the start of `own`.
    label_len: u32,
    /// Used since the eviction clock last passed it (`cache::clock`).
    pub(super) referenced: AtomicBool,
    /// In the store as a committed object (`cache::clock`).
    pub(super) resident: AtomicBool,
}

impl Object {
    pub fn filling(
        id: u64,
        primary: HashBinary,
        hash: HashBinary,
        label: &str,
        mut meta: StoredMeta,
    ) -> Object {
        if primary != hash {
            meta.set_primary(primary);
        }
        // A label is a URL's text: it fits in u32 (longer ones, impossible, go unlabelled).
        let label = label
            .get(..label.len().min(u32::MAX as usize))
            .unwrap_or_default();
        Object {
            id,
            hash,
            own: Box::from(label.as_bytes()),
            label_len: label.len() as u32,
            meta: RwLock::new(meta),
            body: Body::Other(Box::new(OtherBody::Filling(Box::new(Fill {
                chunks: RwLock::default(),
                state: watch::channel(FillState::Filling).0,
                cursors: Mutex::default(),
            })))),
            referenced: AtomicBool::new(false),
            resident: AtomicBool::new(false),
        }
    }

    /// The cache key's text (`host/path?query`).
    pub fn label(&self) -> &str {
        let label = &self.own[..self.label_len as usize];
        // Made from a `str` (`filling`) and copied whole since.
        std::str::from_utf8(label).unwrap_or_default()
    }

    /// The cache key's primary hash (its URL): the store's shard and variant index.
    pub fn primary(&self) -> HashBinary {
        self.meta.read().primary().unwrap_or(self.hash)
    }

    pub fn meta(&self) -> RwLockReadGuard<'_, StoredMeta> {
        self.meta.read()
    }

    /// Makes it stale from `now` (a soft purge: `stale-*` windows count from `now`).
    pub fn make_stale(&self, now: SystemTime) {
        let mut meta = self.meta.write();
        *meta = meta.stale_from(now);
    }

    pub fn state(&self) -> FillState {
        self.fill()
            .map_or(FillState::Complete, |fill| *fill.state.borrow())
    }

    /// Its fill, while it is one (not a committed object).
    fn fill(&self) -> Option<&Fill> {
        match &self.body {
            Body::Other(other) => match &**other {
                OtherBody::Filling(fill) => Some(fill),
                OtherBody::One(_) | OtherBody::Many(_) => None,
            },
            Body::Packed(_) => None,
        }
    }

    /// Calls `f` with the body's chunks, unless it is packed (of a fill: those not
    /// dropped).
    fn with_chunks<R>(&self, f: impl FnOnce(&[Bytes]) -> R) -> Option<R> {
        Some(match &self.body {
            Body::Packed(_) => return None,
            Body::Other(other) => match &**other {
                OtherBody::One(chunk) => f(std::slice::from_ref(chunk)),
                OtherBody::Many(chunks) => f(chunks),
                OtherBody::Filling(fill) => f(&fill.chunks.read().list),
            },
        })
    }

    /// A packed body's header text and the body (empty when the body is not packed).
    #[inline]
    fn packed(&self) -> (&[u8], &[u8]) {
        match &self.body {
            Body::Packed(body) => (
                self.own.get(self.label_len as usize..).unwrap_or_default(),
                body,
            ),
            _ => (&[], &[]),
        }
    }

    /// Asks the CPU to load every line of the object at once: a lookup calls it as its
    /// table hands the object over, before it compares the key. A hit reads all of them,
    /// and each read waited for the one before it (the key; the meta's lock, whose atomic
    /// waits for the key's compare; the body's pointer after it), so over a large cache
    /// each line was a miss of its own (scenario 8 in `bench/notes.md`, session 41). A
    /// field's address names its line: the first field's line holds the `Arc`'s counts, and
    /// the layout keeps these four less than a line apart, so they reach every line at
    /// either of the 160-byte class's alignments (test
    /// `the_prefetched_fields_reach_every_line_of_an_object`). A hint: nothing is read.
    #[inline]
    pub fn prefetch(&self) {
        prefetch_index::prefetch_index(std::slice::from_ref(&self.own), 0);
        prefetch_index::prefetch_index(std::slice::from_ref(&self.meta), 0);
        prefetch_index::prefetch_index(std::slice::from_ref(&self.id), 0);
        prefetch_index::prefetch_index(std::slice::from_ref(&self.body), 0);
    }

    /// Asks the CPU to start loading what a hit of a packed object reads: the header's own
    /// text and the body, up to 1 KiB of it (a larger body's rest streams in behind). Over
    /// a large cache those lines are in no cache; loaded while the hit's meta and filters
    /// run, they are there when the head is copied out, instead of that copy waiting on
    /// them (scenario 8 in `bench/notes.md`, session 32). A hint: nothing is read. (The
    /// shared lines are read by many hits: in cache already.)
    #[inline]
    pub fn prefetch_head(&self) {
        /// Bytes of the body asked for: 16 lines, within what a core keeps in flight (a
        /// 256-byte lead left the copy of a 1 KiB body waiting on its later lines:
        /// `bench/notes.md`, session 41); the hardware's own prefetch follows a longer copy.
        const BODY_LEAD: usize = 1024;
        if let Body::Packed(body) = &self.body {
            for part in [&self.own[..], &body[..body.len().min(BODY_LEAD)]] {
                for at in (0..part.len()).step_by(64) {
                    prefetch_index::prefetch_index(part, at);
                }
                // The last line, when the allocation does not start on a line's start.
                prefetch_index::prefetch_index(part, part.len().saturating_sub(1));
            }
        }
    }

    /// Chunk `n`, counting from the start of the body. A packed body is one chunk, a view
    /// that holds the object (one small allocation: only range reads and streamed hits
    /// take it, a plain hit copies `whole_body`).
    fn chunk(self: &Arc<Self>, n: usize) -> Option<Bytes> {
        match (&self.body, self.fill()) {
            (Body::Packed(_), _) => (n == 0 && !self.packed().1.is_empty())
                .then(|| Bytes::from_owner(PackedBody(self.clone()))),
            (_, Some(fill)) => fill.chunks.read().get(n).cloned(),
            (_, None) => self.with_chunks(|chunks| chunks.get(n).cloned()).flatten(),
        }
    }

    /// Its header with its text, wherever the text is kept: `meta` is its own (`meta()`).
    #[inline]
    pub fn header<'a>(&'a self, meta: &'a StoredMeta) -> HeaderView<'a> {
        meta.header.with_text(self.packed().0)
    }

    /// The host part of the label (empty for a request without `Host`).
    pub fn host(&self) -> &str {
        self.label().split('/').next().unwrap_or_default()
    }

    pub fn body_len(&self) -> usize {
        self.with_chunks(|chunks| chunks.iter().map(Bytes::len).sum())
            .unwrap_or_else(|| self.packed().1.len())
    }

    /// What the object costs besides its body: its struct, key text, header, tags and its
    /// index entries (one per tag, one for its host). Reserved when its fill starts.
    pub fn overhead(&self) -> usize {
        self.overhead_with(&self.meta.read())
    }

    fn overhead_with(&self, meta: &StoredMeta) -> usize {
        let tags: usize = meta.tags().iter().map(|t| t.len() + 16).sum();
        OBJECT_BYTES
            + self.own.len()
            + meta.weight()
            + tags
            + (meta.tags().len() + 1) * INDEX_ENTRY_BYTES
    }

    /// The bytes the store accounts for this object: its overhead and its body. Computed
    /// from what it holds, so the same until its meta is replaced (`reaccount`, which says
    /// by how much): what the store adds at commit is what it takes away when the object
    /// leaves. A header text a packed body was committed with stays in `own` as long as
    /// the object, so it is counted as long, even once a revalidation replaced it.
    pub fn weight(&self) -> usize {
        self.overhead() + self.body_len()
    }

    /// Replaces a committed object's meta (a revalidation's `304`); returns its weight's
    /// change, for the store to add or take away. The store calls it under the object's
    /// shard lock, so two revalidations never count from the same weight.
    pub fn reaccount(&self, mut meta: StoredMeta) -> isize {
        let mut current = self.meta.write();
        // The same key: a variant stays one of the same URL.
        if let Some(primary) = current.primary() {
            meta.set_primary(primary);
        }
        let before = self.overhead_with(&current);
        let after = self.overhead_with(&meta);
        *current = meta;
        after as isize - before as isize
    }

    /// Adds `data` to a fill's body (a committed object never changes: nothing).
    pub fn append(&self, data: Bytes) {
        if let Some(fill) = self.fill().filter(|_| !data.is_empty()) {
            fill.chunks.write().list.push(data);
            fill.state.send_modify(|_| {});
        }
    }

    pub fn end(&self, state: FillState) {
        let Some(fill) = self.fill() else {
            return;
        };
        fill.state.send_if_modified(|current| {
            let change = *current == FillState::Filling;
            if change {
                *current = state;
            }
            change
        });
    }

    /// The complete object as it should stay in the store: a body up to `COALESCE_UP_TO`
    /// in one chunk, up to `WITH_TEXT_UP_TO` packed, its header's own text beside the
    /// label. Its weight is its fill's less what held the header's own text, if packed.
    pub fn committed(&self) -> Object {
        debug_assert!(
            self.fill()
                .is_none_or(|fill| fill.chunks.read().dropped == 0),
            "a fill that dropped chunks is never committed"
        );
        let mut meta = self.meta.read().clone();
        let label = &self.own[..self.label_len as usize];
        let mut own = None;
        let body = self.with_chunks(|chunks| {
            let total: usize = chunks.iter().map(Bytes::len).sum();
            // A fill's header has its own text (only a committed object packs one).
            if total <= WITH_TEXT_UP_TO && !meta.header.is_packed() {
                let text = meta.header.pack().unwrap_or_default();
                own = Some([label, &text[..]].concat().into_boxed_slice());
                return Body::Packed(concat(chunks, total).into_boxed_slice());
            }
            match chunks {
                _ if chunks.len() > 1 && total <= COALESCE_UP_TO => {
                    let one = Bytes::from(concat(chunks, total));
                    Body::Other(Box::new(OtherBody::One(one)))
                }
                [one] => Body::Other(Box::new(OtherBody::One(one.clone()))),
                _ => Body::Other(Box::new(OtherBody::Many(Box::from(chunks)))),
            }
        });
        // Only a fill is committed, and a fill's body is in chunks.
        let body = body.unwrap_or_else(|| Body::Packed(Box::default()));
        Object {
            id: self.id,
            hash: self.hash,
            own: own.unwrap_or_else(|| Box::from(label)),
            label_len: self.label_len,
            meta: RwLock::new(meta),
            body,
            referenced: AtomicBool::new(false),
            resident: AtomicBool::new(false),
        }
    }
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("id", &self.id)
            .field("label", &self.label())
            .finish_non_exhaustive()
    }
}

/// A hit's meta builds its header from the object's stored text when first asked for
/// (`StoredMeta::to_meta`). A revalidation or soft purge in between gives the header it
/// stored, as a hit's head written from the text would.
impl ResponseHeaderSource for Object {
    fn build_response_header(&self) -> ResponseHeader {
        let meta = self.meta();
        self.header(&meta).to_header().unwrap_or_else(|err| {
            // Unreachable: every stored name and value was a valid field when stored.
            log::error!(
                "cache object {}: stored header unreadable: {err}",
                self.label()
            );
            let (mut parts, ()) = http::Response::new(()).into_parts();
            parts.status = StatusCode::INTERNAL_SERVER_ERROR;
            ResponseHeader::from(parts)
        })
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// `prefix`, then `chunks` (`total` bytes), in one allocation of that size.
fn concat(chunks: &[Bytes], total: usize) -> Vec<u8> {
    let mut one = Vec::with_capacity(total);
    for chunk in chunks {
        one.extend_from_slice(chunk);
    }
    one
}

/// A packed body as a `Bytes` (`Object::chunk`): the view holds its object.
struct PackedBody(Arc<Object>);

impl AsRef<[u8]> for PackedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.packed().1
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cache::header::{StoredHeader, OWN_PARTS_BYTES};
    use pingora_http::ResponseHeader;

    /// A complete object `id` with a body in `chunks`.
    pub(crate) fn object(id: u64, chunks: &[&'static str]) -> Arc<Object> {
        let header = StoredHeader::from_header(&ResponseHeader::build(200, None).unwrap());
        let meta = StoredMeta::plain(header, SystemTime::now());
        let object = Object::filling(id, [0; 16], [0; 16], "h/p", meta);
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
        let object = object(1, &["abc", "defg", "hij"]);
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
        let meta_object = object(1, &[]);
        let filling = Arc::new(Object::filling(
            2,
            [0; 16],
            [0; 16],
            "h/p",
            meta_object.meta().clone(),
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
    async fn a_committed_small_body_is_packed_and_its_header_text_kept_beside_the_label() {
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.append_header("ETag", "\"v1\"").unwrap();
        let mut meta = object(1, &[]).meta().clone();
        meta.header = StoredHeader::from_header(&header);
        let text_len = meta.header.view().own_text().len();
        let big: &'static str = "x".repeat(WITH_TEXT_UP_TO).leak();
        for (chunks, packed) in [(["ab", "cd"], true), ([big, "y"], false)] {
            let filling = Object::filling(1, [0; 16], [0; 16], "h/p", meta.clone());
            for chunk in chunks {
                filling.append(Bytes::from_static(chunk.as_bytes()));
            }
            filling.end(FillState::Complete);
            let overhead = filling.overhead();
            let reserved = overhead + chunks.concat().len();
            let committed = Arc::new(filling.committed());
            {
                let stored = committed.meta();
                assert_eq!(stored.header.is_packed(), packed);
                let text = committed.header(&stored).own_text();
                assert_eq!(text, b"ETag: \"v1\"\r\n");
                assert_eq!(
                    text.as_ptr_range().end == committed.own.as_ptr_range().end,
                    packed,
                    "a packed body's header text follows the label"
                );
                assert_eq!(committed.label(), "h/p");
                let back = committed.header(&stored).to_header().unwrap();
                assert_eq!(back.headers["etag"], "\"v1\"");
            }
            let mut reader = committed.reader();
            let body = reader.next().await.unwrap().unwrap();
            assert_eq!(body, chunks.concat());
            assert_eq!(reader.next().await.unwrap(), None);
            assert_eq!(committed.body_len(), chunks.concat().len());
            // Accounted as it was while it filled, less what held the text it packed:
            // its text counted once, wherever it is.
            let holder = if packed { OWN_PARTS_BYTES } else { 0 };
            assert_eq!(committed.overhead(), overhead - holder);
            assert_eq!(committed.weight(), reserved - holder);
            // A revalidation's header has its own text; the packed one is still counted.
            let before = committed.overhead();
            let delta = committed.reaccount(meta.clone());
            let kept = if packed { text_len } else { 0 };
            assert_eq!(delta, (kept + holder) as isize);
            assert_eq!(committed.overhead(), before + holder + kept);
            assert_eq!(committed.weight(), reserved + kept);
            let stored = committed.meta();
            assert!(!stored.header.is_packed());
            let back = committed.header(&stored).to_header().unwrap();
            assert_eq!(back.headers["etag"], "\"v1\"");
        }
    }

    #[tokio::test]
    async fn a_packed_body_reads_in_ranges_and_outlives_its_store() {
        let committed = Arc::new(object(1, &["abc", "def"]).committed());
        assert!(committed.meta().header.is_packed());
        let mut reader = committed.reader();
        reader.seek(2, Some(5)).unwrap();
        let part = reader.next().await.unwrap().unwrap();
        drop(reader);
        drop(committed);
        assert_eq!(part, "cde", "the view holds the object");
        let empty = Arc::new(object(2, &[]).committed());
        assert_eq!(empty.reader().next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_committed_body_is_whole_until_read_or_sought() {
        let committed = Arc::new(object(1, &["ab", "cd"]).committed());
        assert_eq!(committed.reader().whole_body(), Some(&b"abcd"[..]));
        let mut read = committed.reader();
        assert_eq!(read.next().await.unwrap().as_deref(), Some(&b"abcd"[..]));
        assert_eq!(read.whole_body(), None, "read already");
        let mut sought = committed.reader();
        sought.seek(1, None).unwrap();
        assert_eq!(sought.whole_body(), None, "a range");
        let empty = Arc::new(object(2, &[]).committed());
        assert_eq!(empty.reader().whole_body(), Some(&b""[..]));
        // A fill, even a complete one, is read chunk by chunk.
        assert_eq!(object(3, &["ab"]).reader().whole_body(), None);
    }

    /// A body kept in chunks (over 1 MiB) is lent whole, or after a seek the range's views
    /// of them, until the first read: the same bytes a read in chunks gives.
    #[tokio::test]
    async fn a_body_kept_in_chunks_lends_them_whole_or_the_range_sought() {
        const N: usize = 400_000;
        let chunks: Vec<&'static str> = ["a", "b", "c"]
            .iter()
            .map(|letter| &*letter.repeat(N).leak())
            .collect();
        let committed = Arc::new(object(1, &chunks).committed());
        let whole = committed.reader();
        let lent: Vec<&[u8]> = whole
            .whole_body_chunks()
            .unwrap()
            .iter()
            .map(|c| &c[..])
            .collect();
        assert_eq!(lent.concat(), chunks.concat().as_bytes());
        assert_eq!(whole.whole_body(), None, "not in one piece");
        let ranges = [
            (N - 10, Some(2 * N + 10)),
            (5, Some(10)),
            (3 * N - 1, None),
            (0, None),
        ];
        for (from, to) in ranges {
            let mut sought = committed.reader();
            sought.seek(from, to).unwrap();
            let lent = sought.whole_body_chunks().unwrap().concat();
            assert_eq!(
                lent,
                read_all(&mut sought).await.as_bytes(),
                "{from}-{to:?}"
            );
            assert_eq!(lent.len(), to.unwrap_or(3 * N) - from);
            assert_eq!(sought.whole_body_chunks(), None, "read already");
        }
        // A body in one piece lends no chunks, whole or sought.
        let small = Arc::new(object(2, &["ab", "cd"]).committed());
        let mut sought = small.reader();
        assert_eq!(sought.whole_body_chunks(), None);
        sought.seek(1, None).unwrap();
        assert_eq!(sought.whole_body_chunks(), None);
    }

    /// A million stored objects each pay their `Object` in its `Arc` (two counts): kept
    /// within jemalloc's 160-byte class (the next is 192).
    #[test]
    fn a_stored_object_fits_the_160_byte_class() {
        let counts = 2 * std::mem::size_of::<usize>();
        assert!(
            std::mem::size_of::<Object>() + counts <= 160,
            "Object {} StoredMeta {} StoredHeader {}",
            std::mem::size_of::<Object>(),
            std::mem::size_of::<StoredMeta>(),
            std::mem::size_of::<crate::cache::header::StoredHeader>()
        );
    }

    /// `Object::prefetch` names a line through each of four fields. An object's `Arc` is
    /// in jemalloc's 160-byte class, so it starts on a line or half-way through one: at
    /// either start, every line it spans holds one of the four.
    #[test]
    fn the_prefetched_fields_reach_every_line_of_an_object() {
        use std::mem::offset_of;
        let counts = 2 * std::mem::size_of::<usize>();
        let size = counts + std::mem::size_of::<Object>();
        let asked = [
            offset_of!(Object, own),
            offset_of!(Object, meta),
            offset_of!(Object, id),
            offset_of!(Object, body),
        ];
        for start in [0, 32] {
            for line in start / 64..=(start + size - 1) / 64 {
                assert!(
                    asked.iter().any(|at| (start + counts + at) / 64 == line),
                    "starting at {start}, line {line} is not asked for ({asked:?})"
                );
            }
        }
    }

    /// A stored body over 4 KiB keeps its chunk (or chunks) in a box: jemalloc's 48-byte
    /// class, not the 80 bytes a fill takes.
    #[test]
    fn a_stored_large_body_box_fits_the_48_byte_class() {
        assert!(
            std::mem::size_of::<OtherBody>() <= 48,
            "OtherBody {} Fill {}",
            std::mem::size_of::<OtherBody>(),
            std::mem::size_of::<Fill>()
        );
    }

    /// A variant keeps its URL's key (its primary) in its meta: through its commit and
    /// a revalidation's new meta, which comes without it.
    #[test]
    fn a_variant_keeps_its_primary_through_commit_and_revalidation() {
        let meta = object(1, &[]).meta().clone();
        let variant = Object::filling(2, [1; 16], [2; 16], "h/p", meta.clone());
        variant.end(FillState::Complete);
        let committed = variant.committed();
        assert_eq!(committed.primary(), [1; 16]);
        committed.reaccount(meta.clone());
        assert_eq!(committed.primary(), [1; 16]);
        assert_eq!(
            committed.meta().variance(),
            None,
            "the variance is the meta's own"
        );
        let plain = Object::filling(3, [4; 16], [4; 16], "h/p", meta);
        assert_eq!(plain.primary(), [4; 16]);
        assert!(
            plain.meta().primary().is_none(),
            "nothing kept for most objects"
        );
    }

    #[tokio::test]
    async fn an_abandoned_fill_keeps_only_what_its_readers_have_not_read() {
        let filling = Arc::new(Object::filling(
            3,
            [0; 16],
            [0; 16],
            "h/p",
            object(1, &[]).meta().clone(),
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
        let dropped = || filling.fill().unwrap().chunks.read().dropped;
        assert_eq!(dropped(), 1, "only what both have read");
        drop(slow);
        filling.drop_read_chunks();
        assert_eq!(dropped(), 2);
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
