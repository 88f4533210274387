//! Building the container's filesystem view, in the new mount namespace, before
//! `pivot_root`.
//!
//! Every mount target is resolved by fd with `openat2(RESOLVE_IN_ROOT)` relative to
//! the container's root and mounted through its `/proc/self/fd/N` name, never by a
//! path string joined onto the rootfs (the CVE-2021-30465 class). `/proc`, `/dev`
//! and `/sys` and the paths below them must not be symlinks at all
//! (`RESOLVE_NO_SYMLINKS`): an image that makes one a symlink is refused. Volume and
//! `/etc` targets may pass through symlinks, which then resolve inside the rootfs.
//! Missing targets are created inside the rootfs, one component at a time, by fd.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, ResolveFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{makedev, Mode, SFlag};

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("the image's {path} is a symlink (or passes through one); refusing to mount over it")]
    Symlink { path: String },
    #[error("resolving {path} inside the container: {source}")]
    Resolve { path: String, source: io::Error },
    #[error("creating {path} inside the container: {source}")]
    Create { path: String, source: io::Error },
    #[error("mounting {what} on {path}: {source}")]
    Mount {
        what: String,
        path: String,
        source: nix::Error,
    },
    #[error("pivot_root into {path}: {source}")]
    Pivot { path: PathBuf, source: nix::Error },
}

/// How a path inside the container may be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// No symlinks at all: for `/proc`, `/dev`, `/sys` and the paths under them.
    NoSymlinks,
    /// Symlinks allowed, confined to the rootfs; never magic links.
    InRoot,
}

impl Resolve {
    pub(crate) fn flags(self) -> ResolveFlag {
        match self {
            Resolve::NoSymlinks => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS,
            Resolve::InRoot => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        }
    }
}

/// A container path relative to the rootfs, for `*at()` calls: `.` for `/`.
pub(crate) fn cstr(path: &str) -> CString {
    // Callers only pass paths validated free of NUL; an empty name is harmless.
    let rel = path.trim_start_matches('/');
    CString::new(if rel.is_empty() { "." } else { rel }).unwrap_or_default()
}

/// The name through which the kernel resolves an open fd to its exact object.
pub fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens `path` (relative to `root`) as an `O_PATH` fd.
pub fn open(
    root: BorrowedFd<'_>,
    path: &str,
    how: Resolve,
    dir: bool,
) -> Result<OwnedFd, RootfsError> {
    let mut flags = OFlag::O_PATH;
    if dir {
        flags |= OFlag::O_DIRECTORY;
    }
    sys::openat2(root, &cstr(path), flags, how.flags()).map_err(|source| {
        if how == Resolve::NoSymlinks && source.raw_os_error() == Some(libc::ELOOP) {
            RootfsError::Symlink { path: path.into() }
        } else {
            RootfsError::Resolve {
                path: path.into(),
                source,
            }
        }
    })
}

/// Opens regular file `path` for reading, resolved inside the root (symlinks
/// confined, no magic links). `O_NONBLOCK` and the type check mean that an image
/// shipping a FIFO or a device there gets an error instead of a setup that hangs.
pub fn open_regular(root: BorrowedFd<'_>, path: &str) -> io::Result<std::fs::File> {
    let file = sys::openat2(
        root,
        &cstr(path),
        OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
        Resolve::InRoot.flags(),
    )
    .map(std::fs::File::from)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

fn split_parent(path: &str) -> (&str, &str) {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => ("", trimmed),
    }
}

