//! Moves an upgraded connection's bytes both ways, untouched, until both sides have closed
//! or a timer fires.
//!
//! A side that ends (EOF) is a half-close: once what it sent is written, the relay shuts
//! down the write half towards the other side and keeps relaying the other way until that
//! side ends too, or for at most the tunnel's linger time.
//!
//! The relay owns no buffer while the tunnel is quiet: each read lands in a buffer on the
//! stack of the poll that made it and goes straight to the other side. Only bytes the
//! other side cannot take yet are copied to the heap, and reading that way stops until
//! they are written (backpressure). An idle tunnel therefore costs its two sockets and
//! this small task, not Pingora's request state and body buffers.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use pingora_core::protocols::Stream;
use pingora_proxy::UpgradedTunnel;
use tokio::io::AsyncWriteExt;

use super::ClosedBy;
use crate::config::model::TunnelLimits;
use crate::connection::HeadGuard;
use frames::FrameTracker;

mod close;
mod direction;
pub mod frames;
mod splice;

pub(crate) use direction::Direction;

/// The most one read takes from a side (a buffer on the stack of the poll).
const READ_CHUNK: usize = 16 * 1024;
/// How many bytes may wait for a blocked writer before reading that way pauses. With
/// READ_CHUNK, it bounds what a tunnel holds for a peer that stops reading: under 32 KiB
/// each way. (Larger values, up to 256 KiB, measured no faster.)
const READ_AHEAD: usize = 16 * 1024;

