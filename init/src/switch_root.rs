//! Leaving the initramfs: the kernel's `rootfs` is the root of the mount tree, and
//! `pivot_root(2)` refuses to move it (EINVAL), which containers need to leave the
//! host's root behind. So, when `/` is the initramfs, PID 1 copies it into a fresh
//! tmpfs, frees the copy it came from, moves the tmpfs onto `/` and chroots into it,
//! as busybox's `switch_root` and LinuxKit's init do. From then on `/` is an ordinary
//! mount that containers can pivot away from.
//!
//! This runs first, before anything else is mounted, so the tree holds nothing but the
//! archive's files.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::stat::{Mode, SFlag};

/// Where the tmpfs is assembled before it becomes `/`.
const NEW_ROOT: &str = "/.berth-root";

/// The binary the kernel started as PID 1 (`berth build` puts berth-init there). It is
/// not copied: PID 1 runs from it, which keeps its pages in memory after the initramfs
/// is emptied, and nothing starts it again; a copy would hold a second
/// binary's worth of memory for good.
const RUNNING_INIT: &str = "/init";

const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("mounting a tmpfs on {NEW_ROOT}: {0}")]
    Mount(nix::Error),
    #[error("copying {path} into the new root: {source}")]
    Copy { path: PathBuf, source: io::Error },
    #[error("moving the new root onto /: {0}")]
    Move(nix::Error),
    #[error("chroot into the new root: {0}")]
    Chroot(nix::Error),
}

/// Whether `/` is the initramfs the kernel started us from: a ramfs or tmpfs root, at a
/// moment when nothing is mounted on it yet (no `/proc`), and not already switched.
///
/// The `/proc` test is what keeps a berth-init started as PID 1 of a new PID namespace
/// (which sees its host's mounts, `/proc` among them) from copying and emptying a root
/// that merely happens to be a tmpfs.
pub fn root_is_initramfs() -> bool {
    if Path::new("/proc/self").exists() || Path::new(NEW_ROOT).exists() {
        return false;
    }
    match nix::sys::statfs::statfs("/") {
        Ok(s) => {
            let magic = s.filesystem_type().0;
            magic == RAMFS_MAGIC || magic == TMPFS_MAGIC
        }
        Err(_) => false,
    }
}

/// Copies `/` into a tmpfs (all but [`RUNNING_INIT`]), frees the original files and makes
/// the tmpfs the root. Returns the number of entries copied.
pub fn switch_to_tmpfs_root() -> Result<usize, SwitchError> {
    fs::create_dir(NEW_ROOT).map_err(|source| SwitchError::Copy {
        path: NEW_ROOT.into(),
        source,
    })?;
    nix::mount::mount(
        Some("rootfs"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(SwitchError::Mount)?;
    let copied = match copy_tree(Path::new("/"), Path::new(NEW_ROOT)) {
        Ok(n) => n,
        Err(e) => {
            // Give the memory of a half-filled copy back; the initramfs root stays.
            let _ = nix::mount::umount(NEW_ROOT);
            let _ = fs::remove_dir(NEW_ROOT);
            return Err(e);
        }
    };
    // Free the initramfs copy; a failure here only costs memory.
    if let Ok(entries) = fs::read_dir("/") {
        for e in entries.flatten() {
            let p = e.path();
            if p != Path::new(NEW_ROOT) {
                let _ = if p.is_dir() && !p.is_symlink() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
    }
    nix::unistd::chdir(NEW_ROOT).map_err(SwitchError::Move)?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(SwitchError::Move)?;
    nix::unistd::chroot(".").map_err(SwitchError::Chroot)?;
    nix::unistd::chdir("/").map_err(SwitchError::Chroot)?;
    Ok(copied)
}

fn copy_tree(from: &Path, to: &Path) -> Result<usize, SwitchError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SwitchError::Copy { path, source }
    };
    let mut count = 0;
    for entry in fs::read_dir(from).map_err(err(from))? {
        let entry = entry.map_err(err(from))?;
        let src = entry.path();
        if src == Path::new(NEW_ROOT) || src == Path::new(RUNNING_INIT) {
            continue;
        }
        let dst = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&src).map_err(err(&src))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::create_dir(&dst).map_err(err(&dst))?;
            count += copy_tree(&src, &dst)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(err(&dst))?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&src).map_err(err(&src))?;
            std::os::unix::fs::symlink(target, &dst).map_err(err(&dst))?;
        } else if kind.is_file() {
            fs::copy(&src, &dst).map_err(err(&src))?;
        } else if kind.is_char_device() || kind.is_block_device() {
            let sflag = if kind.is_char_device() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            nix::sys::stat::mknod(
                &dst,
                sflag,
                Mode::from_bits_truncate(meta.mode() & 0o7777),
                meta.rdev(),
            )
            .map_err(|e| SwitchError::Copy {
                path: dst.clone(),
                source: e.into(),
            })?;
        }
        if !kind.is_symlink() {
            let _ = nix::unistd::chown(
                &dst,
                Some(nix::unistd::Uid::from_raw(meta.uid())),
                Some(nix::unistd::Gid::from_raw(meta.gid())),
            );
        }
        count += 1;
    }
    Ok(count)
}
