//! The early mounts, and the unmount order at shutdown.
//!
//! [`BOOT_MOUNTS`] is a plain table, applied in order by [`mount_all`]; a mount that fails
//! is logged and boot goes on, since most of the system still works without, say,
//! `/dev/shm`. At shutdown [`unmount_plan`] reads `/proc/self/mountinfo` and returns the
//! mount points deepest-last-mounted first, which [`unmount_all`] unmounts, or remounts
//! read-only where a filesystem is still busy.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// One filesystem PID 1 mounts at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: &'static str,
    /// Mode for the mount point if PID 1 has to create it.
    pub dir_mode: u32,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The mounts of a berth host, in order (each target's parent comes first).
pub const BOOT_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        dir_mode: 0o555,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        dir_mode: 0o555,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: "mode=0755",
        dir_mode: 0o755,
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        // gid 5 is "tty" by convention; ptmxmode lets unprivileged users open pts/ptmx.
        data: "newinstance,ptmxmode=0666,mode=0620,gid=5",
        dir_mode: 0o755,
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
        dir_mode: 0o1777,
    },
    MountSpec {
        source: "run",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=0755",
        dir_mode: 0o755,
    },
    MountSpec {
        source: "tmp",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
        dir_mode: 0o1777,
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        // nsdelegate: a container's cgroup namespace is a delegation boundary.
        data: "nsdelegate",
        dir_mode: 0o755,
    },
    MountSpec {
        // The image store and container state, memory-backed until a state disk.
        source: "berth",
        target: crate::images::STORE_DIR,
        fstype: "tmpfs",
        flags: MsFlags::empty(),
        data: "mode=0700",
        dir_mode: 0o700,
    },
];

/// Why a mount step failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create mount point {target}: {source}")]
    CreateTarget {
        target: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot mount {fstype} on {target}: {source}")]
    Mount {
        fstype: &'static str,
        target: PathBuf,
        source: Errno,
    },
    #[error("cannot read {path}: {source}")]
    ReadControllers {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enable cgroup controllers {controllers:?} in {path}: {source}")]
    EnableControllers {
        path: PathBuf,
        controllers: String,
        source: std::io::Error,
    },
}

/// Mounts one filesystem, creating its mount point. An already-mounted target (the kernel
/// may have mounted devtmpfs itself) counts as success.
pub fn mount_one(spec: &MountSpec, root: &Path) -> Result<(), MountError> {
    let target = under_root(root, spec.target);
    if let Err(source) = std::fs::create_dir_all(&target) {
        return Err(MountError::CreateTarget { target, source });
    }
    if spec.fstype == "devtmpfs" && is_mount_point(&target) {
        return Ok(());
    }
    let data = (!spec.data.is_empty()).then_some(spec.data);
    mount(
        Some(spec.source),
        &target,
        Some(spec.fstype),
        spec.flags,
        data,
    )
    .map_err(|source| MountError::Mount {
        fstype: spec.fstype,
        target,
        source,
    })
}

/// Mounts [`BOOT_MOUNTS`] under `root` (`/` on a real boot), logging each, and returns how
/// many failed.
pub fn mount_all(root: &Path) -> usize {
    let mut failures = 0;
    for spec in BOOT_MOUNTS {
        match mount_one(spec, root) {
            Ok(()) => log::debug!("mounted {} on {}", spec.fstype, spec.target),
            Err(e) => {
                failures += 1;
                log::error!("{e}");
            }
        }
    }
    add_dev_links(&under_root(root, "/dev"));
    failures
}

/// The conventional /dev symlinks that devtmpfs does not make.
fn add_dev_links(dev: &Path) {
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let link = dev.join(name);
        match std::os::unix::fs::symlink(target, &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => log::warn!("cannot create {}: {e}", link.display()),
        }
    }
}

/// Enables every controller the cgroup2 root offers for its children, so that container
/// cgroups can set memory, cpu, pids and io limits. Returns the controllers enabled.
pub fn enable_cgroup_controllers(cgroup_root: &Path) -> Result<String, MountError> {
    let controllers_path = cgroup_root.join("cgroup.controllers");
    let available = std::fs::read_to_string(&controllers_path).map_err(|source| {
        MountError::ReadControllers {
            path: controllers_path,
            source,
        }
    })?;
    let request = subtree_control_request(&available);
    if request.is_empty() {
        return Ok(String::new());
    }
    let path = cgroup_root.join("cgroup.subtree_control");
    std::fs::write(&path, &request).map_err(|source| MountError::EnableControllers {
        path,
        controllers: request.clone(),
        source,
    })?;
    Ok(available.trim().to_owned())
}

