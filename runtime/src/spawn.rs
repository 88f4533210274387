//! The caller's side of starting a container: the state directory, the cgroup
//! leaf, `clone3`, and the wait for the child to reach `execve`.
//!
//! ```text
//! <state>/                         /var/lib/berth (the image store's root)
//! ├── containers/<name>/
//! │   ├── upper/  work/            the overlay's writable layer, kept across restarts
//! │   └── scratch/                 empty; in the container's own mount namespace a
//! │                                tmpfs holding root/ (the overlay's mount point) and
//! │                                the generated hostname, hosts and resolv.conf
//! └── volumes/<name>/              named volumes
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_imagefs::mount::Upper;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::cgroup::{CgroupError, CgroupParent, Leaf};
use crate::child::{self, Setup};
use crate::spec::{ContainerSpec, Network, VolumeSource};
use crate::sys::{self, Forked};
use berth_netd::container::{container_resolv_conf, hosts_file};
use berth_netd::netlink::Netlink;

/// How long a child may take from `clone3` to `execve` before it is killed.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on what the child may report.
const MAX_REPORT: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening a netlink socket for the bridge network: {0}")]
    Netlink(#[source] berth_netd::netlink::NetlinkError),
    #[error("preparing {path}: {source}")]
    StateDir { path: PathBuf, source: io::Error },
    #[error("a container named {name} already exists ({path}); remove it or choose another name")]
    Exists { name: String, path: PathBuf },
    #[error("volume source {path} does not exist")]
    VolumeSource { path: PathBuf },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("creating the sync pipe: {0}")]
    Pipe(nix::Error),
    #[error("clone3: {0}")]
    Clone(io::Error),
    /// The child's report; `code` is Docker's exit code for it (see
    /// [`child::ChildError::exit_code`]).
    #[error("container {name}: {message}")]
    Setup {
        name: String,
        message: String,
        code: u8,
    },
    #[error("container {name}: setup did not finish within {secs} s; killed")]
    Timeout { name: String, secs: u64 },
    #[error("container {name}: the setup process was killed for memory under the container's limit: {exit}")]
    SetupOomKilled { name: String, exit: Exit },
}

impl StartError {
    /// The code `berth run` exits with for a start that failed, as `docker run`
    /// would: 127 the program was not found, 126 it could not be executed, 137 the
    /// setup was killed for memory, 125 anything else (berth itself failed).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Setup { code, .. } => *code,
            StartError::SetupOomKilled { exit, .. } => {
                u8::try_from(exit.code).unwrap_or(child::RUNTIME_FAILED)
            }
            _ => child::RUNTIME_FAILED,
        }
    }
}

/// The name of the gc hold a container keeps on its image while it exists: taken by
/// its setup, read by health checks (the image it started from), released at removal.
pub(crate) fn image_hold(container: &str) -> String {
    format!("container-{container}")
}

/// Where containers keep their state.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The image store.
    pub store: PathBuf,
    /// The state directory (by default the store's root).
    pub state: PathBuf,
    pub cgroups: CgroupParent,
}

/// Descriptors for the container's stdio; `None` keeps the caller's.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// A terminal for the container (`berth run -t`), allocated inside it: see
    /// [`Console`].
    pub console: Option<Console>,
}

/// The request for a terminal allocated in the container's own `/dev/pts`: the child
/// makes the pty's slave its stdio and controlling terminal and sends the master back
/// over `socket` (a Unix socket; [`Console::receive`] on the other end).
#[derive(Debug)]
pub struct Console {
    pub socket: OwnedFd,
    /// The window size to start with.
    pub size: Option<libc::winsize>,
}

impl Console {
    /// The pty's master, once the container runs, from the other end of the socket.
    pub fn receive(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        sys::receive_fd(socket)
    }
}

/// A container whose program is running.
#[derive(Debug)]
pub struct Running {
    pub name: String,
    pub pid: Pid,
    pub pidfd: OwnedFd,
    /// From the image's STOPSIGNAL, when it has one.
    pub image_stop_signal: Option<i32>,
    pub leaf: Leaf,
    pub started: Instant,
}