/// How long closing both connections may take once the tunnel has ended.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes every tunnel of this process has moved with `splice(2)` so far (see `splice`).
pub fn spliced_bytes() -> u64 {
    splice::SPLICED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Turns splicing on or off for tunnels from now on (`server.tunnel_splice`; off unless
/// set). A tunnel in the middle of a splice finishes that payload.
pub fn set_splice(on: bool) {
    splice::ENABLED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOutcome {
    pub closed_by: ClosedBy,
    pub bytes_client_to_origin: u64,
    pub bytes_origin_to_client: u64,
    pub duration: Duration,
}

/// Runs the tunnel to its end and closes both connections. `closing` resolves when the node
/// stops and the tunnel's drain time is over.
pub async fn relay(
    tunnel: UpgradedTunnel,
    limits: TunnelLimits,
    closing: impl Future<Output = ()>,
) -> RelayOutcome {
    let mut relay = Relay::new(tunnel, &limits);
    let closing = std::pin::pin!(closing);
    match relay.run(&limits, closing, || false).await {
        Step::Ended(ended_by) => relay.finish(ended_by).await,
        Step::Paused => unreachable!("a relay that cannot be paused paused"),
    }
}

/// Where [`Relay::run`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The tunnel is over; [`Relay::finish`] closes it.
    Ended(ClosedBy),
    /// Asked to pause: no write is half-done, every byte read and not yet written is in
    /// the relay's state. `run` may be called again to go on.
    Paused,
}

/// A tunnel's two connections and everything the relay knows about them: what it holds
/// each way, its byte counts and its clocks. It can stop between two polls (a safe point)
/// and go on later, here or, handed over, in another process.
pub struct Relay {
    pub(crate) downstream: Stream,
    pub(crate) upstream: Stream,
    pub(crate) to_origin: Direction,
    pub(crate) to_client: Direction,
    /// When the tunnel opened (before a handover: in the old process's terms).
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    pub(crate) last_moved: Instant,
    /// The side that finished first, once its end has been passed on (half-close).
    pub(crate) first_closed: Option<ClosedBy>,
    linger_until: Option<Instant>,
}

impl Relay {
    pub fn new(tunnel: UpgradedTunnel, limits: &TunnelLimits) -> Relay {
        let UpgradedTunnel {
            downstream,
            downstream_read,
            downstream_ended,
            upstream,
            upstream_read,
            upstream_ended,
        } = tunnel;
        let mut to_origin = Direction::new(&downstream_read);
        let mut to_client = Direction::new(&upstream_read);
        // The frames are followed both ways: so that a Close can go in between two of the
        // origin's, and so that a large payload can be spliced (see `splice`).
        for direction in [&mut to_origin, &mut to_client] {
            let mut frames = FrameTracker::default();
            frames.advance(&direction.pending);
            direction.frames = Some(frames);
        }
        to_origin.read_done = downstream_ended;
        to_client.read_done = upstream_ended;
        // The 101 may still sit in the client connection's write buffer.
        to_client.needs_flush = true;
        let (mut downstream, mut upstream) = (downstream, upstream);
        // A stalled side is the tunnel's idle timer's to end, not the client's send timeout.
        HeadGuard::lift_send_timeout(&mut downstream);
        to_origin.write_buffered = !unbuffer_writes(&mut upstream);
        to_client.write_buffered = !unbuffer_writes(&mut downstream);
        let now = Instant::now();
        Relay {
            downstream,
            upstream,
            to_origin,
            to_client,
            started: now,
            deadline: now + limits.max_lifetime,
            last_moved: now,
            first_closed: None,
            linger_until: None,
        }
    }

    /// Relays until the tunnel ends, or until `pause` holds (then at a safe point).
    /// `signal` resolves when the tunnel is to close (the node's drain, a close order) or
    /// to pause: `pause` is looked at when it does, and before each step.
    pub async fn run(
        &mut self,
        limits: &TunnelLimits,
        mut signal: Pin<&mut impl Future<Output = ()>>,
        pause: impl Fn() -> bool,
    ) -> Step {
        // One timer for the lifetime, the idle time, the linger and the pipes' release: it
        // is armed for the earliest, and on firing each is checked against the clock. (Three
        // `Sleep`s took 336 bytes of every tunnel's task, and three timer entries.)
        let wake_at = |deadline: Instant,
                       first_closed: Option<ClosedBy>,
                       linger_until: Option<Instant>,
                       from: Instant| {
            let linger = linger_until.filter(|_| first_closed.is_some());
            [Some(deadline), linger]
                .into_iter()
                .flatten()
                .fold(from, Instant::min)
        };
        let timer = tokio::time::sleep_until(
            wake_at(
                self.deadline,
                self.first_closed,
                self.linger_until,
                self.last_moved + limits.idle_timeout,
            )
            .into(),
        );
        tokio::pin!(timer);
        // The polling closure takes the relay whole (`move`, one reference), not a
        // reference to each of its fields: each took 8 bytes of every tunnel's task.
        let this = self;

        // What sits in a pipe is read back: the relay's state alone holds it.
        let pause_here = |to_origin: &mut Direction, to_client: &mut Direction| {
            if to_origin.unsplice().is_err() || to_client.unsplice().is_err() {
                return Step::Ended(ClosedBy::Error);
            }
            Step::Paused
        };
        poll_fn(move |cx| {
            let Relay {
                downstream,
                upstream,
                to_origin,
                to_client,
                deadline,
                last_moved,
                first_closed,
                linger_until,
                ..
            } = &mut *this;
            // Between two polls nothing is half-done: a safe point to stop at.
            if pause() {
                return Poll::Ready(pause_here(to_origin, to_client));
            }
            let mut moved = false;
            let client_side = to_origin.poll(cx, downstream, upstream, &mut moved);
            let origin_side = to_client.poll(cx, upstream, downstream, &mut moved);
            if moved {
                *last_moved = Instant::now();
            }
            // A pipe is given back once quiet: the timer wakes the relay for it.
            if to_origin.pipe.is_some() || to_client.pipe.is_some() {
                let now = Instant::now();
                let release = [
                    to_origin.pipe_release_at(now),
                    to_client.pipe_release_at(now),
                ]
                .into_iter()
                .flatten()
                .min();
                if let Some(at) = release.filter(|at| timer.deadline().into_std() > *at) {
                    timer.as_mut().reset(at.into());
                }
            }
            if let (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) =
                (&client_side, &origin_side)
            {
                return Poll::Ready(Step::Ended(ClosedBy::Error));
            }
            let (client_done, origin_done) = (client_side.is_ready(), origin_side.is_ready());
            if client_done && origin_done {
                return Poll::Ready(Step::Ended(ClosedBy::Client));
            }
            if first_closed.is_none() && (client_done || origin_done) {
                // One side ended and its end went on (the write half towards the other
                // side is shut down): the other may still answer, for the linger time.
                *first_closed = Some(if client_done {
                    ClosedBy::Client
                } else {
                    ClosedBy::Origin
                });
                let until = Instant::now() + limits.linger;
                *linger_until = Some(until);
                if timer.deadline().into_std() > until {
                    timer.as_mut().reset(until.into());
                }
            }
            // The timer is re-armed lazily: when it fires before what it was armed for
            // (the idle time moved on with traffic), it moves on to the next.
            loop {
                let now = timer.as_mut().poll(cx).is_ready().then(Instant::now);
                if let Some(now) = now {
                    if let (Some(first), Some(until)) = (*first_closed, *linger_until) {
                        if now >= until {
                            return Poll::Ready(Step::Ended(first));
                        }
                    }
                    if now >= *deadline {
                        return Poll::Ready(Step::Ended(ClosedBy::MaxLifetime));
                    }
                }
                if signal.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(match pause() {
                        true => pause_here(to_origin, to_client),
                        false => Step::Ended(ClosedBy::Shutdown),
                    });
                }
                let Some(now) = now else {
                    return Poll::Pending;
                };
                to_origin.release_quiet_pipe(now);
                to_client.release_quiet_pipe(now);
                let quiet_until = *last_moved + limits.idle_timeout;
                if now >= quiet_until {
                    return Poll::Ready(Step::Ended(ClosedBy::IdleTimeout));
                }
                let next = [
                    to_origin.pipe_release_at(now),
                    to_client.pipe_release_at(now),
                ]
                .into_iter()
                .flatten()
                .fold(
                    wake_at(*deadline, *first_closed, *linger_until, quiet_until),
                    Instant::min,
                );
                timer.as_mut().reset(next.into());
            }
        })
        .await
    }

    /// Closes both connections and says how the tunnel went.
    pub async fn finish(mut self, ended_by: ClosedBy) -> RelayOutcome {
        // Once one side has ended, whatever ends the other (its own end, the linger time,
        // a peer that closed its whole socket, a timer, the drain) the record names the
        // side that began the close.
        let closed_by = self.first_closed.unwrap_or(ended_by);
        // Best effort, and bounded: a TLS close_notify to a peer that stopped reading
        // would otherwise wait forever. The tunnel is over either way.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            tokio::join!(self.downstream.shutdown(), self.upstream.shutdown())
        })
        .await;
        RelayOutcome {
            closed_by,
            bytes_client_to_origin: self.to_origin.bytes,
            bytes_origin_to_client: self.to_client.bytes,
            duration: self.started.elapsed(),
        }
    }
}

