//! The access log's lines as typed, owned values (the writer's types borrow their strings).

use std::net::IpAddr;

use serde::Deserialize;

/// One access-log line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccessRecord {
    /// A request (for a WebSocket: its handshake, written at the `101`).
    Request(Box<RequestLine>),
    /// A tunnel, written when it closed.
    Tunnel(TunnelLine),
}

/// A request's line: the fields of [`crate::observability::records::RequestRecord`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLine {
    pub time_ms: u64,
    pub request_id: String,
    pub client: Option<IpAddr>,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub route: Option<String>,
    pub rule_sets: Vec<String>,
    pub rules: Vec<String>,
    /// The `X-Cache` value.
    pub cache: String,
    /// How an upgrade was handled (`tunnel`, `reproduce`, ...; `none` for plain requests).
    pub upgrade: String,
    pub origin: Option<String>,
    pub upstream_status: Option<u16>,
    pub attempts: u8,
    pub tried: Vec<String>,
    pub shield: Option<String>,
    pub shield_cache: Option<String>,
    pub duration_ms: u64,
    pub bytes: usize,
    pub error: Option<String>,
}

/// A tunnel's line: the fields of [`crate::observability::records::TunnelRecord`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelLine {
    pub time_ms: u64,
    pub request_id: String,
    pub route: String,
    pub client: Option<IpAddr>,
    pub origin: Option<String>,
    pub duration_ms: u64,
    pub bytes_client_to_origin: u64,
    pub bytes_origin_to_client: u64,
    /// `client`, `origin`, `idle_timeout`, `max_lifetime`, `shutdown`, `admin`, `chaos`,
    /// `error`.
    pub closed_by: String,
}

impl AccessRecord {
    /// The tunnel line, if this is one.
    pub fn tunnel(&self) -> Option<&TunnelLine> {
        match self {
            AccessRecord::Tunnel(line) => Some(line),
            AccessRecord::Request(_) => None,
        }
    }

    /// The request line, if this is one.
    pub fn request(&self) -> Option<&RequestLine> {
        match self {
            AccessRecord::Request(line) => Some(line.as_ref()),
            AccessRecord::Tunnel(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::records::{RequestRecord, TunnelRecord};

    /// The writer's records and these types must not drift apart: every field the writer
    /// puts in a line is read back (unknown fields are refused).
    #[test]
    fn the_writers_lines_read_back_whole() {
        let request = RequestRecord {
            kind: "request",
            time_ms: 1,
            request_id: "r",
            client: Some(IpAddr::from([127, 0, 0, 1])),
            method: "GET",
            host: "h",
            path: "/p",
            status: 101,
            route: Some("chat"),
            rule_sets: vec!["s"],
            rules: vec!["r"],
            cache: "CONFIG_NOCACHE",
            upgrade: "tunnel",
            origin: Some("o"),
            upstream_status: Some(101),
            attempts: 1,
            tried: vec!["o"],
            shield: None,
            shield_cache: None,
            duration_ms: 2,
            bytes: 0,
            error: None,
        };
        let line = serde_json::to_string(&request).unwrap();
        let read: AccessRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(read.request().unwrap().route.as_deref(), Some("chat"));
        let tunnel = TunnelRecord {
            kind: "tunnel",
            time_ms: 3,
            request_id: "r",
            route: "chat",
            client: None,
            origin: None,
            duration_ms: 4,
            bytes_client_to_origin: 5,
            bytes_origin_to_client: 6,
            closed_by: "admin",
        };
        let line = serde_json::to_string(&tunnel).unwrap();
        let read: AccessRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(read.tunnel().unwrap().closed_by, "admin");
    }
}