impl Running {
    /// Sends `signal` to the container's first process, through its pidfd: once that
    /// process has been reaped, its pid may be another process's, the pidfd never.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> io::Result<()> {
        sys::pidfd_signal(self.pidfd.as_fd(), signal)
    }
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The shell-style code: the exit status, or 128 + the signal.
    pub code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
}

impl Exit {
    pub fn from_wait(status: WaitStatus, oom_kills: u64) -> Exit {
        let (code, signal) = match status {
            WaitStatus::Exited(_, c) => (c, None),
            WaitStatus::Signaled(_, s, _) => (128 + s as i32, Some(s as i32)),
            _ => (255, None),
        };
        Exit {
            code,
            signal,
            oom_killed: oom_kills > 0,
        }
    }

    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The exit a start that never reached its program counts as: Docker's "cannot run"
    /// code, unless the container's cgroup saw an OOM kill (the setup process killed for
    /// memory under the container's limit), which counts as that kill. `reaped` is the
    /// setup process's status and the cgroup's OOM kill count; `None` when there was no
    /// process, or it could not be reaped.
    pub fn failed_setup(reaped: Option<(WaitStatus, u64)>) -> Exit {
        match reaped {
            Some((status, oom_kills)) if oom_kills > 0 => Exit::from_wait(status, oom_kills),
            _ => Exit {
                code: child::SETUP_FAILED,
                signal: None,
                oom_killed: false,
            },
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.code)?;
        if self.oom_killed {
            write!(f, " (OOMKilled)")?;
        } else if let Some(s) = self
            .signal
            .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
        {
            write!(f, " ({s})")?;
        }
        Ok(())
    }
}

/// A process's wait status as a person reads it: `exit 1`, `killed by SIGKILL`, never
/// the status's Rust form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStatus(pub WaitStatus);

impl std::fmt::Display for ProcessStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            WaitStatus::Exited(_, code) => write!(f, "exit {code}"),
            WaitStatus::Signaled(_, signal, core) => {
                write!(f, "killed by {signal}")?;
                if core {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            WaitStatus::Stopped(_, signal) => write!(f, "stopped by {signal}"),
            WaitStatus::PtraceEvent(..) | WaitStatus::PtraceSyscall(_) => {
                f.write_str("stopped by its tracer")
            }
            WaitStatus::Continued(_) => f.write_str("continued"),
            WaitStatus::StillAlive => f.write_str("still running"),
        }
    }
}

