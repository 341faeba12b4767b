//! What the store keeps of a response's header, in a compact form (the rest of its
//! metadata is `cache::meta`).
//!
//! A `ResponseHeader` is two header maps (the fields, and their names with case), each a
//! table of about 100-byte buckets, plus an allocation per value and per cased name: about
//! 3 KiB for the 8 fields of a typical static response, three times the 1 KiB body it
//! describes. The store keeps instead the fields as HTTP/1 writes them (`Name: value` and
//! CRLF, names with their case): the lines many objects have word for word (`Server`,
//! `Date`, `Content-Type`...) in a block shared with them (`cache::shared_lines`), the
//! others in one allocation of its own (a small committed object keeps it beside its key's
//! text: see `Object::committed`). The text is its own field table, and a hit's head is
//! mostly runs of it copied as they are: the shared lines first, then its own (RFC 9110
//! §5.3: the order of fields with different names carries no meaning; lines of one name
//! are always in the same part, in order). A plain hit writes its head from
//! the text (`proxy::hit_head`) and never builds a `ResponseHeader`: the meta it hands
//! pingora builds one only when asked (`StoredMeta::to_meta`, a marked pingora-cache
//! patch), as a conditional, range or `HEAD` request, a stale hit or a response-header
//! edit does. Building one copies the text once, makes each value a view into the copy,
//! parses each name and fills both maps, about four times what a clone of a kept
//! `ResponseHeader` costs. So each worker thread keeps the headers it built for the objects
//! it serves again and again (`HOT_SLOTS`, see `HeaderView::to_header`): a hot object's
//! header is cloned, a cold one's built. The compact form also keeps a lookup over a
//! million objects to a few cache lines per object.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, StatusCode, Version};
use pingora_error::{ErrorType::InvalidHTTPHeader, OrErr, Result};
use pingora_http::ResponseHeader;

use super::hit_lines::{self, HitLines};
use super::shared_lines::{self, is_shared_line, SharedLines};

/// Built headers each worker thread keeps (direct-mapped by generation): a few hundred
/// KiB a thread (a built header holds a copy of its text).
const HOT_SLOTS: usize = 256;

/// Generations of stored headers: each `StoredHeader::from_header` takes the next, so a
/// generation names one header's content for good.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// One slot of a thread's built headers.
#[derive(Default)]
struct HotSlot {
    /// The generation of `header` (0: none).
    kept: u64,
    header: Option<ResponseHeader>,
    /// The generation last built here without being kept: built a second time, it is kept.
    seen: u64,
}

thread_local! {
    static HOT: RefCell<Vec<HotSlot>> = const { RefCell::new(Vec::new()) };
}

/// A response header as the store keeps it (see the module doc).
#[derive(Clone)]
pub struct StoredHeader {
    /// Tells this header's content from any other's (a soft purge's copy keeps it).
    generation: u64,
    /// Its lines many stored headers share (`cache::shared_lines`): a hit writes them
    /// first, then its own text.
    shared: Option<SharedLines>,
    /// Its own text while it keeps it, and a reason phrase of its own: behind one thin pointer,
    /// `None` for most stored objects' headers (packed, with the status's own reason), so
    /// that a stored object's struct stays in jemalloc's 160-byte class (`object::tests`).
    own: Option<Box<OwnParts>>,
    status: StatusCode,
    version: Version,
    /// What it has, in one byte (`Flags`): kept in 40 bytes, so that a stored object's
    /// struct stays in jemalloc's 160-byte class (`object::tests`).
    flags: Flags,
    /// Where a hit's head needs more than a copy of the text.
    hit_lines: HitLines,
}

/// Facts about a stored header, as bits.
#[derive(Clone, Copy, Default)]
struct Flags(u8);

impl Flags {
    /// It keeps its names' case.
    const CASE: u8 = 1;
    /// A field is `Vary` (every lookup asks; most objects have none).
    const VARY: u8 = 2;
    /// A field is `Date`.
    const DATE: u8 = 4;
    /// Its shared lines hold `Accept-Ranges: bytes` (see `shared_lines`).
    const SHARED_ACCEPT_RANGES: u8 = 8;
    /// It made its shared lines, and so counts them in its weight.
    const COUNTS_SHARED: u8 = 16;

