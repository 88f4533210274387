//! The Docker Engine API: the `[api]` config, the API server child (`berth-helper api`),
//! and PID 1's answers to its typed requests.
//!
//! The child does all HTTP and JSON work (`berth_api`); PID 1 answers
//! [`ApiRequest`]s from what it holds ([`ContainerHost`], implemented by the supervisor)
//! without ever blocking, and sends events as containers change. If the child dies or
//! misbehaves, [`HelperChild`] restarts it; containers are not touched.

use std::os::fd::BorrowedFd;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_proto::api::{
    ApiEvent, ApiRequest, ApiResponse, ContainerView, CreateSpec, Failure, FailureKind, SystemInfo,
};
use berth_proto::{Message, RequestId};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde::Deserialize;

use crate::helper_child::{ChildCommand, HelperChild};

/// The API server's listeners when `host.toml` has no `[api]` table: the unix socket
/// only, at berth's path and at the path Docker's clients (and testcontainers' reaper)
/// look first.
pub const DEFAULT_LISTEN: &[&str] = &[
    "unix:///run/berth/docker.sock",
    "unix:///var/run/docker.sock",
];

/// `[api]` of `host.toml`, checked as it is read ([`ApiConfig::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "ApiTable")]
pub struct ApiConfig {
    /// Where to listen: `unix:///path` and `tcp://address:port`.
    pub listen: Vec<String>,
    /// Allow a TCP listener without TLS. Whoever reaches it controls the host as root.
    pub insecure_tcp: bool,
    /// Allow `Privileged` containers.
    pub allow_privileged: bool,
}

/// `[api]` as written, before [`ApiConfig::validate`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiTable {
    #[serde(default = "default_listen")]
    listen: Vec<String>,
    #[serde(default)]
    insecure_tcp: bool,
    #[serde(default)]
    allow_privileged: bool,
}

impl TryFrom<ApiTable> for ApiConfig {
    type Error = String;

    fn try_from(t: ApiTable) -> Result<ApiConfig, String> {
        let config = ApiConfig {
            listen: t.listen,
            insecure_tcp: t.insecure_tcp,
            allow_privileged: t.allow_privileged,
        };
        config.validate()?;
        Ok(config)
    }
}

fn default_listen() -> Vec<String> {
    DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect()
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            insecure_tcp: false,
            allow_privileged: false,
        }
    }
}

impl ApiConfig {
    /// The checks a config must pass; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (i, l) in self.listen.iter().enumerate() {
            let parsed =
                berth_api::helper::parse_listen(l).map_err(|e| format!("api.listen[{i}]: {e}"))?;
            if matches!(parsed, berth_api::Listen::Tcp(_)) && !self.insecure_tcp {
                return Err(format!(
                    "api.listen[{i}]: {l:?} is plain TCP, and whoever reaches it controls this host as root; set insecure_tcp = true in [api] to allow it"
                ));
            }
        }
        Ok(())
    }

    /// The API server's command line.
    pub fn helper_args(&self) -> Vec<String> {
        let mut args = vec![berth_api::helper::MODE.to_owned()];
        for l in &self.listen {
            args.push("--listen".to_owned());
            args.push(l.clone());
        }
        if self.allow_privileged {
            args.push("--allow-privileged".to_owned());
        }
        args
    }

    /// Whether a listener is plain TCP: PID 1 warns about it on the console.
    pub fn tcp_listeners(&self) -> Vec<&str> {
        self.listen
            .iter()
            .filter(|l| l.starts_with("tcp://"))
            .map(String::as_str)
            .collect()
    }
}

/// A request about a container's run that PID 1 may answer only later (a stop is done
/// when the container has exited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Start,
    Stop { timeout: Option<Duration> },
    Restart { timeout: Option<Duration> },
    Kill { signal: Option<String> },
}

/// What PID 1 holds that the API asks about. The supervisor implements it; tests use a
/// stand-in.
pub trait ContainerHost {
    fn system_info(&self) -> SystemInfo;
    fn containers(&self) -> Vec<ContainerView>;
    fn inspect(&self, reference: &str) -> Result<ContainerView, Failure>;
    fn create(
        &mut self,
        name: Option<&str>,
        spec: CreateSpec,
    ) -> Result<(String, Vec<String>), Failure>;
    /// Starts, stops, restarts or signals a container. `Ok(true)`: done; `Ok(false)`:
    /// under way, and the answer to request `id` comes from [`ContainerHost::take_replies`]
    /// when it is.
    fn control(
        &mut self,
        reference: &str,
        control: Control,
        id: RequestId,
    ) -> Result<bool, Failure>;
    /// The answers to requests [`ContainerHost::control`] left under way, now done.
    fn take_replies(&mut self) -> Vec<(RequestId, ApiResponse)>;
}

