//! A running guest: QEMU plus the threads that watch it.
//!
//! ```text
//!   reaper thread   spawns QEMU (so PR_SET_PDEATHSIG is tied to a thread that
//!                   lives exactly as long as QEMU), then blocks in waitid()
//!                   and records the exit status
//!   serial thread   QEMU stdout (the guest's ttyS0) -> console text + log file
//!   stderr thread   QEMU stderr -> its own buffer + log file
//!   watchdog        sleeps on the condvar until QEMU exits or the VM's
//!                   deadline passes, then SIGKILLs QEMU
//! ```
//!
//! QEMU is only ever signalled while the shared lock is held and before the
//! reaper has recorded its exit; the reaper reaps under that same lock, so a
//! recycled pid can never be hit. Dropping a [`Vm`] kills and reaps QEMU,
//! joins the threads and removes the per-VM temp dir; if the thread is
//! panicking (a failed assertion) it first prints the whole console.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::console::{deadline_after, Shared, State, Until, WaitError, TAIL_LINES};
use crate::qemu::{sanitize, ConfigError, Qemu};
use crate::qmp::{Qmp, QmpError};

/// How long QEMU has to start and connect to the QMP socket.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Drop waits for a SIGKILLed QEMU to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong with a VM.
///
/// `Debug` prints the same text as `Display`, so a test's `.unwrap()` shows
/// the console tail as readable lines rather than one escaped string.
#[derive(thiserror::Error)]
pub enum VmError {
    /// The builder holds an option QEMU would misparse.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The per-VM temp dir could not be created.
    #[error("creating vm temp dir {path}: {source}")]
    TempDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The QMP socket could not be bound.
    #[error("listening for qmp on {path}: {source}")]
    QmpListen {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The console log file could not be created.
    #[error("creating console log {path}: {source}")]
    LogFile {
        /// The log file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A harness thread could not be started.
    #[error("starting the {which} thread: {source}")]
    Thread {
        /// Which thread.
        which: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// QEMU could not be started.
    #[error("running {program}: {source}")]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// QEMU exited before it connected to QMP (bad arguments, usually).
    #[error("qemu for vm `{vm}` exited during start-up ({status})\n{tail}")]
    EarlyExit {
        /// The VM's name.
        vm: String,
        /// QEMU's exit status, described.
        status: String,
        /// Console and QEMU stderr.
        tail: String,
    },
    /// QEMU did not connect to the QMP socket in time.
    #[error("qemu for vm `{vm}` did not connect to qmp within {timeout:?}\n{tail}")]
    QmpConnect {
        /// The VM's name.
        vm: String,
        /// How long we waited.
        timeout: Duration,
        /// Console and QEMU stderr.
        tail: String,
    },
    /// Accepting the QMP connection failed.
    #[error("accepting qmp connection on {path}: {source}")]
    QmpAccept {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A console wait failed.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// A QMP command failed.
    #[error("vm `{vm}`: {source}")]
    Qmp {
        /// The VM's name.
        vm: String,
        /// The QMP failure.
        source: QmpError,
    },
    /// Writing to the serial console failed.
    #[error("typing on the console of vm `{vm}`: {source}")]
    Send {
        /// The VM's name.
        vm: String,
        /// The underlying error.
        source: io::Error,
    },
    /// QEMU did not exit in time.
    #[error("qemu for vm `{vm}` still running after {timeout:?}\n{tail}")]
    ExitTimeout {
        /// The VM's name.
        vm: String,
        /// How long we waited.
        timeout: Duration,
        /// Console and QEMU stderr.
        tail: String,
    },
    /// QEMU exited but its status could not be collected.
    #[error("qemu for vm `{vm}` exited but its status could not be collected")]
    StatusUnknown {
        /// The VM's name.
        vm: String,
    },
}

impl std::fmt::Debug for VmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Results of VM operations.
pub type Result<T, E = VmError> = std::result::Result<T, E>;

/// A running QEMU guest. See the [crate docs](crate) for an example.
#[derive(Debug)]
pub struct Vm {
    name: String,
    test: Option<String>,
    log_path: PathBuf,
    temp_dir: PathBuf,
    pid: Pid,
    shared: Arc<Shared>,
    cursor: Mutex<usize>,
    stdin: Mutex<Option<ChildStdin>>,
    qmp: Mutex<Option<Qmp>>,
    threads: Vec<JoinHandle<()>>,
}

/// The pipes of a freshly spawned QEMU, handed from the reaper thread.
struct Spawned {
    pid: u32,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl Qemu {
    /// Starts QEMU and returns once it has connected to QMP. The guest is
    /// already running; its console is being recorded from the first byte.
    pub fn spawn(self) -> Result<Vm> {
        self.validate()?;
        let test = thread::current().name().map(str::to_string);
        let name = sanitize(
            self.name
                .as_deref()
                .or(test.as_deref().filter(|t| *t != "main"))
                .unwrap_or("vm"),
        );
        let temp_dir = make_temp_dir(&name)?;
        // From here on, errors drop `guard`, which removes the temp dir.
        let mut guard = TempDirGuard(Some(temp_dir.clone()));
        let qmp_path = temp_dir.join("qmp.sock");
        let listener = UnixListener::bind(&qmp_path).map_err(|source| VmError::QmpListen {
            path: qmp_path.clone(),
            source,
        })?;
        let log_dir = self.log_dir.clone().unwrap_or_else(crate::log_dir);
        let log_path = log_dir.join(format!("{}.log", unique_log_name(&name)));
        let log = std::fs::create_dir_all(&log_dir)
            .and_then(|()| File::create(&log_path))
            .map_err(|source| VmError::LogFile {
                path: log_path.clone(),
                source,
            })?;

        let named = self.clone().name(name.clone());
        let argv = named.argv(&qmp_path);
        let shared = Arc::new(Shared::default());
        shared.lock().log_path = Some(log_path.clone());
        let mut threads = Vec::new();

        let (tx, rx) = mpsc::channel();
        let reaper = {
            let shared = Arc::clone(&shared);
            let program = self.program.clone();
            thread::Builder::new()
                .name(format!("qemu-{name}-reaper"))
                .spawn(move || spawn_and_reap(program, argv, tx, &shared))
                .map_err(|source| VmError::Thread {
                    which: "reaper",
                    source,
                })?
        };
        let spawned = match rx.recv() {
            Ok(Ok(spawned)) => spawned,
            Ok(Err(source)) => {
                let _ = reaper.join();
                return Err(VmError::Spawn {
                    program: self.program,
                    source,
                });
            }
            Err(mpsc::RecvError) => {
                let _ = reaper.join();
                return Err(VmError::Spawn {
                    program: self.program,
                    source: io::Error::other("the reaper thread died before spawning"),
                });
            }
        };
        threads.push(reaper);

        let mut vm = Vm {
            name: name.clone(),
            test,
            log_path,
            temp_dir,
            pid: Pid::from_raw(i32::try_from(spawned.pid).unwrap_or(i32::MAX)),
            shared: Arc::clone(&shared),
            cursor: Mutex::new(0),
            stdin: Mutex::new(spawned.stdin),
            qmp: Mutex::new(None),
            threads,
        };
        // The Vm now owns the temp dir and cleans up (kills QEMU) on error.
        guard.0 = None;

        let log = Arc::new(Mutex::new(log));
        if let Some(stdout) = spawned.stdout {
            let (shared, log) = (Arc::clone(&shared), Arc::clone(&log));
            vm.start_thread("serial", move || read_serial(stdout, &shared, &log))?;
        }
        if let Some(stderr) = spawned.stderr {
            let (shared, log) = (Arc::clone(&shared), Arc::clone(&log));
            vm.start_thread("stderr", move || read_stderr(stderr, &shared, &log))?;
        }
        {
            let (shared, pid) = (Arc::clone(&shared), vm.pid);
            let deadline = deadline_after(self.deadline);
            let limit = self.deadline;
            vm.start_thread("watchdog", move || {
                watchdog(&shared, pid, deadline, limit, &log)
            })?;
        }

        let stream = vm.accept_qmp(&listener, &qmp_path)?;
        let qmp = Qmp::handshake(stream, QMP_CONNECT_TIMEOUT)
            .map_err(|source| VmError::Qmp { vm: name, source })?;
        *vm.qmp.lock().unwrap_or_else(PoisonError::into_inner) = Some(qmp);
        Ok(vm)
    }
}

impl Vm {
    fn start_thread(
        &mut self,
        which: &'static str,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<()> {
        let handle = thread::Builder::new()
            .name(format!("qemu-{}-{which}", self.name))
            .spawn(f)
            .map_err(|source| VmError::Thread { which, source })?;
        self.threads.push(handle);
        Ok(())
    }

    /// Waits for QEMU to connect to the QMP socket, watching for it exiting.
    fn accept_qmp(
        &self,
        listener: &UnixListener,
        path: &Path,
    ) -> Result<std::os::unix::net::UnixStream> {
        let deadline = Instant::now() + QMP_CONNECT_TIMEOUT;
        loop {
            // The connection normally arrives within milliseconds of exec;
            // the short slices only bound how late an early exit is noticed.
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(n) if n > 0 => {
                    let (stream, _) = listener.accept().map_err(|source| VmError::QmpAccept {
                        path: path.to_path_buf(),
                        source,
                    })?;
                    return Ok(stream);
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    return Err(VmError::QmpAccept {
                        path: path.to_path_buf(),
                        source: e.into(),
                    })
                }
            }
            let state = self.shared.lock();
            if state.exited {
                drop(state);
                // Let the readers drain QEMU's last words before quoting them.
                self.wait_eof(Duration::from_secs(2));
                let state = self.shared.lock();
                return Err(VmError::EarlyExit {
                    vm: self.name.clone(),
                    status: state.describe_exit(),
                    tail: state.tail(&self.name, TAIL_LINES),
                });
            }
            if Instant::now() >= deadline {
                return Err(VmError::QmpConnect {
                    vm: self.name.clone(),
                    timeout: QMP_CONNECT_TIMEOUT,
                    tail: state.tail(&self.name, TAIL_LINES),
                });
            }
        }
    }

    fn wait_eof(&self, timeout: Duration) {
        let deadline = deadline_after(timeout);
        let mut state = self.shared.lock();
        while !state.eof {
            let (guard, expired) = self.shared.wait_until(state, deadline);
            state = guard;
            if expired {
                break;
            }
        }
    }

    /// The VM's name, used for its log file and in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The console log file (serial output, and QEMU's stderr marked as such).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Waits until `needle` appears on the console after the cursor, and
    /// returns the line holding it as far as it has arrived (the rest of the
    /// line may still be on its way: see [`Vm::wait_for_line`]). The cursor
    /// moves past the match, so waiting for the same text again needs it to
    /// be printed again. Fails early if QEMU exits. Errors quote the last
    /// 80 console lines.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        Ok(self.wait_for_any(&[needle], timeout)?.1)
    }

    /// Like [`Vm::wait_for`], but waits for the line holding `needle` to
    /// end and returns all of it: use this to parse what follows the needle
    /// (`berth: ip=...`). Only complete lines are searched, so it would miss
    /// a prompt that never ends its line; use [`Vm::wait_for`] for those.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Result<String> {
        Ok(self.wait(&[needle], Until::LineEnds, timeout)?.1)
    }

    /// Like [`Vm::wait_for`] for several needles: returns the index of the
    /// one that appeared first, and its line.
    pub fn wait_for_any(&self, needles: &[&str], timeout: Duration) -> Result<(usize, String)> {
        self.wait(needles, Until::Seen, timeout)
    }

    fn wait(&self, needles: &[&str], until: Until, timeout: Duration) -> Result<(usize, String)> {
        let mut cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(self
            .shared
            .wait_for_any(&self.name, &mut cursor, needles, until, timeout)?)
    }

    /// Waits until every one of `needles` is somewhere on the console, in any order
    /// and whatever the cursor (concurrent output, such as several containers', has no
    /// order to wait in); returns the console then, or `None` on timeout.
    pub fn wait_for_all(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let console = self.console();
            if needles.iter().all(|n| console.contains(n)) {
                return Some(console);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Moves the cursor to the end of what has arrived, so the next wait
    /// only sees output printed from now on.
    pub fn skip_console(&self) {
        let end = self.shared.lock().text.len();
        *self.cursor.lock().unwrap_or_else(PoisonError::into_inner) = end;
    }

    /// Everything the guest printed so far (`\r` removed).
    pub fn console(&self) -> String {
        self.shared.lock().text.clone()
    }

    /// What QEMU itself wrote to stderr so far.
    pub fn qemu_stderr(&self) -> String {
        self.shared.lock().stderr.clone()
    }

    /// Types `text` on the serial console, as is.
    pub fn send(&self, text: &str) -> Result<()> {
        let mut stdin = self.stdin.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match stdin.as_mut() {
            Some(pipe) => pipe.write_all(text.as_bytes()).and_then(|()| pipe.flush()),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        };
        result.map_err(|source| VmError::Send {
            vm: self.name.clone(),
            source,
        })
    }

    /// Types `line` and a newline (`\n`, which a cooked tty takes as Enter).
    pub fn send_line(&self, line: &str) -> Result<()> {
        self.send(&format!("{line}\n"))
    }

    /// Runs a QMP command (`args` may be `None` or a JSON object) and
    /// returns its `return` value.
    pub fn qmp(&self, cmd: &str, args: impl Into<Option<Value>>) -> Result<Value> {
        let mut qmp = self.qmp.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(qmp) = qmp.as_mut() else {
            return Err(self.qmp_err(QmpError::Closed { what: cmd.into() }));
        };
        qmp.execute(cmd, args.into()).map_err(|e| self.qmp_err(e))
    }

    /// Waits for the QMP event `name` (e.g. `SHUTDOWN`, `RESET`,
    /// `GUEST_PANICKED` with [`Qemu::pvpanic`]); events that arrived earlier
    /// count too.
    pub fn wait_qmp_event(&self, name: &str, timeout: Duration) -> Result<Value> {
        let mut qmp = self.qmp.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(qmp) = qmp.as_mut() else {
            let what = format!("event {name}");
            return Err(self.qmp_err(QmpError::Closed { what }));
        };
        qmp.wait_event(name, timeout).map_err(|e| self.qmp_err(e))
    }

    fn qmp_err(&self, source: QmpError) -> VmError {
        VmError::Qmp {
            vm: self.name.clone(),
            source,
        }
    }

    /// `query-status`'s `status` field, e.g. `running`.
    pub fn status(&self) -> Result<String> {
        let v = self.qmp("query-status", None)?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// Presses the ACPI power button.
    pub fn system_powerdown(&self) -> Result<()> {
        self.qmp("system_powerdown", None).map(drop)
    }

    /// Presses Ctrl-Alt-Del on the PS/2 keyboard (QMP `send-key`). The
    /// guest kernel needs its i8042/atkbd driver to notice.
    pub fn send_ctrl_alt_del(&self) -> Result<()> {
        let keys: Vec<Value> = ["ctrl", "alt", "delete"]
            .iter()
            .map(|k| json!({ "type": "qcode", "data": k }))
            .collect();
        self.qmp("send-key", json!({ "keys": keys })).map(drop)
    }

    /// Asks QEMU to exit now (QMP `quit`). QEMU may close the socket before
    /// answering, which counts as success.
    pub fn quit(&self) -> Result<()> {
        match self.qmp("quit", None) {
            Err(VmError::Qmp { source, .. }) if source.is_disconnect() => Ok(()),
            other => other.map(drop),
        }
    }

    /// Kills QEMU with SIGKILL if it is still running.
    pub fn kill(&self) {
        let state = self.shared.lock();
        kill_locked(&state, self.pid);
    }

    /// Waits for QEMU to exit and returns its status.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        if !self.shared.wait_exited(timeout) {
            let state = self.shared.lock();
            return Err(VmError::ExitTimeout {
                vm: self.name.clone(),
                timeout,
                tail: state.tail(&self.name, TAIL_LINES),
            });
        }
        self.shared
            .lock()
            .status
            .ok_or_else(|| VmError::StatusUnknown {
                vm: self.name.clone(),
            })
    }

    /// Whether the watchdog killed QEMU for overrunning its deadline.
    pub fn watchdog_fired(&self) -> bool {
        self.shared.lock().watchdog_fired
    }

    /// The text [`Vm::dump_console`] prints.
    pub fn console_dump(&self) -> String {
        let state = self.shared.lock();
        let test = self
            .test
            .as_deref()
            .map(|t| format!(" (test `{t}`)"))
            .unwrap_or_default();
        let mut s = format!(
            "===== berth-qemu-tests: console of vm `{}`{test}, qemu {} =====\n",
            self.name,
            state.describe_exit()
        );
        s.push_str(&state.text);
        if !state.text.is_empty() && !state.text.ends_with('\n') {
            s.push('\n');
        }
        if !state.stderr.is_empty() {
            s.push_str("===== qemu stderr =====\n");
            s.push_str(&state.stderr);
            if !state.stderr.ends_with('\n') {
                s.push('\n');
            }
        }
        s.push_str(&format!(
            "===== end of console of vm `{}`; full log: {} =====\n",
            self.name,
            self.log_path.display()
        ));
        s
    }

    /// Prints the whole console to stderr (which libtest shows for failed
    /// tests). Drop does this by itself when the thread is panicking.
    pub fn dump_console(&self) {
        eprint!("{}", self.console_dump());
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dump_console();
        }
        self.kill();
        self.stdin
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.qmp
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let reaped = self.shared.wait_exited(REAP_TIMEOUT);
        self.shared.lock().stopping = true;
        self.shared.notify();
        // The readers finish at EOF, which follows QEMU's death; if it could
        // not be reaped, joining might hang, so the threads are left behind.
        if reaped {
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
        let _ = std::fs::remove_dir_all(&self.temp_dir);
    }
}

/// Signals QEMU unless the reaper has already reaped it (`state` must be
/// the held lock, which the reaper also holds while reaping).
fn kill_locked(state: &State, pid: Pid) {
    if !state.exited {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// Body of the reaper thread: spawn QEMU, hand its pipes over, wait for it.
fn spawn_and_reap(
    program: PathBuf,
    argv: Vec<std::ffi::OsString>,
    tx: mpsc::Sender<io::Result<Spawned>>,
    shared: &Shared,
) {
    let mut cmd = Command::new(&program);
    cmd.args(&argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and makes
    // one prctl(2) call, which is async-signal-safe; it neither allocates
    // nor touches state shared with the parent. PR_SET_PDEATHSIG kills
    // QEMU when this thread ends, i.e. if the test process dies without
    // running Drop (see prctl(2)); this thread outlives QEMU otherwise.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
    }
    let mut child: Child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    let spawned = Spawned {
        pid: child.id(),
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
    };
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    if tx.send(Ok(spawned)).is_err() {
        let _ = child.kill();
    }
    // Wait without reaping, so the pid stays ours while others may signal it.
    let exited = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    while let Err(Errno::EINTR) = waitid(Id::Pid(pid), exited) {}
    let mut state = shared.lock();
    state.status = child.wait().ok();
    state.exited = true;
    drop(state);
    shared.notify();
}

/// Body of the serial thread: console bytes to the shared text and the log.
fn read_serial(mut stdout: ChildStdout, shared: &Shared, log: &Mutex<File>) {
    let mut buf = [0u8; 4096];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = log
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write_all(&buf[..n]);
                shared.lock().push_output(&buf[..n]);
                shared.notify();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    shared.lock().eof = true;
    shared.notify();
}

/// Body of the stderr thread: QEMU's complaints to their buffer and the log.
fn read_stderr(mut stderr: ChildStderr, shared: &Shared, log: &Mutex<File>) {
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let marked: String = text
                    .lines()
                    .map(|l| format!("[qemu stderr] {l}\n"))
                    .collect();
                let _ = log
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write_all(marked.as_bytes());
                shared.lock().stderr.push_str(&text);
                shared.notify();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Body of the watchdog thread.
fn watchdog(shared: &Shared, pid: Pid, deadline: Instant, limit: Duration, log: &Mutex<File>) {
    let mut state = shared.lock();
    loop {
        if state.exited || state.stopping {
            return;
        }
        let (guard, expired) = shared.wait_until(state, deadline);
        state = guard;
        if expired && !state.exited && !state.stopping {
            let note = state.push_note(&format!(
                "watchdog: vm deadline of {limit:?} exceeded, killing qemu (pid {pid})"
            ));
            let _ = log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write_all(note.as_bytes());
            state.watchdog_fired = true;
            kill_locked(&state, pid);
            drop(state);
            shared.notify();
            return;
        }
    }
}

/// Creates a fresh private directory for one VM's sockets.
fn make_temp_dir(name: &str) -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Unix socket paths are limited to 108 bytes, so keep this short.
        let short: String = name.chars().take(24).collect();
        let path = base.join(format!("berth-qemu-{}-{n}-{short}", std::process::id()));
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(VmError::TempDir { path, source }),
        }
    }
}

/// `name`, then `name-2`, `name-3`... for further VMs of the same name in
/// this process, so one test's VMs don't overwrite each other's logs.
fn unique_log_name(name: &str) -> String {
    static SEEN: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());
    let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    let count = seen.entry(name.to_string()).or_insert(0);
    *count += 1;
    match *count {
        1 => name.to_string(),
        n => format!("{name}-{n}"),
    }
}

/// Removes a temp dir unless disarmed by taking the path out.
struct TempDirGuard(Option<PathBuf>);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Vm>();
        send_sync::<VmError>();
    }

    #[test]
    fn log_names_are_unique_per_process() {
        assert_eq!(unique_log_name("unique_a"), "unique_a");
        assert_eq!(unique_log_name("unique_a"), "unique_a-2");
        assert_eq!(unique_log_name("unique_b"), "unique_b");
        assert_eq!(unique_log_name("unique_a"), "unique_a-3");
    }

    #[test]
    fn missing_binary_is_a_spawn_error_and_leaves_no_temp_dir() {
        let before = count_temp_dirs();
        let logs = std::env::temp_dir().join(format!("berth-unit-logs-{}", std::process::id()));
        let err = Qemu::new("/nonexistent/vmlinuz")
            .program("/nonexistent/qemu-system-x86_64")
            .name("missing_binary")
            .log_dir(&logs)
            .spawn()
            .unwrap_err();
        std::fs::remove_dir_all(&logs).unwrap();
        assert!(matches!(err, VmError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/qemu-system-x86_64"));
        assert!(count_temp_dirs() <= before);
    }

    fn count_temp_dirs() -> usize {
        let prefix = format!("berth-qemu-{}-", std::process::id());
        std::fs::read_dir(std::env::temp_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .count()
            })
            .unwrap_or(0)
    }
}
