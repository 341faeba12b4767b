//! The HTTP/1 keep-alive loop, run by the edge instead of Pingora's own
//! (`impl ServerApp for HttpServerApp`), with one difference: between two requests the
//! connection waits for the next request's first byte in a small future of its own
//! ([`HeadGuard::poll_request_ready`]), and the proxy's request future is built only once
//! that byte is here. Pingora's loop awaits the next request inside that future, so an
//! idle kept-alive connection held all of it: about 17 KiB of the 38 KiB an idle
//! connection cost (measured with heaptrack; `bench/notes.md`).
//!
//! Everything else is Pingora's loop as published: keep-alive on (60 s, Pingora's value;
//! the edge's own `keepalive_timeout` is the guard's) unless the service is stopping, the
//! settings a request leaves for the next applied to it, pipelined bytes parsed at once.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;

use crate::connection::HeadGuard;
use crate::proxy::Portico;

/// Serves an HTTP/1 connection's requests until it closes or is not kept alive.
pub async fn serve_http1(
    proxy: &Arc<HttpProxy<Portico>>,
    stream: Stream,
    shutdown: &ShutdownWatch,
) -> Option<Stream> {
    let mut session = ServerSession::new_http1(stream);
    session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
    let mut reused = proxy.process_new_http(session, shutdown).await;
    while let Some((mut stream, settings)) = reused.map(ReusedHttpStream::consume) {
        let pipelined = settings
            .as_ref()
            .is_some_and(HttpPersistentSettings::has_pipelined_prefix);
        if !pipelined && !next_request_arrives(&mut stream, shutdown).await {
            return None;
        }
        let mut session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            settings.apply_to_session(&mut session);
        }
        reused = proxy.process_new_http(session, shutdown).await;
    }
    None
}

/// Waits for the next request's first byte (or the connection's end: the session then
/// reads it and closes). False at the keep-alive deadline, or when the node stops: an
/// idle connection is closed then, as Pingora closes one after a request.
async fn next_request_arrives(stream: &mut Stream, shutdown: &ShutdownWatch) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    let mut shutdown = shutdown.clone();
    let ready = poll_fn(|cx| match stream.as_any_mut().downcast_mut::<HeadGuard>() {
        Some(guard) => guard.poll_request_ready(cx),
        None => Poll::Ready(Ok(())),
    });
    tokio::select! {
        ready = ready => ready.is_ok(),
        _ = shutdown.changed() => false,
    }
}
