//! `berth run -t`: the container's stdio is the slave of a pty it allocated in its own
//! `/dev/pts` (so that `tty` inside says `/dev/pts/0`, as in Docker); `berth run`
//! relays between its own terminal and the master it was sent, with its terminal in raw mode meanwhile (so that
//! keys such as ^C and ^D reach the container's line discipline unchanged), and passes
//! window-size changes on.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::termios::{self, SetArg, Termios};

use super::sys;

/// `berth run`'s window size: its stdin's terminal's, else its stdout's.
pub fn window_size() -> Option<nix::pty::Winsize> {
    sys::window_size(io::stdin().as_fd()).or_else(|| sys::window_size(io::stdout().as_fd()))
}

/// The container's pty master, sent by its setup over `socket` (see
/// `berth_runtime::Console`), made non-blocking for the relay.
pub fn receive_master(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let master = berth_runtime::Console::receive(socket)?;
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&master),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok(master)
}

/// Copies `berth run`'s window size to the pty (on SIGWINCH); the kernel then signals
/// the container's foreground process group.
pub fn follow_window_size(master: BorrowedFd<'_>) {
    let size =
        sys::window_size(io::stdin().as_fd()).or_else(|| sys::window_size(io::stdout().as_fd()));
    if let Some(size) = size {
        if let Err(e) = sys::set_window_size(master, &size) {
            log::debug!("resizing the container's terminal: {e}");
        }
    }
}

/// `berth run`'s terminal in raw mode, restored when this is dropped: on the
/// container's exit and on every error path.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode; `None` when stdin is not a terminal.
    pub fn enter() -> Option<RawMode> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if let Err(e) = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw) {
            log::debug!("raw mode: {e}");
            return None;
        }
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// What one read from a descriptor gave.
pub enum Read {
    Data(usize),
    /// Nothing now (non-blocking descriptor).
    Empty,
    /// End of file, or the pty's slave side fully closed (EIO).
    End,
}

pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Read {
    loop {
        match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), buf) {
            Ok(0) => return Read::End,
            Ok(n) => return Read::Data(n),
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => return Read::Empty,
            Err(_) => return Read::End,
        }
    }
}

/// Writes all of `data` to `fd`, which may be non-blocking (the master): waits for room.
pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(100u8));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
