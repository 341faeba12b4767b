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

// ---- the old process -------------------------------------------------------------------

/// Hands every plain-TCP tunnel to the new process listening at `path`; the rest, and any
/// that fails, stay and drain here.
pub async fn hand_over(drain: &'static Drain, path: &Path) -> HandoverReport {
    let handover = &drain.handover;
    let mut report = HandoverReport::default();
    let Some(mut conn) = connect(path).await else {
        log::warn!(
            "tunnel handover: no new process at {}; tunnels drain here",
            path.display()
        );
        return report;
    };
    match hello(&mut conn).await {
        Ok(true) => {}
        Ok(false) => {
            log::warn!("tunnel handover refused: the new process does not read format version {}; tunnels drain here", version());
            return report;
        }
        Err(e) => {
            log::warn!("tunnel handover: the new process did not answer ({e}); tunnels drain here");
            return report;
        }
    }
    let (sender, mut offers) = mpsc::unbounded_channel();
    *handover.offers.lock() = Some(sender);
    handover.asked.store(true, Ordering::Release);
    drain.registry.wake_all();
    let budget = tokio::time::Instant::now() + HANDOVER_BUDGET;
    let mut broken = false;
    loop {
        if handover.waiting.load(Ordering::Acquire) == 0 && offers.is_empty() {
            break;
        }
        // Re-checked now and then: a relay that ends instead of offering itself leaves
        // the count too.
        let next = tokio::time::timeout(Duration::from_millis(50), offers.recv());
        let offer = match tokio::time::timeout_at(budget, next).await {
            Err(_) => break,
            Ok(Err(_)) => continue,
            Ok(Ok(None)) => break,
            Ok(Ok(Some(offer))) => offer,
        };
        let held = offer.relay.to_origin.held_len() + offer.relay.to_client.held_len();
        let verdict = if broken {
            Verdict::Kept(offer.relay)
        } else {
            match send_tunnel(&mut conn, offer.relay, &offer.state, &offer.limits).await {
                Ok(verdict) => verdict,
                Err((relay, e)) => {
                    log::warn!("tunnel handover: {e}; the remaining tunnels drain here");
                    broken = true;
                    Verdict::Kept(relay)
                }
            }
        };
        match verdict {
            Verdict::HandedOver => {
                report.handed_over += 1;
                report.held_bytes += held;
            }
            Verdict::Kept(_) => report.kept += 1,
        }
        let _ = offer.reply.send(verdict);
    }
    // Late offers (the budget is spent, or a relay raced the end) go back to their relays.
    handover.offers.lock().take();
    offers.close();
    while let Ok(offer) = offers.try_recv() {
        report.kept += 1;
        let _ = offer.reply.send(Verdict::Kept(offer.relay));
    }
    if !broken {
        let _ = tokio::time::timeout(STEP_TIMEOUT, write_frame(&mut conn, &[], None)).await;
    }
    report
}

async fn connect(path: &Path) -> Option<UnixStream> {
    let until = Instant::now() + CONNECT_WAIT;
    loop {
        match UnixStream::connect(path).await {
            Ok(conn) if same_user(&conn) => return Some(conn),
            Ok(_) => {
                log::warn!(
                    "tunnel handover: {} belongs to another user",
                    path.display()
                );
                return None;
            }
            Err(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => return None,
        }
    }
}

/// The peer runs as this process's user (sockets go only to our own kind).
fn same_user(conn: &UnixStream) -> bool {
    rustix::net::sockopt::socket_peercred(conn)
        .is_ok_and(|cred| cred.uid == rustix::process::getuid())
}

async fn hello(conn: &mut UnixStream) -> io::Result<bool> {
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&version().to_le_bytes());
    step(write_frame(conn, &hello, None)).await?;
    Ok(step(read_byte(conn)).await? == 1)
}

