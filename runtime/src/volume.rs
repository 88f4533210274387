//! Named volumes: created on first use and seeded from the image, as Docker does.
//!
//! When a container first mounts a named volume that does not exist yet and its
//! image has a directory at the mount target, the volume starts as a copy of that
//! directory: its files, directories and symlinks with their modes and owners, and
//! the directory's own mode and owner (so that an image whose `/var/lib/db` belongs
//! to its `db` user gets a volume that user can write). Device nodes, FIFOs and
//! sockets are not copied, and hard links become separate files.
//!
//! The copy runs in the container's child process, which reads the image, and is
//! built under a temporary name beside the volume, then renamed into place without
//! replacing anything: a start killed halfway leaves no half-seeded volume, and of
//! two containers seeding the same new volume at once, one copy wins whole. A copy
//! left by a start killed halfway is removed by the next seeding, once it is older than
//! any setup can live ([`ORPHAN_AGE`]).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, RenameFlags, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use crate::sys;

/// Deeper trees than this are refused rather than copied (a child's stack is finite).
const MAX_DEPTH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("creating volume {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("seeding volume {volume} from the image's {entry}: {source}")]
    Seed {
        volume: String,
        entry: String,
        source: io::Error,
    },
    #[error(
        "seeding volume {volume}: the image's {target} is more than {MAX_DEPTH} directories deep"
    )]
    TooDeep { volume: String, target: String },
}

/// Makes sure the named volume at `dir` exists. If it does not, creates it: as a
/// copy of `target` inside the rootfs `root` when the image has a directory there,
/// else empty.
///
/// Called on the bare overlay, before anything is mounted inside it, and the lookups
/// never cross a mount (`RESOLVE_NO_XDEV`): an image whose target is a symlink to
/// `/proc` or `/sys` cannot get the kernel's files copied to the host.
pub fn ensure(root: BorrowedFd<'_>, dir: &Path, target: &str) -> Result<(), VolumeError> {
    use std::os::unix::fs::DirBuilderExt;
    let create_err = |source: io::Error| VolumeError::Create {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        // A symlink planted here would point the bind mount anywhere on the host.
        Ok(_) => return Err(create_err(io::Error::from_raw_os_error(libc::ENOTDIR))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(create_err(e)),
    }
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(create_err(io::ErrorKind::InvalidInput.into()));
    };
    // The container's setup runs with umask 0: every mode here is explicit.
    let mkdir = |path: &Path, mode: u32, recursive: bool| {
        std::fs::DirBuilder::new()
            .mode(mode)
            .recursive(recursive)
            .create(path)
    };
    mkdir(parent, 0o755, true).map_err(create_err)?;
    let image_dir = sys::openat2(
        root,
        &crate::rootfs::cstr(target),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        crate::rootfs::Resolve::InRoot.flags() | ResolveFlag::RESOLVE_NO_XDEV,
    )
    .ok();
    let Some(image_dir) = image_dir else {
        return match mkdir(dir, 0o755, false) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(create_err(e)),
            _ => Ok(()),
        };
    };
    remove_orphan_copies(parent);
    let volume = name.to_string_lossy().into_owned();
    let staging = parent.join(format!(
        "{STAGING_PREFIX}{volume}-{}",
        berth_imagefs::store::random_id()
    ));
    let copier = Copier {
        volume: &volume,
        target,
    };
    // Made here, or the error is returned before anything could remove another
    // start's staging directory of the same name.
    mkdir(&staging, 0o700, false).map_err(create_err)?;
    let seeded = File::open(&staging).map_err(create_err).and_then(|dst| {
        copier.copy_tree(image_dir.as_fd(), dst.as_fd(), 0)?;
        let top = nix::sys::stat::fstat(image_dir.as_raw_fd()).map_err(|e| create_err(e.into()))?;
        copier.copy_attributes(&top, dst.as_fd(), "")?;
        // On disk before the rename makes it the volume: after a power cut, a volume
        // that exists is never seeded again, so it must not come back half written.
        nix::unistd::syncfs(dst.as_raw_fd()).map_err(|e| create_err(e.into()))
    });
    // Whether this copy became the volume; `false`: another start renamed its own
    // copy into place first, which is as good as this one.
    let placed = seeded.and_then(|()| {
        match nix::fcntl::renameat2(None, &staging, None, dir, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => File::open(parent)
                .and_then(|p| p.sync_all())
                .map(|()| true)
                .map_err(create_err),
            Err(nix::errno::Errno::EEXIST) => Ok(false),
            Err(e) => Err(create_err(e.into())),
        }
    });
    if !matches!(placed, Ok(true)) {
        let _ = std::fs::remove_dir_all(&staging);
    }
    placed.map(drop)
}

/// How a staging copy's name starts (`.seed-VOLUME-RANDOM`); volume names cannot start
/// with a dot.
const STAGING_PREFIX: &str = ".seed-";

/// A staging copy last modified this long ago belongs to no live start: a setup that
/// has not finished within [`crate::spawn::SETUP_TIMEOUT`] is killed.
pub const ORPHAN_AGE: std::time::Duration = crate::spawn::SETUP_TIMEOUT.saturating_mul(2);

