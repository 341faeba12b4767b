//! Human durations in config files: `500ms`, `5s`, `5m`, `1h`, `1d`.

use std::time::Duration;

/// Parses `<integer><unit>` with unit `ms`, `s`, `m`, `h` or `d`.
///
/// A bare number is refused on purpose: `timeout: 5` is ambiguous, and the error says so.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("\"{text}\" has no unit; write e.g. 500ms, 5s, 5m, 1h or 1d"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration; write e.g. 500ms, 5s, 5m, 1h or 1d"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "\"{text}\" has an unknown unit \"{unit}\"; use ms, s, m, h or d"
            ))
        }
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("\"{text}\" is too long"))
}

/// Parses a byte size: a plain integer, or with `KiB`, `MiB` or `GiB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| {
        format!("\"{text}\" is not a size; write e.g. 65536, 512KiB, 256MiB or 1GiB")
    })?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "\"{text}\" has an unknown unit \"{other}\"; use KiB, MiB or GiB"
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
    }

    #[test]
    fn refuses_bare_numbers_and_unknown_units() {
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 sec")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert!(parse_bytes("12 parsecs").is_err());
    }
}
