//! Moves an upgraded connection's bytes both ways, untouched, until one side closes or a
//! timer fires.
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
    tokio::pin!(deadline, idle, closing);
    let mut last_moved = Instant::now();

    let closed_by = poll_fn(|cx| {
        let mut moved = false;
        let client_side = to_origin.poll(cx, &mut downstream, &mut upstream, &mut moved);
        let origin_side = to_client.poll(cx, &mut upstream, &mut downstream, &mut moved);
        match (client_side, origin_side) {
            (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) => {
                return Poll::Ready(ClosedBy::Error)
            }
            // The first side to finish (its end read and passed on) closes the tunnel.
            (Poll::Ready(Ok(())), _) => return Poll::Ready(ClosedBy::Client),
            (_, Poll::Ready(Ok(()))) => return Poll::Ready(ClosedBy::Origin),
            _ => {}
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
            bytes: 0,
        }
    }

    /// Ready(Ok) once the reading side has ended and everything read was written and
    /// flushed; Ready(Err) on an I/O error on either side. While the writer is blocked,
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
                self.bytes += chunk.len() as u64;
                self.pending.extend_from_slice(&chunk);
            }
            let mut write_blocked = false;
            while self.written < self.pending.len() {
                match Pin::new(&mut *to).poll_write(cx, &self.pending[self.written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
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
            if self.read_done && self.pending.is_empty() && !self.needs_flush {
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
                            self.bytes += data.len() as u64;
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
                Poll::Ready(Ok(n)) => offset += n,
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
}
