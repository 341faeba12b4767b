//! The store without sockets: generations, purges during fills, aborted fills, accounting.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pingora_cache::key::CacheHashKey;
use pingora_cache::storage::{PurgeOutcome, PurgeTarget, PurgeType};
use pingora_cache::trace::Span;
use pingora_cache::{CacheEntryId, CacheEntryKey, CacheKey, CacheMeta, Storage};
use pingora_http::ResponseHeader;

use super::MemoryStore;
use crate::cache::purge::Purge;

fn purge(store: &MemoryStore, json: &str) -> usize {
    store
        .apply_purge(&Purge::parse(json.as_bytes()).unwrap())
        .purged
}

fn store() -> &'static MemoryStore {
    Box::leak(Box::new(MemoryStore::new(1 << 20, 1 << 16)))
}

fn meta() -> CacheMeta {
    let now = SystemTime::now();
    let header = ResponseHeader::build(200, None).unwrap();
    CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
}

async fn fill(store: &'static MemoryStore, key: &CacheKey, body: &'static str) -> u64 {
    let span = Span::inactive();
    let mut miss = store
        .get_miss_handler(key, &meta(), &span.handle())
        .await
        .unwrap();
    let id = miss.entry_id().unwrap().get();
    miss.write_body(Bytes::from_static(body.as_bytes()), true)
        .await
        .unwrap();
    miss.finish().await.unwrap();
    id
}

