//! 1000 start/exit cycles of one container through the library, as PID 1 drives it:
//! afterwards the caller has the same descriptors and mounts as before, no child
//! left (no zombie), and no cgroup leaf or gc hold.
//!
//! `harness = false`: the runtime forks with `clone3`, which needs a single-threaded
//! caller. Needs root; skips without it unless `BERTH_REQUIRE_ROOT=1`.

use std::fs::File;
use std::os::fd::OwnedFd;

use std::path::Path;

use berth_imagefs::build::write_busybox_layout;
use berth_runtime::cgroup::CgroupParent;
use berth_runtime::spec::Limits;
use berth_runtime::{ContainerSpec, Exit, Runtime, Stdio};
use nix::sys::wait::{waitpid, WaitPidFlag};

const CYCLES: usize = 1000;

fn count(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

fn mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
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

    let fds_before = count("/proc/self/fd");
    let mounts_before = mounts();
    let started = std::time::Instant::now();
    for i in 0..CYCLES {
        let stdio = Stdio {
            stdin: Some(OwnedFd::from(File::open("/dev/null").unwrap())),
            stdout: Some(OwnedFd::from(
                File::options().write(true).open("/dev/null").unwrap(),
            )),
            stderr: None,
        };
        let run = runtime
            .start(&spec, stdio, false)
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        let status = waitpid(run.pid, None).unwrap();
        let exit = Exit::from_wait(status, run.leaf.oom_kills());
        assert!(exit.success(), "cycle {i}: {exit}");
        drop(run.pidfd);
        run.leaf.remove().unwrap();
    }
    let per_cycle = started.elapsed().as_secs_f64() * 1000.0 / CYCLES as f64;
    runtime.remove("cycle").unwrap();

    assert_eq!(count("/proc/self/fd"), fds_before, "descriptors leaked");
    assert_eq!(
        mounts(),
        mounts_before,
        "mounts leaked into the caller's namespace"
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
