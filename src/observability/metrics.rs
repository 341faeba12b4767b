//! The node's counters for `/metrics`: requests by `X-Cache` and status class, and tunnels.
//!
//! Plain atomics, bumped once per request (in `logging`) and twice per tunnel (opened,
//! closed): no locks and no allocation on the request path. The admin renders them, with
//! the cache's and the origins' gauges, in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::latency::RouteStatsRegistry;
use crate::cache::status;

/// Every `X-Cache` value, in the order of the counters.
pub(crate) const CACHE_STATUSES: [&str; 8] = [
    status::HIT,
    status::MISS,
    status::REMOTE_HIT,
    status::REVALIDATED,
    status::EXPIRED_HIT,
    status::PRIVATE_NOSTORE,
    status::UNCACHEABLE,
    status::CONFIG_NOCACHE,
];

/// Status classes: `1xx` to `5xx`, and `none` for a request that got no response.
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; CLASSES.len()]; CACHE_STATUSES.len()],
    tunnels_opened: AtomicU64,
    tunnels_closed: AtomicU64,
    /// Taken over from the process this one replaced (binary upgrade).
    tunnels_adopted: AtomicU64,
    /// Given to the process that replaces this one.
    tunnels_handed_over: AtomicU64,
    bytes_client_to_origin: AtomicU64,
    bytes_origin_to_client: AtomicU64,
    /// Per-route request counts and latency histograms.
    pub routes: RouteStatsRegistry,
}

impl Metrics {
    /// One answered request: its `X-Cache` value and status (0: none was sent).
    pub fn record_request(&self, cache_status: &str, status: u16) {
        let row = cache_status_row(cache_status);
        let class = match status {
            100..=599 => usize::from(status / 100),
            _ => 0,
        };
        self.requests[row][class].fetch_add(1, Relaxed);
    }

    pub fn tunnel_opened(&self) {
        self.tunnels_opened.fetch_add(1, Relaxed);
    }

    pub fn tunnel_closed(&self, bytes_client_to_origin: u64, bytes_origin_to_client: u64) {
        self.bytes_client_to_origin
            .fetch_add(bytes_client_to_origin, Relaxed);
        self.bytes_origin_to_client
            .fetch_add(bytes_origin_to_client, Relaxed);
        self.tunnels_closed.fetch_add(1, Relaxed);
    }

    pub fn tunnel_adopted(&self) {
        self.tunnels_adopted.fetch_add(1, Relaxed);
    }

    pub fn tunnel_handed_over(&self) {
        self.tunnels_handed_over.fetch_add(1, Relaxed);
    }

    /// Tunnels open now (opened or adopted, and not yet closed or handed over).
    pub fn open_tunnels(&self) -> u64 {
        // Gone first: read the other way, a tunnel closing in between could count as -1.
        let gone = self.tunnels_closed.load(Relaxed) + self.tunnels_handed_over.load(Relaxed);
        (self.tunnels_opened.load(Relaxed) + self.tunnels_adopted.load(Relaxed))
            .saturating_sub(gone)
    }

    /// Appends the counters in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        family(
            out,
            "portico_requests_total",
            "counter",
            "Requests answered, by X-Cache value and status class.",
        );
        for (row, cache) in CACHE_STATUSES.iter().enumerate() {
            for (column, class) in CLASSES.iter().enumerate() {
                let count = self.requests[row][column].load(Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "portico_requests_total{{x_cache=\"{cache}\",class=\"{class}\"}} {count}"
                    );
                }
            }
        }
        family(
            out,
            "portico_tunnels_open",
            "gauge",
            "WebSocket tunnels open now.",
        );
        let _ = writeln!(out, "portico_tunnels_open {}", self.open_tunnels());
        family(
            out,
            "portico_tunnels_total",
            "counter",
            "WebSocket tunnels opened (a 101 relayed).",
        );
        let _ = writeln!(
            out,
            "portico_tunnels_total {}",
            self.tunnels_opened.load(Relaxed)
        );
        family(
            out,
            "portico_tunnels_adopted_total",
            "counter",
            "WebSocket tunnels taken over from the process this one replaced.",
        );
        let _ = writeln!(
            out,
            "portico_tunnels_adopted_total {}",
            self.tunnels_adopted.load(Relaxed)
        );
        family(
            out,
            "portico_tunnels_handed_over_total",
            "counter",
            "WebSocket tunnels given to the process that replaces this one.",
        );
        let _ = writeln!(
            out,
            "portico_tunnels_handed_over_total {}",
            self.tunnels_handed_over.load(Relaxed)
        );
        family(
            out,
            "portico_tunnel_bytes_total",
            "counter",
            "Bytes relayed by closed tunnels, by direction.",
        );
        let _ = writeln!(
            out,
            "portico_tunnel_bytes_total{{direction=\"client_to_origin\"}} {}",
            self.bytes_client_to_origin.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "portico_tunnel_bytes_total{{direction=\"origin_to_client\"}} {}",
            self.bytes_origin_to_client.load(Relaxed)
        );
        self.routes.render(out);
    }
}

/// The row of an `X-Cache` value in [`CACHE_STATUSES`] (an unknown one counts as the last).
pub(crate) fn cache_status_row(cache_status: &str) -> usize {
    CACHE_STATUSES
        .iter()
        .position(|s| *s == cache_status)
        .unwrap_or(CACHE_STATUSES.len() - 1)
}

/// A label value with `\`, `"` and newlines escaped, as the text format wants.
pub fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric family's `HELP` and `TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_cache_status_and_class() {
        let metrics = Metrics::default();
        metrics.record_request(status::HIT, 200);
        metrics.record_request(status::HIT, 206);
        metrics.record_request(status::CONFIG_NOCACHE, 502);
        metrics.record_request(status::UNCACHEABLE, 0);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("portico_requests_total{x_cache=\"TCP_HIT\",class=\"2xx\"} 2\n"));
        assert!(out.contains("{x_cache=\"CONFIG_NOCACHE\",class=\"5xx\"} 1\n"));
        assert!(out.contains("{x_cache=\"UNCACHEABLE\",class=\"none\"} 1\n"));
        assert!(
            !out.contains("TCP_MISS"),
            "series that never happened are left out"
        );
        assert!(out.contains("# TYPE portico_requests_total counter\n"));
    }

    #[test]
    fn tunnels_open_is_opened_less_closed() {
        let metrics = Metrics::default();
        metrics.tunnel_opened();
        metrics.tunnel_opened();
        metrics.tunnel_closed(10, 20);
        assert_eq!(metrics.open_tunnels(), 1);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("portico_tunnels_open 1\n"));
        assert!(out.contains("portico_tunnels_total 2\n"));
        assert!(out.contains("portico_tunnel_bytes_total{direction=\"origin_to_client\"} 20\n"));
    }
}
