//! `berth ps`, `berth stop`, `berth logs` and `berth rm`: the containers `berth run`
//! started on this host, found by their records ([`super::record`]) in the state
//! directory, whether their `berth run` still runs or was killed.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_runtime::cgroup::CgroupParent;
use berth_runtime::spec;
use berth_runtime::Runtime;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::record::{self, Record, Status};
use super::sys;

fn runtime(store: &std::path::Path, what: &str) -> Result<Runtime, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(format!(
            "berth {what} needs root (containers' state and cgroups are root's)"
        ));
    }
    let cgroups = CgroupParent::prepare(&spec::Limits::default()).map_err(|e| e.to_string())?;
    Ok(Runtime {
        store: store.to_path_buf(),
        state: store.to_path_buf(),
        cgroups,
    })
}

/// The state directory of container `name`, which must exist.
fn existing_dir(runtime: &Runtime, name: &str) -> Result<PathBuf, String> {
    spec::validate_name(name).map_err(|e| e.to_string())?;
    let dir = runtime.container_dir(name);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "no container named {name} in {}",
            runtime.state.display()
        ))
    }
}

/// List the containers `berth run` started (running ones; -a for all).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Lists the containers recorded under --store: those running (detached \
with -d, in the foreground of a `berth run`, or left running by a `berth run` that was \
killed), and with -a those kept after they exited (run without --rm) until `berth rm`. \
STATUS is running, exited (CODE), or exited (unknown) when the container ended after \
its `berth run` was killed, so that nobody saw its code.

Examples:
  berth ps
  berth ps -a"
)]
pub struct PsArgs {
    /// The image store (and state directory).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/berth")]
    pub store: PathBuf,
    /// Also list containers that have exited.
    #[arg(short, long)]
    pub all: bool,
}

/// Prints one line per container: name, status, host pid, image, command.
pub fn ps(args: &PsArgs) -> Result<(), String> {
    let runtime = runtime(&args.store, "ps")?;
    let mut names: Vec<String> = match std::fs::read_dir(runtime.state.join("containers")) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", runtime.state.display())),
    };
    names.sort();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<24} {:<18} {:>8}  {:<24} COMMAND",
        "NAME", "STATUS", "PID", "IMAGE"
    );
    for name in names {
        let dir = runtime.container_dir(&name);
        let line = match Record::load(&dir) {
            Ok(rec) => {
                let status = rec.status();
                if status != Status::Running && !args.all {
                    continue;
                }
                let pid = match status {
                    Status::Running => rec.container.pid.to_string(),
                    _ => "-".into(),
                };
                let command = if rec.command.is_empty() {
                    "(the image's)".to_string()
                } else {
                    rec.command.join(" ")
                };
                format!(
                    "{name:<24} {:<18} {pid:>8}  {:<24} {command}",
                    status.to_string(),
                    rec.image
                )
            }
            // A directory without a record: a start under way, or from an older berth.
            Err(_) => {
                let running = runtime
                    .cgroups
                    .existing_leaf(&name)
                    .is_some_and(|l| l.populated());
                if !running && !args.all {
                    continue;
                }
                let status = if running { "running" } else { "unknown" };
                format!("{name:<24} {status:<18} {:>8}  {:<24} -", "-", "-")
            }
        };
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}

/// Stop running containers: SIGTERM (or the image's STOPSIGNAL), then SIGKILL to the
/// whole cgroup after a timeout.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Sends the image's STOPSIGNAL (SIGTERM when it has none) to the \
container's first process (its PID 1), waits up to --time seconds for it to exit, then \
kills every process in the container's cgroup, as `docker stop` does. The process is found by the pid and start time `berth run` \
recorded and signalled through a pidfd, so a pid reused by another process is never \
signalled. The `berth run` (or detached monitor) waiting for the container records its \
exit and cleans up; when it was killed, `berth stop` removes the container's cgroup \
itself (and its state, for a --rm container). Stopping a stopped container succeeds.

