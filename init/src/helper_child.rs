//! [`HelperChild`]: one supervised child process that speaks `berth_proto` with PID 1.
//!
//! The child gets its end of a socketpair as the descriptor named in
//! `BERTH_CHANNEL_FD`; PID 1 keeps the other, non-blocking, in its poll loop. One restart
//! policy serves every such child: after an exit (or after PID 1 stopped believing it),
//! the child is started again after [`RESTART_FIRST`], doubling up to [`RESTART_MAX`],
//! and back to the first delay once a run has lasted [`STABLE_AFTER`].
//!
//! PID 1 never trusts the child: [`HelperChild::receive`] takes at most
//! [`MESSAGES_PER_WAKE`] messages per wake-up, and a message that is too long, carries
//! too many descriptors, or does not parse as the channel's type gets the child
//! SIGKILLed and restarted. So does a child that stops reading what PID 1 sends
//! ([`berth_proto::ChannelError::Full`]): PID 1 never waits on a child.

use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto::{Channel, Message, Received, CHANNEL_FD_ENV};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub const RESTART_FIRST: Duration = Duration::from_millis(200);
pub const RESTART_MAX: Duration = Duration::from_secs(30);
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Messages taken per wake-up, so that a chatty child cannot keep PID 1 in its loop.
pub const MESSAGES_PER_WAKE: usize = 64;

/// How a child is started: its name for the console, and a command builder (the helper
/// in a mode; a stand-in in tests).
pub struct ChildCommand {
    pub name: &'static str,
    pub build: Box<dyn Fn() -> Command>,
}

/// Ties a child to its channel's message types without holding any.
type Marker<Req, Resp, Ev> = PhantomData<fn() -> Message<Req, Resp, Ev>>;

/// A supervised child and its channel. `Req`, `Resp`, `Ev` are the channel's message
/// types, as in [`berth_proto::Message`].
pub struct HelperChild<Req, Resp, Ev> {
    command: ChildCommand,
    pid: Option<Pid>,
    channel: Option<Channel>,
    started: Option<Instant>,
    delay: Duration,
    restart_at: Option<Instant>,
    /// Set at shutdown: no more restarts.
    stopping: bool,
    restarts: u32,
    _messages: Marker<Req, Resp, Ev>,
}

