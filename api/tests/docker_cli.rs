//! The API server against a stand-in PID 1, driven by the real docker CLI and by raw
//! requests. The docker CLI is required under `make test` (BERTH_REQUIRE_DOCKER_CLI=1).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use berth_api::images::Images;
use berth_api::{Answer, Backend, Limits, Listen, Listener, Policy, Server};
use berth_proto::api::{
    ApiRequest, ApiResponse, ContainerState, ContainerView, Failure, FailureKind, PortView,
    SystemInfo,
};

/// A PID 1 stand-in with three containers: one running, one exited, one created.
struct Fake {
    containers: std::sync::Mutex<Vec<ContainerView>>,
}

fn view(n: u8, name: &str, state: ContainerState, origin: &str) -> ContainerView {
    ContainerView {
        id: format!("{n:x}").repeat(64),
        name: name.to_owned(),
        image: "busybox:latest".to_owned(),
        image_id: None,
        command: vec!["sleep".to_owned(), "1000".to_owned()],
        labels: BTreeMap::from([("org.berth.origin".to_owned(), origin.to_owned())]),
        state,
        created: 1_700_000_000 + i64::from(n),
        started_at: Some("2023-11-14T22:13:20Z".to_owned()),
        finished_at: (state == ContainerState::Exited).then(|| "2023-11-14T22:13:25Z".to_owned()),
        exit_code: (state == ContainerState::Exited).then_some(3),
        oom_killed: false,
        pid: (state == ContainerState::Running).then_some(42),
        restart_count: 0,
        health: None,
        ports: vec![PortView {
            private_port: 80,
            protocol: "tcp".to_owned(),
            host_ip: Some("0.0.0.0".to_owned()),
            host_port: Some(8080),
        }],
        network_mode: "bridge".to_owned(),
        ip_address: Some("10.88.0.2".to_owned()),
        details: Default::default(),
    }
}

/// Which control request the stand-in is answering.
enum Kind {
    Stop,
    Kill,
    Other,
}

impl Backend for Fake {
    fn call(&self, request: ApiRequest) -> Answer<'_> {
        let request_kind = match &request {
            ApiRequest::StopContainer { .. } => Kind::Stop,
            ApiRequest::KillContainer { .. } => Kind::Kill,
            _ => Kind::Other,
        };
        let answer = match request {
            ApiRequest::SystemInfo => ApiResponse::SystemInfo(SystemInfo {
                hostname: "berth-test".to_owned(),
                kernel_version: "6.1.0-test".to_owned(),
                ncpu: 7,
                mem_total_bytes: 1 << 30,
                images: 2,
                cgroup_version: 2,
                state_in_ram: true,
                berth_version: "0.1.0".to_owned(),
            }),
            ApiRequest::ListContainers => {
                ApiResponse::Containers(self.containers.lock().unwrap().clone())
            }
            ApiRequest::StartContainer { reference }
            | ApiRequest::StopContainer { reference, .. }
            | ApiRequest::RestartContainer { reference, .. }
            | ApiRequest::KillContainer { reference, .. } => {
                let stop = matches!(request_kind, Kind::Stop | Kind::Kill);
                let mut all = self.containers.lock().unwrap();
                match all
                    .iter_mut()
                    .find(|c| c.name == reference || c.id.starts_with(&reference))
                {
                    None => ApiResponse::Failed(Failure {
                        kind: FailureKind::NotFound,
                        message: format!("No such container: {reference}"),
                    }),
                    Some(c) if stop && c.state != ContainerState::Running => {
                        if matches!(request_kind, Kind::Kill) {
                            ApiResponse::Failed(Failure {
                                kind: FailureKind::Conflict,
                                message: format!("Container {reference} is not running"),
                            })
                        } else {
                            ApiResponse::Failed(Failure {
                                kind: FailureKind::NotModified,
                                message: "container already stopped".into(),
                            })
                        }
                    }
                    Some(c) => {
                        c.state = match request_kind {
                            Kind::Stop => ContainerState::Exited,
                            // A signal may or may not end it: the stand-in keeps it running.
                            Kind::Kill => c.state,
                            Kind::Other => ContainerState::Running,
                        };
                        ApiResponse::Done
                    }
                }
            }
            ApiRequest::CreateContainer { name, spec } => {
                let mut all = self.containers.lock().unwrap();
                let n = all.len() as u8 + 1;
                let name = name.unwrap_or_else(|| format!("made{n}"));
                let name = name.trim_start_matches('/').to_owned();
                if all.iter().any(|c| c.name == name) {
                    ApiResponse::Failed(Failure {
                        kind: FailureKind::Conflict,
                        message: format!(
                            "Conflict. The container name \"/{name}\" is already in use"
                        ),
                    })
                } else {
                    let mut c = view(n, &name, ContainerState::Created, "api");
                    c.image = spec.image.clone();
                    c.labels.extend(spec.labels.clone());
                    c.command = spec.command.clone().unwrap_or_default();
                    c.ports = spec
                        .ports
                        .iter()
                        .map(|p| PortView {
                            private_port: p.container_port,
                            protocol: p.protocol.clone(),
                            host_ip: p.host_ip.clone(),
                            host_port: p.host_port,
                        })
                        .collect();
                    let id = c.id.clone();
                    all.push(c);
                    ApiResponse::Created {
                        id,
                        warnings: Vec::new(),
                    }
                }
            }
            ApiRequest::InspectContainer { reference } => {
                let all = self.containers.lock().unwrap();
                match all
                    .iter()
                    .find(|c| c.name == reference || c.id.starts_with(&reference))
                {
                    Some(c) => ApiResponse::Container(Box::new(c.clone())),
                    None => ApiResponse::Failed(Failure {
                        kind: FailureKind::NotFound,
                        message: format!("No such container: {reference}"),
                    }),
                }
            }
        };
        Box::pin(async move { Ok(answer) })
    }
}

