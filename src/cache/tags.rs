//! Cache tags: the response headers that group stored objects for `POST /purge {"tags": ..}`.
//!
//! The tag headers are configured (`cache.tag_headers`, by default `Cache-Tag`, which
//! Cloudflare reads comma-separated, and `Surrogate-Key`, which Fastly reads
//! space-separated). Every line of every tag header is split on commas *and* whitespace, so
//! either header may use either separator (`a, b c` is three tags) and a tag never holds
//! either. Tags are compared without regard to ASCII case, as Cloudflare and CloudFront do
//! (Fastly and Akamai tell case apart; purging a little more is the safe side).
//!
//! Limits, close to the large CDNs': a tag is 1 to [`MAX_TAG_LEN`] visible ASCII characters
//! (a token with anything else is ignored, never truncated into another tag), and an object
//! keeps its first [`MAX_TAGS`] distinct tags; later ones are ignored.

use http::HeaderName;
use pingora_http::ResponseHeader;

/// Longest tag kept (Cloudflare's limit; CloudFront's is 256, Akamai's 128).
pub const MAX_TAG_LEN: usize = 1024;
/// Tags kept per object (Akamai's limit; CloudFront keeps 50).
pub const MAX_TAGS: usize = 128;

/// Whether `byte` separates tags.
fn is_separator(byte: u8) -> bool {
    byte == b',' || byte.is_ascii_whitespace()
}

/// A tag as stored and as purged: lower-cased; `None` when it is not a valid tag.
pub fn normalise(token: &[u8]) -> Option<Box<str>> {
    if token.is_empty()
        || token.len() > MAX_TAG_LEN
        || !token.iter().all(|&b| (33..=126).contains(&b) && b != b',')
    {
        return None;
    }
    let text = std::str::from_utf8(token).ok()?; // visible ASCII: always UTF-8
    Some(text.to_ascii_lowercase().into_boxed_str())
}

/// An object's tags, nothing allocated for none (most objects; a stored object keeps them
/// with the other things few objects have: `meta::StoredMeta`).
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Tags(Box<[Box<str>]>);

impl std::ops::Deref for Tags {
    type Target = [Box<str>];

    fn deref(&self) -> &[Box<str>] {
        &self.0
    }
}

/// The tags a response carries in the headers `names`, normalised, distinct, in order, at
/// most [`MAX_TAGS`]. Empty (and nothing allocated) when it carries none.
pub fn of_response(header: &ResponseHeader, names: &[HeaderName]) -> Tags {
    let mut tags: Vec<Box<str>> = Vec::new();
    'headers: for name in names {
        for value in header.headers.get_all(name) {
            for token in value.as_bytes().split(|&b| is_separator(b)) {
                let Some(tag) = normalise(token) else {
                    continue;
                };
                if tags.contains(&tag) {
                    continue;
                }
                if tags.len() == MAX_TAGS {
                    log::debug!(
                        "more than {MAX_TAGS} cache tags on a response; the rest are ignored"
                    );
                    break 'headers;
                }
                tags.push(tag);
            }
        }
    }
    Tags(tags.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<HeaderName> {
        vec![
            HeaderName::from_static("cache-tag"),
            HeaderName::from_static("surrogate-key"),
        ]
    }

    fn tags(lines: &[(&str, &str)]) -> Vec<String> {
        let mut header = ResponseHeader::build(200, None).unwrap();
        for (name, value) in lines {
            let value = http::HeaderValue::from_bytes(value.as_bytes()).unwrap();
            header.append_header(name.to_string(), value).unwrap();
        }
        of_response(&header, &names())
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn both_separators_in_both_headers_over_several_lines() {
        assert_eq!(
            tags(&[
                ("Cache-Tag", "Product-1, shelf,,  ALL"),
                ("Cache-Tag", "extra"),
                ("Surrogate-Key", "  key-a\tkey-b all product-1 "),
            ]),
            ["product-1", "shelf", "all", "extra", "key-a", "key-b"]
        );
        assert!(tags(&[("x-other", "a")]).is_empty());
    }

    #[test]
    fn bad_tokens_are_ignored_and_the_count_is_capped() {
        let long = "x".repeat(MAX_TAG_LEN + 1);
        let exact = "y".repeat(MAX_TAG_LEN);
        assert_eq!(
            tags(&[("cache-tag", &format!("ok,{long},{exact},caf\u{e9}"))]),
            ["ok".to_string(), exact]
        );
        let many: Vec<String> = (0..MAX_TAGS + 10).map(|i| format!("t{i}")).collect();
        let kept = tags(&[("surrogate-key", &many.join(" "))]);
        assert_eq!(kept.len(), MAX_TAGS);
        assert_eq!(kept[MAX_TAGS - 1], format!("t{}", MAX_TAGS - 1));
    }

    #[test]
    fn purge_tags_normalise_like_stored_ones() {
        assert_eq!(normalise(b"Sale-2024").as_deref(), Some("sale-2024"));
        assert_eq!(normalise(b""), None);
        assert_eq!(normalise(b"a b"), None);
        assert_eq!(normalise(b"a,b"), None);
    }
}
