//! Tunnel handover across a graceful binary upgrade: the old process gives its open
//! plain-TCP tunnels to the new one, which relays them on.
//!
//! ```text
//!  new process (portico run --upgrade)          old process (SIGQUIT, listeners handed over)
//!  listens on <upgrade_sock>.tunnels ◄───────── connects (bounded wait)
//!                                   ◄───────── hello: magic, format version
//!  same version? 1 : 0 (both log a refusal) ──►
//!                                               each plain-TCP relay stops at a safe point,
//!                                               flushes, takes in what its sockets hold
//!                                   ◄───────── a tunnel: both sockets (SCM_RIGHTS), its
//!                                               state (JSON), the bytes held each way
//!  sockets and state taken: 1 ──────────────►
//!                                   ◄───────── commit (1); the old copy is dropped unclosed
//!  relays it on (its record covers the whole tunnel)
//!                                   ◄───────── end (an empty frame)
//! ```
//!
//! Every wait is bounded. A tunnel whose handover fails at any step before the commit
//! resumes in the old process and drains there as before; the new process drops its copy
//! of the sockets without closing the connections. `wss://` tunnels (and tunnels to TLS
//! origins) stay: their TLS state lives in this process's memory. With kernel TLS offload
//! the sockets would carry it, but this kernel has no `tls` ULP; [`handover_fds`] is the
//! place that would accept such streams.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::Stream;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::relay::{Relay, Step};
use super::TunnelLog;
use crate::config::model::TunnelLimits;
use crate::connection::HeadGuard;
use crate::lifecycle::drain::{Drain, TunnelGuard};
use crate::observability::{AccessLog, Metrics};

mod receive;
mod send;

pub(crate) use receive::run_relay;
pub use receive::{adopt, listen, Adoption};
pub use send::hand_over;

/// The handover format. A new binary that reads another version refuses the handover.
pub const VERSION: u32 = 1;
const MAGIC: &[u8; 15] = b"portico-tunnels";
/// Set in a new process's environment, it makes that process speak another format
/// version: how the tests force a refusal.
pub const VERSION_OVERRIDE_ENV: &str = "PORTICO_TEST_HANDOVER_VERSION";

/// How long the old process looks for the new one's socket.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// How long each step of the exchange may take (a send, an answer).
const STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the whole handover may take; tunnels not handed over by then drain here.
const HANDOVER_BUDGET: Duration = Duration::from_secs(10);
/// How long a relay may take to flush its writes and take in what its sockets hold.
const SETTLE_TIMEOUT: Duration = Duration::from_millis(500);
/// The most a tunnel may hold one way and still be handed over.
pub(crate) const MAX_HELD: usize = 4 << 20;
const MAX_STATE: usize = 64 * 1024;

/// The path the new process listens on, beside Pingora's upgrade socket.
pub fn socket_path(upgrade_sock: &Path) -> PathBuf {
    let mut name = upgrade_sock.as_os_str().to_owned();
    name.push(".tunnels");
    PathBuf::from(name)
}

