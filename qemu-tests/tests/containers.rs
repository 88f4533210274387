//! Containers under the real PID 1 in QEMU: a baked busybox image imported at boot,
//! two containers started in dependency order, a crashing container restarted with
//! growing delays, health checks run inside a container gating its dependant and
//! reporting an unhealthy one, a failed setup reported and restarted by its policy, an
//! OOM kill reported as 137, output on the console, and at
//! power-off a container that ignores SIGTERM killed after its `stop_timeout`, in
//! reverse dependency order.

use std::time::Duration;

use berth_qemu_tests::{build_busybox_test_image, require_qemu, Qemu};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);

const CONFIG: &str = r#"version = 1
hostname = "ctr-host"

[shutdown]
timeout = "2s"

[[image]]
path = "busybox"
name = "busybox:latest"

[[container]]
name = "db"
image = "busybox:latest"
command = ["sh", "-c", "echo db up; trap 'echo db got TERM; exit 0' TERM; while true; do sleep 1; done"]
restart = "always"

[[container]]
name = "web"
image = "busybox:latest"
depends_on = ["db"]
# sleep, as the container's PID 1, has no SIGTERM handler: only cgroup.kill ends it.
command = ["sh", "-c", "echo web up on $(cat /etc/hostname); grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr '\t' ' '; exec sleep 1000"]
stop_timeout = "1s"

[[container]]
name = "crash"
image = "busybox:latest"
command = ["sh", "-c", "echo crashing; exit 3"]
restart = "on-failure:4"

# Healthy only once /tmp/ready exists (after 2 s); the check runs inside the container
# (its hostname, its files) with its restrictions (no_new_privs, seccomp, capabilities),
# and, as `docker exec`, with the configured environment and working directory, not
# those the program has since (it changes PROBE before its exec).
[[container]]
name = "ready"
image = "busybox:latest"
command = ["sh", "-c", "export PROBE=changed; sleep 2; touch /tmp/ready; exec sleep 1000"]
env = { PROBE = "configured" }
workdir = "/tmp"
init = true
healthcheck = { command = ["sh", "-c", "test -f /tmp/ready && test $(hostname) = ready && test x$PROBE = xconfigured && test $(pwd) = /tmp && grep -q '^NoNewPrivs:.1' /proc/self/status && grep -q '^Seccomp:.2' /proc/self/status && grep -q '^CapEff:.00000000800405fb' /proc/self/status"], interval = "300ms", timeout = "2s", retries = 100 }

[[container]]
name = "after-ready"
image = "busybox:latest"
depends_on = ["ready"]
command = ["sh", "-c", "echo after-ready up; exec sleep 1000"]
init = true

[[container]]
name = "sick"
image = "busybox:latest"
command = ["sleep", "1000"]
init = true
healthcheck = { command = ["false"], interval = "200ms", retries = 2 }

# Its setup fails inside its own process (the image has no such user); PID 1 learns
# it from the sync pipe, reaps the child and applies the restart policy. `berth build`
# refuses a user missing from the image's /etc/passwd, so this one is replaced by a file
# volume (the config), which the build cannot see into.
[[container]]
name = "baduser"
image = "busybox:latest"
command = ["true"]
user = "no-such-user"
volumes = ["/etc/berth/host.toml:/etc/passwd:ro"]
restart = "on-failure:1"

# The host's root, as PID 1 left the initramfs: PID 1's helper is there, and PID 1's
# own binary is not copied (it would hold a second copy in memory).
[[container]]
name = "hostroot"
image = "busybox:latest"
volumes = ["/:/host:ro"]
command = ["sh", "-c", "test -x /host/usr/lib/berth/berth-helper && echo helper present; test -e /host/init || echo root without init"]

[[container]]
name = "oom"
image = "busybox:latest"
command = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
memory = "16M"
"#;

/// The boot-relative stamp of a console line `[  1234.5 ms] ...`.
fn stamp(line: &str) -> Option<f64> {
    let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
    inner.trim().strip_suffix("ms")?.trim().parse().ok()
}

fn lines_with<'a>(console: &'a str, needle: &str) -> Vec<&'a str> {
    console.lines().filter(|l| l.contains(needle)).collect()
}

fn position(console: &str, needle: &str) -> usize {
    console
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not on the console"))
}

