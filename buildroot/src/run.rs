//! `berth run`: one container, like `docker run`, with the same runtime code PID 1
//! uses. In the foreground (the default) signals sent to `berth run` are forwarded to
//! the container's PID 1 and `berth run` exits with the container's code (137 for an
//! OOM kill); `-t` gives the container a pty ([`tty`]); `-d` leaves the container to a
//! small monitor process of its own. Every container it starts is recorded
//! ([`record`]) for `berth ps`, `berth stop`, `berth logs` and `berth rm` ([`manage`]).
//!
//! Exit codes are Docker's: 125 when berth itself fails (a bad flag, an invalid
//! reference, a missing image, a cgroup or network error), 126 when the command cannot
//! be executed, 127 when it is not found, else the container's own.

mod manage;
pub mod record;
mod sys;
mod tty;

pub use manage::{logs, ps, rm, stop, LogsArgs, PsArgs, RmArgs, StopArgs};

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use berth_netd::config::PortSpec;
use berth_runtime::cgroup::CgroupParent;
use berth_runtime::spec::{self, ContainerSpec, Network};
use berth_runtime::{Exit, Running, Runtime, Stdio};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use record::{ProcessId, Record};

/// Run one container in the foreground.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The container gets its own mount, PID, UTS, IPC, cgroup and \
network namespaces (--network host shares the host's network; --network bridge joins \
the berth0 bridge with an address leased under --store, NAT to the outside, the other \
bridged containers by name, and -p ports published by nf_tables rules; -p alone implies \
--network bridge), an overlay of the image with a fresh writable layer, /proc, a minimal \
/dev and a read-only /sys. It keeps Podman's 11 default capabilities, with no_new_privs \
and a seccomp filter stricter than Docker's default. Limits (--memory, --cpus, --pids) \
need the matching controller on the cgroup v2 hierarchy: on a hybrid host, where they \
are still bound to cgroup v1, berth says which one is missing and runs nothing.

Needs root. Signals sent to a foreground `berth run` (SIGTERM, SIGINT, SIGHUP, SIGQUIT, \
SIGUSR1, SIGUSR2) are forwarded to the container's PID 1, as `docker run` does \
(--sig-proxy): like Docker's, that PID 1 ignores SIGINT and SIGTERM unless its program \
handles them, so use --init for programs that do not, or `berth stop`, which kills \
after a timeout. With -t, SIGWINCH resizes the container's terminal instead.

Every container is recorded under --store while it exists: `berth ps -a` lists them, \
`berth stop` stops one (also one whose `berth run` was killed), `berth logs` shows a \
detached one's output, and `berth rm` removes one kept without --rm.

Exit status: the container's (128+N when killed by signal N, 137 for an OOM kill); \
125 when berth itself fails (a bad flag, an invalid image reference, a missing image, \
a cgroup or network error); 126 when the command cannot be executed (not executable, \
a directory); 127 when it is not found. -d exits 0 once the container runs.

Examples:
  berth run --rm busybox:latest echo hello
  berth run --rm -it busybox:latest sh
  berth run --rm -e GREETING=hi busybox:latest sh -c 'echo $GREETING'
  berth run --rm -v data:/data -v /srv/www:/www:ro busybox:latest ls /www
  berth run -d --name web --init -p 8080:80 busybox:latest httpd -f -p 80
  berth logs web; berth stop web; berth rm web
  berth run --rm --entrypoint '' busybox:latest echo no entrypoint
  berth run --rm --memory 64M --pids 100 busybox:latest sh   # pure cgroup v2 hosts"
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
    /// none (loopback only; the default), bridge (eth0 on berth0, 10.88.0.0/16, with
    /// NAT; the default with -p) or host.
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Publish a container port on the host: [IP:]HOST:CONTAINER[/udp]; implies
    /// --network bridge.
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
    /// Replace the image's entrypoint (and drop its default command); '' resets it to
    /// none, so that the command runs alone.
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
    /// Give the container a terminal (a pty) as stdin, stdout and stderr; with -i,
    /// `berth run -it IMAGE sh` is an interactive shell.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run in the background: print the container's name and exit 0 once its program
    /// runs. Its output goes to `berth logs NAME`; `berth stop NAME` stops it. With -i
    /// its stdin stays open with nothing to read (berth has no `attach`), so that
    /// `berth run -dit IMAGE sh` keeps a shell waiting, as in Docker.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// The image: name[:tag], a digest (sha256:...) or a unique digest prefix.
    pub image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn random_name() -> String {
    format!("run-{}", berth_imagefs::store::random_id())
}

/// The network `--network` and `-p` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    None,
    Bridge,
    Host,
}

