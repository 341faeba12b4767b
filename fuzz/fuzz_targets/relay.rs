//! The tunnel relay (`src/tunnel/relay.rs`) over in-memory connections whose reads and
//! writes the input splits at random sizes, with random `Pending`s in between, and with
//! bytes Pingora had read before the handoff (one or more chunks each way).
//!
//! Invariants: no panic; each side receives exactly what the other sent, whole and in
//! order (what was read before the handoff first); nothing is written after a side's
//! write half was shut down; each side's end is passed on (its write half towards the
//! other shut down); the outcome counts exactly the bytes written each way and names a
//! side that closed, not an error or a timer.
#![no_main]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora_proxy::UpgradedTunnel;
use portico::config::model::TunnelLimits;
use portico::tunnel::relay::relay;
use portico::tunnel::ClosedBy;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one peer of the tunnel saw: the bytes the relay wrote to it, whether its write
/// half was shut, and a write after that (a bug).
#[derive(Default)]
struct Seen {
    received: Vec<u8>,
    shut: bool,
    written_after_shut: bool,
}

/// The relay's end of one connection: reads give `incoming` in pieces the plan sizes, then
/// EOF; writes take as much as the plan allows. A plan entry of 0 is a `Pending` (with an
/// immediate wake, as a socket that becomes ready at once); an exhausted plan does whole
/// reads and writes.
struct Conn {
    incoming: VecDeque<u8>,
    reads: VecDeque<u16>,
    writes: VecDeque<u16>,
    seen: Arc<Mutex<Seen>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let limit = match this.reads.pop_front() {
            Some(0) => {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Some(n) => n as usize,
            None => usize::MAX,
        };
        let n = limit.min(buf.remaining()).min(this.incoming.len());
        let chunk: Vec<u8> = this.incoming.drain(..n).collect();
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let limit = match this.writes.pop_front() {
            Some(0) => {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Some(n) => n as usize,
            None => usize::MAX,
        };
        let n = limit.min(data.len());
        let mut seen = this.seen.lock().unwrap();
        if seen.shut && n > 0 {
            seen.written_after_shut = true;
        }
        seen.received.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.seen.lock().unwrap().shut = true;
        Poll::Ready(Ok(()))
    }
}

#[async_trait::async_trait]
impl Shutdown for Conn {
    async fn shutdown(&mut self) {
        self.seen.lock().unwrap().shut = true;
    }
}
impl UniqueID for Conn {
    fn id(&self) -> UniqueIDType {
        0
    }
}
impl Ssl for Conn {
    fn get_ssl(&self) -> Option<&TlsRef> {
        None
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        None
    }
}
impl GetTimingDigest for Conn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}
impl GetProxyDigest for Conn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}
impl GetSocketDigest for Conn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        None
    }
    fn set_socket_digest(&mut self, _digest: SocketDigest) {}
}
impl Peek for Conn {}

#[path = "common.rs"]
mod common;

/// One side of the tunnel, from settings lines with its prefix (`c.` the client, `o.` the
/// origin): `preread=` chunks Pingora read before the handoff (`|`-separated), `data=` what
/// the peer sends after it, `repeat=` how many times (1 to 40: some runs exceed the
/// relay's 16 KiB read-ahead), `ended=1` the peer had closed before the handoff (it
/// sends nothing after it), `reads=` and `writes=` the plans (comma-separated sizes, 0 a
/// `Pending`).
#[derive(Debug)]
struct Side {
    preread: Vec<Vec<u8>>,
    data: Vec<u8>,
    repeat: usize,
    ended: bool,
    reads: Vec<u16>,
    writes: Vec<u16>,
}

fn side(lines: &[String], prefix: &str) -> Side {
    let get = |key: &str| common::setting(lines, &format!("{prefix}{key}")).unwrap_or_default();
    let plan = |key: &str| -> Vec<u16> {
        get(key)
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect()
    };
    let preread = get("preread");
    Side {
        preread: if preread.is_empty() {
            Vec::new()
        } else {
            preread.split('|').map(|c| c.as_bytes().to_vec()).collect()
        },
        data: get("data").as_bytes().to_vec(),
        repeat: get("repeat").parse::<usize>().unwrap_or(0).clamp(1, 40),
        ended: get("ended") == "1",
        reads: plan("reads"),
        writes: plan("writes"),
    }
}

struct Input {
    client: Side,
    origin: Side,
}

fn conn(side: &Side, to_it: &Side) -> (Conn, Arc<Mutex<Seen>>, Vec<u8>) {
    let sent = if side.ended {
        Vec::new()
    } else {
        side.data.repeat(side.repeat)
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let _ = to_it;
    let conn = Conn {
        incoming: sent.iter().copied().collect(),
        reads: side.reads.iter().copied().collect(),
        writes: side.writes.iter().copied().collect(),
        seen: seen.clone(),
    };
    // What the other side must receive: the preread chunks, then the rest.
    let mut expected: Vec<u8> = side.preread.concat();
    expected.extend_from_slice(&sent);
    (conn, seen, expected)
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
}

// Input: settings lines for both sides (see `Side`).
fuzz_target!(|data: &[u8]| {
    let lines = common::lines(data);
    let input = Input {
        client: side(&lines, "c."),
        origin: side(&lines, "o."),
    };
    let (downstream, client_seen, to_origin) = conn(&input.client, &input.origin);
    let (upstream, origin_seen, to_client) = conn(&input.origin, &input.client);
    let tunnel = UpgradedTunnel {
        downstream: Box::new(downstream),
        downstream_read: input
            .client
            .preread
            .iter()
            .map(|c| Bytes::from(c.clone()))
            .collect(),
        downstream_ended: input.client.ended,
        upstream: Box::new(upstream),
        upstream_read: input
            .origin
            .preread
            .iter()
            .map(|c| Bytes::from(c.clone()))
            .collect(),
        upstream_ended: input.origin.ended,
    };
    let limits = TunnelLimits {
        idle_timeout: Duration::from_secs(3600),
        max_lifetime: Duration::from_secs(3600),
        linger: Duration::from_secs(3600),
    };
    let outcome = RUNTIME.with(|rt| {
        rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(60),
                relay(tunnel, limits, std::future::pending()),
            )
            .await
            .expect("the relay did not finish")
        })
    });
    let client = client_seen.lock().unwrap();
    let origin = origin_seen.lock().unwrap();
    assert!(
        origin.received == to_origin,
        "client -> origin: {} bytes expected, {} received, first difference at {:?}",
        to_origin.len(),
        origin.received.len(),
        origin
            .received
            .iter()
            .zip(&to_origin)
            .position(|(a, b)| a != b)
    );
    assert!(
        client.received == to_client,
        "origin -> client: {} bytes expected, {} received, first difference at {:?}",
        to_client.len(),
        client.received.len(),
        client
            .received
            .iter()
            .zip(&to_client)
            .position(|(a, b)| a != b)
    );
    assert!(
        !client.written_after_shut && !origin.written_after_shut,
        "a write after shutdown"
    );
    assert!(client.shut && origin.shut, "an end was not passed on");
    assert_eq!(outcome.bytes_client_to_origin, to_origin.len() as u64);
    assert_eq!(outcome.bytes_origin_to_client, to_client.len() as u64);
    assert!(
        matches!(outcome.closed_by, ClosedBy::Client | ClosedBy::Origin),
        "{outcome:?}"
    );
});
