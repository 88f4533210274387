//! `make bench`: the time to run `/bin/true` in a fresh container, `berth run --rm`
//! against `crun run` and `runc run` (Debian's), on the same busybox rootfs, in the
//! same run, interleaved, median of `BERTH_BENCH_RUNS` (default 50) runs each.
//!
//! Each runtime gets new mount, PID, UTS, IPC and network namespaces. berth also mounts
//! an overlay of the image (crun and runc get a plain directory), creates and removes a
//! cgroup leaf, and deletes the container's writable layer (`--rm`).
//!
//! Two calibration rows, from the same runs: `/bin/busybox true` without a container
//! (the container's program: `execve` and its libc's start-up) and `berth --version`
//! (berth's own `execve` and start-up, no container). Every `berth run` pays both, as
//! every `crun run` pays crun's start-up and the program's; what is left is the
//! container's own setup and teardown. On a virtual machine that traps `cpuid`, glibc's
//! start-up alone (which reads the CPU's cache layout with dozens of `cpuid`s) can
//! cost ~0.5 ms per process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_imagefs::build::{busybox_entries, write_oci_layout, Entry, BUSYBOX_APPLETS};
use berth_imagefs::oci::RunConfig;

fn berth_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<triple>/release/examples/bench_run → target/<triple>/release/berth (`make
    // bench` builds both statically, as `make berth` does)
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("berth"))
        .expect("target dir");
    assert!(bin.exists(), "{} missing: make berth", bin.display());
    bin
}

fn write_rootfs(root: &Path, entries: &[Entry]) {
    use std::os::unix::fs::PermissionsExt;
    for e in entries {
        match e {
            Entry::Dir { path, mode } => {
                std::fs::create_dir_all(root.join(path)).unwrap();
                std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(*mode))
                    .unwrap();
            }
            Entry::File { path, mode, data } => {
                std::fs::write(root.join(path), data).unwrap();
                std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(*mode))
                    .unwrap();
            }
            Entry::Symlink { path, target } => {
                std::os::unix::fs::symlink(target, root.join(path)).unwrap()
            }
            Entry::Fifo { path } => nix::unistd::mkfifo(
                &root.join(path),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .unwrap(),
        }
    }
    for d in ["proc", "dev", "sys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
}

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn p90(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() * 9 / 10].as_secs_f64() * 1000.0
}

fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    let took = start.elapsed();
    assert!(status.success(), "{cmd:?}: {status}");
    took
}

/// On a hybrid host crun refuses to run at all. The bench therefore runs in its own
/// mount namespace with the cgroup2 hierarchy mounted at /sys/fs/cgroup (as on a
/// berth host), which all three runtimes then use.
fn pure_cgroup2_view() {
    use nix::mount::{mount, MsFlags};
    let hybrid = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    if !hybrid {
        return;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare mount namespace");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
    mount(
        Some("cgroup2"),
        "/sys/fs/cgroup",
        Some("cgroup2"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount cgroup2");
    println!("note: hybrid host: measuring with cgroup2 mounted at /sys/fs/cgroup in a private mount namespace");
}

fn main() {
    pure_cgroup2_view();
    let runs: usize = std::env::var("BERTH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let bb = std::fs::read("/bin/busybox").expect("busybox-static");
    let entries = busybox_entries(&bb, BUSYBOX_APPLETS);
    let layout = dir.path().join("layout");
    write_oci_layout(&layout, &entries, RunConfig::default(), "bench:latest").unwrap();
    let store_dir = dir.path().join("store");
    let store = berth_imagefs::Store::open(&store_dir).unwrap();
    berth_imagefs::import(&store, &layout, &Default::default(), &mut |_| {}).unwrap();

    let bundle = dir.path().join("bundle");
    write_rootfs(&bundle.join("rootfs"), &entries);
    let ok = Command::new("crun")
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .map(|s| s.success());
    assert_eq!(
        ok.ok(),
        Some(true),
        "crun spec failed (is crun installed? make deps)"
    );
    let spec_path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let berth = berth_binary();
    let have_runc = Command::new("runc")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    // crun refuses hybrid hosts whose cgroup v2 has any controller; there it runs
    // without cgroups (which only makes it faster).
    let crun_probe = Command::new("crun")
        .args(["run", "-b"])
        .arg(&bundle)
        .arg("bench-probe")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let crun_args: &[&str] = if crun_probe {
        &["run", "-b"]
    } else {
        println!(
            "note: crun cannot use this host's cgroups; measuring crun --cgroup-manager=disabled"
        );
        &["--cgroup-manager=disabled", "run", "-b"]
    };
    let (mut b, mut c, mut r) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bare, mut start) = (Vec::new(), Vec::new());
    for i in 0..runs {
        bare.push(timed(Command::new("/bin/busybox").arg("true")));
        start.push(timed(Command::new(&berth).arg("--version")));
        b.push(timed(
            Command::new(&berth)
                .args(["run", "--rm", "--store"])
                .arg(&store_dir)
                .args(["bench:latest", "/bin/true"]),
        ));
        c.push(timed(
            Command::new("crun")
                .args(crun_args)
                .arg(&bundle)
                .arg(format!("bench-c{i}")),
        ));
        if have_runc {
            r.push(timed(
                Command::new("runc")
                    .args(["run", "-b"])
                    .arg(&bundle)
                    .arg(format!("bench-r{i}")),
            ));
        }
    }
    println!("container run of /bin/true, {runs} runs each, interleaved (ms)");
    println!("{:<22} {:>8} {:>8}", "", "median", "p90");
    println!(
        "{:<22} {:>8.2} {:>8.2}",
        "berth run --rm",
        median(&mut b),
        p90(&mut b)
    );
    println!(
        "{:<22} {:>8.2} {:>8.2}",
        "crun run",
        median(&mut c),
        p90(&mut c)
    );
    if have_runc {
        println!(
            "{:<22} {:>8.2} {:>8.2}",
            "runc run",
            median(&mut r),
            p90(&mut r)
        );
    }
    println!("berth / crun: {:.2}", median(&mut b) / median(&mut c));
    let (bare, start) = (median(&mut bare), median(&mut start));
    println!(
        "calibration: busybox true without a container {bare:.2} ms, berth --version {start:.2} ms"
    );
    println!(
        "berth run beyond those two process start-ups: {:.2} ms",
        median(&mut b) - bare - start
    );
}
