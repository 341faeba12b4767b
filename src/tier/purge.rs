//! Purge fan-out: `POST /purge` on an edge with `"shields": true` purges every shield too.
//!
//! The edge sends the purge to each shield's *proxy* listener as `PURGE /` with the same
//! JSON body: an edge knows its shields' proxy addresses (the ring), not their admin
//! listeners, and a shield already decides which peers are its edges (`trusted_edges`). A
//! shield answers such a request itself, only from a trusted edge; from anyone else `PURGE`
//! is an ordinary request that its routes refuse. Each shield's answer (objects purged, or
//! why it failed) is in the edge's reply; a dead shield's failure does not stop the others.
//! The document goes as it came (without `shields`), so `tags` and `soft` reach every
//! shield: a soft purge stays soft on every tier.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use pingora_error::Result;
use pingora_proxy::Session;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cache::purge::Purge;
use crate::cache::EdgeCache;
use crate::proxy::respond::EdgeAnswer;
use crate::proxy::RequestCtx;

use super::Tiers;

/// The method of a purge an edge sends to its shields.
const METHOD: &str = "PURGE";
/// A purge body is a short JSON document (as on the admin listener).
const MAX_BODY: usize = 1 << 20;
/// Per shield: connect, send, and read the answer.
const SHIELD_TIMEOUT: Duration = Duration::from_secs(5);

/// On a shield, `request_filter`: whether this is a trusted edge's `PURGE` for [`serve`].
pub fn is_purge(session: &Session, ctx: &RequestCtx) -> bool {
    session.req_header().method.as_str() == METHOD && ctx.tier.from_edge
}

/// On a shield, `request_filter`: answers a trusted edge's `PURGE` (see [`is_purge`]).
/// Boxed by the caller: a rare path, whose future would otherwise size every request's.
pub async fn serve(
    session: &mut Session,
    ctx: &mut RequestCtx,
    cache: &'static EdgeCache,
) -> Result<()> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return answer(session, ctx, 413, "purge body too long".into()).await;
        }
        body.extend_from_slice(&chunk);
    }
    match Purge::parse(&body) {
        Ok(purge) => {
            let (purge, count) = match crate::admin::purge_off_the_runtime(cache, purge).await {
                Ok(done) => done,
                Err(reason) => return answer(session, ctx, 500, reason).await,
            };
            let purged = count.purged;
            log::info!(
                "purge from edge {:?}: {purged} cached objects {}",
                ctx.client_ip,
                if purge.soft {
                    "marked stale"
                } else {
                    "removed"
                }
            );
            answer(session, ctx, 200, json!({ "purged": purged }).to_string()).await
        }
        Err(reason) => answer(session, ctx, 400, reason).await,
    }
}

async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: String,
) -> Result<()> {
    let answer = EdgeAnswer {
        status,
        error: if status == 200 { "" } else { "bad-purge" },
        body,
        location: None,
    };
    answer.send(session, ctx).await
}

/// On an edge: sends `body` (a purge document, `shields` left out) to every shield, all at
/// once; one JSON object per shield, in ring order.
pub async fn fan_out(tiers: &Tiers, body: &Value) -> Vec<Value> {
    let Some(ring) = tiers.ring() else {
        return Vec::new();
    };
    let mut body = body.clone();
    if let Some(object) = body.as_object_mut() {
        object.remove("shields");
    }
    let body = Bytes::from(body.to_string());
    let sends = ring.group().origins.iter().map(|shield| {
        let body = body.clone();
        let address = shield.address;
        async move {
            let outcome = tokio::time::timeout(SHIELD_TIMEOUT, send(address, &body)).await;
            match outcome {
                Ok(Ok((200, text))) => {
                    let purged = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["purged"].as_u64());
                    json!({ "shield": address.to_string(), "status": 200, "purged": purged })
                }
                Ok(Ok((status, text))) => {
                    json!({ "shield": address.to_string(), "status": status, "error": text.trim() })
                }
                Ok(Err(e)) => json!({ "shield": address.to_string(), "error": e.to_string() }),
                Err(_) => json!({ "shield": address.to_string(), "error": "timed out" }),
            }
        }
    });
    futures_util::future::join_all(sends).await
}

/// One `PURGE` over a connection of its own; the status and body of the answer.
async fn send(address: SocketAddr, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let head = format!(
        "{METHOD} / HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response).await?;
    parse_response(&response)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))
}

/// Status and body of a `Connection: close` HTTP/1.1 answer with a `Content-Length` body.
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = String::from_utf8_lossy(&raw[end + 4..]).into_owned();
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn answers_are_read_whole() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\n{\"purged\": 3}\n";
        assert_eq!(
            parse_response(raw),
            Some((200, "{\"purged\": 3}\n".to_string()))
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 400 Bad\r\n\r\nno"),
            Some((400, "no".into()))
        );
        assert_eq!(parse_response(b"garbage"), None);
    }
}
