//! Boots real berth images under QEMU and checks what users rely on: boot to ready, the
//! hostname from the config and from the kernel command line, a configured module loaded,
//! power-off from the ACPI power button, reboot on ctrl-alt-del, and a broken config that
//! still boots and names the bad key.
//!
//! The images are built with `berth build`'s library from the static PID 1 (`make init`)
//! and the pinned kernel (fetched into the cache on first use).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use berth_buildroot::cpio::{CpioWriter, EntryKind};
use berth_qemu_tests::{build_test_image, require_qemu, Qemu, Vm};

/// Generous for TCG: the kernel alone takes ~1.5 s to reach PID 1, module loading more.
const BOOT: Duration = Duration::from_secs(90);
const STEP: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"version = 1
hostname = "qemu-test"

[kernel]
modules = ["dummy"]

[shutdown]
timeout = "2s"
"#;

/// The standard test image, built once for all tests in this binary.
fn standard_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| build_test_image("standard", CONFIG, |_| {}))
}

fn boot(image: &Path, initrd: &Path, kernel_args: &[&str]) -> Vm {
    boot_with(image, initrd, kernel_args, |q| q)
}

fn boot_with(
    image: &Path,
    initrd: &Path,
    kernel_args: &[&str],
    customise: impl FnOnce(Qemu) -> Qemu,
) -> Vm {
    customise(Qemu::new(image.join("vmlinuz")))
        .initrd(initrd)
        .kernel_args(kernel_args.iter().copied())
        // A kernel panic (PID 1 dying) ends QEMU at once instead of hanging the test.
        .pvpanic(true)
        .args(["-action", "panic=exit-failure"])
        .deadline(Duration::from_secs(240))
        .spawn()
        .expect("start QEMU")
}

#[test]
fn boots_to_ready_with_config_hostname_and_module() {
    if !require_qemu() {
        return;
    }
    let image = standard_image();
    // A virtio NIC makes coldplug work in two passes: the PCI transport's driver first,
    // then the driver of the virtio device it reveals.
    let vm = boot_with(image, &image.join("initramfs.img"), &[], |q| q.user_net());
    // Waits follow console order. The hostname is what the kernel holds, read back by
    // PID 1 after setting it.
    vm.wait_for("berth: hostname: qemu-test", BOOT).unwrap();
    // `loaded modules:` is /proc/modules as PID 1 sees it just before ready.
    let modules = vm.wait_for_line("berth: loaded modules:", STEP).unwrap();
    let names: Vec<&str> = modules
        .split("loaded modules:")
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert!(names.contains(&"dummy"), "dummy not loaded: {modules}");
    // PID 1 loads the power button driver for itself.
    assert!(names.contains(&"button"), "button not loaded: {modules}");
    // Coldplug: drivers for the devices present, none of them configured.
    for driver in ["virtio_pci", "virtio_net", "pvpanic_mmio"] {
        assert!(
            names.contains(&driver),
            "coldplug missed {driver}: {modules}"
        );
    }
    vm.wait_for("berth: ready", STEP).unwrap();
    assert!(!vm.console().contains("berth: error"), "errors during boot");
}

/// PID 1 copies its log to the kernel log at debug priority. With `loglevel=8` the kernel
/// echoes debug records to the console in its own format (`[    1.888123] berth: ...`),
/// which PID 1's direct console lines (`[  1888.1 ms] berth: ...`) never take.
#[test]
fn log_reaches_the_kernel_log() {
    if !require_qemu() {
        return;
    }
    let image = standard_image();
    let vm = boot(image, &image.join("initramfs.img"), &["loglevel=8"]);
    vm.wait_for("berth: ready", BOOT).unwrap();
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let echoed = vm
            .console()
            .lines()
            .any(|l| l.contains("berth: ready in") && !l.contains(" ms] berth:"));
        if echoed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no kernel-log copy of the ready line"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kernel_command_line_overrides_hostname() {
    if !require_qemu() {
        return;
    }
    let image = standard_image();
    // A bare word reaches PID 1 as an argument: `netd`, which names the netd child's
    // mode, must not turn PID 1 into netd (which would then exit and panic the kernel).
    let vm = boot(
        image,
        &image.join("initramfs.img"),
        &["berth.hostname=from-cmdline", "netd"],
    );
    vm.wait_for("berth: hostname: from-cmdline", BOOT).unwrap();
    vm.wait_for("berth: ready", STEP).unwrap();
}