/// Sends one tunnel and commits it once the new process has it. Before the commit any
/// failure gives the relay back; an error of the connection also ends the handover.
async fn send_tunnel(
    conn: &mut UnixStream,
    relay: Box<Relay>,
    meta: &TunnelMeta,
    limits: &TunnelLimits,
) -> Result<Verdict, (Box<Relay>, io::Error)> {
    let Some((down, up)) = handover_fds(&relay.downstream, &relay.upstream) else {
        return Ok(Verdict::Kept(relay));
    };
    let (held_c2o, held_o2c) = (relay.to_origin.held(), relay.to_client.held());
    let now = Instant::now();
    let state = WireTunnel {
        version: version(),
        meta: meta.clone(),
        age_ms: millis(now.saturating_duration_since(relay.started)),
        lifetime_left_ms: millis(relay.deadline.saturating_duration_since(now)),
        quiet_ms: millis(now.saturating_duration_since(relay.last_moved)),
        idle_timeout_ms: millis(limits.idle_timeout),
        max_lifetime_ms: millis(limits.max_lifetime),
        linger_ms: millis(limits.linger),
        bytes_client_to_origin: relay.to_origin.bytes,
        bytes_origin_to_client: relay.to_client.bytes,
        held_client_to_origin: held_c2o.len(),
        held_origin_to_client: held_o2c.len(),
    };
    let json = serde_json::to_vec(&state).expect("the state serialises");
    let mut frame = Vec::with_capacity(4 + json.len() + held_c2o.len() + held_o2c.len());
    frame.extend_from_slice(&(json.len() as u32).to_le_bytes());
    frame.extend_from_slice(&json);
    frame.extend_from_slice(&held_c2o);
    frame.extend_from_slice(&held_o2c);
    let exchange = async {
        step(write_frame(conn, &frame, Some([down.as_fd(), up.as_fd()]))).await?;
        if step(read_byte(conn)).await? != 1 {
            return Ok(false);
        }
        step(conn.write_all(&[1])).await?;
        Ok(true)
    };
    match exchange.await {
        // The new process relays it now. This copy is dropped without a shutdown, so
        // the connections stay open.
        Ok(true) => Ok(Verdict::HandedOver),
        Ok(false) => Ok(Verdict::Kept(relay)),
        Err(e) => Err((relay, e)),
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

async fn step<T>(io: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// A frame: its length (4 bytes, carrying the descriptors if any), then its bytes.
async fn write_frame(
    conn: &mut UnixStream,
    body: &[u8],
    fds: Option<[std::os::fd::BorrowedFd<'_>; 2]>,
) -> io::Result<()> {
    let len = (body.len() as u32).to_le_bytes();
    let mut sent = 0;
    while sent == 0 {
        conn.writable().await?;
        let result = conn.try_io(Interest::WRITABLE, || {
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
            if let Some(fds) = &fds {
                control.push(rustix::net::SendAncillaryMessage::ScmRights(fds));
            }
            rustix::net::sendmsg(
                &*conn,
                &[io::IoSlice::new(&len)],
                &mut control,
                rustix::net::SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        });
        match result {
            Ok(n) => sent = n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    conn.write_all(&len[sent..]).await?;
    conn.write_all(body).await
}

async fn read_byte(conn: &mut UnixStream) -> io::Result<u8> {
    let mut byte = [0u8];
    conn.read_exact(&mut byte).await?;
    Ok(byte[0])
}

// ---- the new process -------------------------------------------------------------------

/// What adopted tunnels need from the new node.
pub struct Adoption {
    pub drain: &'static Drain,
    pub access_log: AccessLog,
    pub metrics: Arc<Metrics>,
}

/// Binds the socket the old process hands its tunnels over (before Pingora takes the
/// listeners over, so it is there by the time the old process looks for it).
pub fn listen(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Takes the old process's tunnels (one connection), until the node stops.
pub async fn adopt(listener: std::os::unix::net::UnixListener, path: PathBuf, node: Adoption) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            log::warn!("tunnel handover: cannot listen: {e}");
            return;
        }
    };
    let mut stop = node.drain.tunnel_close_signal();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((conn, _)) = accepted else { continue };
                if !same_user(&conn) {
                    continue;
                }
                let (adopted, refused) = receive(conn, &node).await;
                log::info!("tunnel handover: {adopted} tunnel(s) adopted, {refused} refused");
                break;
            }
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Serves one old process: its hello, then its tunnels. Returns (adopted, refused).
async fn receive(mut conn: UnixStream, node: &Adoption) -> (usize, usize) {
    let (mut adopted, mut refused) = (0, 0);
    let Ok((hello, _)) = step(read_frame(&mut conn, 64)).await else {
        return (0, 0);
    };
    let theirs = hello
        .strip_prefix(MAGIC.as_slice())
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map(u32::from_le_bytes);
    if theirs != Some(version()) {
        log::warn!(
            "tunnel handover refused: the old process sends format {theirs:?}, this one reads {}; its tunnels drain there",
            version()
        );
        let _ = step(conn.write_all(&[0])).await;
        return (0, 0);
    }
    if step(conn.write_all(&[1])).await.is_err() {
        return (0, 0);
    }
    loop {
        let frame = match step(read_frame(&mut conn, 4 + MAX_STATE + 2 * MAX_HELD)).await {
            Ok((frame, _)) if frame.is_empty() => break,
            Ok(frame) => frame,
            Err(_) => break,
        };
        match take_tunnel(frame) {
            Ok((relay, meta, limits)) => {
                if step(conn.write_all(&[1])).await.is_err() {
                    break;
                }
                // Only the old process's commit makes it ours: it stops then.
                match step(read_byte(&mut conn)).await {
                    Ok(1) => {
                        adopted += 1;
                        node.metrics.tunnel_adopted();
                        let log = TunnelLog::new(
                            node.access_log.clone(),
                            node.metrics.clone(),
                            &meta.request_id,
                            &meta.route,
                            meta.client,
                            meta.origin.as_deref(),
                        );
                        let guard = node.drain.tunnel(log.route(), log.client);
                        super::spawn_relay(relay, limits, log, guard);
                    }
                    // Dropped without a shutdown: the old process still relays it.
                    _ => break,
                }
            }
            Err(reason) => {
                log::warn!("tunnel handover: a tunnel refused: {reason}");
                refused += 1;
                if step(conn.write_all(&[0])).await.is_err() {
                    break;
                }
            }
        }
    }
    (adopted, refused)
}

/// Builds a relay from a tunnel's frame and descriptors.
fn take_tunnel(
    (frame, fds): (Vec<u8>, Vec<OwnedFd>),
) -> Result<(Relay, TunnelMeta, TunnelLimits), String> {
    let [down, up]: [OwnedFd; 2] = fds
        .try_into()
        .map_err(|fds: Vec<OwnedFd>| format!("{} descriptors, not 2", fds.len()))?;
    let json_len = frame
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or("a short frame")?;
    let json = frame.get(4..4 + json_len).ok_or("a short frame")?;
    let state: WireTunnel = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    if state.version != version() {
        return Err(format!("format version {}", state.version));
    }
    let held = &frame[4 + json_len..];
    if held.len() != state.held_client_to_origin + state.held_origin_to_client {
        return Err("held bytes do not add up".into());
    }
    let (c2o, o2c) = held.split_at(state.held_client_to_origin);
    let stream = |fd: OwnedFd| -> Result<Stream, String> {
        let std = std::net::TcpStream::from(fd);
        std.set_nonblocking(true).map_err(|e| e.to_string())?;
        let tokio = tokio::net::TcpStream::from_std(std).map_err(|e| e.to_string())?;
        Ok(Box::new(L4Stream::from(tokio)))
    };
    let limits = TunnelLimits {
        idle_timeout: Duration::from_millis(state.idle_timeout_ms),
        max_lifetime: Duration::from_millis(state.max_lifetime_ms),
        linger: Duration::from_millis(state.linger_ms),
    };
    let now = Instant::now();
    let relay = Relay::adopted(
        stream(down)?,
        stream(up)?,
        c2o.to_vec(),
        o2c.to_vec(),
        super::relay::Clocks {
            started: now
                .checked_sub(Duration::from_millis(state.age_ms))
                .unwrap_or(now),
            deadline: now + Duration::from_millis(state.lifetime_left_ms),
            last_moved: now
                .checked_sub(Duration::from_millis(state.quiet_ms))
                .unwrap_or(now),
        },
        (state.bytes_client_to_origin, state.bytes_origin_to_client),
    );
    Ok((relay, state.meta, limits))
}

/// Reads a frame (its descriptors come with its length), refusing one over `max` bytes.
async fn read_frame(conn: &mut UnixStream, max: usize) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut len = [0u8; 4];
    let mut fds = Vec::new();
    let mut got = 0;
    // Only recvmsg(2) receives descriptors, and they come with the frame's first byte; the
    // length is read exactly, so no read ever runs into the next frame's descriptors.
    while got == 0 {
        conn.readable().await?;
        let result = conn.try_io(Interest::READABLE, || {
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
            let received = rustix::net::recvmsg(
                &*conn,
                &mut [io::IoSliceMut::new(&mut len)],
                &mut control,
                rustix::net::RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            for message in control.drain() {
                if let rustix::net::RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            Ok(received.bytes)
        });
        match result {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got = n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    conn.read_exact(&mut len[got..]).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    Ok((body, fds))
}

/// Runs a relay (a new tunnel's, or an adopted one) to its end: it may be handed over,
/// otherwise it writes the tunnel's record.
///
/// A plain function around an `async move` block, not an `async fn`: an `async fn` moves
/// its arguments into locals of its own, and the task then holds each twice (560 bytes of
/// an idle tunnel's ~2 KiB), where the block uses what it captured in place.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn run_relay(
    mut relay: Relay,
    limits: TunnelLimits,
    log: TunnelLog,
    guard: TunnelGuard,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let eligible = eligible(&relay.downstream, &relay.upstream);
        let mut ticket = Ticket::new(guard.handover(), eligible);
        guard.relaying();
        let ended_by = loop {
            let step = {
                // One wait for the three signals (the drain, a close order, the handover):
                // a waiter each took 160 to 280 bytes of every idle tunnel's task.
                let asked = || ticket.asked();
                let signal = pin!(guard.closing_or(asked));
                relay.run(&limits, signal, asked).await
            };
            match step {
                Step::Ended(ended_by) => break ended_by,
                // Boxed, as the closes below: each tunnel's task is as large as its largest
                // state, and these run once at most, where an idle tunnel waits in `run`.
                Step::Paused => match Box::pin(ticket.offer(relay, &log, limits)).await {
                    Some(kept) => relay = kept,
                    None => {
                        log.metrics.tunnel_handed_over();
                        return; // the new process writes its record
                    }
                },
            }
        };
        // An order of its own (admin, chaos) says how; the drain's close is a FIN.
        let outcome = match guard.order() {
            Some((by, how)) if ended_by == super::ClosedBy::Shutdown => {
                Box::pin(relay.close_as(by, how, limits.linger)).await
            }
            _ => Box::pin(relay.finish(ended_by)).await,
        };
        log.write(&outcome);
        // The node may exit once the last tunnel's record is written.
        drop(guard);
    }
}
