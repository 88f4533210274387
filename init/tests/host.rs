//! Host tests that need root: reaping, signal handling and the shutdown order.
//!
//! Two kinds:
//! - a forked child made a subreaper stands in for PID 1 and runs the library's reaper
//!   against an orphan storm;
//! - the real static `berth-init` runs as PID 1 of new PID, mount, UTS, network and IPC
//!   namespaces (`unshare`), chrooted into a scratch root. `reboot(2)` in a PID namespace
//!   ends its init with SIGINT for power-off and SIGHUP for restart, so how the process
//!   dies tells which one PID 1 chose.
//!
//! Runs without the libtest harness (`harness = false`): the scenarios fork, which is only
//! safe in a single-threaded process. Without root the suite skips, unless
//! `BERTH_REQUIRE_ROOT=1` (set by `make test`), where it fails.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

type TestResult = Result<(), String>;
type Scenario = (&'static str, fn() -> TestResult);

fn main() {
    if !nix::unistd::geteuid().is_root() {
        if std::env::var("BERTH_REQUIRE_ROOT").as_deref() == Ok("1") {
            eprintln!("host tests need root (BERTH_REQUIRE_ROOT=1 is set)");
            std::process::exit(1);
        }
        println!("skipping init host tests: not root");
        return;
    }
    let tests: &[Scenario] = &[
        ("subreaper_reaps_orphan_storm", subreaper_reaps_orphan_storm),
        (
            "pid1_sigterm_powers_off_in_order",
            pid1_sigterm_powers_off_in_order,
        ),
        ("pid1_sigint_reboots", pid1_sigint_reboots),
        ("pid1_reaps_orphans", pid1_reaps_orphans),
        ("pid1_broken_config_degrades", pid1_broken_config_degrades),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        let started = Instant::now();
        match test() {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({} ms)", started.elapsed().as_millis());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n{e}\n");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> TestResult {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// Zombie children of `parent`, from the host's /proc.
fn zombies_of(parent: Pid) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if state == Some("Z") && ppid == Some(&parent.as_raw().to_string()) {
            found.push(pid);
        }
    }
    found
}

const ORPHANS: usize = 300;

fn subreaper_reaps_orphan_storm() -> TestResult {
    match fork_single_threaded()? {
        ForkResult::Child => {
            let code = match orphan_storm_child() {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            other => Err(format!("subreaper child ended with {other:?}")),
        },
    }
}

/// Forks. `fork` is unsafe because of what the child of a multi-threaded process may do;
/// this scenario runs first, before any test has started a thread.
fn fork_single_threaded() -> Result<ForkResult, String> {
    // SAFETY: the process is single-threaded (harness = false, no threads spawned before
    // this point in any scenario that forks), so the child may run arbitrary code.
    unsafe { fork() }.map_err(|e| format!("fork: {e}"))
}

/// In the forked child: become a subreaper, let `ORPHANS` double-forked grandchildren
/// exit, and reap them all through the same signalfd + reaper path PID 1 uses.
fn orphan_storm_child() -> TestResult {
    use berth_init::{reaper::reap_all, signals::Signals};
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
    let mut signals = Signals::new().map_err(|e| e.to_string())?;
    let me = nix::unistd::getpid();
    for _ in 0..ORPHANS {
        // Each intermediate shell starts a grandchild in the background and exits at
        // once, orphaning it to us.
        Command::new("/bin/sh")
            .args(["-c", "sleep 0.2 & exit 0"])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
    }
    let mut reaped = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = reap_all();
        reaped += r.exited.len();
        if r.no_children {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {reaped} reaped before the deadline"));
        }
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(500u16));
        signals.drain();
    }
    ensure(reaped == 2 * ORPHANS, || {
        format!(
            "reaped {reaped}, expected {} (shells and orphans)",
            2 * ORPHANS
        )
    })?;
    let zombies = zombies_of(me);
    ensure(zombies.is_empty(), || format!("zombies left: {zombies:?}"))
}

/// The static init binary that `make` builds for images.
fn static_init() -> Result<PathBuf, String> {
    let path = std::env::var_os("BERTH_INIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/x86_64-unknown-linux-gnu/release/berth-init")
        });
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build the static init first (`make init`)",
            path.display()
        ))
    }
}

/// A PID 1 running in its own namespaces, with its console captured line by line.
struct NsInit {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
    root: PathBuf,
}

