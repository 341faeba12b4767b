//! Reading a stored or filling object's body: chunk by chunk, waiting for chunks still
//! to come, or from a byte range of a complete object.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use pingora_error::{Error, ErrorType, Result};
use tokio::sync::watch;

use super::{Body, FillState, Object, OtherBody};

impl Object {
    /// A reader from the start of the body. A reader of a fill tells the fill where it is
    /// (one small allocation); a reader of a complete object costs nothing more.
    pub fn reader(self: &Arc<Self>) -> BodyReader {
        self.reader_of(false)
    }

    /// A reader from the start of the body, for the request that fills it (`of_writer`:
    /// pingora serves a miss from its own fill) or for another.
    pub fn reader_of(self: &Arc<Self>, of_writer: bool) -> BodyReader {
        let filling = self
            .fill()
            .filter(|fill| *fill.state.borrow() == FillState::Filling);
        let cursor = filling.map(|fill| fill.cursors.lock().add(of_writer));
        BodyReader {
            object: self.clone(),
            next_chunk: 0,
            chunk_start: 0,
            from: 0,
            to: None,
            progress: self.fill().map(|fill| fill.state.subscribe()),
            cursor,
            sought: None,
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
    /// The fill's progress (`None` for a committed object: complete).
    progress: Option<watch::Receiver<FillState>>,
    /// Shared with the object while it fills: `next_chunk`, as the fill sees it.
    cursor: Option<Arc<AtomicUsize>>,
    /// The range `seek` asked for, as views of the chunks of a body kept in chunks: lent
    /// whole for one write (`whole_body_chunks`).
    sought: Option<Vec<Bytes>>,
}

impl BodyReader {
    /// Whether it reads a committed object (not one still filling).
    pub fn is_complete(&self) -> bool {
        self.progress.is_none()
    }

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
            let state = self
                .progress
                .as_mut()
                .map_or(FillState::Complete, |p| *p.borrow_and_update());
            let chunk = self.object.chunk(self.next_chunk);
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
            if self.object.dropped_before(self.next_chunk) {
                return Error::e_explain(
                    ErrorType::InternalError,
                    "this response fell too far behind the cache fill it streamed from (not stored: cache.memory_bytes was taken by fills)",
                );
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
                    let changed = match self.progress.as_mut() {
                        Some(progress) => progress.changed().await.is_ok(),
                        None => false,
                    };
                    if !changed {
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

    /// The whole body of a committed object in one chunk (the common case), when nothing
    /// has been read or sought yet: for a hit written in one piece (`HandleHit::whole_body`).
    /// (A packed body or one in one chunk is always a committed one: a fill's is in
    /// `OtherBody::Filling`.)
    pub fn whole_body(&self) -> Option<&[u8]> {
        let untouched = self.next_chunk == 0 && self.from == 0 && self.to.is_none();
        match &self.object.body {
            Body::Packed(_) if untouched => Some(self.object.packed().1),
            Body::Other(other) if untouched => match &**other {
                OtherBody::One(chunk) => Some(chunk),
                _ => None,
            },
            _ => None,
        }
    }

    /// The whole body of a committed object kept in the chunks it came in (over
    /// `COALESCE_UP_TO`), when nothing has been read or sought yet: for a hit written in as
    /// few calls as the socket takes (`HandleHit::whole_body_chunks`), not one per chunk.
    /// After a `seek`, until the first read: the range's views of those chunks.
    pub fn whole_body_chunks(&self) -> Option<&[Bytes]> {
        if self.next_chunk == 0 && self.sought.is_some() {
            return self.sought.as_deref();
        }
        let untouched = self.next_chunk == 0 && self.from == 0 && self.to.is_none();
        match &self.object.body {
            Body::Other(other) if untouched => match &**other {
                OtherBody::Many(chunks) => Some(chunks),
                _ => None,
            },
            _ => None,
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
        self.sought = self.sought_chunks();
        Ok(())
    }

    /// The sought range of a committed body kept in chunks, as views of them.
    fn sought_chunks(&self) -> Option<Vec<Bytes>> {
        let Body::Other(other) = &self.object.body else {
            return None;
        };
        let OtherBody::Many(chunks) = &**other else {
            return None;
        };
        let (from, to) = (self.from, self.to.unwrap_or(usize::MAX));
        let mut start = 0;
        let mut views = Vec::new();
        for chunk in chunks.iter() {
            let end = start + chunk.len();
            if end > from && start < to {
                let first = from.saturating_sub(start);
                views.push(chunk.slice(first..chunk.len().min(to - start)));
            }
            start = end;
        }
        Some(views)
    }
}
