//! The console as a user reads it, on one booted host: a container printing without
//! pause beside one that prints a line a second (the quiet one's lines still reach the
//! console), containers held back by a dependency that is not healthy and by
//! `network-online` without a network (each says so, and is reminded of no more often
//! than every 30 s), `berth: ready` before the `containers started` milestone that names
//! those still waiting, the helper's lines stamped as PID 1's, no Rust `Debug` text, and
//! a clean power-off without unmount warnings. On a second host, a baked image that fails
//! to import holds back the containers that run it, which say so.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_buildroot::cpio::{CpioWriter, EntryKind};
use berth_qemu_tests::{build_busybox_test_image, require_qemu, Qemu};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);
/// Lines the quiet container prints, one a second.
const TICKS: usize = 20;

const CONFIG: &str = r#"version = 1
hostname = "console-host"

[shutdown]
timeout = "2s"

[[image]]
path = "busybox"
name = "busybox:latest"

[[container]]
name = "flood"
image = "busybox:latest"
command = ["yes", "flood flood flood flood flood flood flood flood flood flood flood flood flood"]
network = "none"

[[container]]
name = "quiet"
image = "busybox:latest"
# Its lines are longer than the flood's: they cannot slip into what a flood line leaves
# of a shared budget.
command = ["sh", "-c", "pad=$(printf '%0120d' 0); i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo tick $i $pad; sleep 1; done"]
network = "none"

# No NIC on this machine: the host never gets an address.
[[container]]
name = "needs-net"
image = "busybox:latest"
depends_on = ["network-online"]
command = ["true"]
network = "none"

[[container]]
name = "sick"
image = "busybox:latest"
command = ["sleep", "1000"]
init = true
network = "none"
healthcheck = { command = ["false"], interval = "200ms", retries = 1 }

[[container]]
name = "needs-sick"
image = "busybox:latest"
depends_on = ["sick"]
command = ["true"]
network = "none"

[[container]]
name = "once"
image = "busybox:latest"
command = ["sh", "-c", "exit 1"]
restart = "on-failure:1"
network = "none"
"#;

/// The boot-relative stamp of a console line `[  1234.5 ms] ...`.
fn stamp(line: &str) -> Option<f64> {
    let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
    inner.trim().strip_suffix("ms")?.trim().parse().ok()
}

fn lines_with<'a>(console: &'a str, needle: &str) -> Vec<&'a str> {
    console.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn console_is_fair_says_what_waits_and_powers_off_cleanly() {
    if !require_qemu() {
        return;
    }
    let image = build_busybox_test_image("console", CONFIG);
    let vm = Qemu::new(image.join("vmlinuz"))
        .initrd(image.join("initramfs.img"))
        .deadline(Duration::from_secs(300))
        .spawn()
        .expect("start QEMU");
    vm.wait_for("berth: ready", BOOT).unwrap();

    // The quiet container's lines reach the console beside the flood.
    vm.wait_for("container quiet: exit 0", STEP).unwrap();
    let console = vm.console();
    let ticks: BTreeSet<&str> = console
        .lines()
        .filter_map(|l| l.split("quiet | tick ").nth(1)?.split_whitespace().next())
        .collect();
    assert!(
        ticks.len() * 10 >= TICKS * 8,
        "{} of {TICKS} quiet lines on the console: {ticks:?}",
        ticks.len()
    );
    assert!(
        console.contains("flood | flood flood"),
        "the flood is mirrored too, within its share"
    );
    assert!(
        console.contains("flood | (") && console.contains("lines not mirrored to the console"),
        "the flood's dropped lines are counted"
    );

    // Two milestones: the host is up, then the containers have had their turn.
    let summary = lines_with(&console, "containers started:")
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no containers-started line"));
    assert!(console.find("berth: ready").unwrap() < console.find("containers started:").unwrap());
    assert!(
        lines_with(&console, "berth: ready in")[0].ends_with("; 6 container(s) start next"),
        "the ready line says the containers come next"
    );
    assert!(summary.contains(" of 6 running; waiting: "), "{summary}");
    assert!(
        summary.contains("; waiting: needs-net for network-online (the host has no address yet"),
        "{summary}"
    );
    assert!(
        summary.contains("; needs-sick for sick to be healthy"),
        "{summary}"
    );
    assert_eq!(
        lines_with(&console, "container needs-net: waiting for network-online").len(),
        1
    );
    assert_eq!(
        lines_with(&console, "container needs-sick: waiting for sick").len()
            + lines_with(&console, "container needs-sick: still waiting").len(),
        lines_with(&console, "container needs-sick: ").len(),
        "needs-sick never starts"
    );
    assert!(
        console.contains("container needs-sick: waiting for sick to be healthy (it is unhealthy)"),
        "the wait follows sick's health"
    );

    // A reminder 30 s after the first line, not sooner.
    let reminder = vm
        .wait_for_line(
            "container needs-net: still waiting for network-online",
            STEP,
        )
        .unwrap();
    let console = vm.console();
    let first =
        stamp(lines_with(&console, "container needs-net: waiting for network-online")[0]).unwrap();
    let again = stamp(&reminder).unwrap();
    // (The stamps are taken as each line is written, a little after the supervisor's
    // tick that decided it: a margin for a slow TCG guest.)
    assert!(
        again - first >= 29_000.0,
        "reminded after {:.0} ms",
        again - first
    );
    assert_eq!(
        lines_with(&console, "container needs-net: still waiting").len(),
        1
    );

    // The helper's lines look as PID 1's: every `berth:` line from PID 1 on is stamped.
    let pid1_started = console.find("berth: PID 1 started").unwrap();
    let from_pid1 = &console[console[..pid1_started].rfind('\n').map_or(0, |n| n + 1)..];
    let imported = lines_with(from_pid1, "berth: image busybox:latest imported from");
    assert_eq!(imported.len(), 1, "{imported:?}");
    for line in from_pid1.lines().filter(|l| l.contains("berth: ")) {
        assert!(stamp(line).is_some(), "unstamped line {line:?}");
    }
    // No Rust Debug text: the restart policy in the config's words.
    assert!(
        console.contains("container once: exit 1; not restarting (restart = on-failure:1)"),
        "restart policy as written"
    );
    for debug in ["OnFailure", "Some(", "Exited(", "Pid("] {
        assert!(!console.contains(debug), "{debug} on the console");
    }

    // A clean power-off leaves nothing busy.
    vm.skip_console();
    vm.system_powerdown().unwrap();
    vm.wait_for("power-off: now", STEP).unwrap();
    let status = vm.wait_exit(STEP).unwrap();
    assert!(
        status.success(),
        "QEMU should exit 0 on power-off: {status}"
    );
    let stop = vm.console();
    assert!(stop.contains("all containers stopped"), "{stop}");
    assert!(
        lines_with(&stop, "cannot unmount").is_empty(),
        "{:?}",
        lines_with(&stop, "cannot unmount")
    );
}