Examples:
  berth stop web
  berth stop -t 0 web      # kill at once"
)]
pub struct StopArgs {
    /// The image store (and state directory).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/berth")]
    pub store: PathBuf,
    /// Seconds to wait after SIGTERM before killing.
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    pub time: u64,
    /// The containers to stop.
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// Stops each container, printing each name stopped; the error lists those not.
pub fn stop(args: &StopArgs) -> Result<(), String> {
    let runtime = runtime(&args.store, "stop")?;
    let mut failures = Vec::new();
    for name in &args.names {
        match stop_one(&runtime, name, Duration::from_secs(args.time)) {
            Ok(()) => println!("{name}"),
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Waits until `fd` (a pidfd) is readable, that is its process has ended.
fn wait_pidfd(fd: std::os::fd::BorrowedFd<'_>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}

fn stop_one(runtime: &Runtime, name: &str, grace: Duration) -> Result<(), String> {
    let dir = existing_dir(runtime, name)?;
    let leaf = runtime.cgroups.existing_leaf(name);
    let Ok(rec) = Record::load(&dir) else {
        // No record (an older berth): the cgroup is all there is to stop.
        if let Some(leaf) = leaf {
            leaf.kill();
        }
        return Ok(());
    };
    // The pidfd names whatever process has the pid when it is opened: only after the
    // check that follows the open is it known to be the container's.
    let pidfd = sys::pidfd_open(rec.container.pid)
        .ok()
        .filter(|_| rec.container.alive());
    if let Some(pidfd) = &pidfd {
        let signal = Signal::try_from(rec.stop_signal).unwrap_or(Signal::SIGTERM);
        let _ = sys::pidfd_signal(pidfd.as_fd(), signal);
        if !wait_pidfd(pidfd.as_fd(), grace) {
            log::info!(
                "container {name} did not exit within {} s of {signal}; killing it",
                grace.as_secs()
            );
            let _ = sys::pidfd_signal(pidfd.as_fd(), Signal::SIGKILL);
            if let Some(leaf) = &leaf {
                leaf.kill();
            }
            if !wait_pidfd(pidfd.as_fd(), Duration::from_secs(10)) {
                return Err(format!("container {name}: still running after SIGKILL"));
            }
        }
    }
    if rec.monitor.alive() {
        // Its `berth run` reaps it, records the exit and cleans up: wait for that, so
        // that what follows `berth stop` sees the container stopped.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && rec.monitor.alive()
            && Record::load(&dir).is_ok_and(|r| r.exit_code.is_none())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        return Ok(());
    }
    // Nobody waits for it (its `berth run` was killed): the cgroup, and a --rm
    // container's state, are left to us.
    if let Some(leaf) = leaf {
        leaf.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while leaf.populated() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        leaf.remove()
            .map_err(|e| format!("container {name}: {e}"))?;
    }
    if rec.remove {
        runtime
            .remove(name)
            .map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Show a detached container's output.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Prints what a container started with `berth run -d` wrote to its \
stdout and stderr (one stream, in the order written), kept in its state directory until \
`berth rm` (or its exit, with --rm). A foreground container's output went to its \
terminal and is not kept.

Examples:
  berth logs web
  berth logs -f web        # follow until the container exits"
)]
pub struct LogsArgs {
    /// The image store (and state directory).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/berth")]
    pub store: PathBuf,
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// The container.
    #[arg(value_name = "NAME")]
    pub name: String,
}

pub fn logs(args: &LogsArgs) -> Result<(), String> {
    let runtime = runtime(&args.store, "logs")?;
    let dir = existing_dir(&runtime, &args.name)?;
    let rec = Record::load(&dir).ok();
    let path = dir.join(record::LOG);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(match rec {
                Some(r) if !r.detached => format!(
                    "container {} ran in the foreground: its output went to its \
                     terminal and is not kept (only `berth run -d` keeps a log)",
                    args.name
                ),
                _ => format!("container {} has no log", args.name),
            })
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    let mut copy = |file: &mut std::fs::File| -> Result<(), String> {
        let mut buf = [0u8; 64 << 10];
        loop {
            match file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    out.write_all(buf.get(..n).unwrap_or_default())
                        .and_then(|()| out.flush())
                        .map_err(|e| format!("writing the log: {e}"))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
    };
    copy(&mut file)?;
    if !args.follow {
        return Ok(());
    }
    // The monitor writes the log until the container has ended and its output is
    // drained, then records the exit and goes: follow until then.
    let Some(rec) = rec else {
        return Ok(());
    };
    loop {
        let done = !rec.monitor.alive()
            || Record::load(&dir).map_or(true, |r| r.status() != Status::Running);
        copy(&mut file)?;
        if done {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Remove stopped containers that `berth run` kept (it was run without --rm).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Removes the container's writable layer and state directory and \
releases its hold on its image (so that `berth image gc` may collect the image). Named \
volumes are kept. A running container is refused unless --force, which kills every \
process in its cgroup first.

Example:
  berth run --name web busybox:latest sh -c 'echo hi > /f'
  berth rm web"
)]
pub struct RmArgs {
    /// The image store (and state directory).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/berth")]
    pub store: PathBuf,
    /// Kill a running container first.
    #[arg(short, long)]
    pub force: bool,
    /// The containers to remove.
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// Removes each container in `args`, printing the name of each one removed. Every
/// name is tried; the error lists those that were not removed and why.
pub fn rm(args: &RmArgs) -> Result<(), String> {
    let runtime = runtime(&args.store, "rm")?;
    let mut failures = Vec::new();
    for name in &args.names {
        match remove_one(&runtime, name, args.force) {
            Ok(()) => println!("{name}"),
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn remove_one(runtime: &Runtime, name: &str, force: bool) -> Result<(), String> {
    let dir = existing_dir(runtime, name)?;
    if let Some(leaf) = runtime.cgroups.existing_leaf(name) {
        if leaf.populated() {
            if !force {
                let pid = leaf.pids().first().map_or("?".into(), u32::to_string);
                return Err(format!(
                    "container {name} is running (pid {pid}); stop it, or use --force"
                ));
            }
            leaf.kill();
            // A container with much memory takes a while to die: wait for it here,
            // where nothing else is held up, rather than in the removal's short retry.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while leaf.populated() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        leaf.remove()
            .map_err(|e| format!("container {name}: {e}"))?;
    }
    runtime
        .remove(name)
        .map_err(|e| format!("removing {}: {e}", dir.display()))
}
