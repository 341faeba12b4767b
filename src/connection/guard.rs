//! The guard under every HTTP/1 client connection ([`HeadGuard`]).
//!
//! Pingora's downstream read timeout restarts on every read, so a client sending one byte
//! every few seconds holds a connection for ever (slowloris), and a keep-alive connection
//! waits for its next request without limit. [`super::EdgeApp`] wraps every HTTP/1 connection in
//! a [`HeadGuard`] before Pingora sees it, under `portico run` (Pingora's listeners) and
//! in-process ([`crate::server::serve`]) alike. The guard reads through to the socket and
//! keeps one timer per connection:
//!
//! - *head*: the whole request head must arrive by the deadline: from the accept for the
//!   first request, from the first byte of each later one (in practice from the first read
//!   after it that waits: a head that comes whole never reads the clock);
//! - *idle*: between a response and the next request's first byte, `keepalive_timeout`;
//!   an idle connection frees its stream's buffers after [`RELEASE_AFTER`];
//! - *body*: the head was parsed and announced a body: the waits for its bytes may total
//!   `request_body_timeout`, plus a second per `request_body_min_rate` bytes received
//!   (Apache's `mod_reqtimeout` rule). Only waits count: a body that keeps coming is never
//!   cut, however long it takes, and time the edge spends not reading (an origin slow to
//!   take the body) is not charged to the client;
//! - *done*: the head, and any body, are in; reads have no deadline from here (Pingora's
//!   read timeout and the tunnel's own timers apply).
//!
//! Writes have one deadline of their own, `send_timeout` (nginx's `send_timeout`): a write
//! that waits that long, the client taking none of it in the second half of the wait,
//! fails, and the connection closes; one that saw bytes taken waits another
//! `send_timeout`. "Taken" is asked of TCP (the bytes the client's TCP has acknowledged,
//! `TCP_INFO`) at half-time and whenever the timer fires: Linux wakes a writer only once
//! half its send buffer is free, megabytes that a slow reader takes minutes to free, so a
//! wait the kernel has not ended may well have seen progress. (TLS connections, where
//! HTTP/2's writes are Pingora's and not the guard's, also ask the kernel to wake their
//! writes sooner: [`watch_send_progress`].)
//! Pingora's downstream writes have no deadline, so a client that stopped reading held its
//! connection, and a cache hit's body, for ever. A tunnel lifts it
//! ([`HeadGuard::lift_send_timeout`]): its own idle timer covers a stalled side.
//!
//! The proxy moves the guard between phases through [`HeadGuard::of`] (head parsed:
//! `early_request_filter`; body in: `request_body_filter`; response finished: `logging`).
//! A head that outruns its deadline or `max_request_head` ends the read with an
//! [`io::Error`] carrying a [`HeadLimit`], which the proxy turns into a `408` or `431` (see
//! `request_head_error`); a body that outruns its budget, a `408` (`fail_to_proxy`).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::http::v2::server::BodyBudget;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetTimingDigest, Peek, Shutdown, Stream, TimingDigest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::model::ClientLimits;

/// Why the edge stopped reading a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLimit {
    /// The head did not arrive within `request_head_timeout`.
    Timeout(Duration),
    /// The head grew past `max_request_head` bytes.
    TooLarge(usize),
    /// The body's waits used up `request_body_timeout` and what its bytes had earned: the
    /// total waited, and the rate.
    SlowBody(Duration, u32),
}

impl fmt::Display for HeadLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadLimit::Timeout(d) => write!(f, "the request head did not arrive within {d:?}"),
            HeadLimit::TooLarge(n) => write!(f, "the request head is larger than {n} bytes"),
            HeadLimit::SlowBody(waited, rate) => write!(
                f,
                "the request body came too slowly: the edge waited {waited:?} for it in all \
                 (limits.request_body_timeout, and 1 s more per {rate} bytes received)"
            ),
        }
    }
}

impl std::error::Error for HeadLimit {}

/// How long a kept-alive connection idles before the guard frees its stream's buffers (the
/// 1,460-byte write buffer; under TLS also the 64 KiB read buffer and rustls' 4 KiB record
/// buffer; the next request's bytes and the response's first write allocate them again).
/// Not at once: a busy connection's next request usually comes within this, and would pay
/// an allocation and a free for nothing.
pub const RELEASE_AFTER: Duration = Duration::from_secs(1);

