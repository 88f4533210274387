//! Stopping `berth boot` from outside, as test pipelines and CI runners do, never leaves
//! QEMU behind or the forwarded port taken; a guest kernel panic before PID 1 ends
//! `berth boot` within seconds; `berth boot` in the background of a terminal neither
//! freezes nor takes the terminal.
//!
//! QEMU is found by the unique forwarded port in its command line. Most checks need QEMU
//! only started, not booted: one test boots to ready (the power button).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The image of this file's tests, built once.
fn shared_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| image("stop"))
}

/// The QEMU forwarding host port `port`, if one runs.
fn qemu_with_port(port: u16) -> Option<u32> {
    let needle = format!("hostfwd=tcp::{port}-:80");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                && alive(*pid)
        })
}

/// Waits for the QEMU forwarding `port` and for its forward to listen.
fn started_qemu(port: u16) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = qemu_with_port(port) {
            break pid;
        }
        assert!(Instant::now() < deadline, "no QEMU forwarding port {port}");
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_listening(port);
    pid
}

/// The parent of `pid`.
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn boot_command(port: u16) -> Command {
    let mut cmd = Command::new(BERTH);
    cmd.arg("boot")
        .arg(shared_image())
        .arg("-p")
        .arg(format!("{port}:80"));
    cmd
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks that QEMU `qemu` is gone within `limit` of `since` and its port is free.
fn assert_gone(what: &str, qemu: u32, port: u16, since: Instant, limit: Duration) {
    let left = limit.saturating_sub(since.elapsed());
    let took = time_to_death(qemu, left)
        .map(|_| since.elapsed())
        .unwrap_or_else(|| panic!("{what}: QEMU {qemu} still runs after {limit:?}"));
    eprintln!("{what}: QEMU gone {took:?} after the signal");
    assert!(port_free(port), "{what}: port {port} still taken");
}

#[test]
fn sigterm_powers_the_guest_off_and_qemu_is_gone_within_5_s() {
    if !qemu_present() {
        return;
    }
    let port = free_port();
    let (mut child, rx) = spawn_watched(&mut boot_command(port));
    let mut seen = Vec::new();
    wait_line(&rx, "berth: ready", BOOT, &mut seen);
    let qemu = started_qemu(port);
    let sent = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_gone("SIGTERM", qemu, port, sent, Duration::from_secs(5));
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(143), "{status}");
    // The power button, not a kill: PID 1 powered the machine off itself.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
        seen.push(line);
    }
    assert!(
        seen.iter().any(|l| l.contains("power-off: now")),
        "no clean power-off:\n{}",
        seen.join("\n")
    );
}

#[test]
fn sigint_sighup_and_sigkill_of_berth_take_qemu_with_them() {
    if !qemu_present() {
        return;
    }
    for (sig, code) in [
        (Signal::SIGINT, Some(130)),
        (Signal::SIGHUP, Some(129)),
        (Signal::SIGKILL, None),
    ] {
        let port = free_port();
        let mut child = boot_command(port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let qemu = started_qemu(port);
        let sent = Instant::now();
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
        // SIGKILL: the kernel's parent-death signal kills QEMU.
        assert_gone(sig.as_str(), qemu, port, sent, Duration::from_secs(3));
        let status = wait_exit(&mut child, Duration::from_secs(5));
        assert_eq!(status.code(), code, "{sig}: {status}");
    }
}

#[test]
fn closed_output_stops_qemu() {
    if !qemu_present() {
        return;
    }
    let port = free_port();
    let mut child = boot_command(port)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let qemu = started_qemu(port);
    // `berth boot | head -c 16`: the reader takes a little and goes away.
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let closed = Instant::now();
    assert_gone("closed output", qemu, port, closed, Duration::from_secs(60));
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(141), "{status}");
}

