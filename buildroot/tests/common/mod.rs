//! Helpers of the `berth boot` tests: building a small image, starting `berth boot` with
//! its console read line by line, finding its QEMU.
//!
//! Needs the static PID 1 (`make init`) and QEMU; without QEMU the tests skip, unless
//! `BERTH_REQUIRE_QEMU=1` (as `make test` sets), where they fail.

#![allow(dead_code)] // each test file uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");
pub const BOOT: Duration = Duration::from_secs(120);

pub fn qemu_present() -> bool {
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

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds a small image with the real static PID 1 into a fresh directory.
pub fn image(name: &str) -> PathBuf {
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
pub fn spawn_watched(command: &mut Command) -> (Child, Receiver<String>) {
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

pub fn wait_line(rx: &Receiver<String>, needle: &str, limit: Duration, seen: &mut Vec<String>) {
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

/// The pids of `pid`'s children.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The QEMU that `berth` (pid) started, waited for up to 10 s.
pub fn qemu_of(berth: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(&pid) = children(berth).first() {
            return pid;
        }
        assert!(Instant::now() < deadline, "berth {berth} started no QEMU");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is alive: it exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// How long `pid` stays alive, up to `limit`; `None` if it still is.
pub fn time_to_death(pid: u32, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !alive(pid) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A TCP port free on every address now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("0.0.0.0", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something listens on `port` (QEMU's forward).
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// Waits until QEMU listens on `port`.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !listening(port) {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `port` can be bound again (nothing holds it).
pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}
