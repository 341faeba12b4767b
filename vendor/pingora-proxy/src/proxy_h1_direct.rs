//! PORTICO PATCH (direct bodyless path): an HTTP/1 request without a body, proxied to an
//! HTTP/1 origin in one loop, without the task pipes.
//!
//! `proxy_1to1` runs two futures side by side, joined, that talk through two channels: the
//! downstream half reads the request body and writes the response, the upstream half writes
//! the body and reads the response. A request without a body (most `GET`s) leaves half of
//! that with nothing to do, yet each one made two channels (an allocation of a block of
//! slots each), and each batch of response tasks crossed one, waking the request's task to
//! poll the whole request future once more only to pass it on. Here the same steps run in
//! order: the request's end goes through the body filters to the origin, then each batch
//! of response tasks is read, filtered and written, while the client's connection is
//! watched, as the downstream half watched it, for a close (an abort unless the session
//! was told otherwise, `set_abort_on_close`) or
//! pipelined bytes (kept for the next request). Requests with a body, cached or cacheable
//! ones, upgrades, handed-off tunnels and custom sessions go the published way.

use super::*;
use crate::proxy_cache::{range_filter::RangeBodyFilter, ServeFromCache};
use crate::proxy_h1::{read_response_by, send_body_to1, OriginClock};
use futures::FutureExt;

impl<SV, C> HttpProxy<SV, C>
where
    C: custom::Connector,
{
    /// Whether `proxy_1to1` may take [`Self::proxy_bodyless_h1`] for this request (`req` is
    /// the request as it goes to the origin).
    pub(crate) fn is_direct_bodyless(session: &mut Session, req: &RequestHeader) -> bool {
        session.downstream_session.as_http1().is_some()
            && session.tunnel_handoff.is_none()
            && !session.cache.enabled()
            && !session.cache.bypassing()
            && !pingora_core::protocols::http::v1::common::is_upgrade_req(req)
            && session.as_ref().get_retry_buffer().is_none()
            && session.as_mut().is_body_empty()
            && session.as_mut().is_body_done()
    }

    /// Sends the request's end and relays the response. Returns whether the client's and
    /// the origin's connections can be reused, as the two joined halves would.
    pub(crate) async fn proxy_bodyless_h1(
        &self,
        session: &mut Session,
        client_session: &mut HttpSessionV1,
        ctx: &mut SV::CTX,
    ) -> Result<(bool, bool)>
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        let mut clock = OriginClock::new(session.origin_deadlines, client_session);

        // The request's end, through the filters a body's end goes through.
        let mut data = None;
        session
            .downstream_modules_ctx
            .request_body_filter(&mut data, true)
            .await?;
        self.inner
            .request_body_filter(session, &mut data, true, ctx)
            .await?;
        // A failed send leaves the connection unusable, but a response the origin had
        // already sent is still relayed; the send's error is the one told if none comes.
        let mut send_error = None;
        if let Err(e) = send_body_to1(client_session, Some(HttpTask::Body(data, true))).await {
            warn!("send error, draining read buf: {e}");
            send_error = Some(e);
        }
        clock.request_sent();

        let mut serve_from_cache = ServeFromCache::new();
        let mut range_body_filter = RangeBodyFilter::new();
        let mut watch_downstream = true;
        let upstream_ended = loop {
            let deadline = clock.deadline(false);
            let first = tokio::select! {
                biased;
                read = read_response_by(client_session, deadline) => read,
                idle = session.downstream_session.read_body_or_idle(true), if watch_downstream => {
                    // A close or stray bytes end the request; pipelined bytes keep it pending.
                    if let Err(e) = idle {
                        return Err(e.into_down());
                    }
                    watch_downstream = false;
                    continue;
                }
            };
            // The batch: this task and those already read (a small body comes with its head),
            // at most `TASK_BUFFER_SIZE` of them, as many as the published path's channel
            // holds. Unbounded, a client that stopped reading let each batch take all the
            // origin had sent meanwhile (megabytes, copied into one write buffer).
            let mut tasks = Vec::with_capacity(2);
            tasks.push(upstream_task(
                first,
                &mut clock,
                client_session,
                &mut send_error,
            ));
            while !tasks.last().is_some_and(HttpTask::is_end) && tasks.len() < TASK_BUFFER_SIZE {
                let deadline = clock.deadline(false);
                let Some(read) = read_response_by(client_session, deadline).now_or_never() else {
                    break;
                };
                tasks.push(upstream_task(
                    read,
                    &mut clock,
                    client_session,
                    &mut send_error,
                ));
            }
            let ended = tasks.last().is_some_and(HttpTask::is_end);
            // Filtered in place, as the downstream half filters a batch.
            for slot in tasks.iter_mut() {
                let mut t = std::mem::replace(slot, HttpTask::Done);
                #[cfg(feature = "upstream_modules")]
                if let HttpTask::Header(header, end_of_stream) = &t {
                    self.inner
                        .adjust_upstream_modules(session, header, *end_of_stream, ctx)
                        .await?;
                }
                #[cfg(feature = "upstream_modules")]
                session.upstream_modules_filter_task(&mut t).await?;
                session.upstream_compression.response_filter(&mut t);
                *slot = self
                    .h1_response_filter(
                        session,
                        t,
                        ctx,
                        &mut serve_from_cache,
                        &mut range_body_filter,
                        false,
                    )
                    .await?;
            }
            // PORTICO PATCH (origin released first): the whole response is read and the
            // whole request sent: the last batch waits in `response_tail` while the
            // caller returns the origin's connection to the pool. Written first, it could
            // bring the client's next request before the connection is back, and that
            // request would open another.
            if ended && send_error.is_none() && !matches!(tasks.last(), Some(HttpTask::Failed(_))) {
                session.response_tail = Some(tasks);
                return Ok((true, true));
            }
            let response_done = session.write_response_tasks(tasks).await?;
            if response_done || ended {
                break ended;
            }
        };

        let reuse_downstream = session.finish_downstream_body().await;
        // The origin's connection is reusable once its whole response was read and the
        // whole request sent.
        Ok((reuse_downstream, upstream_ended && send_error.is_none()))
    }
}

/// A read of the origin's response as the task the downstream side would get.
fn upstream_task(
    read: Result<HttpTask>,
    clock: &mut OriginClock,
    client_session: &mut HttpSessionV1,
    send_error: &mut Option<Box<Error>>,
) -> HttpTask {
    match read {
        Ok(task) => {
            clock.response_started(client_session, &task);
            task
        }
        Err(e) => HttpTask::Failed(send_error.take().unwrap_or(e).into_up()),
    }
}
