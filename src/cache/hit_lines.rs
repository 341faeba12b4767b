//! Where a hit's head needs more than a copy of a stored header's text, found once when
//! the header is stored, so that a plain hit (`proxy::hit_head`) does not read the text
//! line by line (two searches and a chain of name comparisons per line, about 2k
//! instructions for a typical static response's nine fields).
//!
//! A hit's head is the stored lines in their order with `Age` and (on a `200`)
//! `Accept-Ranges` replaced, the lines of the fields the node strips left out, and
//! nothing written at all when a field the edge adds itself is stored
//! (`HeaderView::write_hit_head`). So the lines that matter are those of `Age`,
//! `Accept-Ranges` and `Content-Length` (whose value frames the body), and any line whose
//! name a node could refuse or strip: any name but the few in [`COPIED`] and those above.
//! [`HitLines`] keeps where these start (10 bytes, inside the stored header's own 64). A
//! header that does not fit this picture (more than two such other lines, two `Age` or
//! `Accept-Ranges` or `Content-Length` lines, a `Connection` or `Transfer-Encoding` line,
//! a text over 64 KiB) keeps none, and its hits read the text as before.

use bytes::BytesMut;
use http::{HeaderName, StatusCode};

use super::header::{write_field, HitHeadFields};

/// "No such line."
const NONE: u16 = u16::MAX;

/// Lines a hit copies as they are and that no node refuses or strips (a node whose
/// refused or stripped names include one of them reads the text instead): the fields a
/// static origin's response commonly has, besides those [`HitLines`] places.
const COPIED: [&str; 9] = [
    "server",
    "date",
    "content-type",
    "last-modified",
    "etag",
    "cache-control",
    "expires",
    "vary",
    "content-encoding",
];

/// Where the lines a hit treats apart start in the stored text (see the module doc); all
/// `NONE` when the header does not fit (its `Content-Length` line is never `NONE`
/// otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HitLines {
    age: u16,
    accept_ranges: u16,
    content_length: u16,
    /// Lines whose names are neither [`COPIED`] nor placed above, in order.
    other: [u16; 2],
}

impl HitLines {
    const UNPLACED: HitLines = HitLines {
        age: NONE,
        accept_ranges: NONE,
        content_length: NONE,
        other: [NONE; 2],
    };

    /// Whether the header fitted (see the module doc).
    #[cfg(test)]
    pub fn is_placed(&self) -> bool {
        self.content_length != NONE
    }

    /// The lines of a stored header's `text`, given each line's start and the end of its
    /// name. `Accept-Ranges` is replaced on a `200` only (`ok`), as Pingora's range filter
    /// does; otherwise its line is copied.
    pub fn place(lines: impl Iterator<Item = (usize, usize)>, text: &[u8], ok: bool) -> HitLines {
        let mut placed = HitLines::UNPLACED;
        let mut fits = text.len() < usize::from(NONE);
        for (start, name_end) in lines {
            let name = &text[start..name_end];
            let slot = if name.eq_ignore_ascii_case(b"age") {
                &mut placed.age
            } else if ok && name.eq_ignore_ascii_case(b"accept-ranges") {
                &mut placed.accept_ranges
            } else if name.eq_ignore_ascii_case(b"content-length") {
                &mut placed.content_length
            } else if is_copied(name) || name.eq_ignore_ascii_case(b"accept-ranges") {
                continue;
            } else if placed.other[0] == NONE {
                &mut placed.other[0]
            } else {
                &mut placed.other[1]
            };
            // A second one of a kind (or a third other line) does not fit; nor do
            // `Connection` and `Transfer-Encoding`, which no hit repeats.
            fits &= *slot == NONE
                && !name.eq_ignore_ascii_case(b"connection")
                && !name.eq_ignore_ascii_case(b"transfer-encoding");
            *slot = u16::try_from(start).unwrap_or(NONE);
        }
        fits &= placed.content_length != NONE;
        if fits {
            placed
        } else {
            HitLines::UNPLACED
        }
    }
}

