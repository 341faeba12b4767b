//! The bridge to pingora-load-balancing: a group's probe as a Pingora `HealthCheck`.
//!
//! Pingora's registry runs the checks (on `interval`, all origins of a group in parallel)
//! and keeps each backend's health, which selection reads. Portico decides the verdict
//! itself ([`GroupHealth::record`]: the first probe decides, then the thresholds), so the
//! check answers with the verdict rather than the raw probe result and asks Pingora to flip
//! after a single observation: Pingora's health then mirrors Portico's verdict exactly.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_error::{Error, ErrorType, Result};
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::Backend;

use crate::config::model::{HealthProbe, Origin};

use super::health::{GroupHealth, Verdict};
use super::{probe, OriginIndex};

/// The probe of one origin group.
pub struct GroupCheck {
    pub probe: HealthProbe,
    pub origins: Vec<Origin>,
    pub health: Arc<GroupHealth>,
    /// Set when the probe uses TLS.
    pub tls: Option<tokio_rustls::TlsConnector>,
}

#[async_trait]
impl HealthCheck for GroupCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        let Some(&OriginIndex(index)) = target.ext.get::<OriginIndex>() else {
            return Error::e_explain(ErrorType::InternalError, "a backend without its origin");
        };
        let Some(origin) = self.origins.get(index) else {
            return Error::e_explain(ErrorType::InternalError, "a backend of another group");
        };
        let outcome = probe::probe(&self.probe, origin, self.tls.as_ref()).await;
        let reason = outcome.error.clone();
        match self.health.record(index, outcome) {
            Verdict::Healthy | Verdict::NotProbed => Ok(()),
            Verdict::Pending | Verdict::Unhealthy => Error::e_explain(
                ErrorType::Custom("HealthProbeFailed"),
                reason.unwrap_or_else(|| "still below the healthy threshold".to_string()),
            ),
        }
    }

    /// The verdict already applies the thresholds (see the module comment).
    fn health_threshold(&self, _success: bool) -> usize {
        1
    }

    fn backend_summary(&self, target: &Backend) -> String {
        let name = target
            .ext
            .get::<OriginIndex>()
            .and_then(|&OriginIndex(index)| self.origins.get(index))
            .map_or("?", |origin| origin.name.as_str());
        format!(
            "origin group {}: origin {name} ({})",
            self.health.name, target.addr
        )
    }
}
