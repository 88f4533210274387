//! The whole API chain without a VM: the docker CLI talks to the real `berth-helper api`,
//! which asks PID 1's side of the channel ([`berth_init::api::ApiServer`]) over
//! `berth_proto`; a stand-in host answers. Killing the API server brings a new one that
//! answers again. Requires the docker CLI under `make test` (BERTH_REQUIRE_DOCKER_CLI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_init::api::{failure, ApiConfig, ApiServer, ContainerHost, Control};
use berth_proto::api::{
    ApiResponse, ContainerState, ContainerView, CreateSpec, Failure, FailureKind, SystemInfo,
};
use berth_proto::RequestId;
use nix::poll::{PollFd, PollFlags, PollTimeout};

struct Host;

impl ContainerHost for Host {
    fn system_info(&self) -> SystemInfo {
        SystemInfo {
            hostname: "chain".into(),
            kernel_version: "6.1".into(),
            ncpu: 3,
            mem_total_bytes: 1 << 30,
            images: 0,
            cgroup_version: 2,
            state_in_ram: true,
            berth_version: "0.1.0".into(),
        }
    }
    fn containers(&self) -> Vec<ContainerView> {
        vec![ContainerView {
            id: "c".repeat(64),
            name: "from-config".into(),
            image: "busybox:latest".into(),
            image_id: None,
            command: vec!["sleep".into(), "9".into()],
            labels: [("org.berth.origin".to_owned(), "host.toml".to_owned())].into(),
            state: ContainerState::Running,
            created: 1,
            started_at: None,
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            pid: Some(7),
            restart_count: 0,
            health: None,
            ports: Vec::new(),
            network_mode: "bridge".into(),
            ip_address: None,
            details: Default::default(),
        }]
    }
    fn inspect(&self, reference: &str) -> Result<ContainerView, Failure> {
        Err(failure(
            FailureKind::NotFound,
            format!("No such container: {reference}"),
        ))
    }
    fn create(&mut self, _: Option<&str>, _: CreateSpec) -> Result<(String, Vec<String>), Failure> {
        Err(failure(FailureKind::NotImplemented, "not in this test"))
    }
    fn control(&mut self, reference: &str, _: Control, _: RequestId) -> Result<bool, Failure> {
        Err(failure(
            FailureKind::NotFound,
            format!("No such container: {reference}"),
        ))
    }
    fn take_replies(&mut self) -> Vec<(RequestId, ApiResponse)> {
        Vec::new()
    }
}

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

fn docker_ps(docker: &Path, sock: &Path) -> std::process::Output {
    Command::new(docker)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("DOCKER_CONFIG", sock.parent().unwrap())
        .args(["ps", "--format", "{{.Names}} {{.Labels}}"])
        .output()
        .unwrap()
}

/// PID 1's side of the loop, on this thread until `stop`: poll, answer, reap, restart.
fn pid1_loop(mut api: ApiServer, stop: Arc<AtomicBool>, pids: std::sync::mpsc::Sender<i32>) {
    let mut host = Host;
    let mut last_pid = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        api.tick(now);
        if let Some(pid) = api_pid(&api) {
            if last_pid != Some(pid) {
                last_pid = Some(pid);
                let _ = pids.send(pid);
            }
        }
        if let Some(fd) = api.poll_fd() {
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(50u16));
            if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                api.on_readable(&mut host);
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        while let Ok(status) =
            nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        {
            match status.pid() {
                Some(pid) => {
                    api.on_exit(pid, status, Instant::now());
                }
                None => break,
            }
        }
    }
    // At power-off PID 1 SIGTERMs the API server, which inherited PID 1's blocked
    // signals: it must unblock them to die of it.
    let pid = api.pid().expect("the API server runs");
    api.stop();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGTERM, _)) => {
                break
            }
            Ok(nix::sys::wait::WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => panic!("the API server did not die of SIGTERM: {other:?}"),
        }
    }
}

fn api_pid(api: &ApiServer) -> Option<i32> {
    api.pid().map(|p| p.as_raw())
}

#[test]
fn the_docker_cli_reaches_pid1_through_the_helper_and_survives_its_death() {
    let Some(docker) = docker_cli() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let config = ApiConfig {
        listen: vec![format!("unix://{}", sock.display())],
        ..ApiConfig::default()
    };
    config.validate().unwrap();
    let helper = PathBuf::from(env!("CARGO_BIN_EXE_berth-helper"));
    let stop = Arc::new(AtomicBool::new(false));
    let (pids_tx, pids) = std::sync::mpsc::channel();
    let loop_stop = stop.clone();
    let pid1 = std::thread::spawn(move || {
        // As PID 1 does for its signalfd: the children inherit this mask.
        let mut blocked = nix::sys::signal::SigSet::empty();
        blocked.add(nix::sys::signal::Signal::SIGTERM);
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&blocked),
            None,
        )
        .unwrap();
        let api = ApiServer::start_with(&config, helper, Instant::now());
        pid1_loop(api, loop_stop, pids_tx)
    });
    let first = pids.recv_timeout(Duration::from_secs(10)).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = docker_ps(&docker, &sock);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "from-config org.berth.origin=host.toml"
    );

    // Kill the API server: PID 1's side starts a new one, which answers again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let second = pids.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_ne!(first, second);
    let killed_at = Instant::now();
    let again = loop {
        let out = docker_ps(&docker, &sock);
        if out.status.success() || killed_at.elapsed() > Duration::from_secs(10) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    eprintln!(
        "answering again {} ms after the kill",
        killed_at.elapsed().as_millis()
    );
    stop.store(true, Ordering::Relaxed);
    pid1.join().unwrap();
}
