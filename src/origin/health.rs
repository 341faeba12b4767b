//! What the probes have learned about each origin: a verdict, the consecutive counts behind
//! it, and the last probe and last error for `/status`.
//!
//! The verdict starts [`Verdict::Pending`] and the first probe decides it outright; after
//! that it flips only after `healthy_threshold` consecutive successes or
//! `unhealthy_threshold` consecutive failures (Envoy's rule). Counting the first probe
//! against a threshold would leave a dead origin in rotation for several intervals, only
//! because Pingora starts every backend healthy.
//!
//! Every verdict change is logged, and so is the moment a group loses (or regains) its last
//! healthy origin, once per transition.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::model::{HealthProbe, OriginGroup};

/// An origin's health as selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The group has no `health_probe`: the origin is always eligible.
    NotProbed,
    /// Probed, but no probe has finished yet.
    Pending,
    Healthy,
    Unhealthy,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::NotProbed => "not_probed",
            Verdict::Pending => "pending",
            Verdict::Healthy => "healthy",
            Verdict::Unhealthy => "unhealthy",
        }
    }

    fn from_u8(value: u8) -> Verdict {
        match value {
            0 => Verdict::NotProbed,
            1 => Verdict::Pending,
            2 => Verdict::Healthy,
            _ => Verdict::Unhealthy,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Verdict::NotProbed => 0,
            Verdict::Pending => 1,
            Verdict::Healthy => 2,
            Verdict::Unhealthy => 3,
        }
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOutcome {
    /// When the probe started, in milliseconds since the Unix epoch.
    pub time_ms: u128,
    /// From the start of the connect to the answer (or the failure).
    pub latency: Duration,
    /// The HTTP status received, if any (none for TCP probes).
    pub status: Option<u16>,
    /// Why the probe failed; `None` when it passed.
    pub error: Option<String>,
}

impl ProbeOutcome {
    pub fn passed(&self) -> bool {
        self.error.is_none()
    }
}

/// Consecutive results needed to flip a verdict (both at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

impl Thresholds {
    pub fn of(probe: &HealthProbe) -> Thresholds {
        Thresholds {
            healthy: probe.healthy_threshold.max(1),
            unhealthy: probe.unhealthy_threshold.max(1),
        }
    }
}

/// The verdict after a probe, given the current verdict and the consecutive counts that
/// include that probe.
pub fn next_verdict(
    current: Verdict,
    consecutive_successes: u32,
    consecutive_failures: u32,
    thresholds: Thresholds,
) -> Verdict {
    let passed = consecutive_successes > 0;
    match current {
        Verdict::NotProbed | Verdict::Pending if passed => Verdict::Healthy,
        Verdict::NotProbed | Verdict::Pending => Verdict::Unhealthy,
        Verdict::Unhealthy if consecutive_successes >= thresholds.healthy => Verdict::Healthy,
        Verdict::Healthy if consecutive_failures >= thresholds.unhealthy => Verdict::Unhealthy,
        unchanged => unchanged,
    }
}

/// Everything `/status` shows about one origin.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginReport {
    pub verdict: Verdict,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub probes: u64,
    /// When the verdict last changed (ms since the epoch).
    pub changed_ms: Option<u128>,
    pub last_probe: Option<ProbeOutcome>,
    /// The most recent failed probe, kept after the origin recovers.
    pub last_error: Option<ProbeOutcome>,
}

/// One origin's health: the verdict readable without a lock (selection reads it on every
/// request), the details behind a mutex (probes and `/status` only).
pub struct OriginHealth {
    verdict: AtomicU8,
    report: Mutex<OriginReport>,
}

impl OriginHealth {
    fn new(initial: Verdict) -> OriginHealth {
        OriginHealth {
            verdict: AtomicU8::new(initial.to_u8()),
            report: Mutex::new(OriginReport {
                verdict: initial,
                consecutive_successes: 0,
                consecutive_failures: 0,
                probes: 0,
                changed_ms: None,
                last_probe: None,
                last_error: None,
            }),
        }
    }

    pub fn verdict(&self) -> Verdict {
        Verdict::from_u8(self.verdict.load(Ordering::Acquire))
    }

