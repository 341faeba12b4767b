//! The request path, normalised once before routing (RFC 3986 §6.2.2): routes, rules, the
//! cache key and the origin all see the same form, so `/%61dmin` cannot slip past a rule
//! on `/admin` that the origin would then serve.
//!
//! - Percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every other
//!   percent-encoding keeps its meaning and gets upper-case hex digits.
//! - What stays ambiguous is refused rather than guessed: a dot segment (`.` or `..`,
//!   however it is spelt: `%2e`, `.%2E`, followed by a `;parameter` as Tomcat reads it, or
//!   next to an encoded `/` or `\` that an origin may decode into a separator), a
//!   backslash (IIS reads it as `/`), an encoded NUL, and a `%` that encodes nothing.
//!   Resolving dot segments instead would route a request to one place that an origin
//!   with other rules resolves to another.

use std::borrow::Cow;

/// Why a path is refused (shown to the client after "path ... is not allowed: ").
pub type PathRefusal = &'static str;

/// The normalised form of `path` (borrowed when it is already normal), or why it is refused.
pub fn normalise_path(path: &str) -> Result<Cow<'_, str>, PathRefusal> {
    if !path.starts_with('/') {
        return Err("it is not absolute");
    }
    let bytes = path.as_bytes();
    let (needs_work, slash_dot) = scan(bytes);
    let normal: Cow<'_, str> = match needs_work.then(|| decode_unreserved(bytes)).transpose()? {
        // Percent-encodings that were normal already: nothing to rewrite.
        Some(decoded) if decoded != path => Cow::Owned(decoded),
        _ => Cow::Borrowed(path),
    };
    // Without a `%` or a `\` nothing was decoded, and a dot segment needs a `/.`.
    if (needs_work || slash_dot) && has_dot_segment(&normal) {
        return Err("it has a dot segment");
    }
    Ok(normal)
}

/// One pass over a path, which most requests settle with: whether it has a `%` or a `\`
/// (to decode or refuse), and whether it has a `/.` (a dot segment may start there).
fn scan(bytes: &[u8]) -> (bool, bool) {
    let (mut needs_work, mut slash_dot) = (false, false);
    let mut previous = 0u8;
    for &b in bytes {
        match b {
            b'%' | b'\\' => needs_work = true,
            b'.' if previous == b'/' => slash_dot = true,
            _ => {}
        }
        previous = b;
    }
    (needs_work, slash_dot)
}

/// The byte a percent escape spells, when `bytes[at..]` starts with one: `%` and two hex
/// digits, nothing else. The one reading of an escape for the path, the cache key's query
/// names and the deception check's file name.
pub fn escaped_byte(bytes: &[u8], at: usize) -> Option<u8> {
    let digit = |d: &u8| (*d as char).to_digit(16);
    match bytes.get(at..at + 3)? {
        [b'%', high, low] => Some((digit(high)? * 16 + digit(low)?) as u8),
        _ => None,
    }
}

/// Decodes percent-encoded unreserved characters and upper-cases the others' hex digits.
fn decode_unreserved(bytes: &[u8]) -> Result<String, PathRefusal> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err("it has a backslash"),
            b'%' => {
                let value = escaped_byte(bytes, i).ok_or("it has a % that encodes nothing")?;
                match value {
                    0 => return Err("it encodes a NUL"),
                    b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => out.push(b as char),
                    b => {
                        out.push('%');
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xf)]));
                    }
                }
                i += 3;
            }
            // The path came from a `&str`: copy whole characters.
            _ => {
                let rest = std::str::from_utf8(&bytes[i..]).map_err(|_| "it is not text")?;
                let c = rest.chars().next().ok_or("it is not text")?;
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    Ok(out)
}

/// Whether a segment, split at `/` and at an encoded `/` or `\`, is `.` or `..` once a
/// `;parameter` is cut off.
fn has_dot_segment(path: &str) -> bool {
    // Most paths have no dot but in a file name's extension: one scan settles those.
    if !path.contains("/.") && !path.contains("%2") && !path.contains("%5") {
        return false;
    }
    path.split('/').any(|segment| {
        split_encoded_separators(segment).any(|part| {
            let name = part.split(';').next().unwrap_or(part);
            name == "." || name == ".."
        })
    })
}

fn split_encoded_separators(segment: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(segment);
    std::iter::from_fn(move || {
        let text = rest?;
        // Byte comparisons: this runs on every request's path, and must not allocate.
        let bytes = text.as_bytes();
        let cut = (0..bytes.len()).find(|&i| {
            bytes[i] == b'%'
                && bytes.get(i + 1..i + 3).is_some_and(|hex| {
                    hex.eq_ignore_ascii_case(b"2f") || hex.eq_ignore_ascii_case(b"5c")
                })
        });
        match cut {
            Some(i) => {
                rest = Some(&text[i + 3..]);
                Some(&text[..i])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed_as_they_are() {
        for path in [
            "/",
            "/a/b.css",
            "/a//b",
            "/.well-known/x",
            "/a/b;v=1",
            "/..a/b..",
        ] {
            assert!(
                matches!(normalise_path(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn unreserved_characters_are_decoded_and_other_escapes_upper_cased() {
        let cases = [
            ("/%61dmin", "/admin"),
            ("/a%7Eb%2d", "/a~b-"),
            ("/a%3fb", "/a%3Fb"),
            ("/a%2fb", "/a%2Fb"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/%2E%2E%2E", "/..."),
        ];
        for (raw, normal) in cases {
            assert_eq!(normalise_path(raw).as_deref(), Ok(normal), "{raw}");
        }
    }

    /// Found by the `path_key` fuzz target: a path whose percent-encodings were normal
    /// already came back owned, so the proxy rewrote an unchanged request target.
    #[test]
    fn normal_percent_encodings_are_borrowed_too() {
        for path in ["/a%2Fb", "/caf%C3%A9", "/admin/~user/a%2Fb"] {
            assert!(
                matches!(normalise_path(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
        let normal = normalise_path("/%61dmin/%7Euser/a%2fb").unwrap();
        assert!(matches!(normal, Cow::Owned(_)));
        assert!(matches!(normalise_path(&normal), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn every_spelling_of_a_dot_segment_is_refused() {
        for path in [
            "/a/../b",
            "/a/./b",
            "/a/..",
            "/a/..;/b",
            "/a/.;x/b",
            "/a/.%2e/b",
            "/a/%2e./b",
            "/a/%2E%2E/b",
            "/a/..%2fb",
            "/a/..%2Fb",
            "/a/b%2f..%2fc",
            "/a/..%5cb",
            "/%2e",
        ] {
            assert_eq!(normalise_path(path), Err("it has a dot segment"), "{path}");
        }
    }

    #[test]
    fn backslashes_nul_bad_escapes_and_relative_paths_are_refused() {
        assert_eq!(normalise_path("/a\\..\\b"), Err("it has a backslash"));
        assert_eq!(normalise_path("/a%00b"), Err("it encodes a NUL"));
        assert_eq!(
            normalise_path("/a%zz"),
            Err("it has a % that encodes nothing")
        );
        assert_eq!(
            normalise_path("/a%4"),
            Err("it has a % that encodes nothing")
        );
        // Found by the `path_key` fuzz target: `%+E` was read as `%0E`.
        for signed in ["/a%+E", "/a%+5b", "/%-1"] {
            assert_eq!(
                normalise_path(signed),
                Err("it has a % that encodes nothing"),
                "{signed}"
            );
        }
        assert_eq!(normalise_path("a/b"), Err("it is not absolute"));
        assert_eq!(normalise_path("*"), Err("it is not absolute"));
    }
}