/// PID 1's answer to request `id`; `None` when it comes later (see
/// [`ContainerHost::control`]).
pub fn answer(
    host: &mut dyn ContainerHost,
    id: RequestId,
    request: ApiRequest,
) -> Option<ApiResponse> {
    let secs = |t: Option<u32>| t.map(|s| Duration::from_secs(u64::from(s)));
    let (reference, control) = match request {
        ApiRequest::SystemInfo => return Some(ApiResponse::SystemInfo(host.system_info())),
        ApiRequest::ListContainers => return Some(ApiResponse::Containers(host.containers())),
        ApiRequest::InspectContainer { reference } => {
            return Some(match host.inspect(&reference) {
                Ok(view) => ApiResponse::Container(Box::new(view)),
                Err(f) => ApiResponse::Failed(f),
            })
        }
        ApiRequest::CreateContainer { name, spec } => {
            return Some(match host.create(name.as_deref(), *spec) {
                Ok((id, warnings)) => ApiResponse::Created { id, warnings },
                Err(f) => ApiResponse::Failed(f),
            })
        }
        ApiRequest::StartContainer { reference } => (reference, Control::Start),
        ApiRequest::StopContainer {
            reference,
            timeout_secs,
        } => (
            reference,
            Control::Stop {
                timeout: secs(timeout_secs),
            },
        ),
        ApiRequest::RestartContainer {
            reference,
            timeout_secs,
        } => (
            reference,
            Control::Restart {
                timeout: secs(timeout_secs),
            },
        ),
        ApiRequest::KillContainer { reference, signal } => (reference, Control::Kill { signal }),
    };
    match host.control(&reference, control, id) {
        Ok(true) => Some(ApiResponse::Done),
        Ok(false) => None,
        Err(f) => Some(ApiResponse::Failed(f)),
    }
}

/// A failure of class `kind`.
pub fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

type ApiChild = HelperChild<ApiRequest, ApiResponse, ApiEvent>;

/// The API server child.
pub struct ApiServer {
    child: ApiChild,
}

impl ApiServer {
    /// Starts `berth-helper api` for `config` (already validated).
    pub fn start(config: &ApiConfig, now: Instant) -> ApiServer {
        ApiServer::start_with(config, crate::helper::HELPER_PATH.into(), now)
    }