    pub fn report(&self) -> OriginReport {
        self.report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Folds one probe in; returns the verdict before and after.
    fn observe(&self, outcome: ProbeOutcome, thresholds: Thresholds) -> (Verdict, Verdict) {
        let mut report = self
            .report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if outcome.passed() {
            report.consecutive_successes += 1;
            report.consecutive_failures = 0;
        } else {
            report.consecutive_failures += 1;
            report.consecutive_successes = 0;
            report.last_error = Some(outcome.clone());
        }
        report.probes += 1;
        let before = report.verdict;
        let after = next_verdict(
            before,
            report.consecutive_successes,
            report.consecutive_failures,
            thresholds,
        );
        if after != before {
            report.verdict = after;
            report.changed_ms = Some(outcome.time_ms);
            self.verdict.store(after.to_u8(), Ordering::Release);
        }
        report.last_probe = Some(outcome);
        (before, after)
    }
}

/// The health of every origin of one group, indexed like the group's origins.
pub struct GroupHealth {
    pub name: String,
    origin_names: Vec<String>,
    enabled: Vec<bool>,
    /// Shared with the next configuration generation for each origin a reload left as it
    /// was, so that its verdict and counts carry over (no flap back to pending).
    origins: Vec<Arc<OriginHealth>>,
    thresholds: Thresholds,
    all_unhealthy: AtomicBool,
}

impl GroupHealth {
    pub fn new(group: &OriginGroup) -> GroupHealth {
        GroupHealth::after(group, |_| None)
    }

    /// The health of `group` in a new configuration generation: each origin for which
    /// `carried` gives the previous generation's health keeps it.
    pub fn after(
        group: &OriginGroup,
        carried: impl Fn(usize) -> Option<Arc<OriginHealth>>,
    ) -> GroupHealth {
        let initial = match group.health_probe {
            Some(_) => Verdict::Pending,
            None => Verdict::NotProbed,
        };
        GroupHealth {
            name: group.name.clone(),
            origin_names: group.origins.iter().map(|o| o.name.clone()).collect(),
            enabled: group.origins.iter().map(|o| o.enabled).collect(),
            origins: (0..group.origins.len())
                .map(|index| carried(index).unwrap_or_else(|| Arc::new(OriginHealth::new(initial))))
                .collect(),
            thresholds: group.health_probe.as_ref().map_or(
                Thresholds {
                    healthy: 1,
                    unhealthy: 1,
                },
                Thresholds::of,
            ),
            all_unhealthy: AtomicBool::new(false),
        }
    }

    pub fn origin(&self, index: usize) -> Option<&OriginHealth> {
        self.origins.get(index).map(Arc::as_ref)
    }

    /// Origin `index`'s health, to be shared with the next generation.
    pub(crate) fn shared(&self, index: usize) -> Option<Arc<OriginHealth>> {
        self.origins.get(index).cloned()
    }

    /// Whether selection may prefer this origin: healthy, or in a group without probes.
    pub fn usable(&self, index: usize) -> bool {
        self.origins
            .get(index)
            .is_some_and(|o| matches!(o.verdict(), Verdict::Healthy | Verdict::NotProbed))
    }

    /// Whether every enabled origin has been found unhealthy (traffic then goes to all).
    pub fn all_unhealthy(&self) -> bool {
        self.all_unhealthy.load(Ordering::Relaxed)
    }

    /// Records one probe of origin `index`, logs any transition, and returns the verdict.
    pub fn record(&self, index: usize, outcome: ProbeOutcome) -> Verdict {
        let Some(origin) = self.origins.get(index) else {
            return Verdict::Unhealthy;
        };
        let reason = outcome.error.clone();
        let (before, after) = origin.observe(outcome, self.thresholds);
        if before != after {
            let name = &self.origin_names[index];
            match (after, reason) {
                (Verdict::Unhealthy, Some(reason)) => log::warn!(
                    "origin group {}: origin {name} is unhealthy ({reason})",
                    self.name
                ),
                _ => log::info!(
                    "origin group {}: origin {name} is {}",
                    self.name,
                    after.as_str()
                ),
            }
            self.note_group_transition();
        }
        after
    }

