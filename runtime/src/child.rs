//! The container side of `clone3`: everything between birth in the new namespaces
//! and `execve` of the container's program.
//!
//! This code runs in the child only. It reads the image (refs, manifest, config,
//! `/etc/passwd`), so a hostile image can at worst crash this process, never the
//! caller (PID 1). It reports to the parent over the sync pipe, one line per message:
//! `stop-signal N` once the image config is read, then `exec` right before `execve`
//! (the pipe is close-on-exec, so `exec` then EOF is taken for a running program), and
//! `error <text>` and exit when setup fails or `execve` returns. EOF without `exec` is a
//! setup that died (a signal, an OOM kill under the container's own memory limit): a
//! failed start. Only a kill inside `execve` itself, after `exec`, still reads as a
//! start, followed at once by the program's exit.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use berth_imagefs::mount::{plan_for_store, MountError, Upper};
use berth_imagefs::store::SCAFFOLD_FILES;
use berth_imagefs::{Store, StoreError};
use nix::fcntl::{OFlag, ResolveFlag};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::process::{self, ProcessError};
use crate::rootfs::{self, Resolve, RootfsError};
use crate::security::{self, SecurityError};
use crate::spec::{ContainerSpec, Network};
use crate::sys;

/// Upper bound on `/etc/passwd` and `/etc/group` read from an image.
const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// Exit code of a child whose setup failed, as Docker's for "cannot run".
pub const SETUP_FAILED: i32 = 127;

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("setting up stdio: {0}")]
    Stdio(nix::Error),
    #[error("{step}: {source}")]
    Namespace {
        step: &'static str,
        source: nix::Error,
    },
    #[error("image store: {0}")]
    Store(#[from] StoreError),
    #[error("image {image:?} has no run config")]
    NoConfig { image: String },
    #[error("overlay rootfs: {0}")]
    Overlay(#[from] MountError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("reading the image's {path}: {source}")]
    ReadFile {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("switching to user {user} (uid {uid}, gid {gid}): {source}")]
    Identity {
        user: String,
        uid: u32,
        gid: u32,
        source: nix::Error,
    },
    #[error("working directory {path}: {source}")]
    Workdir { path: String, source: nix::Error },
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("closing inherited descriptors: {0}")]
    CloseFds(std::io::Error),
    #[error("{0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("refusing to execute {0:?}: it resolves through a magic link (such as /proc/self/exe) or a symlink loop")]
    MagicLink(String),
    #[error("exec {path:?}: {source}")]
    Exec { path: String, source: nix::Error },
    #[error("{0:?} is a directory, not an executable file")]
    IsDirectory(String),
    #[error("{0:?} is not a regular file")]
    NotRegular(String),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error("container scratch space {path}: {source}")]
    Scratch {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the container's init reaper: {0}")]
    Fork(nix::Error),
    #[error("bringing up loopback: {0}")]
    Loopback(#[source] berth_netd::netlink::NetlinkError),
    #[error("joining the bridge network: {0}")]
    Network(#[source] berth_netd::container::AttachError),
    #[error("the container's terminal: {step}: {source}")]
    Console {
        step: &'static str,
        source: std::io::Error,
    },
}

/// Docker's exit codes for a container that never ran its program: the command was
/// not found (127), found but could not be executed (126), or the runtime failed
/// (125).
pub const NOT_FOUND: u8 = 127;
pub const CANNOT_EXECUTE: u8 = 126;
pub const RUNTIME_FAILED: u8 = 125;

impl ChildError {
    /// The code `berth run` exits with for this failure, as `docker run` would.
    pub fn exit_code(&self) -> u8 {
        use nix::errno::Errno;
        match self {
            ChildError::NotFound(_) => NOT_FOUND,
            ChildError::Exec {
                source: Errno::ENOENT | Errno::ENOTDIR,
                ..
            } => NOT_FOUND,
            ChildError::Exec { .. }
            | ChildError::IsDirectory(_)
            | ChildError::NotRegular(_)
            | ChildError::MagicLink(_) => CANNOT_EXECUTE,
            _ => RUNTIME_FAILED,
        }
    }
}

/// The report line, before `error`, that carries [`ChildError::exit_code`].
pub const CODE_REPORT: &str = "error-code ";

/// Everything the child needs, prepared by the parent before `clone3`.
pub struct Setup<'a> {
    pub spec: &'a ContainerSpec,
    /// For a bridge network: a netlink socket in the host's namespace.
    pub netlink: Option<berth_netd::netlink::Netlink>,
    pub store_root: &'a Path,
    /// An empty directory in the state directory, where the child mounts its scratch
    /// tmpfs ([`mount_scratch`]).
    pub scratch: &'a Path,
    pub upper: Upper,
    /// The contents of `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`.
    pub etc_contents: [String; 3],
    /// Host source of each volume, in `spec.volumes` order.
    pub volume_sources: Vec<PathBuf>,
    /// Descriptors for stdin, stdout, stderr; `None` keeps the inherited one.
    pub stdio: [Option<RawFd>; 3],
    /// `berth run -t`: a socket to send the master of a pty allocated in the
    /// container's own `/dev/pts` over, and the window size to give it.
    pub console: Option<(RawFd, Option<libc::winsize>)>,
    pub sync: OwnedFd,
}

/// Runs in the child; never returns.
pub fn run(mut setup: Setup<'_>) -> ! {
    let netlink = setup.netlink.take();
    let sync = setup.sync.as_fd();
    // A panic is a bug, but it still fails the start: the parent learns it from the sync
    // pipe like any other setup error, not from an end-of-file that reads as success.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        setup_and_exec(&setup, netlink, sync)
    }));
    let (code, mut msg) = match outcome {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => (
            e.exit_code(),
            format!("error {}", berth_imagefs::error_chain(&e)),
        ),
        Err(_) => (
            RUNTIME_FAILED,
            "error the container's setup panicked (a bug in berth)".to_owned(),
        ),
    };
    msg.retain(|c| c != '\n');
    report(sync, &format!("{CODE_REPORT}{code}"));
    report(sync, &msg);
    crate::sys::exit_now(SETUP_FAILED)
}

