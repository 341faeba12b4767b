//! RFC 9213's targeted cache control: whether a `CDN-Cache-Control` value is one the cache
//! may obey. The field is a Structured Field Dictionary (RFC 8941 §3.2); a value that does
//! not parse as one, or gives a lifetime directive a value that is not a non-negative
//! Integer, is ignored whole (RFC 9213 §2.1), and `Cache-Control` decides instead.
//!
//! Only the syntax is checked here (no values are kept): `cache::policy` reads the
//! directives with pingora-cache's parser once the value has passed.

/// Directives whose value is a lifetime in seconds: an Integer, not negative.
const LIFETIMES: [&[u8]; 4] = [
    b"max-age",
    b"s-maxage",
    b"stale-while-revalidate",
    b"stale-if-error",
];

/// Whether `value` (one field line) is a valid Dictionary with well-typed lifetimes.
pub fn is_valid_line(value: &[u8]) -> bool {
    let mut input = Input {
        rest: trim_sp(value),
    };
    if input.rest.is_empty() {
        return true; // an empty Dictionary (no directive: no policy)
    }
    loop {
        let Some(key) = input.key() else {
            return false;
        };
        if input.eat(b'=') {
            let Some(item) = input.member_value() else {
                return false;
            };
            if LIFETIMES.contains(&key) && item != Item::NonNegativeInteger {
                return false;
            }
        } else if LIFETIMES.contains(&key) || !input.parameters() {
            return false; // a lifetime without a value is `true`, the wrong type
        }
        input.skip_ows();
        if input.rest.is_empty() {
            return true;
        }
        if !input.eat(b',') {
            return false;
        }
        input.skip_ows();
        if input.rest.is_empty() {
            return false; // a trailing comma
        }
    }
}

/// What a member's value was, as far as the lifetime check needs to know.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    NonNegativeInteger,
    Other,
}

/// The bytes left to parse.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let matched = self.peek() == Some(byte);
        if matched {
            self.rest = &self.rest[1..];
        }
        matched
    }

    /// Takes the bytes while `keep` holds.
    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a [u8] {
        let end = self
            .rest
            .iter()
            .position(|b| !keep(*b))
            .unwrap_or(self.rest.len());
        let (taken, rest) = self.rest.split_at(end);
        self.rest = rest;
        taken
    }

    fn skip_ows(&mut self) {
        self.take_while(|b| b == b' ' || b == b'\t');
    }

    fn skip_sp(&mut self) {
        self.take_while(|b| b == b' ');
    }

    /// RFC 8941 §4.2.3.3: `( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`.
    fn key(&mut self) -> Option<&'a [u8]> {
        let first = self.peek()?;
        if !(first.is_ascii_lowercase() || first == b'*') {
            return None;
        }
        Some(self.take_while(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
        }))
    }

    /// An Item or an Inner List, with its parameters (RFC 8941 §4.2.1.1).
    fn member_value(&mut self) -> Option<Item> {
        if self.eat(b'(') {
            loop {
                self.skip_sp();
                if self.eat(b')') {
                    return self.parameters().then_some(Item::Other);
                }
                self.bare_item()?;
                if !self.parameters() {
                    return None;
                }
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return None;
                }
            }
        }
        let item = self.bare_item()?;
        self.parameters().then_some(item)
    }

    /// `*( ";" *SP key [ "=" bare-item ] )`.
    fn parameters(&mut self) -> bool {
        while self.eat(b';') {
            self.skip_sp();
            if self.key().is_none() {
                return false;
            }
            if self.eat(b'=') && self.bare_item().is_none() {
                return false;
            }
        }
        true
    }

    /// RFC 8941 §4.2.3.1: an Integer or Decimal, String, Token, Byte Sequence or Boolean.
    fn bare_item(&mut self) -> Option<Item> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b':' => self.byte_sequence(),
            b'?' => {
                self.rest = &self.rest[1..];
                (self.eat(b'0') || self.eat(b'1')).then_some(Item::Other)
            }
            b if b.is_ascii_alphabetic() || b == b'*' => {
                self.take_while(|b| is_tchar(b) || b == b':' || b == b'/');
                Some(Item::Other)
            }
            _ => None,
        }
    }

    /// RFC 8941 §4.2.4: up to 15 digits for an Integer; for a Decimal, up to 12 before the
    /// point and 1 to 3 after it.
    fn number(&mut self) -> Option<Item> {
        let negative = self.eat(b'-');
        let whole = self.take_while(|b| b.is_ascii_digit());
        if whole.is_empty() {
            return None;
        }
        if !self.eat(b'.') {
            return (whole.len() <= 15).then_some(if negative {
                Item::Other
            } else {
                Item::NonNegativeInteger
            });
        }
        let fraction = self.take_while(|b| b.is_ascii_digit());
        (whole.len() <= 12 && (1..=3).contains(&fraction.len())).then_some(Item::Other)
    }

    /// RFC 8941 §4.2.5: printable ASCII, with `\` escaping only `"` and `\`.
    fn string(&mut self) -> Option<Item> {
        self.rest = &self.rest[1..];
        loop {
            match self.peek()? {
                b'"' => {
                    self.rest = &self.rest[1..];
                    return Some(Item::Other);
                }
                b'\\' => {
                    self.rest = &self.rest[1..];
                    if !(self.eat(b'"') || self.eat(b'\\')) {
                        return None;
                    }
                }
                0x20..=0x7e => self.rest = &self.rest[1..],
                _ => return None,
            }
        }
    }

    /// RFC 8941 §4.2.7: base64 between colons.
    fn byte_sequence(&mut self) -> Option<Item> {
        self.rest = &self.rest[1..];
        self.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        self.eat(b':').then_some(Item::Other)
    }
}

/// RFC 9110 §5.6.2's `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Without leading and trailing spaces (RFC 8941 §4.2 step 2: SP only, not tabs).
fn trim_sp(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| *b != b' ').unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(start, |i| i + 1);
    &value[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionaries_of_cache_directives_pass() {
        for value in [
            "",
            "max-age=60",
            "max-age=60, private",
            "no-store",
            "  max-age=0 ,\tstale-while-revalidate=30  ",
            "s-maxage=2147483648, must-revalidate",
            "max-age=99999999999, foo=bar, baz=\"q\\\"x\", b=?1, c=:aGk=:, d=1.5, e=-3",
            "max-age=60;a=1;b, x=(a \"b\" 1);p",
            "*star=1",
        ] {
            assert!(is_valid_line(value.as_bytes()), "{value:?}");
        }
    }

    #[test]
    fn anything_else_is_ignored_whole() {
        for value in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age",
            "max-age=-1",
            "max-age=1.5",
            "MaX-aGe=60",
            "max-age =60",
            "max-age= 60",
            "max-age=60,",
            "max-age=60;;",
            "x=\"unterminated",
            "x=(a b",
            "x=?2",
            "x=1234567890123456",
            "x=:aGk=",
            "private=\"a\\b\"",
        ] {
            assert!(!is_valid_line(value.as_bytes()), "{value:?}");
        }
    }
}