const HEAD: u8 = 0;
const IDLE: u8 = 1;
const DONE: u8 = 2;
const BODY: u8 = 3;

/// A client connection with the head deadline and size limit (see the module docs).
pub struct HeadGuard {
    inner: Stream,
    limits: GuardLimits,
    /// The phase the proxy asked for ([`HEAD`], [`IDLE`], [`DONE`]), and how many times it
    /// asked: the reader starts a phase's clock once per request.
    phase: AtomicU8,
    armed: AtomicU32,
    /// What the reader has acted on: the `armed` count it saw, its own phase, the head's
    /// (or body's) bytes so far, when the current wait's deadline falls, and the one timer
    /// (no allocation per request). The deadline is set, and the timer moved to it, only when
    /// a read would wait (`None` until then): a head that arrives whole never reads the
    /// clock nor touches the timer wheel. The wait is counted from that first wait, not
    /// from the first byte or the response's end, which it follows within one poll of
    /// the connection's task (the read that returned them, and the one that waits). An
    /// idle wait stops on the way once, [`RELEASE_AFTER`] into it, to free the stream's
    /// buffers (`released`: done for this wait).
    seen: u32,
    reading: u8,
    released: bool,
    /// Saturates at 4 GiB (a body's count: its allowance stops growing there).
    head_bytes: u32,
    deadline: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    /// Whether a write is waiting for the client ([`NOT_WAITING`], [`FIRST_HALF`],
    /// [`WATCHING`]), with `send_timer` running for it. The timer is made the first time a
    /// write waits: most connections never need one.
    send_wait: u8,
    send_timer: Option<Pin<Box<Sleep>>>,
    /// While [`WATCHING`]: the bytes the client's TCP had acknowledged (the low 32 bits of
    /// `tcpi_bytes_acked`) when `send_timer` was last set. A wait is cut only if none have
    /// been since.
    acked: u32,
    /// `send_timeout` in milliseconds (at most an hour: `config::limits`); 0 once the
    /// connection is a tunnel. Small, so that the guard stays in jemalloc's 128-byte class.
    send_timeout_ms: u32,
    /// Milliseconds the current body's waits have taken so far.
    body_waited_ms: u32,
    /// Its place under the connection caps, held as long as the connection (a tunnel's
    /// too: the relay owns the guard then).
    _admitted: super::Admitted,
}

/// The limits a guard applies (every connection has a guard: not all of `ClientLimits`).
#[derive(Clone, Copy)]
struct GuardLimits {
    /// The timeouts in milliseconds (each at most an hour: `config::limits`): the guard
    /// stays small.
    request_head_timeout_ms: u32,
    keepalive_timeout_ms: u32,
    /// `max_request_head` (at most Pingora's 1 MiB: `config::limits`).
    max_request_head: u32,
    /// `request_body_timeout`.
    body_timeout_ms: u32,
    body_min_rate: u32,
}

impl GuardLimits {
    fn request_head_timeout(&self) -> Duration {
        Duration::from_millis(self.request_head_timeout_ms.into())
    }

    fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms.into())
    }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

impl HeadGuard {
    pub fn new(inner: Stream, limits: ClientLimits, admitted: super::Admitted) -> HeadGuard {
        HeadGuard {
            inner,
            limits: GuardLimits {
                request_head_timeout_ms: millis(limits.request_head_timeout),
                keepalive_timeout_ms: millis(limits.keepalive_timeout),
                max_request_head: u32::try_from(limits.max_request_head).unwrap_or(u32::MAX),
                body_timeout_ms: millis(limits.request_body_timeout),
                body_min_rate: limits.request_body_min_rate,
            },
            phase: AtomicU8::new(HEAD),
            armed: AtomicU32::new(0),
            seen: 0,
            reading: HEAD,
            released: false,
            head_bytes: 0,
            // The first request's head counts from the accept, as nginx and HAProxy count.
            deadline: Some(Instant::now() + limits.request_head_timeout),
            timer: Box::pin(tokio::time::sleep(limits.request_head_timeout)),
            send_wait: NOT_WAITING,
            send_timer: None,
            acked: 0,
            send_timeout_ms: millis(limits.send_timeout).max(1),
            body_waited_ms: 0,
            _admitted: admitted,
        }
    }

