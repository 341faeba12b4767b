//! Upgraded (WebSocket) tunnels: the handoff, limits and the close-time record.
//!
//! After the origin's `101`, the vendored pingora-proxy stops (a marked patch,
//! `Session::tunnel_handoff`) and hands both connections to [`relay`], which moves the
//! bytes both ways untouched on a small task of its own. Portico never looks inside them.
//! It counts them and enforces two limits:
//! - **idle timeout**: the tunnel closes when no bytes moved *either way* for the idle
//!   timeout. A one-way stream (an origin pushing to a silent client) stays open;
//! - **maximum lifetime**: the tunnel closes at its deadline, traffic or not.
//!
//! Until the `101`, Pingora's per-leg timeouts bound the handshake (the origin must answer
//! the upgrade within the idle timeout). The tunnel's record is written when it closes.
//! A tunnel belongs to no request and to no configuration generation: a reload never
//! touches it, and it keeps the limits it opened with. A stopping node gives open tunnels
//! `tunnel_drain_timeout` to end by themselves, then closes them (`closed_by: shutdown`,
//! [`crate::lifecycle::drain`]).

pub mod handover;
pub mod relay;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use pingora_error::{Error, ErrorType};
use pingora_proxy::{Session, TunnelHandoff};

use crate::config::model::TunnelLimits;
use crate::lifecycle::drain::TunnelGuard;
use crate::observability::access_log::AccessLog;
use crate::observability::records::{now_ms, TunnelRecord};
use relay::RelayOutcome;

/// Who or what ended a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    Client,
    Origin,
    IdleTimeout,
    MaxLifetime,
    Shutdown,
    /// `POST /tunnels/close` on the admin listener.
    Admin,
    /// The node's `chaos.close_tunnels` schedule.
    Chaos,
    Error,
}

impl ClosedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedBy::Client => "client",
            ClosedBy::Origin => "origin",
            ClosedBy::IdleTimeout => "idle_timeout",
            ClosedBy::MaxLifetime => "max_lifetime",
            ClosedBy::Shutdown => "shutdown",
            ClosedBy::Admin => "admin",
            ClosedBy::Chaos => "chaos",
            ClosedBy::Error => "error",
        }
    }

    /// Classifies the error that ended a tunnel.
    pub fn from_error(error: &Error, shutting_down: bool) -> ClosedBy {
        match error.etype() {
            _ if shutting_down => ClosedBy::Shutdown,
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => ClosedBy::IdleTimeout,
            ErrorType::Custom(MAX_LIFETIME) => ClosedBy::MaxLifetime,
            _ => ClosedBy::Error,
        }
    }
}

/// The error type a tunnel deadline is reported with.
const MAX_LIFETIME: &str = "TunnelMaxLifetime";

/// A tunnel being set up: the route's limits, and when the `101` went to the client.
#[derive(Debug)]
pub struct TunnelState {
    pub limits: TunnelLimits,
    pub opened: Option<Instant>,
}

impl TunnelState {
    pub fn new(limits: TunnelLimits) -> TunnelState {
        TunnelState {
            limits,
            opened: None,
        }
    }

    /// Before the upstream request: an upgrade stops at the `101` and its connections come
    /// to the relay, which writes `log` when the tunnel closes.
    pub fn prepare(&self, session: &mut Session, log: TunnelLog, guard: TunnelGuard) {
        session.tunnel_handoff = Some(hand_off_to_relay(self.limits, log, guard));
    }

    /// At the 101.
    pub fn open(&mut self) {
        self.opened = Some(Instant::now());
    }

    pub fn duration(&self) -> Duration {
        self.opened.map_or(Duration::ZERO, |t| t.elapsed())
    }
}

fn hand_off_to_relay(limits: TunnelLimits, log: TunnelLog, guard: TunnelGuard) -> TunnelHandoff {
    Box::new(move |tunnel| {
        spawn_relay(relay::Relay::new(tunnel, &limits), limits, log, guard);
    })
}

/// Relays a tunnel on a task of its own until it ends (its record is written then) or is
/// handed over to a new process.
pub fn spawn_relay(relay: relay::Relay, limits: TunnelLimits, log: TunnelLog, guard: TunnelGuard) {
    tokio::spawn(handover::run_relay(relay, limits, log, guard));
}

/// What the tunnel's record says besides the outcome, captured before the handoff.
pub struct TunnelLog {
    pub access_log: AccessLog,
    pub metrics: std::sync::Arc<crate::observability::Metrics>,
    pub request_id: String,
    pub route: String,
    pub client: Option<IpAddr>,
    pub origin: Option<String>,
}

impl TunnelLog {
    pub fn write(&self, outcome: &RelayOutcome) {
        self.metrics.tunnel_closed(
            outcome.bytes_client_to_origin,
            outcome.bytes_origin_to_client,
        );
        self.access_log.write(&TunnelRecord {
            kind: "tunnel",
            time_ms: now_ms(),
            request_id: &self.request_id,
            route: &self.route,
            client: self.client,
            origin: self.origin.as_deref(),
            duration_ms: outcome.duration.as_millis() as u64,
            bytes_client_to_origin: outcome.bytes_client_to_origin,
            bytes_origin_to_client: outcome.bytes_origin_to_client,
            closed_by: outcome.closed_by.as_str(),
        });
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_who_closed() {
        let deadline = Error::explain(ErrorType::Custom(MAX_LIFETIME), "deadline");
        assert_eq!(
            ClosedBy::from_error(&deadline, false),
            ClosedBy::MaxLifetime
        );
        let idle = Error::explain(ErrorType::ReadTimedout, "idle");
        assert_eq!(ClosedBy::from_error(&idle, false), ClosedBy::IdleTimeout);
        assert_eq!(ClosedBy::from_error(&idle, true), ClosedBy::Shutdown);
        let other = Error::explain(ErrorType::ConnectError, "refused");
        assert_eq!(ClosedBy::from_error(&other, false), ClosedBy::Error);
    }
}