/// `--network`, defaulting to `bridge` when ports are published (there is nothing to
/// publish them on otherwise) and to `none` when not.
pub fn network_mode(a: &RunArgs) -> Result<NetworkMode, String> {
    let mode = match a.network.as_deref() {
        None if a.publish.is_empty() => return Ok(NetworkMode::None),
        None | Some("bridge") => return Ok(NetworkMode::Bridge),
        Some("none") => NetworkMode::None,
        Some("host") => NetworkMode::Host,
        Some(other) => {
            return Err(format!(
                "--network {other:?}: expected none, host or bridge"
            ))
        }
    };
    if !a.publish.is_empty() {
        let net = a.network.as_deref().unwrap_or_default();
        return Err(format!(
            "-p/--publish needs the bridge network, and --network {net} has no ports to \
             publish: leave --network out (-p implies bridge) or say --network bridge"
        ));
    }
    Ok(mode)
}

/// Checks an image reference as Docker does before anything runs: `name[:tag]` by
/// Docker's grammar (lowercase name components, a tag of `[A-Za-z0-9_.-]`), a digest,
/// or a digest prefix of at least 6 hex digits.
pub fn validate_image_ref(image: &str) -> Result<(), String> {
    use berth_imagefs::reference::Reference;
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    let is_hex = hex.len() >= 6 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if is_hex || Reference::parse(image).is_ok() {
        return Ok(());
    }
    if image.contains('@') {
        return Err(format!(
            "invalid reference format: {image:?}: references by digest (NAME@sha256:...) \
             are not supported here; give the digest alone (sha256:...)"
        ));
    }
    let why = if image.is_empty() {
        "empty".to_string()
    } else if image.bytes().any(|b| b.is_ascii_uppercase())
        && Reference::parse(&image.to_ascii_lowercase()).is_ok()
    {
        "repository name must be lowercase".to_string()
    } else {
        "expected NAME[:TAG], with NAME of lowercase [a-z0-9] separated by '.', '_', '__' \
         or '-' and '/', and TAG of at most 128 [A-Za-z0-9_.-] not starting with '.' or '-'"
            .to_string()
    };
    Err(format!("invalid reference format: {image:?}: {why}"))
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
    s.network = match network_mode(a)? {
        // The bridge attachment (address, peers) is filled in by `run`, which leases it.
        NetworkMode::None | NetworkMode::Bridge => Network::None,
        NetworkMode::Host => Network::Host,
    };
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
    // `--entrypoint ''` is Docker's way to say "no entrypoint".
    s.entrypoint = a.entrypoint.as_ref().map(|p| {
        if p.is_empty() {
            vec![]
        } else {
            vec![p.clone()]
        }
    });
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

/// Signals forwarded to the container (SIGWINCH resizes its terminal under -t).
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
/// that says so (Docker's convention: 125 berth itself failed, 126 the command could
/// not be executed, 127 it was not found).
#[derive(Debug)]
pub struct RunError {
    pub message: String,
    pub code: u8,
}

/// Docker's code for a failure of berth itself.
pub const RUNTIME_FAILED: u8 = berth_runtime::child::RUNTIME_FAILED;

impl From<String> for RunError {
    fn from(message: String) -> RunError {
        RunError {
            message,
            code: RUNTIME_FAILED,
        }
    }
}

impl From<&str> for RunError {
    fn from(message: &str) -> RunError {
        RunError::from(message.to_string())
    }
}

/// Runs the container; returns its exit code (0 at once for `-d`).
pub fn run(args: &RunArgs) -> Result<i32, RunError> {
    if !nix::unistd::geteuid().is_root() {
        return Err("berth run needs root (it creates namespaces, mounts and cgroups)".into());
    }
    // Everything that can fail is checked before the network is touched: the flags, the
    // reference, the cgroup hierarchy and its controllers, the image.
    let spec = spec_from_args(args)?;
    validate_image_ref(&args.image)?;
    let cgroups = CgroupParent::prepare(&spec.limits).map_err(|e| e.to_string())?;
    check_image(args)?;
    if args.detach {
        return detach(args, spec, cgroups);
    }
    launch(args, spec, cgroups, &mut None)
}

/// The image must be in the store: a missing one is berth's failure (125), found
/// before any network state exists.
fn check_image(args: &RunArgs) -> Result<(), String> {
    let store = berth_imagefs::Store::open_existing(&args.store).map_err(|e| {
        format!(
            "image store {}: {}; import an image first (`berth image import`)",
            args.store.display(),
            berth_imagefs::error_chain(&e)
        )
    })?;
    match store.resolve(&args.image) {
        Ok(_) => Ok(()),
        Err(berth_imagefs::StoreError::UnknownRef(_)) => Err(format!(
            "no image {:?} in {store} (see `berth image ls --store {store}`)",
            args.image,
            store = args.store.display()
        )),
        Err(e) => Err(format!(
            "image {:?}: {}",
            args.image,
            berth_imagefs::error_chain(&e)
        )),
    }
}

/// `berth run -d`: forks a monitor that starts the container as its own child, reports
/// back once the program runs (or why it did not), then waits for it in a session of
/// its own: it drains the container's output into `berth logs`, records its exit and
/// cleans up as a foreground `berth run` does. This process prints the name and exits.
fn detach(args: &RunArgs, spec: ContainerSpec, cgroups: CgroupParent) -> Result<i32, RunError> {
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("creating the monitor's pipe: {e}"))?;
    let _ = std::io::stdout().flush();
    match sys::fork().map_err(|e| format!("starting the container's monitor: {e}"))? {
        Some(_monitor) => {
            drop(report_write);
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(report_read), &mut text);
            match text.lines().next() {
                Some("ok") => {
                    println!("{}", spec.name);
                    Ok(0)
                }
                Some(line) => {
                    let (code, message) = line
                        .strip_prefix("error ")
                        .and_then(|l| l.split_once(' '))
                        .unwrap_or(("125", line));
                    Err(RunError {
                        message: message.to_string(),
                        code: code.parse().unwrap_or(RUNTIME_FAILED),
                    })
                }
                None => Err("the container's monitor ended without a word".into()),
            }
        }
        None => {
            drop(report_read);
            let mut report = Some(report_write);
            // Off the caller's terminal and session: the caller may be `$(berth run -d)`,
            // which waits for every holder of its pipe.
            let _ = nix::unistd::setsid();
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in 0..3 {
                    let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
                }
            }
            if let Err(e) = launch(args, spec, cgroups, &mut report) {
                if let Some(fd) = report.take() {
                    let mut line = format!("error {} {}", e.code, e.message);
                    line.retain(|c| c != '\n');
                    let _ = std::fs::File::from(fd).write_all(format!("{line}\n").as_bytes());
                }
            }
            std::process::exit(0)
        }
    }
}

