//! Tests the harness itself against a real QEMU and a real kernel booted
//! without an initramfs: it prints its banner, fails to mount a root fs and
//! panics, which is enough to exercise waits, QMP, reboots, the watchdog,
//! cleanup and the failure dump.
//!
//! Boots `BERTH_TEST_KERNEL` (a bzImage) if set, else the pinned Debian kernel from
//! `berth`'s cache (fetched on first use). Skips without QEMU unless
//! `BERTH_REQUIRE_QEMU=1`.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_qemu_tests::{require_qemu, Qemu, VmError, WaitError};

/// Generous: under TCG on a loaded 2-core machine the panic comes in ~2 s.
const BOOT: Duration = Duration::from_secs(30);

/// The kernel to boot, or `None` (after saying why) to skip.
fn kernel() -> Option<PathBuf> {
    if !require_qemu() {
        return None;
    }
    match std::env::var_os("BERTH_TEST_KERNEL") {
        Some(k) if Path::new(&k).is_file() => Some(PathBuf::from(k)),
        Some(k) => panic!("BERTH_TEST_KERNEL={k:?} is not a file"),
        None => Some(pinned_kernel().to_owned()),
    }
}

/// The pinned kernel's vmlinuz, unpacked once into the target directory and kept there
/// (keyed by the pin) for later runs.
fn pinned_kernel() -> &'static Path {
    use berth_buildroot::kernel;
    static VMLINUZ: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    VMLINUZ.get_or_init(|| {
        let dir = berth_qemu_tests::workspace_root()
            .join("target/qemu-selftest-kernel")
            .join(kernel::PIN.sha256);
        let kept = dir.join("vmlinuz");
        if kept.is_file() {
            return kept;
        }
        let cache = kernel::cache_dir().expect("kernel cache dir");
        let deb = kernel::fetch(&cache, &kernel::PIN).expect("fetch the pinned kernel");
        let unpack = dir.join(format!("unpack-{}", std::process::id()));
        std::fs::create_dir_all(&unpack).expect("create kernel dir");
        let tree = kernel::extract(&deb, &unpack).expect("unpack kernel");
        std::fs::rename(&tree.vmlinuz, &kept).expect("keep vmlinuz");
        let _ = std::fs::remove_dir_all(&unpack);
        kept
    })
}

/// `panic=0` makes the panicked kernel spin forever instead of rebooting.
fn hanging_guest(kernel: &Path) -> Qemu {
    Qemu::new(kernel).kernel_arg("panic=0")
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn boots_answers_qmp_and_quits() {
    let Some(kernel) = kernel() else { return };
    // QEMU accepts the pvpanic device (this kernel's driver for it is a
    // module, so no GUEST_PANICKED event is expected without an initrd).
    let vm = hanging_guest(&kernel).pvpanic(true).spawn().unwrap();
    let line = vm.wait_for_line("Linux version", BOOT).unwrap();
    assert!(line.contains("Linux version 6."), "{line:?}");

    let status = vm.qmp("query-status", None).unwrap();
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(status["running"], true, "{status}");
    assert_eq!(vm.status().unwrap(), "running");

    let (which, line) = vm
        .wait_for_any(&["Kernel panic", "Cannot open root device"], BOOT)
        .unwrap();
    assert_eq!(which, 1, "the mount failure is printed before the panic");
    assert!(line.contains("VFS: Cannot open root device"), "{line:?}");
    let line = vm
        .wait_for_line("Kernel panic - not syncing", BOOT)
        .unwrap();
    assert!(line.contains("Unable to mount root fs"), "{line:?}");

    // QEMU accepts what the helpers send, in the shape they send it.
    vm.send_line("typed on ttyS0").unwrap();
    vm.send_ctrl_alt_del().unwrap();
    vm.system_powerdown().unwrap();
    let err = vm.qmp("no-such-command", None).unwrap_err();
    assert!(err.to_string().contains("CommandNotFound"), "{err}");

    let log = std::fs::read_to_string(vm.log_path()).unwrap();
    assert!(
        log.contains("Linux version"),
        "log {}",
        vm.log_path().display()
    );
    assert!(vm.console().contains("Kernel panic"));

    vm.quit().unwrap();
    let status = vm.wait_exit(BOOT).unwrap();
    assert!(status.success(), "{status}");
    assert!(!vm.watchdog_fired());
}

#[test]
fn same_text_is_waited_for_again_after_a_reboot() {
    let Some(kernel) = kernel() else { return };
    // `panic=-1` reboots at once, and without -no-reboot QEMU resets the
    // guest, which boots again.
    let vm = Qemu::new(&kernel).kernel_arg("panic=-1").spawn().unwrap();
    vm.wait_for("Linux version", BOOT).unwrap();
    vm.wait_for("Kernel panic", BOOT).unwrap();
    vm.wait_qmp_event("RESET", BOOT).unwrap();
    vm.wait_for("Linux version", BOOT).unwrap();
    assert!(vm.console().matches("Linux version").count() >= 2);
}

#[test]
fn no_reboot_turns_the_guest_reboot_into_qemu_exiting() {
    let Some(kernel) = kernel() else { return };
    let vm = Qemu::new(&kernel)
        .kernel_arg("panic=-1")
        .no_reboot(true)
        .spawn()
        .unwrap();
    let status = vm.wait_exit(BOOT).unwrap();
    assert!(status.success(), "{status}");
    // Output that arrived before the exit can still be waited for...
    vm.wait_for("Kernel panic", Duration::ZERO).unwrap();
    // ...and a wait for anything else ends at once instead of timing out.
    let started = Instant::now();
    let err = vm.wait_for("login:", BOOT).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(err, VmError::Wait(WaitError::Exited { .. })),
        "{err}"
    );
}

