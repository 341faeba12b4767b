//! The shapes of access-log lines.

use std::net::IpAddr;

use serde::Serialize;

/// One line per request (for a WebSocket, the handshake: written when it happens).
#[derive(Debug, Serialize)]
pub struct RequestRecord<'a> {
    pub kind: &'static str,
    /// Milliseconds since the Unix epoch when the request arrived.
    pub time_ms: u128,
    pub request_id: &'a str,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub route: Option<&'a str>,
    pub rule_sets: Vec<&'a str>,
    pub rules: Vec<&'a str>,
    pub cache: &'a str,
    pub upgrade: &'a str,
    pub origin: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub attempts: u8,
    /// The origins the request was sent to, in order (a retry adds one).
    pub tried: Vec<&'a str>,
    /// The shield the request went to last (an edge with shields), and its `X-Cache`.
    pub shield: Option<&'a str>,
    pub shield_cache: Option<&'a str>,
    pub duration_ms: u64,
    pub bytes: usize,
    pub error: Option<String>,
}

/// One line per tunnel, written when it closes.
#[derive(Debug, Serialize)]
pub struct TunnelRecord<'a> {
    pub kind: &'static str,
    pub time_ms: u128,
    pub request_id: &'a str,
    pub route: &'a str,
    pub client: Option<IpAddr>,
    pub origin: Option<&'a str>,
    pub duration_ms: u64,
    pub bytes_client_to_origin: u64,
    pub bytes_origin_to_client: u64,
    pub closed_by: &'a str,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
