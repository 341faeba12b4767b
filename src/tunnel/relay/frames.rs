//! Where the WebSocket frames of a byte stream begin and end (RFC 6455 §5.2), found without
//! copying or changing a byte: so that a Close frame can be put between two frames of the
//! origin's stream, never inside one.
//!
//! The tracker keeps how much of the current frame is still to come. A read that lies
//! inside a frame's payload costs a comparison and a subtraction; each frame header in a
//! read costs a few more integer operations (its length field). A header split across two
//! reads is kept in a 14-byte array. Nothing is allocated.

/// How far the stream read so far is from a frame boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// The next byte starts a frame.
    At,
    /// At most this many more bytes (at least 1) end the current frame or tell its length.
    Need(u64),
    /// The stream is not (or no longer known to be) WebSocket frames.
    Unknown,
}

/// The framing state of one direction of a tunnel.
#[derive(Debug, Clone, Copy)]
pub struct FrameTracker {
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// A header split across reads: its first `head_len` bytes.
    head: [u8; MAX_HEADER],
    head_len: u8,
    lost: bool,
}

const MAX_HEADER: usize = 14;

impl Default for FrameTracker {
    fn default() -> FrameTracker {
        FrameTracker {
            remaining: 0,
            head: [0; MAX_HEADER],
            head_len: 0,
            lost: false,
        }
    }
}

/// The length of a header starting with `first_two` bytes (the second is enough).
fn header_len(second: u8) -> usize {
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    match second & 0x7f {
        126 => 4 + mask,
        127 => 10 + mask,
        _ => 2 + mask,
    }
}

/// The payload length a complete header gives, or `None` for an impossible one.
fn payload_len(header: &[u8]) -> Option<u64> {
    match header[1] & 0x7f {
        126 => Some(u64::from(u16::from_be_bytes([header[2], header[3]]))),
        127 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&header[2..10]);
            let len = u64::from_be_bytes(bytes);
            // RFC 6455: the most significant bit must be 0.
            (len >> 63 == 0).then_some(len)
        }
        short => Some(u64::from(short)),
    }
}

impl FrameTracker {
    /// A tracker that knows nothing (a tunnel adopted from another process).
    pub fn unknown() -> FrameTracker {
        FrameTracker {
            lost: true,
            ..FrameTracker::default()
        }
    }

    /// Follows `data`, the next bytes of the stream.
    pub fn advance(&mut self, mut data: &[u8]) {
        if self.lost {
            return;
        }
        loop {
            // Inside a payload: the common case for large frames, one step per read.
            if self.remaining >= data.len() as u64 {
                self.remaining -= data.len() as u64;
                return;
            }
            data = &data[self.remaining as usize..];
            self.remaining = 0;
            if self.head_len == 0 && data.len() >= 2 {
                // A whole header in this read: parse it in place.
                let len = header_len(data[1]);
                if data.len() >= len {
                    match payload_len(&data[..len]) {
                        Some(payload) => self.remaining = payload,
                        None => return self.lose(),
                    }
                    data = &data[len..];
                    continue;
                }
            }
            if data.is_empty() {
                return;
            }
            // A header split across reads: gather its first two bytes, then the rest.
            if self.head_len < 2 {
                data = self.gather(data, 2);
                if self.head_len < 2 {
                    return;
                }
            }
            data = self.gather(data, header_len(self.head[1]));
            if (self.head_len as usize) < header_len(self.head[1]) {
                return;
            }
            match payload_len(&self.head[..self.head_len as usize]) {
                Some(payload) => self.remaining = payload,
                None => return self.lose(),
            }
            self.head_len = 0;
        }
    }