/// Turns off Pingora's small write buffer (1,460 bytes) on a plain TCP connection once it
/// is empty; `false` while it holds bytes, and for TLS. From then on every byte the relay
/// has written is in the kernel: nothing sits where a handover cannot take it (a client
/// that stopped reading), and no flush follows each write. The client's connection sits
/// under the edge's head guard.
pub(crate) fn unbuffer_writes(stream: &mut Stream) -> bool {
    HeadGuard::plain_tcp_mut(stream).is_some_and(|tcp| tcp.set_write_buffering(false))
}

/// A handed-over tunnel's clocks, in this process's terms.
pub struct Clocks {
    pub started: Instant,
    pub deadline: Instant,
    pub last_moved: Instant,
}

impl Relay {
    /// A tunnel handed over by another process: its sockets, the bytes it held each way,
    /// its clocks and byte counts.
    pub fn adopted(
        mut downstream: Stream,
        mut upstream: Stream,
        held_to_origin: Vec<u8>,
        held_to_client: Vec<u8>,
        clocks: Clocks,
        (bytes_to_origin, bytes_to_client): (u64, u64),
    ) -> Relay {
        let mut to_origin = Direction::new(&[]);
        to_origin.pending = held_to_origin;
        to_origin.bytes = bytes_to_origin;
        // Where the old process's frames stood is not handed over (so neither Close frames
        // nor splicing for this tunnel).
        to_origin.frames = Some(FrameTracker::unknown());
        let mut to_client = Direction::new(&[]);
        to_client.pending = held_to_client;
        to_client.frames = Some(FrameTracker::unknown());
        to_client.bytes = bytes_to_client;
        to_origin.write_buffered = !unbuffer_writes(&mut upstream);
        to_client.write_buffered = !unbuffer_writes(&mut downstream);
        Relay {
            downstream,
            upstream,
            to_origin,
            to_client,
            started: clocks.started,
            deadline: clocks.deadline,
            last_moved: clocks.last_moved,
            first_closed: None,
            linger_until: None,
        }
    }

