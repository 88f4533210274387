//! Running QEMU under `berth boot` so that it never outlives it.
//!
//! - QEMU's child process asks the kernel for SIGKILL when `berth boot` dies
//!   ([`sys::child_setup`]): that covers `kill -9`.
//! - SIGTERM, SIGINT and SIGHUP are read from a signalfd, never acted on in a handler:
//!   SIGTERM presses the guest's power button over berth's private QMP socket and
//!   escalates to SIGTERM of QEMU after the stop timeout, then SIGKILL one second later;
//!   SIGINT and SIGHUP go straight to SIGTERM of QEMU.
//! - QEMU's serial output comes through a pipe: it is copied to stdout and scanned
//!   ([`console`]). A write error there (SIGPIPE's EPIPE: `berth boot | head`) stops QEMU
//!   as SIGINT does. A kernel panic line stops QEMU once the panic report is complete.
//! - QEMU is killed and reaped when [`Qemu`] is dropped, so every early return kills it.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use super::console::{Event, Scanner};
use super::terminal::Mode;
use super::{qmp, sys};
use crate::exec::{Exec, ExecError};

/// How long QEMU has to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(1);

/// How long the kernel's panic report may take before QEMU is stopped without its end.
const PANIC_GRACE: Duration = Duration::from_secs(2);

/// How long one QMP reply may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(1);

/// The signals `berth boot` acts on (SIGCHLD: QEMU exited).
const HANDLED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGCHLD,
];

/// The hint repeated after PID 1's ready line when the console is interactive.
pub const QUIT_HINT: &str = "berth boot: ctrl-a x quits QEMU\n";

/// Why QEMU could not be run.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("blocking signals: {0}")]
    BlockSignals(nix::Error),
    #[error("signalfd: {0}")]
    SignalFd(nix::Error),
    #[error("ignoring SIGTTOU and SIGTTIN: {0}")]
    IgnoreTerminalStops(nix::Error),
    #[error(transparent)]
    Spawn(ExecError),
    #[error("waiting for qemu: {0}")]
    Wait(std::io::Error),
    #[error("poll: {0}")]
    Poll(nix::Error),
}

/// What ended the run.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit status.
    pub status: ExitStatus,
    /// The first of SIGTERM, SIGINT, SIGHUP `berth boot` received, or SIGPIPE when its
    /// output was closed.
    pub signal: Option<Signal>,
    /// The kernel's panic line, if the guest panicked.
    pub panic: Option<String>,
}

/// The running QEMU; killed and reaped on drop unless already reaped.
pub struct Qemu {
    child: Child,
    status: Option<ExitStatus>,
}

impl Qemu {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = kill(self.pid(), sig);
        }
    }

    fn try_reap(&mut self) -> Result<(), SuperviseError> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(SuperviseError::Wait)?;
        }
        Ok(())
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The steps of stopping QEMU, gentlest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    PowerButton,
    Terminate,
    Kill,
}

/// Where stopping QEMU stands: the strongest step taken, and the next one with its time.
struct Stopping<'a> {
    taken: Option<Stop>,
    next: Option<(Stop, Instant)>,
    control: &'a Path,
    stop_timeout: Duration,
}

impl Stopping<'_> {
    /// Takes `step` now unless a step as strong was taken already.
    fn take(&mut self, step: Stop, qemu: &Qemu) {
        if self.taken.is_some_and(|t| t >= step) {
            return;
        }
        self.taken = Some(step);
        let now = Instant::now();
        match step {
            Stop::PowerButton => {
                self.next = Some((Stop::Terminate, now + self.stop_timeout));
                match qmp::execute(self.control, "system_powerdown", QMP_TIMEOUT) {
                    Ok(()) => log::info!(
                        "pressed the guest's power button; qemu is stopped in {} s if the guest has not powered off",
                        self.stop_timeout.as_secs_f32()
                    ),
                    Err(e) => {
                        log::warn!("{e}; stopping qemu");
                        self.take(Stop::Terminate, qemu);
                    }
                }
            }
            Stop::Terminate => {
                qemu.signal(Signal::SIGTERM);
                self.next = Some((Stop::Kill, now + TERM_GRACE));
            }
            Stop::Kill => {
                qemu.signal(Signal::SIGKILL);
                self.next = None;
            }
        }
    }

    /// Plans `step` at `at` unless something is under way already.
    fn plan(&mut self, step: Stop, at: Instant) {
        if self.taken.is_none() && self.next.is_none() {
            self.next = Some((step, at));
        }
    }

    /// Takes the planned step if its time has come.
    fn tick(&mut self, qemu: &Qemu) {
        if let Some((step, at)) = self.next {
            if Instant::now() >= at {
                self.next = None;
                self.take(step, qemu);
            }
        }
    }

    fn timeout(&self) -> PollTimeout {
        match self.next {
            None => PollTimeout::NONE,
            Some((_, at)) => {
                let ms = at.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(ms.min(60_000) as u32).unwrap_or(PollTimeout::MAX)
            }
        }
    }
}

