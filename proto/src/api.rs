//! The messages between the API server (`berth-helper api`) and PID 1.
//!
//! The API server parses HTTP and Docker's JSON and sends PID 1 only these typed
//! requests; PID 1 answers with berth's own view of its containers ([`ContainerView`]),
//! which the API server renders in Docker's shapes. Filtering, sorting and formatting
//! happen in the API server: PID 1 does the least that must be PID 1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::message::Message;

/// The API channel's messages, as PID 1 receives them (`ApiRequest`s) and the API server
/// receives them (`ApiResponse`s and `ApiEvent`s).
pub type ApiMessage = Message<ApiRequest, ApiResponse, ApiEvent>;

/// What the API server asks of PID 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiRequest {
    /// Host figures for `/info`.
    SystemInfo,
    /// Every container, running or not (the API server filters).
    ListContainers,
    /// One container, by what a client typed: full id, name, or unique id prefix.
    InspectContainer { reference: String },
    /// Start a container that is not running; answered once its program runs.
    StartContainer { reference: String },
    /// Stop a running container (its stop signal, then a kill after `timeout_secs`, or
    /// its own `stop_timeout`); answered once it has exited. It is not restarted by its
    /// policy after that.
    StopContainer {
        reference: String,
        timeout_secs: Option<u32>,
    },
    /// Stop (if running), then start; answered once it runs again.
    RestartContainer {
        reference: String,
        timeout_secs: Option<u32>,
    },
    /// Send a signal (a name or number; SIGKILL by default) to a running container.
    KillContainer {
        reference: String,
        signal: Option<String>,
    },
    /// Create a container (not started); answered with [`ApiResponse::Created`].
    CreateContainer {
        /// The name the client asked for (`/` allowed in front, as Docker's).
        name: Option<String>,
        spec: Box<CreateSpec>,
    },
}

/// PID 1's answer to one [`ApiRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiResponse {
    SystemInfo(SystemInfo),
    Containers(Vec<ContainerView>),
    Container(Box<ContainerView>),
    /// The new container's id, and warnings for the client.
    Created {
        id: String,
        warnings: Vec<String>,
    },
    /// The request was carried out; there is nothing to say.
    Done,
    /// The request failed; the API server maps `kind` to the HTTP status.
    Failed(Failure),
}

/// Unsolicited news from PID 1 (for `/events` and for waits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiEvent {
    /// A container changed: `action` as Docker names it (`create`, `start`, `die`, `stop`,
    /// `destroy`, `health_status: healthy`, …).
    Container {
        id: String,
        name: String,
        image: String,
        action: String,
        /// Unix time in nanoseconds.
        time_nano: i64,
        /// For `die`: the exit code.
        exit_code: Option<i32>,
    },
}

/// Why a request failed, in the classes Docker's status codes draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// 400: the request is wrong.
    Invalid,
    /// 404: no such container, image, exec or volume.
    NotFound,
    /// 409: a name in use, removing a running container.
    Conflict,
    /// 304: already started, already stopped.
    NotModified,
    /// 500: berth failed.
    Internal,
    /// 501: berth does not do this yet.
    NotImplemented,
}

/// A failed request: its class and the message for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// The host, as `/info` and `/version` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemInfo {
    pub hostname: String,
    pub kernel_version: String,
    pub ncpu: u32,
    pub mem_total_bytes: u64,
    pub images: u32,
    pub cgroup_version: u32,
    /// True while `/var/lib/berth` is in RAM (no state disk).
    pub state_in_ram: bool,
    pub berth_version: String,
}

/// A container as a client asked for it: Docker's create body, translated and checked
/// by the API server into berth's terms. PID 1 checks it again as it builds the
/// container's spec, with the same validators `host.toml` goes through.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSpec {
    pub image: String,
    /// Replaces the image's entrypoint; `Some(vec![])` resets it.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command.
    pub command: Option<Vec<String>>,
    /// `KEY=value`, in order.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    /// `80/tcp`, … (the image's and the request's).
    pub exposed_ports: Vec<String>,
    pub healthcheck: Option<HealthSpec>,
    /// A signal name or number.
    pub stop_signal: Option<String>,
    pub stop_timeout_secs: Option<u32>,
    pub auto_remove: bool,
    pub mounts: Vec<MountSpec>,
    pub ports: Vec<PublishSpec>,
    /// Publish every exposed port on an ephemeral host port.
    pub publish_all: bool,
    /// `bridge`, `host` or `none`.
    pub network: String,
    /// `no`, `always`, `unless-stopped`, `on-failure` or `on-failure:N`.
    pub restart: String,
    pub memory_bytes: Option<u64>,
    /// CPUs in billionths (Docker's `NanoCpus`).
    pub nano_cpus: Option<u64>,
    pub pids_limit: Option<u64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only: bool,
    pub init: bool,
}

