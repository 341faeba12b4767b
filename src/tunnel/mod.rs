//! Upgraded (WebSocket) tunnels: limits and the close-time record.
//!
//! After the origin's `101`, Pingora moves the bytes both ways itself; Portico never looks
//! inside them. It only counts them (in the body filters, which see every upgraded chunk)
//! and enforces two limits:
//! - **idle timeout**: the tunnel closes when no bytes moved *either way* for the idle
//!   timeout. A one-way stream (an origin pushing to a silent client) stays open;
//! - **maximum lifetime**: the tunnel closes at its deadline, traffic or not.
//!
//! Both timers run in the tunnel loop of the vendored pingora-proxy (`Session::
//! tunnel_idle_timeout` and `tunnel_deadline`, a marked patch): pingora's own per-leg read
//! timeouts would close a tunnel as soon as one side is quiet. The per-leg timeouts still
//! bound the handshake (the origin must answer the upgrade within the idle timeout).

use std::time::{Duration, Instant};

use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::Session;

use crate::config::model::TunnelLimits;

/// Who or what ended a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    Client,
    Origin,
    IdleTimeout,
    MaxLifetime,
    Shutdown,
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

/// The error type the patched tunnel loop uses for the deadline (and so do the body filters).
const MAX_LIFETIME: &str = "TunnelMaxLifetime";

/// A tunnel being set up or running.
#[derive(Debug)]
pub struct TunnelState {
    pub limits: TunnelLimits,
    /// Set when the 101 went to the client.
    pub opened: Option<Instant>,
    pub bytes_client_to_origin: u64,
    pub bytes_origin_to_client: u64,
    pub closed_by: Option<ClosedBy>,
}

impl TunnelState {
    pub fn new(limits: TunnelLimits) -> TunnelState {
        TunnelState {
            limits,
            opened: None,
            bytes_client_to_origin: 0,
            bytes_origin_to_client: 0,
            closed_by: None,
        }
    }

    /// Before the upstream request: the patched tunnel loop takes over the idle timeout
    /// once the origin answers 101.
    pub fn prepare(&self, session: &mut Session) {
        session.tunnel_idle_timeout = Some(self.limits.idle_timeout);
    }

    /// At the 101: starts the lifetime, and drops the client leg's own read timeout (the
    /// tunnel's idle timer, which sees both directions, replaces it).
    pub fn open(&mut self, session: &mut Session) {
        let now = Instant::now();
        self.opened = Some(now);
        session.tunnel_deadline = Some(now + self.limits.max_lifetime);
        session.set_read_timeout(None);
    }

    /// Marks the tunnel open without a session (unit tests).
    #[cfg(test)]
    fn open_now(&mut self) {
        self.opened = Some(Instant::now());
    }

    pub fn duration(&self) -> Duration {
        self.opened.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Counts a chunk from the client; `end` means the client closed its side.
    pub fn client_bytes(&mut self, len: usize, end: bool) -> Result<()> {
        self.bytes_client_to_origin += len as u64;
        self.note_end(end, ClosedBy::Client);
        self.check_lifetime()
    }

    /// Counts a chunk from the origin; `end` means the origin closed its side.
    pub fn origin_bytes(&mut self, len: usize, end: bool) -> Result<()> {
        self.bytes_origin_to_client += len as u64;
        self.note_end(end, ClosedBy::Origin);
        self.check_lifetime()
    }

    /// Records the first reason only: the first side to close is the one that closed it.
    pub fn close(&mut self, reason: ClosedBy) {
        self.closed_by.get_or_insert(reason);
    }

    fn note_end(&mut self, end: bool, side: ClosedBy) {
        if end {
            self.close(side);
        }
    }

    fn check_lifetime(&mut self) -> Result<()> {
        if self.duration() > self.limits.max_lifetime {
            self.close(ClosedBy::MaxLifetime);
            return Error::e_explain(
                ErrorType::Custom(MAX_LIFETIME),
                "the tunnel reached its maximum lifetime",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: Duration) -> TunnelLimits {
        TunnelLimits {
            idle_timeout: Duration::from_secs(60),
            max_lifetime: max,
        }
    }

    #[test]
    fn counts_both_ways_and_keeps_the_first_closer() {
        let mut tunnel = TunnelState::new(limits(Duration::from_secs(60)));
        tunnel.open_now();
        tunnel.client_bytes(10, false).unwrap();
        tunnel.origin_bytes(7, false).unwrap();
        tunnel.origin_bytes(0, true).unwrap();
        tunnel.client_bytes(0, true).unwrap();
        assert_eq!(
            (tunnel.bytes_client_to_origin, tunnel.bytes_origin_to_client),
            (10, 7)
        );
        assert_eq!(tunnel.closed_by, Some(ClosedBy::Origin));
    }

    #[test]
    fn a_chunk_after_the_lifetime_ends_the_tunnel() {
        let mut tunnel = TunnelState::new(limits(Duration::ZERO));
        tunnel.open_now();
        let error = tunnel.client_bytes(1, false).unwrap_err();
        assert_eq!(ClosedBy::from_error(&error, false), ClosedBy::MaxLifetime);
        assert_eq!(tunnel.closed_by, Some(ClosedBy::MaxLifetime));
    }
}