    fn with(self, bit: u8, on: bool) -> Flags {
        Flags(if on { self.0 | bit } else { self.0 })
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// What holds a stored header's own parts (see `StoredHeader::own`).
#[cfg(test)]
pub const OWN_PARTS_BYTES: usize = std::mem::size_of::<OwnParts>();

/// What only some stored headers have (see `StoredHeader::own`).
#[derive(Clone)]
struct OwnParts {
    /// Each field as HTTP/1 writes it, in order: its name (with its case, if the header
    /// kept case), `: `, its value, CRLF. A name holds no `:` and a value no CR or LF (both
    /// were valid fields), so the text is its own field table. Exact-size and without a
    /// reference count (a built header takes a copy). `None` once packed: its object then
    /// keeps the text before its body (`Object::committed`), and the header is read
    /// through it (`Object::header`).
    text: Option<Box<[u8]>>,
    /// A reason phrase other than the status's own.
    reason: Option<Box<str>>,
}

impl StoredHeader {
    pub fn from_header(header: &ResponseHeader) -> StoredHeader {
        // The lines many objects share go to an interned block, the rest to this header's
        // own text (`cache::shared_lines`); each sized exactly, as a stored header lives as
        // long as its object.
        let one_accept_ranges = header
            .headers
            .get_all(http::header::ACCEPT_RANGES)
            .iter()
            .nth(1)
            .is_none();
        let (mut shared_len, mut own_len) = (0, 0);
        each_field(header, |name, value| {
            let len = name.len() + value.len() + 4;
            match is_shared_line(name, value, one_accept_ranges) {
                true => shared_len += len,
                false => own_len += len,
            }
        });
        let (mut shared, mut text) = (Vec::with_capacity(shared_len), Vec::with_capacity(own_len));
        let (mut has_date, mut shared_accept_ranges) = (false, false);
        each_field(header, |name, value| {
            has_date |= name.eq_ignore_ascii_case(b"date");
            if is_shared_line(name, value, one_accept_ranges) {
                shared_accept_ranges |= name.eq_ignore_ascii_case(b"accept-ranges");
                write_field(&mut shared, name, value);
            } else {
                write_field(&mut text, name, value);
            }
        });
        let text = text.into_boxed_slice();
        let lines = Lines { rest: &text, at: 0 };
        let hit_lines = HitLines::place(
            lines.map(|line| (line.start, line.start + line.field.0.len())),
            &text,
            header.status == StatusCode::OK,
        );
        let shared = (!shared.is_empty()).then(|| shared_lines::intern(&shared));
        StoredHeader {
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            status: header.status,
            version: header.version,
            own: Some(Box::new(OwnParts {
                text: Some(text),
                // Only a reason other than the status's own (the usual one costs nothing).
                reason: header
                    .get_reason_phrase()
                    .filter(|reason| Some(*reason) != header.status.canonical_reason())
                    .map(Box::from),
            })),
            flags: Flags::default()
                .with(Flags::CASE, header.has_case())
                .with(Flags::VARY, header.headers.contains_key(http::header::VARY))
                .with(Flags::DATE, has_date)
                .with(Flags::SHARED_ACCEPT_RANGES, shared_accept_ranges)
                .with(
                    Flags::COUNTS_SHARED,
                    shared.as_ref().is_some_and(|interned| interned.made),
                ),
            shared: shared.map(|interned| interned.lines),
            hit_lines,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Gives its text to its object to keep (see `text`), which reads it through
    /// `Object::header` from then on. `None` if it was packed already.
    pub fn pack(&mut self) -> Option<Box<[u8]>> {
        let own = self.own.as_mut()?;
        let text = own.text.take();
        if own.reason.is_none() {
            self.own = None;
        }
        text
    }

    /// Whether its object keeps its text (see `pack`).
    pub fn is_packed(&self) -> bool {
        self.own.as_ref().is_none_or(|own| own.text.is_none())
    }

    /// The header with its text: its own, or, once packed, `packed`, its object's copy.
    #[inline]
    pub fn with_text<'a>(&'a self, packed: &'a [u8]) -> HeaderView<'a> {
        let own = self.own.as_ref().and_then(|own| own.text.as_deref());
        HeaderView {
            stored: self,
            shared: self.shared.as_ref().map_or(&[], SharedLines::text),
            text: own.unwrap_or(packed),
        }
    }

    /// A reason phrase other than the status's own.
    #[inline]
    fn reason(&self) -> Option<&str> {
        self.own.as_ref()?.reason.as_deref()
    }

    /// The header with its own text (a packed header's is its object's: `Object::header`).
    #[cfg(test)]
    pub fn view(&self) -> HeaderView<'_> {
        debug_assert!(!self.is_packed(), "read a packed header through its object");
        self.with_text(&[])
    }

    /// Bytes it takes in memory beyond its struct (which is part of its object's): its own
    /// text and a reason phrase of its own, and what holds them (a packed text is counted
    /// by its object).
    pub fn weight(&self) -> usize {
        let shared = match (&self.shared, self.flags.has(Flags::COUNTS_SHARED)) {
            (Some(shared), true) => shared.weight(),
            _ => 0,
        };
        shared
            + self.own.as_ref().map_or(0, |own| {
                std::mem::size_of::<OwnParts>()
                    + own.text.as_ref().map_or(0, |text| text.len())
                    + own.reason.as_ref().map_or(0, |reason| reason.len())
            })
    }
}

/// A stored header and its text, wherever the text is kept (see `StoredHeader::text`).
#[derive(Clone, Copy)]
pub struct HeaderView<'a> {
    stored: &'a StoredHeader,
    /// Its shared lines (`cache::shared_lines`), written before its own.
    shared: &'a [u8],
    /// Its own lines.
    text: &'a [u8],
}

impl<'a> HeaderView<'a> {
    pub fn status(&self) -> StatusCode {
        self.stored.status
    }

    /// Each field's name (with its case, if kept) and value, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.lines().map(|line| line.field)
    }

    /// The values of the `Vary` fields (none without reading the text when there are none).
    pub fn vary(&self) -> impl Iterator<Item = &'a [u8]> {
        let view = match self.stored.flags.has(Flags::VARY) {
            true => *self,
            false => HeaderView {
                shared: &[],
                text: &[],
                ..*self
            },
        };
        view.lines().filter_map(|line| {
            line.field
                .0
                .eq_ignore_ascii_case(b"vary")
                .then_some(line.field.1)
        })
    }

