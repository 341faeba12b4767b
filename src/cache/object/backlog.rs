//! What a fill the store gave up on (`store`: over `cache.memory_bytes`) keeps for its
//! readers, outside the store's count: the chunks they have yet to read, within a bound.
//!
//! Pingora serves a miss from its own fill, through a reader of its own, and reads the
//! origin about as fast as that reader's client takes the body (its loop writes to the
//! client between reads). Requests collapsed onto the fill read it at their own pace: a
//! client that stops reading would make the fill keep everything after it, up to
//! `cache.max_object_bytes` for each such client. So another reader may fall at most
//! [`READER_BACKLOG_BYTES`] behind the filling request's reader (behind the newest chunk
//! when that one is gone); further behind, its chunks are dropped and it is cut off: its
//! response ends short, as when an origin fails mid-body. Only fills the store no longer
//! keeps do this; a stored fill keeps every chunk, counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use super::Object;

/// How far a reader of a fill the store no longer keeps may fall behind the request that
/// fills it before it is cut off. A client that keeps up is a chunk or two behind (64 KiB
/// each); the kernel's socket buffers, ahead of it, hold megabytes more.
pub const READER_BACKLOG_BYTES: usize = 1 << 20;

/// Where a fill's readers are: the next chunk each will read.
#[derive(Default)]
pub(super) struct Cursors {
    /// The filling request's own reader (`Weak::new()` until it has one).
    writer: Weak<AtomicUsize>,
    /// Every other reader's: requests collapsed onto the fill.
    others: Vec<Weak<AtomicUsize>>,
}

impl Cursors {
    /// A new reader's cursor, at the start of the body. (Pingora looks its own fill up
    /// once; a second reader for the filling request would count as another's.)
    pub(super) fn add(&mut self, of_writer: bool) -> Arc<AtomicUsize> {
        let cursor = Arc::new(AtomicUsize::new(0));
        if of_writer && self.writer.strong_count() == 0 {
            self.writer = Arc::downgrade(&cursor);
        } else {
            self.others.push(Arc::downgrade(&cursor));
        }
        cursor
    }
}

fn position(cursor: &Weak<AtomicUsize>) -> Option<usize> {
    cursor.upgrade().map(|c| c.load(Ordering::Acquire))
}

impl Object {
    /// For a fill the store no longer keeps: drops the chunks every reader has read, and
    /// those more than [`READER_BACKLOG_BYTES`] behind the filling request's reader, cutting
    /// off the other readers that still needed them. Returns how many it cut off.
    pub fn drop_read_chunks(&self) -> usize {
        let Some(fill) = self.fill() else {
            return 0;
        };
        let mut cursors = fill.cursors.lock();
        let mut chunks = fill.chunks.write();
        let end = chunks.dropped + chunks.list.len();
        let writer = position(&cursors.writer).map(|at| at.min(end));
        // The oldest chunk another reader may still need: within the backlog of `lead`.
        let lead = writer.unwrap_or(end);
        let mut floor = lead;
        let mut behind = 0;
        while let Some(chunk) = floor.checked_sub(1).and_then(|n| chunks.get(n)) {
            behind += chunk.len();
            if behind > READER_BACKLOG_BYTES {
                break;
            }
            floor -= 1;
        }
        let others = cursors.others.iter().filter_map(position).min();
        let upto = match (writer, others) {
            (Some(writer), Some(others)) => writer.min(others.max(floor)),
            (Some(writer), None) => writer,
            (None, Some(others)) => others.max(floor),
            (None, None) => end,
        }
        .min(end);
        // Readers behind `upto` lose the chunks they need: cut off, and no longer followed.
        let mut cut = 0;
        cursors.others.retain(|c| match position(c) {
            Some(at) if at < upto => {
                cut += 1;
                false
            }
            Some(_) => true,
            None => false,
        });
        if upto > chunks.dropped {
            let n = upto - chunks.dropped;
            chunks.list.drain(..n);
            chunks.dropped = upto;
        }
        cut
    }

    /// Whether a request other than the one that fills it reads this fill (a request
    /// collapsed onto it); `false` for an object not filling.
    pub fn has_other_readers(&self) -> bool {
        self.fill().is_some_and(|fill| {
            let cursors = fill.cursors.lock();
            cursors.others.iter().any(|c| c.strong_count() > 0)
        })
    }

