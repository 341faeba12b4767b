//! `POST /purge`: removes stored objects by domain and path, and says how many.

use http_body_util::{BodyExt, Limited};
use hyper::Request;

use crate::cache::purge::Purge;
use crate::cache::EdgeCache;

/// A purge body is a short JSON document; anything longer is refused.
const MAX_BODY: usize = 1 << 20;

pub async fn answer(
    request: Request<hyper::body::Incoming>,
    cache: &'static EdgeCache,
    snapshot: &crate::proxy::Snapshot,
) -> (u16, String) {
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return (
                413,
                format!("purge body refused (at most {MAX_BODY} bytes): {e}\n"),
            )
        }
    };
    let purge = match Purge::parse(&body) {
        Ok(purge) => purge,
        Err(reason) => return (400, format!("{reason}\n")),
    };
    let purged = cache.store.purge_matching(|key| purge.matches(key));
    log::info!("purge removed {purged} cached objects");
    let mut reply = serde_json::json!({ "purged": purged });
    if purge.shields {
        let document = serde_json::from_slice(&body).unwrap_or_default();
        reply["shields"] = crate::tier::purge::fan_out(&snapshot.tiers, &document)
            .await
            .into();
    }
    (200, reply.to_string())
}
