// PORTICO PATCH (buffered bytes joined to the next write): this file is new.
//
// Licensed under the Apache License, Version 2.0 (the "License"), as the rest of the crate.

//! A write buffer that joins what it holds to a write too large to be buffered beside it.
//!
//! tokio's `BufWriter`, which the L4 stream used, flushes what it holds on its own first
//! when a write does not fit beside it, then writes that write: two system calls. An HTTP
//! response's head is buffered (the stream's buffer is 1,460 bytes), and its first body
//! chunk, larger, came next: every response with a body of more than about 1 KiB left in
//! two calls, and its client woke twice (for the head alone, then for the body). Here the
//! held bytes and the write go out in one vectored write. Otherwise it behaves as tokio's:
//! a write that fits is buffered, one at least as large as the buffer with nothing held is
//! written straight through, and a capacity of 0 writes everything straight through.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How many of a vectored write's slices join the held bytes in one call (PORTICO PATCH
/// (whole hit body in chunks): 65, was 8, so that a range's head, held, leaves with as
/// many chunks as a hit's own vectored write carries: 64).
const JOINED_SLICES: usize = 65;

/// Public for its users' tests (see the module doc).
#[derive(Debug)]
pub struct JoinWriter<W> {
    inner: W,
    buf: Vec<u8>,
    capacity: usize,
}

impl<W: AsyncWrite + Unpin> JoinWriter<W> {
    pub fn with_capacity(capacity: usize, inner: W) -> Self {
        JoinWriter {
            inner,
            buf: Vec::with_capacity(capacity),
            capacity,
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The writer under it; anything held is lost.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The bytes held, not yet written.
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    fn poll_flush_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the held bytes and `then` in one vectored write, as much as the writer takes;
    /// `Ok(n)`: `n` bytes of `then` were taken (the held ones all were). The held bytes a
    /// call takes without reaching `then` are dropped from the buffer, and the next call
    /// goes on from there.
    fn poll_write_joined(
        &mut self,
        cx: &mut Context<'_>,
        then: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut joined = [IoSlice::new(&[]); JOINED_SLICES];
            joined[0] = IoSlice::new(&self.buf);
            let count = then.len().min(JOINED_SLICES - 1);
            joined[1..=count].copy_from_slice(&then[..count]);
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &joined[..=count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n < self.buf.len() {
                self.buf.drain(..n);
                continue;
            }
            let taken = n - self.buf.len();
            self.buf.clear();
            if taken > 0 {
                return Poll::Ready(Ok(taken));
            }
            // The held bytes exactly: the write goes on alone.
            return Pin::new(&mut self.inner).poll_write_vectored(cx, then);
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for JoinWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if me.buf.len() + buf.len() <= me.capacity {
            me.buf.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        if me.buf.is_empty() {
            return Pin::new(&mut me.inner).poll_write(cx, buf);
        }
        me.poll_write_joined(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let total = bufs.iter().fold(0usize, |sum, b| sum.saturating_add(b.len()));
        if me.buf.len().saturating_add(total) <= me.capacity {
            bufs.iter().for_each(|b| me.buf.extend_from_slice(b));
            return Poll::Ready(Ok(total));
        }
        if me.buf.is_empty() {
            return Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        }
        me.poll_write_joined(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_buf(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_buf(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<W: AsyncRead + Unpin> AsyncRead for JoinWriter<W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