/// Starts the server on a unix socket in a new temporary directory, with an image store
/// at `store/` beside it.
fn start(limits: Limits) -> (tempfile::TempDir, PathBuf) {
    let (dir, sock, _) = start_server(limits);
    (dir, sock)
}

/// [`start`], with the server itself, to publish PID 1's events from the test.
fn start_server(limits: Limits) -> (tempfile::TempDir, PathBuf, Arc<Server>) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let store = dir.path().join("store");
    let backend = Arc::new(Fake {
        containers: std::sync::Mutex::new(vec![
            {
                let mut web = view(1, "web", ContainerState::Running, "host.toml");
                web.details.log_path = dir.path().join("web.log").display().to_string();
                web
            },
            view(2, "job", ContainerState::Exited, "api"),
            view(3, "fresh", ContainerState::Created, "api"),
        ]),
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let path = sock.clone();
    let server = Server::new(backend, limits, Policy::default(), Images::new(store));
    let serving = server.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = Listener::bind(&Listen::Unix(path), 0o660).await.unwrap();
            ready_tx.send(()).unwrap();
            serving.serve(listener).await;
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (dir, sock, server)
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
            "the docker CLI is required (BERTH_REQUIRE_DOCKER_CLI) but not on PATH: `make deps` installs it"
        );
        eprintln!("skipping: no docker CLI on PATH");
    }
    found
}

