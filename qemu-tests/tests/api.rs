//! The Docker Engine API on a booted host: `[api]` on plain TCP (with its console
//! warning), reached from this machine through QEMU's hostfwd by the real docker CLI,
//! which sees the `host.toml` containers as Docker would show them; then the ACPI power
//! button still stops everything in order.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_qemu_tests::{build_busybox_test_image, require_qemu, Qemu};

const BOOT: Duration = Duration::from_secs(120);

const CONFIG: &str = r#"version = 1
hostname = "apihost"

[api]
listen = ["unix:///run/berth/docker.sock", "tcp://0.0.0.0:2375"]
insecure_tcp = true

[[image]]
path = "busybox"
name = "busybox:latest"

[[container]]
name = "sleeper"
image = "busybox:latest"
command = ["sleep", "3600"]
network = "none"

[[container]]
name = "talker"
image = "busybox:latest"
command = ["sh", "-c", "echo hello; sleep 25; echo line 1; sleep 1; echo line 2; exit 0"]
network = "none"

[[container]]
name = "oneshot"
image = "busybox:latest"
command = ["sh", "-c", "exit 3"]
network = "none"
"#;

fn docker_cli() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("docker"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("BERTH_REQUIRE_DOCKER_CLI").is_none(),
            "the docker CLI is required (BERTH_REQUIRE_DOCKER_CLI) but not on PATH"
        );
        eprintln!("skipping: no docker CLI on PATH");
    }
    found
}