impl NsInit {
    fn start(config: &str) -> Result<NsInit, String> {
        let root = std::env::temp_dir().join(format!(
            "berth-pidns-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ rand_ish()
        ));
        std::fs::create_dir_all(root.join("etc/berth")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(root.join("bin")).map_err(|e| e.to_string())?;
        let init = static_init()?;
        std::fs::copy(&init, root.join("init")).map_err(|e| e.to_string())?;
        // netd and the importer, as `berth build` lays them out.
        let helper = root.join(berth_init::helper::helper_path_in_root());
        std::fs::create_dir_all(helper.parent().unwrap_or(&root)).map_err(|e| e.to_string())?;
        std::fs::copy(
            init.with_file_name(berth_init::helper::HELPER_NAME),
            &helper,
        )
        .map_err(|e| format!("berth-helper beside {}: {e}", init.display()))?;
        std::fs::write(root.join("etc/berth/host.toml"), config).map_err(|e| e.to_string())?;
        if Path::new("/bin/busybox").exists() {
            std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(|e| e.to_string())?;
        }
        let mut child = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--uts",
                "--net",
                "--ipc",
                "--propagation",
                "private",
                "--kill-child",
                "chroot",
            ])
            .arg(&root)
            .arg("/init")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let (tx, lines) = channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(NsInit {
            child,
            lines,
            log: Vec::new(),
            root,
        })
    }

    fn wait_for(&mut self, text: &str, limit: Duration) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        if let Some(l) = self.log.iter().find(|l| l.contains(text)) {
            return Ok(l.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(text) {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "timed out waiting for {text:?}; console:\n{}",
                        self.log.join("\n")
                    ))
                }
            }
        }
    }

    /// The host pid of the namespace's PID 1: unshare's only child.
    fn init_pid(&self) -> Result<Pid, String> {
        let unshare = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .map_err(|e| e.to_string())?;
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .map(Pid::from_raw)
            .ok_or_else(|| "unshare has no child".to_owned())
    }

    /// Runs a shell command inside the namespaces, as a child of nobody there: what it
    /// starts in the background is orphaned to PID 1.
    fn spawn_inside(&self, script: &str) -> Result<(), String> {
        let pid = self.init_pid()?.as_raw().to_string();
        let status = Command::new("nsenter")
            .args(["-t", &pid, "-p", "-m", "-u", "-n", "-i", "-r", "-w"])
            .args(["/bin/busybox", "sh", "-c", script])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("nsenter: {e}"))?;
        ensure(status.success(), || format!("nsenter {script:?}: {status}"))
    }

    /// Waits for the namespace to end; returns the signal that ended its init.
    fn wait_end(&mut self, limit: Duration) -> Result<Option<i32>, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                // Collect the last console lines.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.log.push(line);
                }
                return Ok(status.signal());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "init did not end; console:\n{}",
                    self.log.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn position(&self, text: &str) -> Option<usize> {
        self.log.iter().position(|l| l.contains(text))
    }
}

impl Drop for NsInit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn rand_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

const CONFIG: &str = "version = 1\nhostname = \"pidns-test\"\n[shutdown]\ntimeout = \"1s\"\n";

fn pid1_sigterm_powers_off_in_order() -> TestResult {
    let mut init = NsInit::start(CONFIG)?;
    // The kernel log and its sysctl are the host's: PID 1 of a namespace leaves them be.
    init.wait_for("logging to the console only", Duration::from_secs(10))?;
    init.wait_for("hostname: pidns-test", Duration::from_secs(10))?;
    init.wait_for("berth: ready in", Duration::from_secs(10))?;
    // One process that ignores SIGTERM and one that obeys it, both orphaned to PID 1.
    init.spawn_inside("trap '' TERM; /bin/busybox sleep 1000 & /bin/busybox sleep 1000 &")?;
    let sent = Instant::now();
    kill(init.init_pid()?, Signal::SIGTERM).map_err(|e| e.to_string())?;
    let ended_by = init.wait_end(Duration::from_secs(20))?;
    let took = sent.elapsed();
    ensure(ended_by == Some(libc::SIGINT), || {
        format!(
            "PID 1 should end by power-off (SIGINT in a PID namespace), ended by {ended_by:?}; console:\n{}",
            init.log.join("\n")
        )
    })?;
    let order = [
        "SIGTERM received: power-off",
        "stopping processes",
        "sending SIGKILL",
        "syncing filesystems",
        "filesystems unmounted",
        "power-off: now",
    ];
    let positions: Vec<Option<usize>> = order.iter().map(|t| init.position(t)).collect();
    ensure(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]),
        || {
            format!(
                "shutdown steps out of order {positions:?}; console:\n{}",
                init.log.join("\n")
            )
        },
    )?;
    // The grace period (1 s) was honoured before SIGKILL, and not much more.
    ensure(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        || format!("shutdown took {took:?}"),
    )
}

fn pid1_sigint_reboots() -> TestResult {
    let mut init = NsInit::start(CONFIG)?;
    init.wait_for("berth: ready in", Duration::from_secs(10))?;
    kill(init.init_pid()?, Signal::SIGINT).map_err(|e| e.to_string())?;
    let ended_by = init.wait_end(Duration::from_secs(20))?;
    ensure(ended_by == Some(libc::SIGHUP), || {
        format!(
            "PID 1 should end by reboot (SIGHUP in a PID namespace), ended by {ended_by:?}; console:\n{}",
            init.log.join("\n")
        )
    })?;
    ensure(init.position("reboot: now").is_some(), || {
        init.log.join("\n")
    })
}

fn pid1_reaps_orphans() -> TestResult {
    let mut init = NsInit::start(CONFIG)?;
    init.wait_for("berth: ready in", Duration::from_secs(10))?;
    let pid1 = init.init_pid()?;
    init.spawn_inside("i=0; while [ $i -lt 200 ]; do /bin/busybox true & i=$((i+1)); done")?;
    // The orphans exit at once; PID 1 must collect every one.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let zombies = zombies_of(pid1);
        if zombies.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{} zombies under PID 1", zombies.len()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(pid1, Signal::SIGTERM).map_err(|e| e.to_string())?;
    let ended_by = init.wait_end(Duration::from_secs(20))?;
    ensure(ended_by == Some(libc::SIGINT), || {
        format!("ended by {ended_by:?}")
    })
}

fn pid1_broken_config_degrades() -> TestResult {
    let mut init = NsInit::start("version = 1\nhostname = \"x\"\n[kernel]\nmodles = []\n")?;
    let line = init.wait_for("degraded", Duration::from_secs(10))?;
    ensure(
        line.contains("line 4") && line.contains("kernel.modles"),
        || format!("the degraded line must name the key and line: {line}"),
    )?;
    // It still runs and still shuts down on request.
    kill(init.init_pid()?, Signal::SIGTERM).map_err(|e| e.to_string())?;
    let ended_by = init.wait_end(Duration::from_secs(20))?;
    ensure(ended_by == Some(libc::SIGINT), || {
        format!("ended by {ended_by:?}")
    })
}
