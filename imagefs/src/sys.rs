//! The crate's only `unsafe` code: thin wrappers over the `*at()` family,
//! xattrs, `flock` and a read-only file mapping, each returning
//! `io::Result` and owned fds.
//!
//! Everything above this module works relative to directory fds. The one
//! call that matters most for safety is [`openat2`] with
//! `RESOLVE_IN_ROOT`: the kernel resolves `..` and symlinks as if the
//! directory fd were `/`, so no path handed to it can leave the layer root
//! (openat2(2), Linux 5.6).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub use libc::{
    mode_t, O_CLOEXEC, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_PATH, O_RDONLY, O_WRONLY,
};

/// `open_how.resolve` bits (linux/openat2.h).
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(ret: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(ret)?;
    // SAFETY: `fd` was just returned by a successful open-like syscall, so
    // it is a valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct open_how` (linux/openat2.h); libc marks its own copy
/// non-exhaustive, so the three-field v0 layout is declared here.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2(2) with the given open flags, mode and resolve flags.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: mode_t,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve,
    };
    loop {
        // SAFETY: `path` is NUL-terminated, `how` is a fully initialised
        // open_how that lives across the call, and its size is passed.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        // openat2 may fail with EAGAIN when a concurrent rename raced the
        // lookup under RESOLVE_IN_ROOT; the man page says to retry.
        if ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
            continue;
        }
        return owned(ret as libc::c_int);
    }
}

/// openat(2).
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and `dir` is a live descriptor.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | O_CLOEXEC,
            mode as libc::c_uint,
        )
    })
}

/// mkdirat(2).
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` is a live descriptor.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// mknodat(2); `mode` includes the file type bits.
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: mode_t, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` is a live descriptor.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) }).map(drop)
}

