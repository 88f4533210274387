//! `berth run` as root on this host: the container defaults users and the
//! SECURITY.md checklist rely on, checked from inside a real container.
//!
//! Each test builds a busybox image from Debian's static busybox into its own
//! store. Without root they skip, unless `BERTH_REQUIRE_ROOT=1` (set by `make test`).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_imagefs::build::{
    busybox_entries, write_busybox_layout, write_oci_layout, Entry, BUSYBOX_APPLETS,
};
use berth_imagefs::oci::RunConfig;
use berth_runtime::security::DEFAULT_CAPS;

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

fn need_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("BERTH_REQUIRE_ROOT").as_deref() != Ok("1"),
        "this test needs root and BERTH_REQUIRE_ROOT=1"
    );
    eprintln!("skipping: not root");
    false
}

/// A store holding `busybox:latest` plus any extra entries as `custom:latest`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_extra(&[], RunConfig::default())
    }

    fn with_extra(extra: &[Entry], run: RunConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let busybox = Path::new("/bin/busybox");
        let layout = dir.path().join("bb");
        write_busybox_layout(&layout, busybox, "busybox:latest")
            .expect("busybox-static is installed (make deps)");
        let f = Fixture { dir };
        f.import(&layout);
        if !extra.is_empty() {
            // Extra entries replace busybox entries of the same path.
            let mut entries = busybox_entries(&std::fs::read(busybox).unwrap(), BUSYBOX_APPLETS);
            entries.retain(|e| !extra.iter().any(|x| x.path() == e.path()));
            entries.extend_from_slice(extra);
            let custom = f.dir.path().join("custom");
            write_oci_layout(&custom, &entries, run, "custom:latest").unwrap();
            f.import(&custom);
        }
        f
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn import(&self, layout: &Path) {
        let out = berth()
            .args(["image", "--store"])
            .arg(self.store())
            .arg("import")
            .arg(layout)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn run(&self, args: &[&str]) -> Output {
        berth()
            .arg("run")
            .arg("--store")
            .arg(self.store())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `berth run ARGS` started by a shell that first opens fd 7 with `redirect`
    /// (not close-on-exec), so `berth run` itself holds the descriptor.
    fn run_holding_fd7(&self, redirect: &str, args: &str) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec 7{redirect}; exec {} run --rm --store {} {args}",
                env!("CARGO_BIN_EXE_berth"),
                self.store().display()
            ))
            .output()
            .unwrap()
    }

    /// Runs `sh -c script` in busybox; returns stdout, asserting exit 0.
    fn sh(&self, flags: &[&str], script: &str) -> String {
        let mut args = vec!["--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox:latest", "sh", "-c", script]);
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "{script}: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{key} missing in {status}"))
}

#[test]
fn capabilities_no_new_privs_and_seccomp() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let status = f.sh(&[], "cat /proc/self/status");
    let expected: u64 = DEFAULT_CAPS.iter().map(|c| 1u64 << c.index()).sum();
    let mask = |k| u64::from_str_radix(status_field(&status, k), 16).unwrap();
    assert_eq!(mask("CapEff:"), expected, "{status}");
    assert_eq!(mask("CapPrm:"), expected);
    assert_eq!(mask("CapBnd:"), expected);
    assert_eq!(mask("CapInh:"), 0);
    assert_eq!(mask("CapAmb:"), 0);
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&status, "Seccomp:"), "2");

    // A non-root user keeps nothing.
    let status = f.sh(&["--user", "nobody"], "id -u; cat /proc/self/status");
    assert!(status.starts_with("65534\n"), "{status}");
    let mask = |k| u64::from_str_radix(status_field(&status, k), 16).unwrap();
    assert_eq!(mask("CapEff:"), 0);
    assert_eq!(mask("CapPrm:"), 0);

    // cap-add / cap-drop change the set.
    let status = f.sh(
        &["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"],
        "cat /proc/self/status",
    );
    let mask = |k| u64::from_str_radix(status_field(&status, k), 16).unwrap();
    assert_eq!(
        mask("CapEff:"),
        1 << caps::Capability::CAP_NET_ADMIN.index()
    );
}

#[test]
fn seccomp_and_capabilities_refuse_escapes() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let out = f.sh(
        &[],
        "unshare -U true 2>/dev/null && echo unshare-user-ok; \
         unshare -m true 2>/dev/null && echo unshare-mnt-ok; \
         mount -t tmpfs none /mnt 2>/dev/null && echo mount-ok; \
         umount /proc/kcore 2>/dev/null && echo umount-ok; \
         umount /proc/timer_list 2>/dev/null && echo umount-ok; \
         mknod /tmp/sda b 8 0 2>/dev/null && echo mknod-ok; \
         echo x > /proc/sysrq-trigger 2>/dev/null && echo sysrq-ok; \
         echo evil > /proc/sys/kernel/hostname 2>/dev/null && echo sysctl-ok; \
         echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null && echo sysfs-ok; \
         echo done",
    );
    assert_eq!(out, "done\n", "an escape succeeded: {out}");
}

