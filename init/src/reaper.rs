//! Reaping: PID 1 is the parent of every orphan, and must collect each exit status or the
//! process table fills with zombies.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// What a reaping pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// `(pid, status)` of each child collected, for whoever owns the pid.
    pub exited: Vec<(Pid, WaitStatus)>,
    /// True when the caller has no children left at all.
    pub no_children: bool,
}

/// Collects every child that has exited, without blocking. Call it on each SIGCHLD: one
/// signal may stand for many exits, so this drains until the kernel has nothing more.
pub fn reap_all() -> Reaped {
    let mut reaped = Reaped::default();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return reaped,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    reaped.exited.push((pid, status));
                }
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => {
                reaped.no_children = true;
                return reaped;
            }
            Err(e) => {
                log::warn!("waitpid failed: {e}");
                return reaped;
            }
        }
    }
}
