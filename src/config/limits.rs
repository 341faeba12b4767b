//! Stage 2 for `limits:` in the node file: what a client may send, and how slowly.
//!
//! Defaults, next to nginx's and HAProxy's (README "Client limits" says why):
//! - `request_head_timeout: 10s` (nginx `client_header_timeout 60s`; HAProxy
//!   `timeout http-request`, commonly 10s in hardened setups);
//! - `keepalive_timeout: 60s` (nginx `keepalive_timeout 75s`; HAProxy
//!   `timeout http-keep-alive`, commonly 10s–60s);
//! - `send_timeout: 60s` (nginx `send_timeout 60s`; HAProxy `timeout client`, commonly
//!   30s–60s);
//! - `tls_handshake_timeout: 10s` (nginx: `client_header_timeout 60s` covers the
//!   handshake; HAProxy `timeout client-hs`, falling back to `timeout client`);
//! - `request_body_timeout: 30s`, `request_body_min_rate: 500` (Apache's mod_reqtimeout
//!   `body=20,MinRate=500`; nginx `client_body_timeout 60s` and HAProxy `timeout client`
//!   count each read alone, so a body that dribbles a byte a minute is never cut);
//! - `max_request_body: 100MiB` (nginx `client_max_body_size 1m`; HAProxy none; Cloudflare
//!   takes 100 MB on its free and pro plans);
//! - `max_request_head: 64KiB` (nginx `large_client_header_buffers 4 8k` = 32 KiB;
//!   HAProxy `tune.bufsize 16k` holds the whole head);
//! - `max_headers: 100` (HAProxy `tune.http.maxhdr 101`; Apache `LimitRequestFields 100`);
//! - `max_uri: 8KiB` (nginx: the request line must fit one 8k buffer; HAProxy: the buffer);
//! - `max_connections`: (descriptor limit − `fd_reserve`) / 2, as HAProxy derives `maxconn`
//!   from `ulimit -n` (nginx: `worker_connections 512` per worker, counting both sides);
//! - `max_connections_per_client: 256` (nginx `limit_conn` and HAProxy `sc_conn_cur` have
//!   no default; 256 leaves room for dozens of browsers behind one NAT address);
//! - `fd_reserve: 128` (probes, the admin API, log files, the origin keep-alive pool).

use std::time::Duration;

use super::bounded_duration_field;
use super::diagnostics::{FileId, Report};
use super::duration::parse_bytes;
use super::file::FileLimits;
use super::model::ClientLimits;

pub const DEFAULT_LIMITS: ClientLimits = ClientLimits {
    request_head_timeout: Duration::from_secs(10),
    keepalive_timeout: Duration::from_secs(60),
    send_timeout: Duration::from_secs(60),
    tls_handshake_timeout: Duration::from_secs(10),
    request_body_timeout: Duration::from_secs(30),
    request_body_min_rate: 500,
    max_request_body: 100 << 20,
    max_request_head: 64 << 10,
    max_headers: 100,
    max_uri: 8 << 10,
    max_connections: None,
    max_connections_per_client: 256,
    fd_reserve: 128,
};

