//! The rule engine: route matching and Front Door rule sets, compiled once per
//! configuration and evaluated without sockets (see the tests beside each part).

pub mod conditions;
pub mod engine;
pub mod path;
pub mod request;
pub mod route_table;

pub use engine::{CacheUse, Decision, Engine, FiredRule, RedirectTarget, UpgradeHandling};
pub use request::{is_websocket_upgrade, RequestFacts, Scheme};
pub use route_table::Miss;

#[cfg(test)]
mod tests;