    /// Copies header bytes from `data` until `upto` are gathered; returns the rest.
    fn gather<'d>(&mut self, data: &'d [u8], upto: usize) -> &'d [u8] {
        let have = self.head_len as usize;
        let take = upto.saturating_sub(have).min(data.len());
        self.head[have..have + take].copy_from_slice(&data[..take]);
        self.head_len += take as u8;
        &data[take..]
    }

    fn lose(&mut self) {
        self.lost = true;
    }

    /// Payload bytes of the current frame still to come, when the stream read so far
    /// stands inside a payload (its header read whole); `None` otherwise.
    pub fn payload_left(&self) -> Option<u64> {
        (!self.lost && self.head_len == 0 && self.remaining > 0).then_some(self.remaining)
    }

    /// `n` bytes of the current frame's payload went by unseen (moved by `splice(2)`); at
    /// most [`FrameTracker::payload_left`]. More than that loses the framing.
    pub fn passed(&mut self, n: u64) {
        match self.payload_left() {
            Some(left) if n <= left => self.remaining -= n,
            _ if n == 0 => {}
            _ => self.lose(),
        }
    }

    pub fn boundary(&self) -> Boundary {
        if self.lost {
            return Boundary::Unknown;
        }
        match (self.head_len as usize, self.remaining) {
            (0, 0) => Boundary::At,
            (0, remaining) => Boundary::Need(remaining),
            (1, _) => Boundary::Need(1),
            (have, _) => Boundary::Need((header_len(self.head[1]) - have) as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked) or a client frame (masked), with `len` payload bytes.
    fn frame(opcode: u8, fin: bool, len: usize, masked: bool) -> Vec<u8> {
        let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
        let mask_bit = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => out.push(mask_bit | len as u8),
            126..=65535 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&[1, 2, 3, 4]);
        }
        out.extend((0..len).map(|i| (i % 251) as u8));
        out
    }

    /// The stream of several frames, and the offsets where each frame ends.
    fn stream() -> (Vec<u8>, Vec<usize>) {
        let frames = [
            frame(0x2, false, 70_000, false),
            frame(0x0, false, 300, false),
            frame(0x9, true, 0, false),
            frame(0x0, true, 5, false),
            frame(0x1, true, 125, true),
            frame(0x1, true, 126, true),
        ];
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for f in frames {
            bytes.extend_from_slice(&f);
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    #[test]
    fn a_boundary_is_found_exactly_at_each_frame_end_whatever_the_reads() {
        let (bytes, ends) = stream();
        for chunk in [1, 2, 3, 7, 13, 1000, 16384, bytes.len()] {
            let mut tracker = FrameTracker::default();
            let mut at = 0;
            for piece in bytes.chunks(chunk) {
                tracker.advance(piece);
                at += piece.len();
                let expected = at == 0 || ends.contains(&at);
                assert_eq!(
                    tracker.boundary() == Boundary::At,
                    expected,
                    "chunk {chunk}, offset {at}: {:?}",
                    tracker.boundary()
                );
            }
        }
    }

    #[test]
    fn need_never_overshoots_the_next_boundary() {
        let (bytes, ends) = stream();
        // Reading exactly what `Need` asks for, one step at a time, lands on each end.
        let mut tracker = FrameTracker::default();
        let mut at = 0;
        let mut landed = Vec::new();
        while at < bytes.len() {
            let step = match tracker.boundary() {
                Boundary::At => {
                    landed.push(at);
                    1
                }
                Boundary::Need(n) => n as usize,
                Boundary::Unknown => panic!("lost at {at}"),
            };
            let step = step.min(bytes.len() - at);
            tracker.advance(&bytes[at..at + step]);
            at += step;
        }
        assert_eq!(tracker.boundary(), Boundary::At);
        landed.push(at);
        for end in ends {
            assert!(landed.contains(&end), "never stopped at {end}: {landed:?}");
        }
    }

    #[test]
    fn payload_that_passes_unseen_keeps_the_boundaries_exact() {
        let (bytes, ends) = stream();
        // Read a header and a little payload, let the rest of each long payload pass unseen
        // (as splice moves it), and land on every frame end all the same.
        let mut tracker = FrameTracker::default();
        let mut at = 0;
        let mut landed = Vec::new();
        while at < bytes.len() {
            if let Some(left) = tracker.payload_left() {
                if left > 100 {
                    let skip = (left - 7).min(40_000);
                    tracker.passed(skip);
                    at += skip as usize;
                    continue;
                }
            }
            let step = match tracker.boundary() {
                Boundary::At => {
                    landed.push(at);
                    1
                }
                Boundary::Need(n) => n.min(3) as usize,
                Boundary::Unknown => panic!("lost at {at}"),
            };
            tracker.advance(&bytes[at..at + step]);
            at += step;
        }
        assert_eq!(tracker.boundary(), Boundary::At);
        landed.push(at);
        for end in ends {
            assert!(landed.contains(&end), "never stopped at {end}: {landed:?}");
        }
        // Passing more than the payload holds cannot stay exact.
        let mut tracker = FrameTracker::default();
        tracker.advance(&[0x82, 126, 0x01, 0x00]);
        assert_eq!(tracker.payload_left(), Some(256));
        tracker.passed(257);
        assert_eq!(tracker.boundary(), Boundary::Unknown);
    }

    #[test]
    fn an_impossible_length_loses_the_framing() {
        let mut tracker = FrameTracker::default();
        tracker.advance(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(tracker.boundary(), Boundary::Unknown);
        assert_eq!(FrameTracker::unknown().boundary(), Boundary::Unknown);
    }
}