    /// Gets a paused relay ready to leave: what sits in a connection's write buffer is
    /// flushed, and what a connection has read ahead (or the kernel holds) is taken into
    /// the relay's own state, so the sockets alone carry the rest. Refuses a tunnel that
    /// is closing (a side has ended) or that holds too much.
    pub async fn settle(&mut self) -> Result<(), &'static str> {
        let Relay {
            downstream,
            upstream,
            to_origin,
            to_client,
            first_closed,
            ..
        } = self;
        if first_closed.is_some() || to_origin.read_done || to_client.read_done {
            return Err("it is closing");
        }
        downstream.flush().await.map_err(|_| "a write failed")?;
        upstream.flush().await.map_err(|_| "a write failed")?;
        to_client.needs_flush = false;
        to_origin.needs_flush = false;
        poll_fn(|cx| {
            Poll::Ready(
                to_origin
                    .take_in(cx, downstream)
                    .and_then(|()| to_client.take_in(cx, upstream)),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::io;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the end the relay owns (as Pingora's stream) and the peer's end.
    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap());
        let (peer, accepted) = tokio::join!(peer, listener.accept());
        let ours: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(
            accepted.unwrap().0,
        ));
        (ours, peer.unwrap())
    }

    /// A tunnel just opened: nothing read ahead, neither side ended.
    fn opened(downstream: Stream, upstream: Stream) -> UpgradedTunnel {
        UpgradedTunnel {
            downstream,
            downstream_read: Vec::new(),
            downstream_ended: false,
            upstream,
            upstream_read: Vec::new(),
            upstream_ended: false,
        }
    }

    fn limits() -> TunnelLimits {
        TunnelLimits {
            idle_timeout: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(60),
            linger: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_slow_reader_gets_every_byte_in_order_after_the_preread_ones() {
        let (downstream, mut client) = pair().await;
        let (upstream, mut origin) = pair().await;
        let tunnel = UpgradedTunnel {
            downstream,
            downstream_read: vec![Bytes::from_static(b"pre")],
            downstream_ended: false,
            upstream,
            upstream_read: Vec::new(),
            upstream_ended: false,
        };
        let relay = tokio::spawn(relay(tunnel, limits(), std::future::pending()));
        let payload: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        // Read in small bites, so the relay's writes block and its read-ahead fills up.
        let mut received = Vec::new();
        let mut bite = [0u8; 4096];
        loop {
            let n = origin.read(&mut bite).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&bite[..n]);
            tokio::task::yield_now().await;
        }
        let _client = writer.await.unwrap();
        assert_eq!(&received[..3], b"pre");
        assert!(received[3..] == payload[..], "the bytes differ");
        let outcome = relay.await.unwrap();
        assert_eq!(outcome.closed_by, ClosedBy::Client);
        assert_eq!(outcome.bytes_client_to_origin, 3 + payload.len() as u64);
        assert_eq!(outcome.bytes_origin_to_client, 0);
    }

    /// Found by the `relay` fuzz target: with two chunks read before the handoff, bytes the
    /// client sent next were written through between them (`GET` `more` `ping`); and an
    /// empty chunk among them then stalled the tunnel for good.
    #[tokio::test]
    async fn several_preread_chunks_go_first_and_in_order() {
        let (downstream, mut client) = tokio::io::duplex(1024);
        let (upstream, mut origin) = tokio::io::duplex(1024);
        // Already waiting when the relay starts: a fresh read is ready at once.
        client.write_all(b"more").await.unwrap();
        client.shutdown().await.unwrap();
        let tunnel = UpgradedTunnel {
            downstream: Box::new(downstream),
            downstream_read: vec![
                Bytes::from_static(b"GET"),
                Bytes::new(),
                Bytes::from_static(b"ping"),
                Bytes::from_static(b"pong"),
            ],
            downstream_ended: false,
            upstream: Box::new(upstream),
            upstream_read: Vec::new(),
            upstream_ended: true,
        };
        let outcome = relay(tunnel, limits(), std::future::pending()).await;
        let mut received = Vec::new();
        origin.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, b"GETpingpongmore");
        assert_eq!(outcome.bytes_client_to_origin, 15);
    }

    #[tokio::test]
    async fn an_origin_that_closed_before_the_handoff_ends_the_tunnel_after_its_last_bytes() {
        let (downstream, mut client) = pair().await;
        let (upstream, _origin) = pair().await;
        let tunnel = UpgradedTunnel {
            downstream,
            downstream_read: Vec::new(),
            downstream_ended: false,
            upstream,
            upstream_read: vec![Bytes::from_static(b"last words")],
            upstream_ended: true,
        };
        let outcome = relay(tunnel, limits(), std::future::pending()).await;
        assert_eq!(outcome.closed_by, ClosedBy::Origin);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
    }

    #[tokio::test]
    async fn an_origin_that_closed_its_side_still_gets_what_the_client_sends_then_both_end() {
        let (downstream, mut client) = pair().await;
        let (upstream, mut origin) = pair().await;
        let tunnel = opened(downstream, upstream);
        let relay = tokio::spawn(relay(tunnel, limits(), std::future::pending()));
        origin.write_all(b"bye").await.unwrap();
        origin.shutdown().await.unwrap();
        // The client gets the origin's last bytes and then its end (a half-close).
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        // Its side is still open: what it sends now reaches the origin.
        client.write_all(b"late").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"late");
        let outcome = relay.await.unwrap();
        assert_eq!(outcome.closed_by, ClosedBy::Origin);
        assert_eq!(outcome.bytes_client_to_origin, 4);
        assert_eq!(outcome.bytes_origin_to_client, 3);
    }