    /// Whether chunk `n` of a fill is gone: its reader was cut off (`drop_read_chunks`).
    pub(super) fn dropped_before(&self, n: usize) -> bool {
        self.fill()
            .is_some_and(|fill| fill.chunks.read().dropped > n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::object::{BodyReader, FillState};
    use bytes::Bytes;

    /// A fill with nothing in it yet.
    fn filling() -> Arc<Object> {
        let meta = crate::cache::object::tests::object(1, &[]).meta().clone();
        Arc::new(Object::filling(2, [0; 16], [0; 16], "h/p", meta))
    }

    /// Appends `n` chunks of 256 KiB, as a fill the store gave up on does: dropping what it
    /// can after each. Returns how many readers that cut off.
    fn append_dropping(fill: &Object, n: usize) -> usize {
        (0..n)
            .map(|_| {
                fill.append(Bytes::from(vec![7u8; 256 << 10]));
                fill.drop_read_chunks()
            })
            .sum()
    }

    async fn read_chunks(reader: &mut BodyReader, n: usize) {
        for _ in 0..n {
            reader.next().await.unwrap().expect("a chunk");
        }
    }

    fn held(fill: &Object) -> usize {
        fill.fill().unwrap().chunks.read().list.len()
    }

    #[tokio::test]
    async fn a_reader_more_than_the_backlog_behind_the_filling_request_is_cut_off() {
        let fill = filling();
        let mut writer = fill.reader_of(true);
        let mut keeping_up = fill.reader();
        let mut stalled = fill.reader();
        assert_eq!(append_dropping(&fill, 2), 0);
        read_chunks(&mut stalled, 1).await;
        // The writer's client and one other read on; `stalled` reads no more.
        let mut cut = 0;
        for _ in 0..12 {
            cut += append_dropping(&fill, 1);
            read_chunks(&mut writer, 1).await;
            read_chunks(&mut keeping_up, 1).await;
        }
        assert_eq!(cut, 1, "only the stalled reader is cut off");
        // What is held: no more than the backlog behind the writer's reader (4 chunks).
        assert!(
            held(&fill) <= READER_BACKLOG_BYTES / (256 << 10),
            "{}",
            held(&fill)
        );
        let error = stalled.next().await.expect_err("cut off");
        assert!(error.to_string().contains("fell too far behind"), "{error}");
        fill.end(FillState::Complete);
        for reader in [&mut writer, &mut keeping_up] {
            read_chunks(reader, 2).await;
            assert!(
                reader.next().await.unwrap().is_none(),
                "the rest, then the end"
            );
        }
    }

    #[tokio::test]
    async fn the_filling_requests_own_reader_is_never_cut_off() {
        let fill = filling();
        let mut writer = fill.reader_of(true);
        let mut other = fill.reader();
        // The writer's client is slow: everything after it is kept, whatever its size.
        assert_eq!(append_dropping(&fill, 16), 0);
        assert_eq!(held(&fill), 16);
        // Another reader ahead of it is not cut off either.
        read_chunks(&mut other, 16).await;
        read_chunks(&mut writer, 10).await;
        assert_eq!(append_dropping(&fill, 1), 0);
        assert_eq!(held(&fill), 7, "from the writer's reader on");
        read_chunks(&mut other, 1).await;
        read_chunks(&mut writer, 7).await;
        assert_eq!(append_dropping(&fill, 1), 0);
        assert_eq!(held(&fill), 1, "what both have read is gone");
    }

    #[tokio::test]
    async fn without_the_filling_requests_reader_the_backlog_counts_from_the_newest_chunk() {
        let fill = filling();
        let mut first = fill.reader();
        let gone = fill.reader();
        drop(gone);
        assert_eq!(append_dropping(&fill, 4), 0, "within the backlog");
        assert_eq!(append_dropping(&fill, 1), 1, "one chunk more: cut off");
        assert_eq!(held(&fill), 4);
        assert!(first.next().await.is_err());
        // With no reader left, nothing is kept.
        drop(first);
        fill.drop_read_chunks();
        assert_eq!(held(&fill), 0);
    }
}