#[test]
fn pid_uts_mount_namespaces() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    // A mount made on the host must be invisible inside.
    let marker = tempfile::tempdir().unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        marker.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let out = f.run(&[
        "--rm",
        "--name",
        "ns-test",
        "busybox:latest",
        "sh",
        "-c",
        "tr '\\0' ' ' < /proc/1/cmdline; echo; hostname; cat /etc/hostname; ls /proc | grep -c '^[0-9]'; cat /proc/self/cgroup; cat /proc/mounts",
    ]);
    nix::mount::umount(marker.path()).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("sh -c tr"), "{stdout}");
    assert_eq!(lines[1], "ns-test");
    assert_eq!(lines[2], "ns-test");
    // Only sh, and the pipeline's commands, in the PID namespace.
    assert!(lines[3].parse::<u32>().unwrap() <= 4, "{stdout}");
    assert!(
        lines.contains(&"0::/"),
        "cgroup namespace not rooted at the leaf: {stdout}"
    );
    let marker_path = marker.path().to_string_lossy().into_owned();
    assert!(
        !stdout.contains(&marker_path),
        "host mount visible: {stdout}"
    );
    let host_mount_points: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with("/work") || m.starts_with("/tmp/") || *m == "/var/lib/berth")
        .collect();
    assert!(
        host_mount_points.is_empty(),
        "host mounts visible: {host_mount_points:?}"
    );
    for m in [
        " /proc proc ",
        " /dev tmpfs ",
        " /sys sysfs ro,",
        " /dev/pts devpts ",
        " /dev/mqueue mqueue ",
    ] {
        assert!(stdout.contains(m), "{m:?} missing: {stdout}");
    }
}

/// Starting a container writes nothing into its writable layer (the image lacks
/// /proc, /dev, /sys and /etc/hostname: the store's scaffold provides the mount
/// points); the generated /etc files are there and writable; a `--rm` container's
/// overlay is `volatile` (never synced), a kept one's is not.
#[test]
fn a_start_writes_nothing_to_the_writable_layer() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let script = "cat /etc/hostname; grep -c kept /etc/hosts; echo 10.0.0.9 extra >> /etc/hosts; \
                  grep -c extra /etc/hosts; grep ' / / ' /proc/self/mountinfo";
    let out = f.run(&["--name", "kept", "busybox:latest", "sh", "-c", script]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(&lines[..3], ["kept", "1", "1"], "{stdout}");
    assert!(lines[3].contains("lowerdir="), "{stdout}");
    assert!(
        lines[3].contains("/scaffold") && !lines[3].contains("volatile"),
        "{stdout}"
    );
    let upper = f.store().join("containers/kept/upper");
    let written: Vec<_> = std::fs::read_dir(&upper).unwrap().collect();
    assert!(
        written.is_empty(),
        "the start wrote {written:?} into {upper:?}"
    );

    let root_mount = f.sh(&[], "grep ' / / ' /proc/self/mountinfo");
    // Shown as `volatile`, or `fsync=volatile` since Linux 6.8.
    assert!(root_mount.contains("volatile"), "{root_mount}");
}

#[test]
fn dev_has_only_the_standard_nodes_and_masks_apply() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let out = f.sh(&[], "ls /dev | tr '\\n' ' '; echo; wc -c < /proc/timer_list; ls /sys/firmware | wc -l; cat /proc/keys | wc -c");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero"
    );
    assert_eq!(lines[1].trim(), "0", "/proc/timer_list not masked: {out}");
    assert_eq!(lines[2].trim(), "0", "/sys/firmware not masked: {out}");
    assert_eq!(lines[3].trim(), "0", "/proc/keys not masked: {out}");
}

#[test]
fn exit_codes_env_workdir_user() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let out = f.run(&["--rm", "busybox:latest", "sh", "-c", "exit 42"]);
    assert_eq!(out.status.code(), Some(42));
    let out = f.sh(
        &[
            "-e",
            "GREETING=hi there",
            "-w",
            "/srv/app",
            "-u",
            "65534:65534",
        ],
        "echo \"$GREETING\"; pwd; id -u; id -g; echo $HOME",
    );
    assert_eq!(out, "hi there\n/srv/app\n65534\n65534\n/nonexistent\n");
    let out = f.run(&["--rm", "busybox:latest", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"no-such-program\": executable file not found"),
        "{err}"
    );
    let out = f.run(&["--rm", "--memory", "lots", "busybox:latest", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory size \"lots\""));
    let out = f.run(&["--rm", "-u", "ghost", "busybox:latest", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("user \"ghost\" is not in the image's /etc/passwd"));
}

