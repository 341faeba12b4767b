//! Which requests an edge sends to a shield, and to which.
//!
//! - A request that may be cached (the cache is on for it: GET/HEAD on a caching route after
//!   the rules, not an upgrade) goes to the shield its cache key hashes to.
//! - Anything else goes to the origin group, unless the node says `shield_all: true`
//!   (origin shielding: only shields reach the origin); then it goes to the shield its
//!   key would hash to, so that a shield sees one object's cacheable and uncacheable
//!   requests alike.
//! - A shield that cannot be connected to is skipped for this request (the retry hooks mark
//!   connect failures retryable); with no usable shield left the request goes to the origin
//!   group, once, and later attempts are the origin group's.
//! - A request to a shield has its route's origin group timeouts, with a head start on
//!   `first_byte` and `total` (`proxy::upstream::deadlines`): a shield that never answers
//!   holds no client for ever.

use pingora_cache::key::HashBinary;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::Session;

use crate::config::model::TierSettings;
use crate::proxy::{RequestCtx, Snapshot};
use crate::rules::UpgradeHandling;

use super::ShieldRing;

/// The shield peer for this attempt, or `None` for the origin group. Records the choice
/// in `ctx.tier`.
pub fn shield_peer(
    session: &Session,
    ctx: &mut RequestCtx,
    snapshot: &Snapshot,
) -> Option<Box<HttpPeer>> {
    ctx.tier.shield = None;
    if ctx.tier.bypassed || !(ctx.caching || snapshot.tiers.shield_all) {
        return None;
    }
    // A retry stays on the ring its first attempt used (indexes are that ring's).
    let ring = match &ctx.tier.ring {
        Some(ring) => ring.clone(),
        None => snapshot.tiers.ring()?,
    };
    let key = match ctx.tier.key_hash {
        Some(hash) => hash,
        None => key_hash(session, ctx)?,
    };
    let Some(index) = ring.select(&key, &ctx.tier.tried) else {
        ctx.tier.bypassed = true;
        log::info!(
            "request {}: no shield left to try; going to the origin group",
            ctx.request_id
        );
        return None;
    };
    ctx.tier.tried.push(index);
    ctx.tier.shield = Some(index);
    let mut peer = Box::new(ring.peer(index)?.clone());
    ctx.tier.ring = Some(ring);
    if let Some(decision) = &ctx.decision {
        let timeouts = &snapshot.engine.config.origin_groups[decision.origin_group].timeouts;
        crate::proxy::upstream::apply_io_timeouts(&mut peer, timeouts);
    }
    // A cached-route upgrade (`reproduce`) reaches the shield as the client sent it: the
    // shield's rules make the same decision (strip it for the origin, store nothing). Sent
    // as a plain GET instead, the shield would cache it like any page.
    if ctx.decision.as_ref().map(|d| d.upgrade) != Some(UpgradeHandling::Reproduce) {
        crate::proxy::upstream::apply_upgrade_policy(&mut peer, ctx);
    }
    Some(peer)
}

/// The cache key's hash for a request the cache was not enabled for (`shield_all`): the
/// hash the cache would use, so that both kinds of request for one object meet on one
/// shield.
fn key_hash(session: &Session, ctx: &RequestCtx) -> Option<HashBinary> {
    crate::proxy::caching::key_parts(session, ctx).map(|parts| parts.hash())
}

/// `portico explain`'s `shield:` line: where an edge with shields sends this request when
/// every shield is healthy (`None`: the node has no shields).
pub fn explain(tiers: &TierSettings, cacheable: bool, key: &HashBinary) -> Option<String> {
    let ring = ShieldRing::new(tiers)?;
    if !(cacheable || tiers.shield_all) {
        return Some(
            "none: the request cannot be cached, so it goes straight to the origin group (shield_all: false)"
                .to_string(),
        );
    }
    let home = ring.home(key)?;
    Some(format!(
        "{} (the key's place on a ring of {}; if it is down, the next shield, and with none left the origin group)",
        ring.name(home),
        ring.group().origins.len()
    ))
}
