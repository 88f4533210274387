//! What a container that cannot start yet is waiting for, and when PID 1 says so.
//!
//! A container whose turn has come (first start, or a restart after its backoff) but
//! that is held back gets one console line naming the cause as soon as it starts
//! waiting, a new line when the cause changes, and a reminder every [`REMIND_EVERY`]
//! while it lasts: never more often, however long the wait.

use std::fmt;
use std::time::{Duration, Instant};

/// How often a container still waiting for the same thing is mentioned again.
pub const REMIND_EVERY: Duration = Duration::from_secs(30);

/// Why a container does not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// A `depends_on` container that is not ready.
    Dependency {
        name: String,
        state: DependencyState,
    },
    /// `depends_on = ["network-online"]` and the host has no address yet.
    NetworkOnline,
    /// Its image is a baked `[[image]]` whose import failed.
    ImageNotImported { image: String },
    /// The baked images are still being imported (said for all containers at once).
    ImagesImporting,
}

/// Where a dependency stands, as much as the waiting container cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyState {
    /// Not running yet: waiting itself, starting, or between restarts.
    NotRunning,
    /// Running, its health check has not passed yet.
    HealthPending,
    /// Running, and its health check says unhealthy.
    Unhealthy,
    /// Exited, and its restart policy does not start it again.
    Exited,
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::Dependency { name, state } => match state {
                DependencyState::NotRunning => write!(f, "for {name} to be running"),
                DependencyState::HealthPending => {
                    write!(f, "for {name} to be healthy (no check has passed yet)")
                }
                DependencyState::Unhealthy => {
                    write!(f, "for {name} to be healthy (it is unhealthy)")
                }
                DependencyState::Exited => {
                    write!(f, "for {name}, which has exited and is not restarted")
                }
            },
            WaitReason::NetworkOnline => f.write_str(
                "for network-online (the host has no address yet: no DHCP lease or static address)",
            ),
            WaitReason::ImageNotImported { image } => {
                write!(f, "for image {image}, which failed to import")
            }
            WaitReason::ImagesImporting => f.write_str("for the baked images to be imported"),
        }
    }
}

/// One container's wait: what for, since when, and when it was last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub reason: WaitReason,
    pub since: Instant,
    said: Instant,
}

/// What to say about a container's wait now, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Say {
    /// It starts waiting, or waits for something else now.
    Waiting,
    /// It still waits for the same thing, [`REMIND_EVERY`] after it was last said.
    StillWaiting(Duration),
}

impl Wait {
    /// Records that the container waits for `reason` at `now` (`current` is its wait so
    /// far, if any); returns what to say.
    pub fn update(current: &mut Option<Wait>, reason: WaitReason, now: Instant) -> Option<Say> {
        match current {
            Some(wait) if wait.reason == reason => {
                if now.saturating_duration_since(wait.said) < REMIND_EVERY {
                    return None;
                }
                wait.said = now;
                Some(Say::StillWaiting(now.saturating_duration_since(wait.since)))
            }
            _ => {
                *current = Some(Wait {
                    reason,
                    since: now,
                    said: now,
                });
                Some(Say::Waiting)
            }
        }
    }

    /// When the next reminder is due.
    pub fn next_reminder(&self) -> Instant {
        self.said + REMIND_EVERY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(state: DependencyState) -> WaitReason {
        WaitReason::Dependency {
            name: "db".into(),
            state,
        }
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(
            dep(DependencyState::NotRunning).to_string(),
            "for db to be running"
        );
        assert_eq!(
            dep(DependencyState::Unhealthy).to_string(),
            "for db to be healthy (it is unhealthy)"
        );
        assert!(WaitReason::NetworkOnline
            .to_string()
            .starts_with("for network-online"));
        assert_eq!(
            WaitReason::ImageNotImported {
                image: "busybox:latest".into()
            }
            .to_string(),
            "for image busybox:latest, which failed to import"
        );
    }

    #[test]
    fn a_wait_is_said_once_then_reminded_at_most_every_30_s() {
        let t0 = Instant::now();
        let mut wait = None;
        let reason = WaitReason::NetworkOnline;
        assert_eq!(
            Wait::update(&mut wait, reason.clone(), t0),
            Some(Say::Waiting)
        );
        // Every tick in between says nothing.
        for ms in (100..30_000).step_by(100) {
            let at = t0 + Duration::from_millis(ms);
            assert_eq!(Wait::update(&mut wait, reason.clone(), at), None, "{ms}");
        }
        let at = t0 + REMIND_EVERY;
        assert_eq!(
            Wait::update(&mut wait, reason.clone(), at),
            Some(Say::StillWaiting(REMIND_EVERY))
        );
        assert_eq!(
            wait.as_ref().map(Wait::next_reminder),
            Some(at + REMIND_EVERY)
        );
        assert_eq!(
            Wait::update(&mut wait, reason, at + Duration::from_secs(1)),
            None
        );
        // A new cause is said at once.
        assert_eq!(
            Wait::update(
                &mut wait,
                dep(DependencyState::NotRunning),
                at + Duration::from_secs(2)
            ),
            Some(Say::Waiting)
        );
    }
}