impl Runtime {
    pub fn container_dir(&self, name: &str) -> PathBuf {
        self.state.join("containers").join(name)
    }

    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.state.join("volumes").join(name)
    }

    /// Starts a new container (`berth run`) and waits until its program runs: claims
    /// the container's directory, refusing if it exists, and removes what it created
    /// if the start fails. PID 1, which restarts containers on their kept writable
    /// layer and must not wait, calls [`Runtime::begin`].
    pub fn start(&self, spec: &ContainerSpec, stdio: Stdio) -> Result<Running, StartError> {
        self.claim(&spec.name)?;
        let started = self.begin(spec, stdio).and_then(Starting::wait);
        if started.is_err() {
            let _ = self.remove(&spec.name);
        }
        started
    }

    /// Creates the container's directory, atomically: of two starts with one name, one
    /// gets `Exists` (a check then a create would let both through, and the second
    /// would kill the first's cgroup as a stale leftover).
    fn claim(&self, name: &str) -> Result<(), StartError> {
        let dir = self.container_dir(name);
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StartError::StateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StartError::Exists {
                name: name.to_owned(),
                path: dir,
            }),
            Err(source) => Err(StartError::StateDir { path: dir, source }),
        }
    }

    /// Creates the container's process and returns at once, while the child sets up
    /// the container: a caller that must not block (PID 1) polls
    /// [`Starting::sync_fd`] and calls [`Starting::advance`]; others call
    /// [`Starting::wait`]. Keeps the container's writable layer if it exists.
    pub fn begin(&self, spec: &ContainerSpec, stdio: Stdio) -> Result<Starting, StartError> {
        let dir = self.container_dir(&spec.name);
        let state_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StartError::StateDir { path, source }
        };
        let upper = Upper {
            upperdir: dir.join("upper"),
            workdir: dir.join("work"),
            volatile: spec.throwaway,
        };
        let scratch = dir.join("scratch");
        for d in [&upper.upperdir, &upper.workdir, &scratch] {
            std::fs::create_dir_all(d).map_err(state_err(d))?;
        }
        let hostname = spec.hostname();
        let (resolv, hosts) = match &spec.network {
            Network::Host => (
                read_small("/etc/resolv.conf"),
                hosts_file(hostname, None, &[]),
            ),
            Network::None => (String::new(), hosts_file(hostname, None, &[])),
            Network::Bridge(a) => (
                container_resolv_conf(&read_small("/etc/resolv.conf")),
                hosts_file(hostname, Some(a.address), &a.peers),
            ),
        };
        let etc_contents = [format!("{hostname}\n"), hosts, resolv];
        let mut volume_sources = Vec::with_capacity(spec.volumes.len());
        for v in &spec.volumes {
            let src = match &v.source {
                // Created (and seeded from the image) by the child: `volume::ensure`.
                VolumeSource::Named(n) => self.volume_dir(n),
                VolumeSource::Host(p) => {
                    if !p.exists() {
                        return Err(StartError::VolumeSource { path: p.clone() });
                    }
                    p.clone()
                }
            };
            volume_sources.push(src);
        }

        // Everything that can fail comes before the cgroup leaf, whose every error path
        // must remove it. The parent's end of the sync pipe is non-blocking: PID 1 polls it.
        let (sync_read, sync_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(StartError::Pipe)?;
        nix::fcntl::fcntl(
            sync_read.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(StartError::Pipe)?;
        let raw = |fd: &Option<OwnedFd>| fd.as_ref().map(|f| f.as_raw_fd() as RawFd);
        // A socket in the host's namespace for the child to create its veth pair with.
        let netlink = match &spec.network {
            Network::Bridge(_) => Some(Netlink::open().map_err(StartError::Netlink)?),
            _ => None,
        };
        let leaf = self.cgroups.create_leaf(&spec.name)?;
        if let Err(e) = leaf.set_limits(&spec.limits) {
            let _ = leaf.remove();
            return Err(e.into());
        }
        let setup = Setup {
            netlink,
            spec,
            store_root: &self.store,
            scratch: &scratch,
            upper,
            etc_contents,
            volume_sources,
            stdio: [raw(&stdio.stdin), raw(&stdio.stdout), raw(&stdio.stderr)],
            console: stdio
                .console
                .as_ref()
                .map(|c| (c.socket.as_raw_fd(), c.size)),
            sync: sync_write,
        };
        let mut namespaces =
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
        if spec.network != Network::Host {
            namespaces |= libc::CLONE_NEWNET;
        }
        let started = Instant::now();
        let (pid, pidfd) = match sys::clone3_into_cgroup(namespaces, leaf.fd()) {
            Ok(Forked::Child) => sys::child_exit(child::SETUP_FAILED, || child::run(setup)),
            Ok(Forked::Parent { pid, pidfd }) => (Pid::from_raw(pid), pidfd),
            Err(e) => {
                let _ = leaf.remove();
                return Err(StartError::Clone(e));
            }
        };
        drop(setup);
        drop(stdio);
        let sync = File::from(sync_read);
        Ok(Starting {
            name: spec.name.clone(),
            pid,
            pidfd,
            leaf,
            sync,
            report: Vec::new(),
            started,
            deadline: started + SETUP_TIMEOUT,
        })
    }

    /// Removes a stopped container's state directory and its gc hold.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        if let Ok(store) = berth_imagefs::Store::open_existing(&self.store) {
            let _ = store.release(&image_hold(name));
        }
        match std::fs::remove_dir_all(self.container_dir(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Reaps `pid` if it exits within `limit`, for [`Starting::wait`] (`berth run`; PID 1
/// uses [`Starting::advance`] and reaps in its loop). A child stuck in the kernel after
/// SIGKILL must not hold `berth run` forever: it is left to be reaped at its exit.
/// Returns its status, or `None` if it is still there (or was not ours to reap).
fn reap_within(pid: Pid, limit: Duration) -> Option<WaitStatus> {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Ok(status) => return Some(status),
            Err(_) => return None,
        }
    }
    None
}

fn read_small(path: &str) -> String {
    File::open(path)
        .and_then(|f| {
            let mut s = String::new();
            f.take(64 << 10).read_to_string(&mut s)?;
            Ok(s)
        })
        .unwrap_or_default()
}

/// A container between `clone3` and its program's `execve`. The child reports on
/// the sync pipe: `stop-signal N` from the image, `exec` right before `execve`, and
/// `error MESSAGE` when setup (or `execve`) fails; the pipe closes on `execve`
/// (close-on-exec) or when the child exits. EOF after `exec` and no error is a start;
/// EOF without `exec` is a setup that died.
#[derive(Debug)]
pub struct Starting {
    pub name: String,
    pub pid: Pid,
    pidfd: OwnedFd,
    leaf: Leaf,
    /// The read end of the sync pipe, non-blocking.
    sync: File,
    report: Vec<u8>,
    started: Instant,
    deadline: Instant,
}

impl Starting {
    /// Readable when the child has reported or finished.
    pub fn sync_fd(&self) -> BorrowedFd<'_> {
        self.sync.as_fd()
    }

    /// When the child must have reached `execve`; past it the start has failed.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The time since `clone3`.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Reads what the child has reported, without blocking. `None` while setup goes
    /// on; at the end, the image's stop signal (if any) once the program runs, or why
    /// setup failed. Once the child is gone, the end is always there.
    pub fn advance(&mut self) -> Option<Result<Option<i32>, StartError>> {
        let mut buf = [0u8; 4096];
        loop {
            match self.sync.read(&mut buf) {
                Ok(0) => return Some(parse_report(&self.report, &self.name)),
                Ok(n) => {
                    if (self.report.len() as u64) < MAX_REPORT {
                        self.report
                            .extend_from_slice(buf.get(..n).unwrap_or_default());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => {
                    return Some(Err(StartError::Setup {
                        name: self.name.clone(),
                        message: format!("reading setup report: {e}"),
                        code: child::RUNTIME_FAILED,
                    }))
                }
            }
        }
    }

    /// The error for a child that missed its [`Starting::deadline`].
    pub fn timeout_error(&self) -> StartError {
        StartError::Timeout {
            name: self.name.clone(),
            secs: SETUP_TIMEOUT.as_secs(),
        }
    }

    /// The running container, once [`Starting::advance`] reported success.
    pub fn into_running(self, image_stop_signal: Option<i32>) -> Running {
        Running {
            name: self.name,
            pid: self.pid,
            pidfd: self.pidfd,
            image_stop_signal,
            leaf: self.leaf,
            started: self.started,
        }
    }

    /// Sends SIGKILL to the setup child, through its pidfd (see [`Running::signal`]):
    /// harmless once it has been reaped.
    pub fn kill(&self) {
        let _ = sys::pidfd_signal(self.pidfd.as_fd(), nix::sys::signal::Signal::SIGKILL);
    }

    /// Kills every process in the container's cgroup (for a child that lingers after
    /// SIGKILL).
    pub fn kill_cgroup(&self) {
        self.leaf.kill();
    }

    /// The cgroup leaf of a child that failed and has been reaped, for removal.
    pub fn into_leaf(self) -> Leaf {
        self.leaf
    }

    /// Blocks until the program runs (or setup fails, or the deadline passes). A
    /// failed child is killed and reaped and its cgroup removed.
    pub fn wait(mut self) -> Result<Running, StartError> {
        let outcome = loop {
            if let Some(outcome) = self.advance() {
                break outcome;
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(self.timeout_error());
            }
            let mut fds = [PollFd::new(self.sync.as_fd(), PollFlags::POLLIN)];
            let ms = PollTimeout::try_from(left.as_millis().clamp(1, 60_000) as i32)
                .unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, ms) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    break Err(StartError::Setup {
                        name: self.name.clone(),
                        message: format!("waiting for setup: {e}"),
                        code: child::RUNTIME_FAILED,
                    })
                }
            }
        };
        match outcome {
            Ok(stop_signal) => Ok(self.into_running(stop_signal)),
            Err(e) => {
                self.kill();
                let reaped = reap_within(self.pid, Duration::from_secs(1))
                    .map(|status| (status, self.leaf.oom_kills()));
                let _ = self.leaf.remove();
                match Exit::failed_setup(reaped) {
                    exit if exit.oom_killed => Err(StartError::SetupOomKilled {
                        name: self.name,
                        exit,
                    }),
                    _ => Err(e),
                }
            }
        }
    }
}

