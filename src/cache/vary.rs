//! `Vary` (RFC 9111 §4.1): which request fields pick a variant, and their values normalised
//! so that spellings that mean the same select the same variant (one URL cannot be split
//! into thousands of objects by junk whitespace or letter case). The store caps variants
//! per URL besides (`store::MAX_VARIANTS`).

use http::header::{GetAll, HeaderName, HeaderValue};
use pingora_cache::key::HashBinary;
use pingora_cache::VarianceBuilder;
use pingora_http::{RequestHeader, ResponseHeader};

/// Request fields whose values are comma-separated lists of case-insensitive tokens (RFC
/// 9110 §12.5): letter case and whitespace around `,` `;` `=` never change their meaning.
const TOKEN_LISTS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
];

/// The variance of `request` under `stored`'s `Vary` (every `Vary` field line, names
/// case-insensitive); `None` when it names no field.
pub fn variance(stored: &ResponseHeader, request: &RequestHeader) -> Option<HashBinary> {
    let lines = stored.headers.get_all(http::header::VARY);
    variance_of(lines.iter().map(HeaderValue::as_bytes), request)
}

/// The same, from the stored response's `Vary` field lines.
pub fn variance_of<'a>(
    vary_lines: impl Iterator<Item = &'a [u8]>,
    request: &RequestHeader,
) -> Option<HashBinary> {
    let mut builder = VarianceBuilder::new();
    for line in vary_lines {
        for name in line.split(|b| *b == b',') {
            // `HeaderName` lower-cases: `Accept-Language` and `accept-language` are one name.
            let Ok(name) = HeaderName::from_bytes(name.trim_ascii()) else {
                continue;
            };
            let lines = request.headers.get_all(&name);
            // RFC 9111 §4.1: an absent field matches only its absence, never an empty
            // value. NUL can be no field's value (refused before routing).
            let value = match lines.iter().next() {
                Some(_) => normalise(&name, lines),
                None => vec![0],
            };
            builder.add_owned_name_value(name.as_str().to_owned(), value);
        }
    }
    builder.finalize()
}

/// One value for all of a field's lines. Lists: members trimmed, empty members dropped,
/// no whitespace around `;` and `=`, joined with `,` (and lower-cased for token lists).
/// Other fields: no whitespace at the ends of each line nor around its commas (RFC 9110
/// §5.6.1's optional whitespace of a list; in any other value it means nothing either), the
/// lines joined with `,`; case and everything else kept.
pub fn normalise(name: &HeaderName, lines: GetAll<'_, HeaderValue>) -> Vec<u8> {
    let list = TOKEN_LISTS.contains(&name.as_str());
    let mut out = Vec::new();
    for line in lines {
        let bytes = line.as_bytes();
        if !list {
            for (i, part) in bytes.split(|b| *b == b',').enumerate() {
                if i > 0 || !out.is_empty() {
                    out.push(b',');
                }
                out.extend_from_slice(part.trim_ascii());
            }
            continue;
        }
        for member in bytes.split(|b| *b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(b',');
            }
            let mut pending_space = false;
            for &b in member {
                if b == b' ' || b == b'\t' {
                    pending_space = true;
                    continue;
                }
                let separator = matches!(b, b';' | b'=');
                // Whitespace is kept only between two ordinary characters.
                if pending_space && !separator && !matches!(out.last(), Some(b';' | b'=' | b',')) {
                    out.push(b' ');
                }
                pending_space = false;
                out.push(b.to_ascii_lowercase());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (name, value) in headers {
            r.append_header(name.to_string(), *value).unwrap();
        }
        r
    }

    fn stored(vary: &[&str]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for v in vary {
            r.append_header("vary", *v).unwrap();
        }
        r
    }

    #[test]
    fn spellings_that_mean_the_same_share_a_variant() {
        let vary = stored(&["Accept-Encoding"]);
        let base = variance(&vary, &request(&[("accept-encoding", "gzip, br")]));
        for same in [
            &[("accept-encoding", "gzip,br")][..],
            &[("Accept-Encoding", "  GZIP ,  BR  ")],
            &[("accept-encoding", "gzip"), ("accept-encoding", "br")],
            &[("accept-encoding", "gzip,, br,")],
        ] {
            assert_eq!(variance(&vary, &request(same)), base, "{same:?}");
        }
        for different in [
            &[("accept-encoding", "br, gzip")][..],
            &[("accept-encoding", "gzip")],
            &[],
        ] {
            assert_ne!(variance(&vary, &request(different)), base, "{different:?}");
        }
        let language = stored(&["accept-language"]);
        assert_eq!(
            variance(
                &language,
                &request(&[("accept-language", "en-US ; q = 0.8")])
            ),
            variance(&language, &request(&[("accept-language", "en-us;q=0.8")])),
        );
        // Other fields keep their case: only whitespace at the ends of each line and
        // around its commas goes.
        let custom = stored(&["x-tenant"]);
        assert_eq!(
            variance(&custom, &request(&[("x-tenant", " Acme ")])),
            variance(&custom, &request(&[("x-tenant", "Acme")])),
        );
        assert_eq!(
            variance(&custom, &request(&[("x-tenant", " a , b c,d ")])),
            variance(&custom, &request(&[("x-tenant", "a,b c,d")])),
        );
        assert_ne!(
            variance(&custom, &request(&[("x-tenant", "a,bc")])),
            variance(&custom, &request(&[("x-tenant", "a,b c")])),
        );
        assert_ne!(
            variance(&custom, &request(&[("x-tenant", "b,a")])),
            variance(&custom, &request(&[("x-tenant", "a,b")])),
        );
        assert_ne!(
            variance(&custom, &request(&[("x-tenant", "acme")])),
            variance(&custom, &request(&[("x-tenant", "Acme")])),
        );
    }

    #[test]
    fn vary_over_several_lines_and_names_in_any_case() {
        let one_line = stored(&["Accept-Encoding, X-Tenant"]);
        let two_lines = stored(&["x-tenant", "ACCEPT-ENCODING"]);
        let a = request(&[("accept-encoding", "gzip"), ("x-tenant", "a")]);
        let b = request(&[("accept-encoding", "gzip"), ("x-tenant", "b")]);
        assert_eq!(variance(&one_line, &a), variance(&two_lines, &a));
        assert_ne!(variance(&two_lines, &a), variance(&two_lines, &b));
        assert_eq!(variance(&stored(&[]), &a), None);
    }

    #[test]
    fn an_absent_field_matches_only_its_absence() {
        let vary = stored(&["X-Arb, Accept-Encoding"]);
        let absent = variance(&vary, &request(&[]));
        for empty in [vec![("x-arb", "")], vec![("accept-encoding", " , ")]] {
            assert_ne!(variance(&vary, &request(&empty)), absent, "{empty:?}");
        }
        assert_eq!(variance(&vary, &request(&[])), absent);
    }
}