    /// As [`ApiServer::start`], with the helper binary at `helper` (tests run the build's).
    pub fn start_with(config: &ApiConfig, helper: std::path::PathBuf, now: Instant) -> ApiServer {
        for l in config.tcp_listeners() {
            log::warn!("api: {l} is plain TCP without TLS (insecure_tcp = true): whoever reaches it controls this host as root");
        }
        let args = config.helper_args();
        let command = ChildCommand {
            name: "api server",
            build: Box::new(move || {
                let mut c = Command::new(&helper);
                c.args(&args);
                c
            }),
        };
        ApiServer {
            child: HelperChild::start(command, now),
        }
    }

    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.child.poll_fd()
    }

    /// The API server's pid while it runs.
    pub fn pid(&self) -> Option<Pid> {
        self.child.pid()
    }

    /// Answers every request waiting on the channel.
    pub fn on_readable(&mut self, host: &mut dyn ContainerHost) {
        for (message, _fds) in self.child.receive() {
            match message {
                Message::Request { id, body } => {
                    if let Some(body) = answer(host, id, body) {
                        self.respond(id, body);
                    }
                }
                Message::Response { .. } | Message::Event(_) => {
                    // PID 1 asks the API server nothing and takes no events from it.
                    log::warn!("api server sent a message of the wrong direction: ignored");
                }
            }
        }
    }

    /// Sends the answer to request `id`.
    pub fn respond(&mut self, id: RequestId, body: ApiResponse) {
        if self.child.pid().is_some() {
            self.child.send(&Message::Response { id, body }, &[]);
        }
    }

    /// Tells the API server (and its `/events` clients) what happened.
    pub fn publish(&mut self, event: ApiEvent) {
        if self.child.pid().is_some() {
            self.child.send(&Message::Event(event), &[]);
        }
    }

    pub fn on_exit(&mut self, pid: Pid, status: WaitStatus, now: Instant) -> bool {
        self.child.on_exit(pid, status, now)
    }

    pub fn tick(&mut self, now: Instant) {
        self.child.tick(now)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.child.next_deadline()
    }

    pub fn stop(&mut self) {
        self.child.stop()
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::api::ContainerState;

    use super::*;

    #[derive(Default)]
    struct Host {
        created: Vec<(Option<String>, CreateSpec)>,
        pending: Vec<RequestId>,
    }

    fn view(name: &str) -> ContainerView {
        ContainerView {
            id: "a".repeat(64),
            name: name.to_owned(),
            image: "busybox:latest".to_owned(),
            image_id: None,
            command: Vec::new(),
            labels: Default::default(),
            state: ContainerState::Running,
            created: 0,
            started_at: None,
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            pid: None,
            restart_count: 0,
            health: None,
            ports: Vec::new(),
            network_mode: "bridge".to_owned(),
            ip_address: None,
            details: Default::default(),
        }
    }

    impl ContainerHost for Host {
        fn system_info(&self) -> SystemInfo {
            SystemInfo {
                hostname: "h".into(),
                kernel_version: "k".into(),
                ncpu: 1,
                mem_total_bytes: 1,
                images: 0,
                cgroup_version: 2,
                state_in_ram: true,
                berth_version: "0".into(),
            }
        }
        fn containers(&self) -> Vec<ContainerView> {
            vec![view("web")]
        }
        fn inspect(&self, reference: &str) -> Result<ContainerView, Failure> {
            if reference == "web" {
                Ok(view("web"))
            } else {
                Err(failure(
                    FailureKind::NotFound,
                    format!("No such container: {reference}"),
                ))
            }
        }
        fn create(
            &mut self,
            name: Option<&str>,
            spec: CreateSpec,
        ) -> Result<(String, Vec<String>), Failure> {
            self.created.push((name.map(str::to_owned), spec));
            Ok(("b".repeat(64), Vec::new()))
        }
        fn control(
            &mut self,
            reference: &str,
            control: Control,
            id: RequestId,
        ) -> Result<bool, Failure> {
            match control {
                Control::Kill { .. } => Ok(true),
                _ if reference == "web" => {
                    self.pending.push(id);
                    Ok(false)
                }
                _ => Err(failure(
                    FailureKind::NotFound,
                    format!("No such container: {reference}"),
                )),
            }
        }
        fn take_replies(&mut self) -> Vec<(RequestId, ApiResponse)> {
            std::mem::take(&mut self.pending)
                .into_iter()
                .map(|id| (id, ApiResponse::Done))
                .collect()
        }
    }

    #[test]
    fn requests_are_answered_from_the_host() {
        let mut host = Host::default();
        let id = RequestId(1);
        assert!(matches!(
            answer(&mut host, id, ApiRequest::ListContainers),
            Some(ApiResponse::Containers(c)) if c.len() == 1
        ));
        let nope = ApiRequest::InspectContainer {
            reference: "nope".into(),
        };
        assert!(matches!(
            answer(&mut host, id, nope),
            Some(ApiResponse::Failed(Failure {
                kind: FailureKind::NotFound,
                ..
            }))
        ));
        // A stop is answered when it is done: later.
        let stop = ApiRequest::StopContainer {
            reference: "web".into(),
            timeout_secs: Some(1),
        };
        assert_eq!(answer(&mut host, RequestId(7), stop), None);
        assert_eq!(host.take_replies(), [(RequestId(7), ApiResponse::Done)]);
        let kill = ApiRequest::KillContainer {
            reference: "web".into(),
            signal: None,
        };
        assert_eq!(answer(&mut host, id, kill), Some(ApiResponse::Done));
        let create = ApiRequest::CreateContainer {
            name: Some("x1".into()),
            spec: Box::new(CreateSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
        };
        assert!(matches!(
            answer(&mut host, id, create),
            Some(ApiResponse::Created { .. })
        ));
        assert_eq!(host.created.len(), 1);
    }

    #[test]
    fn plain_tcp_needs_its_own_yes() {
        let mut c = ApiConfig::default();
        assert_eq!(c.validate(), Ok(()));
        c.listen.push("tcp://0.0.0.0:2375".into());
        let e = c.validate().unwrap_err();
        assert!(
            e.starts_with("api.listen[2]: ") && e.contains("insecure_tcp = true"),
            "{e}"
        );
        c.insecure_tcp = true;
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.tcp_listeners(), ["tcp://0.0.0.0:2375"]);
        c.listen.push("unix://relative".into());
        assert!(c.validate().unwrap_err().starts_with("api.listen[3]: "));
        c.listen.pop();
        c.allow_privileged = true;
        assert_eq!(
            c.helper_args(),
            [
                "api",
                "--listen",
                "unix:///run/berth/docker.sock",
                "--listen",
                "unix:///var/run/docker.sock",
                "--listen",
                "tcp://0.0.0.0:2375",
                "--allow-privileged"
            ]
        );
        let parsed: ApiConfig = toml::from_str("listen = [\"unix:///x.sock\"]").unwrap();
        assert_eq!(parsed.listen, ["unix:///x.sock"]);
        assert!(toml::from_str::<ApiConfig>("lisen = []").is_err());
        let e = toml::from_str::<ApiConfig>("listen = [\"tcp://0.0.0.0:2375\"]").unwrap_err();
        assert!(e.to_string().contains("insecure_tcp = true"), "{e}");
    }
}