impl<Req, Resp, Ev> HelperChild<Req, Resp, Ev>
where
    Req: Serialize + DeserializeOwned,
    Resp: Serialize + DeserializeOwned,
    Ev: Serialize + DeserializeOwned,
{
    /// Starts the child (or schedules a retry if it cannot start).
    pub fn start(command: ChildCommand, now: Instant) -> Self {
        let mut child = HelperChild {
            command,
            pid: None,
            channel: None,
            started: None,
            delay: RESTART_FIRST,
            restart_at: None,
            stopping: false,
            restarts: 0,
            _messages: PhantomData,
        };
        child.spawn(now);
        child
    }

    pub fn pid(&self) -> Option<Pid> {
        self.pid
    }

    /// How many times the child was started again.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    fn spawn(&mut self, now: Instant) {
        self.restart_at = None;
        match self.try_spawn() {
            Ok((pid, channel)) => {
                log::info!("{} started (pid {pid})", self.command.name);
                self.pid = Some(pid);
                self.channel = Some(channel);
                self.started = Some(now);
            }
            Err(e) => {
                log::error!("cannot start {}: {e}", self.command.name);
                self.schedule_restart(now);
            }
        }
    }

    fn try_spawn(&self) -> Result<(Pid, Channel), String> {
        let (ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
        ours.set_nonblocking().map_err(|e| e.to_string())?;
        let theirs: OwnedFd = theirs.into_fd();
        // The child inherits its end: clear close-on-exec on it for this one spawn. PID 1
        // is single-threaded, so no other spawn can inherit it meanwhile; our copy is
        // closed when `theirs` drops below.
        nix::fcntl::fcntl(
            theirs.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(|e| format!("channel fd: {e}"))?;
        let mut command = (self.command.build)();
        command
            .env(CHANNEL_FD_ENV, theirs.as_raw_fd().to_string())
            .stdin(Stdio::null());
        let child = command.spawn().map_err(|e| e.to_string())?;
        // The pid is reaped by PID 1's loop, not through `child`.
        let pid = Pid::from_raw(child.id() as i32);
        drop(child);
        drop(theirs);
        Ok((pid, ours))
    }

    fn schedule_restart(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        self.restart_at = Some(now + self.delay);
        self.delay = (self.delay * 2).min(RESTART_MAX);
    }

    /// The channel, for PID 1's poll.
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.channel.as_ref().map(|c| c.as_fd())
    }

    /// Takes what the child sent, at most [`MESSAGES_PER_WAKE`] messages. A broken
    /// channel or a message PID 1 refuses kills the child (its exit brings the restart).
    pub fn receive(&mut self) -> Vec<(Message<Req, Resp, Ev>, Vec<OwnedFd>)> {
        let mut out = Vec::new();
        while out.len() < MESSAGES_PER_WAKE {
            let Some(channel) = &self.channel else { break };
            match channel.recv::<Req, Resp, Ev>() {
                Ok(Received::Message(m, fds)) => out.push((m, fds)),
                Ok(Received::Nothing) => break,
                Ok(Received::Closed) => {
                    // The child's exit follows (or has come): its restart is scheduled there.
                    self.channel = None;
                    break;
                }
                Err(e) => {
                    self.distrust(&format!("sent what PID 1 refuses ({e})"));
                    break;
                }
            }
        }
        out
    }

    /// Sends to the child; a child that is gone or not reading is restarted.
    pub fn send(&mut self, message: &Message<Req, Resp, Ev>, fds: &[BorrowedFd<'_>]) {
        let Some(channel) = &self.channel else {
            log::warn!(
                "{}: not running, a message to it is dropped",
                self.command.name
            );
            return;
        };
        if let Err(e) = channel.send(message, fds) {
            self.distrust(&format!("cannot be written to ({e})"));
        }
    }

    /// Stops believing the child: drop the channel and SIGKILL it. Its exit, reaped by
    /// PID 1's loop, schedules the restart.
    fn distrust(&mut self, why: &str) {
        log::error!("{} {why}: killing it", self.command.name);
        self.channel = None;
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
    }

    /// Handles an exit reaped by PID 1; false if `pid` is not this child.
    pub fn on_exit(&mut self, pid: Pid, status: WaitStatus, now: Instant) -> bool {
        if self.pid != Some(pid) {
            return false;
        }
        self.pid = None;
        self.channel = None;
        let ran = self.started.map(|s| now.saturating_duration_since(s));
        if ran.is_some_and(|r| r >= STABLE_AFTER) {
            self.delay = RESTART_FIRST;
        }
        if self.stopping {
            log::info!(
                "{} stopped ({})",
                self.command.name,
                berth_runtime::ProcessStatus(status)
            );
            return true;
        }
        log::warn!(
            "{} exited ({}): restarting in {} ms",
            self.command.name,
            berth_runtime::ProcessStatus(status),
            self.delay.as_millis()
        );
        self.schedule_restart(now);
        true
    }

    /// Restarts the child when its delay is over.
    pub fn tick(&mut self, now: Instant) {
        if self.restart_at.is_some_and(|at| at <= now) && self.pid.is_none() && !self.stopping {
            self.restarts += 1;
            self.spawn(now);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.restart_at
    }

    /// At shutdown: SIGTERM, and no restart after its exit.
    pub fn stop(&mut self) {
        self.stopping = true;
        self.restart_at = None;
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use berth_proto::RequestId;

    use super::*;

    type M = Message<String, String, String>;

    /// A stand-in helper: python3 on its inherited channel. `script` gets `ch`, the
    /// socket, and `send(obj)`.
    fn python(script: &'static str) -> Option<ChildCommand> {
        let found = std::process::Command::new("python3")
            .arg("-c")
            .arg("pass")
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("skipping: no python3 for the stand-in child");
            return None;
        }
        Some(ChildCommand {
            name: "test child",
            build: Box::new(move || {
                let mut c = Command::new("python3");
                c.arg("-c").arg(format!(
                    "import os, socket, json, time, sys\n\
                     ch = socket.socket(fileno=int(os.environ['{CHANNEL_FD_ENV}']))\n\
                     def send(o): ch.send(json.dumps(o).encode())\n\
                     {script}\n"
                ));
                c
            }),
        })
    }

    fn wait_exit(child: &mut HelperChild<String, String, String>, now: Instant) -> WaitStatus {
        let pid = child.pid().expect("a running child");
        let status = nix::sys::wait::waitpid(pid, None).unwrap();
        assert!(child.on_exit(pid, status, now));
        status
    }

    fn wait_readable(fd: BorrowedFd<'_>) {
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)).unwrap();
    }

    #[test]
    fn requests_and_answers_cross_and_a_clean_child_is_restarted_later() {
        let Some(cmd) = python(
            "m = json.loads(ch.recv(65536))\n\
             send({'response': {'id': m['request']['id'], 'body': m['request']['body'].upper()}})\n\
             send({'event': 'bye'})",
        ) else {
            return;
        };
        let now = Instant::now();
        let mut child: HelperChild<String, String, String> = HelperChild::start(cmd, now);
        child.send(
            &M::Request {
                id: RequestId(9),
                body: "ps".into(),
            },
            &[],
        );
        let mut got = Vec::new();
        while got.len() < 2 {
            wait_readable(child.poll_fd().unwrap());
            got.extend(child.receive().into_iter().map(|(m, _)| m));
        }
        assert_eq!(
            got,
            vec![
                M::Response {
                    id: RequestId(9),
                    body: "PS".into()
                },
                M::Event("bye".into())
            ]
        );
        let status = wait_exit(&mut child, now);
        assert!(matches!(status, WaitStatus::Exited(_, 0)));
        // Restarted after the first delay, not before.
        assert_eq!(child.next_deadline(), Some(now + RESTART_FIRST));
        child.tick(now + RESTART_FIRST / 2);
        assert!(child.pid().is_none());
        child.tick(now + RESTART_FIRST);
        assert!(child.pid().is_some());
        assert_eq!(child.restarts(), 1);
        child.stop();
        let second = now + RESTART_FIRST;
        wait_exit(&mut child, second);
        assert_eq!(child.next_deadline(), None, "no restart after stop");
    }

    #[test]
    fn a_child_sending_garbage_is_killed_and_restarted_with_backoff() {
        let Some(cmd) = python("ch.send(b'{not json'); time.sleep(30)") else {
            return;
        };
        let now = Instant::now();
        let mut child: HelperChild<String, String, String> = HelperChild::start(cmd, now);
        wait_readable(child.poll_fd().unwrap());
        assert!(child.receive().is_empty());
        assert!(child.poll_fd().is_none(), "the channel is dropped at once");
        let status = wait_exit(&mut child, now);
        assert!(matches!(
            status,
            WaitStatus::Signaled(_, Signal::SIGKILL, _)
        ));
        // Each quick failure doubles the delay.
        assert_eq!(child.next_deadline(), Some(now + RESTART_FIRST));
        child.tick(now + RESTART_FIRST);
        wait_readable(child.poll_fd().unwrap());
        child.receive();
        let later = now + RESTART_FIRST;
        wait_exit(&mut child, later);
        assert_eq!(child.next_deadline(), Some(later + RESTART_FIRST * 2));
        child.stop();
    }

    #[test]
    fn a_child_that_cannot_start_is_retried() {
        let cmd = ChildCommand {
            name: "missing child",
            build: Box::new(|| Command::new("/nonexistent/berth-helper")),
        };
        let now = Instant::now();
        let mut child: HelperChild<String, String, String> = HelperChild::start(cmd, now);
        assert!(child.pid().is_none());
        assert_eq!(child.next_deadline(), Some(now + RESTART_FIRST));
        child.tick(now + Duration::from_secs(1));
        assert_eq!(child.restarts(), 1);
        assert_eq!(
            child.next_deadline(),
            Some(now + Duration::from_secs(1) + RESTART_FIRST * 2)
        );
    }
}