    /// The connection `stream` (a client's, under its guard) became a tunnel: from now on
    /// its writes wait as long as the tunnel's own timers allow.
    pub fn lift_send_timeout(stream: &mut Stream) {
        if let Some(guard) = stream.as_any_mut().downcast_mut::<HeadGuard>() {
            guard.send_timeout_ms = 0;
        }
    }

    /// The guard under a Pingora stream, if the edge put one there.
    pub fn of(stream: Option<&Stream>) -> Option<&HeadGuard> {
        stream?.as_any().downcast_ref::<HeadGuard>()
    }

    /// The plain TCP stream of a client or origin connection, if it is one (a client's
    /// sits under the guard): a tunnel handover needs its socket.
    pub fn plain_tcp(stream: &Stream) -> Option<&L4Stream> {
        let stream = HeadGuard::of(Some(stream)).map_or(stream, HeadGuard::inner);
        stream.as_any().downcast_ref()
    }

    /// [`HeadGuard::plain_tcp`], to change its settings (the relay's write-through).
    pub fn plain_tcp_mut(stream: &mut Stream) -> Option<&mut L4Stream> {
        let stream = if stream.as_any().is::<HeadGuard>() {
            stream.as_any_mut().downcast_mut::<HeadGuard>()?.inner_mut()
        } else {
            stream
        };
        stream.as_any_mut().downcast_mut()
    }

    /// The connection under the guard (a tunnel handover needs its socket).
    pub fn inner(&self) -> &Stream {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut Stream {
        &mut self.inner
    }

    /// The head was parsed: a body it announced (`body`) has its waits counted (see the
    /// module docs) until [`HeadGuard::body_done`]; without one, no deadline for the rest
    /// of this request.
    pub fn head_done(&self, body: bool) {
        self.phase
            .store(if body { BODY } else { DONE }, Ordering::Release);
    }

    /// The request's body is all in: no deadline for the rest of this request.
    pub fn body_done(&self) {
        self.phase.store(DONE, Ordering::Release);
    }

    /// The response is finished: the next request gets `keepalive_timeout` to start.
    pub fn await_next_request(&self) {
        self.phase.store(IDLE, Ordering::Release);
        self.armed.fetch_add(1, Ordering::AcqRel);
    }

    fn limit_error(limit: HeadLimit) -> io::Error {
        let kind = match limit {
            HeadLimit::Timeout(_) => io::ErrorKind::TimedOut,
            HeadLimit::TooLarge(_) => io::ErrorKind::InvalidData,
            HeadLimit::SlowBody(..) => io::ErrorKind::TimedOut,
        };
        io::Error::new(kind, limit)
    }
}

impl AsyncRead for HeadGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.phase.load(Ordering::Acquire);
        if phase == DONE {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if phase == BODY {
            return this.poll_read_body(cx, buf);
        }
        this.start_new_wait();
        // Pingora asks for more only while the head is incomplete: past the limit, it never
        // will be within it.
        let max_request_head = this.limits.max_request_head;
        if this.head_bytes >= max_request_head {
            return Poll::Ready(Err(Self::limit_error(HeadLimit::TooLarge(
                max_request_head as usize,
            ))));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 && this.reading == IDLE {
                    this.reading = HEAD;
                    this.deadline = None;
                }
                this.head_bytes = this.head_bytes.saturating_add(count(n));
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = *this.deadline.get_or_insert_with(|| {
                    Instant::now()
                        + match this.reading {
                            IDLE => this.limits.keepalive_timeout(),
                            _ => this.limits.request_head_timeout(),
                        }
                });
                let wake = this.next_wake(deadline);
                if this.timer.deadline() != wake {
                    this.timer.as_mut().reset(wake);
                }
                this.poll_deadline(cx, deadline)
            }
        }
    }
}