#[test]
fn containers_start_in_order_restart_log_and_stop() {
    if !require_qemu() {
        return;
    }
    let image = build_busybox_test_image("containers", CONFIG);
    let vm = Qemu::new(image.join("vmlinuz"))
        .initrd(image.join("initramfs.img"))
        .pvpanic(true)
        .args(["-action", "panic=exit-failure"])
        .deadline(Duration::from_secs(300))
        .spawn()
        .expect("start QEMU");
    vm.wait_for("berth: baked images imported", BOOT).unwrap();
    // The containers run concurrently: wait for each marker anywhere on the console.
    let markers = [
        "container ready: healthy",
        "after-ready | after-ready up",
        "container sick: unhealthy",
        "container oom: exit",
        "container crash: exit 3; not restarting",
        "web | Seccomp:",
        "db | db up",
        "container baduser: exit 127; not restarting",
        "hostroot | helper present",
        "hostroot | root without init",
    ];
    let console = vm
        .wait_for_all(&markers, STEP)
        .unwrap_or_else(|| panic!("timed out waiting for {markers:?}"));

    // Health: after-ready waits for ready's check to pass, which takes 2 s.
    assert!(
        position(&console, "container ready: healthy")
            < position(&console, "container after-ready: started")
    );
    let ready_started = stamp(lines_with(&console, "container ready: started")[0]).unwrap();
    let ready_healthy = stamp(lines_with(&console, "container ready: healthy")[0]).unwrap();
    assert!(
        ready_healthy - ready_started >= 2000.0,
        "healthy after {:.0} ms",
        ready_healthy - ready_started
    );
    assert_eq!(
        lines_with(
            &console,
            "container sick: health check failed (exit 1), 1 of 2"
        )
        .len(),
        1
    );

    // Dependency order: web starts only once db runs.
    assert!(
        position(&console, "container db: started") < position(&console, "container web: started")
    );
    // Output reaches the console, prefixed by the container's name.
    assert!(console.contains("db | db up"), "db output missing");
    assert!(
        console.contains("web | web up on web"),
        "web output missing"
    );
    assert!(console.contains("web | NoNewPrivs: 1"));
    assert!(console.contains("web | Seccomp: 2"));
    assert!(console.contains("web | CapEff: 00000000800405fb"));
    // A failed setup is reported with its reason, and restarted by the policy.
    let failures = lines_with(
        &console,
        "container baduser: user \"no-such-user\" is not in the image's /etc/passwd",
    );
    assert_eq!(failures.len(), 2, "one start and one restart: {failures:?}");
    assert_eq!(
        lines_with(&console, "container baduser: exit 127; restart 1 in 100 ms").len(),
        1
    );
    // OOM kill from memory.events.
    let oom = lines_with(&console, "container oom: exit")[0];
    assert!(oom.contains("exit 137 (OOMKilled)"), "{oom}");

    // Growing delays, and the restarts really wait that long.
    let restarts = lines_with(&console, "container crash: exit 3; restart");
    let delays: Vec<&str> = restarts
        .iter()
        .map(|l| l.split(" in ").last().unwrap_or(""))
        .collect();
    assert_eq!(
        delays,
        ["100 ms", "200 ms", "400 ms", "800 ms"],
        "{restarts:?}"
    );
    let starts: Vec<f64> = lines_with(&console, "container crash: started")
        .iter()
        .filter_map(|l| stamp(l))
        .collect();
    assert_eq!(starts.len(), 5, "1 start + 4 restarts");
    for (i, pair) in starts.windows(2).enumerate() {
        let wanted = 100.0 * f64::from(1u32 << i);
        assert!(
            pair[1] - pair[0] >= wanted,
            "restart {} after {:.0} ms, wanted ≥ {wanted} ms",
            i + 1,
            pair[1] - pair[0]
        );
    }
    assert_eq!(lines_with(&console, "crash | crashing").len(), 5);

    // Power-off: web (which ignores SIGTERM) is killed after 1 s, then db stops.
    vm.skip_console();
    vm.system_powerdown().unwrap();
    vm.wait_for("container web: stopping (SIGTERM", STEP)
        .unwrap();
    vm.wait_for(
        "container web: did not stop within 1000 ms: killing its cgroup",
        STEP,
    )
    .unwrap();
    vm.wait_for("container web: stopped (exit 137", STEP)
        .unwrap();
    vm.wait_for("container db: stopping (SIGTERM", STEP)
        .unwrap();
    vm.wait_for("db | db got TERM", STEP).unwrap();
    vm.wait_for("container db: stopped (exit 0)", STEP).unwrap();
    vm.wait_for("all containers stopped", STEP).unwrap();
    vm.wait_for("power-off: now", STEP).unwrap();
    let status = vm.wait_exit(STEP).unwrap();
    assert!(
        status.success(),
        "QEMU should exit 0 on power-off: {status}"
    );
    let stop = vm.console();
    let web_stop = lines_with(&stop, "container web: stopping")
        .first()
        .and_then(|l| stamp(l))
        .unwrap();
    let web_kill = lines_with(&stop, "killing its cgroup")
        .first()
        .and_then(|l| stamp(l))
        .unwrap();
    assert!(
        web_kill - web_stop >= 1000.0,
        "killed after {:.0} ms",
        web_kill - web_stop
    );
    // Nothing of the containers' is left holding a filesystem at a clean power-off.
    let unmount_warnings = lines_with(&stop, "cannot unmount");
    assert!(unmount_warnings.is_empty(), "{unmount_warnings:?}");
    // The restart policy reads as written in the config.
    assert!(
        console.contains("container crash: exit 3; not restarting (restart = on-failure:4)"),
        "restart policy in the config's words"
    );
}