/// Docker's codes: 125 berth failed, 126 the command cannot be executed, 127 it is not
/// found; the container's own code otherwise.
#[test]
fn exit_codes_are_dockers() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["no-such-image:latest", "true"],
            125,
            "no image \"no-such-image:latest\"",
        ),
        (&["Busybox:latest", "true"], 125, "invalid reference format"),
        (
            &["--no-such-flag", "busybox:latest", "true"],
            125,
            "unexpected argument",
        ),
        (&["--memory"], 125, "a value is required"),
        (&["busybox:latest", "/etc/passwd"], 126, "EACCES"),
        (&["busybox:latest", "/etc"], 126, "is a directory"),
        (
            &["busybox:latest", "no-such-program"],
            127,
            "executable file not found",
        ),
        (&["busybox:latest", "/no/such/file"], 127, "not found"),
        (
            &["--init", "busybox:latest", "sh", "-c", "kill -USR1 $$"],
            138,
            "",
        ),
    ];
    for (args, code, message) in cases {
        let mut argv = vec!["--rm"];
        argv.extend_from_slice(args);
        let out = f.run(&argv);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    // Help is not an error; a usage error before `run` is still run's; other
    // subcommands keep clap's 2.
    assert_eq!(f.run(&["--help"]).status.code(), Some(0));
    let code = |argv: &[&str]| berth().args(argv).output().unwrap().status.code();
    assert_eq!(
        code(&["--verbose", "run", "--no-such-flag", "img"]),
        Some(125)
    );
    assert_eq!(code(&["ps", "--no-such-flag"]), Some(2));
    // `--entrypoint ''` resets the image's entrypoint: the command runs alone.
    let f = Fixture::with_extra(
        &[Entry::Dir {
            path: "srv".into(),
            mode: 0o755,
        }],
        RunConfig {
            entrypoint: Some(vec!["/bin/false".into()]),
            ..RunConfig::default()
        },
    );
    let out = f.run(&["--rm", "custom:latest", "echo", "hi"]);
    assert_eq!(out.status.code(), Some(1), "the entrypoint runs");
    let out = f.run(&["--rm", "--entrypoint", "", "custom:latest", "echo", "hi"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn no_descriptor_leaks_into_the_container() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let out = f.run_holding_fd7("</etc/hostname", "busybox:latest ls /proc/self/fd");
    let fds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    // 0-2, plus the directory ls itself is reading.
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn workdir_through_a_leaked_fd_is_refused() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    // CVE-2024-21626: a working directory of /proc/self/fd/N.
    let out = f.run_holding_fd7("</", "-w /proc/self/fd/7 busybox:latest pwd");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/proc/self/fd/7"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn runtime_binary_cannot_be_run_or_overwritten_from_inside() {
    if !need_root() {
        return;
    }
    let bin = std::fs::read(env!("CARGO_BIN_EXE_berth")).unwrap();
    // CVE-2019-5736: the program is /proc/self/exe, directly or through a symlink.
    let f = Fixture::with_extra(
        &[Entry::Symlink {
            path: "bin/evil".into(),
            target: "/proc/self/exe".into(),
        }],
        RunConfig::default(),
    );
    for program in ["/proc/self/exe", "/bin/evil"] {
        let out = f.run(&["--rm", "custom:latest", program]);
        // Found, and refused: "cannot execute", as Docker's 126.
        assert_eq!(out.status.code(), Some(126), "{program}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("magic link"), "{program}: {err}");
    }
    // Writing /proc/self/exe from inside fails (busybox is mapped, and the runtime
    // is never the container's executable).
    let out = f.sh(&[], "echo x > /proc/self/exe 2>/dev/null && echo wrote; echo x > /proc/1/exe 2>/dev/null && echo wrote1; echo done");
    assert_eq!(out, "done\n");
    assert_eq!(std::fs::read(env!("CARGO_BIN_EXE_berth")).unwrap(), bin);
}

#[test]
fn symlinked_system_directories_are_refused() {
    if !need_root() {
        return;
    }
    let sentinel = tempfile::tempdir().unwrap();
    let target = sentinel.path().join("gone");
    for dir in ["proc", "dev", "sys"] {
        let f = Fixture::with_extra(
            &[Entry::Symlink {
                path: dir.into(),
                target: target.to_string_lossy().into_owned(),
            }],
            RunConfig::default(),
        );
        let out = f.run(&["--rm", "custom:latest", "true"]);
        assert_ne!(out.status.code(), Some(0));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("the image's {dir} is a symlink")),
            "{dir}: {err}"
        );
        assert!(!target.exists(), "{dir}: something was created on the host");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&sentinel.path().to_string_lossy().into_owned()));
}