/// Runs `exec` (a QEMU command line whose berth QMP socket is `control`) with its
/// console on this process's stdout until QEMU exits.
pub fn run(
    exec: &Exec,
    mode: Mode,
    control: &Path,
    stop_timeout: Duration,
) -> Result<Outcome, SuperviseError> {
    let mut mask = SigSet::empty();
    for s in HANDLED {
        mask.add(s);
    }
    // Blocked before QEMU starts, so that no signal or exit is missed; the child
    // unblocks them before exec (`sys::child_setup`).
    mask.thread_block().map_err(SuperviseError::BlockSignals)?;
    let _unblock = Unblock(mask);
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(SuperviseError::SignalFd)?;
    if mode == Mode::Background {
        sys::ignore_terminal_stops().map_err(SuperviseError::IgnoreTerminalStops)?;
    }
    let child = exec
        .spawn(|cmd| {
            if mode == Mode::Background {
                cmd.stdin(Stdio::null());
            }
            cmd.stdout(Stdio::piped());
            sys::child_setup(cmd);
        })
        .map_err(SuperviseError::Spawn)?;
    let mut qemu = Qemu {
        child,
        status: None,
    };
    let mut console = qemu.child.stdout.take();
    if let Some(pipe) = &console {
        let _ = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(pipe),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let mut out = Output {
        sink: std::io::stdout(),
        scanner: Scanner::default(),
        hint: mode == Mode::Interactive,
        broken: None,
        failed: false,
        panic: None,
    };
    let mut stopping = Stopping {
        taken: None,
        next: None,
        control,
        stop_timeout,
    };
    let mut signal = None;
    let status = loop {
        if let (Some(status), None) = (qemu.status, &console) {
            break status;
        }
        let timeout = if qemu.status.is_some() {
            // QEMU is gone; only the rest of its output is left to read.
            PollTimeout::from(100u8)
        } else {
            stopping.timeout()
        };
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(pipe) = &console {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(0) if qemu.status.is_some() => console = None,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(SuperviseError::Poll(e)),
        }
        while let Ok(Some(info)) = signals.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => qemu.try_reap()?,
                Signal::SIGTERM if stopping.taken.is_none() => {
                    log::info!("SIGTERM: powering the guest off");
                    signal.get_or_insert(sig);
                    stopping.take(Stop::PowerButton, &qemu);
                }
                other => {
                    log::info!("{other}: stopping qemu");
                    signal.get_or_insert(other);
                    stopping.take(Stop::Terminate, &qemu);
                }
            }
        }
        if let Some(pipe) = console.as_mut() {
            if !out.drain(pipe) {
                console = None;
            }
        }
        if let Some(sig) = out.broken.take() {
            signal.get_or_insert(sig);
            stopping.take(Stop::Terminate, &qemu);
        }
        if let Some(event) = out.take_panic_event() {
            match event {
                Event::PanicEnd => stopping.take(Stop::Terminate, &qemu),
                _ => stopping.plan(Stop::Terminate, Instant::now() + PANIC_GRACE),
            }
        }
        qemu.try_reap()?;
        stopping.tick(&qemu);
    };
    Ok(Outcome {
        status,
        signal,
        panic: out.panic.map(|(line, _)| line),
    })
}

/// Unblocks the handled signals again when the run ends (for callers that go on).
struct Unblock(SigSet);

impl Drop for Unblock {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&self.0), None);
    }
}

