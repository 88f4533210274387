//! The crate's only `unsafe` code: `clone3`, `close_range`, turning the raw fd that
//! `openat2` returns into an owned one, `fork`, signal resets, and loading the seccomp
//! filter.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, program)` for the calling thread.
pub fn seccomp_set_filter(program: &[libc::sock_filter]) -> io::Result<()> {
    let len =
        u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `len` valid instructions that outlive the call; the
    // kernel copies them and never writes through the pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What `clone3` returned in the calling process.
pub enum Forked {
    /// In the parent: the child's pid and a pidfd for it.
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
    /// In the child.
    Child,
}

/// linux/sched.h; libc's constant is an overflowing c_int.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (linux/sched.h), the version-2 layout with `cgroup` (Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3` without a new stack (fork semantics) with `CLONE_PIDFD` and
/// `CLONE_INTO_CGROUP`, so the child is born in `cgroup` and never runs a single
/// instruction anywhere else. `namespaces` are extra `CLONE_NEW*` flags.
///
/// The caller must be single-threaded (PID 1 and `berth run` are): the child is a
/// copy of the calling thread only, exactly as after `fork`.
pub fn clone3_into_cgroup(namespaces: libc::c_int, cgroup: BorrowedFd<'_>) -> io::Result<Forked> {
    let mut pidfd: RawFd = -1;
    let args = CloneArgs {
        flags: (namespaces as u64) | (libc::CLONE_PIDFD as u64) | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a fully initialised clone_args that outlives the call, its size
    // is passed, and `pidfd` points at a live RawFd. With no stack given, clone3 behaves
    // like fork: the child continues on a copy of this stack, which is sound because
    // the caller is single-threaded (documented above).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: pid as libc::pid_t,
            // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor, owned by
            // nobody else, in `pidfd` before returning the child's pid.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// Marks every descriptor from `first` up close-on-exec (`close_range(2)` with
/// `CLOSE_RANGE_CLOEXEC`, Linux 5.11): none of them reaches the container's program,
/// while the ones setup still uses stay open until `execve`.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range only changes descriptor flags; no memory is involved.
    let ret = unsafe {
        libc::close_range(
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Closes every descriptor from `first` up, for a copy of the caller that must hold
/// nothing of its parent's (the container's init reaper, the health-check helper).
pub fn close_from(first: RawFd) -> io::Result<()> {
    // SAFETY: the caller is a freshly forked process about to run code that owns none
    // of these descriptors; closing them invalidates no live Rust object it will use.
    let ret = unsafe { libc::close_range(first as libc::c_uint, libc::c_uint::MAX, 0) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs `body` in a forked child of the caller and exits with its code, or with
/// `on_panic` if it panics. A child of PID 1 is a copy of PID 1: a panic must end the
/// copy here, never unwind into PID 1's own handler (which would shut the machine down
/// from a process that is not PID 1).
pub fn child_exit(on_panic: i32, body: impl FnOnce() -> i32) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(on_panic);
    exit_now(code)
}

/// `openat2(2)` returning an owned descriptor; always `O_CLOEXEC`.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: OFlag,
    resolve: ResolveFlag,
) -> io::Result<OwnedFd> {
    openat2_how(
        dir,
        path,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(resolve),
    )
}

/// Creates regular file `name` in `dir` (mode 0600, never through a symlink, never
/// an existing file) and opens it for writing.
pub fn create_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    openat2_how(
        dir,
        name,
        OpenHow::new()
            .flags(
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
            )
            .mode(nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS),
    )
}

fn openat2_how(dir: BorrowedFd<'_>, path: &CStr, how: OpenHow) -> io::Result<OwnedFd> {
    loop {
        match nix::fcntl::openat2(dir.as_raw_fd(), path, how) {
            // The kernel asks for a retry when a rename raced a scoped lookup.
            Err(nix::errno::Errno::EAGAIN) => continue,
            Err(e) => return Err(e.into()),
            // SAFETY: the fd was just returned by a successful openat2 and is owned by
            // nothing else.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        }
    }
}

/// `fork(2)`, for the container's init reaper.
pub fn fork() -> nix::Result<nix::unistd::ForkResult> {
    // SAFETY: fork is unsound only in multi-threaded processes; its callers (the
    // container child for its init reaper, the health-check helper) are fork-like
    // clone3 copies of a single thread.
    unsafe { nix::unistd::fork() }
}

/// Resets every signal to its default action and unblocks all signals.
pub fn reset_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if !matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            // SAFETY: installing SIG_DFL runs no handler code, so nothing about the
            // current handlers or threads can be violated.
            let _ = unsafe { sigaction(sig, &default) };
        }
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// pidfd_send_signal(2): signals the process `pidfd` refers to, and never another
/// one that has taken its pid after it was reaped (that gets `ESRCH` instead).
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: nix::sys::signal::Signal) -> io::Result<()> {
    // SAFETY: plain syscall on a live descriptor; a NULL siginfo and flags 0 ask for
    // the same siginfo kill(2) would send.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// malloc_trim(3): hands the heap's free pages back to the kernel. A long-lived
/// process calls it after a burst of short-lived allocations (PID 1 after boot, or
/// after starting its containers), which glibc would otherwise keep for reuse.
pub fn release_free_heap() {
    // SAFETY: malloc_trim only walks and trims glibc's own heap under its lock; it
    // takes a plain integer and touches no memory the caller owns.
    unsafe { libc::malloc_trim(0) };
}

/// `_exit(2)`: ends the child without running the caller's atexit handlers or
/// flushing buffers it copied from the parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes a plain integer and never returns.
    unsafe { libc::_exit(code) }
}

/// `ioctl(fd, TIOCSCTTY, 0)`: makes the terminal on `fd` the calling session leader's
/// controlling terminal (tty_ioctl(4)).
pub fn set_controlling_terminal(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument, no pointer; a bad fd is an error.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Unlocks the pty master on `master` (`TIOCSPTLCK` with 0) and opens its slave
/// (`TIOCGPTPEER`, Linux 4.13): the slave of this very master, whatever `/dev/pts`
/// holds, without a path lookup.
pub fn open_pty_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, which points at a live int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock as *const _) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags as an integer and returns a new descriptor.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created for us and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the window size of the terminal on `fd` (`TIOCSWINSZ`).
pub fn set_window_size(fd: BorrowedFd<'_>, size: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer, which points
    // at a live one for the duration of the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size as *const _) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Receives one descriptor sent with `SCM_RIGHTS` on `socket`.
pub fn receive_fd(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            let mut fds = fds.into_iter();
            if let Some(fd) = fds.next() {
                for extra in fds {
                    let _ = nix::unistd::close(extra);
                }
                // SAFETY: the kernel installed this descriptor in our table for this
                // message; nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no descriptor in the message",
    ))
}
