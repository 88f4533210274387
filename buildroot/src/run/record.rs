//! What `berth run` records about a container it runs, for `berth ps`, `berth stop`
//! and `berth logs`: `<state>/containers/<name>/run.json`, written when the program
//! runs and again when it exits.
//!
//! A process is named by its pid *and* its start time (field 22 of `/proc/PID/stat`,
//! in clock ticks since boot): a pid alone may be another process's once the
//! container has been reaped, the pair never.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record's file name inside the container's state directory.
pub const FILE: &str = "run.json";
/// The detached container's output, inside its state directory.
pub const LOG: &str = "log";

/// A process, as it can be found again without mistaking another for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessId {
    /// The process `pid` as it is now, if it exists.
    pub fn of(pid: u32) -> Option<ProcessId> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(ProcessId {
            pid,
            start_time: start_time(&stat)?,
        })
    }

    /// Whether this very process still exists (a zombie counts until it is reaped).
    pub fn alive(&self) -> bool {
        ProcessId::of(self.pid) == Some(*self)
    }
}

/// The start time from a `/proc/PID/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields 3.. follow; the start time is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// One container that `berth run` started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub image: String,
    /// The command as given on the command line (empty: the image's).
    pub command: Vec<String>,
    /// The container's first process, on the host.
    pub container: ProcessId,
    /// The process that waits for the container: `berth run` itself, or the detached
    /// container's monitor. When it is gone before the container, nobody will reap
    /// the container, record its exit or remove its cgroup: `berth stop` does.
    pub monitor: ProcessId,
    pub detached: bool,
    /// Started with --rm: its state goes when it exits.
    pub remove: bool,
    /// The signal that asks it to stop: the image's STOPSIGNAL, else SIGTERM.
    #[serde(default = "default_stop_signal")]
    pub stop_signal: i32,
    /// Seconds since the epoch.
    pub created: u64,
    /// The exit code, once the monitor has seen it.
    pub exit_code: Option<i32>,
}

fn default_stop_signal() -> i32 {
    libc::SIGTERM
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn path(container_dir: &Path) -> PathBuf {
    container_dir.join(FILE)
}

/// Where a container is in its life, as `berth ps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Exited(i32),
    /// Its process is gone and nobody saw how it ended (its `berth run` was killed).
    Gone,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Running => write!(f, "running"),
            Status::Exited(code) => write!(f, "exited ({code})"),
            Status::Gone => write!(f, "exited (unknown)"),
        }
    }
}

impl Record {
    pub fn status(&self) -> Status {
        match self.exit_code {
            Some(code) => Status::Exited(code),
            None if self.container.alive() => Status::Running,
            None => Status::Gone,
        }
    }

    /// Writes the record atomically (a reader never sees half of it).
    pub fn save(&self, container_dir: &Path) -> std::io::Result<()> {
        let tmp = container_dir.join(format!(".{FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path(container_dir))
    }

    pub fn load(container_dir: &Path) -> std::io::Result<Record> {
        let text = std::fs::read_to_string(path(container_dir))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        assert_eq!(start_time(stat), Some(987654));
        assert_eq!(start_time("1 (x) S 0"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert!(me.alive());
        let reused = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(
            !reused.alive(),
            "same pid, other start time: another process"
        );
    }
}
