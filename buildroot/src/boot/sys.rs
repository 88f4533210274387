//! The unsafe calls of `berth boot`: a hook run in QEMU's child process before exec, and
//! signal dispositions.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};

/// Prepares the child of `cmd` in the child process, before exec:
/// - the signals `berth boot` blocks for its signalfd are unblocked (a blocked mask and
///   SIGPIPE's "ignore" survive exec: QEMU would never see SIGTERM);
/// - the kernel SIGKILLs the child when `berth boot` dies, however it dies
///   (`PR_SET_PDEATHSIG`; see prctl(2)). The death signal fires when the *thread* that
///   forked exits, so the caller spawns from the thread that lives until the end (main).
///   If `berth boot` died before the child set it up, the child has been re-parented and
///   refuses to start.
pub fn child_setup(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe work is allowed: sigprocmask(2), sigaction(2) with SIG_DFL,
    // prctl(2) and getppid(2) are plain system calls, and the error values are built
    // without allocating.
    unsafe {
        cmd.pre_exec(move || {
            let to_errno = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(to_errno)?;
            nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl).map_err(to_errno)?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(to_errno)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(
                    nix::errno::Errno::ESRCH as i32,
                ));
            }
            Ok(())
        });
    }
}

/// Ignores SIGTTOU and SIGTTIN in this process and the children it starts afterwards:
/// a process outside the terminal's foreground process group is stopped by them when it
/// changes the terminal's modes or (with `stty tostop`) writes to it. `berth boot` then
/// writes the console to the terminal without being frozen, and gives QEMU no terminal.
pub fn ignore_terminal_stops() -> nix::Result<()> {
    for sig in [Signal::SIGTTOU, Signal::SIGTTIN] {
        // SAFETY: SIG_IGN installs no handler code, so nothing runs in signal context;
        // no other part of berth sets a disposition for these signals.
        unsafe { nix::sys::signal::signal(sig, SigHandler::SigIgn) }?;
    }
    Ok(())
}
