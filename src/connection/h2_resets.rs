//! HTTP/2 "rapid reset" as a proxy meets it (CVE-2023-44487): a client opens a stream,
//! resets it at once, and opens the next. The h2 library closes a connection whose client
//! resets streams before they are accepted ("too_many_resets"), but the edge accepts each
//! stream at once and sends its request to the origin: every reset stream had become a
//! full origin request, at the client's rate, with nothing to stop it on the connection
//! (a probe drove 13,861 origin requests through one connection in 1.7 s).
//!
//! [`ResetWatch`] sits under the h2 library and follows the frames the client sends (the
//! 9-byte frame headers; payloads are skipped, nothing is copied or changed). Once the
//! client has reset [`RESET_BUDGET`] streams, and more than half of all it opened, the
//! connection ends, as Envoy's `premature_reset_total_stream_count` and HAProxy's
//! "glitches" do: the watch first tells the client with a GOAWAY (`ENHANCE_YOUR_CALM`,
//! naming the last stream it opened, RFC 9113 §5.4.1) written between two of the edge's
//! own frames (it follows those too) and a clean close, in one try that never waits, then
//! fails the connection's next read. A browser that cancels some requests (a navigation,
//! lazy images) stays far below it.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::{GetTimingDigest, Peek, Shutdown, Stream, TimingDigest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Streams a client may reset on one connection before the share of resets counts.
pub const RESET_BUDGET: u32 = 100;

/// The client's connection preface (RFC 9113 §3.4), before its first frame.
const PREFACE_LEN: u32 = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// What the client's frames have done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResetCount {
    /// Streams it opened (a `HEADERS` frame on a stream above every earlier one).
    pub opened: u32,
    /// `RST_STREAM` frames it sent.
    pub reset: u32,
}

impl ResetCount {
    /// Whether the client has reset too many of its streams.
    pub fn is_abuse(&self) -> bool {
        self.reset >= RESET_BUDGET && self.reset.saturating_mul(2) > self.opened
    }
}

/// Finds the 9-byte frame headers in a byte stream however it is split, skipping the
/// payloads (nothing is copied but a header).
#[derive(Debug)]
struct FrameReader {
    /// Bytes still to skip: a preface, then the current frame's payload.
    skip: u32,
    header: [u8; FRAME_HEADER_LEN],
    header_len: u8,
}

impl FrameReader {
    fn after(skip: u32) -> FrameReader {
        FrameReader {
            skip,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
        }
    }

    /// Follows `data`, the stream's next bytes, showing `on_frame` each frame header.
    fn advance(&mut self, mut data: &[u8], mut on_frame: impl FnMut(&[u8; FRAME_HEADER_LEN])) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = (self.skip as usize).min(data.len());
                self.skip -= n as u32;
                data = &data[n..];
                continue;
            }
            let have = self.header_len as usize;
            let take = (FRAME_HEADER_LEN - have).min(data.len());
            self.header[have..have + take].copy_from_slice(&data[..take]);
            self.header_len += take as u8;
            data = &data[take..];
            if (self.header_len as usize) == FRAME_HEADER_LEN {
                self.header_len = 0;
                on_frame(&self.header);
                self.skip = u32::from_be_bytes([0, self.header[0], self.header[1], self.header[2]]);
            }
        }
    }

    /// Whether the stream so far ends where a frame ends.
    fn between_frames(&self) -> bool {
        self.skip == 0 && self.header_len == 0
    }
}

/// Follows the frame headers of a client's byte stream.
#[derive(Debug)]
pub struct FrameCounter {
    reader: FrameReader,
    highest_stream: u32,
    pub count: ResetCount,
}

impl Default for FrameCounter {
    fn default() -> FrameCounter {
        FrameCounter {
            reader: FrameReader::after(PREFACE_LEN),
            highest_stream: 0,
            count: ResetCount::default(),
        }
    }
}

impl FrameCounter {
    /// Follows `data`, the next bytes the client sent.
    pub fn advance(&mut self, data: &[u8]) {
        let (highest_stream, count) = (&mut self.highest_stream, &mut self.count);
        self.reader.advance(data, |header| {
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & !(1 << 31);
            match header[3] {
                HEADERS if stream > *highest_stream => {
                    *highest_stream = stream;
                    count.opened = count.opened.saturating_add(1);
                }
                RST_STREAM => count.reset = count.reset.saturating_add(1),
                _ => {}
            }
        });
    }

    /// The last stream the client opened.
    pub fn highest_stream(&self) -> u32 {
        self.highest_stream
    }
}

/// The GOAWAY a client over its reset budget gets: no error code but `ENHANCE_YOUR_CALM`,
/// and the last stream it opened as the last one processed.
fn goaway_frame(last_stream: u32) -> [u8; FRAME_HEADER_LEN + 8] {
    let mut frame = [0; FRAME_HEADER_LEN + 8];
    frame[2] = 8; // length
    frame[3] = GOAWAY; // flags 0, stream 0
    frame[9..13].copy_from_slice(&(last_stream & !(1 << 31)).to_be_bytes());
    frame[13..].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    frame
}

/// A client's HTTP/2 connection, read through a [`FrameCounter`].
pub struct ResetWatch {
    inner: Stream,
    counter: FrameCounter,
    /// The edge's own frames, as written: a GOAWAY goes only between two of them.
    written: FrameReader,
    /// The client over its budget was told (or could not be).
    told: bool,
    /// Its place under the connection caps, held as long as the connection.
    _admitted: super::Admitted,
}

