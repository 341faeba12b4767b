//! Access log and tunnel records, and the counters behind `/metrics`.

pub mod access_log;
pub mod latency;
pub mod metrics;
pub mod records;

pub use access_log::AccessLog;
pub use metrics::Metrics;