/// Removes staging copies in `volumes` whose start was killed while seeding. Best
/// effort: a copy that cannot be removed now is tried again at the next seeding.
fn remove_orphan_copies(volumes: &Path) {
    let Ok(entries) = std::fs::read_dir(volumes) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX)
        {
            continue;
        }
        // `DirEntry::metadata` is the entry itself, never what a planted symlink names. A
        // modification time in the future (a clock set back) is never old.
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|modified| {
                now.duration_since(modified)
                    .is_ok_and(|age| age > ORPHAN_AGE)
            });
        if old {
            let path = entry.path();
            let removed = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            if let Err(e) = removed {
                log::warn!(
                    "cannot remove the orphan volume copy {}: {e}",
                    path.display()
                );
            }
        }
    }
}

/// Opens `name` in `dir` for reading, never through a symlink, out of `dir` or
/// across a mount; never blocking (a FIFO where a file was is caught by the type
/// check that follows).
fn open_beneath(dir: BorrowedFd<'_>, name: &std::ffi::CStr, extra: OFlag) -> io::Result<OwnedFd> {
    sys::openat2(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | extra,
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    )
}

struct Copier<'a> {
    volume: &'a str,
    target: &'a str,
}

impl Copier<'_> {
    fn err(&self, entry: &str) -> impl Fn(io::Error) -> VolumeError + '_ {
        let entry = format!("{}/{entry}", self.target.trim_end_matches('/'));
        move |source| VolumeError::Seed {
            volume: self.volume.to_owned(),
            entry: entry.clone(),
            source,
        }
    }

    /// Copies the entries of directory `src` into directory `dst`.
    fn copy_tree(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        depth: usize,
    ) -> Result<(), VolumeError> {
        if depth > MAX_DEPTH {
            return Err(VolumeError::TooDeep {
                volume: self.volume.to_owned(),
                target: self.target.to_owned(),
            });
        }
        let listing = open_beneath(src, c".", OFlag::O_DIRECTORY)
            .and_then(|fd| nix::dir::Dir::from(fd).map_err(io::Error::from))
            .map_err(self.err(""))?;
        let names: Vec<CString> = listing
            .into_iter()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_owned())
            .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
            .collect();
        for name in names {
            let shown = String::from_utf8_lossy(name.as_bytes()).into_owned();
            let err = self.err(&shown);
            let st = nix::sys::stat::fstatat(
                Some(src.as_raw_fd()),
                name.as_c_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| err(e.into()))?;
            match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
                SFlag::S_IFDIR => {
                    nix::sys::stat::mkdirat(Some(dst.as_raw_fd()), name.as_c_str(), Mode::S_IRWXU)
                        .map_err(|e| err(e.into()))?;
                    let from = open_beneath(src, &name, OFlag::O_DIRECTORY).map_err(&err)?;
                    let to = open_beneath(dst, &name, OFlag::O_DIRECTORY).map_err(&err)?;
                    self.copy_tree(from.as_fd(), to.as_fd(), depth + 1)?;
                    // Last, so that a read-only directory is filled first.
                    let opened =
                        nix::sys::stat::fstat(from.as_raw_fd()).map_err(|e| err(e.into()))?;
                    self.copy_attributes(&opened, to.as_fd(), &shown)?;
                }
                SFlag::S_IFREG => {
                    let mut from =
                        File::from(open_beneath(src, &name, OFlag::empty()).map_err(&err)?);
                    let opened =
                        nix::sys::stat::fstat(from.as_raw_fd()).map_err(|e| err(e.into()))?;
                    // Swapped for something else since the stat: skip it, as a FIFO.
                    if opened.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
                        continue;
                    }
                    let mut to = File::from(sys::create_at(dst, &name).map_err(&err)?);
                    io::copy(&mut from, &mut to).map_err(&err)?;
                    self.copy_attributes(&opened, to.as_fd(), &shown)?;
                }
                SFlag::S_IFLNK => {
                    let link = nix::fcntl::readlinkat(Some(src.as_raw_fd()), name.as_c_str())
                        .map_err(|e| err(e.into()))?;
                    nix::unistd::symlinkat(
                        link.as_os_str(),
                        Some(dst.as_raw_fd()),
                        name.as_c_str(),
                    )
                    .map_err(|e| err(e.into()))?;
                    nix::unistd::fchownat(
                        Some(dst.as_raw_fd()),
                        name.as_c_str(),
                        Some(Uid::from_raw(st.st_uid)),
                        Some(Gid::from_raw(st.st_gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| err(e.into()))?;
                }
                // Devices, FIFOs and sockets stay behind.
                _ => {}
            }
        }
        Ok(())
    }

    /// Gives `dst` the owner and mode in `st`, the source's (owner first: `chown`
    /// clears set-id bits).
    fn copy_attributes(
        &self,
        st: &libc::stat,
        dst: BorrowedFd<'_>,
        entry: &str,
    ) -> Result<(), VolumeError> {
        let err = self.err(entry);
        nix::unistd::fchown(
            dst.as_raw_fd(),
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )
        .map_err(|e| err(e.into()))?;
        nix::sys::stat::fchmod(
            dst.as_raw_fd(),
            Mode::from_bits_truncate(st.st_mode & 0o7777),
        )
        .map_err(|e| err(e.into()))
    }
}