/// `"cpu io memory"` → `"+cpu +io +memory"`.
pub fn subtree_control_request(available: &str) -> String {
    available
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn under_root(root: &Path, absolute: &str) -> PathBuf {
    root.join(absolute.trim_start_matches('/'))
}

/// Whether `path` is a mount point: its device differs from its parent's. (Bind mounts of
/// the same filesystem are not detected, which is fine for the uses here.)
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(parent)) = (std::fs::metadata(path), path.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != me.dev())
}

/// One line of `/proc/self/mountinfo`, as much as shutdown needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub fstype: String,
}

/// Parses mountinfo text (see proc(5)): field 5 is the mount point, with spaces and other
/// special bytes octal-escaped; after the ` - ` separator comes the filesystem type.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            let fstype = after.split(' ').next()?;
            Some(MountInfo {
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                fstype: fstype.to_owned(),
            })
        })
        .collect()
}

/// Undoes the kernel's `\NNN` escaping of mount paths.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points to unmount at shutdown, in order: the reverse of mount order, so that
/// a mount goes before the one it sits on. The root itself is left; it cannot be unmounted.
pub fn unmount_plan(mounts: &[MountInfo]) -> Vec<PathBuf> {
    mounts
        .iter()
        .rev()
        .filter(|m| m.mount_point != Path::new("/"))
        .map(|m| m.mount_point.clone())
        .collect()
}

/// What happened to one mount at shutdown.
#[derive(Debug, PartialEq, Eq)]
pub enum UnmountOutcome {
    Unmounted,
    RemountedReadOnly,
    Failed(Errno),
}

/// Unmounts each path of `plan` in order; a busy filesystem is remounted read-only so that
/// its data is safe before reboot. Returns each path's outcome.
pub fn unmount_all(plan: &[PathBuf]) -> Vec<(PathBuf, UnmountOutcome)> {
    plan.iter()
        .map(|target| {
            let outcome = match umount2(target.as_path(), MntFlags::empty()) {
                Ok(()) => UnmountOutcome::Unmounted,
                Err(Errno::EBUSY) => match mount(
                    None::<&str>,
                    target.as_path(),
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                ) {
                    Ok(()) => UnmountOutcome::RemountedReadOnly,
                    Err(e) => UnmountOutcome::Failed(e),
                },
                Err(e) => UnmountOutcome::Failed(e),
            };
            (target.clone(), outcome)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_mounts_put_parents_first() {
        for (i, spec) in BOOT_MOUNTS.iter().enumerate() {
            let parent = Path::new(spec.target).parent().unwrap_or(Path::new("/"));
            // Parents that are plain directories of the root filesystem or sysfs.
            if [Path::new("/"), Path::new("/sys/fs"), Path::new("/var/lib")].contains(&parent) {
                continue;
            }
            let parent_index = BOOT_MOUNTS
                .iter()
                .position(|m| Path::new(m.target) == parent);
            assert!(
                parent_index.is_some_and(|p| p < i),
                "{} is mounted before its parent",
                spec.target
            );
        }
        let cg = BOOT_MOUNTS.iter().position(|m| m.fstype == "cgroup2");
        let sys = BOOT_MOUNTS.iter().position(|m| m.target == "/sys");
        assert!(cg > sys);
    }

    #[test]
    fn controllers_request() {
        assert_eq!(
            subtree_control_request("cpuset cpu io memory pids\n"),
            "+cpuset +cpu +io +memory +pids"
        );
        assert_eq!(subtree_control_request("\n"), "");
    }

    const MOUNTINFO: &str = "\
1 1 0:2 / / rw - rootfs rootfs rw
22 1 0:21 / /proc rw,nosuid,nodev,noexec - proc proc rw
23 1 0:22 / /sys rw - sysfs sysfs rw
24 1 0:5 / /dev rw - devtmpfs devtmpfs rw
25 24 0:23 / /dev/pts rw - devpts devpts rw
26 23 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
27 1 0:25 / /mnt/with\\040space rw - tmpfs tmp rw
";

    #[test]
    fn mountinfo_parses_and_unescapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 7);
        assert_eq!(m[1].mount_point, Path::new("/proc"));
        assert_eq!(m[1].fstype, "proc");
        assert_eq!(m[6].mount_point, Path::new("/mnt/with space"));
        assert!(parse_mountinfo("garbage line\n\n").is_empty());
    }

    #[test]
    fn unmount_plan_is_reverse_and_keeps_root() {
        let plan = unmount_plan(&parse_mountinfo(MOUNTINFO));
        let names: Vec<_> = plan.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "/mnt/with space",
                "/sys/fs/cgroup",
                "/dev/pts",
                "/dev",
                "/sys",
                "/proc"
            ]
        );
    }
}
