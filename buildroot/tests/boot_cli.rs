//! `berth boot` end to end, and the promise that a built pair needs nothing but plain QEMU.
//!
//! Needs the static PID 1 (`make init`) and QEMU; without QEMU the tests skip, unless
//! `BERTH_REQUIRE_QEMU=1` (as `make test` sets), where they fail.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const BOOT: Duration = Duration::from_secs(120);

fn qemu_present() -> bool {
    let found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var("BERTH_REQUIRE_QEMU").as_deref() == Ok("1") {
        panic!("qemu-system-x86_64 is missing; `make test` installs it");
    }
    if !found {
        eprintln!("skipping: qemu-system-x86_64 not installed");
    }
    found
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds a small image with the real static PID 1 into a fresh directory.
fn image(name: &str) -> PathBuf {
    let init = std::env::var_os("BERTH_INIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/x86_64-unknown-linux-gnu/release/berth-init"));
    assert!(init.exists(), "{} missing: run `make init`", init.display());
    let dir = workspace().join("target/boot-cli-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("host.toml");
    std::fs::write(&config, "version = 1\nhostname = \"cli-boot\"\n").unwrap();
    let out = Command::new(BERTH)
        .arg("build")
        .arg(&config)
        .arg("-o")
        .arg(dir.join("image"))
        .arg("--init")
        .arg(&init)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "berth build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("image")
}

/// Starts `command` with its console (stdout) streamed line by line into a channel.
fn spawn_watched(command: &mut Command) -> (Child, Receiver<String>) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_line(rx: &Receiver<String>, needle: &str, limit: Duration, seen: &mut Vec<String>) {
    let deadline = Instant::now() + limit;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let hit = line.contains(needle);
        seen.push(line);
        if hit {
            return;
        }
    }
    panic!("no {needle:?} on the console:\n{}", seen.join("\n"));
}

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
            .arg("--")
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display())),
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