#[test]
fn timeout_with_and_without_foreground_leaves_nothing() {
    if !qemu_present() {
        return;
    }
    for foreground in [false, true] {
        let port = free_port();
        let mut cmd = Command::new("timeout");
        if foreground {
            cmd.arg("--foreground");
        }
        let mut child = cmd
            .arg("6")
            .arg(BERTH)
            .arg("boot")
            .arg(shared_image())
            .arg("-p")
            .arg(format!("{port}:80"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let qemu = started_qemu(port);
        let status = wait_exit(&mut child, Duration::from_secs(30));
        assert_eq!(
            status.code(),
            Some(124),
            "foreground {foreground}: {status}"
        );
        // berth boot reaps its QEMU before it exits, and timeout waits for berth boot.
        assert!(!alive(qemu), "foreground {foreground}: QEMU left running");
        assert!(port_free(port), "foreground {foreground}: port taken");
    }
}

/// `timeout` runs its command in a process group of its own, so on a terminal
/// `berth boot` is in the background: it must neither be stopped by SIGTTOU/SIGTTIN nor
/// put the terminal in raw mode, and it says where the console goes. (The shell is
/// there as in a terminal: a session leader cannot leave its process group, so
/// `timeout` run as one would stay in the foreground.)
#[test]
fn in_the_background_of_a_terminal_the_console_is_printed_and_the_terminal_untouched() {
    if !qemu_present() {
        return;
    }
    use nix::sys::termios::{tcgetattr, LocalFlags};
    let pty = nix::pty::openpty(None, None).unwrap();
    let before = tcgetattr(&pty.slave).unwrap();
    assert!(before
        .local_flags
        .contains(LocalFlags::ICANON | LocalFlags::ECHO));
    let port = free_port();
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    // setsid -c: a new session whose controlling terminal is the pty; the shell is in
    // the foreground there, timeout moves itself and berth boot to a group of their own.
    let script = format!(
        "timeout 60 {BERTH} boot {} -p {port}:80; exit $?",
        shared_image().display()
    );
    let mut child = Command::new("setsid")
        .args(["-c", "sh", "-c", &script])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(String::new()));
    let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
    let reader = Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            reader
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let deadline = Instant::now() + BOOT;
    while !screen.lock().unwrap().contains("berth: ready") {
        assert!(
            Instant::now() < deadline,
            "no ready on the terminal (frozen?):\n{}",
            screen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let qemu = started_qemu(port);
    let during = tcgetattr(&pty.slave).unwrap();
    assert!(
        during
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "the terminal was put in raw mode"
    );
    let text = screen.lock().unwrap().clone();
    assert!(
        text.contains("not in the terminal's foreground process group"),
        "{text}"
    );
    // The quit hint belongs to interactive consoles only.
    assert!(!text.contains("ctrl-a x quits QEMU"), "{text}");
    let berth = parent_of(qemu);
    let sent = Instant::now();
    kill(Pid::from_raw(berth as i32), Signal::SIGINT).unwrap();
    assert_gone(
        "SIGINT in the background",
        qemu,
        port,
        sent,
        Duration::from_secs(5),
    );
    wait_exit(&mut child, Duration::from_secs(10));
    let after = tcgetattr(&pty.slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(after.input_flags, before.input_flags);
}

/// In the foreground of a terminal QEMU gets the keyboard (raw mode), the quit hint
/// follows ready, and the terminal's modes come back even when QEMU is killed and
/// cannot restore them itself.
#[test]
fn in_the_foreground_the_terminal_is_restored_after_qemu_is_killed() {
    if !qemu_present() {
        return;
    }
    use nix::sys::termios::{tcgetattr, LocalFlags};
    let pty = nix::pty::openpty(None, None).unwrap();
    let before = tcgetattr(&pty.slave).unwrap();
    let port = free_port();
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    // setsid -c: berth boot leads a new session whose controlling terminal is the pty,
    // in its foreground process group.
    let mut child = Command::new("setsid")
        .args(["-c", BERTH, "boot"])
        .arg(shared_image())
        .arg("-p")
        .arg(format!("{port}:80"))
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(String::new()));
    let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
    let reader = Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            reader
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let deadline = Instant::now() + BOOT;
    loop {
        let text = screen.lock().unwrap().clone();
        if let Some(at) = text.find("berth: ready") {
            if text[at..].contains("ctrl-a x quits QEMU") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no ready and hint:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let qemu = started_qemu(port);
    let during = tcgetattr(&pty.slave).unwrap();
    assert!(
        !during.local_flags.contains(LocalFlags::ICANON),
        "QEMU did not get the keyboard"
    );
    kill(Pid::from_raw(qemu as i32), Signal::SIGKILL).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{status}");
    let after = tcgetattr(&pty.slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(after.input_flags, before.input_flags);
}

/// Bytes that are no archive of any kind, the same on every run.
fn junk(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn a_corrupt_initramfs_is_refused_and_a_kernel_panic_ends_berth_boot() {
    if !qemu_present() {
        return;
    }
    let dir = workspace().join("target/boot-cli-tests/corrupt");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["vmlinuz", "manifest.json"] {
        std::fs::copy(shared_image().join(name), dir.join(name)).unwrap();
    }
    std::fs::write(dir.join("initramfs.img"), junk(1 << 20)).unwrap();

    // The manifest no longer matches: refused before QEMU, naming the file.
    let out = Command::new(BERTH)
        .arg("boot")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("initramfs.img does not match manifest.json"),
        "{stderr}"
    );
    assert!(!stderr.contains("running qemu"), "{stderr}");

    // A manifest that lists the junk: the kernel cannot unpack it, finds no root and
    // panics before PID 1.
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let (sha256, size) = berth_buildroot::hash::sha256_file(&dir.join("initramfs.img")).unwrap();
    for record in manifest["outputs"].as_array_mut().unwrap() {
        if record["name"] == "initramfs.img" {
            record["sha256"] = sha256.clone().into();
            record["size"] = size.into();
        }
    }
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let started = Instant::now();
    let mut child = Command::new(BERTH)
        .arg("boot")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = pipe.read_to_string(&mut stderr);
        stderr
    });
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let took = started.elapsed();
    let stderr = reader.join().unwrap();
    eprintln!("berth boot of a corrupt initramfs exited {status} after {took:?}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the guest kernel panicked: Kernel panic - not syncing: "),
        "{stderr}"
    );
}