/// symlinkat(2): create `name` in `dir` pointing at `target` (never followed here).
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and `dir` is a live descriptor.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// linkat(2) without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
pub fn linkat(
    odir: BorrowedFd<'_>,
    oname: &CStr,
    ndir: BorrowedFd<'_>,
    nname: &CStr,
) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated and both fds are live.
    cvt(unsafe {
        libc::linkat(
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// unlinkat(2); `dir_entry` selects AT_REMOVEDIR.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, dir_entry: bool) -> io::Result<()> {
    let flags = if dir_entry { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `name` is NUL-terminated and `dir` is a live descriptor.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// renameat2(2); with `noreplace` an existing target fails with EEXIST.
pub fn renameat2(
    odir: BorrowedFd<'_>,
    oname: &CStr,
    ndir: BorrowedFd<'_>,
    nname: &CStr,
    noreplace: bool,
) -> io::Result<()> {
    let flags = if noreplace { libc::RENAME_NOREPLACE } else { 0 };
    // SAFETY: both names are NUL-terminated and both fds are live.
    cvt(unsafe {
        libc::renameat2(
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// fchownat(2) with AT_SYMLINK_NOFOLLOW.
pub fn lchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` is a live descriptor.
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// fchown(2).
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a live descriptor.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// fchmod(2).
pub fn fchmod(fd: BorrowedFd<'_>, mode: mode_t) -> io::Result<()> {
    // SAFETY: plain syscall on a live descriptor.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

fn timespecs(sec: i64, nsec: i64) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec as _,
        },
    ]
}

/// Set the mtime (atime left alone) of `name` in `dir`, not following symlinks.
pub fn lutimensat(dir: BorrowedFd<'_>, name: &CStr, sec: i64, nsec: i64) -> io::Result<()> {
    let ts = timespecs(sec, nsec);
    // SAFETY: `ts` is a two-element array as utimensat requires; `name` is
    // NUL-terminated and `dir` is a live descriptor.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Set the mtime (atime left alone) of an open file.
pub fn futimens(fd: BorrowedFd<'_>, sec: i64, nsec: i64) -> io::Result<()> {
    let ts = timespecs(sec, nsec);
    // SAFETY: `ts` is a two-element array as futimens requires.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

/// fsetxattr(2).
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; `value` is valid for `value.len()` bytes.
    cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// lsetxattr(2) on `name` inside `dir`, reached through `/proc/self/fd`.
///
/// There is no fd-based way to set an xattr on a symlink itself before
/// setxattrat(2) (Linux 6.13), so the parent is named by its magic link
/// and only the final, never-followed component is a plain name.
pub fn lsetxattrat(dir: BorrowedFd<'_>, name: &CStr, key: &CStr, value: &[u8]) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.to_bytes());
    let path = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both strings are NUL-terminated; `value` is valid for its length.
    cvt(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// fgetxattr(2) into a buffer; `Ok(None)` when the attribute is absent.
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    // SAFETY: `buf` is writable for `buf.len()` bytes; `name` is NUL-terminated.
    let ret = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(ret as usize);
    Ok(Some(buf))
}

/// syncfs(2): flush the whole filesystem holding `fd` — far cheaper than
/// fsyncing every file of a freshly unpacked layer.
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a live descriptor.
    cvt(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// fsync(2).
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a live descriptor.
    cvt(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

/// A whole file mapped read-only (mmap(2)), unmapped on drop.
///
/// Only for files that nothing changes while they are mapped: blobs an import
/// has just written into the store's staging, which nothing writes again.
/// (Writing one means being root inside the store, and a file truncated under
/// the mapping would fault its reader with SIGBUS.)
pub struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this value alone; shared
// references to it can be used from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; nothing mutates the mapped bytes through this value.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps all of `file`. `Ok(None)` for an empty file, which mmap cannot map.
    pub fn of(file: &std::fs::File) -> io::Result<Option<Mapping>> {
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        if len == 0 {
            return Ok(None);
        }
        // SAFETY: a fresh private read-only mapping chosen by the kernel
        // (addr NULL), of a live descriptor; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ptr..ptr+len` is the mapping just made. The advice only
        // tunes read-ahead; its failure changes nothing, so it is ignored.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        let ptr = std::ptr::NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(Some(Mapping { ptr, len }))
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points at `len` readable bytes, mapped for as long as
        // `self` lives; the file is not modified while mapped (see the type's
        // doc), so the bytes do not change under the shared borrow.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `of` made; no borrow of it
        // outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// flock(2) with `LOCK_*` bits.
pub fn flock(fd: BorrowedFd<'_>, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: plain syscall on a live descriptor.
        let ret = unsafe { libc::flock(fd.as_raw_fd(), op) };
        if ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return cvt(ret).map(drop);
    }
}

/// fstatat(2); with `nofollow` a final symlink is described, not followed.
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr, nofollow: bool) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    } | libc::AT_EMPTY_PATH;
    // SAFETY: `st` is writable storage for one stat; `name` is NUL-terminated.
    cvt(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded, so the kernel filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// readlinkat(2) of `name` in `dir`.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for its length; `name` is NUL-terminated.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Names in a directory (not `.` or `..`), read through a duplicate of `dir`.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let fd = openat(dir, c".", O_RDONLY | O_DIRECTORY, 0)?;
    let mut d = nix::dir::Dir::from_fd(fd_into_raw(fd)).map_err(io::Error::from)?;
    let mut out = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(io::Error::from)?;
        let name = ent.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

fn fd_into_raw(fd: OwnedFd) -> std::os::fd::RawFd {
    std::os::fd::IntoRawFd::into_raw_fd(fd)
}

/// The process umask cannot be read without setting it; unpacking sets
/// modes explicitly with fchmod, so this is only used by tests.
pub fn geteuid_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// chmod an inode held by an `O_PATH` fd (fchmod(2) refuses those), via
/// its `/proc/self/fd` magic link, which names exactly that inode.
pub fn fchmod_path_fd(fd: BorrowedFd<'_>, mode: mode_t) -> io::Result<()> {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is NUL-terminated.
    cvt(unsafe { libc::fchmodat(libc::AT_FDCWD, path.as_ptr(), mode, 0) }).map(drop)
}
