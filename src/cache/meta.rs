//! What the store keeps of a response's cache metadata besides its header
//! (`cache::header`): when it is fresh until, when it was stored, its `stale-*` windows,
//! and what few objects have (a variant's keys, cache tags), in a compact form from which a
//! hit builds pingora-cache's `CacheMeta` without decoding anything.

use std::sync::Arc;
use std::time::SystemTime;

use pingora_cache::key::HashBinary;
use pingora_cache::meta::ResponseHeaderSource;
use pingora_cache::CacheMeta;

use super::header::StoredHeader;
use super::tags::Tags;

/// A point in time in 8 bytes where a `SystemTime` takes 16 (a stored object keeps two):
/// nanoseconds since the Unix epoch, saturating at 1970 and at 2554.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

impl From<SystemTime> for Stamp {
    fn from(time: SystemTime) -> Stamp {
        let since = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Stamp(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl From<Stamp> for SystemTime {
    fn from(stamp: Stamp) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(stamp.0)
    }
}

/// The parts of a [`CacheMeta`] the store keeps, so a hit builds its meta without decoding.
#[derive(Clone)]
pub struct StoredMeta {
    pub fresh_until: Stamp,
    /// When the object was stored or last revalidated (the reference point for `Age`).
    pub updated: Stamp,
    pub stale_while_revalidate_sec: u32,
    pub stale_if_error_sec: u32,
    /// Its variance, its URL's key and its tags, behind one thin pointer: most objects
    /// have none of them.
    extra: Option<Box<MetaExtra>>,
    pub header: StoredHeader,
}

/// What only some stored objects have (see `StoredMeta::extra`).
#[derive(Clone, Default)]
struct MetaExtra {
    /// A variant's: its variance and its URL's key (the primary hash).
    variant: Option<Box<Variant>>,
    /// Its cache tags (`cache::tags`), normalised: here rather than fixed with the object,
    /// because a revalidation's `304` may change them with the rest of the header.
    tags: Tags,
}

#[derive(Clone, Default)]
struct Variant {
    variance: Option<HashBinary>,
    primary: Option<HashBinary>,
}

impl StoredMeta {
    /// The stored form of `meta`, tagged `tags` (taken from its header by the store).
    pub fn from_meta(meta: &CacheMeta, tags: Tags) -> StoredMeta {
        let mut stored = StoredMeta {
            fresh_until: meta.fresh_until().into(),
            updated: meta.updated().into(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            extra: None,
            header: StoredHeader::from_header(meta.response_header()),
        };
        if let Some(variance) = meta.variance() {
            stored.variant_mut().variance = Some(variance);
        }
        if !tags.is_empty() {
            stored.extra_mut().tags = tags;
        }
        stored
    }

    /// Stored and stale at `now`, with no variance or tags.
    #[cfg(test)]
    pub fn plain(header: StoredHeader, now: SystemTime) -> StoredMeta {
        StoredMeta {
            fresh_until: now.into(),
            updated: now.into(),
            stale_while_revalidate_sec: 0,
            stale_if_error_sec: 0,
            extra: None,
            header,
        }
    }

    fn extra_mut(&mut self) -> &mut MetaExtra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn variant_mut(&mut self) -> &mut Variant {
        self.extra_mut().variant.get_or_insert_with(Box::default)
    }

    fn variant(&self) -> Option<&Variant> {
        self.extra.as_ref()?.variant.as_deref()
    }

    /// Its cache tags (`cache::tags`).
    pub fn tags(&self) -> &[Box<str>] {
        self.extra.as_ref().map_or(&[], |extra| &extra.tags)
    }

    pub fn variance(&self) -> Option<HashBinary> {
        self.variant()?.variance
    }

    /// The key of a variant's URL (its cache key's primary hash): `None` unless the object
    /// is a variant, whose own key combines it with the variance.
    pub fn primary(&self) -> Option<HashBinary> {
        self.variant()?.primary
    }

    /// Records that its object is a variant of the URL keyed `primary` (see `primary`).
    pub fn set_primary(&mut self, primary: HashBinary) {
        self.variant_mut().primary = Some(primary);
    }

    /// pingora-cache's meta for a hit on the object `source`, whose header is built from
    /// its stored text only if something asks for it (a marked pingora-cache patch): a plain
    /// hit writes its head from the text (`proxy::hit_head`) and never does.
    pub fn to_meta(&self, source: Arc<dyn ResponseHeaderSource>) -> CacheMeta {
        let mut meta = CacheMeta::with_header_source(
            self.fresh_until.into(),
            self.updated.into(),
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            source,
        );
        if let Some(variance) = self.variance() {
            meta.set_variance(variance);
        }
        meta
    }

    /// Fresh, or stale within its `stale-while-revalidate` window at `now`.
    pub fn usable_without_origin(&self, now: SystemTime) -> bool {
        let window = std::time::Duration::from_secs(u64::from(self.stale_while_revalidate_sec));
        SystemTime::from(self.fresh_until)
            .checked_add(window)
            .is_none_or(|until| now < until)
    }

    /// The same, stale from `now` on (a soft purge): `stale-*` windows count from `now`.
    pub fn stale_from(&self, now: SystemTime) -> StoredMeta {
        StoredMeta {
            fresh_until: self.fresh_until.min(now.into()),
            ..self.clone()
        }
    }

    /// Bytes the metadata costs beyond its struct (which is part of its object's): the
    /// header's allocations, and those of what few objects have (its tags are counted by
    /// its object: `Object::overhead`).
    pub fn weight(&self) -> usize {
        self.header.weight()
            + self.extra.as_ref().map_or(0, |extra| {
                std::mem::size_of::<MetaExtra>()
                    + extra
                        .variant
                        .as_ref()
                        .map_or(0, |_| std::mem::size_of::<Variant>())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_keeps_a_time_to_the_nanosecond_and_saturates_outside_its_range() {
        use std::time::Duration;
        let now = SystemTime::now();
        assert_eq!(SystemTime::from(Stamp::from(now)), now);
        let before_1970 = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(
            SystemTime::from(Stamp::from(before_1970)),
            SystemTime::UNIX_EPOCH
        );
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(600 * 365 * 86_400);
        let kept = SystemTime::from(Stamp::from(far));
        assert!(kept < far && kept > now, "the latest time it holds");
        assert!(Stamp::from(now) < Stamp::from(now + Duration::from_nanos(1)));
    }
}
