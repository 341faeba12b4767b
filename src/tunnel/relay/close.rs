//! Closing a tunnel on demand (`POST /tunnels/close`, `chaos:`), three ways:
//!
//! - `fin`: both connections are shut down, as at the end of a drain;
//! - `rst`: both are reset (`SO_LINGER` 0, then closed): what the peers of a host that
//!   vanished see;
//! - a WebSocket Close frame with a code: what an orderly maintenance looks like to a
//!   client. The origin's bytes still on their way are delivered up to the end of the
//!   frame in progress (the frame tracker says how many; at most the tunnel's linger time
//!   is spent waiting for them), then the Close frame goes to the client, then a FIN to
//!   both sides. The client's answering Close is awaited (for the linger time) and
//!   dropped. Without a known framing (a tunnel adopted from another process) it is a FIN.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pingora_core::protocols::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::frames::Boundary;
use super::{Direction, Relay, RelayOutcome, CLOSE_TIMEOUT, READ_CHUNK};
use crate::config::model::CloseHow;
use crate::tunnel::ClosedBy;

impl Relay {
    /// Closes the tunnel `how`, for `by`; `linger` bounds each wait on a peer.
    pub async fn close_as(mut self, by: ClosedBy, how: CloseHow, linger: Duration) -> RelayOutcome {
        match how {
            CloseHow::Fin => {}
            CloseHow::Rst => {
                reset(&self.downstream);
                reset(&self.upstream);
                return self.outcome(by);
            }
            CloseHow::WebSocket(code) => {
                if let Err(e) = self.send_close_frame(code, linger).await {
                    log::debug!("tunnel close: no Close frame sent: {e}");
                } else {
                    // The client answers with its own Close; the origin is gone by then.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.upstream.shutdown()).await;
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.downstream.shutdown()).await;
                    let _ =
                        tokio::time::timeout(linger, discard_until_end(&mut self.downstream)).await;
                    return self.outcome(by);
                }
            }
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            tokio::join!(self.downstream.shutdown(), self.upstream.shutdown())
        })
        .await;
        self.outcome(by)
    }

    fn outcome(&self, closed_by: ClosedBy) -> RelayOutcome {
        RelayOutcome {
            closed_by,
            bytes_client_to_origin: self.to_origin.bytes,
            bytes_origin_to_client: self.to_client.bytes,
            duration: self.started.elapsed(),
        }
    }

    /// Delivers what the origin sent up to a frame boundary, then a Close frame with
    /// `code`. Fails when no boundary comes within `wait` or the framing is unknown.
    async fn send_close_frame(&mut self, code: u16, wait: Duration) -> io::Result<()> {
        let Relay {
            downstream,
            upstream,
            to_client,
            ..
        } = self;
        let reached = poll_fn(|cx| to_client.poll_to_boundary(cx, upstream, downstream));
        match tokio::time::timeout(wait, reached).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Err(io::Error::other("no frame boundary (unknown framing)")),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::other(
                    "the frame in progress did not end in time",
                ))
            }
        }
        let frame = close_frame(code);
        tokio::time::timeout(CLOSE_TIMEOUT, async {
            downstream.write_all(&frame).await?;
            downstream.flush().await
        })
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }
}

/// A server's Close frame (unmasked) with `code` and a short reason.
fn close_frame(code: u16) -> Vec<u8> {
    let reason: &[u8] = if code == crate::config::chaos::GOING_AWAY {
        b"going away"
    } else {
        b""
    };
    let mut frame = vec![0x88, (2 + reason.len()) as u8];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

impl Direction {
    /// Writes what is held, then reads on (never past the end of the frame in progress)
    /// until the stream stands at a frame boundary: `Ready(Ok(true))`. `Ok(false)` when
    /// that cannot happen (unknown framing, or the origin ended mid-frame).
    fn poll_to_boundary(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut Stream,
        to: &mut Stream,
    ) -> Poll<io::Result<bool>> {
        // What a pipe holds comes first, as ordinary held bytes.
        self.unsplice()?;
        loop {
            while self.written < self.pending.len() {
                match Pin::new(&mut *to).poll_write(cx, &self.pending[self.written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        self.bytes += n as u64;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            self.pending.clear();
            self.written = 0;
            let need = match self.frames.map_or(Boundary::Unknown, |f| f.boundary()) {
                Boundary::At => return Poll::Ready(Ok(true)),
                Boundary::Unknown => return Poll::Ready(Ok(false)),
                _ if self.read_done => return Poll::Ready(Ok(false)),
                Boundary::Need(n) => n.min(READ_CHUNK as u64) as usize,
            };
            let mut storage = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut storage[..need]);
            match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => self.read_done = true,
                Poll::Ready(Ok(())) => {
                    self.track(buf.filled());
                    self.pending.extend_from_slice(buf.filled());
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Reads and drops what the peer still sends, until it ends its side.
async fn discard_until_end(stream: &mut Stream) {
    let mut sink = [0u8; 1024];
    while let Ok(1..) = stream.read(&mut sink).await {}
}

/// Makes closing `stream` send a RST: `SO_LINGER` with a zero timeout on its socket.
fn reset(stream: &Stream) {
    let raw = stream.id();
    if raw < 0 {
        return; // not a socket
    }
    // Pingora lends the descriptor only as a number; pidfd_getfd(2) on this process's own
    // pidfd duplicates it into an owned one without unsafe code. The option belongs to the
    // socket, so setting it on the copy sets it for the original.
    let copy = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .and_then(|me| {
        rustix::process::pidfd_getfd(&me, raw, rustix::process::PidfdGetfdFlags::empty())
    });
    match copy {
        Ok(fd) => {
            if let Err(e) = rustix::net::sockopt::set_socket_linger(&fd, Some(Duration::ZERO)) {
                log::debug!("tunnel close: SO_LINGER refused: {e}");
            }
        }
        Err(e) => log::debug!("tunnel close: cannot reach the socket to reset it: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_going_away_close_frame_carries_its_code_and_reason() {
        assert_eq!(
            close_frame(1001),
            [&[0x88, 12, 0x03, 0xE9][..], b"going away"].concat()
        );
        assert_eq!(close_frame(4000), [0x88, 2, 0x0F, 0xA0]);
    }
}
