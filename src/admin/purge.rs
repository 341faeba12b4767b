//! `POST /purge`: removes (or, soft, marks stale) stored objects by domain, path and tag,
//! and says how many.

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::Request;

use crate::cache::purge::Purge;
use crate::cache::EdgeCache;

/// An admin body is a short JSON document; anything longer is refused.
const MAX_BODY: usize = 1 << 20;

/// Reads an admin request's body (`what` names it in refusals), within `timeout`.
pub(super) async fn read_body(
    request: Request<hyper::body::Incoming>,
    timeout: std::time::Duration,
    what: &str,
) -> Result<bytes::Bytes, (u16, String)> {
    let read = Limited::new(request.into_body(), MAX_BODY).collect();
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Err(_) => Err((
            408,
            format!("{what} body did not arrive within {timeout:?}\n"),
        )),
        // Too long is 413; anything else (broken chunking, a cut connection) is the
        // client's malformed request: 400.
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err((
            413,
            format!("{what} body refused (at most {MAX_BODY} bytes): {e}\n"),
        )),
        Ok(Err(e)) => Err((400, format!("{what} body unreadable: {e}\n"))),
    }
}

pub async fn answer(
    request: Request<hyper::body::Incoming>,
    cache: &'static EdgeCache,
    snapshot: &crate::proxy::Snapshot,
    body_timeout: std::time::Duration,
) -> (u16, String) {
    let body = match read_body(request, body_timeout, "purge").await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let purge = match Purge::parse(&body) {
        Ok(purge) => purge,
        Err(reason) => return (400, format!("{reason}\n")),
    };
    let (purge, count) = match purge_off_the_runtime(cache, purge).await {
        Ok(done) => done,
        Err(reason) => return (500, format!("{reason}\n")),
    };
    let purged = count.purged;
    log::info!(
        "purge {} {purged} cached objects ({} examined)",
        if purge.soft {
            "marked stale"
        } else {
            "removed"
        },
        count.examined
    );
    let mut reply = serde_json::json!({ "purged": purged });
    if purge.shields {
        let document = serde_json::from_slice(&body).unwrap_or_default();
        reply["shields"] = crate::tier::purge::fan_out(&snapshot.tiers, &document)
            .await
            .into();
    }
    (200, reply.to_string())
}

/// Runs a purge on a blocking thread: touching thousands of objects one by one must not hold
/// up the tasks of the runtime that called it.
pub async fn purge_off_the_runtime(
    cache: &'static EdgeCache,
    purge: Purge,
) -> Result<(Purge, crate::cache::store::PurgeCount), String> {
    tokio::task::spawn_blocking(move || {
        let count = cache.store.apply_purge(&purge);
        (purge, count)
    })
    .await
    .map_err(|e| format!("the purge failed: {e}"))
}
