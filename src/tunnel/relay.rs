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
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_core::protocols::Stream;
use pingora_proxy::UpgradedTunnel;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::ClosedBy;
use crate::config::model::TunnelLimits;

/// The most one read takes from a side (a buffer on the stack of the poll).
const READ_CHUNK: usize = 16 * 1024;
/// How many bytes may wait for a blocked writer before reading that way pauses. With
/// READ_CHUNK, it bounds what a tunnel holds for a peer that stops reading: under 32 KiB
/// each way. (Larger values, up to 256 KiB, measured no faster.)
const READ_AHEAD: usize = 16 * 1024;

/// How long closing both connections may take once the tunnel has ended.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

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
    let started = Instant::now();
    let UpgradedTunnel {
        mut downstream,
        downstream_read,
        downstream_ended,
        mut upstream,
        upstream_read,
        upstream_ended,
    } = tunnel;
    let mut to_origin = Direction::new(downstream_read);
    let mut to_client = Direction::new(upstream_read);
    to_origin.read_done = downstream_ended;
    to_client.read_done = upstream_ended;
    // The 101 may still sit in the client connection's write buffer.
    to_client.needs_flush = true;

    let deadline = tokio::time::sleep(limits.max_lifetime);
    let idle = tokio::time::sleep(limits.idle_timeout);
    // Armed when the first side finishes: how long the other may go on alone.
    let linger = tokio::time::sleep(limits.linger);
    tokio::pin!(deadline, idle, linger, closing);
    let mut last_moved = Instant::now();
    // The side that finished first, once its end has been passed on (half-close).
    let mut first_closed: Option<ClosedBy> = None;

    let ended_by = poll_fn(|cx| {
        let mut moved = false;
        let client_side = to_origin.poll(cx, &mut downstream, &mut upstream, &mut moved);
        let origin_side = to_client.poll(cx, &mut upstream, &mut downstream, &mut moved);
        if let (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) = (&client_side, &origin_side) {
            return Poll::Ready(ClosedBy::Error);
        }
        let (client_done, origin_done) = (client_side.is_ready(), origin_side.is_ready());
        if client_done && origin_done {
            return Poll::Ready(ClosedBy::Client);
        }
        if first_closed.is_none() && (client_done || origin_done) {
            // One side ended and its end went on (the write half towards the other side is
            // shut down): the other side may still answer, for at most the linger time.
            first_closed = Some(if client_done {
                ClosedBy::Client
            } else {
                ClosedBy::Origin
            });
            linger
                .as_mut()
                .reset((Instant::now() + limits.linger).into());
        }
        if let Some(first) = first_closed {
            if linger.as_mut().poll(cx).is_ready() {
                return Poll::Ready(first);
            }
        }
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(ClosedBy::MaxLifetime);
        }
        if closing.as_mut().poll(cx).is_ready() {
            return Poll::Ready(ClosedBy::Shutdown);
        }
        if moved {
            last_moved = Instant::now();
        }
        // The idle timer is re-armed lazily: only when it fires early does it move on.
        while idle.as_mut().poll(cx).is_ready() {
            let quiet_until = last_moved + limits.idle_timeout;
            if Instant::now() >= quiet_until {
                return Poll::Ready(ClosedBy::IdleTimeout);
            }
            idle.as_mut().reset(quiet_until.into());
        }
        Poll::Pending
    })
    .await;
    // Once one side has ended, whatever ends the other (its own end, the linger time, a
    // peer that closed its whole socket, a timer, the drain) the record names the side
    // that began the close.
    let closed_by = first_closed.unwrap_or(ended_by);

    // Best effort, and bounded: a TLS close_notify to a peer that stopped reading would
    // otherwise wait forever. The tunnel is over either way.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        tokio::join!(downstream.shutdown(), upstream.shutdown())
    })
    .await;
    RelayOutcome {
        closed_by,
        bytes_client_to_origin: to_origin.bytes,
        bytes_origin_to_client: to_client.bytes,
        duration: started.elapsed(),
    }
}

/// One way through the tunnel.
struct Direction {
    /// Bytes read but not yet written on; empty (and unallocated) while the writer keeps up.
    pending: Vec<u8>,
    written: usize,
    /// Chunks Pingora read before the handoff, to go first.
    preread: Vec<Bytes>,
    needs_flush: bool,
    read_done: bool,
    /// The reading side's end was passed on: the write half towards the other side is shut.
    end_passed_on: bool,
    /// Bytes written to the other side (not merely read).
    bytes: u64,
}

impl Direction {
    fn new(preread: Vec<Bytes>) -> Direction {
        Direction {
            pending: Vec::new(),
            written: 0,
            preread,
            needs_flush: false,
            read_done: false,
            end_passed_on: false,
            bytes: 0,
        }
    }

    /// Ready(Ok) once the reading side has ended, everything read was written and flushed,
    /// and the write half towards the other side is shut down (the end passed on, as a
    /// half-close); Ready(Err) on an I/O error on either side. While the writer is blocked,
    /// reading goes on until `READ_AHEAD` bytes wait, so both sockets stay busy.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut Stream,
        to: &mut Stream,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut progress = false;
            if self.pending.is_empty() && !self.preread.is_empty() {
                let chunk = self.preread.remove(0);
                self.pending.extend_from_slice(&chunk);
            }
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
                    Poll::Ready(Ok(())) => self.needs_flush = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => write_blocked = true,
                }
            }
            if self.read_done
                && self.pending.is_empty()
                && self.preread.is_empty()
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
            if !self.read_done && self.pending.len() - self.written < READ_AHEAD {
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
        self.needs_flush = true;
        self.pending.extend_from_slice(&data[offset..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let tunnel = UpgradedTunnel {
            downstream,
            downstream_read: Vec::new(),
            downstream_ended: false,
            upstream,
            upstream_read: Vec::new(),
            upstream_ended: false,
        };
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
        let tunnel = UpgradedTunnel {
            downstream,
            downstream_read: Vec::new(),
            downstream_ended: false,
            upstream,
            upstream_read: Vec::new(),
            upstream_ended: false,
        };
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
}