/// Where the container's output goes, besides `berth run`'s own stdout/stderr.
struct Relay {
    /// The pty's master (-t) or the read end of the output pipe (-d), non-blocking.
    from: OwnedFd,
    to: Box<dyn Write>,
    open: bool,
}

impl Relay {
    /// Copies what is there now; marks the relay closed at end of file.
    fn pump(&mut self) {
        let mut buf = [0u8; 16 << 10];
        while self.open {
            match tty::read(self.from.as_fd(), &mut buf) {
                tty::Read::Data(n) => {
                    let _ = self.to.write_all(buf.get(..n).unwrap_or_default());
                    let _ = self.to.flush();
                }
                tty::Read::Empty => return,
                tty::Read::End => self.open = false,
            }
        }
    }
}

/// Starts the container and waits for it. `report` is the detached monitor's pipe to
/// `berth run`, told "ok" once the program runs.
fn launch(
    args: &RunArgs,
    mut spec: ContainerSpec,
    cgroups: CgroupParent,
    report: &mut Option<OwnedFd>,
) -> Result<i32, RunError> {
    let detached = report.is_some();
    // On the bridge: lease an address, publish the ports, and give it all back at exit
    // and on every error path (dropping `joined`).
    let mut joined = if network_mode(args)? == NetworkMode::Bridge {
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
    let null = || -> Result<OwnedFd, RunError> {
        Ok(OwnedFd::from(
            std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?,
        ))
    };
    let dup = |fd: &OwnedFd| -> Result<OwnedFd, RunError> {
        fd.try_clone()
            .map_err(|e| RunError::from(format!("duplicating a descriptor: {e}")))
    };
    // With -t the container allocates its terminal in its own /dev/pts and sends the
    // master back over this socket once it runs.
    let mut console = None;
    // `-di`: the write end of the container's stdin, held (never written) until it ends.
    let mut open_stdin: Option<OwnedFd> = None;
    let (stdio, relay) = if args.tty {
        let (ours, theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("creating the terminal's socket: {e}"))?;
        console = Some(ours);
        let stdio = Stdio {
            console: Some(berth_runtime::Console {
                socket: theirs,
                size: tty::window_size(),
            }),
            ..Stdio::default()
        };
        (stdio, None)
    } else if detached {
        let stdin = if args.interactive {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("creating the stdin pipe: {e}"))?;
            open_stdin = Some(write);
            read
        } else {
            null()?
        };
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| format!("creating the output pipe: {e}"))?;
        // The container's end blocks as an ordinary stdout does.
        nix::fcntl::fcntl(
            write.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        )
        .map_err(|e| format!("output pipe: {e}"))?;
        let stdio = Stdio {
            stdin: Some(stdin),
            stdout: Some(dup(&write)?),
            stderr: Some(write),
            console: None,
        };
        let relay = Relay {
            from: read,
            to: Box::new(std::io::sink()),
            open: true,
        };
        (stdio, Some(relay))
    } else {
        let stdin = if args.interactive {
            None
        } else {
            Some(null()?)
        };
        let stdio = Stdio {
            stdin,
            ..Stdio::default()
        };
        (stdio, None)
    };
    // A failed start removes what it created itself (and never touches the directory
    // of another container of the same name).
    let container = runtime.start(&spec, stdio).map_err(|e| RunError {
        message: e.to_string(),
        code: e.exit_code(),
    })?;
    log::debug!("container {} started as pid {}", spec.name, container.pid);
    if let Some(joined) = joined.as_mut() {
        if let Err(e) = joined.hand_over(container.pid.as_raw() as u32) {
            log::warn!("bridge lease of {}: {e}", spec.name);
        }
    }
    let dir = runtime.container_dir(&spec.name);
    let mut relay = relay;
    if let Some(socket) = &console {
        match tty::receive_master(socket.as_fd()) {
            Ok(master) => {
                relay = Some(Relay {
                    from: master,
                    to: Box::new(std::io::stdout()),
                    open: true,
                })
            }
            // The program runs, but without its terminal nothing can reach it.
            Err(e) => {
                container.leaf.kill();
                let _ = waitpid(container.pid, None);
                let _ = container.leaf.remove();
                let _ = runtime.remove(&spec.name);
                return Err(format!("the container's terminal: {e}").into());
            }
        }
    }
    if let (true, Some(relay)) = (detached, relay.as_mut()) {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(record::LOG))
        {
            Ok(file) => relay.to = Box::new(file),
            Err(e) => log::warn!("container {}: its log: {e}", spec.name),
        }
    }
    let mut rec = ProcessId::of(container.pid.as_raw() as u32)
        .zip(ProcessId::of(std::process::id()))
        .map(|(container_id, monitor)| Record {
            name: spec.name.clone(),
            image: args.image.clone(),
            command: args.command.clone(),
            container: container_id,
            monitor,
            detached,
            remove: args.rm,
            stop_signal: container.image_stop_signal.unwrap_or(libc::SIGTERM),
            created: record::now(),
            exit_code: None,
        });
    if let Some(rec) = &rec {
        if let Err(e) = rec.save(&dir) {
            log::warn!("container {}: recording it: {e}", spec.name);
        }
    }
    if let Some(fd) = report.take() {
        let _ = std::fs::File::from(fd).write_all(b"ok\n");
    }
    let attached = args.tty && args.interactive && !detached;
    let raw_mode = if attached {
        tty::RawMode::enter()
    } else {
        None
    };
    let status = wait(&container, &signals, relay, args.tty, attached);
    drop(raw_mode);
    drop(open_stdin);
    let status = status?;
    let exit = Exit::from_wait(status, container.leaf.oom_kills());
    if let Err(e) = container.leaf.remove() {
        log::warn!("{e}");
    }
    if args.rm {
        if let Err(e) = runtime.remove(&spec.name) {
            log::warn!("removing container {}: {e}", spec.name);
        }
    } else {
        if let Some(rec) = rec.as_mut() {
            rec.exit_code = Some(exit.code);
            if let Err(e) = rec.save(&dir) {
                log::warn!("container {}: recording its exit: {e}", spec.name);
            }
        }
        log::debug!("container {} kept in {}", spec.name, dir.display());
    }
    if exit.oom_killed {
        eprintln!("berth: container {}: {exit}", spec.name);
    }
    drop(joined);
    Ok(exit.code)
}