/// Size of the scratch tmpfs: room for a large `/etc/hosts`, and a bound on what the
/// container can write into the three files.
const SCRATCH_SIZE: &str = "size=4m,nr_inodes=16,mode=0755";

/// Mounts a small tmpfs on `mountpoint`, in the container's own mount namespace, and
/// fills it: `root/` (where the overlay goes) and the generated `/etc` files. Nothing
/// per start is written to the state directory's disk, so a start and a removal touch
/// few inodes there (on a filesystem mounted with `discard`, each freed block costs a
/// synchronous discard). The tmpfs lives on as long as the container's bind mounts of
/// the files do.
fn mount_scratch(
    mountpoint: &Path,
    contents: &[String; 3],
) -> Result<(PathBuf, [PathBuf; 3]), ChildError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ChildError::Scratch { path, source }
    };
    nix::mount::mount(
        Some("tmpfs"),
        mountpoint,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(SCRATCH_SIZE),
    )
    .map_err(|e| err(mountpoint)(e.into()))?;
    let root = mountpoint.join("root");
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&root)
        .map_err(err(&root))?;
    let files = SCAFFOLD_FILES.map(|p| mountpoint.join(p.trim_start_matches("etc/")));
    for (path, text) in files.iter().zip(contents) {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(err(path))?;
    }
    Ok((root, files))
}

/// The report that the program is about to be executed.
pub const EXEC_REPORT: &str = "exec";

