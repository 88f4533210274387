//! Orderly shutdown: stop every process (SIGTERM, a grace period, then SIGKILL), sync,
//! unmount in reverse mount order (or remount read-only), then `reboot(2)`.
//!
//! Nothing here returns: if `reboot(2)` itself fails, PID 1 logs it and sleeps forever,
//! because exiting would panic the kernel.

use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::mounts::{parse_mountinfo, unmount_all, unmount_plan, UnmountOutcome};
use crate::reaper::reap_all;
use crate::signals::Signals;

/// How the machine ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PowerOff,
    Reboot,
}

impl Action {
    pub fn describe(self) -> &'static str {
        match self {
            Action::PowerOff => "power-off",
            Action::Reboot => "reboot",
        }
    }
}

/// How long processes get after SIGKILL before shutdown goes on without them (a process
/// in uninterruptible sleep on a dead disk would otherwise hold the machine forever).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What stopping the processes took.
#[derive(Debug, PartialEq, Eq)]
pub struct StopReport {
    /// Processes that were still running when the grace period ran out.
    pub killed: bool,
    /// Processes that outlived even SIGKILL's wait.
    pub survivors: bool,
}

/// Signals every process but PID 1 (`kill(-1)`) with SIGTERM, reaps until none is left or
/// `grace` runs out, then does the same with SIGKILL.
pub fn stop_processes(signals: Option<&mut Signals>, grace: Duration) -> StopReport {
    let mut signals = signals;
    log::info!(
        "stopping processes: SIGTERM, then SIGKILL after {} ms",
        grace.as_millis()
    );
    if !signal_all_and_wait(Signal::SIGTERM, grace, signals.as_deref_mut()) {
        log::warn!(
            "processes still running after {} ms: sending SIGKILL",
            grace.as_millis()
        );
        let gone = signal_all_and_wait(Signal::SIGKILL, KILL_WAIT, signals);
        if !gone {
            log::error!("processes survived SIGKILL; going on without them");
        }
        return StopReport {
            killed: true,
            survivors: !gone,
        };
    }
    StopReport {
        killed: false,
        survivors: false,
    }
}

/// Sends `signal` to all processes, then waits up to `limit` for the last child to be
/// reaped. True when none is left.
fn signal_all_and_wait(signal: Signal, limit: Duration, mut signals: Option<&mut Signals>) -> bool {
    if let Err(e) = kill(Pid::from_raw(-1), signal) {
        // ESRCH: there was nobody to signal.
        if e != nix::errno::Errno::ESRCH {
            log::warn!("kill(-1, {signal}) failed: {e}");
        }
    }
    let deadline = Instant::now() + limit;
    loop {
        if reap_all().no_children {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // Wake on the next SIGCHLD, or every 50 ms where there is no signalfd to wait on
        // (the emergency path).
        let step = left.min(Duration::from_millis(50));
        match signals.as_deref_mut() {
            Some(sigs) => {
                let mut fds = [PollFd::new(sigs.as_fd(), PollFlags::POLLIN)];
                let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
                let _ = poll(&mut fds, timeout);
                sigs.drain();
            }
            None => std::thread::sleep(step),
        }
    }
}

/// Syncs and unmounts everything but the root, logging each step.
pub fn sync_and_unmount() {
    log::info!("syncing filesystems");
    nix::unistd::sync();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let plan = unmount_plan(&parse_mountinfo(&mountinfo));
    for (target, outcome) in unmount_all(&plan) {
        match outcome {
            UnmountOutcome::Unmounted => log::debug!("unmounted {}", target.display()),
            UnmountOutcome::RemountedReadOnly => {
                log::info!("{} is busy: remounted read-only", target.display())
            }
            UnmountOutcome::Failed(e) => {
                log::warn!("cannot unmount {}: {e}", target.display())
            }
        }
    }
    nix::unistd::sync();
    log::info!("filesystems unmounted");
}

/// Runs the whole shutdown and ends the machine. Never returns.
pub fn shutdown(action: Action, signals: Option<&mut Signals>, grace: Duration) -> ! {
    log::info!("shutdown: {}", action.describe());
    stop_processes(signals, grace);
    sync_and_unmount();
    let mode = match action {
        Action::PowerOff => RebootMode::RB_POWER_OFF,
        Action::Reboot => RebootMode::RB_AUTOBOOT,
    };
    log::info!("{}: now", action.describe());
    // On success reboot(2) does not return (in a PID namespace the kernel ends this
    // process with SIGINT for power-off and SIGHUP for reboot).
    let err = match reboot(mode) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    log::error!("reboot(2) failed: {err}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The unrecoverable case: say why, give a person a moment to read it, then reboot in
/// order. Never returns.
pub fn emergency(reason: &str) -> ! {
    log::error!("unrecoverable: {reason}; rebooting in 5 s");
    std::thread::sleep(Duration::from_secs(5));
    shutdown(Action::Reboot, None, Duration::from_secs(5))
}