impl HeadGuard {
    /// A read of the request body: only its waits count, against what the body has earned
    /// so far ([`HeadGuard::body_allowance_ms`]).
    fn poll_read_body(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // (A request pipelined behind the last one may reach its body with no read of its
        // head: the response's end still starts a new count.)
        self.start_new_wait();
        if self.reading != BODY {
            // The body's first read: its count starts here (`head_bytes` counts its bytes).
            self.reading = BODY;
            self.head_bytes = 0;
            self.body_waited_ms = 0;
            self.deadline = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if let Some(deadline) = self.deadline.take() {
                    // A wait ended: charge it (the allowance it had, less what was left).
                    let left = deadline.saturating_duration_since(Instant::now());
                    let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
                    let waited = self.body_allowance_ms().saturating_sub(left_ms);
                    self.body_waited_ms = u32::try_from(waited).unwrap_or(u32::MAX);
                }
                let n = buf.filled().len() - before;
                self.head_bytes = self.head_bytes.saturating_add(count(n));
                Poll::Ready(result)
            }
            Poll::Pending => {
                let deadline = match self.deadline {
                    Some(deadline) => deadline,
                    None => {
                        let left = self
                            .body_allowance_ms()
                            .saturating_sub(self.body_waited_ms.into());
                        *self
                            .deadline
                            .insert(Instant::now() + Duration::from_millis(left))
                    }
                };
                if self.timer.deadline() != deadline {
                    self.timer.as_mut().reset(deadline);
                }
                std::task::ready!(self.timer.as_mut().poll(cx));
                let waited = Duration::from_millis(self.body_allowance_ms());
                Poll::Ready(Err(Self::limit_error(HeadLimit::SlowBody(
                    waited,
                    self.limits.body_min_rate,
                ))))
            }
        }
    }

    /// Milliseconds of waiting the body has in all: `request_body_timeout`, and a second
    /// per `request_body_min_rate` bytes received.
    fn body_allowance_ms(&self) -> u64 {
        let budget = BodyBudget {
            timeout: Duration::from_millis(self.limits.body_timeout_ms.into()),
            min_rate: self.limits.body_min_rate,
        };
        let received = self.head_bytes as usize;
        u64::try_from(budget.allowance(received).as_millis()).unwrap_or(u64::MAX)
    }

    /// A response was finished since the last read: the next request's wait starts now (its
    /// deadline is set if a read waits: see `deadline`).
    fn start_new_wait(&mut self) {
        let armed = self.armed.load(Ordering::Acquire);
        if armed != self.seen {
            self.seen = armed;
            self.reading = IDLE;
            self.released = false;
            self.head_bytes = 0;
            self.deadline = None;
        }
    }

    /// When the timer should fire: the current wait's deadline, or before it, in an idle
    /// wait, the point where the stream's buffers are freed.
    fn next_wake(&self, deadline: Instant) -> Instant {
        let keepalive = self.limits.keepalive_timeout();
        if self.reading != IDLE || self.released || keepalive <= RELEASE_AFTER {
            return deadline;
        }
        deadline - keepalive + RELEASE_AFTER
    }

    /// A read would wait: the error once the current wait's `deadline` has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<io::Result<()>> {
        // Idle: Pingora closes quietly when nothing of a request came. Head: the error says
        // which limit.
        let limit = if self.reading == IDLE {
            self.limits.keepalive_timeout()
        } else {
            self.limits.request_head_timeout()
        };
        loop {
            std::task::ready!(self.timer.as_mut().poll(cx));
            if self.timer.deadline() == deadline {
                return Poll::Ready(Err(Self::limit_error(HeadLimit::Timeout(limit))));
            }
            // Idle for RELEASE_AFTER: the stream's buffers go until a request comes (under
            // TLS, rustls' record buffer and the TCP stream's).
            self.released = true;
            self.inner.release_idle_buffers();
            self.timer.as_mut().reset(deadline);
        }
    }
}

/// `send_wait`: no write waits.
const NOT_WAITING: u8 = 0;
/// `send_wait`: a write waits, for less than half of `send_timeout` so far.
const FIRST_HALF: u8 = 1;
/// `send_wait`: a write waits, and `acked` holds what the client's TCP had taken.
const WATCHING: u8 = 2;

/// A read's byte count for `head_bytes` (saturating).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The bytes the client's TCP has acknowledged on `stream`'s socket, in their low 32 bits
/// (what changes is all that counts); 0 when unknown (not TCP), which counts as none.
fn bytes_acked(stream: &Stream) -> u32 {
    pingora_core::protocols::l4::ext::get_tcp_info(stream.id())
        .map_or(0, |info| info.tcpi_bytes_acked as u32)
}