/// A hit's status line, whole, for the statuses a cache commonly serves with their
/// canonical reason: one append where the line's pieces took five. `None` for any other
/// status.
pub fn usual_status_line(status: StatusCode) -> Option<&'static [u8]> {
    let line: &'static [u8] = match status.as_u16() {
        200 => b"HTTP/1.1 200 OK\r\n",
        203 => b"HTTP/1.1 203 Non Authoritative Information\r\n",
        204 => b"HTTP/1.1 204 No Content\r\n",
        206 => b"HTTP/1.1 206 Partial Content\r\n",
        301 => b"HTTP/1.1 301 Moved Permanently\r\n",
        302 => b"HTTP/1.1 302 Found\r\n",
        307 => b"HTTP/1.1 307 Temporary Redirect\r\n",
        308 => b"HTTP/1.1 308 Permanent Redirect\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        410 => b"HTTP/1.1 410 Gone\r\n",
        _ => return None,
    };
    Some(line)
}

/// Whether `name` is one of `names` (given in lower case), in any case.
pub fn is_named<'a>(name: &[u8], mut names: impl Iterator<Item = &'a str>) -> bool {
    names.any(|one| name.eq_ignore_ascii_case(one.as_bytes()))
}

fn is_copied(name: &[u8]) -> bool {
    COPIED
        .iter()
        .any(|copied| name.eq_ignore_ascii_case(copied.as_bytes()))
}

/// Whether `name` is one a hit copies ([`COPIED`]) or places (`Age`, `Accept-Ranges`,
/// `Content-Length`). Every hit asks it of each name the node refuses or strips, so the
/// one candidate is picked by length and first letter: a name compares with one at most.
#[inline(never)] // kept out of `write`, whose own copies are worth inlining
fn is_copied_or_placed(name: &[u8]) -> bool {
    let first = name.first().map(u8::to_ascii_lowercase);
    let candidate: &[u8] = match (name.len(), first) {
        (3, Some(b'a')) => b"age",
        (4, Some(b'd')) => b"date",
        (4, Some(b'e')) => b"etag",
        (4, Some(b'v')) => b"vary",
        (6, Some(b's')) => b"server",
        (7, Some(b'e')) => b"expires",
        (12, Some(b'c')) => b"content-type",
        (13, Some(b'a')) => b"accept-ranges",
        (13, Some(b'c')) => b"cache-control",
        (13, Some(b'l')) => b"last-modified",
        (14, Some(b'c')) => b"content-length",
        (16, Some(b'c')) => b"content-encoding",
        _ => return false,
    };
    name.eq_ignore_ascii_case(candidate)
}

/// The head's lines from `text` to `out`, as `HeaderView::write_hit_head` writes them
/// (`date`: a `Date` is stored), and what they hold; `None` when the head cannot be
/// written this way.
pub fn write(
    placed: &HitLines,
    text: &[u8],
    date: bool,
    out: &mut BytesMut,
    age: &[u8],
    refused: &[&str],
    stripped: &[HeaderName],
) -> Option<HitHeadFields> {
    if placed.content_length == NONE {
        return None;
    }
    // Only the other lines are compared with the node's names, so none of those may be a
    // name the lines above stand for.
    let mut node_names = refused
        .iter()
        .copied()
        .chain(stripped.iter().map(HeaderName::as_str));
    if node_names.any(|name| is_copied_or_placed(name.as_bytes())) {
        return None;
    }
    // The lines that are not copied, by where they start.
    let mut cuts: [Cut; 4] = [(NONE, None); 4];
    let mut count = 0;
    let candidates = [
        (placed.age, Some((&b"Age"[..], age))),
        (
            placed.accept_ranges,
            Some((&b"Accept-Ranges"[..], &b"bytes"[..])),
        ),
    ];
    for start in placed.other {
        if start == NONE {
            continue;
        }
        let name = line_name(text, start);
        if is_named(name, refused.iter().copied()) {
            return None;
        }
        if is_named(name, stripped.iter().map(HeaderName::as_str)) {
            cuts[count] = (start, None);
            count += 1;
        }
    }
    for (start, with) in candidates {
        if start != NONE {
            cuts[count] = (start, with);
            count += 1;
        }
    }
    let cuts = &mut cuts[..count];
    cuts.sort_unstable_by_key(|(start, _)| *start);
    let mut run_start = 0;
    for &(start, with) in cuts.iter() {
        let start = usize::from(start);
        out.extend_from_slice(&text[run_start..start]);
        if let Some((name, value)) = with {
            write_field(out, name, value);
        }
        run_start = line_end(text, start);
    }
    out.extend_from_slice(&text[run_start..]);
    let length = line_value(text, placed.content_length);
    Some(HitHeadFields {
        content_length: parse_length(length)?,
        date,
        age: placed.age != NONE,
        accept_ranges: placed.accept_ranges != NONE,
    })
}

