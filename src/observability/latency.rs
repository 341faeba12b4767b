//! Per-route request counts and latency histograms (total, and the origin's time to first
//! byte), by `X-Cache` value.
//!
//! A route's counters belong to its name, not to a configuration generation: each
//! generation looks its routes up once, when it is built ([`RouteStatsRegistry::for_routes`]),
//! so a reload keeps the series going and the request path touches only atomics. A cache
//! status's histograms are allocated on its first request, so ten thousand routes cost a
//! pointer per status until they see traffic.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::metrics::{cache_status_row, family, label, CACHE_STATUSES};

/// Upper bounds of the histogram buckets, in seconds (Prometheus' defaults, from 1 ms).
const BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram: cumulative buckets are computed when rendered.
#[derive(Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(value.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (index, bound) in BOUNDS.iter().enumerate() {
            cumulative += self.buckets[index].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[BOUNDS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count.load(Relaxed));
    }
}

/// One route's requests with one `X-Cache` value.
#[derive(Default)]
struct StatusStats {
    total: Histogram,
    origin_first_byte: Histogram,
}

/// One route's counters.
pub struct RouteStats {
    name: String,
    by_status: [OnceLock<Box<StatusStats>>; CACHE_STATUSES.len()],
}

impl RouteStats {
    fn new(name: &str) -> RouteStats {
        RouteStats {
            name: name.to_owned(),
            by_status: Default::default(),
        }
    }

    /// One request: its `X-Cache` value, its whole duration, and the origin's time to first
    /// byte when it went to one.
    pub fn observe(
        &self,
        cache_status: &str,
        total: Duration,
        origin_first_byte: Option<Duration>,
    ) {
        let stats = self.by_status[cache_status_row(cache_status)].get_or_init(Box::default);
        stats.total.observe(total);
        if let Some(first_byte) = origin_first_byte {
            stats.origin_first_byte.observe(first_byte);
        }
    }
}

/// Every route name's counters, for the node's life.
#[derive(Default)]
pub struct RouteStatsRegistry {
    routes: parking_lot::Mutex<HashMap<String, Arc<RouteStats>>>,
}

/// The label for requests that matched no route.
pub const NO_ROUTE: &str = "";

impl RouteStatsRegistry {
    /// The counters of each of `names`, in order (created for a name not seen before).
    pub fn for_routes<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<Arc<RouteStats>> {
        let mut routes = self.routes.lock();
        names
            .into_iter()
            .map(|name| {
                routes
                    .entry(name.to_owned())
                    .or_insert_with(|| Arc::new(RouteStats::new(name)))
                    .clone()
            })
            .collect()
    }

    /// Appends the request counts and both histograms, in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let mut routes: Vec<Arc<RouteStats>> = self.routes.lock().values().cloned().collect();
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        fn series(route: &RouteStats) -> Vec<(String, &StatusStats)> {
            let name = label(&route.name);
            route
                .by_status
                .iter()
                .zip(CACHE_STATUSES)
                .filter_map(move |(stats, status)| {
                    Some((
                        format!("route=\"{name}\",x_cache=\"{status}\""),
                        stats.get()?.as_ref(),
                    ))
                })
                .collect()
        }
        family(
            out,
            "portico_route_requests_total",
            "counter",
            "Requests by route (empty: no route matched) and X-Cache value.",
        );
        for route in &routes {
            for (labels, stats) in series(route) {
                let count = stats.total.count.load(Relaxed);
                let _ = writeln!(out, "portico_route_requests_total{{{labels}}} {count}");
            }
        }
        family(
            out,
            "portico_request_duration_seconds",
            "histogram",
            "Time from the request's arrival to its end, by route and X-Cache value.",
        );
        for route in &routes {
            for (labels, stats) in series(route) {
                stats
                    .total
                    .render(out, "portico_request_duration_seconds", &labels);
            }
        }
        family(
            out,
            "portico_origin_first_byte_seconds",
            "histogram",
            "Time from sending a request to an origin to its response header, by route and X-Cache value.",
        );
        for route in &routes {
            for (labels, stats) in series(route) {
                if stats.origin_first_byte.count.load(Relaxed) > 0 {
                    stats.origin_first_byte.render(
                        out,
                        "portico_origin_first_byte_seconds",
                        &labels,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::status;

    #[test]
    fn a_route_keeps_its_counters_across_generations() {
        let registry = RouteStatsRegistry::default();
        let first = registry.for_routes(["static", "api"]);
        first[0].observe(status::HIT, Duration::from_millis(2), None);
        let second = registry.for_routes(["api", "static"]);
        second[1].observe(status::HIT, Duration::from_millis(30), None);
        let mut out = String::new();
        registry.render(&mut out);
        assert!(
            out.contains("portico_route_requests_total{route=\"static\",x_cache=\"TCP_HIT\"} 2\n")
        );
        assert!(!out.contains("route=\"api\""), "no traffic, no series");
    }

    #[test]
    fn buckets_are_cumulative_and_the_sum_is_in_seconds() {
        let registry = RouteStatsRegistry::default();
        let route = &registry.for_routes(["r"])[0];
        route.observe(
            status::MISS,
            Duration::from_millis(3),
            Some(Duration::from_millis(2)),
        );
        route.observe(status::MISS, Duration::from_secs(20), None);
        let mut out = String::new();
        registry.render(&mut out);
        let labels = "route=\"r\",x_cache=\"TCP_MISS\"";
        assert!(out.contains(&format!(
            "portico_request_duration_seconds_bucket{{{labels},le=\"0.001\"}} 0\n"
        )));
        assert!(out.contains(&format!(
            "portico_request_duration_seconds_bucket{{{labels},le=\"0.005\"}} 1\n"
        )));
        assert!(out.contains(&format!(
            "portico_request_duration_seconds_bucket{{{labels},le=\"10\"}} 1\n"
        )));
        assert!(out.contains(&format!(
            "portico_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 2\n"
        )));
        assert!(out.contains(&format!(
            "portico_request_duration_seconds_sum{{{labels}}} 20.003\n"
        )));
        assert!(out.contains(&format!(
            "portico_origin_first_byte_seconds_count{{{labels}}} 1\n"
        )));
    }
}
