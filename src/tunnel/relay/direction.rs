//! One way through a tunnel: what is read from one side and written to the other, with the
//! bytes the writer could not take yet, the half-close passed on, and the WebSocket frames
//! followed (for Close frames and splicing).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use pingora_core::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frames::FrameTracker;
use super::{splice, unbuffer_writes, READ_AHEAD, READ_CHUNK};
use crate::connection::HeadGuard;

/// One way through the tunnel.
pub(crate) struct Direction {
    /// Bytes read but not yet written on (first, those Pingora read before the handoff);
    /// empty (and unallocated) while the writer keeps up.
    pub(crate) pending: Vec<u8>,
    pub(crate) written: usize,
    pub(crate) needs_flush: bool,
    /// The writer may still hold written bytes in Pingora's small write buffer (until
    /// [`unbuffer_writes`] turns it off).
    pub(crate) write_buffered: bool,
    pub(crate) read_done: bool,
    /// The reading side's end was passed on: the write half towards the other side is shut.
    pub(crate) end_passed_on: bool,
    /// Bytes written to the other side (not merely read).
    pub(crate) bytes: u64,
    /// The WebSocket framing of what is read (`None`: not followed).
    pub(crate) frames: Option<FrameTracker>,
    /// The pipe a large payload goes through (see `splice`), while this direction uses one.
    pub(crate) pipe: Option<splice::Pipe>,
    /// A payload is being spliced: it goes on until the frame's end.
    splicing: bool,
    /// `splice` was refused here: this direction copies, for good.
    splice_off: bool,
}

impl Direction {
    /// How many bytes [`Direction::held`] returns.
    pub(crate) fn held_len(&self) -> usize {
        debug_assert!(
            self.pipe_held() == 0,
            "a paused relay holds nothing in a pipe"
        );
        self.pending.len() - self.written
    }

    /// What was read and not yet written, in order.
    pub(crate) fn held(&self) -> Vec<u8> {
        self.pending[self.written..].to_vec()
    }

