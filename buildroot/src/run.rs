//! `berth run`: one container in the foreground, like `docker run`, with the same
//! runtime code PID 1 uses. Signals sent to `berth run` are forwarded to the
//! container's PID 1, and `berth run` exits with the container's code (137 for an
//! OOM kill).

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use berth_netd::config::PortSpec;
use berth_runtime::cgroup::CgroupParent;
use berth_runtime::spec::{self, ContainerSpec, Network};
use berth_runtime::{Exit, Runtime, Stdio};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// Run one container in the foreground.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The container gets its own mount, PID, UTS, IPC, cgroup and \
network namespaces (--network host shares the host's network; --network bridge joins \
the berth0 bridge with an address leased under --store, NAT to the outside, the other \
bridged containers by name, and -p ports published by nf_tables rules), an overlay of the image \
with a fresh writable layer, /proc, a minimal /dev and a read-only /sys. It keeps \
Podman's 11 default capabilities, with no_new_privs and a seccomp filter stricter than \
Docker's default. Limits need the matching cgroup v2 controller; berth says which one is \
missing on hosts where it is still bound to cgroup v1.

Needs root. Signals to `berth run` go to the container's PID 1, which (as in Docker) \
ignores SIGINT and SIGTERM unless its program handles them: use --init for programs \
that do not.

Examples:
  berth run --rm busybox:latest echo hello
  berth run --rm -e GREETING=hi busybox:latest sh -c 'echo $GREETING'
  berth run --rm --memory 64M --pids 100 busybox:latest sh
  berth run --rm -v data:/data -v /srv/www:/www:ro busybox:latest ls /www
  berth run --rm --init --network bridge -p 8080:80 busybox:latest httpd -f -p 80"
)]
pub struct RunArgs {
    /// The image store (and state directory).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/berth")]
    pub store: PathBuf,
    /// Remove the container's writable layer when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name (default: run-<random>).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Set an environment variable.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Mount a volume: NAME:/dst or /host/path:/dst, optionally :ro.
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    /// Mount a tmpfs at this path.
    #[arg(long, value_name = "PATH")]
    pub tmpfs: Vec<String>,
    /// Memory limit, e.g. 256M (no swap).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU limit in CPUs, e.g. 0.5.
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// none (loopback only), bridge (eth0 on berth0, 10.88.0.0/16, with NAT) or host.
    #[arg(long, value_name = "MODE", default_value = "none")]
    pub network: String,
    /// Publish a container port on the host (bridge network): [IP:]HOST:CONTAINER[/udp].
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[IP:]HOST:CONTAINER[/udp]"
    )]
    pub publish: Vec<PortSpec>,
    /// Run a tiny init as the container's PID 1 that forwards signals and reaps.
    #[arg(long)]
    pub init: bool,
    /// User: NAME, UID, NAME:GROUP or UID:GID.
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Replace the image's entrypoint.
    #[arg(long, value_name = "PROGRAM")]
    pub entrypoint: Option<String>,
    /// Container hostname (default: its name).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Mount the image read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Add a capability (e.g. NET_ADMIN).
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability, or ALL.
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Keep stdin attached (default: /dev/null).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// The image: name:tag, a digest or a unique digest prefix.
    pub image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn random_name() -> String {
    format!("run-{}", berth_imagefs::store::random_id())
}

/// The container spec the flags describe.
pub fn spec_from_args(a: &RunArgs) -> Result<ContainerSpec, String> {
    let name = a.name.clone().unwrap_or_else(random_name);
    let mut s = ContainerSpec::new(&name, &a.image).map_err(|e| e.to_string())?;
    s.throwaway = a.rm;
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("-e {kv:?}: expected KEY=VALUE"))?;
        s.env
            .push(spec::validate_env(k, v).map_err(|e| e.to_string())?);
    }
    for v in &a.volumes {
        s.volumes
            .push(spec::parse_volume(v).map_err(|e| e.to_string())?);
    }
    for t in &a.tmpfs {
        s.tmpfs
            .push(spec::container_path(t).map_err(|e| e.to_string())?);
    }
    let e = |e: spec::SpecError| e.to_string();
    s.limits.memory = a
        .memory
        .as_deref()
        .map(spec::parse_memory)
        .transpose()
        .map_err(e)?;
    s.limits.cpus = a.cpus.map(spec::validate_cpus).transpose().map_err(e)?;
    s.limits.pids = a.pids.map(spec::validate_pids).transpose().map_err(e)?;
    s.network = match a.network.as_str() {
        // The bridge attachment (address, peers) is filled in by `run`, which leases it.
        "none" | "bridge" => Network::None,
        "host" => Network::Host,
        other => {
            return Err(format!(
                "--network {other:?}: expected none, host or bridge"
            ))
        }
    };
    if !a.publish.is_empty() && a.network != "bridge" {
        return Err("-p/--publish needs --network bridge".into());
    }
    s.init = a.init;
    s.user = a
        .user
        .as_deref()
        .map(spec::validate_user)
        .transpose()
        .map_err(e)?;
    s.workdir = a
        .workdir
        .as_deref()
        .map(spec::container_path)
        .transpose()
        .map_err(e)?;
    s.entrypoint = a.entrypoint.clone().map(|p| vec![p]);
    if !a.command.is_empty() {
        spec::validate_argv("command", &a.command).map_err(e)?;
        s.command = Some(a.command.clone());
    }
    s.hostname = a.hostname.clone();
    s.read_only = a.read_only;
    for c in &a.cap_add {
        match spec::parse_capability(c).map_err(e)? {
            Some(cap) => s.cap_add.push(cap),
            None => return Err("--cap-add ALL is not supported: name the capabilities".into()),
        }
    }
    for c in &a.cap_drop {
        match spec::parse_capability(c).map_err(e)? {
            Some(cap) => s.cap_drop.push(cap),
            None => s.cap_drop_all = true,
        }
    }
    Ok(s)
}

