//! Container cgroups on the v2 hierarchy: one leaf per container under `berth/`.
//!
//! ```text
//! <cgroup2 mount>/                 /sys/fs/cgroup on a berth host
//! └── berth/                       controllers enabled for its children
//!     └── <container name>/        the leaf: limits, memory.events, cgroup.kill
//! ```
//!
//! The leaf is created and its limits written before the container exists; the
//! process is then born inside it with `clone3(CLONE_INTO_CGROUP)` (no write to
//! `cgroup.procs`, no window outside the limits).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::spec::Limits;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 hierarchy is mounted (looked for a cgroup2 entry in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup`")]
    NoHierarchy,
    #[error("the {controller} controller is not available in the cgroup v2 hierarchy at {mount} (it has: {available}); on a hybrid host it is still bound to cgroup v1, so {what} cannot be enforced: limits need a host booted with pure cgroup v2 (systemd.unified_cgroup_hierarchy=1)")]
    MissingController {
        controller: &'static str,
        mount: PathBuf,
        available: String,
        what: &'static str,
    },
    #[error("creating cgroup {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("removing cgroup {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

/// The first cgroup2 mount in `mountinfo`, preferring `/sys/fs/cgroup`.
pub fn find_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    let mounts: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next()? == "cgroup2").then(|| pre.split(' ').nth(4))?
        })
        .collect();
    let pick = mounts
        .iter()
        .find(|m| **m == "/sys/fs/cgroup")
        .or_else(|| mounts.first())?;
    Some(PathBuf::from(*pick))
}

/// The parent of all container cgroups.
#[derive(Debug, Clone)]
pub struct CgroupParent {
    mount: PathBuf,
    dir: PathBuf,
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut f = File::options().write(true).open(path).map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

impl CgroupParent {
    /// Finds the cgroup2 mount and prepares `<mount>/berth` with the controllers that
    /// `limits` need. A missing controller is an error only if a limit needs it.
    pub fn prepare(limits: &Limits) -> Result<CgroupParent, CgroupError> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mount = find_v2_mount(&info).ok_or(CgroupError::NoHierarchy)?;
        CgroupParent::prepare_at(&mount, limits)
    }

    pub fn prepare_at(mount: &Path, limits: &Limits) -> Result<CgroupParent, CgroupError> {
        let available =
            std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| available.split_whitespace().any(|a| a == c);
        let needed: [(&'static str, bool, &'static str); 3] = [
            ("memory", limits.memory.is_some(), "a memory limit"),
            ("cpu", limits.cpus.is_some(), "a CPU limit"),
            ("pids", limits.pids.is_some(), "a pids limit"),
        ];
        for (controller, wanted, what) in needed {
            if wanted && !has(controller) {
                return Err(CgroupError::MissingController {
                    controller,
                    mount: mount.to_path_buf(),
                    available: if available.trim().is_empty() {
                        "none".into()
                    } else {
                        available.trim().to_string()
                    },
                    what,
                });
            }
        }
        let dir = mount.join("berth");
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Create { path: dir, source }),
        }
        // Enable what exists; a controller missing here only matters for a limit that
        // needs it, checked above.
        for controller in ["memory", "cpu", "pids", "io"] {
            if has(controller) {
                let enable = format!("+{controller}");
                write_file(&mount.join("cgroup.subtree_control"), &enable)?;
                write_file(&dir.join("cgroup.subtree_control"), &enable)?;
            }
        }
        Ok(CgroupParent {
            mount: mount.to_path_buf(),
            dir,
        })
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The leaf of container `name`, if it exists.
    pub fn existing_leaf(&self, name: &str) -> Option<Leaf> {
        let path = self.dir.join(name);
        Leaf::open(path).ok()
    }

    /// Creates the leaf for container `name`, removing a stale one left by a crash.
    pub fn create_leaf(&self, name: &str) -> Result<Leaf, CgroupError> {
        let path = self.dir.join(name);
        if let Err(e) = std::fs::create_dir(&path) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(CgroupError::Create { path, source: e });
            }
            let stale = Leaf::open(path.clone())?;
            stale.kill();
            stale.remove()?;
            std::fs::create_dir(&path).map_err(|source| CgroupError::Create {
                path: path.clone(),
                source,
            })?;
        }
        Leaf::open(path)
    }
}

/// One container's cgroup, held open for `CLONE_INTO_CGROUP`.
#[derive(Debug)]
pub struct Leaf {
    path: PathBuf,
    dir: OwnedFd,
}

impl Leaf {
    fn open(path: PathBuf) -> Result<Leaf, CgroupError> {
        let dir = File::open(&path)
            .map(OwnedFd::from)
            .map_err(|source| CgroupError::Create {
                path: path.clone(),
                source,
            })?;
        Ok(Leaf { path, dir })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Writes the limits. Swap is turned off for a memory-limited container so that
    /// the limit is the limit.
    pub fn set_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let Some(bytes) = limits.memory {
            write_file(&self.path.join("memory.max"), &bytes.to_string())?;
            let swap = self.path.join("memory.swap.max");
            if swap.exists() {
                write_file(&swap, "0")?;
            }
        }
        if let Some(cpus) = limits.cpus {
            let period = 100_000u64;
            let quota = ((cpus * period as f64).round() as u64).max(1000);
            write_file(&self.path.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if let Some(pids) = limits.pids {
            write_file(&self.path.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup (`cgroup.procs`; none when unreadable).
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether any process is in the cgroup or below it (`cgroup.events`; assumed
    /// so when unreadable).
    pub fn populated(&self) -> bool {
        std::fs::read_to_string(self.path.join("cgroup.events"))
            .map(|e| !e.lines().any(|l| l.trim() == "populated 0"))
            .unwrap_or(true)
    }

    /// The `oom_kill` count from `memory.events` (0 when unreadable).
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.path.join("memory.events"))
            .ok()
            .and_then(|s| parse_oom_kills(&s))
            .unwrap_or(0)
    }

    /// Kills every process in the cgroup at once (`cgroup.kill`, Linux 5.14).
    pub fn kill(&self) {
        if let Err(e) = write_file(&self.path.join("cgroup.kill"), "1") {
            log::debug!("{e}");
        }
    }

    /// Removes the cgroup; it must be empty. Once a container's PID 1 is reaped the
    /// kernel has already ended every process of its PID namespace, so this normally
    /// succeeds at once; if not, it kills what is left and retries for at most
    /// 50 × 2 ms, a bound that matters because PID 1 calls this. A leaf that stays
    /// is an error for the caller to log; [`CgroupParent::create_leaf`] clears it on
    /// the next start.
    pub fn remove(self) -> Result<(), CgroupError> {
        let mut last = None;
        for attempt in 0..50 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    if attempt == 0 {
                        self.kill();
                    }
                    last = Some(e);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        Err(CgroupError::Remove {
            path: self.path.clone(),
            source: last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)),
        })
    }
}

pub fn parse_oom_kills(events: &str) -> Option<u64> {
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      40 25 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            find_v2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "40 25 0:35 / /mnt/x rw - cgroup2 cgroup2 rw\n\
                    41 25 0:36 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(find_v2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(find_v2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn oom_kill_count() {
        let ev = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(ev), Some(1));
        assert_eq!(parse_oom_kills("max 1\n"), None);
    }
}
