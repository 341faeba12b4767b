//! The text formats the targets read, so that seeds are readable and meaningful: lines,
//! `Name: value` header lines, and `key=value` settings.
#![allow(dead_code)]

/// The input as text (invalid UTF-8 replaced) and its lines.
pub fn lines(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
        .collect()
}

/// `Name: value` lines as raw bytes (the value after the colon, one leading space cut);
/// a line without a colon is skipped. Raw bytes: values may hold any byte.
pub fn header_lines(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    data.split(|b| *b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|b| *b == b':')?;
            let value = &line[colon + 1..];
            let value = value.strip_prefix(b" ").unwrap_or(value);
            Some((line[..colon].to_vec(), value.to_vec()))
        })
        .collect()
}

/// The value of `key=...` among `lines` (the first), if any.
pub fn setting<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A number setting, or `default`.
pub fn number<T: std::str::FromStr>(lines: &[String], key: &str, default: T) -> T {
    setting(lines, key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Splits `data` at the first blank line: (before, after).
pub fn split_blank(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[]),
    }
}