const BROKEN_IMAGE_CONFIG: &str = r#"version = 1
hostname = "broken-image"

[[image]]
path = "busybox"
name = "busybox:latest"

[[container]]
name = "web"
image = "busybox:latest"
command = ["true"]
network = "none"

[[container]]
name = "after-web"
image = "busybox:latest"
depends_on = ["web"]
command = ["true"]
network = "none"
"#;

#[test]
fn an_image_that_fails_to_import_holds_its_containers_back() {
    if !require_qemu() {
        return;
    }
    let image = build_busybox_test_image("console-broken-image", BROKEN_IMAGE_CONFIG);
    // The baked image's index replaced by garbage, in an archive appended to the
    // initramfs (the kernel unpacks concatenated archives in order, the later file wins;
    // an uncompressed one only at a 4-byte-aligned offset).
    let mut initrd = std::fs::read(image.join("initramfs.img")).expect("read initramfs");
    initrd.resize(initrd.len().next_multiple_of(4), 0);
    let mut extra = CpioWriter::new(Vec::new());
    extra
        .entry(
            "usr/share/berth/images/0/index.json",
            0o644,
            &EntryKind::File(b"not json"),
        )
        .expect("cpio entry");
    initrd.extend(extra.finish().expect("cpio trailer"));
    let broken = image.join("broken.initramfs.img");
    std::fs::write(&broken, initrd).expect("write initramfs");

    let vm = Qemu::new(image.join("vmlinuz"))
        .initrd(&broken)
        .deadline(Duration::from_secs(240))
        .spawn()
        .expect("start QEMU");
    vm.wait_for("berth: ready", BOOT).unwrap();
    let summary = vm.wait_for_line("containers started:", STEP).unwrap();
    let console = vm.console();
    assert!(
        console.contains("image import failed (exit 1): trying again"),
        "the importer's exit in words"
    );
    assert!(
        console.contains(
            "image import failed 3 times (exit 1): busybox:latest not imported; the containers that run them wait"
        ),
        "gave up, naming the image"
    );
    assert_eq!(
        lines_with(
            &console,
            "container web: waiting for image busybox:latest, which failed to import"
        )
        .len(),
        1
    );
    assert!(
        summary.contains(
            "0 of 2 running; waiting: web for image busybox:latest, which failed to import; after-web for image busybox:latest, which failed to import"
        ),
        "{summary}"
    );
    assert!(
        !console.contains("container web: started") && !console.contains("exit 127"),
        "web never starts without its image"
    );
    for debug in ["Exited(", "Pid("] {
        assert!(!console.contains(debug), "{debug} on the console");
    }
}
