//! PORTICO PATCH (tunnel handoff): after a successful HTTP/1 upgrade, both connections are
//! handed to the application, which moves the bytes itself.
//!
//! Pingora's own tunnel keeps the whole request machinery alive for the life of the
//! tunnel (the request's future, two 64 KiB body buffers, the task pipes between the legs)
//! and copies every chunk through it. With `Session::tunnel_handoff` set, the proxy stops
//! at the `101`: the downstream loop returns once the `101` is written, `finish()` runs the
//! `logging` hook as usual, and then gives the two streams, with any bytes Pingora had
//! already read past the headers on either side, to the handoff callback.

use bytes::Bytes;
use futures::FutureExt;
use pingora_core::protocols::http::v1::client::HttpSession as HttpSessionV1;
use pingora_core::protocols::http::ServerSession as HttpSession;
use pingora_core::protocols::Stream;

use crate::Session;

/// The two ends of an upgraded connection, as the proxy leaves them.
pub struct UpgradedTunnel {
    /// The client's connection. The `101` may still sit in its write buffer: flush first.
    pub downstream: Stream,
    /// Bytes from the client that Pingora had read already, to forward first.
    pub downstream_read: Vec<Bytes>,
    /// The client had closed its side (or failed) before the handoff.
    pub downstream_ended: bool,
    /// The origin's connection.
    pub upstream: Stream,
    /// Bytes from the origin that arrived with (or right after) the `101`.
    pub upstream_read: Vec<Bytes>,
    /// The origin had closed its side (or failed) before the handoff.
    pub upstream_ended: bool,
}

/// Called once per upgraded request, on the request's task; it should spawn the relay.
pub type TunnelHandoff = Box<dyn FnOnce(UpgradedTunnel) + Send + Sync>;

/// Takes the streams out of a finished upgraded session and calls `handoff`.
pub(crate) fn hand_off(session: Session, mut upstream: HttpSessionV1, handoff: TunnelHandoff) {
    let HttpSession::H1(mut downstream) = *session.downstream_session else {
        // Only HTTP/1 upgrades; anything else just closes.
        return;
    };
    let (downstream_read, downstream_ended) = drain(|| downstream.read_body_bytes().now_or_never());
    let (upstream_read, upstream_ended) = drain(|| upstream.read_body_bytes().now_or_never());
    handoff(UpgradedTunnel {
        downstream: downstream.into_inner(),
        downstream_read,
        downstream_ended,
        upstream: upstream.into_inner(),
        upstream_read,
        upstream_ended,
    });
}

/// Collects what a session has buffered. Every read that completes at once empties
/// Pingora's buffer (it hands back all it holds, or reads the socket when it holds
/// nothing), so stopping at the first pending read, or after a bounded number, never
/// leaves bytes behind: the rest is still in the socket.
fn drain(
    mut read_now: impl FnMut() -> Option<pingora_error::Result<Option<Bytes>>>,
) -> (Vec<Bytes>, bool) {
    let mut chunks = Vec::new();
    for _ in 0..8 {
        match read_now() {
            None => break,
            Some(Ok(Some(bytes))) => chunks.push(bytes),
            Some(Ok(None)) | Some(Err(_)) => return (chunks, true),
        }
    }
    (chunks, false)
}