    /// Its lines: the shared ones, then its own (each with its place in its part).
    fn lines(&self) -> impl Iterator<Item = Line<'a>> {
        let shared = Lines {
            rest: self.shared,
            at: 0,
        };
        shared.chain(Lines {
            rest: self.text,
            at: 0,
        })
    }

    /// Its own lines' text (without the shared lines).
    pub fn own_text(&self) -> &'a [u8] {
        self.text
    }

    /// The length of all its lines' text, shared and own.
    pub fn text_len(&self) -> usize {
        self.shared.len() + self.text.len()
    }

    /// The header. Cloned from this thread's built headers if it is there, built from the
    /// text otherwise; kept there from its second build on, so one-off hits over a large
    /// cache do not churn out the hot objects' headers.
    pub fn to_header(&self) -> Result<ResponseHeader> {
        HOT.with_borrow_mut(|slots| {
            if slots.is_empty() {
                slots.resize_with(HOT_SLOTS, HotSlot::default);
            }
            let generation = self.stored.generation;
            let slot = &mut slots[(generation % HOT_SLOTS as u64) as usize];
            if slot.kept == generation {
                if let Some(header) = &slot.header {
                    return Ok(header.clone());
                }
            }
            let header = self.build()?;
            if slot.seen == generation {
                slot.kept = generation;
                slot.header = Some(header.clone());
            } else {
                slot.seen = generation;
            }
            Ok(header)
        })
    }

    /// The header, built from the text: its values are views into one copy of it (the
    /// stored text has no reference count to share).
    fn build(&self) -> Result<ResponseHeader> {
        let stored = self.stored;
        // Room for the fields a hit adds (`Age`, `X-Cache`, the request id) without
        // growing both maps.
        let count = Some(self.lines().count() + 4);
        let mut header = match stored.flags.has(Flags::CASE) {
            true => ResponseHeader::build(stored.status, count)?,
            false => ResponseHeader::build_no_case(stored.status, count)?,
        };
        header.set_version(stored.version);
        if let Some(reason) = stored.reason() {
            header.set_reason_phrase(Some(reason))?;
        }
        // One copy of all the lines, shared and own: the values are views into it.
        let mut joined = Vec::with_capacity(self.text_len());
        joined.extend_from_slice(self.shared);
        joined.extend_from_slice(self.text);
        let text = Bytes::from(joined);
        for line in (Lines { rest: &text, at: 0 }) {
            let (name, value) = line.field;
            // Every value was a valid `HeaderValue` when it was stored.
            let value = pingora_http::header_value_from_raw(text.slice_ref(value));
            let name = text.slice_ref(name);
            if stored.flags.has(Flags::CASE) {
                header.append_header(name, value)?;
            } else {
                let name = HeaderName::from_bytes(&name)
                    .or_err(InvalidHTTPHeader, "stored header name")?;
                header.append_header(name, value)?;
            }
        }
        Ok(header)
    }

    /// Writes the status line and the stored fields of a hit's head to `out`, in their
    /// order and case, as Pingora would write them: the stored `Date` as it is (the
    /// origin's, RFC 9110 §6.6.1), `Age` with `age` and, on a `200`, `Accept-Ranges` with
    /// `bytes`, each with its name titled (Pingora replaces those two in place). `None`
    /// when the head cannot be written this way
    /// and must take Pingora's way: a header kept without case (Pingora titles its
    /// names), no `Content-Length`, two of a replaced field, or a field the hit must not
    /// repeat (`Connection`, `Transfer-Encoding`, and what `refused` names: those the
    /// caller adds). Fields `stripped` names are left out, the others keeping their order.
    ///
    /// The lines found when the header was stored (`cache::hit_lines`) are used when they
    /// were found; the text is read line by line otherwise.
    pub fn write_hit_head(
        &self,
        out: &mut BytesMut,
        age: &[u8],
        refused: &[&str],
        stripped: &[HeaderName],
    ) -> Option<HitHeadFields> {
        let stored = self.stored;
        if !stored.flags.has(Flags::CASE) {
            return None;
        }
        match (stored.reason(), hit_lines::usual_status_line(stored.status)) {
            (None, Some(line)) => out.extend_from_slice(line),
            (reason, _) => {
                out.extend_from_slice(b"HTTP/1.1 ");
                out.extend_from_slice(stored.status.as_str().as_bytes());
                out.extend_from_slice(b" ");
                let reason = reason.or(stored.status.canonical_reason());
                out.extend_from_slice(reason.unwrap_or("").as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        let lines_from = out.len();
        // The shared lines are all of names a hit copies (`shared_lines`).
        out.extend_from_slice(self.shared);
        let (lines, text) = (&stored.hit_lines, self.text);
        let date = stored.flags.has(Flags::DATE);
        if let Some(mut fields) = hit_lines::write(lines, text, date, out, age, refused, stripped) {
            // The shared `Accept-Ranges: bytes` is what a `200` hit writes in its place.
            fields.accept_ranges |=
                stored.status == StatusCode::OK && stored.flags.has(Flags::SHARED_ACCEPT_RANGES);
            return Some(fields);
        }
        out.truncate(lines_from);
        self.scan_hit_head(out, age, refused, stripped)
    }

    /// Whether its hits' lines were placed when it was stored (`cache::hit_lines`).
    #[cfg(test)]
    pub(super) fn hit_lines_placed(&self) -> bool {
        self.stored.hit_lines.is_placed()
    }

    /// [`Self::write_hit_head`]'s lines, from reading the text line by line (the reference
    /// `cache::hit_lines` is tested against).
    pub(super) fn scan_hit_head(
        &self,
        out: &mut BytesMut,
        age: &[u8],
        refused: &[&str],
        stripped: &[HeaderName],
    ) -> Option<HitHeadFields> {
        let refused = |name: &[u8]| hit_lines::is_named(name, refused.iter().copied());
        let stripped =
            |name: &[u8]| hit_lines::is_named(name, stripped.iter().map(HeaderName::as_str));
        let (mut date_done, mut age_done, mut ranges_done) = (false, false, false);
        let mut content_length = None;
        // Pingora's range filter says `Accept-Ranges: bytes` on every whole `200` hit.
        let ok = self.stored.status == StatusCode::OK;
        // Lines written as they are stored go out in runs, one copy each: the shared lines'
        // runs, then the own lines'.
        for part in [self.shared, self.text] {
            let mut run_start = 0;
            for Line {
                field: (name, value),
                start,
                end,
            } in (Lines { rest: part, at: 0 })
            {
                let replaced = if name.eq_ignore_ascii_case(b"date") {
                    date_done = true;
                    None
                } else if name.eq_ignore_ascii_case(b"age") {
                    Some((&mut age_done, &b"Age"[..], age))
                } else if ok && name.eq_ignore_ascii_case(b"accept-ranges") {
                    Some((&mut ranges_done, &b"Accept-Ranges"[..], &b"bytes"[..]))
                } else {
                    None
                };
                if let Some((done, titled, new_value)) = replaced {
                    // A second one: Pingora's insert would drop it.
                    if std::mem::replace(done, true) {
                        return None;
                    }
                    out.extend_from_slice(&part[run_start..start]);
                    write_field(out, titled, new_value);
                    run_start = end;
                } else if name.eq_ignore_ascii_case(b"content-length") {
                    // One length (a list of equal ones was folded into one when stored).
                    content_length = Some(std::str::from_utf8(value).ok()?.parse().ok()?);
                } else if name.eq_ignore_ascii_case(b"connection")
                    || name.eq_ignore_ascii_case(b"transfer-encoding")
                    || refused(name)
                {
                    return None;
                } else if stripped(name) {
                    out.extend_from_slice(&part[run_start..start]);
                    run_start = end;
                }
            }
            out.extend_from_slice(&part[run_start..]);
        }
        Some(HitHeadFields {
            content_length: content_length?,
            date: date_done,
            age: age_done,
            accept_ranges: ranges_done,
        })
    }
}

/// One stored field line: the field, and where its line starts and ends (after its CRLF)
/// in the text.
struct Line<'a> {
    field: (&'a [u8], &'a [u8]),
    start: usize,
    end: usize,
}

/// The lines of a stored header's text (see `StoredHeader::text`).
struct Lines<'a> {
    rest: &'a [u8],
    /// Where `rest` starts in the text.
    at: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        let rest = self.rest;
        let newline = memchr::memchr(b'\n', rest)?;
        let (line, after) = (&rest[..newline], &rest[newline + 1..]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // The first `:` ends the name (a name holds none); `: ` precedes the value.
        let colon = memchr::memchr(b':', line)?;
        let value = line.get(colon + 2..).unwrap_or_default();
        let start = self.at;
        self.at += newline + 1;
        self.rest = after;
        Some(Line {
            field: (&line[..colon], value),
            start,
            end: self.at,
        })
    }
}