#[test]
fn volumes_tmpfs_and_read_only_root() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("page"), "from host\n").unwrap();
    let ro = format!("{}:/www:ro", host.path().display());
    let out = f.sh(
        &[
            "-v",
            &ro,
            "-v",
            "data:/data",
            "--read-only",
            "--tmpfs",
            "/scratch",
        ],
        "cat /www/page; echo no > /www/page 2>/dev/null && echo wrote-ro; \
         touch /x 2>/dev/null && echo wrote-root; touch /scratch/x && echo scratch-ok; \
         echo kept > /data/f",
    );
    assert_eq!(out, "from host\nscratch-ok\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("page")).unwrap(),
        "from host\n"
    );
    // The named volume outlives the container.
    let out = f.sh(&["-v", "data:/data"], "cat /data/f");
    assert_eq!(out, "kept\n");
}

/// A new named volume starts as a copy of the image's directory at its target
/// (contents, modes, symlinks; FIFOs left behind); an existing one is never
/// re-seeded; a target the image lacks gives an empty volume.
#[test]
fn named_volumes_are_seeded_from_the_image_once() {
    if !need_root() {
        return;
    }
    let dir = |path: &str, mode| Entry::Dir {
        path: path.into(),
        mode,
    };
    let file = |path: &str, mode, data: &[u8]| Entry::File {
        path: path.into(),
        mode,
        data: data.to_vec(),
    };
    let f = Fixture::with_extra(
        &[
            dir("srv", 0o755),
            dir("srv/data", 0o750),
            file("srv/data/conf", 0o640, b"seeded\n"),
            dir("srv/data/sub", 0o700),
            file("srv/data/sub/deep", 0o600, b"deep\n"),
            Entry::Symlink {
                path: "srv/data/link".into(),
                target: "conf".into(),
            },
            Entry::Fifo {
                path: "srv/data/pipe".into(),
            },
            // Seeding must never copy the kernel's files to the host.
            Entry::Symlink {
                path: "srv/kernel".into(),
                target: "/sys/kernel".into(),
            },
        ],
        RunConfig::default(),
    );
    // Staging copies left by starts killed while seeding: one older than any setup can
    // live, which the next seeding removes, and a fresh one, which it must leave alone.
    let volumes_dir = f.store().join("volumes");
    let orphan = volumes_dir.join(".seed-db-orphan0000");
    let fresh = volumes_dir.join(".seed-other-inflight00");
    for d in [&orphan, &fresh] {
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/file"), b"half copied").unwrap();
    }
    let long_ago = nix::sys::time::TimeSpec::new(
        (std::time::SystemTime::now() - berth_runtime::volume::ORPHAN_AGE * 2)
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
        0,
    );
    nix::sys::stat::utimensat(
        None,
        &orphan,
        &long_ago,
        &long_ago,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let script = "cat /srv/data/link /srv/data/sub/deep; \
                  stat -c '%a %n' /srv/data /srv/data/conf /srv/data/sub; \
                  ls /srv/data; echo changed > /srv/data/conf";
    let out = f.run(&[
        "--rm",
        "-v",
        "db:/srv/data",
        "custom:latest",
        "sh",
        "-c",
        script,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "seeded\ndeep\n750 /srv/data\n640 /srv/data/conf\n700 /srv/data/sub\nconf\nlink\nsub\n"
    );
    assert!(!orphan.exists(), "an orphan staging copy was kept");
    assert!(
        fresh.exists(),
        "a staging copy of a start still in time was removed"
    );
    std::fs::remove_dir_all(&fresh).unwrap();
    // Seeded once: the container's change stays, the image's content does not return.
    let out = f.run(&[
        "--rm",
        "-v",
        "db:/srv/data",
        "custom:latest",
        "cat",
        "/srv/data/conf",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "changed\n");
    let volumes: Vec<String> = std::fs::read_dir(f.store().join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(volumes, ["db"], "no staging copy left behind");
    let mode = std::fs::metadata(f.store().join("volumes"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o755
    );
    // A target that leads into /sys: seeded from the bare image (where /sys is an
    // empty mount point) without crossing a mount, so nothing of sysfs is copied.
    let _ = f.run(&["--rm", "-v", "sys:/srv/kernel", "custom:latest", "true"]);
    let copied: Vec<_> = std::fs::read_dir(f.store().join("volumes/sys"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(copied.is_empty(), "sysfs copied into a volume: {copied:?}");
    // A target the image does not have: an empty volume.
    let out = f.sh(
        &["-v", "fresh:/nothing/here"],
        "ls -A /nothing/here | wc -l",
    );
    assert_eq!(out.trim(), "0");
}

/// `berth rm` removes a kept container's state and image hold, refuses a running
/// one without --force, kills it with --force, and names what it cannot find.
#[test]
fn rm_removes_kept_containers_and_refuses_running_ones() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let rm = |args: &[&str]| {
        berth()
            .arg("rm")
            .arg("--store")
            .arg(f.store())
            .args(args)
            .output()
            .unwrap()
    };
    let out = f.run(&["--name", "kept", "busybox:latest", "true"]);
    assert!(out.status.success());
    let hold = f.store().join("holds/container-kept");
    assert!(f.store().join("containers/kept").is_dir() && hold.exists());
    let out = rm(&["kept"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
    assert!(!f.store().join("containers/kept").exists() && !hold.exists());
    let out = rm(&["kept"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no container named kept"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut live = berth()
        .args(["run", "--name", "live", "--store"])
        .arg(f.store())
        .args(["busybox:latest", "sleep", "100"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leaf = berth_runtime::cgroup::find_v2_mount(&info)
        .unwrap()
        .join("berth/live/cgroup.procs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&leaf)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = rm(&["live"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container live is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = rm(&["--force", "live"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(live.wait().unwrap().code(), Some(137));
    assert!(!f.store().join("containers/live").exists());
}

#[test]
fn network_none_has_only_loopback() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let out = f.sh(&[], "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    assert_eq!(out, "lo\n");
    let host_links = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count()
        - 2;
    let out = f.sh(&["--network", "host"], "tail -n +3 /proc/net/dev | wc -l");
    assert_eq!(out.trim().parse::<usize>().unwrap(), host_links);
}

#[test]
fn init_forwards_signals() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let mut child = berth()
        .args(["run", "--rm", "--init", "--store"])
        .arg(f.store())
        .args(["busybox:latest", "sleep", "600"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?} {:?}", status.signal());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn cgroup_leaf_is_used_and_removed_and_nothing_leaks() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cg = berth_runtime::cgroup::find_v2_mount(&info).expect("a cgroup2 mount");
    let mounts_before = info.lines().count();
    for i in 0..20 {
        let name = format!("leak-{i}");
        let out = f.run(&[
            "--rm",
            "--name",
            &name,
            "busybox:latest",
            "cat",
            "/sys/fs/cgroup/cgroup.procs",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "1\n",
            "the container's cgroup holds only its own process"
        );
        assert!(
            !cg.join("berth").join(&name).exists(),
            "cgroup {name} left behind"
        );
        assert!(!f.store().join("containers").join(&name).exists());
    }
    let after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert_eq!(after, mounts_before, "host mounts changed");
    let holds = std::fs::read_dir(f.store().join("holds")).unwrap().count();
    assert_eq!(holds, 0, "gc holds left behind");
}

#[test]
fn limits_need_the_controller_or_say_what_is_missing() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cg = berth_runtime::cgroup::find_v2_mount(&info).expect("a cgroup2 mount");
    let controllers = std::fs::read_to_string(cg.join("cgroup.controllers")).unwrap_or_default();
    let out = f.run(&[
        "--rm",
        "--memory",
        "32M",
        "busybox:latest",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    if controllers.split_whitespace().any(|c| c == "memory") {
        assert_eq!(out.status.code(), Some(137));
        assert!(String::from_utf8_lossy(&out.stderr).contains("OOMKilled"));
    } else {
        assert_eq!(out.status.code(), Some(125));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the memory controller is not available")
                && err.contains("pure cgroup v2"),
            "{err}"
        );
    }
}

#[test]
fn a_fifo_where_passwd_should_be_fails_fast() {
    if !need_root() {
        return;
    }
    // Opening a FIFO blocks until a writer comes: setup must not wait on one.
    let f = Fixture::with_extra(
        &[Entry::Fifo {
            path: "etc/passwd".into(),
        }],
        RunConfig::default(),
    );
    let started = Instant::now();
    let out = f.run(&["--rm", "custom:latest", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/etc/passwd") && err.contains("not a regular file"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "setup waited on the FIFO"
    );
}

/// A named network namespace for one test, deleted on drop; `berth run` inside it makes
/// its bridge and NAT table there, never in the machine's own namespace.
struct TestNetns(String);

impl TestNetns {
    fn new(tag: &str) -> TestNetns {
        let name = format!("berth-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        let ns = TestNetns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `argv` in the namespace (only the network namespace changes: `ip netns exec`
    /// would also remount /sys, hiding the cgroup2 mount `berth run` needs).
    fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.0)).args(argv);
        c
    }

    /// An HTTP GET of `path` from `addr`, made from inside the namespace.
    fn http_get(&self, addr: &str, path: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let ns = format!("/run/netns/{}", self.0);
        let (addr, path) = (addr.to_owned(), path.to_owned());
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns)?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let addr: std::net::SocketAddr = addr.parse().expect("an IP:port");
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .join()
        .unwrap()
    }

    fn exec(&self, argv: &[&str]) -> String {
        let out = self.command(argv).output().unwrap();
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed if the test fails before it is waited for.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn bridge_network_publishes_ports_names_peers_and_cleans_up() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let ns = TestNetns::new("bridge");
    let berth = env!("CARGO_BIN_EXE_berth");
    let store = f.store();
    let store = store.to_str().unwrap();
    let server = ns
        .command(&[
            berth,
            "run",
            "--rm",
            "--store",
            store,
            "--name",
            "srv",
            "--init",
            "--network",
            "bridge",
            "-p",
            "8080:80",
            "busybox:latest",
            "sh",
            "-c",
            "mkdir -p /www && echo hello from srv > /www/index.html && exec httpd -f -p 80 -h /www",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(Some(server));
    // The published port answers on the bridge's address and on the host's loopback
    // (output-chain DNAT).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ns.http_get("10.88.0.1:8080", "/") {
            Ok(page) if page.contains("200 OK") => {
                assert!(page.ends_with("\r\n\r\nhello from srv\n"), "{page}");
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "the published port never answered: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The lease is held by the container's own process, not by `berth run`: it lives
    // exactly as long as the container.
    let srv_pid = server.0.as_ref().unwrap().id();
    let children =
        std::fs::read_to_string(format!("/proc/{srv_pid}/task/{srv_pid}/children")).unwrap();
    let container_pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let leases = std::fs::read_to_string(f.store().join("network/ipam.json")).unwrap();
    assert!(
        leases.contains(&format!("\"pid\": {container_pid},")),
        "{leases}"
    );
    let local = ns.http_get("127.0.0.1:8080", "/").unwrap();
    assert!(local.ends_with("hello from srv\n"), "{local}");
    // A second container reaches the first by name, from its own address on the bridge.
    let out = ns
        .command(&[
            berth,
            "run",
            "--rm",
            "--store",
            store,
            "--network",
            "bridge",
            "busybox:latest",
            "sh",
            "-c",
            "ip -4 -o addr show eth0; wget -q -O- http://srv/; grep srv /etc/hosts; \
             echo hairpin: $(wget -q -O- http://10.88.0.1:8080/)",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("inet 10.88.0.3/16"), "{text}");
    assert!(text.contains("hello from srv"), "{text}");
    assert!(text.contains("10.88.0.2\tsrv"), "{text}");
    // Hairpin: through the host's published port back onto the bridge.
    assert!(text.contains("hairpin: hello from srv"), "{text}");
    let table = ns.exec(&["nft", "list", "table", "ip", "berth"]);
    assert!(table.contains("dnat to 10.88.0.2:80"), "{table}");

    // Stopping it gives the lease back and takes its port out of the NAT table.
    let mut srv = server.0.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(srv.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(srv.wait().unwrap().code(), Some(143));
    let table = ns.exec(&["nft", "list", "table", "ip", "berth"]);
    assert!(!table.contains("dnat to"), "{table}");
    let leases = std::fs::read_to_string(f.store().join("network/ipam.json")).unwrap();
    assert!(!leases.contains("\"srv\""), "{leases}");
    // No veth is left on the bridge once the namespaces are gone (removal is async).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let links = ns.exec(&["ip", "-o", "link", "show", "master", "berth0"]);
        if links.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "veths left: {links}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `berth run -it IMAGE sh` under a terminal (python3's pty module plays the user's
/// terminal): a prompt, typed input echoed and run, the shell's exit code, and the
/// terminal back in its own mode afterwards.
#[test]
fn tty_gives_a_working_shell() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let script = r##"
import fcntl, os, pty, select, struct, sys, termios, time
def resize(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
pid, fd = pty.fork()
if pid == 0:
    resize(0, 24, 80)
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
def pump(seconds, until=None):
    global out
    end = time.time() + seconds
    while time.time() < end and not (until and until in out):
        if select.select([fd], [], [], 0.1)[0]:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            out += data
pump(10, b"# ")
raw = termios.tcgetattr(fd)
os.write(fd, b"tty; stty size\r")
pump(10, b"24 80")
resize(fd, 30, 100)
pump(0.5)
os.write(fd, b"stty size; echo hi$((1+1)); exit 3\r")
pump(10)
_, status = os.waitpid(pid, 0)
after = termios.tcgetattr(fd)
sys.stdout.write(repr(out) + "\n")
sys.stdout.write("raw %s\n" % (raw[3] & termios.ICANON == 0))
sys.stdout.write("restored %s\n" % (after[3] & termios.ICANON != 0))
sys.stdout.write("exit %d\n" % os.waitstatus_to_exitcode(status))
"##;
    let out = Command::new("python3")
        .args(["-c", script, env!("CARGO_BIN_EXE_berth"), "run", "--store"])
        .arg(f.store())
        .args(["--rm", "-it", "busybox:latest", "sh"])
        .output()
        .expect("python3 is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hi2\\r\\n"), "{text}");
    // A terminal of the container's own, as in Docker.
    assert!(text.contains("/dev/pts/0\\r\\n"), "{text}");
    // The pty has the terminal's size, and follows it (SIGWINCH).
    assert!(text.contains("24 80\\r\\n"), "{text}");
    assert!(text.contains("30 100\\r\\n"), "{text}");
    assert!(
        text.contains("raw True"),
        "berth run's terminal in raw mode: {text}"
    );
    assert!(
        text.contains("restored True"),
        "terminal mode restored: {text}"
    );
    assert!(text.ends_with("exit 3\n"), "{text}");
}

/// `-d` prints the name and returns at once, also under `$(...)`, which waits for every
/// holder of its pipe; the container runs on, `berth ps` and `berth logs` show it,
/// `berth stop` sends SIGTERM and kills after --time, and the exit is recorded.
#[test]
fn detached_containers_are_listed_logged_and_stopped() {
    if !need_root() {
        return;
    }
    // Names unique to this run: cgroup leaves are named after containers, host-wide.
    let bg = format!("bg-{}", std::process::id());
    let stubborn = format!("stubborn-{}", std::process::id());
    let busy = format!("busy-{}", std::process::id());
    let shell = format!("shell-{}", std::process::id());
    let reader = format!("reader-{}", std::process::id());
    let usr1 = format!("usr1-{}", std::process::id());
    let f = Fixture::new();
    let cmd = |args: &[&str]| {
        berth()
            .args(args)
            .arg("--store")
            .arg(f.store())
            .output()
            .unwrap()
    };
    let started = Instant::now();
    let out = f.run(&[
        "-d",
        "--name",
        &bg,
        "busybox:latest",
        "sh",
        "-c",
        "echo out; echo err >&2; trap 'echo term; exit 7' TERM; while :; do sleep 0.1; done",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{bg}\n"));
    assert!(started.elapsed() < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let ps = String::from_utf8_lossy(&cmd(&["ps"]).stdout).into_owned();
    let line = ps
        .lines()
        .find(|l| l.starts_with(&format!("{bg} ")))
        .unwrap_or_default();
    assert!(line.contains("running"), "{ps}");
    let logs = cmd(&["logs", &bg]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "out\nerr\n");
    // A follower ends when the container does.
    let follower = berth()
        .args(["logs", "-f", &bg, "--store"])
        .arg(f.store())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut follower = KillOnDrop(Some(follower));
    let out = cmd(&["stop", &bg]);
    assert!(out.status.success(), "{out:?}");
    let followed = follower.0.take().unwrap().wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&followed.stdout),
        "out\nerr\nterm\n"
    );
    let ps = String::from_utf8_lossy(&cmd(&["ps", "-a"]).stdout).into_owned();
    assert!(ps.contains("exited (7)"), "{ps}");
    assert!(!String::from_utf8_lossy(&cmd(&["ps"]).stdout).contains(&format!("{bg} ")));

    // A PID 1 without a handler ignores SIGTERM: killed after --time.
    let out = f.run(&["-d", "--name", &stubborn, "busybox:latest", "sleep", "600"]);
    assert!(out.status.success(), "{out:?}");
    let started = Instant::now();
    let out = cmd(&["stop", "-t", "1", &stubborn]);
    assert!(out.status.success(), "{out:?}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    let ps = String::from_utf8_lossy(&cmd(&["ps", "-a"]).stdout).into_owned();
    assert!(ps.contains("exited (137)"), "{ps}");
    for name in [&bg, &stubborn] {
        assert!(cmd(&["rm", name]).status.success());
    }
    // The image's STOPSIGNAL is what `berth stop` sends first.
    let g = Fixture::with_extra(
        &[Entry::Dir {
            path: "srv".into(),
            mode: 0o755,
        }],
        RunConfig {
            stop_signal: Some("SIGUSR1".into()),
            ..RunConfig::default()
        },
    );
    let out = g.run(&[
        "-d",
        "--name",
        &usr1,
        "custom:latest",
        "sh",
        "-c",
        "trap 'exit 4' USR1; while :; do sleep 0.1; done",
    ]);
    assert!(out.status.success(), "{out:?}");
    let gcmd = |args: &[&str]| {
        berth()
            .args(args)
            .arg("--store")
            .arg(g.store())
            .output()
            .unwrap()
    };
    assert!(gcmd(&["stop", "-t", "5", &usr1]).status.success());
    let ps = String::from_utf8_lossy(&gcmd(&["ps", "-a"]).stdout).into_owned();
    assert!(ps.contains("exited (4)"), "{ps}");
    // `-dit sh`: a shell on a terminal of its own, waiting on an open stdin; its
    // prompt goes to the log.
    let out = f.run(&["-dit", "--name", &shell, "busybox:latest", "sh"]);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(500));
    let ps = String::from_utf8_lossy(&cmd(&["ps"]).stdout).into_owned();
    assert!(
        ps.lines()
            .any(|l| l.starts_with(&format!("{shell} ")) && l.contains("running")),
        "{ps}"
    );
    let logs = String::from_utf8_lossy(&cmd(&["logs", &shell]).stdout).into_owned();
    assert!(logs.contains("/ # "), "{logs:?}");
    assert!(cmd(&["stop", "-t", "0", &shell]).status.success());
    assert!(cmd(&["rm", &shell]).status.success());
    let out = f.run(&["-di", "--name", &reader, "busybox:latest", "cat"]);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    let ps = String::from_utf8_lossy(&cmd(&["ps"]).stdout).into_owned();
    assert!(
        ps.contains(&format!("{reader} ")) && ps.contains("running"),
        "stdin stays open: {ps}"
    );
    assert!(cmd(&["stop", "-t", "0", &reader]).status.success());
    assert!(cmd(&["rm", &reader]).status.success());
    // A running detached container is removed only with --force.
    let out = f.run(&["-d", "--name", &busy, "busybox:latest", "sleep", "600"]);
    assert!(out.status.success(), "{out:?}");
    let out = cmd(&["rm", &busy]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("container {busy} is running")));
    assert!(cmd(&["rm", "-f", &busy]).status.success());
    assert!(!String::from_utf8_lossy(&cmd(&["ps", "-a"]).stdout).contains(&busy));
    // A start that fails is reported by `berth run -d` itself, with its code.
    let out = f.run(&["-d", "busybox:latest", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("executable file not found"));
    let left = std::fs::read_dir(f.store().join("containers"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "state left behind");
}

/// A foreground `berth run` killed with SIGKILL leaves its container running: `berth ps`
/// finds it, and `berth stop` stops it and removes what `berth run` would have.
#[test]
fn the_orphan_of_a_killed_run_is_found_and_stopped() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let name = format!("orphan-{}", std::process::id());
    let run = berth()
        .args(["run", "--rm", "--name", &name, "--store"])
        .arg(f.store())
        .args(["busybox:latest", "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut run = KillOnDrop(Some(run));
    let record = f.store().join("containers").join(&name).join("run.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !record.exists() {
        assert!(Instant::now() < deadline, "no record");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut child = run.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let ps = berth()
        .args(["ps", "--store"])
        .arg(f.store())
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(ps.contains(&name) && ps.contains("running"), "{ps}");
    let out = berth()
        .args(["stop", "-t", "1", &name, "--store"])
        .arg(f.store())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cg = berth_runtime::cgroup::find_v2_mount(&info).unwrap();
    assert!(!cg.join("berth/orphan").exists(), "cgroup left");
    assert!(
        !f.store().join("containers/orphan").exists(),
        "--rm state left"
    );
}

/// SIGTERM to a foreground `berth run` goes to the container's PID 1 (as `docker run`'s
/// --sig-proxy), which ends as its program decides.
#[test]
fn sigterm_to_a_foreground_run_reaches_the_container() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let child = berth()
        .args(["run", "--rm", "--store"])
        .arg(f.store())
        .args([
            "busybox:latest",
            "sh",
            "-c",
            "trap 'exit 9' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(Some(child));
    let c = child.0.as_mut().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(c.wait().unwrap().code(), Some(9));
}

/// What the bridge network leaves on the host after a `berth run` that fails: nothing
/// when the failure can be known before the network is touched (a missing image);
/// after a start that failed in the container (a missing command) no lease, no port
/// rule and no veth, only the bridge and the NAT table, which stay for other
/// containers (as PID 1 keeps them).
#[test]
fn a_failed_run_leaves_no_network_state() {
    if !need_root() {
        return;
    }
    let f = Fixture::new();
    let ns = TestNetns::new("fail");
    let berth = env!("CARGO_BIN_EXE_berth");
    let store = f.store();
    let store = store.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut argv = vec![berth, "run", "--rm", "--store", store, "-p", "8080:80"];
        argv.extend_from_slice(args);
        ns.command(&argv).stdin(Stdio::null()).output().unwrap()
    };
    let out = run(&["no-such-image:latest", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let links = ns.exec(&["ip", "-o", "link"]);
    assert!(!links.contains("berth0"), "{links}");
    let tables = ns.exec(&["nft", "list", "tables"]);
    assert!(tables.trim().is_empty(), "{tables}");
    assert!(!f.store().join("network").exists());

    let broken = format!("broken-{}", std::process::id());
    let out = run(&["--name", &broken, "busybox:latest", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let leases = std::fs::read_to_string(f.store().join("network/ipam.json")).unwrap_or_default();
    assert!(!leases.contains(&broken), "{leases}");
    let table = ns.exec(&["nft", "list", "ruleset"]);
    assert!(!table.contains("dnat to"), "{table}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let veths = ns.exec(&["ip", "-o", "link", "show", "master", "berth0"]);
        if veths.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "veths left: {veths}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // -p alone put the container on the bridge.
    let out = run(&["busybox:latest", "sh", "-c", "ip -o -4 addr show eth0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("inet 10.88."),
        "{out:?}"
    );
}