#[test]
fn a_wait_for_missing_text_times_out_and_quotes_the_console() {
    let Some(kernel) = kernel() else { return };
    let vm = hanging_guest(&kernel).spawn().unwrap();
    vm.wait_for("Kernel panic", BOOT).unwrap();
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = vm
        .wait_for("text the kernel never prints", timeout)
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        matches!(err, VmError::Wait(WaitError::Timeout { .. })),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("timed out after 2s"), "{msg}");
    assert!(msg.contains("--- last 80 console lines"), "{msg}");
    assert!(msg.contains("Kernel panic - not syncing"), "{msg}");
    assert!(msg.lines().count() > 80, "{msg}");
    let log = vm.log_path().display().to_string();
    assert!(msg.contains(&format!("; full log: {log} ---")), "{msg}");
}

#[test]
fn the_watchdog_kills_a_vm_past_its_deadline() {
    let Some(kernel) = kernel() else { return };
    let deadline = Duration::from_secs(4);
    let started = Instant::now();
    let vm = hanging_guest(&kernel).deadline(deadline).spawn().unwrap();
    let status = vm.wait_exit(Duration::from_secs(30)).unwrap();
    let took = started.elapsed();
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(5),
        "{took:?}"
    );
    assert!(vm.watchdog_fired());
    assert!(vm.console().contains("[berth-qemu-tests] watchdog"));
    let err = vm.wait_for("never", BOOT).unwrap_err().to_string();
    assert!(err.contains("killed by the watchdog"), "{err}");
    assert!(!process_exists(vm.pid()));
}

#[test]
fn drop_kills_and_reaps_qemu() {
    let Some(kernel) = kernel() else { return };
    let vm = hanging_guest(&kernel).spawn().unwrap();
    vm.wait_for("Linux version", BOOT).unwrap();
    let pid = vm.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert!(comm.starts_with("qemu-system"), "{comm:?}");
    drop(vm);
    // Reaped, not a zombie: the pid is gone entirely.
    assert!(!process_exists(pid), "qemu pid {pid} still exists");
}

#[test]
fn bad_qemu_arguments_fail_spawn_with_qemus_message() {
    let Some(kernel) = kernel() else { return };
    let err = Qemu::new(&kernel)
        .arg("-no-such-option")
        .spawn()
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, VmError::EarlyExit { .. }), "{msg}");
    assert!(msg.contains("-no-such-option"), "{msg}");
}

/// Run by `a_failing_test_dumps_the_console` in a child process; a no-op
/// otherwise.
#[test]
fn dump_child() {
    if std::env::var_os("BERTH_SELFTEST_DUMP_CHILD").is_none() {
        return;
    }
    let Some(kernel) = kernel() else { return };
    let vm = hanging_guest(&kernel).spawn().unwrap();
    vm.wait_for("Linux version", BOOT).unwrap();
    panic!("deliberate failure with a vm alive");
}

#[test]
fn a_failing_test_dumps_the_console() {
    let Some(_) = kernel() else { return };
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "dump_child", "--test-threads=1"])
        .env("BERTH_SELFTEST_DUMP_CHILD", "1")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the child test should fail:\n{all}");
    assert!(all.contains("deliberate failure"), "{all}");
    assert!(
        all.contains("===== berth-qemu-tests: console of vm `dump_child` (test `dump_child`)"),
        "{all}"
    );
    assert!(all.contains("Linux version"), "{all}");
    assert!(all.contains("; full log: "), "{all}");
}
