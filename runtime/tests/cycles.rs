//! 1000 start/exit cycles through the library, driven as PID 1 drives it: `begin`,
//! then poll the sync pipe and `advance`, never blocking on one container. Each
//! cycle starts two containers at once, one that runs and one whose setup fails (a
//! user the image lacks). Afterwards the caller has the same descriptors and mounts
//! as before, no child left (no zombie), and no cgroup leaf or gc hold.
//!
//! `harness = false`: the runtime forks with `clone3`, which needs a single-threaded
//! caller. Needs root; skips without it unless `BERTH_REQUIRE_ROOT=1`.

use std::fs::File;
use std::os::fd::OwnedFd;

use std::path::Path;

use berth_imagefs::build::write_busybox_layout;
use berth_runtime::cgroup::CgroupParent;
use berth_runtime::spec::Limits;
use berth_runtime::{ContainerSpec, Exit, Runtime, Starting, Stdio};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag};

const CYCLES: usize = 1000;

fn count(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// The caller's mounts under `dir` (the test's own store and state): counting only
/// these keeps mounts made or removed elsewhere on the machine meanwhile out of it.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .map(str::to_owned)
        .collect()
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("BERTH_REQUIRE_ROOT").as_deref() != Ok("1"),
            "this test needs root and BERTH_REQUIRE_ROOT=1"
        );
        println!("skipping runtime cycle test: not root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_busybox_layout(&layout, Path::new("/bin/busybox"), "bb:1")
        .expect("busybox-static is installed");
    let store_dir = dir.path().join("store");
    let store = berth_imagefs::Store::open(&store_dir).unwrap();
    berth_imagefs::import(&store, &layout, &Default::default(), &mut |_| {}).unwrap();
    drop(store);
    let runtime = Runtime {
        store: store_dir.clone(),
        state: store_dir.clone(),
        cgroups: CgroupParent::prepare(&Limits::default()).unwrap(),
    };
    let mut spec = ContainerSpec::new("cycle", "bb:1").unwrap();
    spec.command = Some(vec!["/bin/true".into()]);
    let mut bad = ContainerSpec::new("cycle-bad", "bb:1").unwrap();
    bad.command = Some(vec!["/bin/true".into()]);
    bad.user = Some("no-such-user".into());

    let fds_before = count("/proc/self/fd");
    let started = std::time::Instant::now();
    for i in 0..CYCLES {
        let good = runtime
            .begin(&spec, null_stdio())
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        let failing = runtime
            .begin(&bad, null_stdio())
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        let (good, failing) = (finish(good), finish(failing));

        let stop_signal = good.1.unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        assert_eq!(stop_signal, None);
        let run = good.0.into_running(stop_signal);
        let status = waitpid(run.pid, None).unwrap();
        let exit = Exit::from_wait(status, run.leaf.oom_kills());
        assert!(exit.success(), "cycle {i}: {exit}");
        drop(run.pidfd);
        run.leaf.remove().unwrap();

        let (failed, Err(e)) = failing else {
            panic!("cycle {i}: a container with an unknown user started");
        };
        assert!(
            e.to_string()
                .contains("\"no-such-user\" is not in the image's /etc/passwd"),
            "cycle {i}: {e}"
        );
        // The child exits on its own after reporting; PID 1 reaps it, then removes
        // the leaf.
        let status = waitpid(failed.pid, None).unwrap();
        assert_eq!(
            Exit::from_wait(status, 0).code,
            berth_runtime::child::SETUP_FAILED
        );
        failed.into_leaf().remove().unwrap();
    }
    let per_cycle = started.elapsed().as_secs_f64() * 1000.0 / CYCLES as f64;
    a_setup_killed_before_exec_is_a_failed_start(&runtime, &spec);
    runtime.remove("cycle").unwrap();
    runtime.remove("cycle-bad").unwrap();

    assert_eq!(count("/proc/self/fd"), fds_before, "descriptors leaked");
    let leaked = mounts_under(dir.path());
    assert!(
        leaked.is_empty(),
        "mounts leaked into the caller's namespace: {leaked:?}"
    );
    assert_eq!(
        waitpid(None, Some(WaitPidFlag::WNOHANG)),
        Err(nix::errno::Errno::ECHILD),
        "a child is left"
    );
    let leaf = runtime.cgroups.mount().join("berth/cycle");
    assert!(!leaf.exists(), "cgroup leaf left: {}", leaf.display());
    assert_eq!(
        count(store_dir.join("holds").to_str().unwrap()),
        0,
        "gc hold left"
    );
    println!("test {CYCLES}_start_exit_cycles_leak_nothing ... ok ({per_cycle:.2} ms per cycle)");
}

/// A setup child that dies before `execve` (here SIGKILL at once, as an OOM kill under
/// the container's memory limit would) closes the sync pipe as `execve` does: that must
/// read as a failed start, not as a program that ran and exited.
fn a_setup_killed_before_exec_is_a_failed_start(runtime: &Runtime, spec: &ContainerSpec) {
    for i in 0..20 {
        let starting = runtime.begin(spec, null_stdio()).unwrap();
        starting.kill();
        let (starting, outcome) = finish(starting);
        let Err(e) = outcome else {
            panic!("try {i}: a setup killed before exec counted as a start");
        };
        assert!(
            e.to_string().contains("ended before running the program"),
            "try {i}: {e}"
        );
        waitpid(starting.pid, None).unwrap();
        starting.into_leaf().remove().unwrap();
    }
    println!("test a_setup_killed_before_exec_is_a_failed_start ... ok");
}

fn null_stdio() -> Stdio {
    Stdio {
        stdin: Some(OwnedFd::from(File::open("/dev/null").unwrap())),
        stdout: Some(OwnedFd::from(
            File::options().write(true).open("/dev/null").unwrap(),
        )),
        stderr: None,
        console: None,
    }
}

/// Polls a starting container's sync pipe until its setup ends, as PID 1's event
/// loop does.
fn finish(mut start: Starting) -> (Starting, Result<Option<i32>, berth_runtime::StartError>) {
    loop {
        match start.advance() {
            Some(outcome) => return (start, outcome),
            None => {
                let mut fds = [PollFd::new(start.sync_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::from(10_000u16)).unwrap();
            }
        }
    }
}
