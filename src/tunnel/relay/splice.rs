//! Large WebSocket payloads moved with `splice(2)`: socket → pipe → socket, without copying
//! them through user space.
//!
//! The relay reads as usual, and its frame tracker says how much of the current frame's
//! payload is still to come. When that is at least [`SPLICE_MIN`] bytes (and both legs are
//! plain TCP sockets with nothing buffered in Pingora's stream), exactly those bytes are
//! spliced, in pieces: each piece from the source socket into an empty pipe, then from the
//! pipe to the destination socket until the pipe is empty, and the tracker is told they
//! passed as they enter the pipe. So the tracker always stands where the source socket
//! stands, as with reads, and the bytes in the pipe are bytes the relay holds, like its
//! `pending` buffer: nothing is read past them until they are written.
//!
//! The pipe (two descriptors) is made the first time a direction splices and given back
//! when that direction has spliced nothing for [`PIPE_KEEP`], when the relay pauses (what
//! it holds is read back into `pending` first: a handover then sees ordinary held bytes),
//! and when the tunnel ends. Readiness comes from tokio (`poll_*_ready`, and `try_io`
//! clears it on `EAGAIN`). The pipe is filled only when empty, so an `EAGAIN` filling it
//! is the source socket's, and it is drained only when it holds bytes, so an `EAGAIN`
//! draining it is the destination's. A kernel or socket that refuses `splice` (`EINVAL`,
//! `ENOSYS`, `EOPNOTSUPP`) turns it off for that direction of the tunnel, which goes on
//! copying.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use pingora_core::protocols::Stream;
use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::connection::HeadGuard;

/// A frame's payload is spliced when at least this many of its bytes are still to come
/// after a read. Smaller messages keep the copying path (one read, one write each).
pub(crate) const SPLICE_MIN: u64 = 16 * 1024;
/// The most one splice asks for (the pipe's own size, 64 KiB by default, bounds it first).
const SPLICE_MAX: usize = 1 << 20;
/// How long a direction keeps its pipe after its last splice.
pub(crate) const PIPE_KEEP: Duration = Duration::from_secs(2);

/// Whether tunnels splice at all (`server.tunnel_splice`).
pub(crate) static ENABLED: AtomicBool = AtomicBool::new(false);

pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Bytes written by `splice` since the process started, every tunnel together.
pub(crate) static SPLICED: AtomicU64 = AtomicU64::new(0);

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// A pipe between the two sockets of one direction, and what it holds.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe: taken from the source socket, not yet written to the other.
    held: usize,
    last_used: Instant,
}

/// The plain TCP socket under a client or origin connection, while Pingora's stream holds
/// no byte of its own: only then may bytes go to or from the socket behind its back.
pub(crate) fn bare(stream: &Stream) -> Option<&TcpStream> {
    HeadGuard::plain_tcp(stream)?.bare_tcp()
}

/// An error that says `splice` cannot be used here at all (rather than that a peer failed).
pub(crate) fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(|code| {
        [
            rustix::io::Errno::INVAL,
            rustix::io::Errno::NOSYS,
            rustix::io::Errno::OPNOTSUPP,
        ]
        .iter()
        .any(|errno| errno.raw_os_error() == code)
    })
}

impl Pipe {
    pub(crate) fn new() -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Pipe {
            read,
            write,
            held: 0,
            last_used: Instant::now(),
        })
    }

    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// When a pipe unused since now may be given back.
    pub(crate) fn release_at(&self, now: Instant) -> Instant {
        let at = self.last_used + PIPE_KEEP;
        // A pipe still holding bytes (its writer is blocked) is kept: look again later.
        if at <= now {
            now + PIPE_KEEP
        } else {
            at
        }
    }

    /// Whether the pipe may be given back now: empty, and unused for [`PIPE_KEEP`].
    pub(crate) fn quiet(&self, now: Instant) -> bool {
        self.held == 0 && now >= self.last_used + PIPE_KEEP
    }

    /// Moves up to `len` bytes from `from` into the pipe, which must be empty. `Ok(0)`: the
    /// socket's reading side has ended.
    pub(crate) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        len: u64,
    ) -> Poll<io::Result<usize>> {
        debug_assert_eq!(self.held, 0, "a pipe is filled only when empty");
        let len = usize::try_from(len).unwrap_or(SPLICE_MAX).min(SPLICE_MAX);
        loop {
            ready!(from.poll_read_ready(cx))?;
            let write = &self.write;
            match from.try_io(Interest::READABLE, || {
                Ok(splice(from, None, write, None, len, FLAGS)?)
            }) {
                Ok(n) => {
                    self.held += n;
                    self.last_used = Instant::now();
                    return Poll::Ready(Ok(n));
                }
                // The socket had nothing after all: its readiness is cleared, wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Moves what the pipe holds to `to`, as much as it takes now; the count written.
    pub(crate) fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        to: &TcpStream,
    ) -> Poll<io::Result<usize>> {
        debug_assert!(self.held > 0, "a pipe is drained only when it holds bytes");
        loop {
            ready!(to.poll_write_ready(cx))?;
            let read = &self.read;
            let held = self.held;
            match to.try_io(Interest::WRITABLE, || {
                Ok(splice(read, None, to, None, held, FLAGS)?)
            }) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.held -= n;
                    SPLICED.fetch_add(n as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Reads what the pipe holds back out, appending it to `into` (in order).
    pub(crate) fn take_back(&mut self, into: &mut Vec<u8>) -> io::Result<()> {
        while self.held > 0 {
            let start = into.len();
            into.resize(start + self.held, 0);
            let result = rustix::io::read(&self.read, &mut into[start..]);
            match result {
                Ok(0) => {
                    into.truncate(start);
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(n) => {
                    into.truncate(start + n);
                    self.held -= n;
                }
                Err(rustix::io::Errno::INTR) => into.truncate(start),
                Err(e) => {
                    into.truncate(start);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}
