//! When a failed attempt may go on to another origin.
//!
//! - A connect failure sent nothing: an idempotent request is retried on the next origin
//!   while the group's `max_retries` budget lasts.
//! - A failure after the request was (even partly) sent is retried only for an idempotent
//!   request whose body is still buffered, within the same budget, when the origin dropped
//!   the connection before any byte of an answer (closed or reset while the edge waited
//!   for the head, or while the request was written; a reused connection or a fresh
//!   one, as nginx's default `proxy_next_upstream error` does): an origin that is dying
//!   or being restarted resets what it had accepted, and a GET must not fail for it
//!   while another origin is up (RFC 9110 §9.2.2 allows an idempotent request to be sent
//!   again). An origin that times out is not retried elsewhere. A non-idempotent request
//!   is never retried once any bytes were sent: the origin may have acted on it.
//!
//! - A reused connection that turns out closed before any byte came back is a keep-alive
//!   race, not a failed origin: the request goes again to the *same* origin on a fresh
//!   connection, once, whatever the budget (a one-origin group would otherwise answer
//!   502 to a request its healthy origin never saw).
//!
//! - A shield (an edge's hop to its next tier) that drops the connection before any byte
//!   of an answer (reset or closed while the edge waited for the head, reused connection
//!   or fresh, or while the request was being written) is skipped for an idempotent,
//!   replayable request, as one that refuses the connection is: the next shield on the
//!   ring gets it. A shield is the fleet's own cache, so this is safe for the same requests
//!   a reused connection's race is; it is what happens when a shield stops with handshakes
//!   still in its listen backlog (the kernel completes them, then resets them). A shield
//!   that times out is not skipped: it is waiting on the origin, which a second shield
//!   would wait on as long.
//!
//! - A failure on the client's side (it reset its stream or closed the connection while
//!   the edge wrote its answer) is never retried: the origin did its part.
//!
//! Each attempt's origin is recorded in `ctx.tried`, which the access log shows.

use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, RetryType};
use pingora_proxy::Session;

use super::ctx::RequestCtx;

/// Whether the group's `max_retries` leaves room for another attempt.
fn budget_left(ctx: &RequestCtx) -> bool {
    let max_retries = ctx
        .snapshot
        .as_ref()
        .zip(ctx.decision.as_ref())
        .and_then(|(s, d)| s.engine.config.origin_groups.get(d.origin_group))
        .map_or(0, |group| group.max_retries);
    ctx.tried.len() <= max_retries
}

/// `fail_to_connect`: nothing reached the origin.
pub fn after_connect_failure(
    session: &Session,
    peer: &HttpPeer,
    ctx: &RequestCtx,
    mut e: Box<Error>,
) -> Box<Error> {
    if session.req_header().method.is_idempotent() && budget_left(ctx) {
        log::info!(
            "request {}: connecting to {peer} failed ({e}); trying the next origin",
            ctx.request_id
        );
        e.set_retry(true);
    }
    e
}

/// Whether an attempt failed before the origin or shield answered anything: the connection
/// closed or reset while the head was awaited (Pingora marks exactly those `ReusedOnly`),
/// or while the request was written, and nothing went to the client yet.
fn dropped_unanswered(session: &Session, e: &Error) -> bool {
    let dropped = e.retry == RetryType::ReusedOnly || e.etype == ErrorType::WriteError;
    dropped && session.as_ref().response_written().is_none()
}

/// `error_while_proxy`: the request may have reached the origin.
pub fn after_proxy_error(
    session: &Session,
    peer: &HttpPeer,
    ctx: &mut RequestCtx,
    e: Box<Error>,
    upstream_reused: bool,
) -> Box<Error> {
    let mut e = e.more_context(format!("Peer: {peer}"));
    if e.esource() == &ErrorSource::Downstream {
        // The client's side failed (it reset the stream, or went): no origin's fault, and
        // nobody is left to answer.
        e.set_retry(false);
        return e;
    }
    let replayable =
        session.req_header().method.is_idempotent() && !session.as_ref().retry_buffer_truncated();
    let dropped = replayable && dropped_unanswered(session, &e);
    if dropped && ctx.tier.shield.is_some() {
        log::info!(
            "request {}: shield {peer} dropped the connection before answering ({e}); trying the next shield",
            ctx.request_id
        );
        e.set_retry(true);
        return e;
    }
    if replayable && upstream_reused && !ctx.retried_fresh && ctx.tier.shield.is_none() {
        e.retry.decide_reuse(true);
        if e.retry() {
            log::info!(
                "request {}: {peer} closed a reused connection ({e}); again on a fresh one",
                ctx.request_id
            );
            ctx.retry_fresh = ctx.origin_index;
            ctx.retried_fresh = true;
            return e;
        }
    }
    if replayable && budget_left(ctx) {
        if dropped {
            e.set_retry(true);
        }
        e.retry.decide_reuse(upstream_reused);
        if e.retry() {
            log::info!(
                "request {}: {peer} dropped the connection before answering ({e}); trying the next origin",
                ctx.request_id
            );
        }
    } else {
        e.set_retry(false);
    }
    e
}
