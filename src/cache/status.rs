//! `X-Cache` values, from pingora's cache phase.
//!
//! | phase                              | X-Cache            |
//! |------------------------------------|--------------------|
//! | hit (including a body still filling)| `TCP_HIT`         |
//! | miss, or stale and refetched       | `TCP_MISS`         |
//! | miss, answered from a shield's cache | `TCP_REMOTE_HIT` (`tier::hop`) |
//! | stale, revalidated with a 304      | `TCP_REVALIDATED`  |
//! | stale and served (SWR, stale-if-error) | `TCP_EXPIRED_HIT` |
//! | not stored (`no-store`/`private`)  | `PRIVATE_NOSTORE`  |
//! | not stored (anything else)         | `UNCACHEABLE`      |
//! | caching off for the route or rule  | `CONFIG_NOCACHE`   |

use pingora_cache::CachePhase;

pub const HIT: &str = "TCP_HIT";
pub const MISS: &str = "TCP_MISS";
/// Served from a shield's cache (`crate::tier::hop`).
pub const REMOTE_HIT: &str = "TCP_REMOTE_HIT";
pub const REVALIDATED: &str = "TCP_REVALIDATED";
pub const EXPIRED_HIT: &str = "TCP_EXPIRED_HIT";
pub const PRIVATE_NOSTORE: &str = "PRIVATE_NOSTORE";
pub const UNCACHEABLE: &str = "UNCACHEABLE";
pub const CONFIG_NOCACHE: &str = "CONFIG_NOCACHE";

/// The status of a request the cache was enabled for. `refused` is what the response
/// filter decided when it did not store the response.
pub fn for_phase(phase: CachePhase, refused: Option<&'static str>) -> &'static str {
    match phase {
        CachePhase::Hit => HIT,
        CachePhase::Miss | CachePhase::Expired => refused.unwrap_or(MISS),
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => REVALIDATED,
        CachePhase::Stale | CachePhase::StaleUpdating => EXPIRED_HIT,
        CachePhase::Disabled(_)
        | CachePhase::Bypass
        | CachePhase::Uninit
        | CachePhase::CacheKey => refused.unwrap_or(UNCACHEABLE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::NoCacheReason;

    #[test]
    fn phases_map_to_front_door_values() {
        assert_eq!(for_phase(CachePhase::Hit, None), HIT);
        assert_eq!(for_phase(CachePhase::Miss, None), MISS);
        assert_eq!(for_phase(CachePhase::Expired, None), MISS);
        assert_eq!(for_phase(CachePhase::Revalidated, None), REVALIDATED);
        assert_eq!(for_phase(CachePhase::StaleUpdating, None), EXPIRED_HIT);
        assert_eq!(
            for_phase(
                CachePhase::Disabled(NoCacheReason::OriginNotCache),
                Some(PRIVATE_NOSTORE)
            ),
            PRIVATE_NOSTORE
        );
        assert_eq!(
            for_phase(CachePhase::Disabled(NoCacheReason::StorageError), None),
            UNCACHEABLE
        );
    }
}