/// Pingora stops reading a head past 1 MiB and parses at most 256 header lines: a larger
/// limit here would never apply.
const PINGORA_MAX_HEAD: usize = (1 << 20) - 1;
const PINGORA_MAX_HEADERS: usize = 256;
/// Past this a deadline is no protection at all.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn build_limits(report: &mut Report, file: FileId, raw: Option<&FileLimits>) -> ClientLimits {
    let Some(raw) = raw else {
        return DEFAULT_LIMITS;
    };
    let d = DEFAULT_LIMITS;
    let mut timeout = |name: &str, text: Option<&str>, default: Duration| {
        let path = format!("limits.{name}");
        let value = bounded_duration_field(
            report,
            file,
            &path,
            text,
            default,
            Duration::from_millis(100),
        );
        if value > MAX_TIMEOUT {
            report.error(
                file,
                &path,
                format!("{value:?} is no limit against slow clients; give at most 1h"),
            );
            return default;
        }
        value
    };
    let request_head_timeout = timeout(
        "request_head_timeout",
        raw.request_head_timeout.as_deref(),
        d.request_head_timeout,
    );
    let keepalive_timeout = timeout(
        "keepalive_timeout",
        raw.keepalive_timeout.as_deref(),
        d.keepalive_timeout,
    );
    let send_timeout = timeout("send_timeout", raw.send_timeout.as_deref(), d.send_timeout);
    let tls_handshake_timeout = timeout(
        "tls_handshake_timeout",
        raw.tls_handshake_timeout.as_deref(),
        d.tls_handshake_timeout,
    );
    let request_body_timeout = timeout(
        "request_body_timeout",
        raw.request_body_timeout.as_deref(),
        d.request_body_timeout,
    );
    // Pingora's keep-alive timer counts whole seconds.
    let keepalive_timeout = if keepalive_timeout < Duration::from_secs(1) {
        report.error(
            file,
            "limits.keepalive_timeout",
            "keepalive_timeout counts whole seconds; give at least 1s",
        );
        d.keepalive_timeout
    } else {
        keepalive_timeout
    };
    // A size: `default` when absent, or when it does not parse, is under `min` or over the
    // `ceiling` (reported, with what the ceiling is).
    let mut size =
        |name: &str, text: Option<&str>, default: u64, min: u64, ceiling: Option<(u64, &str)>| {
            let Some(text) = text else {
                return default;
            };
            let path = format!("limits.{name}");
            match parse_bytes(text) {
                Ok(value) if value < min => {
                    report.error(
                        file,
                        &path,
                        format!("{value} bytes is too small; the least that works is {min}"),
                    );
                    default
                }
                Ok(value) if ceiling.is_some_and(|(max, _)| value > max) => {
                    let (max, over) = ceiling.unwrap_or_default();
                    report.error(
                        file,
                        &path,
                        format!("{value} bytes is {over}; give at most {max}"),
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
    let request_body_min_rate = size(
        "request_body_min_rate",
        raw.request_body_min_rate.as_deref(),
        d.request_body_min_rate.into(),
        0,
        Some((u32::MAX.into(), "more than a rate this takes")),
    );
    let request_body_min_rate = u32::try_from(request_body_min_rate).unwrap_or(u32::MAX);
    let max_request_body = size(
        "max_request_body",
        raw.max_request_body.as_deref(),
        d.max_request_body,
        0,
        None,
    );
    // Pingora stops reading a head past `PINGORA_MAX_HEAD`: a larger limit never applies.
    let head_size = |value: u64| usize::try_from(value).unwrap_or(PINGORA_MAX_HEAD);
    let over_head = "over what the edge reads of a request head";
    let max_request_head = head_size(size(
        "max_request_head",
        raw.max_request_head.as_deref(),
        d.max_request_head as u64,
        1024,
        Some((PINGORA_MAX_HEAD as u64, over_head)),
    ));
    let max_uri = head_size(size(
        "max_uri",
        raw.max_uri.as_deref(),
        d.max_uri as u64,
        64,
        Some((PINGORA_MAX_HEAD as u64, over_head)),
    ));
    if max_uri > max_request_head {
        report.error(
            file,
            "limits.max_uri",
            "max_uri cannot exceed max_request_head (the target is part of the head)",
        );
    }
    let max_headers = match raw.max_headers {
        None => d.max_headers,
        Some(n) if (1..=PINGORA_MAX_HEADERS).contains(&n) => n,
        Some(n) => {
            report.error(
                file,
                "limits.max_headers",
                format!("{n} header lines: give 1 to {PINGORA_MAX_HEADERS} (what the edge parses)"),
            );
            d.max_headers
        }
    };
    let mut count = |name: &str, value: Option<usize>, default: usize| match value {
        Some(0) => {
            report.error(
                file,
                &format!("limits.{name}"),
                "0 would refuse every connection; give at least 1",
            );
            default
        }
        Some(n) => n,
        None => default,
    };
    let max_connections = raw
        .max_connections
        .map(|n| count("max_connections", Some(n), 1));
    let max_connections_per_client = count(
        "max_connections_per_client",
        raw.max_connections_per_client,
        d.max_connections_per_client,
    );
    let fd_reserve = raw.fd_reserve.unwrap_or(d.fd_reserve);
    if fd_reserve < 16 {
        report.error(
            file,
            "limits.fd_reserve",
            "fewer than 16 spare descriptors leaves probes and origins failing with EMFILE",
        );
    }
    ClientLimits {
        max_connections,
        max_connections_per_client,
        fd_reserve: fd_reserve.max(16),
        request_head_timeout,
        keepalive_timeout,
        send_timeout,
        tls_handshake_timeout,
        request_body_timeout,
        request_body_min_rate,
        max_request_body,
        max_request_head,
        max_headers,
        max_uri,
    }
}