    /// Takes into `pending` what `from` has read from its socket and not yet returned:
    /// what the kernel still queues goes over with the socket itself. (A stream whose
    /// buffer cannot be seen is read until it would wait.)
    pub(super) fn take_in(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut Stream,
    ) -> Result<(), &'static str> {
        self.unsplice()
            .map_err(|_| "a pipe could not be read back")?;
        // In order: what waits (Pingora's read first), then what is read now.
        self.pending.drain(..self.written);
        self.written = 0;
        let mut left = HeadGuard::plain_tcp_mut(from).map(|tcp| tcp.buffered_read_len());
        while left != Some(0) {
            let mut storage = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let want = left.map_or(READ_CHUNK, |left| left.min(READ_CHUNK));
            let mut buf = ReadBuf::uninit(&mut storage[..want]);
            match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(_)) => return Err("a read failed"),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Err("it is closing"),
                Poll::Ready(Ok(())) => {
                    let read = buf.filled();
                    if self.pending.len() + read.len() > crate::tunnel::handover::MAX_HELD {
                        return Err("it holds too much");
                    }
                    self.track(read);
                    self.pending.extend_from_slice(read);
                    left = left.map(|left| left - read.len());
                }
            }
        }
        Ok(())
    }

    /// Follows the framing of bytes just read.
    pub(super) fn track(&mut self, data: &[u8]) {
        if let Some(frames) = &mut self.frames {
            frames.advance(data);
        }
    }

    /// What Pingora read before the handoff goes first: into `pending`, once (a handoff
    /// with bytes read ahead is rare, and a list of chunks took 24 bytes of each
    /// direction of every tunnel).
    pub(super) fn new(preread: &[Bytes]) -> Direction {
        Direction {
            pending: preread.concat(),
            written: 0,
            needs_flush: false,
            write_buffered: true,
            read_done: false,
            end_passed_on: false,
            bytes: 0,
            frames: None,
            pipe: None,
            splicing: false,
            splice_off: false,
        }
    }

    pub(super) fn pipe_held(&self) -> usize {
        self.pipe.as_ref().map_or(0, splice::Pipe::held)
    }

    /// When this direction's pipe may next be given back, if it has one.
    pub(super) fn pipe_release_at(&self, now: Instant) -> Option<Instant> {
        self.pipe.as_ref().map(|pipe| pipe.release_at(now))
    }

    pub(super) fn release_quiet_pipe(&mut self, now: Instant) {
        if self.pipe.as_ref().is_some_and(|pipe| pipe.quiet(now)) {
            self.pipe = None;
        }
    }

    /// Takes what the pipe holds back into `pending` (after what waits there, which is
    /// nothing: the pipe is filled only when `pending` is empty) and gives the pipe back.
    pub(super) fn unsplice(&mut self) -> io::Result<()> {
        self.splicing = false;
        match self.pipe.take() {
            Some(mut pipe) => pipe.take_back(&mut self.pending),
            None => Ok(()),
        }
    }

    /// How many payload bytes to splice from here, if any.
    fn splice_len(&self) -> u64 {
        if self.splice_off || self.read_done || !splice::enabled() {
            return 0;
        }
        match self.frames.and_then(|frames| frames.payload_left()) {
            Some(left) if left >= splice::SPLICE_MIN || self.splicing => left,
            _ => 0,
        }
    }

    /// Whether a payload is to be spliced once what waits is written.
    fn may_splice(&self, from: &Stream, to: &Stream) -> bool {
        self.splice_len() > 0 && splice::bare(from).is_some() && splice::bare(to).is_some()
    }

    /// One step of splicing, when this direction is at it: `Ready(Ok(false))` when it is
    /// not (the copying path goes on), `Ready(Ok(true))` after a step, `Pending` while a
    /// socket it waits on is not ready. Called only when nothing is pending or unflushed.
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        from: &Stream,
        to: &Stream,
        moved: &mut bool,
    ) -> Poll<io::Result<bool>> {
        if self.pipe_held() > 0 {
            let (Some(pipe), Some(to)) = (&mut self.pipe, splice::bare(to)) else {
                // The writer took bytes of its own meanwhile: hand the pipe's to it.
                self.unsplice()?;
                return Poll::Ready(Ok(true));
            };
            return match pipe.poll_drain(cx, to) {
                Poll::Ready(Ok(n)) => {
                    self.bytes += n as u64;
                    *moved = true;
                    Poll::Ready(Ok(true))
                }
                Poll::Ready(Err(e)) if splice::unsupported(&e) => {
                    log::debug!("tunnel: splice refused ({e}), copying instead");
                    self.splice_off = true;
                    self.unsplice()?;
                    Poll::Ready(Ok(true))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
        }
        let left = self.splice_len();
        if left == 0 {
            self.splicing = false;
            return Poll::Ready(Ok(false));
        }
        let (Some(from), Some(_)) = (splice::bare(from), splice::bare(to)) else {
            self.splicing = false;
            return Poll::Ready(Ok(false));
        };
        let pipe = match &mut self.pipe {
            Some(pipe) => pipe,
            None => match splice::Pipe::new() {
                Ok(pipe) => self.pipe.insert(pipe),
                Err(e) => {
                    log::debug!("tunnel: no pipe ({e}), copying instead");
                    self.splice_off = true;
                    return Poll::Ready(Ok(false));
                }
            },
        };
        match pipe.poll_fill(cx, from, left) {
            Poll::Ready(Ok(0)) => {
                self.read_done = true;
                self.splicing = false;
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Ok(n)) => {
                if let Some(frames) = &mut self.frames {
                    frames.passed(n as u64);
                }
                self.splicing = true;
                *moved = true;
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(e)) if splice::unsupported(&e) => {
                log::debug!("tunnel: splice refused ({e}), copying instead");
                self.splice_off = true;
                self.splicing = false;
                self.pipe = None;
                Poll::Ready(Ok(false))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Ready(Ok) once the reading side has ended, everything read was written and flushed,
    /// and the write half towards the other side is shut down (the end passed on, as a
    /// half-close); Ready(Err) on an I/O error on either side. While the writer is blocked,
    /// reading goes on until `READ_AHEAD` bytes wait, so both sockets stay busy.
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut Stream,
        to: &mut Stream,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut progress = false;
            let mut write_blocked = false;
            while self.written < self.pending.len() {
                match Pin::new(&mut *to).poll_write(cx, &self.pending[self.written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        self.bytes += n as u64;
                        self.needs_flush = true;
                        *moved = true;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        write_blocked = true;
                        break;
                    }
                }
            }
            if self.written == self.pending.len() {
                // Give the memory back: a quiet tunnel holds no buffer.
                self.pending = Vec::new();
                self.written = 0;
            }
            if !write_blocked && self.needs_flush {
                match Pin::new(&mut *to).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.needs_flush = false;
                        self.write_buffered = self.write_buffered && !unbuffer_writes(to);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => write_blocked = true,
                }
            }
            // Large payloads go socket to socket (see `splice`), once everything before
            // them is written.
            if !write_blocked && !self.needs_flush && self.pending.is_empty() {
                match self.poll_splice(cx, from, to, moved) {
                    Poll::Ready(Ok(true)) => continue,
                    Poll::Ready(Ok(false)) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.read_done
                && self.pending.is_empty()
                && self.pipe_held() == 0
                && !self.needs_flush
            {
                if !self.end_passed_on {
                    match Pin::new(&mut *to).poll_shutdown(cx) {
                        Poll::Pending => return Poll::Pending,
                        // A peer already gone: its own side reports it, if it matters.
                        Poll::Ready(_) => self.end_passed_on = true,
                    }
                }
                return Poll::Ready(Ok(()));
            }
            // A read goes behind what waits (Pingora's read first). With a large payload
            // to come, no read-ahead: once the writer has taken what waits, the payload
            // goes by splice (the pipe is the read-ahead).
            if !self.read_done
                && self.pipe_held() == 0
                && self.pending.len() - self.written < READ_AHEAD
                && (self.pending.is_empty() || !self.may_splice(from, to))
            {
                let mut storage = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
                let mut buf = ReadBuf::uninit(&mut storage);
                match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => {
                        progress = true;
                        let data = buf.filled();
                        if data.is_empty() {
                            self.read_done = true;
                        } else {
                            *moved = true;
                            self.track(data);
                            if self.pending.is_empty() && !write_blocked {
                                self.write_through(cx, to, data)?;
                            } else {
                                // Keep only what is still unwritten: the buffer stays
                                // under READ_AHEAD + READ_CHUNK.
                                self.pending.drain(..self.written);
                                self.written = 0;
                                self.pending.extend_from_slice(data);
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Writes a fresh read on at once; what the writer cannot take now is kept.
    fn write_through(
        &mut self,
        cx: &mut Context<'_>,
        to: &mut Stream,
        data: &[u8],
    ) -> io::Result<()> {
        let mut offset = 0;
        while offset < data.len() {
            match Pin::new(&mut *to).poll_write(cx, &data[offset..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    offset += n;
                    self.bytes += n as u64;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        self.needs_flush |= self.write_buffered;
        self.pending.extend_from_slice(&data[offset..]);
        Ok(())
    }
}
