//! The HTTP/1 keep-alive loop, run by the edge instead of Pingora's own
//! (`impl ServerApp for HttpServerApp`), with two differences:
//!
//! - Before each request (the first one too) the connection waits for the request's first
//!   bytes in a small future of its own, and the proxy's request future (about 12 KiB) is
//!   built only once they are here. Pingora's loop awaits the next request inside that
//!   future, so every idle connection held all of it. The first read lands in a buffer on
//!   the stack of the poll and goes to the session as the start of its head (Pingora's
//!   pipelined-prefix path), so waiting this way costs no extra system call.
//! - A new connection's first request is served even when the node starts stopping while
//!   it waits for it (see [`read_start`]); only kept-alive connections are closed idle.
//!
//! Everything else is Pingora's loop as published: keep-alive on (60 s, Pingora's value;
//! the edge's own `keepalive_timeout` is the head guard's) unless the service is stopping,
//! the settings a request leaves for the next applied to it, pipelined bytes parsed at
//! once.

use std::future::{poll_fn, Future};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncRead, ReadBuf};

use crate::proxy::Portico;

/// The most the first read of a request takes (Pingora reads a head 4 KiB at a time too).
const FIRST_READ: usize = 4096;

/// Serves an HTTP/1 connection's requests until it closes or is not kept alive.
///
/// While the connection waits for its next request, this future holds the stream, the
/// settings the last request left and the wait itself, nothing of a request: each session
/// is made and handed to the proxy in [`request`], a plain function, so no session (about
/// 1 KiB) has room here.
pub async fn serve_http1(
    proxy: &Arc<HttpProxy<Portico>>,
    mut stream: Stream,
    shutdown: &ShutdownWatch,
) -> Option<Stream> {
    let first = read_start(&mut stream).await?;
    let mut reused = request(proxy, stream, Start::First { first }, shutdown)
        .await?
        .consume();
    // The node's stop, awaited by every wait for a next request: registered with the
    // signal once for the connection, not once a request (a clone of the receiver and a
    // waiter added and taken away each time: about 400 instructions of a hit's 25,500).
    // A stop that comes during a request is kept in it, for the next wait. It costs an
    // idle connection about 100 bytes, as it now lives beside the request's state.
    let mut stop_signal = shutdown.clone();
    let mut stop = std::pin::pin!(stop_signal.changed());
    loop {
        let (mut stream, settings) = reused;
        let pipelined = settings
            .as_ref()
            .is_some_and(HttpPersistentSettings::has_pipelined_prefix);
        let first = match pipelined {
            true => None,
            false => Some(next_request_start(&mut stream, shutdown, stop.as_mut()).await?),
        };
        let next = Start::Next { settings, first };
        reused = request(proxy, stream, next, shutdown).await?.consume();
    }
}

/// How a request's session starts.
enum Start {
    /// The connection's first request, and its first bytes.
    First { first: BytesMut },
    /// A later one: the settings the previous request left, and the bytes already read
    /// (none when the previous request left pipelined bytes in `settings`).
    Next {
        settings: Option<HttpPersistentSettings>,
        first: Option<BytesMut>,
    },
}

/// One request on `stream`: its session, handed to the proxy, whose future (about 12 KiB)
/// goes on the heap. The session (about 750 bytes) is in a box of its own from the start and
/// stays there until its stream is handed back, so no future on the way moves it.
///
/// The heap block is taken first and the future is built straight into it: `Box::pin` of
/// a value (what `async_trait` does for `HttpServerApp::process_new_http`) builds the
/// whole future on the stack and copies it, 12 KiB a request.
fn request<'a>(
    proxy: &'a Arc<HttpProxy<Portico>>,
    stream: Stream,
    start: Start,
    shutdown: &'a ShutdownWatch,
) -> Pin<Box<impl Future<Output = Option<ReusedHttpStream>> + Send + 'a>> {
    let mut session = Box::new(ServerSession::new_http1(stream));
    match start {
        Start::First { first } => {
            session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
            session.set_pipelined_prefix(first);
        }
        Start::Next { settings, first } => {
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            if let Some(first) = first {
                session.set_pipelined_prefix(first);
            }
        }
    }
    let slot = Box::new_uninit();
    Box::into_pin(Box::write(slot, request_future(proxy, session, shutdown)))
}

