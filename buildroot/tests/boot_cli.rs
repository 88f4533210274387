//! `berth boot` end to end, and the promise that a built pair needs nothing but plain QEMU.
//! (Stopping `berth boot` and guest panics: `boot_stop.rs`.)

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{image, qemu_present, spawn_watched, wait_line, BERTH, BOOT};

/// Runs one QMP command: handshake, then the command, waiting for each `return` so that
/// closing the socket cannot drop a queued command.
fn qmp(socket: &Path, command: &str) {
    use std::io::Write;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("QMP socket {}: {e}", socket.display()),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut replies = BufReader::new(stream).lines();
    let mut expect_return = |what: &str| loop {
        let line = replies
            .next()
            .unwrap_or_else(|| panic!("QMP closed before {what} returned"))
            .unwrap();
        if line.contains("\"return\"") {
            return;
        }
        assert!(!line.contains("\"error\""), "QMP {what}: {line}");
    };
    // The greeting has no "return" and is skipped by the first wait.
    writeln!(writer, "{{\"execute\":\"qmp_capabilities\"}}").unwrap();
    expect_return("qmp_capabilities");
    writeln!(writer, "{{\"execute\":\"{command}\"}}").unwrap();
    expect_return(command);
}

#[test]
fn berth_boot_exits_zero_on_clean_power_off() {
    if !qemu_present() {
        return;
    }
    let image = image("power-off");
    let socket = image.join("qmp.sock");
    let (mut child, rx) = spawn_watched(
        Command::new(BERTH)
            .arg("boot")
            .arg(&image)
            .arg("--qmp")
            .arg(&socket),
    );
    let mut seen = Vec::new();
    wait_line(&rx, "berth: ready", BOOT, &mut seen);
    qmp(&socket, "system_powerdown");
    wait_line(&rx, "power-off: now", BOOT, &mut seen);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "berth boot did not exit after power-off:\n{}",
                seen.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "berth boot exited {status}");
}

#[test]
fn the_pair_boots_with_plain_qemu() {
    if !qemu_present() {
        return;
    }
    let image = image("plain-qemu");
    // Exactly the documented command line, nothing added.
    let (mut child, rx) = spawn_watched(
        Command::new("qemu-system-x86_64")
            .args(["-m", "256", "-nographic", "-kernel"])
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.join("initramfs.img"))
            .args(["-append", "console=ttyS0"]),
    );
    let mut seen = Vec::new();
    wait_line(&rx, "berth: hostname: cli-boot", BOOT, &mut seen);
    wait_line(&rx, "berth: ready", BOOT, &mut seen);
    let _ = child.kill();
    let _ = child.wait();
}
