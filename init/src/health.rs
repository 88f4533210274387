//! Container health checks: `healthcheck = { command = [...], interval, timeout, retries,
//! start_period }`, with Docker's meaning and defaults.
//!
//! The first check runs `interval` after the container starts, then one every
//! `interval` after the previous one ends. A check passes when its command exits 0
//! within `timeout`. The container is `healthy` after a pass and `unhealthy` after
//! `retries` failures in a row; failures during `start_period` do not count until the
//! first pass. A container that `depends_on` one with a health check starts only once
//! it is healthy. Unhealthy is reported, not acted on (as in Docker): restart policies
//! apply to exits.
//!
//! The command runs inside the container (`berth_runtime::exec`), in a process PID 1
//! clones into the container's cgroup; this module is only the bookkeeping.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::DurationSpec;

/// The `healthcheck` table of a `[[container]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// The command, run inside the container as its PID 1's user.
    pub command: Vec<String>,
    #[serde(default = "default_interval")]
    pub interval: DurationSpec,
    #[serde(default = "default_interval")]
    pub timeout: DurationSpec,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "zero")]
    pub start_period: DurationSpec,
}

fn default_interval() -> DurationSpec {
    DurationSpec(Duration::from_secs(30))
}

fn default_retries() -> u32 {
    3
}

fn zero() -> DurationSpec {
    DurationSpec(Duration::ZERO)
}

impl HealthConfig {
    /// What serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        berth_runtime::spec::validate_argv("healthcheck.command", &self.command)
            .map_err(|e| e.to_string())?;
        if self.command.is_empty() {
            return Err("healthcheck.command cannot be empty".into());
        }
        for (key, d) in [("interval", self.interval), ("timeout", self.timeout)] {
            if d.0 < Duration::from_millis(100) {
                return Err(format!("healthcheck.{key} must be at least 100ms"));
            }
        }
        if self.retries == 0 {
            return Err("healthcheck.retries must be at least 1".into());
        }
        Ok(())
    }
}

/// A container's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// The health of one run of a container.
#[derive(Debug, Clone)]
pub struct Health {
    pub status: HealthStatus,
    /// Failures in a row.
    pub failures: u32,
    /// When the next check is due (none runs now).
    pub next_check: Instant,
    /// The check in flight, as the pid of its helper process.
    pub check: Option<nix::unistd::Pid>,
    started: Instant,
    passed_once: bool,
}

impl Health {
    pub fn new(config: &HealthConfig, started: Instant) -> Health {
        Health {
            status: HealthStatus::Starting,
            failures: 0,
            next_check: started + config.interval.0,
            check: None,
            started,
            passed_once: false,
        }
    }

    /// True when a check should start now.
    pub fn due(&self, now: Instant) -> bool {
        self.check.is_none() && self.next_check <= now
    }

    /// Records a check's exit code; returns the new status if it changed.
    pub fn on_result(
        &mut self,
        config: &HealthConfig,
        code: i32,
        now: Instant,
    ) -> Option<HealthStatus> {
        self.check = None;
        self.next_check = now + config.interval.0;
        let before = self.status;
        if code == 0 {
            self.failures = 0;
            self.passed_once = true;
            self.status = HealthStatus::Healthy;
        } else if self.passed_once || now.duration_since(self.started) >= config.start_period.0 {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= config.retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        (self.status != before).then_some(self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(retries: u32, start_period_ms: u64) -> HealthConfig {
        HealthConfig {
            command: vec!["true".into()],
            interval: DurationSpec(Duration::from_millis(500)),
            timeout: DurationSpec(Duration::from_secs(1)),
            retries,
            start_period: DurationSpec(Duration::from_millis(start_period_ms)),
        }
    }

    #[test]
    fn passes_failures_and_retries() {
        let c = config(2, 0);
        let t0 = Instant::now();
        let mut h = Health::new(&c, t0);
        assert!(!h.due(t0));
        assert!(h.due(t0 + Duration::from_millis(500)));
        assert_eq!(h.on_result(&c, 1, t0 + Duration::from_secs(1)), None);
        assert_eq!(h.status, HealthStatus::Starting);
        assert_eq!(
            h.on_result(&c, 1, t0 + Duration::from_secs(2)),
            Some(HealthStatus::Unhealthy)
        );
        assert_eq!(
            h.on_result(&c, 0, t0 + Duration::from_secs(3)),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(h.failures, 0);
        assert_eq!(h.on_result(&c, 0, t0 + Duration::from_secs(4)), None);
        assert_eq!(h.next_check, t0 + Duration::from_millis(4500));
    }

    #[test]
    fn start_period_forgives_early_failures_until_the_first_pass() {
        let c = config(1, 5000);
        let t0 = Instant::now();
        let mut h = Health::new(&c, t0);
        assert_eq!(h.on_result(&c, 1, t0 + Duration::from_secs(1)), None);
        assert_eq!(h.failures, 0);
        assert_eq!(
            h.on_result(&c, 0, t0 + Duration::from_secs(2)),
            Some(HealthStatus::Healthy)
        );
        // After a pass, the start period no longer forgives.
        assert_eq!(
            h.on_result(&c, 1, t0 + Duration::from_secs(3)),
            Some(HealthStatus::Unhealthy)
        );
    }

    #[test]
    fn config_mistakes_are_named() {
        let mut c = config(0, 0);
        assert!(c.validate().unwrap_err().contains("retries"));
        c.retries = 1;
        c.interval = DurationSpec(Duration::from_millis(10));
        assert!(c.validate().unwrap_err().contains("interval"));
        c.interval = DurationSpec(Duration::from_secs(1));
        c.command.clear();
        assert!(c.validate().is_err());
    }
}