/// The request's future, returned in the caller's slot: not inlined, and nothing in it can
/// unwind, so that the compiler writes the future where the caller wants it rather than
/// in a temporary it then copies.
#[inline(never)]
fn request_future<'a>(
    proxy: &'a Arc<HttpProxy<Portico>>,
    session: Box<ServerSession>,
    shutdown: &'a ShutdownWatch,
) -> impl Future<Output = Option<ReusedHttpStream>> + Send + 'a {
    proxy.serve_new_http_boxed(session, shutdown)
}

/// Reads the next request's first bytes through the head guard (which counts them and
/// keeps the keep-alive deadline). `None` when the connection ends, at the keep-alive
/// deadline, or when the node stops (`stop`, the connection's wait for `shutdown` to
/// change): an idle connection is closed then, as Pingora closes one after a request.
async fn next_request_start(
    stream: &mut Stream,
    shutdown: &ShutdownWatch,
    stop: Pin<&mut impl Future>,
) -> Option<BytesMut> {
    if *shutdown.borrow() {
        return None;
    }
    tokio::select! {
        // The read first: a stop is rare. Once `stop` is ready the connection ends, so
        // the finished future is never polled again.
        biased;
        first = read_start(stream) => first,
        _ = stop => None,
    }
}

/// A request's first bytes (`None`: the connection ended or failed first).
///
/// A new connection's first request is awaited so too, but not given up when the node
/// stops: the connection was accepted, so its client has sent or is sending a request,
/// which is served (with `Connection: close`). Pingora's own first read gives up at the
/// stop, and a connection accepted just before a drain or an upgrade then closed with no
/// answer. The head guard's deadline bounds the wait.
async fn read_start(stream: &mut Stream) -> Option<BytesMut> {
    let first = poll_fn(|cx| {
        let mut storage = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut buf = ReadBuf::uninit(&mut storage);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Some(BytesMut::from(buf.filled()))),
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    first.filter(|bytes| !bytes.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The session's box is made for every request: it stays in jemalloc's 768-byte class,
    /// which left room for the connection's digest inside it (it was a box of its own).
    #[test]
    fn a_request_session_fits_the_768_byte_class() {
        assert!(std::mem::size_of::<ServerSession>() <= 768);
    }

    /// A kept-alive connection's next request reuses the thread's last request header
    /// (pingora-core's *Request headers reused*): emptied and rebuilt, it is what a new one
    /// is, with nothing of the request before (fields, their case, target, version).
    #[test]
    fn a_reused_request_header_is_a_new_one() {
        use pingora_http::RequestHeader;
        let wire = |header: &RequestHeader| {
            let mut wire = Vec::new();
            header.header_to_h1_wire(&mut wire);
            (
                header.method.clone(),
                header.uri.clone(),
                header.version,
                wire,
            )
        };
        let mut used = RequestHeader::build("POST", b"http://a.test/x?y", Some(2)).unwrap();
        used.append_header("x-odd-CASE", "1").unwrap();
        used.append_header("X-Second", "2").unwrap();
        used.set_version(http::Version::HTTP_10);
        used.clear_for_reuse();
        assert!(used.headers.is_empty());
        for (method, target) in [("GET", &b"/next?q=1"[..]), ("PUT", b"*")] {
            used.rebuild(method, target, Some(2)).unwrap();
            used.append_header("accept", "*/*").unwrap();
            let mut fresh = RequestHeader::build(method, target, Some(2)).unwrap();
            fresh.append_header("accept", "*/*").unwrap();
            assert_eq!(wire(&used), wire(&fresh));
            assert_eq!(used.raw_path(), fresh.raw_path());
            used.clear_for_reuse();
        }
    }
}
