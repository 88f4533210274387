//! Who gets the terminal. QEMU's `-nographic` console puts its stdin terminal in raw mode
//! and restores it when it exits normally; that is right only when `berth boot` runs in
//! the terminal's foreground process group. In the background (`cmd &`, or under
//! `timeout`, which runs its command in a process group of its own) changing the
//! terminal's modes stops the process with SIGTTOU, and a raw terminal left behind by a
//! killed QEMU breaks the shell the user is typing into.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use nix::sys::termios::{tcgetattr, tcsetattr, SetArg, Termios};
use nix::unistd::{getpgrp, tcgetpgrp, Pid};

/// How the console is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// stdin is the terminal and `berth boot` is in its foreground: QEMU reads the
    /// keyboard (raw mode; ctrl-a x quits).
    Interactive,
    /// stdin is a terminal this process group does not own: QEMU gets no input (stdin
    /// is /dev/null), the console is still printed.
    Background,
    /// stdin is not a terminal (a pipe, a file, /dev/null): QEMU reads it as it is.
    NotATerminal,
}

/// The mode for a stdin that is a terminal or not, whose foreground process group is
/// `foreground` (`None`: unknown), seen from process group `own`.
pub fn mode(stdin_is_terminal: bool, own: Pid, foreground: Option<Pid>) -> Mode {
    match (stdin_is_terminal, foreground) {
        (false, _) => Mode::NotATerminal,
        (true, Some(fg)) if fg == own => Mode::Interactive,
        (true, _) => Mode::Background,
    }
}

/// The mode of this process's stdin now.
pub fn current_mode() -> Mode {
    let stdin = std::io::stdin();
    let is_terminal = stdin.is_terminal();
    let foreground = if is_terminal {
        tcgetpgrp(stdin.as_fd()).ok()
    } else {
        None
    };
    mode(is_terminal, getpgrp(), foreground)
}

/// The terminal's modes as they were before QEMU, put back on drop (QEMU restores them
/// itself only when it exits normally, not when it is killed).
pub struct Restore {
    saved: Option<Termios>,
}

impl Restore {
    /// Saves stdin's terminal modes (nothing when stdin is not a terminal).
    pub fn save() -> Restore {
        Restore {
            saved: tcgetattr(std::io::stdin().as_fd()).ok(),
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let Some(saved) = &self.saved else {
            return;
        };
        let stdin = std::io::stdin();
        // Only while still in the foreground: in the background the terminal belongs to
        // another job (and the change would stop this process).
        if tcgetpgrp(stdin.as_fd()).ok() != Some(getpgrp()) {
            return;
        }
        if let Err(e) = tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, saved) {
            log::warn!("cannot restore the terminal's modes (run `stty sane`): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_terminal_goes_to_qemu_only_in_the_foreground() {
        let own = Pid::from_raw(100);
        assert_eq!(mode(true, own, Some(own)), Mode::Interactive);
        // `timeout 60 berth boot` or `berth boot &`: another group owns the terminal.
        assert_eq!(mode(true, own, Some(Pid::from_raw(7))), Mode::Background);
        assert_eq!(mode(true, own, None), Mode::Background);
        assert_eq!(mode(false, own, None), Mode::NotATerminal);
        assert_eq!(mode(false, own, Some(own)), Mode::NotATerminal);
    }
}