/// The console's way out: stdout, with the scan of what passes.
struct Output<W> {
    /// stdout, or a buffer in tests.
    sink: W,
    scanner: Scanner,
    /// Repeat the quit hint after ready lines.
    hint: bool,
    /// Set when stdout fails, until the loop takes it: SIGPIPE for a closed pipe,
    /// SIGHUP for a terminal that is gone.
    broken: Option<Signal>,
    /// stdout failed: the rest of the console is dropped.
    failed: bool,
    /// The panic line, and whether the stop it calls for is still to be taken.
    panic: Option<(String, Option<Event>)>,
}

impl<W: Write> Output<W> {
    /// Copies what the pipe has now; false at its end.
    fn drain(&mut self, pipe: &mut impl Read) -> bool {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.pass(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("reading the console: {e}");
                    return false;
                }
            }
        }
    }

    /// Writes `bytes` out, acting on the lines they complete.
    fn pass(&mut self, bytes: &[u8]) {
        let mut written = 0;
        for (end, event) in self.scanner.feed(bytes) {
            match event {
                Event::Ready if self.hint => {
                    self.write(&bytes[written..end]);
                    self.write(QUIT_HINT.as_bytes());
                    written = end;
                }
                Event::Ready => {}
                Event::Panic(line) => {
                    if self.panic.is_none() {
                        self.panic = Some((line, Some(Event::Panic(String::new()))));
                    }
                }
                Event::PanicEnd => {
                    if let Some((_, pending)) = &mut self.panic {
                        *pending = Some(Event::PanicEnd);
                    }
                }
            }
        }
        self.write(&bytes[written..]);
    }

    /// The stop a panic calls for, once.
    fn take_panic_event(&mut self) -> Option<Event> {
        self.panic.as_mut().and_then(|(_, pending)| pending.take())
    }

    fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.failed {
            return;
        }
        if let Err(e) = self.sink.write_all(bytes).and_then(|()| self.sink.flush()) {
            let sig = if e.kind() == ErrorKind::BrokenPipe {
                Signal::SIGPIPE
            } else {
                Signal::SIGHUP
            };
            log::warn!("writing the console to stdout: {e}; stopping qemu");
            self.failed = true;
            self.broken = Some(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(hint: bool) -> Output<Vec<u8>> {
        Output {
            sink: Vec::new(),
            scanner: Scanner::default(),
            hint,
            broken: None,
            failed: false,
            panic: None,
        }
    }

    #[test]
    fn the_quit_hint_follows_ready_on_interactive_consoles_only() {
        let mut out = output(true);
        out.pass(b"[  12.0 ms] berth: hostname: x\r\n[ 1523.4 ms] berth: rea");
        out.pass(b"dy in 3.0 ms\r\nlogin$ ");
        assert_eq!(
            String::from_utf8(out.sink).unwrap(),
            format!(
                "[  12.0 ms] berth: hostname: x\r\n[ 1523.4 ms] berth: ready in 3.0 ms\r\n{QUIT_HINT}login$ "
            )
        );
        let mut out = output(false);
        out.pass(b"[ 1523.4 ms] berth: ready in 3.0 ms\r\n");
        assert_eq!(out.sink, b"[ 1523.4 ms] berth: ready in 3.0 ms\r\n");
    }

    #[test]
    fn a_panic_asks_for_a_stop_once_and_its_end_at_once() {
        let mut out = output(false);
        out.pass(b"[ 4.3] Kernel panic - not syncing: VFS: Unable to mount root fs\n");
        assert_eq!(out.take_panic_event(), Some(Event::Panic(String::new())));
        assert_eq!(out.take_panic_event(), None);
        out.pass(b"[ 4.4] Kernel panic - not syncing: again\n[ 4.5] Rebooting in 1 seconds..\n");
        assert_eq!(out.take_panic_event(), Some(Event::PanicEnd));
        assert_eq!(
            out.panic.map(|(line, _)| line).as_deref(),
            Some("Kernel panic - not syncing: VFS: Unable to mount root fs")
        );
    }

    #[test]
    fn a_closed_output_is_reported_as_sigpipe_and_the_rest_dropped() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut out = Output {
            sink: Closed,
            scanner: Scanner::default(),
            hint: false,
            broken: None,
            failed: false,
            panic: None,
        };
        out.pass(b"SeaBIOS\n");
        assert_eq!(out.broken, Some(Signal::SIGPIPE));
        assert!(out.failed);
    }
}
