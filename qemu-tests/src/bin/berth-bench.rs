//! `make bench`: boot-time and size figures for the demo image, beside a trivial `/init`
//! (`floor-init`) on the same kernel, in the same run.
//!
//! Under TCG every figure is inflated by emulation, so PID 1's own work is also measured
//! natively: the same static binary runs as PID 1 of fresh namespaces on this host (root
//! needed), where only module loading is missing.
//!
//! Prints medians of several runs. Targets (issue #2): PID 1's own work ≤ 5 ms, RSS at
//! ready ≤ 2 MB, init binary ≤ 4 MB stripped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_buildroot::build::{build, BuildOptions};
use berth_buildroot::cpio::{CpioWriter, EntryKind};
use berth_qemu_tests::{static_init, static_target_dir, workspace_root, Qemu};

const RUNS: usize = 3;
const NATIVE_RUNS: usize = 10;

fn main() {
    if let Err(e) = run() {
        eprintln!("berth-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let root = workspace_root();
    let init = static_init();
    let floor = static_target_dir().join("floor-init");
    for bin in [&init, &floor] {
        if !bin.exists() {
            return Err(format!("{} is missing: run `make bench`", bin.display()));
        }
    }
    let out = root.join("target/bench");
    let demo = out.join("demo");
    eprintln!("building the demo image...");
    let busybox = root.join("examples/images/busybox.oci");
    if !busybox.exists() {
        return Err(format!(
            "{} is missing: run `make bench`",
            busybox.display()
        ));
    }
    build(&BuildOptions {
        config: root.join("examples/demo.toml"),
        out_dir: demo.clone(),
        init: Some(init.clone()),
        kernel_deb: None,
        kernel_deb_unpinned: false,
    })
    .map_err(|e| format!("berth build: {e}"))?;
    let floor_initrd = out.join("floor-initramfs.img");
    write_floor_initrd(&floor, &floor_initrd)?;

    let mut berth = Vec::new();
    let mut floors = Vec::new();
    for i in 0..RUNS {
        eprintln!("boot {}/{RUNS}: demo, then floor", i + 1);
        berth.push(boot_demo(&demo)?);
        floors.push(boot_floor(&demo.join("vmlinuz"), &floor_initrd)?);
    }
    let mut leases = Vec::new();
    for i in 0..RUNS {
        eprintln!("boot {}/{RUNS}: demo with a NIC, for the DHCP lease", i + 1);
        leases.push(boot_for_lease(&demo)?);
    }
    eprintln!("building and booting hosts with 1 and 21 containers, for PID 1's RSS");
    let rss_one = containers_rss(&out, &busybox, &init, 1)?;
    let rss_many = containers_rss(&out, &busybox, &init, 1 + EXTRA_CONTAINERS)?;
    let native = if nix::unistd::geteuid().is_root() {
        Some(native_pid1(&init, NATIVE_RUNS)?)
    } else {
        None
    };

    let med = |f: &dyn Fn(&DemoBoot) -> f64| median(berth.iter().map(f).collect());
    let floor_med = |f: &dyn Fn(&FloorBoot) -> f64| median(floors.iter().map(f).collect());
    let kib = |p: &Path| std::fs::metadata(p).map(|m| m.len() / 1024).unwrap_or(0);
    let none = String::from("-");
    println!();
    println!("berth boot benchmark (QEMU TCG, {RUNS} boots each, medians)");
    row("", "berth", "floor /init");
    let ms = |v: f64| format!("{v:.1} ms");
    row(
        "kernel start -> PID 1 exec",
        &ms(med(&|b| b.exec_ms)),
        &ms(floor_med(&|f| f.exec_ms)),
    );
    row(
        "PID 1 exec -> ready (all)",
        &ms(med(&|b| b.ready_ms)),
        &none,
    );
    row(
        "  of which module loading",
        &ms(med(&|b| b.modules_ms)),
        &none,
    );
    row(
        "  of which PID 1's own work (TCG)",
        &ms(med(&|b| b.own_ms)),
        &none,
    );
    if let Some(native) = native {
        row(
            "  PID 1's own work, native (pidns, no modules)",
            &format!("{native:.2} ms"),
            &none,
        );
    }
    row(
        "initramfs unpack",
        &ms(med(&|b| b.unpack_ms)),
        &ms(floor_med(&|f| f.unpack_ms)),
    );
    row(
        "PID 1 RSS at ready",
        &format!("{:.0} KiB", med(&|b| b.rss_kib)),
        &none,
    );
    row(
        "PID 1 RSS, 1 container running",
        &format!("{rss_one:.0} KiB"),
        &none,
    );
    row(
        &format!("PID 1 RSS, {} containers running", 1 + EXTRA_CONTAINERS),
        &format!("{rss_many:.0} KiB"),
        &none,
    );
    row(
        "  per extra container",
        &format!("{:.1} KiB", (rss_many - rss_one) / EXTRA_CONTAINERS as f64),
        &none,
    );
    row(
        "init binary",
        &format!("{} KiB", kib(&init)),
        &format!("{} KiB", kib(&floor)),
    );
    row(
        "helper binary (netd, importer; not PID 1)",
        &format!(
            "{} KiB",
            kib(&berth_buildroot::initbin::locate_helper(&init).map_err(|e| e.to_string())?)
        ),
        &none,
    );
    row(
        "initramfs",
        &format!("{} KiB", kib(&demo.join("initramfs.img"))),
        &format!("{} KiB", kib(&floor_initrd)),
    );
    row(
        "DHCP: netd start -> lease (QEMU user net)",
        &ms(median(leases.iter().map(|l| l.0).collect())),
        &none,
    );
    row(
        "  of which waiting for the carrier",
        &ms(median(leases.iter().map(|l| l.1).collect())),
        &none,
    );
    row(
        "  link up (carrier) -> lease",
        &ms(median(leases.iter().map(|l| l.0 - l.1).collect())),
        &none,
    );
    row(
        "wall clock, QEMU start -> ready / power-off",
        &format!("{:.0} ms", med(&|b| b.wall_ms)),
        &format!("{:.0} ms", floor_med(&|f| f.wall_ms)),
    );
    println!();
    println!("targets: PID 1's own work <= 5 ms; RSS <= 2048 KiB; init binary <= 4096 KiB; link up -> lease <= 50 ms; <= 100 KB of PID 1 RSS per extra container");
    Ok(())
}

/// One line of the results table.
fn row(label: &str, berth: &str, floor: &str) {
    println!("{label:<46} {berth:>12} {floor:>12}");
}

/// An uncompressed cpio with the floor init as /init and a console node.
fn write_floor_initrd(floor: &Path, out: &Path) -> Result<(), String> {
    let binary = std::fs::read(floor).map_err(|e| format!("{}: {e}", floor.display()))?;
    let mut w = CpioWriter::new(Vec::new());
    let io = |e: std::io::Error| e.to_string();
    w.entry("dev", 0o755, &EntryKind::Dir).map_err(io)?;
    w.entry(
        "dev/console",
        0o600,
        &EntryKind::CharDevice { major: 5, minor: 1 },
    )
    .map_err(io)?;
    w.entry("init", 0o755, &EntryKind::File(&binary))
        .map_err(io)?;
    let bytes = w.finish().map_err(io)?;
    std::fs::write(out, bytes).map_err(|e| format!("{}: {e}", out.display()))
}

struct DemoBoot {
    exec_ms: f64,
    ready_ms: f64,
    own_ms: f64,
    modules_ms: f64,
    rss_kib: f64,
    unpack_ms: f64,
    wall_ms: f64,
}

struct FloorBoot {
    exec_ms: f64,
    unpack_ms: f64,
    wall_ms: f64,
}

const WAIT: Duration = Duration::from_secs(120);

/// The second host runs this many containers more than the first.
const EXTRA_CONTAINERS: usize = 20;

/// Builds and boots a host running `count` busybox containers; returns PID 1's RSS
/// (KiB) from the supervisor's "containers started" line, logged once all have
/// started.
fn containers_rss(out: &Path, busybox: &Path, init: &Path, count: usize) -> Result<f64, String> {
    let dir = out.join(format!("containers-{count}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut config = format!(
        "version = 1\nhostname = \"rss\"\n\n[[image]]\npath = \"{}\"\nname = \"busybox:latest\"\n",
        busybox.display()
    );
    for i in 0..count {
        config.push_str(&format!(
            "\n[[container]]\nname = \"c{i}\"\nimage = \"busybox:latest\"\ncommand = [\"sleep\", \"100000\"]\nnetwork = \"none\"\n"
        ));
    }
    let config_path = dir.join("host.toml");
    std::fs::write(&config_path, config).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let image = dir.join("image");
    build(&BuildOptions {
        config: config_path,
        out_dir: image.clone(),
        init: Some(init.to_path_buf()),
        kernel_deb: None,
        kernel_deb_unpinned: false,
    })
    .map_err(|e| format!("berth build: {e}"))?;
    let vm = Qemu::new(image.join("vmlinuz"))
        .name(format!("bench-rss-{count}"))
        .initrd(image.join("initramfs.img"))
        .deadline(Duration::from_secs(240))
        .spawn()
        .map_err(|e| e.to_string())?;
    let line = vm
        .wait_for_line("containers started:", WAIT)
        .map_err(|e| e.to_string())?;
    vm.kill();
    let wanted = format!("{count} of {count} running");
    if !line.contains(&wanted) {
        return Err(format!("expected {wanted}: {line}"));
    }
    number_after(&line, "PID 1 rss ").ok_or(format!("no rss in {line}"))
}

fn boot_demo(image: &Path) -> Result<DemoBoot, String> {
    let started = Instant::now();
    let vm = Qemu::new(image.join("vmlinuz"))
        .name("bench-demo")
        .initrd(image.join("initramfs.img"))
        .deadline(Duration::from_secs(180))
        .spawn()
        .map_err(|e| e.to_string())?;
    let ready = vm
        .wait_for_line("berth: ready in", WAIT)
        .map_err(|e| e.to_string())?;
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let console = vm.console();
    vm.kill();
    let field = |after: &str| number_after(&ready, after).ok_or(format!("no {after:?} in {ready}"));
    Ok(DemoBoot {
        exec_ms: field("exec at ")?,
        ready_ms: field("ready in ")?,
        own_ms: field("own work ")?,
        modules_ms: field("modules ")?,
        rss_kib: field("rss ")?,
        unpack_ms: unpack_ms(&console)?,
        wall_ms,
    })
}

/// Boots the demo with a virtio NIC on QEMU's user network; returns (netd start ->
/// lease, of which waiting for the carrier), from netd's own log lines.
fn boot_for_lease(image: &Path) -> Result<(f64, f64), String> {
    let vm = Qemu::new(image.join("vmlinuz"))
        .name("bench-lease")
        .initrd(image.join("initramfs.img"))
        .user_net()
        .deadline(Duration::from_secs(180))
        .spawn()
        .map_err(|e| e.to_string())?;
    let leased = vm
        .wait_for_line("netd: eth0 leased", WAIT)
        .map_err(|e| e.to_string())?;
    let console = vm.console();
    vm.kill();
    let carrier = console
        .lines()
        .find(|l| l.contains("netd: eth0 carrier after"))
        .and_then(|l| number_after(l, "carrier after "))
        .ok_or("no carrier line")?;
    let total = number_after(&leased, " in ").ok_or(format!("no time in {leased}"))?;
    Ok((total, carrier))
}

fn boot_floor(kernel: &Path, initrd: &Path) -> Result<FloorBoot, String> {
    let started = Instant::now();
    let vm = Qemu::new(kernel)
        .name("bench-floor")
        .initrd(initrd)
        .deadline(Duration::from_secs(180))
        .spawn()
        .map_err(|e| e.to_string())?;
    let line = vm
        .wait_for_line("floor-init: exec at", WAIT)
        .map_err(|e| e.to_string())?;
    vm.wait_exit(WAIT).map_err(|e| e.to_string())?;
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(FloorBoot {
        exec_ms: number_after(&line, "exec at ").ok_or(format!("bad line {line}"))?,
        unpack_ms: unpack_ms(&vm.console())?,
        wall_ms,
    })
}

/// The first number after `marker` in `text`.
fn number_after(text: &str, marker: &str) -> Option<f64> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A kernel log timestamp, `[    1.073150] ...`, in ms.
fn kernel_ts(line: &str) -> Option<f64> {
    let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
    inner.trim().parse::<f64>().ok().map(|s| s * 1000.0)
}

/// From the kernel starting to unpack the initramfs to it freeing the initrd memory, which
/// it does once the unpacking is complete.
fn unpack_ms(console: &str) -> Result<f64, String> {
    let ts = |needle: &str| {
        console
            .lines()
            .find(|l| l.contains(needle))
            .and_then(kernel_ts)
            .ok_or(format!("no kernel line with {needle:?}"))
    };
    Ok(ts("Freeing initrd memory")? - ts("Trying to unpack rootfs image")?)
}

/// PID 1's own work from exec to ready, measured on this host: the static init as PID 1
/// of new namespaces, chrooted into a scratch root with its config.
fn native_pid1(init: &Path, runs: usize) -> Result<f64, String> {
    let root: PathBuf = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(root.join("etc/berth")).map_err(|e| e.to_string())?;
    std::fs::copy(init, root.join("init")).map_err(|e| e.to_string())?;
    let helper = root.join(berth_init::helper::helper_path_in_root());
    std::fs::create_dir_all(helper.parent().unwrap_or(&root)).map_err(|e| e.to_string())?;
    let built = berth_buildroot::initbin::locate_helper(init).map_err(|e| e.to_string())?;
    std::fs::copy(built, &helper).map_err(|e| e.to_string())?;
    std::fs::write(
        root.join("etc/berth/host.toml"),
        "version = 1\nhostname = \"bench\"\n",
    )
    .map_err(|e| e.to_string())?;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let mut child = Command::new("unshare")
            .args(["--pid", "--fork", "--mount", "--uts", "--net", "--ipc"])
            .args(["--propagation", "private", "--kill-child", "chroot"])
            .arg(&root)
            .arg("/init")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("berth: ready in"));
        let _ = child.kill();
        let _ = child.wait();
        let line = ready.ok_or("PID 1 never got ready")?;
        samples.push(number_after(&line, "ready in ").ok_or(format!("bad line {line}"))?);
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(median(samples))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
