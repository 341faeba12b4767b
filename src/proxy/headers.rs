//! Header handling: what the edge adds on the way to the origin and back, and the rule
//! sets' header edits.

use http::header::{self, HeaderName, HeaderValue};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::config::model::{Action, HeaderAction, HeaderEdit};

use super::ctx::RequestCtx;

pub const REQUEST_ID: &str = "x-portico-ref";
pub const X_CACHE: &str = "x-cache";

/// Forwarding headers for the origin: `Via`, `X-Forwarded-*`, `CDN-Loop` and the request id.
pub fn add_forwarding_headers(
    upstream: &mut RequestHeader,
    ctx: &RequestCtx,
    node: &str,
    client_host: &str,
) -> Result<()> {
    let via = format!("1.1 {node}");
    append_list(upstream, header::VIA, &via)?;
    if let Some(ip) = ctx.client_ip {
        append_list(
            upstream,
            HeaderName::from_static("x-forwarded-for"),
            &ip.to_string(),
        )?;
    }
    upstream.insert_header("x-forwarded-proto", ctx.scheme.as_str())?;
    upstream.insert_header("x-forwarded-host", client_host)?;
    append_list(upstream, HeaderName::from_static("cdn-loop"), node)?;
    upstream.insert_header(REQUEST_ID, ctx.request_id.header_value())?;
    Ok(())
}

/// Adds `value` to a comma-separated list header, creating it if absent.
fn append_list(upstream: &mut RequestHeader, name: HeaderName, value: &str) -> Result<()> {
    let joined = match upstream.headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing}, {value}"),
        _ => value.to_string(),
    };
    upstream.insert_header(name, joined)?;
    Ok(())
}

/// The request id and `X-Cache` on every response to the client.
pub fn add_response_headers(response: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    response.insert_header(REQUEST_ID, ctx.request_id.header_value())?;
    // `from_static`: the X-Cache values are constants, so no copy.
    response.insert_header(X_CACHE, HeaderValue::from_static(ctx.cache_status))?;
    Ok(())
}

/// The header operations an edit needs, on either a request or a response header.
trait EditableHeader {
    fn delete(&mut self, name: &HeaderName);
    fn append(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<()>;
    fn overwrite(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<()>;
}

macro_rules! editable_header {
    ($type:ty) => {
        impl EditableHeader for $type {
            fn delete(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
            fn append(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<()> {
                self.append_header(name.clone(), value.clone()).map(|_| ())
            }
            fn overwrite(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<()> {
                self.insert_header(name.clone(), value.clone())
            }
        }
    };
}

editable_header!(RequestHeader);
editable_header!(ResponseHeader);

/// Applies the request-header edits of the rules that fired, in firing order.
pub fn edit_request<'a>(
    upstream: &mut RequestHeader,
    actions: impl Iterator<Item = &'a Action>,
) -> Result<()> {
    for action in actions {
        if let Action::ModifyRequestHeader(edit) = action {
            apply(edit, upstream)?;
        }
    }
    Ok(())
}

/// Applies the response-header edits of the rules that fired, in firing order.
pub fn edit_response<'a>(
    response: &mut ResponseHeader,
    actions: impl Iterator<Item = &'a Action>,
) -> Result<()> {
    for action in actions {
        if let Action::ModifyResponseHeader(edit) = action {
            apply(edit, response)?;
        }
    }
    Ok(())
}

fn apply(edit: &HeaderEdit, header: &mut impl EditableHeader) -> Result<()> {
    match (edit.action, &edit.value) {
        (HeaderAction::Delete, _) | (_, None) => {
            header.delete(&edit.name);
            Ok(())
        }
        (HeaderAction::Append, Some(value)) => header.append(&edit.name, value),
        (HeaderAction::Overwrite, Some(value)) => header.overwrite(&edit.name, value),
    }
}