    /// Logs the moment a group loses (or regains) every healthy origin, once per transition.
    fn note_group_transition(&self) {
        let all_unhealthy = self
            .origins
            .iter()
            .zip(&self.enabled)
            .filter(|(_, enabled)| **enabled)
            .all(|(origin, _)| origin.verdict() == Verdict::Unhealthy);
        if self.all_unhealthy.swap(all_unhealthy, Ordering::Relaxed) != all_unhealthy {
            if all_unhealthy {
                log::warn!(
                    "origin group {}: every origin is unhealthy; sending traffic to all of them",
                    self.name
                );
            } else {
                log::warn!("origin group {}: an origin is healthy again", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Thresholds = Thresholds {
        healthy: 1,
        unhealthy: 1,
    };
    const THREE_TWO: Thresholds = Thresholds {
        healthy: 3,
        unhealthy: 2,
    };

    fn outcome(passed: bool) -> ProbeOutcome {
        ProbeOutcome {
            time_ms: 1,
            latency: Duration::from_millis(1),
            status: Some(if passed { 200 } else { 503 }),
            error: (!passed).then(|| "status 503".to_string()),
        }
    }

    #[test]
    fn the_first_probe_decides_whatever_the_thresholds() {
        assert_eq!(
            next_verdict(Verdict::Pending, 1, 0, THREE_TWO),
            Verdict::Healthy
        );
        assert_eq!(
            next_verdict(Verdict::Pending, 0, 1, THREE_TWO),
            Verdict::Unhealthy
        );
    }

    #[test]
    fn later_flips_need_consecutive_results() {
        let health = OriginHealth::new(Verdict::Pending);
        assert_eq!(health.observe(outcome(true), THREE_TWO).1, Verdict::Healthy);
        assert_eq!(
            health.observe(outcome(false), THREE_TWO).1,
            Verdict::Healthy
        );
        // A success in between resets the failures.
        assert_eq!(health.observe(outcome(true), THREE_TWO).1, Verdict::Healthy);
        assert_eq!(
            health.observe(outcome(false), THREE_TWO).1,
            Verdict::Healthy
        );
        assert_eq!(
            health.observe(outcome(false), THREE_TWO).1,
            Verdict::Unhealthy
        );
        assert_eq!(
            health.observe(outcome(true), THREE_TWO).1,
            Verdict::Unhealthy
        );
        assert_eq!(
            health.observe(outcome(true), THREE_TWO).1,
            Verdict::Unhealthy
        );
        assert_eq!(health.observe(outcome(true), THREE_TWO).1, Verdict::Healthy);
        let report = health.report();
        assert_eq!(report.probes, 8);
        assert_eq!(report.consecutive_successes, 3);
        assert_eq!(report.last_error.unwrap().status, Some(503));
        assert_eq!(health.verdict(), Verdict::Healthy);
    }

    /// Collects log lines, for the tests of what gets logged.
    struct Capture;
    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            LINES.lock().unwrap().push(record.args().to_string());
        }
        fn flush(&self) {}
    }

    fn group(name: &str) -> OriginGroup {
        let origin = |name: &str| crate::config::model::Origin {
            name: name.to_string(),
            address: "127.0.0.1:1".parse().unwrap(),
            resolved_from: None,
            host_header: "h".to_string(),
            host_value: http::HeaderValue::from_static("h"),
            priority: 1,
            weight: 50,
            enabled: true,
            https_address: "127.0.0.1:2".parse().unwrap(),
        };
        OriginGroup {
            when_all_unhealthy: Default::default(),
            name: name.to_string(),
            origins: vec![origin("a"), origin("b")],
            health_probe: Some(HealthProbe {
                protocol: crate::config::model::ProbeProtocol::Http,
                method: http::Method::HEAD,
                path: "/".to_string(),
                host: None,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                healthy_threshold: 1,
                unhealthy_threshold: 1,
                expect_status: vec![(200, 399)],
                use_tls: false,
            }),
            max_retries: 1,
            ca: None,
            timeouts: Default::default(),
        }
    }

    #[test]
    fn transitions_are_logged_once_each() {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Info);
        let health = GroupHealth::new(&group("logged"));
        let lines_about = |needle: &str| {
            LINES
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with("origin group logged:") && l.contains(needle))
                .count()
        };
        for _ in 0..3 {
            health.record(0, outcome(false));
            health.record(1, outcome(false));
        }
        assert!(health.all_unhealthy());
        assert_eq!(lines_about("origin a is unhealthy (status 503)"), 1);
        assert_eq!(lines_about("every origin is unhealthy"), 1);
        for _ in 0..3 {
            health.record(1, outcome(true));
        }
        assert!(!health.all_unhealthy());
        assert_eq!(lines_about("origin b is healthy"), 1);
        assert_eq!(lines_about("an origin is healthy again"), 1);
    }

    #[test]
    fn thresholds_of_one_flip_on_every_change() {
        let health = OriginHealth::new(Verdict::Pending);
        for passed in [false, true, false, true] {
            let expected = if passed {
                Verdict::Healthy
            } else {
                Verdict::Unhealthy
            };
            assert_eq!(health.observe(outcome(passed), ONE).1, expected);
        }
    }
}
