//! `GET /metrics`: the node's counters, the cache's occupancy and each origin's health, in
//! Prometheus' text format (version 0.0.4).

use std::fmt::Write;

use crate::cache::EdgeCache;
use crate::lifecycle::drain::Drain;
use crate::lifecycle::Reloads;
use crate::observability::metrics::{family, label, Metrics};
use crate::observability::AccessLog;
use crate::origin::health::Verdict;
use crate::proxy::Snapshot;

pub fn render(
    metrics: &Metrics,
    snapshot: &Snapshot,
    reloads: &Reloads,
    cache: &EdgeCache,
    drain: &Drain,
    access_log: &AccessLog,
) -> String {
    let mut out = String::with_capacity(4096);
    metrics.render(&mut out);

    family(
        &mut out,
        "portico_config_generation",
        "gauge",
        "The configuration generation serving new requests (1 at start, one more per reload).",
    );
    let _ = writeln!(out, "portico_config_generation {}", snapshot.generation);
    family(
        &mut out,
        "portico_config_reloads_total",
        "counter",
        "Reloads by result: ok (a new generation went live) or refused (the old one kept serving).",
    );
    let (ok, refused) = (reloads.ok, reloads.refused);
    let _ = writeln!(out, "portico_config_reloads_total{{result=\"ok\"}} {ok}");
    let _ = writeln!(
        out,
        "portico_config_reloads_total{{result=\"refused\"}} {refused}"
    );
    family(
        &mut out,
        "portico_requests_in_flight",
        "gauge",
        "Requests being handled (a draining node waits for them).",
    );
    let _ = writeln!(
        out,
        "portico_requests_in_flight {}",
        drain.requests_in_flight()
    );
    family(
        &mut out,
        "portico_access_log_dropped_total",
        "counter",
        "Access-log lines dropped because the writer could not keep up.",
    );
    let _ = writeln!(
        out,
        "portico_access_log_dropped_total {}",
        access_log.dropped()
    );

    let store = cache.store;
    family(
        &mut out,
        "portico_cache_bytes",
        "gauge",
        "Bytes held by cached objects.",
    );
    let _ = writeln!(out, "portico_cache_bytes {}", store.bytes());
    family(
        &mut out,
        "portico_cache_objects",
        "gauge",
        "Cached objects.",
    );
    let _ = writeln!(out, "portico_cache_objects {}", store.objects());
    family(
        &mut out,
        "portico_cache_evicted_total",
        "counter",
        "Objects evicted to stay within cache.memory_bytes.",
    );
    let _ = writeln!(out, "portico_cache_evicted_total {}", store.evicted());
    family(
        &mut out,
        "portico_cache_reserved_bytes",
        "gauge",
        "Bytes of cache.memory_bytes taken: cached objects plus fills in progress.",
    );
    let _ = writeln!(out, "portico_cache_reserved_bytes {}", store.used());
    family(
        &mut out,
        "portico_cache_abandoned_fills_total",
        "counter",
        "Fills not stored because cache.memory_bytes was taken by other fills (the response went on uncached).",
    );
    let _ = writeln!(
        out,
        "portico_cache_abandoned_fills_total {}",
        store.abandoned()
    );
    family(
        &mut out,
        "portico_cache_readers_cut_total",
        "counter",
        "Responses streamed from a fill that was not stored, cut off for falling more than 1 MiB behind the request that filled it.",
    );
    let _ = writeln!(
        out,
        "portico_cache_readers_cut_total {}",
        store.readers_cut()
    );
    family(
        &mut out,
        "portico_cache_fills_stopped_total",
        "counter",
        "Cache fills stopped because their client had gone, no other request read them and more than 1 MiB (or an unknown length) was left.",
    );
    let _ = writeln!(
        out,
        "portico_cache_fills_stopped_total {}",
        store.fills_stopped()
    );
    family(
        &mut out,
        "portico_cache_purge_examined_total",
        "counter",
        "Cached objects purges looked at (the tag and host indexes narrow this down).",
    );
    let _ = writeln!(
        out,
        "portico_cache_purge_examined_total {}",
        store.purge_examined()
    );

    family(
        &mut out,
        "portico_origin_healthy",
        "gauge",
        "1 when an origin may take traffic (healthy, or not probed), else 0.",
    );
    let config = &snapshot.engine.config;
    for (index, group) in config.origin_groups.iter().enumerate() {
        let health = snapshot.origins.health(index);
        for (i, origin) in group.origins.iter().enumerate() {
            let verdict = health.and_then(|h| h.origin(i)).map(|h| h.verdict());
            let up = origin.enabled
                && matches!(verdict, None | Some(Verdict::Healthy | Verdict::NotProbed));
            let _ = writeln!(
                out,
                "portico_origin_healthy{{group=\"{}\",origin=\"{}\"}} {}",
                label(&group.name),
                label(&origin.name),
                u8::from(up)
            );
        }
    }
    crate::tier::report::metrics(&snapshot.tiers, &mut out);
    out
}
