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
    pub client: Option<IpAddr>,
    /// The request id, the route's name and the origin's, one after the other: one
    /// allocation for the three (three `String`s took 48 bytes more of every idle
    /// tunnel's task, and two allocations more).
    names: Box<str>,
    route_at: u32,
    /// Where the origin's name starts (`u32::MAX`: no origin).
    origin_at: u32,
}

impl TunnelLog {
    pub fn new(
        access_log: AccessLog,
        metrics: std::sync::Arc<crate::observability::Metrics>,
        request_id: &str,
        route: &str,
        client: Option<IpAddr>,
        origin: Option<&str>,
    ) -> TunnelLog {
        let names = [request_id, route, origin.unwrap_or_default()].concat();
        let at = |len: usize| u32::try_from(len).unwrap_or(u32::MAX);
        TunnelLog {
            access_log,
            metrics,
            client,
            route_at: at(request_id.len()),
            origin_at: match origin {
                Some(_) => at(request_id.len() + route.len()),
                None => u32::MAX,
            },
            names: names.into_boxed_str(),
        }
    }

    pub fn request_id(&self) -> &str {
        &self.names[..self.route_at as usize]
    }

    pub fn route(&self) -> &str {
        let end = match self.origin_at {
            u32::MAX => self.names.len(),
            at => at as usize,
        };
        &self.names[self.route_at as usize..end]
    }

    pub fn origin(&self) -> Option<&str> {
        match self.origin_at {
            u32::MAX => None,
            at => Some(&self.names[at as usize..]),
        }
    }

    pub fn write(&self, outcome: &RelayOutcome) {
        self.metrics.tunnel_closed(
            outcome.bytes_client_to_origin,
            outcome.bytes_origin_to_client,
        );
        self.access_log.write(&TunnelRecord {
            kind: "tunnel",
            time_ms: now_ms(),
            request_id: self.request_id(),
            route: self.route(),
            client: self.client,
            origin: self.origin(),
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
    fn a_tunnel_log_gives_back_its_names() {
        let access_log = AccessLog::start(&crate::config::model::AccessLogTarget::Off).unwrap();
        let metrics = std::sync::Arc::new(crate::observability::Metrics::default());
        let with = TunnelLog::new(
            access_log.clone(),
            metrics.clone(),
            "id-1",
            "ws",
            None,
            Some("10.0.0.1:80"),
        );
        assert_eq!(
            (with.request_id(), with.route(), with.origin()),
            ("id-1", "ws", Some("10.0.0.1:80"))
        );
        let without = TunnelLog::new(access_log, metrics, "", "r", None, None);
        assert_eq!(
            (without.request_id(), without.route(), without.origin()),
            ("", "r", None)
        );
    }

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
