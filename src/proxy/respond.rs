//! Responses the edge writes itself: every one carries the request id, `X-Cache`, a
//! machine-readable `X-Portico-Error` and a one-line body that says why.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use pingora_core::protocols::http::HttpTask;
use pingora_error::{BError, Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::ctx::RequestCtx;
use crate::connection::HeadLimit;

/// An answer from the edge itself (never forwarded anywhere).
pub struct EdgeAnswer<'a> {
    pub status: u16,
    /// Short token for `X-Portico-Error`, e.g. `no-route`.
    pub error: &'a str,
    /// One line for humans; a newline is added.
    pub body: String,
    /// `Location` for redirects.
    pub location: Option<String>,
}

impl<'a> EdgeAnswer<'a> {
    /// Writes the answer. The writing is boxed: answers are the rare path, and awaited in
    /// place its future (Pingora's response writer) would size the future of every
    /// request that might answer, `request_filter`'s among them (2,240 bytes copied into a
    /// new box per request before this).
    pub fn send<'s>(
        self,
        session: &'s mut Session,
        ctx: &'s mut RequestCtx,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 's>>
    where
        'a: 's,
    {
        Box::pin(self.write(session, ctx))
    }

    async fn write(self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let mut body = self.body;
        body.push('\n');
        let mut header = answer_header(self.status, self.error, body.len())?;
        if let Some(location) = self.location {
            header.insert_header(http::header::LOCATION, location)?;
        }
        ctx.edge_status = Some(self.status);
        super::headers::add_response_headers(&mut header, ctx)?;
        let head_only = session.req_header().method == http::Method::HEAD;
        // Header and body in one write: a client that reads the answer in one go (as
        // WebSocket clients read a refused handshake) gets all of it.
        let mut tasks = vec![HttpTask::Header(Box::new(header), head_only)];
        if !head_only {
            tasks.push(HttpTask::Body(Some(Bytes::from(body)), true));
        }
        session.write_response_tasks(tasks).await?;
        Ok(())
    }
}

/// The head of an answer the edge writes itself (before or instead of Pingora's session
/// writing it): plain text of `body_len` bytes, never stored, with its machine-readable
/// `error` (none when empty).
pub(super) fn answer_header(status: u16, error: &str, body_len: usize) -> Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(7))?;
    header.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    // An answer may quote what the client sent (a refused path): never read as markup.
    header.insert_header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")?;
    header.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if !error.is_empty() {
        header.insert_header("x-portico-error", error)?;
    }
    Ok(header)
}

/// The answer to a request that failed on its way to or from the origin (`code` from
/// [`status_for_failure`]). It says what failed, never where: see [`reason_for_client`].
pub fn failure_answer(code: u16, e: &Error, ctx: &RequestCtx) -> EdgeAnswer<'static> {
    let (error, body) = if slow_body(e) {
        ("request-body-timeout", reason_for_client(e, ctx))
    } else if e.etype() == &ErrorType::HTTPStatus(413) {
        // The reason `limits::count_body` gave, not the context Pingora wrapped it in
        // (which names the origin's address).
        let reason = e
            .root_cause()
            .downcast_ref::<Error>()
            .and_then(|innermost| innermost.context.as_ref())
            .map_or("", |c| c.as_str());
        (super::limits::BODY_TOO_LARGE, reason.to_owned())
    } else if e.etype() == &ErrorType::Custom(super::limits::OVER_CONNECTION_CAP) {
        let reason = e.context.as_ref().map_or("", |c| c.as_str());
        (super::limits::OVER_CONNECTION_CAP, reason.to_owned())
    } else if e.esource() == &ErrorSource::Downstream {
        let reason = reason_for_client(e, ctx);
        (
            "bad-request",
            format!("the edge could not read the request ({reason})"),
        )
    } else if e.etype() == &ErrorType::Custom(crate::origin::refusal::NO_HEALTHY_ORIGIN) {
        // `refusal::explain` wrote it for the client (addresses left out).
        let reason = e
            .context
            .as_ref()
            .map_or(String::new(), |c| c.as_str().to_owned());
        ("no-healthy-origin", reason)
    } else if e.etype() == &ErrorType::ConnectNoRoute {
        let last = ctx
            .last_connect_reason
            .as_deref()
            .map_or(String::new(), |r| format!("; the last one failed ({r})"));
        (
            "origin-failure",
            format!(
                "the edge could not get a response from the origin: no origin left to try{last}"
            ),
        )
    } else {
        let reason = reason_for_client(e, ctx);
        (
            "origin-failure",
            format!("the edge could not get a response from the origin ({reason})"),
        )
    };
    EdgeAnswer {
        status: code,
        error,
        body,
        location: None,
    }
}