/// A health check (`HEALTHCHECK`), durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// The program and its arguments (`CMD-SHELL x` arrives as `/bin/sh -c x`).
    pub command: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

/// What a mount brings into the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named volume (created on first use), or an anonymous one when unnamed.
    Volume,
    /// A fresh tmpfs.
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    pub kind: MountKind,
    /// The host path or volume name; `None` for a tmpfs or an anonymous volume.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
}

/// A published port: `host_ip:host_port -> container_port/protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub host_ip: Option<String>,
    /// `None`: an ephemeral port, chosen by berth.
    pub host_port: Option<u16>,
}

/// A container's lifecycle state, as Docker names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Dead,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        }
    }
}

/// A published port: `host_ip:host_port -> private_port/protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortView {
    pub private_port: u16,
    pub protocol: String,
    pub host_ip: Option<String>,
    pub host_port: Option<u16>,
}

/// What PID 1 knows of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    /// The image as the container names it.
    pub image: String,
    /// The image's manifest digest, when known.
    pub image_id: Option<String>,
    /// Entrypoint and command, joined as Docker shows them.
    pub command: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// Unix seconds.
    pub created: i64,
    /// RFC 3339 times; `None` before the first start / exit.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub pid: Option<u32>,
    pub restart_count: u32,
    /// `starting`, `healthy`, `unhealthy`, or `None` without a health check.
    pub health: Option<String>,
    pub ports: Vec<PortView>,
    /// `bridge`, `host` or `none`.
    pub network_mode: String,
    /// The container's address on the bridge.
    pub ip_address: Option<String>,
    /// What `docker inspect` shows beyond the list.
    pub details: ContainerDetails,
}

/// The configuration half of `docker inspect`: what the container was created with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerDetails {
    /// `KEY=value` set by the container's config (the image's own come on top at start).
    pub env: Vec<String>,
    pub hostname: String,
    pub working_dir: String,
    pub user: String,
    pub tty: bool,
    pub open_stdin: bool,
    /// `no`, `always`, `unless-stopped`, `on-failure` or `on-failure:N`.
    pub restart: String,
    pub memory_bytes: u64,
    pub nano_cpus: u64,
    pub pids_limit: u64,
    pub read_only: bool,
    pub auto_remove: bool,
    pub init: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `SOURCE:TARGET[:ro]` as Docker's `Binds` reads.
    pub binds: Vec<String>,
    pub tmpfs: Vec<String>,
    pub stop_signal: String,
    pub stop_timeout_secs: u32,
    /// The container's log file on the host.
    pub log_path: String,
    /// The error of its last failed start, if any.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::RequestId;

    #[test]
    fn requests_and_failures_on_the_wire() {
        let m: ApiMessage = Message::Request {
            id: RequestId(3),
            body: ApiRequest::InspectContainer {
                reference: "web".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"request":{"id":3,"body":{"inspect_container":{"reference":"web"}}}}"#
        );
        let f: ApiMessage = serde_json::from_str(
            r#"{"response":{"id":3,"body":{"failed":{"kind":"not_found","message":"No such container: web"}}}}"#,
        )
        .unwrap();
        assert!(matches!(
            f,
            Message::Response {
                body: ApiResponse::Failed(Failure {
                    kind: FailureKind::NotFound,
                    ..
                }),
                ..
            }
        ));
        // PID 1 refuses what it does not know.
        assert!(serde_json::from_str::<ApiMessage>(
            r#"{"request":{"id":1,"body":{"format_disk":{}}}}"#
        )
        .is_err());
    }
}
