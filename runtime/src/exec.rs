//! Running a command inside a running container, as `docker exec` does: health checks.
//!
//! The caller (PID 1) clones a helper straight into the container's cgroup leaf, so the
//! command counts against the container's limits. The helper enters the container's
//! namespaces through its pidfd (`setns` with several `CLONE_NEW*` flags, Linux 5.8) and
//! forks the command, which is then inside the container's PID namespace too. The
//! command runs as `docker exec` runs it: with the container's configured identity, not
//! the running program's (which may have changed its environment since): the user, the
//! environment and the working directory come from the spec and the config of the
//! image the container was started from (the digest of its gc hold), the user and groups
//! resolved in the container's own `/etc/passwd` and `/etc/group`, exactly as at the
//! start. It gets the container's capability set, `no_new_privs` and the seccomp filter,
//! and its stdio goes to `/dev/null`.
//!
//! The helper waits for the command, kills it after the timeout, and exits with its
//! status: the command's code, 128 + a signal, [`TIMED_OUT`], or [`CANNOT_RUN`] when it
//! could not be started. Everything that reads the container's files happens in the
//! helper or the command, never in the caller.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use berth_imagefs::oci::RunConfig;
use berth_imagefs::Store;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::rootfs::{self, Resolve};
use crate::spawn::Running;
use crate::spec::{ContainerSpec, Network};
use crate::sys::{self, Forked};
use crate::{process, security};

/// The helper's exit code when the command ran past its timeout (as `timeout(1)`).
pub const TIMED_OUT: i32 = 124;
/// The helper's exit code when the command could not be started.
pub const CANNOT_RUN: i32 = 126;

/// Starts `argv` inside `run`, whose image is in the store at `store`; returns the
/// helper's pid, to be reaped by the caller. The caller must be single-threaded (PID 1
/// is).
pub fn exec_in(
    run: &Running,
    spec: &ContainerSpec,
    store: &Path,
    argv: &[String],
    timeout: Duration,
) -> std::io::Result<Pid> {
    match sys::clone3_into_cgroup(0, run.leaf.fd())? {
        Forked::Parent { pid, .. } => Ok(Pid::from_raw(pid)),
        Forked::Child => sys::child_exit(CANNOT_RUN, || {
            helper(run.pidfd.as_fd(), spec, store, argv, timeout)
        }),
    }
}

/// The run config of the image `spec`'s container was started from: the manifest its
/// gc hold names, so that a name re-tagged since does not change what the check runs as.
fn started_image_config(store: &Path, spec: &ContainerSpec) -> Result<RunConfig, String> {
    let store = Store::open_existing(store).map_err(|e| e.to_string())?;
    let _lock = store.lock_shared().map_err(|e| e.to_string())?;
    let hold = crate::spawn::image_hold(&spec.name);
    let holds = store.holds().map_err(|e| e.to_string())?;
    let manifest = match holds.get(&hold) {
        Some(digest) => *digest,
        None => {
            return Err(format!(
                "the store has no hold {hold} for the running container"
            ))
        }
    };
    let manifest = store.manifest(&manifest).map_err(|e| e.to_string())?;
    let config = store.config(&manifest).map_err(|e| e.to_string())?;
    Ok(config.config.unwrap_or_default())
}