/// What a client is told about a failure: its kind, then each explanation along its chain
/// of causes, with origins' addresses and host names replaced by `<origin>` and the parts
/// that are only addresses (`Peer: addr: ...`, `local address ...`) left out. A CDN keeps
/// its origins to itself; the log has the whole error.
pub fn reason_for_client(e: &Error, ctx: &RequestCtx) -> String {
    let origins = group_origins(ctx);
    let mut reason = e.etype().as_str().to_owned();
    let mut separator = ": ";
    let mut add = |text: &str| {
        if text.trim().is_empty() || text.contains("addr") {
            return;
        }
        let mut text = text.trim().to_owned();
        for origin in origins {
            text = text
                .replace(&origin.address.to_string(), "<origin>")
                .replace(&origin.address.ip().to_string(), "<origin>")
                .replace(origin.host_header.as_str(), "<origin>");
        }
        if !reason.contains(&text) {
            reason.push_str(separator);
            reason.push_str(&text);
            separator = "; ";
        }
    };
    let mut level = e;
    loop {
        // A refused head (see `quotes_a_head`): its cause, the parser's reason, is kept.
        if let Some(context) = level
            .context
            .as_ref()
            .filter(|c| !quotes_a_head(c.as_str()))
        {
            add(context.as_str());
        }
        match level.cause.as_deref() {
            Some(cause) => match cause.downcast_ref::<Box<Error>>() {
                Some(inner) => level = inner,
                None => {
                    add(&cause.to_string());
                    break;
                }
            },
            None => break,
        }
    }
    bounded(reason)
}

/// Whether an error's context is a head Pingora's parser refused: its context is then the
/// head itself (`buf: ...`, up to 2 KiB), the client's or the origin's. Answers leave it out
/// and give the parser's reason, so that what the edge refused (a request's cookies and
/// credentials, an origin's fields it would not pass on) is not sent back anyway.
pub(super) fn quotes_a_head(context: &str) -> bool {
    context.starts_with("buf: ")
}