#[test]
fn power_button_shuts_down_in_order_and_qemu_exits() {
    if !require_qemu() {
        return;
    }
    let image = standard_image();
    let vm = boot(image, &image.join("initramfs.img"), &[]);
    // The ACPI button, and the AT keyboard, which also has a power key.
    let watching = vm.wait_for_line("power button(s)", BOOT).unwrap();
    assert!(
        !watching.contains("watching 0 "),
        "no power button found: {watching}"
    );
    vm.wait_for("berth: ready", STEP).unwrap();
    vm.system_powerdown().unwrap();
    for step in [
        "power button pressed: power-off",
        "stopping processes",
        "syncing filesystems",
        "filesystems unmounted",
        "power-off: now",
    ] {
        vm.wait_for(step, STEP).unwrap();
    }
    let status = vm.wait_exit(STEP).unwrap();
    assert!(
        status.success(),
        "QEMU should exit 0 on power-off: {status}"
    );
    let console = vm.console();
    assert!(
        !console.contains("cannot unmount"),
        "a clean power-off unmounts everything"
    );
}

#[test]
fn ctrl_alt_del_reboots() {
    if !require_qemu() {
        return;
    }
    let image = standard_image();
    let vm = boot(image, &image.join("initramfs.img"), &[]);
    vm.wait_for("berth: ready", BOOT).unwrap();
    vm.send_ctrl_alt_del().unwrap();
    vm.wait_for("SIGINT received (ctrl-alt-del): reboot", STEP)
        .unwrap();
    vm.wait_for("filesystems unmounted", STEP).unwrap();
    vm.wait_for("reboot: now", STEP).unwrap();
    // The machine comes up again: the kernel banner, then a second ready.
    vm.wait_for("Linux version", BOOT).unwrap();
    vm.wait_for("berth: ready", BOOT).unwrap();
    assert_eq!(vm.status().unwrap(), "running");
}

/// Appends an uncompressed cpio holding `config` as /etc/berth/host.toml to a copy of the
/// image's initramfs. The kernel unpacks concatenated archives in order, so the later file
/// wins: the way to give a built image a different config without rebuilding it.
/// (Asserting the degraded line below also proves the appended config was read.)
fn initrd_with_config(image: &Path, name: &str, config: &str) -> PathBuf {
    let mut bytes = std::fs::read(image.join("initramfs.img")).expect("read initramfs");
    // The kernel takes an uncompressed archive only at a 4-byte-aligned offset and skips
    // zero bytes between archives (init/initramfs.c, unpack_to_rootfs): unaligned, the
    // appended config would be silently ignored.
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    let mut extra = CpioWriter::new(Vec::new());
    extra
        .entry(
            "etc/berth/host.toml",
            0o644,
            &EntryKind::File(config.as_bytes()),
        )
        .expect("cpio entry");
    bytes.extend(extra.finish().expect("cpio trailer"));
    // Beside the image it extends (`target/qemu-images/standard/image/`).
    let path = image.join(format!("{name}.initramfs.img"));
    std::fs::write(&path, bytes).expect("write initramfs");
    path
}

#[test]
fn broken_config_still_boots_and_names_the_key() {
    if !require_qemu() {
        return;
    }
    let image = standard_image();
    let broken = "version = 1\nhostname = \"qemu-test\"\n\n[kernel]\nmodles = [\"dummy\"]\n";
    let initrd = initrd_with_config(image, "broken-config", broken);
    let vm = boot(image, &initrd, &[]);
    // Defaults applied...
    vm.wait_for("hostname: berth", BOOT).unwrap();
    let line = vm.wait_for_line("degraded", STEP).unwrap();
    assert!(
        line.contains("line 5") && line.contains("kernel.modles"),
        "the degraded line must name the line and key: {line}"
    );
    // ...and still a working machine that powers off on request.
    vm.system_powerdown().unwrap();
    vm.wait_for("power-off: now", STEP).unwrap();
    assert!(vm.wait_exit(STEP).unwrap().success());
}