fn docker(sock: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(docker_cli().unwrap())
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("DOCKER_CONFIG", sock.parent().unwrap())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn docker_ok(sock: &Path, args: &[&str]) -> String {
    let (ok, out, err) = docker(sock, args);
    assert!(ok, "docker {args:?} failed: {err}");
    out
}

/// One raw HTTP/1.1 exchange; returns the whole response text.
fn raw(sock: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_docker_cli_reads_version_info_and_ps() {
    if docker_cli().is_none() {
        return;
    }
    let (_dir, sock) = start(Limits::default());
    let version = docker_ok(
        &sock,
        &[
            "version",
            "--format",
            "{{.Server.APIVersion}} {{.Server.Version}} {{.Server.Os}}",
        ],
    );
    assert_eq!(version.trim(), "1.47 0.1.0 linux");
    let info = docker_ok(
        &sock,
        &[
            "info",
            "--format",
            "{{.NCPU}} {{.ContainersRunning}} {{.ContainersStopped}} {{.Name}}",
        ],
    );
    assert_eq!(info.trim(), "7 1 2 berth-test");

    let running = docker_ok(
        &sock,
        &["ps", "--format", "{{.Names}} {{.Ports}} {{.Status}}"],
    );
    let lines: Vec<&str> = running.lines().collect();
    assert_eq!(lines.len(), 1, "{running}");
    assert!(
        lines[0].starts_with("web 0.0.0.0:8080->80/tcp Up "),
        "{running}"
    );

    let all = docker_ok(&sock, &["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(
        all.lines().collect::<Vec<_>>(),
        ["fresh", "job", "web"],
        "newest first"
    );
    let from_api = docker_ok(
        &sock,
        &[
            "ps",
            "-a",
            "--filter",
            "label=org.berth.origin=api",
            "--format",
            "{{.Names}}",
        ],
    );
    assert_eq!(from_api.lines().collect::<Vec<_>>(), ["fresh", "job"]);
    let exited = docker_ok(&sock, &["ps", "-aq", "--filter", "status=exited"]);
    assert_eq!(exited.trim(), "2".repeat(12));
    let by_exit = docker_ok(
        &sock,
        &[
            "ps",
            "-a",
            "--filter",
            "exited=3",
            "--format",
            "{{.Status}}",
        ],
    );
    assert!(by_exit.trim().starts_with("Exited (3) "), "{by_exit}");

    // start, stop, restart and kill, with Docker's 304 and 409.
    assert_eq!(docker_ok(&sock, &["stop", "-t", "3", "web"]).trim(), "web");
    assert_eq!(
        docker_ok(&sock, &["stop", "web"]).trim(),
        "web",
        "a 304 is success"
    );
    let (ok, _, err) = docker(&sock, &["kill", "web"]);
    assert!(!ok && err.contains("Container web is not running"), "{err}");
    assert_eq!(docker_ok(&sock, &["start", "web"]).trim(), "web");
    assert_eq!(docker_ok(&sock, &["restart", "web"]).trim(), "web");
    assert_eq!(
        docker_ok(&sock, &["kill", "-s", "HUP", "web"]).trim(),
        "web"
    );
    let (ok, _, err) = docker(&sock, &["start", "nope"]);
    assert!(!ok && err.contains("No such container: nope"), "{err}");

    // inspect, in the shape clients index into.
    let inspect = docker_ok(
        &sock,
        &["container", "inspect", "web", "--format", "{{.Name}} {{.State.Status}} {{.State.Running}} {{.Path}} {{json .Args}} {{json .NetworkSettings.Ports}} {{.HostConfig.LogConfig.Type}}"],
    );
    assert_eq!(
        inspect.trim(),
        r#"/web running true sleep ["1000"] {"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]} json-file"#
    );
    let exited = docker_ok(
        &sock,
        &[
            "container",
            "inspect",
            "job",
            "--format",
            "{{.State.ExitCode}} {{.State.FinishedAt}}",
        ],
    );
    assert_eq!(exited.trim(), "3 2023-11-14T22:13:25Z");
    let (ok, _, err) = docker(&sock, &["container", "inspect", "nope"]);
    assert!(!ok);
    assert!(err.contains("No such container: nope"), "{err}");

    // Filters berth does not know are refused by name, as dockerd refuses them.
    let (ok, _, err) = docker(&sock, &["ps", "--filter", "bogus=1"]);
    assert!(!ok);
    assert!(err.contains("invalid filter 'bogus'"), "{err}");
    // An endpoint that is not there yet says so, with the path.
    let (ok, _, err) = docker(&sock, &["pull", "busybox"]);
    assert!(!ok);
    assert!(
        err.contains("cannot pull images from a registry yet"),
        "{err}"
    );
}

fn log_line(text: &str, time: &str) -> String {
    format!("{{\"log\":\"{text}\\n\",\"stream\":\"stdout\",\"time\":\"{time}\"}}\n")
}

#[test]
fn the_docker_cli_reads_logs() {
    if docker_cli().is_none() {
        return;
    }
    let (dir, sock) = start(Limits::default());
    let log = dir.path().join("web.log");
    let mut text = log_line("first", "2024-05-01T12:00:00Z");
    text.push_str(
        "{\"log\":\"started (pid 7)\\n\",\"stream\":\"berth\",\"time\":\"2024-05-01T12:00:00Z\"}\n",
    );
    text.push_str(&log_line("second", "2024-05-01T12:00:01Z"));
    std::fs::write(&log, text).unwrap();
    assert_eq!(docker_ok(&sock, &["logs", "web"]), "first\nsecond\n");
    assert_eq!(
        docker_ok(&sock, &["logs", "--tail", "1", "web"]),
        "second\n"
    );
    assert_eq!(
        docker_ok(
            &sock,
            &["logs", "-t", "--since", "2024-05-01T12:00:01Z", "web"]
        ),
        "2024-05-01T12:00:01Z second\n"
    );
    // Follow: what is appended arrives, until `until`.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3;
    let follow = Command::new(docker_cli().unwrap())
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("DOCKER_CONFIG", dir.path())
        .args([
            "logs",
            "-f",
            "--tail",
            "0",
            "--until",
            &until.to_string(),
            "web",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(log_line("third", "2024-05-01T12:00:02Z").as_bytes())
        .unwrap();
    let out = follow.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "third\n");
    let (ok, _, err) = docker(&sock, &["logs", "nope"]);
    assert!(!ok && err.contains("No such container: nope"), "{err}");
}

#[test]
fn docker_wait_answers_when_the_container_exits() {
    if docker_cli().is_none() {
        return;
    }
    let (dir, sock, server) = start_server(Limits::default());
    // Not running: at once, with its exit code.
    assert_eq!(docker_ok(&sock, &["wait", "job"]).trim(), "3");
    // Running: when PID 1 reports its death.
    let waiting = Command::new(docker_cli().unwrap())
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("DOCKER_CONFIG", dir.path())
        .args(["wait", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    server.events().publish(berth_api::events::Event::from_pid1(
        &berth_proto::api::ApiEvent::Container {
            id: "1".repeat(64),
            name: "web".into(),
            image: "busybox".into(),
            action: "die".into(),
            time_nano: 1,
            exit_code: Some(7),
        },
    ));
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7");
    let (ok, _, err) = docker(&sock, &["wait", "nope"]);
    assert!(!ok && err.contains("No such container: nope"), "{err}");
}

#[test]
fn the_docker_cli_creates_containers() {
    if docker_cli().is_none() {
        return;
    }
    let (_dir, sock) = start(Limits::default());
    let id = docker_ok(
        &sock,
        &[
            "create",
            "--name",
            "made",
            "-p",
            "127.0.0.1::80",
            "--label",
            "team=a",
            "busybox",
            "httpd",
            "-f",
        ],
    );
    assert_eq!(id.trim(), "4".repeat(64));
    let row = docker_ok(
        &sock,
        &[
            "ps",
            "-a",
            "--filter",
            "label=team=a",
            "--format",
            "{{.Names}} {{.Image}} {{.Command}} {{.Status}}",
        ],
    );
    assert_eq!(row.trim(), "made busybox \"httpd -f\" Created");
    // A taken name is a 409 with Docker's message.
    let (ok, _, err) = docker(&sock, &["create", "--name", "made", "busybox"]);
    assert!(!ok);
    assert!(err.contains("is already in use"), "{err}");
    // What the API server refuses names the field.
    let (ok, _, err) = docker(&sock, &["create", "--privileged", "busybox"]);
    assert!(!ok);
    assert!(err.contains("HostConfig.Privileged"), "{err}");
    let (ok, _, err) = docker(&sock, &["create", "--network", "mynet", "busybox"]);
    assert!(!ok);
    assert!(err.contains("HostConfig.NetworkMode"), "{err}");
}

/// An OCI layout tar holding one image named `name`, with a file `/hello`.
fn image_tar(dir: &Path, name: &str) -> PathBuf {
    use berth_imagefs::build::{write_oci_layout, Entry};
    let layout = dir.join("layout");
    let entries = [Entry::File {
        path: "hello".into(),
        mode: 0o644,
        data: b"hello from a loaded image\n".to_vec(),
    }];
    let run = berth_imagefs::oci::RunConfig {
        cmd: Some(vec!["/bin/sh".into()]),
        ..Default::default()
    };
    write_oci_layout(&layout, &entries, run, name).unwrap();
    let tar = dir.join("image.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    tar
}

#[test]
fn the_docker_cli_loads_lists_tags_and_removes_images() {
    if docker_cli().is_none() {
        return;
    }
    let (dir, sock) = start(Limits::default());
    let tar = image_tar(dir.path(), "demo:1");
    let loaded = docker_ok(&sock, &["load", "-i", tar.to_str().unwrap()]);
    assert_eq!(loaded.trim(), "Loaded image: demo:1");

    let listed = docker_ok(
        &sock,
        &["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"],
    );
    let (tag, id) = listed.trim().split_once(' ').unwrap();
    assert_eq!(tag, "demo:1");
    assert_eq!(id.len(), 12, "{listed}");
    let cmd = docker_ok(
        &sock,
        &[
            "image",
            "inspect",
            "demo:1",
            "--format",
            "{{json .Config.Cmd}} {{.Os}}/{{.Architecture}} {{len .RootFS.Layers}}",
        ],
    );
    assert_eq!(cmd.trim(), r#"["/bin/sh"] linux/amd64 1"#);
    // By id prefix too, and Docker's normalized names.
    docker_ok(&sock, &["image", "inspect", id]);
    docker_ok(&sock, &["image", "inspect", "docker.io/library/demo:1"]);

    docker_ok(&sock, &["tag", "demo:1", "other/demo:2"]);
    let both = docker_ok(&sock, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = both.lines().collect();
    names.sort();
    assert_eq!(names, ["demo:1", "other/demo:2"]);
    let filtered = docker_ok(
        &sock,
        &[
            "images",
            "--filter",
            "reference=other/*",
            "--format",
            "{{.Repository}}",
        ],
    );
    assert_eq!(filtered.trim(), "other/demo");

    // Saved, the image loads again (here and in skopeo, when it is installed).
    let saved = dir.path().join("saved.tar");
    docker_ok(&sock, &["save", "-o", saved.to_str().unwrap(), "demo:1"]);
    let listing = Command::new("tar").arg("-tf").arg(&saved).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for member in ["oci-layout", "index.json", "manifest.json", "blobs/sha256/"] {
        assert!(
            listing.lines().any(|l| l == member),
            "{member} missing: {listing}"
        );
    }
    let again = std::fs::read(&saved).unwrap();
    docker_ok(&sock, &["save", "-o", saved.to_str().unwrap(), "demo:1"]);
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        again,
        "save is not reproducible"
    );
    if let Ok(out) = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("docker-archive:{}", saved.display()))
        .output()
    {
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (_dir2, sock2) = start(Limits::default());
    assert_eq!(
        docker_ok(&sock2, &["load", "-i", saved.to_str().unwrap()]).trim(),
        "Loaded image: demo:1"
    );
    let nowhere = dir.path().join("nothing.tar");
    let (ok, _, err) = docker(
        &sock,
        &["save", "-o", nowhere.to_str().unwrap(), "nothing:here"],
    );
    assert!(!ok);
    assert!(err.contains("No such image: nothing:here"), "{err}");

    // Removing one name untags it; the image stays for the other.
    let removed = docker_ok(&sock, &["rmi", "demo:1"]);
    assert_eq!(removed.trim(), "Untagged: demo:1");
    let removed = docker_ok(&sock, &["rmi", "other/demo:2"]);
    assert!(
        removed.contains("Untagged: other/demo:2") && removed.contains("Deleted: sha256:"),
        "{removed}"
    );
    assert_eq!(docker_ok(&sock, &["images", "-q"]).trim(), "");

    let (ok, _, err) = docker(&sock, &["image", "inspect", "demo:1"]);
    assert!(!ok);
    assert!(err.contains("No such image: demo:1"), "{err}");

    // All of it is in the event log, in order, and the filters apply.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let events = docker_ok(
        &sock,
        &[
            "events",
            "--since",
            "0",
            "--until",
            &until.to_string(),
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        ],
    );
    let lines: Vec<&str> = events.lines().collect();
    assert_eq!(lines.first(), Some(&"image load demo:1"), "{events}");
    assert!(lines.contains(&"image tag other/demo:2"), "{events}");
    assert!(lines.contains(&"image untag demo:1"), "{events}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("image delete sha256:")),
        "{events}"
    );
    let untags = docker_ok(
        &sock,
        &[
            "events",
            "--since",
            "0",
            "--until",
            &until.to_string(),
            "--filter",
            "event=untag",
            "--format",
            "{{.Action}}",
        ],
    );
    assert_eq!(untags.lines().count(), 2, "{untags}");
    // A random file is refused with the import's reason, and nothing is stored.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let (ok, _, err) = docker(&sock, &["load", "-i", junk.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("loading the archive"), "{err}");
    assert_eq!(docker_ok(&sock, &["images", "-q"]).trim(), "");
    assert_eq!(
        std::fs::read_dir(dir.path().join("store/uploads"))
            .unwrap()
            .count(),
        0,
        "the upload was not removed"
    );
}

#[test]
fn events_stream_live_with_headers_first() {
    let (dir, sock) = start(Limits::default());
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(
        b"GET /events?filters=%7B%22type%22%3A%5B%22image%22%5D%7D HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "headers before any event: {head}"
    );
    // An image loaded now reaches the open stream.
    let tar = image_tar(dir.path(), "live:1");
    let body = std::fs::read(&tar).unwrap();
    let mut load = format!(
        "POST /images/load HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    load.extend_from_slice(&body);
    assert!(raw(&sock, &load).starts_with("HTTP/1.1 200"));
    let mut got = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !got.contains("\"Action\":\"load\"") && std::time::Instant::now() < deadline {
        let n = s.read(&mut buf).unwrap_or(0);
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("\"name\":\"live:1\""), "{got}");
}

#[test]
fn raw_requests_get_dockers_answers() {
    let (_dir, sock) = start(Limits::default());
    let ping = raw(
        &sock,
        b"HEAD /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(ping.starts_with("HTTP/1.1 200"), "{ping}");
    for header in ["api-version: 1.47", "ostype: linux", "server: berth/"] {
        assert!(
            ping.to_ascii_lowercase().contains(header),
            "{header}: {ping}"
        );
    }
    let get = raw(
        &sock,
        b"GET /v1.44/_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(get.ends_with("\r\n\r\nOK"), "{get}");

    let missing = raw(
        &sock,
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(
        missing.contains(r#"{"message":"page not found"}"#),
        "{missing}"
    );
    let too_new = raw(
        &sock,
        b"GET /v1.99/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(too_new.starts_with("HTTP/1.1 400"), "{too_new}");
    assert!(
        too_new.contains("Maximum supported API version is 1.47"),
        "{too_new}"
    );
    let bad_filter = raw(
        &sock,
        b"GET /containers/json?filters=%7Bnope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(bad_filter.starts_with("HTTP/1.1 400"), "{bad_filter}");
    assert!(bad_filter.contains("invalid filter"), "{bad_filter}");
}

#[test]
fn oversized_and_slow_requests_are_cut_off_and_others_still_served() {
    let limits = Limits {
        header_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (_dir, sock) = start(limits);
    // A request line of 1 MB.
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    long.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    let answer = raw(&sock, &long);
    assert!(
        answer.is_empty()
            || answer.starts_with("HTTP/1.1 431")
            || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    // A client that sends half a header and stalls is dropped after the header timeout.
    let mut slow = UnixStream::connect(&sock).unwrap();
    slow.write_all(b"GET /_ping HTTP/1.1\r\nHo").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the stalled client was kept"
    );
    // Meanwhile and after, others are served.
    let ok = raw(
        &sock,
        b"GET /containers/json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[test]
fn past_the_connection_cap_new_clients_are_told_so() {
    let limits = Limits {
        max_connections: 4,
        ..Limits::default()
    };
    let (_dir, sock) = start(limits);
    let idle: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let refused = raw(&sock, b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many connections"), "{refused}");
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    let ok = raw(
        &sock,
        b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

/// A client test's program, when its language and library are installed; under
/// `make test` (BERTH_REQUIRE_CLIENTS=1) they must be.
fn client(program: &str, probe: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("BERTH_REQUIRE_CLIENTS").is_none(),
            "{program} {probe:?} failed: `make deps` installs the client libraries"
        );
        eprintln!("skipping: {program} {probe:?} failed");
    }
    ok
}

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn write_web_log(dir: &Path) {
    std::fs::write(
        dir.join("web.log"),
        log_line("first", "2024-05-01T12:00:00Z"),
    )
    .unwrap();
}

#[test]
fn docker_py_drives_the_api() {
    if !client("python3", &["-c", "import docker"]) {
        return;
    }
    let (dir, sock) = start(Limits::default());
    write_web_log(dir.path());
    let out = Command::new("python3")
        .arg(clients_dir().join("docker_py.py"))
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("info berth-test"), "{stdout}");
}

#[test]
fn dockerode_drives_the_api() {
    let modules = clients_dir().join("node_modules/dockerode");
    if !client(
        "node",
        &[
            "-e",
            &format!("require({:?})", modules.display().to_string()),
        ],
    ) {
        return;
    }
    let (dir, sock) = start(Limits::default());
    write_web_log(dir.path());
    let out = Command::new("node")
        .arg(clients_dir().join("dockerode.js"))
        .env("DOCKER_SOCKET", &sock)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("not found"), "{stdout}");
}
