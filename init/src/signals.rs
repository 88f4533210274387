//! Signals as events: PID 1 blocks the signals it handles and reads them from a signalfd
//! in its event loop, so no work happens in a signal handler.
//!
//! | signal | sent by | PID 1 does |
//! |---|---|---|
//! | SIGCHLD | the kernel | reaps |
//! | SIGTERM, SIGPWR, SIGUSR2 | `kill 1`, a UPS daemon, busybox's `poweroff` | powers off |
//! | SIGINT | the kernel on ctrl-alt-del (once CAD is disabled) | reboots |
//! | SIGUSR1 | busybox's `halt` | powers off (berth has no halted state worth keeping) |
//!
//! Other signals are left blocked and logged when read.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What a signal asks of PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Reap,
    PowerOff,
    Reboot,
    Ignore,
}

/// Maps a signal to what PID 1 does about it.
pub fn request_for(signal: Signal) -> Request {
    match signal {
        Signal::SIGCHLD => Request::Reap,
        Signal::SIGTERM | Signal::SIGPWR | Signal::SIGUSR1 | Signal::SIGUSR2 => Request::PowerOff,
        Signal::SIGINT => Request::Reboot,
        _ => Request::Ignore,
    }
}

/// The signals PID 1 takes through its signalfd.
pub fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGPWR,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// Why signal handling could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot block signals: {0}")]
    Block(Errno),
    #[error("cannot create signalfd: {0}")]
    SignalFd(Errno),
}

/// The blocked signal set and the signalfd that delivers it.
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks [`handled_set`] and opens a non-blocking signalfd for it. Children inherit
    /// the blocked mask: whoever starts a process must unblock [`handled_set`] in the child
    /// before it execs.
    pub fn new() -> Result<Signals, SignalError> {
        let set = handled_set();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
            .map_err(SignalError::Block)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(SignalError::SignalFd)?;
        Ok(Signals { fd })
    }

    /// Every pending signal, oldest first.
    pub fn drain(&mut self) -> Vec<Signal> {
        let mut out = Vec::new();
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                        out.push(sig);
                    }
                }
                Ok(None) => return out,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("reading signalfd failed: {e}");
                    return out;
                }
            }
        }
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_meanings() {
        assert_eq!(request_for(Signal::SIGTERM), Request::PowerOff);
        assert_eq!(request_for(Signal::SIGPWR), Request::PowerOff);
        assert_eq!(request_for(Signal::SIGINT), Request::Reboot);
        assert_eq!(request_for(Signal::SIGCHLD), Request::Reap);
        assert_eq!(request_for(Signal::SIGHUP), Request::Ignore);
        for s in handled_set().iter() {
            let _ = request_for(s);
        }
    }
}
