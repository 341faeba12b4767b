//! Responses the edge writes itself: every one carries the request id, `X-Cache`, a
//! machine-readable `X-Portico-Error` and a one-line body that says why.

use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::ctx::RequestCtx;

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

impl EdgeAnswer<'_> {
    pub async fn send(self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let mut body = self.body;
        body.push('\n');
        let mut header = ResponseHeader::build(self.status, Some(6))?;
        header.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        if !self.error.is_empty() {
            header.insert_header("x-portico-error", self.error)?;
        }
        if let Some(location) = self.location {
            header.insert_header(http::header::LOCATION, location)?;
        }
        ctx.edge_status = Some(self.status);
        super::headers::add_response_headers(&mut header, ctx)?;
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(header), head_only)
            .await?;
        if !head_only {
            session
                .write_response_body(Some(Bytes::from(body)), true)
                .await?;
        }
        Ok(())
    }
}

/// The status for a request that failed on its way to or from the origin: 502 for origin
/// trouble, 504 for an origin timeout, 0 when the client is already gone.
pub fn status_for_failure(e: &pingora_error::Error) -> u16 {
    use pingora_error::{ErrorSource, ErrorType};
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (ErrorType::ConnectTimedout | ErrorType::ReadTimedout, ErrorSource::Upstream) => 504,
        // Every origin of the group was tried: still the origin side's failure.
        (ErrorType::ConnectNoRoute, _) => 502,
        (_, ErrorSource::Upstream) => 502,
        (
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}