/// Waits for the container's first process, forwarding signals, relaying its output
/// (and, with `stdin_to_pty`, `berth run`'s stdin to its terminal). With `tty` the
/// relay is from the container's terminal, which follows `berth run`'s window size.
fn wait(
    container: &Running,
    signals: &SignalFd,
    mut relay: Option<Relay>,
    tty: bool,
    stdin_to_pty: bool,
) -> Result<WaitStatus, RunError> {
    let stdin = std::io::stdin();
    let mut stdin_open = stdin_to_pty;
    loop {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let relay_at = match relay.as_ref() {
            Some(r) if r.open => {
                fds.push(PollFd::new(r.from.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let stdin_at = if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            Some(fds.len() - 1)
        } else {
            None
        };
        let polled = poll(&mut fds, PollTimeout::NONE);
        let ready = |at: Option<usize>| {
            at.and_then(|i| fds.get(i))
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (relay_ready, stdin_ready) = (ready(relay_at), ready(stdin_at));
        drop(fds);
        match polled {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                // Without the signalfd nothing can be forwarded: end the container
                // and fall through to the normal cleanup once it is reaped.
                log::error!("poll: {e}; killing the container");
                container.leaf.kill();
                return waitpid(container.pid, None)
                    .map_err(|e| format!("waiting for the container: {e}").into());
            }
        }
        if relay_ready {
            if let Some(r) = relay.as_mut() {
                r.pump();
            }
        }
        if stdin_ready {
            stdin_open = copy_stdin(stdin.as_fd(), relay.as_ref().map(|r| r.from.as_fd()));
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
            } else if sig == Signal::SIGWINCH && tty {
                if let Some(r) = relay.as_ref() {
                    tty::follow_window_size(r.from.as_fd());
                }
            } else if exited.is_none() {
                log::debug!("forwarding {sig} to the container");
                let _ = container.signal(sig);
            }
        }
        if let Some(status) = exited {
            // What the container wrote before it ended is still in the pty or pipe.
            if let Some(r) = relay.as_mut() {
                r.pump();
            }
            return Ok(status);
        }
    }
}

/// Copies what `berth run`'s stdin has to the container's terminal; false at its end,
/// which is passed on as the terminal's end-of-file character (so that a shell fed
/// from a pipe ends as it would reading the pipe).
fn copy_stdin(stdin: BorrowedFd<'_>, master: Option<BorrowedFd<'_>>) -> bool {
    let Some(master) = master else {
        return false;
    };
    let mut buf = [0u8; 4096];
    match tty::read(stdin, &mut buf) {
        tty::Read::Data(n) => {
            if let Err(e) = tty::write_all(master, buf.get(..n).unwrap_or_default()) {
                log::debug!("writing to the container's terminal: {e}");
            }
            true
        }
        tty::Read::Empty => true,
        tty::Read::End => {
            let _ = tty::write_all(master, b"\x04");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(argv: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("run").chain(argv.iter().copied()))
            .unwrap()
            .run
    }

    #[test]
    fn image_references_are_checked_as_docker_does() {
        for ok in [
            "busybox",
            "busybox:latest",
            "library/busybox:1.36",
            "registry.example:5000/team/app:v1.2-rc_3",
            "beeab28be143",
            "sha256:beeab28be143",
            "my-app__x.y",
        ] {
            assert!(validate_image_ref(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("Busybox", "must be lowercase"),
            ("busybox:", "expected NAME[:TAG]"),
            ("busybox:-x", "expected NAME[:TAG]"),
            ("-busybox", "expected NAME[:TAG]"),
            ("bus box", "expected NAME[:TAG]"),
            ("", "empty"),
            ("busybox@sha256:abc", "by digest"),
        ] {
            let e = validate_image_ref(bad).unwrap_err();
            assert!(e.starts_with("invalid reference format"), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn publishing_implies_the_bridge_and_refuses_other_networks() {
        assert_eq!(network_mode(&args(&["img"])).unwrap(), NetworkMode::None);
        assert_eq!(
            network_mode(&args(&["-p", "80:80", "img"])).unwrap(),
            NetworkMode::Bridge
        );
        assert_eq!(
            network_mode(&args(&["--network", "host", "img"])).unwrap(),
            NetworkMode::Host
        );
        for net in ["none", "host"] {
            let e = network_mode(&args(&["--network", net, "-p", "80:80", "img"])).unwrap_err();
            assert!(e.contains("-p/--publish needs the bridge network"), "{e}");
        }
        assert!(network_mode(&args(&["--network", "cable", "img"])).is_err());
    }

    #[test]
    fn an_empty_entrypoint_resets_it() {
        let s = spec_from_args(&args(&["--entrypoint", "", "img", "echo", "hi"])).unwrap();
        assert_eq!(s.entrypoint, Some(vec![]));
        let s = spec_from_args(&args(&["--entrypoint", "/bin/sh", "img"])).unwrap();
        assert_eq!(s.entrypoint, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(spec_from_args(&args(&["img"])).unwrap().entrypoint, None);
    }

    #[test]
    fn detached_runs_may_have_a_terminal() {
        let a = args(&["-dit", "img", "sh"]);
        assert!(a.detach && a.interactive && a.tty);
    }
}