/// What a client sent (a path, a host), quoted in an answer: at most `MAX_QUOTED` bytes of
/// it, marked `...` where it is cut, so that an answer never hands back kilobytes of
/// someone's input.
pub struct Quoted<'a>(pub &'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MAX_QUOTED: usize = 200;
        let shown = &self.0[..self.0.floor_char_boundary(MAX_QUOTED)];
        f.write_str(shown)?;
        if shown.len() < self.0.len() {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// Shortens a reason to at most `MAX_REASON` bytes, marked `...` where it is cut: Pingora's
/// context for a malformed message quotes it (an origin's response, a client's field
/// value), which may be long.
pub(super) fn bounded(mut reason: String) -> String {
    const MAX_REASON: usize = 300;
    let kept = reason.floor_char_boundary(MAX_REASON);
    if kept < reason.len() {
        reason.truncate(kept);
        reason.push_str("...");
    }
    reason
}

/// The origins of the group the request was routed to (none before routing).
fn group_origins(ctx: &RequestCtx) -> &[crate::config::model::Origin] {
    match (&ctx.snapshot, &ctx.decision) {
        (Some(snapshot), Some(decision)) => {
            &snapshot.engine.config.origin_groups[decision.origin_group].origins
        }
        _ => &[],
    }
}

/// Whether a failure is the client's doing (it closed or reset its connection or stream,
/// stalled, or sent what cannot be read), not the edge's or an origin's trouble. Pingora
/// logs every failure as an error; these go to the debug log instead (the access log
/// records each either way), so that no client can fill the error log at will, as nginx
/// logs them at `info`.
pub fn is_clients_doing(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
        || e.etype() == &ErrorType::Custom(super::limits::OVER_CONNECTION_CAP)
}

/// The client's request body came too slowly: over HTTP/1 the connection guard's
/// [`HeadLimit::SlowBody`], over HTTP/2 Pingora's body budget or, either way, its read
/// timer (a `ReadTimedout` on the client's side).
fn slow_body(e: &Error) -> bool {
    matches!(
        super::limits::client_limit(e),
        Some(HeadLimit::SlowBody(..))
    ) || (e.etype() == &ErrorType::ReadTimedout && e.esource() == &ErrorSource::Downstream)
}

/// An HTTP/2 client that reset its stream, or lost its connection, while the edge waited
/// for the origin: Pingora's two errors for it (`read_body_or_idle`), anywhere in the
/// chain (the proxy wraps them with the peer), told apart from a stream that broke the
/// protocol only by their words.
fn stream_gone(e: &Error) -> bool {
    let mut next = Some(e);
    while let Some(error) = next {
        let context = error.context.as_ref().map_or("", |c| c.as_str());
        if context.starts_with("Client closed H2") || context == "downstream error while idling" {
            return true;
        }
        next = error
            .cause
            .as_deref()
            .and_then(|c| c.downcast_ref::<BError>())
            .map(|b| &**b);
    }
    false
}

/// The status for a request that failed on its way to or from the origin: 502 for origin
/// trouble, 504 for an origin timeout, 0 when the client is already gone.
pub fn status_for_failure(e: &Error) -> u16 {
    if slow_body(e) {
        return 408;
    }
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (ErrorType::Custom(crate::origin::refusal::NO_HEALTHY_ORIGIN), _) => 503,
        (ErrorType::Custom(super::limits::OVER_CONNECTION_CAP), _) => 503,
        (
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ErrorSource::Upstream,
        ) => 504,
        // Every origin of the group was tried: still the origin side's failure.
        (ErrorType::ConnectNoRoute, _) => 502,
        (_, ErrorSource::Upstream) => 502,
        (
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (ErrorType::H2Error, ErrorSource::Downstream) if stream_gone(e) => 0,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::config::{self, Source};
    use crate::proxy::Snapshot;
    use crate::rules::{Engine, RequestFacts, Scheme};

    /// A request context routed to a group whose origin is 10.1.2.3:8443, `app.internal`.
    fn routed() -> RequestCtx {
        let node = Source {
            path: "portico.yaml".into(),
            text: "name: t\nlisteners:\n  - address: 127.0.0.1:0\naccess_log: off\n".into(),
        };
        let rules = [Source {
            path: "rules/r.yaml".into(),
            text: "routes:\n  - name: r\n    patterns: [\"/*\"]\n    origin_group: g\norigin_groups:\n  - name: g\n    origins:\n      - { address: \"10.1.2.3:8443\", host_header: app.internal }\n".into(),
        }];
        let loaded = config::build(&node, Path::new("."), &rules).expect("config");
        let snapshot = Snapshot::new(Engine::new(loaded.config));
        let headers = http::HeaderMap::new();
        let facts = RequestFacts {
            method: "GET",
            host: "a",
            path: "/",
            query: None,
            headers: &headers,
            client_ip: None,
            scheme: Scheme::Http,
            listener: None,
        };
        let mut ctx = RequestCtx::new();
        ctx.decision = Some(snapshot.engine.decide(&facts).expect("routed"));
        ctx.snapshot = Some(Arc::new(snapshot));
        ctx
    }

    #[test]
    fn only_the_clients_failures_leave_the_error_log() {
        let mut reset = Error::new(ErrorType::H2Error);
        reset.esource = ErrorSource::Downstream;
        assert!(is_clients_doing(&reset));
        let mut gone = Error::new(ErrorType::ConnectionClosed);
        gone.esource = ErrorSource::Downstream;
        assert!(is_clients_doing(&gone));
        let mut origin = Error::new(ErrorType::ConnectionClosed);
        origin.esource = ErrorSource::Upstream;
        assert!(!is_clients_doing(&origin));
        assert!(!is_clients_doing(&Error::new(ErrorType::InternalError)));
    }

    #[test]
    fn a_reason_keeps_the_causes_and_hides_the_origin() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let inner = Error::because(
            ErrorType::ConnectRefused,
            "Fail to connect to 10.1.2.3:8443 (SNI app.internal)",
            io,
        );
        let outer = inner.more_context("Peer: addr: 10.1.2.3:8443, sni: app.internal");
        let reason = reason_for_client(&outer, &routed());
        assert_eq!(
            reason,
            "ConnectRefused: Fail to connect to <origin> (SNI <origin>); refused"
        );
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let quoted = format!("invalid content-length: {}", "é".repeat(400));
        let e = Error::explain(ErrorType::InvalidHTTPHeader, quoted);
        let reason = reason_for_client(&e, &RequestCtx::new());
        assert!(reason.len() <= 303, "{}", reason.len());
        assert!(
            reason.starts_with("InvalidHTTPHeader: invalid content-length: é")
                && reason.ends_with("..."),
            "{reason}"
        );
    }

    /// Pingora's context for a head its parser refused is the head: left out, the parser's
    /// reason kept.
    #[test]
    fn a_refused_head_is_not_quoted_but_its_reason_is() {
        let head = "buf: HTTP/1.1 200 OK\\r\\nx-a: a\\rset-cookie: s3cr3t";
        let e = Error::because(ErrorType::InvalidHTTPHeader, head, "invalid header value");
        let reason = reason_for_client(&e, &RequestCtx::new());
        assert_eq!(reason, "InvalidHTTPHeader: invalid header value");
    }

    #[test]
    fn a_quote_keeps_short_input_whole_and_cuts_long_input_at_a_character_boundary() {
        assert_eq!(Quoted("/short").to_string(), "/short");
        let exact = "a".repeat(200);
        assert_eq!(Quoted(&exact).to_string(), exact);
        // 199 bytes, then a two-byte character across the limit.
        let long = format!("{}é{}", "a".repeat(199), "b".repeat(50));
        assert_eq!(Quoted(&long).to_string(), format!("{}...", "a".repeat(199)));
    }

    #[test]
    fn a_client_side_failure_is_a_bad_request_and_the_rest_origin_failures() {
        let ctx = RequestCtx::new();
        let mut down = Error::explain(
            ErrorType::Custom("InvalidChunk"),
            "Invalid chunked encoding",
        );
        down.as_down();
        let answer = failure_answer(400, &down, &ctx);
        assert_eq!(answer.error, "bad-request");
        assert!(answer
            .body
            .contains("could not read the request (InvalidChunk"));

        let mut none_left = Error::explain(ErrorType::ConnectNoRoute, "group g: none left");
        none_left.as_up();
        let mut ctx = RequestCtx::new();
        ctx.last_connect_reason = Some("ConnectTimedout".into());
        let answer = failure_answer(502, &none_left, &ctx);
        assert_eq!(answer.error, "origin-failure");
        assert!(answer
            .body
            .ends_with("no origin left to try; the last one failed (ConnectTimedout)"));
    }

    #[test]
    fn an_http2_client_that_reset_its_stream_got_no_answer_and_a_broken_stream_a_400() {
        let down = |context: &'static str| {
            let mut e = Error::explain(ErrorType::H2Error, context);
            e.as_down();
            status_for_failure(&e)
        };
        assert_eq!(down("Client closed H2, reason: CANCEL"), 0);
        assert_eq!(down("downstream error while idling"), 0);
        assert_eq!(down("while accepting new downstream requests"), 400);
        // As the proxy hands it on: wrapped, with the peer as its context.
        let mut reset = Error::explain(ErrorType::H2Error, "Client closed H2, reason: CANCEL");
        reset.as_down();
        let wrapped = reset.more_context("Peer: addr: 127.0.0.1:80");
        assert_eq!(status_for_failure(&wrapped), 0);
    }
}