/// Writes one report line. A failed write is not reported: the parent then sees EOF
/// without the line it waits for, which fails the start.
fn report(sync: BorrowedFd<'_>, line: &str) {
    let mut rest = format!("{line}\n").into_bytes();
    while !rest.is_empty() {
        match nix::unistd::write(sync, &rest) {
            Ok(0) => return,
            Ok(n) => {
                rest.drain(..n.min(rest.len()));
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn ns(step: &'static str) -> impl Fn(nix::Error) -> ChildError {
    move |source| ChildError::Namespace { step, source }
}

fn setup_and_exec(
    s: &Setup<'_>,
    netlink: Option<berth_netd::netlink::Netlink>,
    sync: BorrowedFd<'_>,
) -> Result<Infallible, ChildError> {
    let spec = s.spec;
    nix::sys::prctl::set_dumpable(false).map_err(ns("prctl(PR_SET_DUMPABLE)"))?;
    // A session of its own: a terminal's ctrl-c reaches `berth run` (which forwards
    // it once), not every process of the container behind its back.
    nix::unistd::setsid().map_err(ns("setsid"))?;
    for (target, fd) in s.stdio.iter().enumerate() {
        if let Some(fd) = fd {
            nix::unistd::dup2(*fd, target as RawFd).map_err(ChildError::Stdio)?;
        }
    }
    nix::sys::stat::umask(Mode::empty());
    // The cgroup namespace is rooted where the process now is: its own leaf.
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(ns("unshare(CLONE_NEWCGROUP)"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(ns("making mounts private"))?;
    nix::unistd::sethostname(spec.hostname()).map_err(ns("sethostname"))?;
    match (&spec.network, netlink) {
        (Network::None, _) => berth_netd::netlink::loopback_up().map_err(ChildError::Loopback)?,
        (Network::Host, _) => {}
        (Network::Bridge(attachment), Some(mut host)) => {
            berth_netd::container::attach(&mut host, attachment).map_err(ChildError::Network)?
        }
        (Network::Bridge(_), None) => {
            return Err(ChildError::Network(
                berth_netd::container::AttachError::NoSocket,
            ))
        }
    }

    let (rootfs_path, etc_files) = mount_scratch(s.scratch, &s.etc_contents)?;

    // The image: resolve, take a gc hold, mount the overlay.
    let store = Store::open_existing(s.store_root)?;
    let run_config = {
        let _lock = store.lock_shared()?;
        let (_, manifest_digest) = store.resolve(&spec.image)?;
        let manifest = store.manifest(&manifest_digest)?;
        let config = store.config(&manifest)?;
        let mut links = Vec::with_capacity(config.rootfs.diff_ids.len());
        for d in &config.rootfs.diff_ids {
            links.push(store.ensure_link(d)?);
        }
        store.hold_container(&crate::spawn::image_hold(&spec.name), &manifest_digest)?;
        store.ensure_scaffold()?;
        let plan = plan_for_store(&store, &links, Some(&s.upper))?;
        nix::mount::mount(
            Some("overlay"),
            &rootfs_path,
            Some("overlay"),
            plan.flags,
            Some(plan.data.as_str()),
        )
        .map_err(|e| MountError::Mount {
            target: rootfs_path.clone(),
            source: e.into(),
        })?;
        config.config.unwrap_or_default()
    };
    if let Some(sig) = run_config.stop_signal.as_deref() {
        if let Ok(n) = crate::spec::parse_signal(sig) {
            report(sync, &format!("stop-signal {n}"));
        }
    }

    let root = File::open(&rootfs_path)
        .map(OwnedFd::from)
        .map_err(|source| RootfsError::Resolve {
            path: rootfs_path.display().to_string(),
            source,
        })?;
    // New named volumes are seeded from the bare image, before anything is mounted
    // inside it.
    for (volume, src) in spec.volumes.iter().zip(&s.volume_sources) {
        if matches!(volume.source, crate::spec::VolumeSource::Named(_)) {
            crate::volume::ensure(root.as_fd(), src, &volume.target)?;
        }
    }
    rootfs::mount_system(root.as_fd())?;
    for (src, dst) in etc_files.iter().zip(SCAFFOLD_FILES) {
        rootfs::bind(root.as_fd(), src, dst, false, Resolve::InRoot)?;
    }
    for (volume, src) in spec.volumes.iter().zip(&s.volume_sources) {
        rootfs::bind(
            root.as_fd(),
            src,
            &volume.target,
            volume.read_only,
            Resolve::InRoot,
        )?;
    }
    for path in &spec.tmpfs {
        rootfs::mount_tmpfs(root.as_fd(), path)?;
    }
    rootfs::pivot(&rootfs_path, root.as_fd())?;
    drop(root);
    if let Some((socket, size)) = s.console {
        open_console(socket, size.as_ref())?;
    }
    let root = File::open("/")
        .map(OwnedFd::from)
        .map_err(|source| RootfsError::Resolve {
            path: "/".into(),
            source,
        })?;
    // Account files are read before a read-only remount could matter and before the
    // switch of user; both come from inside the container's root only.
    let passwd = read_in_root(root.as_fd(), "/etc/passwd")?;
    let group = read_in_root(root.as_fd(), "/etc/group")?;
    if spec.read_only {
        rootfs::root_readonly()?;
    }

    let process = process::resolve(spec, &run_config)?;
    let id = process::identity(&process.user, &passwd, &group)?;
    let mut env = process.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", id.home));
    }
    let workdir = rootfs::ensure_dir(root.as_fd(), &process.workdir, Resolve::InRoot)?;
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(process::DEFAULT_PATH)
        .to_string();
    let argv0 = process.argv.first().cloned().unwrap_or_default();
    let program = find_executable(root.as_fd(), &argv0, &path_var, &process.workdir)?;

    let keep = security::capabilities(spec);
    security::become_user(&keep, id.uid, id.gid, &id.groups).map_err(|e| match e {
        SecurityError::Identity { uid, gid, source } => ChildError::Identity {
            user: process.user.clone(),
            uid,
            gid,
            source,
        },
        other => other.into(),
    })?;
    nix::unistd::fchdir(workdir.as_raw_fd()).map_err(|source| ChildError::Workdir {
        path: process.workdir.clone(),
        source,
    })?;
    drop(workdir);
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    let filter = crate::seccomp::compile(&keep);

    let argv: Vec<CString> = process
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap_or_default())
        .collect();
    let envp: Vec<CString> = env
        .iter()
        .map(|e| CString::new(e.as_str()).unwrap_or_default())
        .collect();
    let program_c = CString::new(program.as_str()).unwrap_or_default();

    sys::cloexec_from(3).map_err(ChildError::CloseFds)?;
    // Signal state inherited from the caller (PID 1 blocks everything for its
    // signalfd; Rust ignores SIGPIPE) must not reach the container.
    sys::reset_signals();
    // Before the reaper forks off, so that it runs under the filter too.
    crate::seccomp::load_filter(&filter).map_err(SecurityError::Seccomp)?;
    if spec.init {
        if let Some(main) = fork_for_init()? {
            // The reaper never calls execve, so close-on-exec never acts for it: close
            // everything it inherited (the sync pipe, so that the parent sees EOF when
            // the program's exec closes the other copy; and all of the caller's
            // descriptors, which for PID 1 include other containers' pipes and pidfds).
            let _ = sys::close_from(3);
            crate::reaper::run(main);
        }
    }
    // The last word before `execve`: without it the parent takes EOF for a setup that
    // died. (If `execve` fails, the error follows it and wins.)
    report(sync, EXEC_REPORT);
    let e = match nix::unistd::execve(&program_c, &argv, &envp) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    Err(ChildError::Exec {
        path: program,
        source: e,
    })
}

fn fork_for_init() -> Result<Option<Pid>, ChildError> {
    match crate::sys::fork().map_err(ChildError::Fork)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child)),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// Reads a small file from inside the container (at most [`MAX_ACCOUNT_FILE`] bytes, a
/// regular file, never blocking); missing means empty. For the start and for `exec`.
pub(crate) fn read_in_root(root: BorrowedFd<'_>, path: &'static str) -> Result<String, ChildError> {
    let file = match rootfs::open_regular(root, path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(source) => return Err(ChildError::ReadFile { path, source }),
    };
    let mut bytes = Vec::new();
    file.take(MAX_ACCOUNT_FILE)
        .read_to_end(&mut bytes)
        .map_err(|source| ChildError::ReadFile { path, source })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Allocates a pty in the container's own `/dev/pts` (so that the program's `ttyname`
/// is a path inside the container, `/dev/pts/0`), makes its slave stdin, stdout,
/// stderr and the controlling terminal of this new session (job control, ^C to the
/// foreground group, SIGWINCH on resizes), and sends the master to the caller over
/// `socket`.
fn open_console(socket: RawFd, size: Option<&libc::winsize>) -> Result<(), ChildError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |step| move |source| ChildError::Console { step, source };
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/pts/ptmx")
        .map_err(err("opening /dev/pts/ptmx"))?;
    let slave = sys::open_pty_peer(master.as_fd()).map_err(err("opening the pty's slave"))?;
    if let Some(size) = size {
        sys::set_window_size(master.as_fd(), size).map_err(err("setting its size"))?;
    }
    for target in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), target).map_err(|e| err("dup2")(e.into()))?;
    }
    drop(slave);
    sys::set_controlling_terminal(0).map_err(err("TIOCSCTTY"))?;
    let fds = [master.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        socket,
        &[std::io::IoSlice::new(b"m")],
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(|e| err("sending the master")(e.into()))?;
    Ok(())
}

/// Finds the program the way `execvp` would, but inside the container's root only and
/// never through a magic link: `/proc/self/exe` (or a symlink to it) would otherwise
/// run the runtime's own binary inside the container (CVE-2019-5736).
///
/// Between this check and `execve` only processes inside the container's mount
/// namespace could swap the path, and none exist yet.
pub(crate) fn find_executable(
    root: BorrowedFd<'_>,
    argv0: &str,
    path_var: &str,
    workdir: &str,
) -> Result<String, ChildError> {
    let candidates: Vec<String> = if argv0.contains('/') {
        if argv0.starts_with('/') {
            vec![argv0.to_string()]
        } else {
            vec![format!("{}/{argv0}", workdir.trim_end_matches('/'))]
        }
    } else {
        path_var
            .split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| format!("{}/{argv0}", d.trim_end_matches('/')))
            .collect()
    };
    let how = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    for candidate in &candidates {
        let rel = CString::new(candidate.trim_start_matches('/')).unwrap_or_default();
        match sys::openat2(root, &rel, OFlag::O_PATH, how) {
            Ok(fd) => {
                let kind = nix::sys::stat::fstat(fd.as_raw_fd())
                    .map(|st| st.st_mode & libc::S_IFMT)
                    .unwrap_or(0);
                if kind == libc::S_IFREG {
                    return Ok(candidate.clone());
                }
                // A path names one file: what it is decides (a $PATH search goes on).
                if argv0.contains('/') {
                    return Err(if kind == libc::S_IFDIR {
                        ChildError::IsDirectory(candidate.clone())
                    } else {
                        ChildError::NotRegular(candidate.clone())
                    });
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(ChildError::MagicLink(candidate.clone()))
            }
            Err(_) => {}
        }
    }
    Err(ChildError::NotFound(argv0.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    #[test]
    fn failures_map_to_dockers_exit_codes() {
        let exec = |source| ChildError::Exec {
            path: "/bin/x".into(),
            source,
        };
        assert_eq!(ChildError::NotFound("x".into()).exit_code(), 127);
        assert_eq!(
            exec(Errno::ENOENT).exit_code(),
            127,
            "a missing interpreter"
        );
        for cannot in [
            exec(Errno::EACCES),
            exec(Errno::ENOEXEC),
            ChildError::IsDirectory("/etc".into()),
            ChildError::NotRegular("/dev/null".into()),
            ChildError::MagicLink("/proc/self/exe".into()),
        ] {
            assert_eq!(cannot.exit_code(), 126, "{cannot}");
        }
        let setup = ChildError::Workdir {
            path: "/x".into(),
            source: Errno::EPERM,
        };
        assert_eq!(setup.exit_code(), 125, "berth's own failure");
    }
}