/// Calls `f` with each field of `header`: its name as HTTP/1 writes it (with its case, if the
/// header kept case) and its value, in order.
fn each_field(header: &ResponseHeader, mut f: impl FnMut(&[u8], &[u8])) {
    if header.has_case() {
        for (name, value) in header.case_header_iter() {
            f(name.as_slice(), value.as_bytes());
        }
    } else {
        for (name, value) in header.headers.iter() {
            f(name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

/// One header line, `name: value` and CRLF, as HTTP/1 writes it (a stored header, a hit's
/// head, the forwarding fields' lines).
pub fn write_field(out: &mut impl BufMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// What [`HeaderView::write_hit_head`] found among the stored fields.
pub struct HitHeadFields {
    /// The body's length (`Content-Length`).
    pub content_length: usize,
    /// Whether `Date`, `Age` and `Accept-Ranges` were written (else the caller adds them).
    pub date: bool,
    pub age: bool,
    pub accept_ranges: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(header: &ResponseHeader) -> Vec<u8> {
        let mut wire = Vec::new();
        header.header_to_h1_wire(&mut wire);
        wire
    }

    /// Two objects from one origin: their `Server`, `Date`, `Content-Type` and
    /// `Accept-Ranges: bytes` lines are one block, which only the first counts; a hit
    /// writes those lines first, then each object's own, and builds the same fields.
    #[test]
    fn lines_objects_have_in_common_are_kept_once_and_written_first() {
        let header = |etag: &str| {
            let mut header = ResponseHeader::build(200, None).unwrap();
            for (name, value) in [
                ("Server", "shared-lines-origin"),
                ("Date", "Sun, 06 Dec 2026 04:00:00 GMT"),
                ("Content-Type", "text/plain"),
                ("Content-Length", "3"),
                ("ETag", etag),
                ("Accept-Ranges", "bytes"),
            ] {
                header.append_header(name.to_string(), value).unwrap();
            }
            header
        };
        let (one, two) = (header("\"1\""), header("\"2\""));
        let (first, second) = (
            StoredHeader::from_header(&one),
            StoredHeader::from_header(&two),
        );
        let shared = |stored: &StoredHeader| stored.shared.clone().unwrap();
        assert!(std::ptr::eq(shared(&first).text(), shared(&second).text()));
        assert_eq!(
            second.view().own_text(),
            b"Content-Length: 3\r\nETag: \"2\"\r\n"
        );
        let block = shared(&first).weight();
        assert_eq!(first.weight(), second.weight() + block);

        let mut head = BytesMut::new();
        let fields = second
            .view()
            .write_hit_head(&mut head, b"5", &[], &[])
            .unwrap();
        assert_eq!(
            &head[..],
            &b"HTTP/1.1 200 OK\r\nServer: shared-lines-origin\r\n\
               Date: Sun, 06 Dec 2026 04:00:00 GMT\r\nContent-Type: text/plain\r\n\
               Accept-Ranges: bytes\r\nContent-Length: 3\r\nETag: \"2\"\r\n"[..]
        );
        assert!(fields.date && fields.accept_ranges && !fields.age);
        assert_eq!(fields.content_length, 3);
        // Read line by line (a node that strips a copied name), the same head.
        let mut scanned = BytesMut::new();
        let stripped = [HeaderName::from_static("server")];
        second
            .view()
            .write_hit_head(&mut scanned, b"5", &[], &stripped)
            .unwrap();
        let without_server =
            String::from_utf8_lossy(&head).replace("Server: shared-lines-origin\r\n", "");
        assert_eq!(String::from_utf8_lossy(&scanned), without_server);

        let built = second.view().to_header().unwrap();
        for (name, value) in two.headers.iter() {
            assert_eq!(
                built.headers.get_all(name).iter().collect::<Vec<_>>(),
                [value]
            );
        }
        assert_eq!(built.headers.len(), two.headers.len());
    }

    #[test]
    fn a_stored_header_keeps_status_reason_case_order_and_values_but_not_the_read_buffer() {
        // Values that are views into a larger buffer, as a parsed head's are.
        let buffer = Bytes::from(vec![b'v'; 4096]);
        let inside = |p: *const u8| buffer.as_ptr_range().contains(&p);
        let mut header = ResponseHeader::build(203, None).unwrap();
        header.set_reason_phrase(Some("Fine")).unwrap();
        header.set_version(Version::HTTP_10);
        for name in ["X-First", "x-lower", "X-First", "Content-Length"] {
            let value = pingora_http::header_value_from_raw(buffer.slice(10..20));
            header.append_header(name.to_string(), value).unwrap();
        }
        assert!(inside(header.headers["x-first"].as_bytes().as_ptr()));

        let stored = StoredHeader::from_header(&header)
            .view()
            .to_header()
            .unwrap();
        assert_eq!(stored.status, 203);
        assert_eq!(stored.version, Version::HTTP_10);
        assert_eq!(stored.get_reason_phrase(), Some("Fine"));
        let names: Vec<_> = stored
            .case_header_iter()
            .map(|(name, value)| {
                assert!(!inside(value.as_bytes().as_ptr()), "still a view");
                assert_eq!(value.as_bytes(), &buffer[10..20]);
                String::from_utf8(name.as_slice().to_vec()).unwrap()
            })
            .collect();
        assert_eq!(names, ["X-First", "X-First", "x-lower", "Content-Length"]);
        assert_eq!(stored.headers.get_all("x-first").iter().count(), 2);
        assert_eq!(wire(&stored), wire(&header));
    }

    fn hit_head(header: &ResponseHeader) -> Option<(String, HitHeadFields)> {
        let mut out = BytesMut::new();
        let stored = StoredHeader::from_header(header);
        let stripped = [HeaderName::from_static("cache-tag")];
        let fields = stored
            .view()
            .write_hit_head(&mut out, b"7", &["x-cache"], &stripped)?;
        Some((String::from_utf8(out.to_vec()).unwrap(), fields))
    }

    #[test]
    fn a_hit_head_replaces_age_and_accept_ranges_in_place_strips_and_keeps_the_rest() {
        let mut header = ResponseHeader::build(200, None).unwrap();
        for (name, value) in [
            ("server", "o"),
            ("Cache-Tag", "a"),
            ("date", "Tue, 01 Dec 2026 10:00:00 GMT"),
            ("X-A", "1"),
            ("age", "99"),
            ("accept-ranges", "none"),
            ("cache-tag", "b"),
            ("Content-Length", "12"),
        ] {
            header.append_header(name.to_string(), value).unwrap();
        }
        let (head, fields) = hit_head(&header).unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nserver: o\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\nX-A: 1\r\nAge: 7\r\nAccept-Ranges: bytes\r\nContent-Length: 12\r\n"
        );
        assert_eq!(fields.content_length, 12);
        assert!(fields.date && fields.age && fields.accept_ranges);

        // Not a 200: the range filter leaves `Accept-Ranges` alone; a reason of its own.
        let mut header = ResponseHeader::build(404, None).unwrap();
        header.set_reason_phrase(Some("Gone Away")).unwrap();
        header
            .append_header("Accept-Ranges".to_string(), "none")
            .unwrap();
        header
            .append_header("content-length".to_string(), "0")
            .unwrap();
        let (head, fields) = hit_head(&header).unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 404 Gone Away\r\nAccept-Ranges: none\r\ncontent-length: 0\r\n"
        );
        assert!(!fields.date && !fields.age && !fields.accept_ranges);
    }

    #[test]
    fn a_hit_head_it_cannot_reproduce_is_left_to_pingora() {
        let with = |fields: &[(&str, &str)], case: bool| {
            let mut header = match case {
                true => ResponseHeader::build(200, None).unwrap(),
                false => ResponseHeader::build_no_case(200, None).unwrap(),
            };
            for (name, value) in fields {
                header.append_header(name.to_string(), *value).unwrap();
            }
            hit_head(&header)
        };
        let length = ("Content-Length", "2");
        assert!(with(&[length], true).is_some());
        assert!(with(&[length], false).is_none(), "names without case");
        assert!(with(&[("x-other", "1")], true).is_none(), "no length");
        assert!(
            with(&[("Content-Length", "x")], true).is_none(),
            "no number"
        );
        for refused in ["X-Cache", "connection", "Transfer-Encoding"] {
            assert!(with(&[length, (refused, "1")], true).is_none(), "{refused}");
        }
        let age = ("Age", "3");
        assert!(with(&[length, age, age], true).is_none(), "two ages");
        // `Date` is not replaced, so two of them go out as stored (as Pingora's way does).
        let date = ("Date", "Tue, 01 Dec 2026 10:00:00 GMT");
        assert!(with(&[length, date, date], true).is_some(), "two dates");
    }

    #[test]
    fn a_header_without_case_comes_back_without_case() {
        let mut header = ResponseHeader::build_no_case(404, None).unwrap();
        header.append_header("x-b", "2").unwrap();
        header.append_header("etag", "\"a\"").unwrap();
        header.append_header("x-b", "3").unwrap();
        let stored = StoredHeader::from_header(&header);
        assert!(stored.weight() < 200, "{}", stored.weight());
        let back = stored.view().to_header().unwrap();
        assert!(!back.has_case());
        assert_eq!(back.status, 404);
        assert_eq!(back.get_reason_phrase(), Some("Not Found"));
        assert_eq!(wire(&back), wire(&header));
        let values: Vec<_> = back.headers.get_all("x-b").iter().collect();
        assert_eq!(values, ["2", "3"]);
    }

    #[test]
    fn hot_headers_are_kept_per_thread_and_never_confused() {
        let header = |n: usize| {
            let mut header = ResponseHeader::build(200, None).unwrap();
            header.append_header("X-N", n.to_string()).unwrap();
            header
        };
        // More headers than slots, each asked for three times (built, built and kept,
        // cloned), then all of them again, after their slots were taken by others.
        let stored: Vec<_> = (0..HOT_SLOTS * 2 + 3)
            .map(|n| StoredHeader::from_header(&header(n)))
            .collect();
        for _ in 0..2 {
            for (n, one) in stored.iter().enumerate() {
                for _ in 0..3 {
                    assert_eq!(wire(&one.view().to_header().unwrap()), wire(&header(n)));
                }
            }
        }
        let kept = HOT.with_borrow(|slots| slots.iter().filter(|s| s.header.is_some()).count());
        assert!(kept > 0 && kept <= HOT_SLOTS, "{kept}");
    }

    #[test]
    fn fields_are_the_names_with_their_case_and_the_values_in_order() {
        let mut header = ResponseHeader::build(200, None).unwrap();
        let fields = [
            ("Vary", "Accept"),
            ("x-n", "1"),
            ("VARY", "Origin"),
            ("X-Colon", "a: b:c"),
            ("X-Empty", ""),
        ];
        for (name, value) in fields {
            header.append_header(name.to_string(), value).unwrap();
        }
        let stored = StoredHeader::from_header(&header);
        // `Vary` lines are shared ones (`shared_lines`): they come first.
        assert_eq!(stored.view().shared, b"Vary: Accept\r\nVARY: Origin\r\n");
        assert_eq!(
            stored.view().own_text(),
            b"x-n: 1\r\nX-Colon: a: b:c\r\nX-Empty: \r\n"
        );
        // In the header map's order: a name's lines together, where it first appeared.
        let fields: Vec<_> = stored.view().fields().collect();
        assert_eq!(
            fields,
            [
                (&b"Vary"[..], &b"Accept"[..]),
                (b"VARY", b"Origin"),
                (b"x-n", b"1"),
                (b"X-Colon", b"a: b:c"),
                (b"X-Empty", b""),
            ]
        );
        assert_eq!(
            stored.view().vary().collect::<Vec<_>>(),
            [&b"Accept"[..], b"Origin"]
        );
        let empty = StoredHeader::from_header(&ResponseHeader::build(204, None).unwrap());
        assert_eq!(empty.view().fields().count(), 0);
        assert_eq!(empty.view().vary().count(), 0);
    }

    #[test]
    fn an_empty_header_round_trips() {
        let header = ResponseHeader::build(200, None).unwrap();
        let back = StoredHeader::from_header(&header)
            .view()
            .to_header()
            .unwrap();
        assert_eq!(back.headers.len(), 0);
        assert_eq!(wire(&back), wire(&header));
    }
}