fn docker(cli: &PathBuf, host: &str, args: &[&str]) -> (bool, String, String) {
    let config = std::env::temp_dir().join("berth-api-qemu-docker-config");
    let out = Command::new(cli)
        .env("DOCKER_HOST", host)
        .env("DOCKER_CONFIG", &config)
        .args(args)
        .output()
        .expect("run docker");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_docker_cli_drives_a_booted_host() {
    if !require_qemu() {
        return;
    }
    let Some(cli) = docker_cli() else { return };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let image = build_busybox_test_image("api", CONFIG);
    let vm = Qemu::new(image.join("vmlinuz"))
        .initrd(image.join("initramfs.img"))
        .user_net()
        .hostfwd(format!("tcp:127.0.0.1:{port}-:2375"))
        .deadline(Duration::from_secs(300))
        .spawn()
        .expect("start QEMU");
    vm.wait_for("containers started", BOOT)
        .expect("containers started");
    let console = vm.console();
    assert!(
        console.contains("tcp://0.0.0.0:2375 is plain TCP without TLS"),
        "no warning for plain TCP:\n{console}"
    );
    for socket in ["unix:///run/berth/docker.sock", "tcp://0.0.0.0:2375"] {
        assert!(
            console.contains(&format!("api: listening on {socket}")),
            "{socket}:\n{console}"
        );
    }
    let host = format!("tcp://127.0.0.1:{port}");

    // The API answers once its child is up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let version = loop {
        let (ok, out, err) = docker(
            &cli,
            &host,
            &[
                "version",
                "--format",
                "{{.Server.APIVersion}} {{.Server.Os}}",
            ],
        );
        if ok || Instant::now() > deadline {
            assert!(ok, "docker version: {err}\n{}", vm.console());
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(version.trim(), "1.47 linux");

    // Logs, and a follow that ends when the container exits.
    let (ok, logs, err) = docker(&cli, &host, &["logs", "talker"]);
    assert!(ok, "{err}");
    assert!(logs.starts_with("hello\n"), "{logs:?}");
    let followed = Instant::now();
    let (ok, logs, err) = docker(&cli, &host, &["logs", "-f", "talker"]);
    assert!(ok, "{err}");
    assert_eq!(logs, "hello\nline 1\nline 2\n");
    assert!(followed.elapsed() < Duration::from_secs(60));

    let (ok, info, err) = docker(
        &cli,
        &host,
        &[
            "info",
            "--format",
            "{{.Name}} {{.OperatingSystem}} {{.ContainersRunning}} {{.CgroupVersion}}",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(info.trim(), "apihost berth 1 2");

    let (ok, running, err) = docker(
        &cli,
        &host,
        &["ps", "--format", "{{.Names}} {{.Command}} {{.Status}}"],
    );
    assert!(ok, "{err}");
    let running: Vec<&str> = running.lines().collect();
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(
        running[0].starts_with("sleeper \"sleep 3600\" Up "),
        "{running:?}"
    );

    let (ok, all, err) = docker(
        &cli,
        &host,
        &[
            "ps",
            "-a",
            "--filter",
            "label=org.berth.origin=host.toml",
            "--format",
            "{{.Names}} {{.State}} {{.Status}}",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("oneshot exited Exited (3) ")),
        "{all}"
    );
    let (ok, ids, err) = docker(&cli, &host, &["ps", "-aq", "--no-trunc"]);
    assert!(ok, "{err}");
    assert!(
        ids.lines()
            .all(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())),
        "{ids}"
    );

    let (ok, inspect, err) = docker(&cli, &host, &["container", "inspect", "sleeper", "--format", "{{.State.Running}} {{.Config.Hostname}} {{.HostConfig.RestartPolicy.Name}} {{.LogPath}}"]);
    assert!(ok, "{err}");
    assert_eq!(
        inspect.trim(),
        "true sleeper no /var/lib/berth/containers/sleeper/log"
    );
    let (ok, _, err) = docker(&cli, &host, &["container", "inspect", "nothing"]);
    assert!(!ok && err.contains("No such container: nothing"), "{err}");

    // Stop (sleep ignores SIGTERM as a container's PID 1: killed after -t), start,
    // restart and kill, each answered when done.
    let state = |name: &str| {
        let (ok, out, err) = docker(
            &cli,
            &host,
            &[
                "container",
                "inspect",
                name,
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
            ],
        );
        assert!(ok, "{err}");
        out.trim().to_owned()
    };
    let stopped = Instant::now();
    let (ok, out, err) = docker(&cli, &host, &["stop", "-t", "2", "sleeper"]);
    assert!(ok && out.trim() == "sleeper", "{err}");
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "answered before the kill"
    );
    assert_eq!(state("sleeper"), "exited 137");
    let (ok, _, err) = docker(&cli, &host, &["start", "sleeper"]);
    assert!(ok, "{err}");
    assert_eq!(state("sleeper"), "running 137");
    let (ok, _, err) = docker(&cli, &host, &["restart", "-t", "0", "sleeper"]);
    assert!(ok, "{err}");
    assert!(state("sleeper").starts_with("running"));
    let (ok, _, err) = docker(&cli, &host, &["kill", "sleeper"]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while state("sleeper") != "exited 137" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        state("sleeper"),
        "exited 137",
        "not restarted after a kill (restart = no)"
    );
    let (ok, _, err) = docker(&cli, &host, &["kill", "sleeper"]);
    assert!(!ok && err.contains("is not running"), "{err}");
    let until = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let (ok, events, err) = docker(
        &cli,
        &host,
        &[
            "events",
            "--since",
            "0",
            "--until",
            &until,
            "--filter",
            "container=sleeper",
            "--format",
            "{{.Action}}",
        ],
    );
    assert!(ok, "{err}");
    let actions: Vec<&str> = events.lines().collect();
    assert!(
        actions.ends_with(&["die", "start", "die", "start", "die"]),
        "{actions:?}"
    );

    // The ACPI power button still stops everything in order.
    vm.system_powerdown().expect("power button");
    vm.wait_exit(Duration::from_secs(60)).expect("QEMU exits");
    let console = vm.console();
    assert!(console.contains("container sleeper: stopped"), "{console}");
    assert!(console.contains("api server"), "{console}");
    assert!(!console.contains("cannot unmount"), "{console}");
}