/// The format version this process speaks.
fn version() -> u32 {
    std::env::var(VERSION_OVERRIDE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(VERSION)
}

/// The node's side of the handover, held by its [`Drain`]: relays wait on it to be asked
/// to stop, and offer themselves to the old process's sender.
pub struct Handover {
    /// Set once, when the node starts handing its tunnels over; each relay is woken to
    /// look at it through its close order ([`TunnelGuard::closing_or`]).
    asked: AtomicBool,
    offers: parking_lot::Mutex<Option<mpsc::UnboundedSender<Offer>>>,
    /// Relays that could be handed over and have not been offered yet.
    waiting: AtomicUsize,
}

impl Default for Handover {
    fn default() -> Handover {
        Handover {
            asked: AtomicBool::new(false),
            offers: parking_lot::Mutex::new(None),
            waiting: AtomicUsize::new(0),
        }
    }
}

/// A relay's place in the handover, for its life.
pub struct Ticket {
    handover: &'static Handover,
    /// Still to be offered (it counts in `waiting`).
    open: bool,
}

impl Ticket {
    /// `eligible`: the tunnel's sockets can be handed over (plain TCP both ways).
    pub fn new(handover: &'static Handover, eligible: bool) -> Ticket {
        if eligible {
            handover.waiting.fetch_add(1, Ordering::AcqRel);
        }
        Ticket {
            handover,
            open: eligible,
        }
    }

    /// The node hands its tunnels over and this one has not been offered yet.
    pub fn asked(&self) -> bool {
        self.open && self.handover.asked.load(Ordering::Acquire)
    }

    fn close(&mut self) {
        if std::mem::take(&mut self.open) {
            self.handover.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Offers the paused relay to the sender: `None` once it is handed over, or the relay
    /// back, to go on here.
    pub async fn offer(
        &mut self,
        mut relay: Relay,
        meta: &TunnelLog,
        limits: TunnelLimits,
    ) -> Option<Relay> {
        let sender = self.handover.offers.lock().clone();
        let Some(sender) = sender else {
            self.close();
            return Some(relay);
        };
        let settled = tokio::time::timeout(SETTLE_TIMEOUT, relay.settle()).await;
        if let Err(reason) = settled.unwrap_or(Err("its writes did not drain")) {
            log::debug!("tunnel {} stays: {reason}", meta.request_id());
            self.close();
            return Some(relay);
        }
        let (reply, verdict) = oneshot::channel();
        let offer = Offer {
            relay: Box::new(relay),
            state: TunnelMeta::from_log(meta),
            limits,
            reply,
        };
        let sent = sender.send(offer);
        // Offered once, whatever comes of it (a kept tunnel is not paused again). Counted
        // out only now, so that the sender always sees the count or the offer.
        self.close();
        if let Err(refused) = sent {
            return Some(*refused.0.relay);
        }
        match verdict.await {
            Ok(Verdict::HandedOver) => None,
            Ok(Verdict::Kept(relay)) => Some(*relay),
            // The sender answers every offer it takes; without an answer the relay and
            // its sockets are gone.
            Err(_) => None,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.close();
    }
}

/// A paused relay waiting for the sender.
struct Offer {
    relay: Box<Relay>,
    state: TunnelMeta,
    limits: TunnelLimits,
    reply: oneshot::Sender<Verdict>,
}

enum Verdict {
    HandedOver,
    Kept(Box<Relay>),
}

/// What a tunnel's record says that the relay does not know.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TunnelMeta {
    request_id: String,
    route: String,
    client: Option<IpAddr>,
    origin: Option<String>,
}

impl TunnelMeta {
    fn from_log(log: &TunnelLog) -> TunnelMeta {
        TunnelMeta {
            request_id: log.request_id().to_owned(),
            route: log.route().to_owned(),
            client: log.client,
            origin: log.origin().map(str::to_owned),
        }
    }
}

/// A tunnel's state on the wire, with the bytes held each way after it.
#[derive(Debug, Serialize, Deserialize)]
struct WireTunnel {
    version: u32,
    meta: TunnelMeta,
    /// Since the tunnel opened (its `101`).
    age_ms: u64,
    /// Until its maximum lifetime.
    lifetime_left_ms: u64,
    /// Since bytes last moved either way.
    quiet_ms: u64,
    idle_timeout_ms: u64,
    max_lifetime_ms: u64,
    linger_ms: u64,
    bytes_client_to_origin: u64,
    bytes_origin_to_client: u64,
    held_client_to_origin: usize,
    held_origin_to_client: usize,
}

/// What the old process did with its tunnels.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HandoverReport {
    pub handed_over: usize,
    pub kept: usize,
    /// Bytes the handed-over relays held (read from one side, not yet written to the other).
    pub held_bytes: usize,
}

/// Both sockets of a tunnel as descriptors of this process's own, if both are plain TCP.
/// (A TLS stream is another type: with kernel TLS, its socket could be passed here too.)
pub(crate) fn handover_fds(downstream: &Stream, upstream: &Stream) -> Option<(OwnedFd, OwnedFd)> {
    Some((own_copy(downstream)?, own_copy(upstream)?))
}

fn own_copy(stream: &Stream) -> Option<OwnedFd> {
    let raw = HeadGuard::plain_tcp(stream)?.as_raw_fd();
    if raw < 0 {
        return None; // a virtual stream
    }
    // Pingora's stream lends its descriptor only as a number. pidfd_getfd(2) on this
    // process's own pidfd duplicates it into an owned descriptor without unsafe code.
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .ok()?;
    rustix::process::pidfd_getfd(&me, raw, rustix::process::PidfdGetfdFlags::empty()).ok()
}

/// Whether a tunnel's sockets could be handed over.
pub(crate) fn eligible(downstream: &Stream, upstream: &Stream) -> bool {
    let plain = |s: &Stream| HeadGuard::plain_tcp(s).is_some_and(|s| s.as_raw_fd() >= 0);
    plain(downstream) && plain(upstream)
}

/// The peer runs as this process's user (sockets go only to our own kind).
fn same_user(conn: &UnixStream) -> bool {
    rustix::net::sockopt::socket_peercred(conn)
        .is_ok_and(|cred| cred.uid == rustix::process::getuid())
}

async fn step<T>(io: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

async fn read_byte(conn: &mut UnixStream) -> io::Result<u8> {
    let mut byte = [0u8];
    conn.read_exact(&mut byte).await?;
    Ok(byte[0])
}