impl ResetWatch {
    pub fn new(inner: Stream, admitted: super::Admitted) -> ResetWatch {
        ResetWatch {
            inner,
            counter: FrameCounter::default(),
            written: FrameReader::after(0),
            told: false,
            _admitted: admitted,
        }
    }

    /// Tells a client over its budget why its connection ends: a GOAWAY, if the edge is
    /// between two frames of its own, then a clean close (TLS `close_notify`, then FIN), so
    /// that the client reads the GOAWAY as the connection's end, not an abrupt one. One try,
    /// never waiting: whatever does not go at once is dropped with the connection, so a
    /// client that does not read cannot hold it open this way.
    fn tell_client(&mut self, cx: &mut Context<'_>) {
        if std::mem::replace(&mut self.told, true) || !self.written.between_frames() {
            return;
        }
        let frame = goaway_frame(self.counter.highest_stream());
        let mut sent = 0;
        while sent < frame.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &frame[sent..]) {
                Poll::Ready(Ok(n)) if n > 0 => sent += n,
                _ => return,
            }
        }
        let _ = Pin::new(&mut self.inner).poll_shutdown(cx);
    }
}

impl AsyncRead for ResetWatch {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.counter.count.is_abuse() {
            this.tell_client(cx);
            let count = this.counter.count;
            log::info!(
                "HTTP/2 connection closed: the client reset {} of the {} streams it opened",
                count.reset,
                count.opened
            );
            return Poll::Ready(Err(io::Error::other(format!(
                "the client reset {} of its {} streams (rapid reset)",
                count.reset, count.opened
            ))));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if polled.is_ready() {
            this.counter.advance(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for ResetWatch {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.written.advance(&buf[..n], |_| {});
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = polled {
            for buf in bufs {
                let part = n.min(buf.len());
                this.written.advance(&buf[..part], |_| {});
                n -= part;
                if n == 0 {
                    break;
                }
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for ResetWatch {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl GetTimingDigest for ResetWatch {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

super::delegate_connection_facts!(ResetWatch);

#[async_trait]
impl Peek for ResetWatch {}

impl fmt::Debug for ResetWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResetWatch")
            .field("count", &self.counter.count)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut out = (payload as u32).to_be_bytes()[1..].to_vec();
        out.extend([kind, 0]);
        out.extend(stream.to_be_bytes());
        out.extend(std::iter::repeat_n(0xAA, payload));
        out
    }

    fn preface() -> Vec<u8> {
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
    }

    #[test]
    fn streams_opened_and_reset_are_counted_however_the_bytes_are_split() {
        let mut bytes = preface();
        bytes.extend(frame(0x4, 0, 18)); // SETTINGS
        for stream in (1..=9).step_by(2) {
            bytes.extend(frame(HEADERS, stream, 30));
            bytes.extend(frame(0x0, stream, 100)); // DATA
        }
        bytes.extend(frame(HEADERS, 3, 10)); // trailers of an open stream: not a new one
        bytes.extend(frame(RST_STREAM, 1, 4));
        bytes.extend(frame(RST_STREAM, 5, 4));
        for split in [1, 2, 7, 9, 10, 64, bytes.len()] {
            let mut counter = FrameCounter::default();
            for piece in bytes.chunks(split) {
                counter.advance(piece);
            }
            assert_eq!(
                counter.count,
                ResetCount {
                    opened: 5,
                    reset: 2
                },
                "split {split}"
            );
        }
    }

    #[test]
    fn resets_count_as_abuse_past_the_budget_and_half_the_streams() {
        let count = |opened, reset| ResetCount { opened, reset }.is_abuse();
        assert!(!count(99, 99), "under the budget");
        assert!(count(100, 100));
        assert!(count(199, 100));
        assert!(!count(200, 100), "half of them, not more");
        assert!(!count(10_000, 2_000), "a long connection with some cancels");
    }

    #[test]
    fn the_edges_frames_are_followed_to_their_ends_however_they_are_written() {
        let mut bytes = frame(0x4, 0, 6); // SETTINGS
        bytes.extend(frame(HEADERS, 1, 33));
        bytes.extend(frame(0x0, 1, 1024)); // DATA
        let ends = [15, 15 + 42, bytes.len()];
        for split in [1, 5, 9, 10, 100, bytes.len()] {
            let mut reader = FrameReader::after(0);
            let mut at = 0;
            for piece in bytes.chunks(split) {
                reader.advance(piece, |_| {});
                at += piece.len();
                assert_eq!(
                    reader.between_frames(),
                    ends.contains(&at),
                    "split {split} at {at}"
                );
            }
        }
    }

    #[test]
    fn a_goaway_names_the_last_stream_and_asks_for_calm() {
        let goaway = goaway_frame(199);
        let mut expected = frame(GOAWAY, 0, 0);
        expected[2] = 8;
        expected.extend(199u32.to_be_bytes());
        expected.extend(0xbu32.to_be_bytes());
        assert_eq!(goaway.as_slice(), expected.as_slice());
        // A whole frame, with its length right.
        let mut reader = FrameReader::after(0);
        reader.advance(&goaway[..10], |_| {});
        assert!(!reader.between_frames());
        reader.advance(&goaway[10..], |_| {});
        assert!(reader.between_frames());
    }
}
