//! Stage 2 for origin timeouts: the node's defaults (`defaults.origin_timeouts`) and each
//! origin group's overrides (`timeouts`).
//!
//! Defaults are what a hardened proxy picks: a connect bound well under nginx's 60 s
//! (HAProxy configurations commonly use 5 s, as Envoy does), 30 s for a response to
//! start and between reads (nginx `proxy_read_timeout` is 60 s and bounds both, HAProxy
//! `timeout server` is typically 30 s, CloudFront's origin response timeout 30 s), and
//! 10 min for a whole response (nginx and HAProxy have no such bound; Envoy's route
//! `timeout` is 15 s, which cuts large downloads, so a CDN needs far more).

use std::time::Duration;

use super::diagnostics::{FileId, Report};
use super::duration::parse_duration;
use super::file::FileOriginTimeouts;
use super::model::OriginTimeouts;

pub const DEFAULT_ORIGIN_TIMEOUTS: OriginTimeouts = OriginTimeouts {
    connect: Duration::from_secs(5),
    tls_handshake: Duration::from_secs(10),
    read: Duration::from_secs(30),
    write: Duration::from_secs(30),
    first_byte: Duration::from_secs(30),
    total: Duration::from_secs(600),
};

/// The longest any of these may be: a larger value is a typo, not a policy.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// `raw` over `base`: each field given replaces the base's; zero is refused.
pub fn build_origin_timeouts(
    report: &mut Report,
    file: FileId,
    at: &str,
    raw: Option<&FileOriginTimeouts>,
    base: OriginTimeouts,
) -> OriginTimeouts {
    let Some(raw) = raw else {
        return base;
    };
    let mut field = |name: &str, text: Option<&str>, default: Duration| {
        let Some(text) = text else {
            return default;
        };
        let path = format!("{at}.{name}");
        match parse_duration(text) {
            Ok(value) if value.is_zero() => {
                report.error(
                    file,
                    &path,
                    "a timeout of 0s would fail every request; give a positive duration",
                );
                default
            }
            Ok(value) if value > MAX_TIMEOUT => {
                report.error(
                    file,
                    &path,
                    "a timeout over 1d is not a timeout; give a shorter duration",
                );
                default
            }
            Ok(value) => value,
            Err(message) => {
                report.error(file, &path, message);
                default
            }
        }
    };
    let timeouts = OriginTimeouts {
        connect: field("connect", raw.connect.as_deref(), base.connect),
        tls_handshake: field(
            "tls_handshake",
            raw.tls_handshake.as_deref(),
            base.tls_handshake,
        ),
        read: field("read", raw.read.as_deref(), base.read),
        write: field("write", raw.write.as_deref(), base.write),
        first_byte: field("first_byte", raw.first_byte.as_deref(), base.first_byte),
        total: field("total", raw.total.as_deref(), base.total),
    };
    if timeouts.total < timeouts.first_byte {
        report.error(
            file,
            &format!("{at}.total"),
            format!(
                "total ({:?}) bounds the whole response, its head included: it cannot be shorter than first_byte ({:?})",
                timeouts.total, timeouts.first_byte
            ),
        );
    }
    if timeouts.tls_handshake < timeouts.connect {
        report.error(
            file,
            &format!("{at}.tls_handshake"),
            "tls_handshake bounds the connect and the handshake together: it cannot be shorter than connect",
        );
    }
    timeouts
}
