//! `make bench`: the time to run `/bin/true` in a fresh container, `berth run --rm`
//! against `crun run` and `runc run` (Debian's), on the same busybox rootfs, in the
//! same run, interleaved, median of `BERTH_BENCH_RUNS` (default 50) runs each.
//!
//! Each runtime gets new mount, PID, UTS, IPC and network namespaces. berth also mounts
//! an overlay of the image (crun and runc get a plain directory), creates and removes a
//! cgroup leaf, and deletes the container's writable layer (`--rm`).
//!
//! berth runs twice: with the store in the temporary directory (whatever filesystem
//! holds `$TMPDIR`: the container's writable layer and state live there, as they
//! would under `/var/lib/berth`) and with the store on a tmpfs (as on a berth host,
//! whose state directory is memory-backed). The difference is the disk's cost: on
//! ext4 without a journal and with online `discard`, every directory created and
//! removed costs a scan for recently deleted inodes and a synchronous discard.
//!
//! Three calibration rows, from the same runs: `/bin/busybox true` without a container
//! (the container's program: `execve` and its libc's start-up), `berth --version`
//! (berth's own `execve` and start-up, no container), and `unshare` making the same
//! new namespaces (mount, PID, UTS, IPC, network) for `busybox true` and nothing else:
//! no rootfs, cgroup, `/proc`, capabilities or seccomp. That last row is what any
//! runtime pays on this machine before it does a container's work. On a virtual
//! machine that traps `cpuid`, glibc's start-up alone (which reads the CPU's cache
//! layout with dozens of `cpuid`s) can cost ~0.5 ms per process.

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

/// The bench runs in a mount namespace of its own, so that its tmpfs (and the cgroup2
/// mount below) never outlive it.
fn private_mounts() {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare mount namespace");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
}

/// On a hybrid host crun refuses to run at all. The bench therefore mounts the cgroup2
/// hierarchy at /sys/fs/cgroup (as on a berth host), which all three runtimes then use.
fn pure_cgroup2_view() {
    use nix::mount::{mount, MsFlags};
    let hybrid = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    if !hybrid {
        return;
    }
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

/// A short name for the filesystem holding `path`.
fn filesystem(path: &Path) -> String {
    use nix::sys::statfs::*;
    let Ok(fs) = statfs(path) else {
        return "?".into();
    };
    let t = fs.filesystem_type();
    let name = if t == EXT4_SUPER_MAGIC {
        "ext4"
    } else if t == TMPFS_MAGIC {
        "tmpfs"
    } else if t == XFS_SUPER_MAGIC {
        "xfs"
    } else if t == BTRFS_SUPER_MAGIC {
        "btrfs"
    } else if t == OVERLAYFS_SUPER_MAGIC {
        "overlayfs"
    } else {
        return format!("fs {:#x}", t.0);
    };
    name.into()
}

fn main() {
    private_mounts();
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
    let tmpfs = dir.path().join("tmpfs");
    std::fs::create_dir(&tmpfs).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &tmpfs,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=0700"),
    )
    .expect("mount tmpfs");
    let tmpfs_store_dir = tmpfs.join("store");
    let tmpfs_store = berth_imagefs::Store::open(&tmpfs_store_dir).unwrap();
    berth_imagefs::import(&tmpfs_store, &layout, &Default::default(), &mut |_| {}).unwrap();

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
    let (mut b, mut b_tmpfs, mut c, mut r) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut bare, mut start, mut namespaces) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        bare.push(timed(Command::new("/bin/busybox").arg("true")));
        start.push(timed(Command::new(&berth).arg("--version")));
        namespaces.push(timed(Command::new("unshare").args([
            "--mount",
            "--pid",
            "--fork",
            "--uts",
            "--ipc",
            "--net",
            "/bin/busybox",
            "true",
        ])));
        b.push(timed(
            Command::new(&berth)
                .args(["run", "--rm", "--store"])
                .arg(&store_dir)
                .args(["bench:latest", "/bin/true"]),
        ));
        b_tmpfs.push(timed(
            Command::new(&berth)
                .args(["run", "--rm", "--store"])
                .arg(&tmpfs_store_dir)
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
    let disk = format!("berth run --rm, store on {}", filesystem(&store_dir));
    println!("container run of /bin/true, {runs} runs each, interleaved (ms)");
    println!("{:<36} {:>8} {:>8}", "", "median", "p90");
    let row = |name: &str, v: &mut Vec<Duration>| {
        println!("{name:<36} {:>8.2} {:>8.2}", median(v), p90(v));
    };
    row(&disk, &mut b);
    row("berth run --rm, store on tmpfs", &mut b_tmpfs);
    row("crun run", &mut c);
    if have_runc {
        row("runc run", &mut r);
    }
    println!("berth / crun: {:.2}", median(&mut b) / median(&mut c));
    println!("calibration, from the same runs:");
    row("  busybox true, no container", &mut bare);
    row("  berth --version", &mut start);
    row("  unshare -mpfui --net busybox true", &mut namespaces);
    let (bare, start, namespaces) = (
        median(&mut bare),
        median(&mut start),
        median(&mut namespaces),
    );
    let (b, b_tmpfs) = (median(&mut b), median(&mut b_tmpfs));
    println!(
        "berth run beyond the two process start-ups: {:.2} ms (store on tmpfs {:.2} ms)",
        b - bare - start,
        b_tmpfs - bare - start
    );
    println!(
        "berth run beyond the bare namespaces (the floor of any runtime here): {:.2} ms (store on tmpfs {:.2} ms)",
        b - namespaces,
        b_tmpfs - namespaces
    );
    // Emptied by the runs; unmounted so that the temporary directory can go.
    let _ = nix::mount::umount2(&tmpfs, nix::mount::MntFlags::MNT_DETACH);
}