    #[tokio::test]
    async fn bytes_are_counted_when_written_not_when_read() {
        let (downstream, mut client) = pair().await;
        let (upstream, mut origin) = pair().await;
        let tunnel = opened(downstream, upstream);
        let short = TunnelLimits {
            max_lifetime: Duration::from_millis(300),
            ..limits()
        };
        let relay = tokio::spawn(relay(tunnel, short, std::future::pending()));
        // The client reads nothing, so the relay ends up holding bytes it could not write.
        let flood = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            while origin.write_all(&chunk).await.is_ok() {}
        });
        let outcome = relay.await.unwrap();
        assert_eq!(outcome.closed_by, ClosedBy::MaxLifetime);
        // What the client can read is exactly what the relay wrote, and counted.
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got).await;
        assert!(!got.is_empty());
        assert_eq!(outcome.bytes_origin_to_client, got.len() as u64);
        flood.abort();
    }

    /// A connected pair whose peer end reads into a small socket buffer, and whose end
    /// the relay owns sends from a small one: a peer that does not read stalls the relay's
    /// writes after a few KiB.
    async fn small_pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let peer = socket.connect(listener.local_addr().unwrap());
        let (peer, accepted) = tokio::join!(peer, listener.accept());
        let accepted = accepted.unwrap().0;
        rustix::net::sockopt::set_socket_send_buffer_size(&accepted, 4096).unwrap();
        let ours: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(accepted));
        (ours, peer.unwrap())
    }

    #[tokio::test]
    async fn a_pause_takes_back_what_the_pipe_holds_in_order_and_the_tunnel_goes_on() {
        // Splicing is off by default (`server.tunnel_splice`); the other relay tests do
        // not depend on it either way.
        set_splice(true);
        let (downstream, mut client) = small_pair().await;
        let (upstream, mut origin) = pair().await;
        let limits = limits();
        let mut relay = Relay::new(opened(downstream, upstream), &limits);
        // One frame with a 1 MiB payload, and a small one behind it.
        let len = 1usize << 20;
        let mut stream = vec![0x82, 127];
        stream.extend_from_slice(&(len as u64).to_be_bytes());
        stream.extend((0..len).map(|i| ((i / 3 + i * 7) % 251) as u8));
        stream.extend_from_slice(&[0x81, 3, b'e', b'n', b'd']);
        let sent = stream.clone();
        let writer = tokio::spawn(async move {
            origin.write_all(&sent).await.unwrap();
            origin
        });
        // Relay origin to client, the client reading its first 64 KiB (the first read's
        // bytes, copied, then spliced ones) and then nothing, until a splice waits on the
        // client: then the pipe holds bytes.
        const FIRST: usize = 64 << 10;
        let mut got = Vec::new();
        let mut moved = false;
        let Relay {
            upstream,
            downstream,
            to_client,
            ..
        } = &mut relay;
        poll_fn(|cx| loop {
            if let Poll::Ready(result) = to_client.poll(cx, upstream, downstream, &mut moved) {
                panic!("the relay ended: {result:?}");
            }
            if got.len() == FIRST {
                return match to_client.pipe_held() {
                    0 => Poll::Pending,
                    _ => Poll::Ready(()),
                };
            }
            match client.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(ready) => ready.unwrap(),
            }
            let mut buf = vec![0u8; FIRST - got.len()];
            match client.try_read(&mut buf) {
                Ok(n) => {
                    assert!(n > 0, "the client's side ended");
                    got.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        })
        .await;
        let in_pipe = relay.to_client.pipe_held();
        let written = relay.to_client.bytes as usize;
        assert!(relay.to_client.pending.is_empty());
        pause_now(&mut relay, &limits).await;
        // The pipe is read back and given back: its bytes are the relay's, next in line.
        assert!(relay.to_client.pipe.is_none());
        relay.settle().await.unwrap();
        let held = relay.to_client.held();
        assert_eq!(held.len(), in_pipe);
        assert!(
            held[..] == stream[written..written + in_pipe],
            "the held bytes differ"
        );
        // Running again, the client gets every byte once, in order, and each is counted.
        let go_on = tokio::spawn(run_to_end(relay, limits));
        let mut rest = vec![0u8; stream.len() - got.len()];
        client.read_exact(&mut rest).await.unwrap();
        got.extend_from_slice(&rest);
        assert!(got == stream, "the bytes differ");
        let mut origin = writer.await.unwrap();
        origin.shutdown().await.unwrap();
        client.shutdown().await.unwrap();
        let outcome = go_on.await.unwrap();
        assert_eq!(outcome.bytes_origin_to_client, stream.len() as u64);
    }

    /// Runs `relay` with a pause already asked for: it stops at once, paused.
    async fn pause_now(relay: &mut Relay, limits: &TunnelLimits) {
        let step = relay
            .run(limits, std::pin::pin!(std::future::pending()), || true)
            .await;
        assert_eq!(step, Step::Paused);
    }

    /// Runs a (paused) relay again, with no pause or stop to come, and closes it.
    async fn run_to_end(mut relay: Relay, limits: TunnelLimits) -> RelayOutcome {
        match relay
            .run(&limits, std::pin::pin!(std::future::pending()), || false)
            .await
        {
            Step::Ended(by) => relay.finish(by).await,
            Step::Paused => unreachable!("nothing asked the relay to pause"),
        }
    }

    #[tokio::test]
    async fn a_paused_relay_settles_with_every_byte_it_holds_in_order_and_goes_on() {
        let (downstream, mut client) = pair().await;
        let (upstream, mut origin) = pair().await;
        let tunnel = UpgradedTunnel {
            downstream,
            downstream_read: vec![Bytes::from_static(b"pre-")],
            downstream_ended: false,
            upstream,
            upstream_read: Vec::new(),
            upstream_ended: false,
        };
        let limits = limits();
        let mut relay = Relay::new(tunnel, &limits);
        // Bytes waiting in the client's socket when the relay stops.
        client.write_all(b"in the socket").await.unwrap();
        pause_now(&mut relay, &limits).await;
        // The relay holds what Pingora read before the handoff; what the kernel queues
        // stays in the socket (a handover passes it with the socket).
        relay.settle().await.unwrap();
        assert_eq!(relay.to_origin.held(), b"pre-");
        assert_eq!(relay.to_origin.held_len(), 4);
        // Nothing went to the origin while paused; once running again, all of it does.
        let go_on = tokio::spawn(run_to_end(relay, limits));
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"pre-in the socket");
        origin.shutdown().await.unwrap();
        let outcome = go_on.await.unwrap();
        assert_eq!(outcome.bytes_client_to_origin, 17);
    }
}