/// A stored `Content-Length`'s value as a number, read without a UTF-8 check: digits only,
/// `None` for anything else (none was stored: the value passed Pingora's check and was
/// folded to one when stored) or a number past `usize`.
fn parse_length(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &digit| {
        let digit = digit.wrapping_sub(b'0');
        (digit < 10).then_some(())?;
        n.checked_mul(10)?.checked_add(usize::from(digit))
    })
}

/// A line that is not copied: where it starts, and the field written instead (none: the
/// line is left out).
type Cut<'a> = (u16, Option<(&'a [u8], &'a [u8])>);

/// The name of the line at `start` (a stored name holds no `:`).
fn line_name(text: &[u8], start: u16) -> &[u8] {
    let line = &text[usize::from(start)..];
    &line[..memchr::memchr(b':', line).unwrap_or(0)]
}

/// The value of the line at `start` (after `: `, before CRLF).
fn line_value(text: &[u8], start: u16) -> &[u8] {
    let line = &text[usize::from(start)..line_end(text, usize::from(start))];
    let colon = memchr::memchr(b':', line).unwrap_or(0);
    let value = line.get(colon + 2..).unwrap_or_default();
    value.strip_suffix(b"\r\n").unwrap_or(value)
}

/// Where the line at `start` ends (after its LF).
fn line_end(text: &[u8], start: usize) -> usize {
    memchr::memchr(b'\n', &text[start..]).map_or(text.len(), |lf| start + lf + 1)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use http::HeaderName;
    use pingora_http::ResponseHeader;

    use crate::cache::header::{HitHeadFields, StoredHeader};

    /// Fields a stored header may have, in the cases origins send them.
    const POOL: [(&str, &str); 14] = [
        ("Server", "nginx"),
        ("Date", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ("Content-Length", "12"),
        ("content-length", "x"),
        ("Age", "99"),
        ("accept-ranges", "none"),
        ("ETag", "\"a\""),
        ("X-Other", "1"),
        ("Cache-Tag", "t"),
        ("x-cache", "HIT"),
        ("Connection", "close"),
        ("Vary", "Accept"),
        ("X-Third", "3"),
        ("Transfer-Encoding", "chunked"),
    ];

    /// `write_hit_head` with the lines placed when stored, and the text read line by line:
    /// the same head, or `None` both ways.
    fn both_ways(
        stored: &StoredHeader,
        stripped: &[HeaderName],
    ) -> (Option<String>, Option<String>) {
        let refused = ["x-portico-ref", "x-cache"];
        let shown = |out: BytesMut, f: HitHeadFields| {
            let (length, date, age, ranges) = (f.content_length, f.date, f.age, f.accept_ranges);
            format!("{out:?} {length} {date} {age} {ranges}")
        };
        let mut placed = BytesMut::new();
        let placed = stored
            .view()
            .write_hit_head(&mut placed, b"7", &refused, stripped)
            .map(|f| shown(placed, f));
        // The reference starts with the status line `write_hit_head` writes.
        let mut scanned = BytesMut::new();
        stored.view().write_hit_head(&mut scanned, b"7", &[], &[]);
        let status_line = scanned
            .iter()
            .position(|b| *b == b'\n')
            .map_or(0, |n| n + 1);
        scanned.truncate(status_line);
        let scanned = stored
            .view()
            .scan_hit_head(&mut scanned, b"7", &refused, stripped)
            .map(|f| shown(scanned, f));
        (placed, scanned)
    }

    #[test]
    fn stored_lengths_are_read_as_digits_only() {
        use super::parse_length;
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"1024"), Some(1024));
        assert_eq!(parse_length(b"007"), Some(7));
        let max = usize::MAX.to_string();
        assert_eq!(parse_length(max.as_bytes()), Some(usize::MAX));
        assert_eq!(parse_length(format!("{max}0").as_bytes()), None);
        for bad in [
            &b""[..],
            b"+5",
            b"-1",
            b" 5",
            b"5 ",
            b"1,2",
            b"x",
            b"1e3",
            b"\xff",
        ] {
            assert_eq!(
                parse_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The length-first test is the plain one: every copied and placed name, in any case,
    /// and no other (names of every length up to the longest, and near misses).
    #[test]
    fn copied_or_placed_names_are_told_by_length_first() {
        use super::{is_copied, is_copied_or_placed};
        let placed = ["age", "accept-ranges", "content-length"];
        let plain = |name: &[u8]| {
            is_copied(name)
                || placed
                    .iter()
                    .any(|p| name.eq_ignore_ascii_case(p.as_bytes()))
        };
        let mut names: Vec<String> = super::COPIED
            .iter()
            .chain(&placed)
            .map(|n| n.to_string())
            .collect();
        names.extend(names.clone().iter().map(|n| n.to_ascii_uppercase()));
        names.extend(
            [
                "Content-Type",
                "ETag",
                "x-cache",
                "x-portico-ref",
                "cache-tag",
                "surrogate-key",
                "ages",
                "dat",
                "content-lengthy",
                "set-cookie",
                "content-typo",
                "accept-rangez",
                "sErVeR",
                "vars",
            ]
            .map(String::from),
        );
        names.extend((0..20).map(|n| "x".repeat(n)));
        for name in &names {
            assert_eq!(
                is_copied_or_placed(name.as_bytes()),
                plain(name.as_bytes()),
                "{name}"
            );
        }
        assert!(is_copied_or_placed(b"Cache-Control"));
        assert!(!is_copied_or_placed(b"Surrogate-Key"));
    }

    #[test]
    fn usual_status_lines_are_the_status_with_its_canonical_reason() {
        let mut usual = 0;
        for code in 100..600 {
            let status = http::StatusCode::from_u16(code).unwrap();
            if let Some(line) = super::usual_status_line(status) {
                let reason = status.canonical_reason().unwrap();
                assert_eq!(line, format!("HTTP/1.1 {code} {reason}\r\n").as_bytes());
                usual += 1;
            }
        }
        assert_eq!(usual, 10);
    }

    #[test]
    fn placed_lines_write_the_head_the_text_reads_line_by_line() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let tag_sets = [
            vec![],
            vec![HeaderName::from_static("cache-tag")],
            vec![
                HeaderName::from_static("x-other"),
                HeaderName::from_static("cache-tag"),
            ],
            vec![HeaderName::from_static("etag")],
        ];
        let (mut placed_cases, mut somes) = (0, 0);
        for _ in 0..3000 {
            let status = [200, 404, 203][next(3) as usize];
            let mut header = ResponseHeader::build(status, None).unwrap();
            // Most heads have a good length somewhere.
            let (count, length_at) = (next(7), next(9));
            for at in 0..=count {
                if at == length_at {
                    header.append_header("Content-Length", "5").unwrap();
                }
                let (name, value) = POOL[next(POOL.len() as u64) as usize];
                header.append_header(name.to_string(), value).unwrap();
            }
            let stored = StoredHeader::from_header(&header);
            let stripped = &tag_sets[next(tag_sets.len() as u64) as usize];
            let (placed, scanned) = both_ways(&stored, stripped);
            assert_eq!(placed, scanned, "{header:?} stripping {stripped:?}");
            somes += usize::from(placed.is_some());
            placed_cases += usize::from(stored.view().hit_lines_placed());
        }
        // The comparison covers both ways, and heads written either way.
        assert!(placed_cases > 300 && placed_cases < 2700, "{placed_cases}");
        assert!(somes > 300, "{somes}");
    }
}