async fn body_of(store: &'static MemoryStore, key: &CacheKey) -> Option<String> {
    let span = Span::inactive();
    let (_, mut hit) = store.lookup(key, &span.handle()).await.unwrap()?;
    let mut out = String::new();
    while let Some(chunk) = hit.read_body().await.unwrap() {
        out.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    Some(out)
}

#[tokio::test]
async fn an_eviction_of_an_old_generation_spares_the_new_one() {
    let store = store();
    let key = CacheKey::new("h/a", "");
    let old = fill(store, &key, "old").await;
    let new = fill(store, &key, "new").await;
    assert_ne!(old, new);
    assert_eq!(store.objects(), 1);
    let target = CacheEntryKey::identified(key.to_compact(), CacheEntryId::new(old));
    let span = Span::inactive();
    let outcome = store
        .purge(
            PurgeTarget::Exact(&target),
            PurgeType::Eviction,
            &span.handle(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, PurgeOutcome::NotFound);
    assert_eq!(body_of(store, &key).await.as_deref(), Some("new"));
}

#[tokio::test]
async fn a_purge_during_a_fill_wins_and_readers_still_get_the_whole_body() {
    let store = store();
    let key = CacheKey::new("h/img/x.png", "");
    let span = Span::inactive();
    let mut miss = store
        .get_miss_handler(&key, &meta(), &span.handle())
        .await
        .unwrap();
    miss.write_body(Bytes::from_static(b"first "), false)
        .await
        .unwrap();
    let (_, mut reader) = store.lookup(&key, &span.handle()).await.unwrap().unwrap();
    assert_eq!(purge(store, r#"{"paths": ["/img/*"]}"#), 1);
    miss.write_body(Bytes::from_static(b"second"), true)
        .await
        .unwrap();
    // Not stored, yet no error: pingora would drop the reader of the client it feeds.
    miss.finish().await.unwrap();
    let mut body = Vec::new();
    while let Some(chunk) = reader.read_body().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(body, b"first second");
    assert!(body_of(store, &key).await.is_none());
    assert_eq!((store.objects(), store.bytes()), (0, 0));
}

#[tokio::test]
async fn an_aborted_fill_errors_its_readers_and_leaves_nothing() {
    let store = store();
    let key = CacheKey::new("h/b", "");
    let span = Span::inactive();
    let mut miss = store
        .get_miss_handler(&key, &meta(), &span.handle())
        .await
        .unwrap();
    miss.write_body(Bytes::from_static(b"partial"), false)
        .await
        .unwrap();
    let (_, mut reader) = store.lookup(&key, &span.handle()).await.unwrap().unwrap();
    drop(miss);
    assert_eq!(reader.read_body().await.unwrap().unwrap(), "partial");
    assert!(reader.read_body().await.is_err());
    assert!(store.lookup(&key, &span.handle()).await.unwrap().is_none());
}

#[tokio::test]
async fn bytes_follow_commits_replacements_and_purges() {
    let store = store();
    let a = CacheKey::new("h/a", "");
    fill(store, &a, "aaaa").await;
    let one = store.bytes();
    assert!(one > 4);
    fill(store, &a, "aaaa").await;
    assert_eq!(store.bytes(), one, "a replacement is not counted twice");
    fill(store, &CacheKey::new("h/b", ""), "bbbb").await;
    assert_eq!(store.objects(), 2);
    assert_eq!(purge(store, r#"{"paths": ["/*"]}"#), 2);
    assert_eq!((store.objects(), store.bytes()), (0, 0));
}

#[tokio::test]
async fn a_body_over_the_object_limit_is_refused() {
    let store = store();
    let key = CacheKey::new("h/big", "");
    let span = Span::inactive();
    let mut miss = store
        .get_miss_handler(&key, &meta(), &span.handle())
        .await
        .unwrap();
    let big = Bytes::from(vec![0u8; (1 << 16) + 1]);
    assert!(miss.write_body(big, true).await.is_err());
}

/// `meta` with one more field, `len` bytes long.
fn with_long_field(mut meta: CacheMeta, len: usize) -> CacheMeta {
    meta.response_header_mut()
        .insert_header("x-long", "x".repeat(len))
        .unwrap();
    meta
}

#[tokio::test]
async fn a_revalidation_that_grows_the_header_is_counted_against_the_bound() {
    let store = store();
    let key = CacheKey::new("h/grow", "");
    fill(store, &key, "body").await;
    let before = (store.bytes(), store.used());
    let bigger = with_long_field(meta(), 4096);
    let span = Span::inactive();
    assert!(store
        .update_meta(&key, &bigger, &span.handle())
        .await
        .unwrap());
    // The new header is counted, and the first one still (it shares the body's allocation).
    assert!(store.bytes() >= before.0 + 4096, "{:?}", store.bytes());
    assert_eq!(store.used() - before.1, store.bytes() - before.0);
    // A smaller header again gives the long one's bytes back.
    assert!(store
        .update_meta(&key, &meta(), &span.handle())
        .await
        .unwrap());
    assert!(store.bytes() < before.0 + 4096, "{:?}", store.bytes());
    assert!(store.bytes() >= before.0);
    // What is taken away is exactly what was added.
    assert!(store
        .update_meta(&key, &bigger, &span.handle())
        .await
        .unwrap());
    assert_eq!(purge(store, r#"{"paths": ["/*"]}"#), 1);
    assert_eq!((store.objects(), store.bytes(), store.used()), (0, 0, 0));
}

#[tokio::test]
async fn a_revalidation_that_grows_past_the_bound_evicts_to_fit() {
    // Six objects of 1 KiB and their overhead (about 400 bytes each) fit; a 3,000-byte
    // header does not, beside them.
    let budget = 9 * 1024;
    let store = tagged_store(budget);
    let body = [b'a'; 1024];
    for n in 0..6 {
        fill_tagged(store, &CacheKey::new(format!("h/{n}"), ""), "t", &body).await;
    }
    assert_eq!(store.objects(), 6);
    let bigger = with_long_field(meta_tagged("t"), 3000);
    let span = Span::inactive();
    let key = CacheKey::new("h/5", "");
    assert!(store
        .update_meta(&key, &bigger, &span.handle())
        .await
        .unwrap());
    assert!(store.used() <= budget, "{} > {budget}", store.used());
    assert!(store.objects() < 6, "something was evicted to make room");
    assert!(store.holds(&key), "the one just revalidated was used last");
    let left = store.objects();
    assert_eq!(purge(store, r#"{"tags": ["t"]}"#), left);
    assert_eq!((store.objects(), store.bytes(), store.used()), (0, 0, 0));
}

fn variant(path: &str, n: u8) -> CacheKey {
    let mut key = CacheKey::new(path, "");
    key.set_variance_key([n; 16]);
    key
}

#[tokio::test]
async fn invalidation_removes_a_url_with_every_variant_and_nothing_else() {
    let store = store();
    let primary = CacheKey::new("h/v", "");
    fill(store, &primary, "first").await;
    for n in 1..=3 {
        fill(store, &variant("h/v", n), "other").await;
    }
    fill(store, &CacheKey::new("h/w", ""), "neighbour").await;
    assert_eq!(store.objects(), 5);
    assert_eq!(store.invalidate(&primary.primary_bin()), 4);
    assert!(body_of(store, &primary).await.is_none());
    assert!(body_of(store, &variant("h/v", 2)).await.is_none());
    assert_eq!(
        body_of(store, &CacheKey::new("h/w", "")).await.as_deref(),
        Some("neighbour")
    );
    assert_eq!(store.invalidate(&primary.primary_bin()), 0);
    // The variant index emptied with it: a URL gets its full allowance of variants again.
    for n in 1..=super::MAX_VARIANTS as u8 {
        fill(store, &variant("h/v", n), "again").await;
    }
}

/// A URL keeps `MAX_VARIANTS` variants besides its primary: a new one takes the slot of a
/// stored variant not used since the eviction clock passed it (junk values, never asked
/// for again), so junk cannot hold a URL's slots while real variants go unstored.
#[tokio::test]
async fn a_variant_past_the_cap_takes_the_slot_of_one_not_used_since() {
    let store = store();
    for n in 1..=super::MAX_VARIANTS as u8 {
        fill(store, &variant("h/cap", n), "v").await;
    }
    let objects = store.objects();
    // Variant 1 is used (its hit marks it); the others were only stored.
    assert_eq!(
        body_of(store, &variant("h/cap", 1)).await.as_deref(),
        Some("v")
    );
    fill(store, &variant("h/cap", 200), "new").await;
    assert_eq!(store.objects(), objects, "one variant replaced another");
    assert_eq!(
        body_of(store, &variant("h/cap", 200)).await.as_deref(),
        Some("new")
    );
    assert_eq!(
        body_of(store, &variant("h/cap", 1)).await.as_deref(),
        Some("v"),
        "the used one stays"
    );
    assert!(
        body_of(store, &variant("h/cap", 2)).await.is_none(),
        "the oldest unused one went"
    );
    // A variant already stored may still be refreshed, and the primary slot is not capped.
    fill(store, &variant("h/cap", 1), "v2").await;
    fill(store, &CacheKey::new("h/cap", ""), "primary").await;
    assert_eq!(
        purge(store, r#"{"paths": ["/*"]}"#),
        super::MAX_VARIANTS + 1
    );
    assert_eq!((store.objects(), store.bytes(), store.used()), (0, 0, 0));
}

/// When every variant's slot is a fill in progress, a new variant is not stored.
#[tokio::test]
async fn a_variant_past_the_cap_of_fills_in_progress_is_not_stored() {
    let store = store();
    let span = Span::inactive();
    let mut fills = Vec::new();
    for n in 1..=super::MAX_VARIANTS as u8 {
        let miss = store
            .get_miss_handler(&variant("h/busy", n), &meta(), &span.handle())
            .await
            .unwrap();
        fills.push(miss);
    }
    assert!(store
        .get_miss_handler(&variant("h/busy", 200), &meta(), &span.handle())
        .await
        .is_err());
}

#[tokio::test]
async fn a_refresh_hides_the_committed_object_only_once_it_is_no_longer_usable() {
    let store = store();
    let span = Span::inactive();
    let now = SystemTime::now();
    let stale = |swr: u32| {
        let header = ResponseHeader::build(200, None).unwrap();
        CacheMeta::new(now - Duration::from_secs(1), now, swr, 0, header)
    };
    for (swr, expected) in [(60, "stale"), (0, "fill")] {
        let key = CacheKey::new(format!("h/swr{swr}"), "");
        let mut miss = store
            .get_miss_handler(&key, &stale(swr), &span.handle())
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(b"stale"), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
        // The refresh has sent half its body.
        let mut refresh = store
            .get_miss_handler(&key, &meta(), &span.handle())
            .await
            .unwrap();
        refresh
            .write_body(Bytes::from_static(b"fill"), false)
            .await
            .unwrap();
        let (_, mut hit) = store.lookup(&key, &span.handle()).await.unwrap().unwrap();
        assert_eq!(
            hit.read_body().await.unwrap().unwrap(),
            expected,
            "swr {swr}"
        );
        assert_eq!(store.is_refreshing(&key), swr > 0);
        drop(refresh); // dies mid-body
        if swr > 0 {
            assert!(
                hit.read_body().await.unwrap().is_none(),
                "the stale body is whole"
            );
        } else {
            assert!(
                hit.read_body().await.is_err(),
                "the fill's reader learns it failed"
            );
        }
    }
}

fn tagged_store(budget: usize) -> &'static MemoryStore {
    Box::leak(Box::new(MemoryStore::with_tag_headers(
        budget,
        budget * 2,
        vec![http::HeaderName::from_static("cache-tag")],
    )))
}

fn meta_tagged(tags: &str) -> CacheMeta {
    let mut meta = meta();
    meta.response_header_mut()
        .insert_header("cache-tag", tags)
        .unwrap();
    meta
}

async fn fill_tagged(store: &'static MemoryStore, key: &CacheKey, tags: &str, body: &[u8]) {
    let span = Span::inactive();
    let mut miss = store
        .get_miss_handler(key, &meta_tagged(tags), &span.handle())
        .await
        .unwrap();
    miss.write_body(Bytes::copy_from_slice(body), true)
        .await
        .unwrap();
    miss.finish().await.unwrap();
}

#[tokio::test]
async fn a_fill_over_the_budget_is_abandoned_but_its_readers_get_every_byte() {
    let store = tagged_store(64 << 10);
    let span = Span::inactive();
    let key = CacheKey::new("h/huge", "");
    let mut miss = store
        .get_miss_handler(&key, &meta(), &span.handle())
        .await
        .unwrap();
    let (_, mut reader) = store.lookup(&key, &span.handle()).await.unwrap().unwrap();
    let mut expected = Vec::new();
    let mut received = Vec::new();
    for i in 0..16u8 {
        let chunk = Bytes::from(vec![i; 8 << 10]);
        expected.extend_from_slice(&chunk);
        miss.write_body(chunk, i == 15).await.unwrap();
        // The reservation never passes the budget, abandoned or not.
        assert!(store.used() <= 64 << 10, "chunk {i}: {}", store.used());
        received.extend_from_slice(&reader.read_body().await.unwrap().unwrap());
    }
    assert_eq!(store.abandoned(), 1);
    // Abandoned: no new reader finds it.
    assert!(store.lookup(&key, &span.handle()).await.unwrap().is_none());
    miss.finish().await.unwrap();
    assert!(reader.read_body().await.unwrap().is_none());
    assert_eq!(received, expected, "the reader got the whole body");
    assert_eq!((store.objects(), store.bytes(), store.used()), (0, 0, 0));
}

#[tokio::test]
async fn committed_objects_unused_the_longest_are_evicted_first_to_make_room() {
    let store = tagged_store(40 << 10);
    let span = Span::inactive();
    let keys: Vec<CacheKey> = (0..3)
        .map(|i| CacheKey::new(format!("h/{i}"), ""))
        .collect();
    for key in &keys {
        fill_tagged(store, key, "t", &[7; 10 << 10]).await;
    }
    assert_eq!(store.objects(), 3);
    // /0 is used again: /1 is now the oldest unused object (the clock passes over /0).
    assert!(store
        .lookup(&keys[0], &span.handle())
        .await
        .unwrap()
        .is_some());
    let mut miss = store
        .get_miss_handler(&CacheKey::new("h/new", ""), &meta(), &span.handle())
        .await
        .unwrap();
    miss.write_body(Bytes::from(vec![1; 12 << 10]), false)
        .await
        .unwrap();
    assert_eq!(store.evicted(), 1);
    assert!(store
        .lookup(&keys[1], &span.handle())
        .await
        .unwrap()
        .is_none());
    assert!(store
        .lookup(&keys[0], &span.handle())
        .await
        .unwrap()
        .is_some());
    assert!(store
        .lookup(&keys[2], &span.handle())
        .await
        .unwrap()
        .is_some());
    miss.write_body(Bytes::from(vec![1; 4 << 10]), true)
        .await
        .unwrap();
    miss.finish().await.unwrap();
    assert_eq!(store.abandoned(), 0);
    assert!(store.used() <= 40 << 10);
    assert_eq!(
        store.used(),
        store.bytes(),
        "no reservation outlives its fill"
    );
}

#[tokio::test]
async fn a_purge_by_tag_examines_only_the_tagged_objects() {
    let store = tagged_store(1 << 20);
    for i in 0..50 {
        let tags = if i % 10 == 0 {
            "Sale, all"
        } else {
            "all other"
        };
        fill_tagged(store, &CacheKey::new(format!("h/{i}"), ""), tags, b"x").await;
    }
    fill_tagged(store, &CacheKey::new("elsewhere/a", ""), "", b"y").await;
    let count = store.apply_purge(&Purge::parse(br#"{"tags": ["SALE"]}"#).unwrap());
    assert_eq!((count.purged, count.examined), (5, 5));
    assert_eq!(store.objects(), 46);
    // By host: only that host's objects are looked at.
    let count = store
        .apply_purge(&Purge::parse(br#"{"domains": ["elsewhere"], "paths": ["/*"]}"#).unwrap());
    assert_eq!((count.purged, count.examined), (1, 1));
    // The index forgot what left: the same purge finds nothing.
    let count = store.apply_purge(&Purge::parse(br#"{"tags": ["sale"]}"#).unwrap());
    assert_eq!((count.purged, count.examined), (0, 0));
    assert_eq!(purge(store, r#"{"tags": ["all"]}"#), 45);
    assert_eq!((store.objects(), store.bytes(), store.used()), (0, 0, 0));
}

#[tokio::test]
async fn a_revalidation_that_changes_the_tags_retags_the_object() {
    let store = tagged_store(1 << 20);
    let key = CacheKey::new("h/retag", "");
    fill_tagged(store, &key, "old shared", b"x").await;
    let span = Span::inactive();
    let updated = store
        .update_meta(&key, &meta_tagged("new, shared"), &span.handle())
        .await
        .unwrap();
    assert!(updated);
    assert_eq!(purge(store, r#"{"tags": ["old"]}"#), 0);
    let count = store.apply_purge(&Purge::parse(br#"{"tags": ["new"]}"#).unwrap());
    assert_eq!((count.purged, count.examined), (1, 1));
    assert_eq!((store.objects(), store.bytes(), store.used()), (0, 0, 0));
    // The index forgot every tag it had: no entry is left behind under any of them.
    for tag in ["old", "new", "shared"] {
        let body = format!(r#"{{"tags": ["{tag}"]}}"#);
        let count = store.apply_purge(&Purge::parse(body.as_bytes()).unwrap());
        assert_eq!(count.examined, 0, "{tag}");
    }
}

#[tokio::test]
async fn a_soft_purge_marks_stale_and_keeps_the_object() {
    let store = tagged_store(1 << 20);
    let span = Span::inactive();
    let key = CacheKey::new("h/soft", "");
    fill_tagged(store, &key, "t", b"body").await;
    let (meta, _) = store.lookup(&key, &span.handle()).await.unwrap().unwrap();
    assert!(meta.is_fresh(SystemTime::now()));
    assert_eq!(purge(store, r#"{"tags": ["t"], "soft": true}"#), 1);
    let (meta, _) = store.lookup(&key, &span.handle()).await.unwrap().unwrap();
    assert!(
        !meta.is_fresh(SystemTime::now()),
        "stale after a soft purge"
    );
    assert_eq!(store.objects(), 1);
    assert_eq!(body_of(store, &key).await.as_deref(), Some("body"));
}

#[tokio::test]
async fn purges_reach_fills_in_progress() {
    let store = tagged_store(1 << 20);
    let span = Span::inactive();
    for (soft, path) in [(false, "h/hard"), (true, "h/soft")] {
        let key = CacheKey::new(path, "");
        let mut miss = store
            .get_miss_handler(&key, &meta_tagged("f"), &span.handle())
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(b"half"), false)
            .await
            .unwrap();
        let body = format!(r#"{{"tags": ["f"], "soft": {soft}}}"#);
        assert_eq!(purge(store, &body), 1);
        miss.write_body(Bytes::from_static(b"rest"), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
        let found = store.lookup(&key, &span.handle()).await.unwrap();
        if soft {
            let (meta, _) = found.expect("a soft purge keeps the fill");
            assert!(!meta.is_fresh(SystemTime::now()), "committed stale");
        } else {
            assert!(found.is_none(), "a hard purge wins over the fill");
        }
    }
    assert_eq!(store.used(), store.bytes());
}

#[tokio::test]
async fn an_object_is_counted_with_its_own_struct() {
    let store = store();
    fill(store, &CacheKey::new("h/own", ""), "body").await;
    let own = std::mem::size_of::<crate::cache::object::Object>() + 16;
    assert!(
        store.bytes() >= own + "body".len() + "h/own".len(),
        "{}",
        store.bytes()
    );
}