/// How much of a TLS client's unsent queue must go for a waiting write to be woken. An
/// HTTP/2 connection's writes are Pingora's (with `send_timeout` per stream), not the
/// guard's, so TLS connections (where HTTP/2 is offered) ask the kernel instead: a client
/// that reads at least this much per `send_timeout` is not cut (2.2 KB/s at the default
/// 60 s).
pub const TLS_SEND_PROGRESS_BYTES: u32 = 128 << 10;

/// Sets [`TLS_SEND_PROGRESS_BYTES`] (`TCP_NOTSENT_LOWAT`) on a TLS listener's accepted
/// connection, before its handshake (whose outcome, HTTP/2 or not, is not known yet; best
/// effort: a socket that refuses keeps the kernel's wake-ups). Plain-TCP connections do
/// without: the guard asks TCP for progress when its timer fires, and the option cost
/// 1 MiB responses a fifth of their rate (more, smaller writes).
pub fn watch_send_progress(stream: &Stream) {
    let tcp = stream
        .as_any()
        .downcast_ref::<L4Stream>()
        .and_then(L4Stream::bare_tcp);
    if let Some(tcp) = tcp {
        let _ = socket2::SockRef::from(tcp).set_tcp_notsent_lowat(TLS_SEND_PROGRESS_BYTES);
    }
}

impl HeadGuard {
    /// Polls `write` (a write, flush or shutdown of the stream) under `send_timeout`: a
    /// wait that outlasts it, with nothing taken by the client, fails with `TimedOut`.
    fn poll_send<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut Stream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let pending = match write(Pin::new(&mut self.inner), cx) {
            Poll::Ready(done) => {
                self.send_wait = NOT_WAITING;
                return Poll::Ready(done);
            }
            Poll::Pending => Poll::Pending,
        };
        if self.send_timeout_ms == 0 {
            return pending;
        }
        let limit = Duration::from_millis(self.send_timeout_ms.into());
        let timer = self
            .send_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if self.send_wait == NOT_WAITING {
            // No look at TCP yet: most waits end long before half of `send_timeout`, and a
            // write that waits is common (a large body to a fast client).
            self.send_wait = FIRST_HALF;
            timer.as_mut().reset(Instant::now() + limit / 2);
        }
        loop {
            std::task::ready!(timer.as_mut().poll(cx));
            // Linux wakes a waiting writer only once half its send buffer is free: megabytes,
            // minutes apart for a slow reader. So the client's TCP is asked whether it took
            // any of what waits: from half-time on, and again after each `send_timeout`
            // in which it did.
            let acked = bytes_acked(&self.inner);
            let next = match self.send_wait {
                FIRST_HALF => limit / 2,
                _ if acked != self.acked => limit,
                _ => break,
            };
            self.send_wait = WATCHING;
            self.acked = acked;
            timer.as_mut().reset(Instant::now() + next);
        }
        self.send_wait = NOT_WAITING;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {limit:?} (limits.send_timeout)"),
        )))
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_send(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_send(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_send(cx, |inner, cx| inner.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_send(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadGuard {
    /// As the streams under it shut down (a flush, then the write side's close), but
    /// through the guard: a client that reads nothing cannot hold the close either.
    async fn shutdown(&mut self) {
        if let Err(e) = tokio::io::AsyncWriteExt::shutdown(self).await {
            log::debug!("client connection shutdown: {e}");
        }
    }
}

impl GetTimingDigest for HeadGuard {
    /// None: Pingora asks for it once per request, for the request's digest (a `Vec` made
    /// and dropped each time), and nothing in the edge reads a client connection's timing.
    /// Origin connections are not guarded: theirs is reported as Pingora reports it.
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

super::delegate_connection_facts!(HeadGuard);

#[async_trait]
impl Peek for HeadGuard {
    // Peeking would read past the guard's count; Pingora only peeks for h2c, which the
    // edge does not offer on plain HTTP.
}

impl fmt::Debug for HeadGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadGuard")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle keep-alive connection holds one guard: it stays in jemalloc's 128-byte
    /// class (bench scenario 7 counts the bytes per idle connection; 112 until the guard
    /// held the connection's place under the caps).
    #[test]
    fn a_guard_fits_a_128_byte_allocation() {
        let size = std::mem::size_of::<HeadGuard>();
        assert!(size <= 128, "{size}");
    }
}