/// What the child reported by the time its end of the pipe closed: the image's stop
/// signal if the program runs, else why setup failed. A child that reached `execve`
/// said so last ([`child::EXEC_REPORT`]); without that line it died during setup.
fn parse_report(report: &[u8], name: &str) -> Result<Option<i32>, StartError> {
    let text = String::from_utf8_lossy(report);
    let mut stop_signal = None;
    let mut execs = false;
    let mut code = child::RUNTIME_FAILED;
    for line in text.lines() {
        if let Some(c) = line.strip_prefix(child::CODE_REPORT) {
            code = c.trim().parse().unwrap_or(child::RUNTIME_FAILED);
        }
        if let Some(msg) = line.strip_prefix("error ") {
            return Err(StartError::Setup {
                name: name.into(),
                message: msg.to_string(),
                code,
            });
        }
        if let Some(n) = line.strip_prefix("stop-signal ") {
            stop_signal = n.trim().parse().ok();
        }
        execs |= line == child::EXEC_REPORT;
    }
    if !execs {
        return Err(StartError::Setup {
            name: name.into(),
            message: "the setup process ended before running the program, without a report \
                      (killed by a signal, or out of memory under the container's limit?)"
                .to_owned(),
            code: child::RUNTIME_FAILED,
        });
    }
    Ok(stop_signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_error_wins_and_stop_signal_is_read() {
        assert_eq!(
            parse_report(b"stop-signal 3\nexec\n", "c").unwrap(),
            Some(3)
        );
        assert_eq!(parse_report(b"exec\n", "c").unwrap(), None);
        let e = parse_report(b"stop-signal 3\nerror mounting /proc: EPERM\n", "c").unwrap_err();
        assert_eq!(e.to_string(), "container c: mounting /proc: EPERM");
        assert_eq!(e.exit_code(), 125, "no code reported: berth failed");
        // execve failed after the child said it was about to run it.
        let e = parse_report(b"exec\nerror-code 127\nerror /bin/x: ENOENT\n", "c").unwrap_err();
        assert_eq!(e.to_string(), "container c: /bin/x: ENOENT");
        assert_eq!(e.exit_code(), 127);
    }

    #[test]
    fn a_setup_killed_for_memory_is_an_oom_kill() {
        use nix::sys::signal::Signal;
        let pid = Pid::from_raw(7);
        let killed = WaitStatus::Signaled(pid, Signal::SIGKILL, false);
        let oom = Exit::failed_setup(Some((killed, 1)));
        assert!(oom.oom_killed && oom.code == 137, "{oom}");
        // Killed by the caller after an error report, or exited on its own: "cannot run".
        for reaped in [
            Some((killed, 0)),
            Some((WaitStatus::Exited(pid, 127), 0)),
            None,
        ] {
            let exit = Exit::failed_setup(reaped);
            assert!(!exit.oom_killed && exit.code == 127, "{exit}");
        }
    }

    #[test]
    fn an_end_without_the_exec_line_is_a_failed_start() {
        for report in [&b""[..], b"stop-signal 15\n", b"stop-signal 15\nexe"] {
            let e = parse_report(report, "c").unwrap_err();
            assert!(
                e.to_string().contains("ended before running the program"),
                "{e}"
            );
        }
    }

    #[test]
    fn wait_statuses_read_as_words() {
        use nix::sys::signal::Signal;
        let pid = Pid::from_raw(80);
        let read = |status| ProcessStatus(status).to_string();
        assert_eq!(read(WaitStatus::Exited(pid, 1)), "exit 1");
        assert_eq!(
            read(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            "killed by SIGKILL"
        );
        assert_eq!(
            read(WaitStatus::Signaled(pid, Signal::SIGSEGV, true)),
            "killed by SIGSEGV (core dumped)"
        );
        assert_eq!(
            read(WaitStatus::Stopped(pid, Signal::SIGSTOP)),
            "stopped by SIGSTOP"
        );
        for status in [
            WaitStatus::Exited(pid, 1),
            WaitStatus::Signaled(pid, Signal::SIGKILL, false),
        ] {
            assert!(!read(status).contains("Pid("), "{}", read(status));
        }
    }
}