fn is_enoent(e: &RootfsError) -> bool {
    matches!(e, RootfsError::Resolve { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

/// Opens directory `path`, creating it and any missing parents inside the rootfs.
pub fn ensure_dir(root: BorrowedFd<'_>, path: &str, how: Resolve) -> Result<OwnedFd, RootfsError> {
    match open(root, path, how, true) {
        Err(e) if is_enoent(&e) => {}
        other => return other,
    }
    let (parent, name) = split_parent(path);
    let parent_fd = if parent.is_empty() {
        open(root, ".", how, true)?
    } else {
        ensure_dir(root, parent, how)?
    };
    match nix::sys::stat::mkdirat(
        Some(parent_fd.as_raw_fd()),
        name,
        Mode::from_bits_truncate(0o755),
    ) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => {
            return Err(RootfsError::Create {
                path: path.into(),
                source: e.into(),
            })
        }
    }
    open(root, path, how, true)
}

/// Opens file `path`, creating an empty one (and missing parents) if needed.
pub fn ensure_file(root: BorrowedFd<'_>, path: &str, how: Resolve) -> Result<OwnedFd, RootfsError> {
    match open(root, path, how, false) {
        Err(e) if is_enoent(&e) => {}
        other => return other,
    }
    let (parent, name) = split_parent(path);
    let parent_fd = ensure_dir(root, parent, how)?;
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW;
    match nix::fcntl::openat(
        Some(parent_fd.as_raw_fd()),
        name,
        flags | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    ) {
        Ok(fd) => {
            let _ = nix::unistd::close(fd);
        }
        Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => {
            return Err(RootfsError::Create {
                path: path.into(),
                source: e.into(),
            })
        }
    }
    open(root, path, how, false)
}

fn mount_on(
    source: Option<&str>,
    target: BorrowedFd<'_>,
    target_name: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), RootfsError> {
    nix::mount::mount(source, fd_path(target).as_str(), fstype, flags, data).map_err(|source_err| {
        RootfsError::Mount {
            what: fstype.or(source).unwrap_or("bind").to_string(),
            path: target_name.into(),
            source: source_err,
        }
    })
}

/// Remounts the mount now at `path` read-only, keeping its other flags.
fn remount_readonly(
    root: BorrowedFd<'_>,
    path: &str,
    how: Resolve,
    extra: MsFlags,
) -> Result<(), RootfsError> {
    // Re-resolve: the fd taken before the bind names the covered directory, not the
    // new mount on top of it.
    let fd = open(root, path, how, false)?;
    mount_on(
        None,
        fd.as_fd(),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra,
        None,
    )
}

/// Bind-mounts host path `source` onto `path` (created as a file or a directory to
/// match), read-only if asked.
pub fn bind(
    root: BorrowedFd<'_>,
    source: &Path,
    path: &str,
    read_only: bool,
    how: Resolve,
) -> Result<(), RootfsError> {
    let source_str = source.to_string_lossy();
    let is_dir = source.is_dir();
    let target = if is_dir {
        ensure_dir(root, path, how)?
    } else {
        ensure_file(root, path, how)?
    };
    nix::mount::mount(
        Some(source),
        fd_path(target.as_fd()).as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| RootfsError::Mount {
        what: format!("bind of {source_str}"),
        path: path.into(),
        source: e,
    })?;
    if read_only {
        remount_readonly(root, path, how, MsFlags::MS_REC)?;
    }
    Ok(())
}

/// Docker's masked paths: they read as empty and, without `CAP_SYS_ADMIN`, cannot
/// be unmounted from inside.
pub const MASKED_PATHS: &[&str] = &[
    "proc/asound",
    "proc/acpi",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// The standard device nodes: name, major, minor.
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// `/proc`, `/dev` with only the standard nodes plus `pts`, `shm` and `mqueue`,
/// read-only `/sys` with the container's cgroup at `/sys/fs/cgroup`, then the masked
/// and read-only paths.
pub fn mount_system(root: BorrowedFd<'_>) -> Result<(), RootfsError> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let strict = Resolve::NoSymlinks;

    let proc_dir = ensure_dir(root, "proc", strict)?;
    mount_on(
        Some("proc"),
        proc_dir.as_fd(),
        "/proc",
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?;

    let dev = ensure_dir(root, "dev", strict)?;
    mount_on(
        Some("tmpfs"),
        dev.as_fd(),
        "/dev",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    let dev = open(root, "dev", strict, true)?;
    let dev_rw = nix::fcntl::openat(
        Some(dev.as_raw_fd()),
        ".",
        OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RootfsError::Resolve {
        path: "/dev".into(),
        source: e.into(),
    })?;
    let create_err = |name: &str, e: nix::Error| RootfsError::Create {
        path: format!("/dev/{name}"),
        source: e.into(),
    };
    for (name, major, minor) in DEVICES {
        nix::sys::stat::mknodat(
            Some(dev_rw),
            *name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        )
        .map_err(|e| create_err(name, e))?;
    }
    for (name, target) in DEV_LINKS {
        nix::unistd::symlinkat(*target, Some(dev_rw), *name).map_err(|e| create_err(name, e))?;
    }
    for name in ["pts", "shm", "mqueue"] {
        nix::sys::stat::mkdirat(Some(dev_rw), name, Mode::from_bits_truncate(0o755))
            .map_err(|e| create_err(name, e))?;
    }
    let _ = nix::unistd::close(dev_rw);
    let pts = open(root, "dev/pts", strict, true)?;
    mount_on(
        Some("devpts"),
        pts.as_fd(),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = open(root, "dev/shm", strict, true)?;
    mount_on(
        Some("shm"),
        shm.as_fd(),
        "/dev/shm",
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )?;
    let mqueue = open(root, "dev/mqueue", strict, true)?;
    mount_on(
        Some("mqueue"),
        mqueue.as_fd(),
        "/dev/mqueue",
        Some("mqueue"),
        nosuid_nodev_noexec,
        None,
    )?;

    let sys_dir = ensure_dir(root, "sys", strict)?;
    mount_on(
        Some("sysfs"),
        sys_dir.as_fd(),
        "/sys",
        Some("sysfs"),
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    )?;
    if let Ok(cg) = open(root, "sys/fs/cgroup", strict, true) {
        mount_on(
            Some("cgroup2"),
            cg.as_fd(),
            "/sys/fs/cgroup",
            Some("cgroup2"),
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    mask_paths(root)
}

fn mask_paths(root: BorrowedFd<'_>) -> Result<(), RootfsError> {
    let strict = Resolve::NoSymlinks;
    let null = open(root, "dev/null", strict, false)?;
    for path in MASKED_PATHS {
        let target = match open(root, path, strict, false) {
            Ok(fd) => fd,
            Err(e) if is_enoent(&e) => continue,
            Err(e) => return Err(e),
        };
        let is_dir = nix::sys::stat::fstat(target.as_raw_fd())
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
            .unwrap_or(false);
        if is_dir {
            mount_on(
                Some("tmpfs"),
                target.as_fd(),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )?;
        } else {
            mount_on(
                Some(fd_path(null.as_fd()).as_str()),
                target.as_fd(),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    for path in READONLY_PATHS {
        let target = match open(root, path, strict, false) {
            Ok(fd) => fd,
            Err(e) if is_enoent(&e) => continue,
            Err(e) => return Err(e),
        };
        let name = fd_path(target.as_fd());
        mount_on(
            Some(name.as_str()),
            target.as_fd(),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        remount_readonly(
            root,
            path,
            strict,
            MsFlags::MS_REC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    Ok(())
}

/// A tmpfs at `path` (mode 1777, nosuid, nodev).
pub fn mount_tmpfs(root: BorrowedFd<'_>, path: &str) -> Result<(), RootfsError> {
    let dir = ensure_dir(root, path, Resolve::InRoot)?;
    mount_on(
        Some("tmpfs"),
        dir.as_fd(),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
}

/// Makes `rootfs` the root: `pivot_root(".", ".")` stacks the old root on top of the
/// new one, and the lazy unmount then drops it, so nothing of the host stays
/// reachable by path.
pub fn pivot(rootfs: &Path, root: BorrowedFd<'_>) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Pivot {
        path: rootfs.to_path_buf(),
        source,
    };
    nix::unistd::fchdir(root.as_raw_fd()).map_err(err)?;
    nix::unistd::pivot_root(".", ".").map_err(err)?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(err)?;
    nix::unistd::chdir("/").map_err(err)
}

/// Remounts the container's root read-only (after the pivot).
pub fn root_readonly() -> Result<(), RootfsError> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|source| RootfsError::Mount {
        what: "read-only remount".into(),
        path: "/".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        assert_eq!(split_parent("etc/hosts"), ("etc", "hosts"));
        assert_eq!(split_parent("/a/b/c/"), ("/a/b", "c"));
        assert_eq!(split_parent("proc"), ("", "proc"));
    }
}
