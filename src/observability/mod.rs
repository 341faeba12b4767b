//! Access log and tunnel records.

pub mod access_log;
pub mod records;

pub use access_log::AccessLog;
