//! The only `unsafe` code of `berth run` and its companions: `fork` for the detached
//! container's monitor, `pidfd_open`/`pidfd_send_signal` for `berth stop`, and the
//! terminal window-size ioctls for `-t`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `fork(2)`: `Some(child pid)` in the parent, `None` in the child.
///
/// The caller must be single-threaded (`berth run` is): the child is a copy of the
/// calling thread only.
pub fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: `berth run` never starts a thread, so no lock can be held by a thread
    // that does not exist in the child; the child goes on with ordinary Rust code.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Some(child.as_raw())),
        Ok(nix::unistd::ForkResult::Child) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `pidfd_open(2)`: a descriptor that refers to process `pid` for as long as it is
/// held, even after the pid is reused.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: plain integer arguments; the kernel returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created for us and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`: signals the process `pidfd` refers to, never another.
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: nix::sys::signal::Signal) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed (the kernel fills in the default); the other
    // arguments are integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The window size of the terminal on `fd` (`TIOCGWINSZ`), if it is one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<nix::pty::Winsize> {
    let mut ws = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points
    // at a live, properly aligned `Winsize` (the same type as libc's).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut _) };
    (r == 0).then_some(ws)
}

/// Sets the window size of the terminal on `fd` (`TIOCSWINSZ`); the kernel then
/// sends SIGWINCH to its foreground process group.
pub fn set_window_size(fd: BorrowedFd<'_>, ws: &nix::pty::Winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer, which points
    // at a live `Winsize` for the duration of the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws as *const _) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
