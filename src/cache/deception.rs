//! Web cache deception armour: a page is not stored under a static file's name on the
//! edge's own say-so.
//!
//! The attack: a victim is lured to `/account/avatar.css` (or `/account;x.css`,
//! `/account%2Fx.css`); the origin ignores the suffix and answers with the victim's
//! account page; a rule that caches by extension (`file_extension`, `override_always`, a
//! default lifetime) stores it, and the attacker reads it from the cache. So when the
//! lifetime comes from this cache (a route or rule's, the default, the `Last-Modified`
//! heuristic) rather than from the origin, a response to a path whose last segment names a
//! static file type is not stored if its `Content-Type` is a page or an API answer (HTML,
//! XHTML, JSON, XML). An origin that gives the response a lifetime of its own decided for
//! itself: that is stored as the policy says. A missing `Content-Type` is not judged.
//! (Cloudflare's "Cache Deception Armor" checks the same pairing more strictly; this one
//! refuses only the types a private page comes in, so a misfiled image still caches.)

use crate::rules::path::escaped_byte;

/// Extensions of static files (lower case), as CDNs cache by default.
const STATIC_EXTENSIONS: &[&[u8]] = &[
    b"7z", b"apng", b"avi", b"avif", b"bmp", b"bz2", b"class", b"css", b"csv", b"dmg", b"doc",
    b"docx", b"eot", b"eps", b"exe", b"flac", b"gif", b"gz", b"heic", b"ico", b"iso", b"jar",
    b"jpe", b"jpeg", b"jpg", b"js", b"m4a", b"m4v", b"mid", b"midi", b"mjs", b"mkv", b"mov",
    b"mp3", b"mp4", b"oga", b"ogg", b"ogv", b"opus", b"otf", b"pdf", b"png", b"ppt", b"pptx",
    b"ps", b"rar", b"svg", b"svgz", b"swf", b"tar", b"tgz", b"tif", b"tiff", b"ttf", b"wav",
    b"webm", b"webp", b"woff", b"woff2", b"xls", b"xlsx", b"xz", b"zip", b"zst",
];

/// The longest extension in [`STATIC_EXTENSIONS`].
const LONGEST: usize = 5;

/// Whether the last segment of `path` (as received: percent-encoded) ends in a static
/// file's extension. Read the way an origin might: `%2F` ends a segment as `/` does, `%2E`
/// is a dot, and a `;` parameter after the extension does not hide it (`x.css;v=1`).
pub fn names_static_file(path: &[u8]) -> bool {
    let mut extension = [0u8; LONGEST];
    // Bytes after the segment's last dot: `None` before any dot, or once too long.
    let mut length: Option<usize> = None;
    // After a `;`, bytes belong to a parameter, not to the extension (a later dot restarts).
    let mut in_parameter = false;
    let mut i = 0;
    while i < path.len() {
        let (byte, width) = match escaped_byte(path, i) {
            Some(decoded) => (decoded, 3),
            None => (path[i], 1),
        };
        i += width;
        match byte {
            b'/' => {
                length = None;
                in_parameter = false;
            }
            b'.' => {
                length = Some(0);
                in_parameter = false;
            }
            b';' => in_parameter = true,
            _ if in_parameter => {}
            other => {
                length = match length {
                    Some(n) if n < LONGEST => {
                        extension[n] = other.to_ascii_lowercase();
                        Some(n + 1)
                    }
                    _ => None,
                }
            }
        }
    }
    length.is_some_and(|n| STATIC_EXTENSIONS.contains(&&extension[..n]))
}

/// Whether a `Content-Type` value is a page or an API answer: `text/html`,
/// `application/xhtml+xml`, `application/json`, `text/json`, `application/xml`,
/// `text/xml`, or any `+json` / `+xml` type but SVG's.
pub fn is_page_type(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let is = |name: &[u8]| essence.eq_ignore_ascii_case(name);
    let ends = |suffix: &[u8]| {
        essence.len() >= suffix.len()
            && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    is(b"text/html")
        || is(b"application/json")
        || is(b"text/json")
        || is(b"application/xml")
        || is(b"text/xml")
        || ends(b"+json")
        || (ends(b"+xml") && !is(b"image/svg+xml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_names_are_read_as_an_origin_might() {
        for path in [
            "/static/site.css",
            "/account/avatar.PNG",
            "/account;x.css",
            "/account%2Fx.css",
            "/account%2fx.js",
            "/account%2Ecss",
            "/x.css;jsessionid=1",
            "/a.b/c.woff2",
            "/%2e%2e/x.jpg",
            "/x.c%73s",
        ] {
            assert!(names_static_file(path.as_bytes()), "{path}");
        }
        for path in [
            "/",
            "/account",
            "/account/",
            "/x.css/",
            "/x.css/profile",
            "/x.html",
            "/x.json",
            "/css",
            "/x.cssx",
            "/x.woff22",
            "/x.css%",
            "/x.css%2",
            "/x%2.css%zz",
            "/x.css%00",
        ] {
            assert!(!names_static_file(path.as_bytes()), "{path}");
        }
    }

    #[test]
    fn page_types_are_html_json_and_xml() {
        for page in [
            "text/html",
            "text/html; charset=utf-8",
            "TEXT/HTML",
            "application/xhtml+xml",
            "application/json",
            "application/problem+json",
            "text/xml",
            "application/atom+xml",
        ] {
            assert!(is_page_type(page.as_bytes()), "{page}");
        }
        for asset in [
            "text/css",
            "application/javascript",
            "image/png",
            "image/svg+xml",
            "font/woff2",
            "application/octet-stream",
            "",
        ] {
            assert!(!is_page_type(asset.as_bytes()), "{asset}");
        }
    }
}