/// The helper: read the image config, enter, fork the command, wait for it with a
/// deadline.
fn helper(
    pidfd: BorrowedFd<'_>,
    spec: &ContainerSpec,
    store: &Path,
    argv: &[String],
    timeout: Duration,
) -> i32 {
    // A copy of PID 1 with all its descriptors (other containers' pidfds and cgroups,
    // its signalfd): not dumpable, so that the container cannot open them through
    // /proc/<pid>/fd, and they are closed as soon as the namespaces are entered.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("berth: exec in {}: prctl(PR_SET_DUMPABLE): {e}", spec.name);
        return CANNOT_RUN;
    }
    // Before entering: the store is on the host's side of the mount namespace.
    let image = match started_image_config(store, spec) {
        Ok(image) => image,
        Err(e) => {
            eprintln!("berth: exec in {}: its image's config: {e}", spec.name);
            return CANNOT_RUN;
        }
    };
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP;
    if spec.network != Network::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = nix::sched::setns(pidfd, flags) {
        eprintln!("berth: exec in {}: entering its namespaces: {e}", spec.name);
        return CANNOT_RUN;
    }
    if let Err(e) = sys::close_from(3) {
        eprintln!("berth: exec in {}: closing descriptors: {e}", spec.name);
        return CANNOT_RUN;
    }
    let child = match sys::fork() {
        Ok(nix::unistd::ForkResult::Child) => sys::child_exit(CANNOT_RUN, || {
            let e = match command(spec, &image, argv) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            eprintln!("berth: exec in {}: {e}", spec.name);
            CANNOT_RUN
        }),
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(e) => {
            eprintln!("berth: exec in {}: fork: {e}", spec.name);
            return CANNOT_RUN;
        }
    };
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return CANNOT_RUN,
        }
        if Instant::now() >= deadline {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(child, None);
            return TIMED_OUT;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The command's side: identity, privileges, exec. Returns only on failure.
fn command(spec: &ContainerSpec, image: &RunConfig, argv: &[String]) -> Result<Infallible, String> {
    // Inside the container's mount namespace "/" is its root. Everything is resolved
    // from it as the start resolves it: the account files bounded and never through a
    // magic link, the program and the working directory inside the root only.
    let root: OwnedFd = std::fs::File::open("/")
        .map_err(|e| format!("/: {e}"))?
        .into();
    let passwd =
        crate::child::read_in_root(root.as_fd(), "/etc/passwd").map_err(|e| e.to_string())?;
    let group =
        crate::child::read_in_root(root.as_fd(), "/etc/group").map_err(|e| e.to_string())?;
    let process = process::resolve(spec, image).map_err(|e| e.to_string())?;
    let id = process::identity(&process.user, &passwd, &group).map_err(|e| e.to_string())?;
    let mut env = process.env;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", id.home));
    }
    let (uid, gid, groups) = (id.uid, id.gid, id.groups);
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(process::DEFAULT_PATH)
        .to_string();
    let argv0 = argv.first().cloned().unwrap_or_default();
    let program = crate::child::find_executable(root.as_fd(), &argv0, &path_var, &process.workdir)
        .map_err(|e| e.to_string())?;
    let workdir = rootfs::open(root.as_fd(), &process.workdir, Resolve::InRoot, true)
        .map_err(|e| format!("working directory: {e}"))?;
    drop(root);

    let keep = security::capabilities(spec);
    security::become_user(&keep, uid, gid, &groups).map_err(|e| e.to_string())?;
    nix::unistd::fchdir(workdir.as_raw_fd())
        .map_err(|e| format!("working directory {}: {e}", process.workdir))?;
    drop(workdir);
    let filter = crate::seccomp::compile(&keep);
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    for fd in 0..3 {
        nix::unistd::dup2(null.as_raw_fd(), fd).map_err(|e| format!("stdio: {e}"))?;
    }
    let to_c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"));
    let argv_c = argv
        .iter()
        .map(|a| to_c(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env_c = env.iter().map(|e| to_c(e)).collect::<Result<Vec<_>, _>>()?;
    let program_c = to_c(&program)?;
    sys::cloexec_from(3).map_err(|e| format!("closing descriptors: {e}"))?;
    sys::reset_signals();
    crate::seccomp::load_filter(&filter).map_err(|e| format!("loading the seccomp filter: {e}"))?;
    let e = nix::unistd::execve(&program_c, &argv_c, &env_c).err();
    Err(format!(
        "exec {program}: {}",
        e.map_or("?".into(), |e| e.to_string())
    ))
}
