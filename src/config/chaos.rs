//! Stage 2 for the node's `chaos:` block (scheduled maintenance closes for soak tests), and
//! the close kinds that `POST /tunnels/close` shares with it.
//!
//! ```yaml
//! chaos:
//!   close_tunnels: { every: 30s, fraction: 0.1, how: close_1001 }
//! ```

use std::time::Duration;

use super::bounded_duration_field;
use super::diagnostics::{FileId, Report};
use super::file::FileChaos;

/// How a tunnel is closed on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseHow {
    /// Both connections end with a FIN (as a drained node closes them).
    Fin,
    /// Both connections are reset (RST): what a crashed or rebooted host looks like.
    Rst,
    /// The client gets a WebSocket Close frame with this code, at a frame boundary of the
    /// origin's stream, then a FIN; the origin gets a FIN.
    WebSocket(u16),
}

/// The Close code a maintenance event sends: 1001 "going away" (RFC 6455 §7.4.1).
pub const GOING_AWAY: u16 = 1001;

impl CloseHow {
    /// `fin`, `rst`, `close` (with `code`, default 1001) or `close_<code>`.
    pub fn parse(text: &str, code: Option<u16>) -> Result<CloseHow, String> {
        let how = match text {
            "fin" => CloseHow::Fin,
            "rst" => CloseHow::Rst,
            "close" => CloseHow::WebSocket(code.unwrap_or(GOING_AWAY)),
            other => match other.strip_prefix("close_").map(str::parse::<u16>) {
                Some(Ok(number)) => CloseHow::WebSocket(number),
                _ => {
                    return Err(format!(
                        "\"{text}\" is not a way to close; write fin, rst, close or close_<code> (e.g. close_1001)"
                    ))
                }
            },
        };
        if code.is_some() && !matches!(how, CloseHow::WebSocket(_)) {
            return Err(format!("a code goes with how: close, not {text}"));
        }
        if let CloseHow::WebSocket(number) = how {
            if !sendable_close_code(number) {
                return Err(format!("{number} is not a Close code an endpoint may send (RFC 6455 §7.4: 1000-1003, 1007-1014 or 3000-4999)"));
            }
        }
        Ok(how)
    }

    /// As written in configuration and logs: `fin`, `rst`, `close_1001`.
    pub fn name(self) -> String {
        match self {
            CloseHow::Fin => "fin".into(),
            CloseHow::Rst => "rst".into(),
            CloseHow::WebSocket(code) => format!("close_{code}"),
        }
    }
}

/// Codes RFC 6455 lets an endpoint put in a Close frame (1004-1006 and 1015 are reserved
/// for reporting, never sent).
pub fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The node's scheduled closes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChaosCloseTunnels {
    pub every: Duration,
    /// Of the tunnels open at each tick, about this share is closed (0 < fraction <= 1).
    pub fraction: f64,
    pub how: CloseHow,
}

pub fn build_chaos(
    report: &mut Report,
    file: FileId,
    raw: Option<&FileChaos>,
) -> Option<ChaosCloseTunnels> {
    let raw = raw?.close_tunnels.as_ref()?;
    let at = "chaos.close_tunnels";
    let every = bounded_duration_field(
        report,
        file,
        &format!("{at}.every"),
        Some(&raw.every),
        Duration::from_secs(30),
        Duration::from_millis(100),
    );
    let fraction = raw.fraction.unwrap_or(1.0);
    if !(fraction > 0.0 && fraction <= 1.0) {
        report.error(
            file,
            &format!("{at}.fraction"),
            format!("fraction {fraction} must be above 0 and at most 1"),
        );
    }
    let how = match CloseHow::parse(raw.how.as_deref().unwrap_or("fin"), None) {
        Ok(how) => how,
        Err(message) => {
            report.error(file, &format!("{at}.how"), message);
            CloseHow::Fin
        }
    };
    Some(ChaosCloseTunnels {
        every,
        fraction,
        how,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_kinds_parse_and_print_back() {
        assert_eq!(CloseHow::parse("fin", None), Ok(CloseHow::Fin));
        assert_eq!(CloseHow::parse("rst", None), Ok(CloseHow::Rst));
        assert_eq!(
            CloseHow::parse("close", None),
            Ok(CloseHow::WebSocket(1001))
        );
        assert_eq!(
            CloseHow::parse("close", Some(4000)),
            Ok(CloseHow::WebSocket(4000))
        );
        assert_eq!(
            CloseHow::parse("close_1012", None),
            Ok(CloseHow::WebSocket(1012))
        );
        assert_eq!(CloseHow::WebSocket(1001).name(), "close_1001");
        assert!(CloseHow::parse("close_1006", None).is_err());
        assert!(CloseHow::parse("close_99999", None).is_err());
        assert!(CloseHow::parse("fin", Some(1001)).is_err());
        assert!(CloseHow::parse("reset", None).is_err());
    }
}