/// Signals forwarded to the container.
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Why `berth run` failed before the container's program ran, and the exit code
/// that says so (Docker's convention: 125 the runtime itself, 127 the container
/// could not be set up or its program not found).
#[derive(Debug)]
pub struct RunError {
    pub message: String,
    pub code: u8,
}

impl From<String> for RunError {
    fn from(message: String) -> RunError {
        RunError { message, code: 125 }
    }
}

impl From<&str> for RunError {
    fn from(message: &str) -> RunError {
        RunError::from(message.to_string())
    }
}

/// Runs the container; returns its exit code.
pub fn run(args: &RunArgs) -> Result<i32, RunError> {
    if !nix::unistd::geteuid().is_root() {
        return Err("berth run needs root (it creates namespaces, mounts and cgroups)".into());
    }
    let mut spec = spec_from_args(args)?;
    // On the bridge: lease an address, publish the ports, and give it all back at exit.
    let mut joined = if args.network == "bridge" {
        let (attachment, joined) = berth_netd::bridge::join(
            &args.store,
            &berth_netd::config::BridgeConfig::default(),
            &spec.name,
            &args.publish,
        )
        .map_err(|e| format!("bridge network: {}", berth_imagefs::error_chain(&e)))?;
        spec.network = Network::Bridge(attachment);
        Some(joined)
    } else {
        None
    };
    let cgroups = CgroupParent::prepare(&spec.limits).map_err(|e| e.to_string())?;
    let runtime = Runtime {
        store: args.store.clone(),
        state: args.store.clone(),
        cgroups,
    };
    // Block before starting so that no signal or exit is missed; the child resets
    // its mask before exec.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for s in FORWARDED {
        mask.add(*s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| format!("blocking signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    let stdin = if args.interactive {
        None
    } else {
        Some(OwnedFd::from(
            std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?,
        ))
    };
    let stdio = Stdio {
        stdin,
        ..Stdio::default()
    };
    let started = runtime.start(&spec, stdio);
    let container = match started {
        Ok(c) => c,
        // A failed start removes what it created itself (and never touches the
        // directory of another container of the same name).
        Err(e) => {
            let code = match &e {
                berth_runtime::StartError::Setup { .. } => 127,
                berth_runtime::StartError::SetupOomKilled { exit, .. } => {
                    u8::try_from(exit.code).unwrap_or(137)
                }
                _ => 125,
            };
            return Err(RunError {
                message: e.to_string(),
                code,
            });
        }
    };
    log::debug!("container {} started as pid {}", spec.name, container.pid);
    if let Some(joined) = joined.as_mut() {
        if let Err(e) = joined.hand_over(container.pid.as_raw() as u32) {
            log::warn!("bridge lease of {}: {e}", spec.name);
        }
    }
    let status = loop {
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                // Without the signalfd nothing can be forwarded: end the container
                // and fall through to the normal cleanup once it is reaped.
                log::error!("poll: {e}; killing the container");
                container.leaf.kill();
                match waitpid(container.pid, None) {
                    Ok(status) => break status,
                    Err(e) => return Err(format!("waiting for the container: {e}").into()),
                }
            }
        }
        let mut exited = None;
        while let Ok(Some(info)) = signals.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if sig == Signal::SIGCHLD {
                match waitpid(container.pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => {}
                    Ok(status) => exited = Some(status),
                }
            } else if exited.is_none() {
                log::debug!("forwarding {sig} to the container");
                let _ = container.signal(sig);
            }
        }
        if let Some(status) = exited {
            break status;
        }
    };
    let exit = Exit::from_wait(status, container.leaf.oom_kills());
    if let Err(e) = container.leaf.remove() {
        log::warn!("{e}");
    }
    if args.rm {
        if let Err(e) = runtime.remove(&spec.name) {
            log::warn!("removing container {}: {e}", spec.name);
        }
    } else {
        log::debug!(
            "container {} kept in {}",
            spec.name,
            runtime.container_dir(&spec.name).display()
        );
    }
    if exit.oom_killed {
        eprintln!("berth: container {}: {exit}", spec.name);
    }
    drop(joined);
    Ok(exit.code)
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
    if !nix::unistd::geteuid().is_root() {
        return Err("berth rm needs root (it removes cgroups and root-owned state)".into());
    }
    let cgroups = CgroupParent::prepare(&spec::Limits::default()).map_err(|e| e.to_string())?;
    let runtime = Runtime {
        store: args.store.clone(),
        state: args.store.clone(),
        cgroups,
    };
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
    spec::validate_name(name).map_err(|e| e.to_string())?;
    let dir = runtime.container_dir(name);
    if !dir.is_dir() {
        return Err(format!(
            "no container named {name} in {}",
            runtime.state.display()
        ));
    }
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
