//! Docker's JSON shapes, as berth sends them.
//!
//! Field names are Docker's (PascalCase, with its exceptions spelled out). Every key a Go
//! client reads is always present: a list is `[]` and a map `{}`, never `null` or missing,
//! since clients in other languages index into them without checking.

use std::collections::BTreeMap;

use berth_proto::api::{ContainerView, SystemInfo};
use serde::Serialize;

use crate::route::{API_VERSION, MIN_API_VERSION};

/// `{"message": "..."}`, the body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub message: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub platform: Platform,
    pub components: Vec<Component>,
    pub version: String,
    pub api_version: String,
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    pub git_commit: String,
    pub go_version: String,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
    pub build_time: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Platform {
    pub name: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Component {
    pub name: String,
    pub version: String,
    pub details: BTreeMap<String, String>,
}

impl Version {
    pub fn of(info: &SystemInfo) -> Version {
        let details = BTreeMap::from([
            ("ApiVersion".to_owned(), API_VERSION.to_string()),
            ("MinAPIVersion".to_owned(), MIN_API_VERSION.to_string()),
            ("Os".to_owned(), "linux".to_owned()),
            ("Arch".to_owned(), "amd64".to_owned()),
            ("KernelVersion".to_owned(), info.kernel_version.clone()),
        ]);
        Version {
            platform: Platform {
                name: format!("berth {}", info.berth_version),
            },
            components: vec![Component {
                name: "Engine".to_owned(),
                version: info.berth_version.clone(),
                details,
            }],
            version: info.berth_version.clone(),
            api_version: API_VERSION.to_string(),
            min_api_version: MIN_API_VERSION.to_string(),
            git_commit: String::new(),
            go_version: String::new(),
            os: "linux".to_owned(),
            arch: "amd64".to_owned(),
            kernel_version: info.kernel_version.clone(),
            build_time: String::new(),
        }
    }
}

/// `/info`. Docker's long list, with berth's own figures where it has them and Docker's
/// neutral values (empty, false, zero) where a field means nothing on berth.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    #[serde(rename = "ID")]
    pub id: String,
    pub containers: u32,
    pub containers_running: u32,
    pub containers_paused: u32,
    pub containers_stopped: u32,
    pub images: u32,
    pub driver: String,
    pub driver_status: Vec<[String; 2]>,
    pub plugins: Plugins,
    pub memory_limit: bool,
    pub swap_limit: bool,
    pub cpu_cfs_period: bool,
    pub cpu_cfs_quota: bool,
    #[serde(rename = "CPUShares")]
    pub cpu_shares: bool,
    #[serde(rename = "CPUSet")]
    pub cpu_set: bool,
    pub pids_limit: bool,
    #[serde(rename = "IPv4Forwarding")]
    pub ipv4_forwarding: bool,
    pub debug: bool,
    pub n_fd: u32,
    pub n_goroutines: u32,
    pub system_time: String,
    pub logging_driver: String,
    pub cgroup_driver: String,
    pub cgroup_version: String,
    pub n_events_listener: u32,
    pub kernel_version: String,
    pub operating_system: String,
    #[serde(rename = "OSVersion")]
    pub os_version: String,
    #[serde(rename = "OSType")]
    pub os_type: String,
    pub architecture: String,
    pub index_server_address: String,
    #[serde(rename = "NCPU")]
    pub ncpu: u32,
    pub mem_total: u64,
    pub docker_root_dir: String,
    pub http_proxy: String,
    pub https_proxy: String,
    pub no_proxy: String,
    pub name: String,
    pub labels: Vec<String>,
    pub experimental_build: bool,
    pub server_version: String,
    pub runtimes: BTreeMap<String, Runtime>,
    pub default_runtime: String,
    pub swarm: Swarm,
    pub live_restore_enabled: bool,
    pub isolation: String,
    pub init_binary: String,
    pub security_options: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Plugins {
    pub volume: Vec<String>,
    pub network: Vec<String>,
    pub authorization: Vec<String>,
    pub log: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Runtime {
    pub path: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Swarm {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub node_addr: String,
    pub local_node_state: String,
    pub control_available: bool,
    pub error: String,
    pub remote_managers: Vec<String>,
}

impl Info {
    pub fn of(info: &SystemInfo, containers: &[ContainerView], now_rfc3339: String) -> Info {
        use berth_proto::api::ContainerState as S;
        let count =
            |pred: fn(S) -> bool| containers.iter().filter(|c| pred(c.state)).count() as u32;
        let mut warnings = Vec::new();
        if info.state_in_ram {
            warnings.push(
                "WARNING: berth's state (/var/lib/berth) is in RAM: containers, images and volumes do not survive a reboot".to_owned(),
            );
        }
        Info {
            id: info.hostname.clone(),
            containers: containers.len() as u32,
            containers_running: count(|s| matches!(s, S::Running | S::Restarting)),
            containers_paused: count(|s| s == S::Paused),
            containers_stopped: count(|s| matches!(s, S::Created | S::Exited | S::Dead)),
            images: info.images,
            driver: "overlay2".to_owned(),
            driver_status: vec![[
                "State".to_owned(),
                if info.state_in_ram {
                    "in RAM"
                } else {
                    "on disk"
                }
                .to_owned(),
            ]],
            plugins: Plugins {
                volume: vec!["local".to_owned()],
                network: vec!["bridge".to_owned(), "host".to_owned(), "null".to_owned()],
                authorization: Vec::new(),
                log: vec!["json-file".to_owned()],
            },
            memory_limit: info.cgroup_version == 2,
            swap_limit: false,
            cpu_cfs_period: info.cgroup_version == 2,
            cpu_cfs_quota: info.cgroup_version == 2,
            cpu_shares: false,
            cpu_set: false,
            pids_limit: info.cgroup_version == 2,
            ipv4_forwarding: true,
            debug: false,
            n_fd: 0,
            n_goroutines: 0,
            system_time: now_rfc3339,
            logging_driver: "json-file".to_owned(),
            cgroup_driver: "cgroupfs".to_owned(),
            cgroup_version: info.cgroup_version.to_string(),
            n_events_listener: 0,
            kernel_version: info.kernel_version.clone(),
            operating_system: "berth".to_owned(),
            os_version: info.berth_version.clone(),
            os_type: "linux".to_owned(),
            architecture: "x86_64".to_owned(),
            index_server_address: "https://index.docker.io/v1/".to_owned(),
            ncpu: info.ncpu,
            mem_total: info.mem_total_bytes,
            docker_root_dir: "/var/lib/berth".to_owned(),
            http_proxy: String::new(),
            https_proxy: String::new(),
            no_proxy: String::new(),
            name: info.hostname.clone(),
            labels: Vec::new(),
            experimental_build: false,
            server_version: info.berth_version.clone(),
            runtimes: BTreeMap::from([(
                "berth".to_owned(),
                Runtime {
                    path: "berth-init".to_owned(),
                },
            )]),
            default_runtime: "berth".to_owned(),
            swarm: Swarm {
                node_id: String::new(),
                node_addr: String::new(),
                local_node_state: "inactive".to_owned(),
                control_available: false,
                error: String::new(),
                remote_managers: Vec::new(),
            },
            live_restore_enabled: false,
            isolation: String::new(),
            init_binary: String::new(),
            security_options: vec![
                "name=seccomp,profile=builtin".to_owned(),
                "name=no-new-privileges".to_owned(),
                "name=cgroupns".to_owned(),
            ],
            warnings,
        }
    }
}

/// `201` to `/containers/create`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateResponse {
    pub id: String,
    pub warnings: Vec<String>,
}

/// One row of `/containers/json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub command: String,
    pub created: i64,
    pub ports: Vec<Port>,
    pub labels: BTreeMap<String, String>,
    pub state: String,
    pub status: String,
    pub host_config: SummaryHostConfig,
    pub network_settings: SummaryNetworks,
    pub mounts: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Port {
    #[serde(rename = "IP", skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub private_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u16>,
    #[serde(rename = "Type")]
    pub kind: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryHostConfig {
    pub network_mode: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryNetworks {
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// A container's place on one network, in the fields clients read.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettings {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub gateway: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u8,
    pub mac_address: String,
    pub aliases: Vec<String>,
}

impl ContainerSummary {
    /// `now` (unix seconds) dates the human status: `Up 5 minutes`, `Exited (0) 2 hours ago`.
    pub fn of(c: &ContainerView, now: i64) -> ContainerSummary {
        let networks = match c.network_mode.as_str() {
            "none" => BTreeMap::new(),
            mode => BTreeMap::from([(
                mode.to_owned(),
                EndpointSettings {
                    network_id: mode.to_owned(),
                    endpoint_id: String::new(),
                    gateway: String::new(),
                    ip_address: c.ip_address.clone().unwrap_or_default(),
                    ip_prefix_len: if c.ip_address.is_some() { 16 } else { 0 },
                    mac_address: String::new(),
                    aliases: Vec::new(),
                },
            )]),
        };
        ContainerSummary {
            id: c.id.clone(),
            names: vec![format!("/{}", c.name)],
            image: c.image.clone(),
            image_id: c.image_id.clone().unwrap_or_default(),
            command: c.command.join(" "),
            created: c.created,
            ports: c
                .ports
                .iter()
                .map(|p| Port {
                    ip: p.host_ip.clone(),
                    private_port: p.private_port,
                    public_port: p.host_port,
                    kind: p.protocol.clone(),
                })
                .collect(),
            labels: c.labels.clone(),
            state: c.state.as_str().to_owned(),
            status: human_status(c, now),
            host_config: SummaryHostConfig {
                network_mode: c.network_mode.clone(),
            },
            network_settings: SummaryNetworks { networks },
            mounts: Vec::new(),
        }
    }
}

/// `/containers/{id}/json`: `docker inspect`, in the fields clients read.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub id: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    pub state: InspectState,
    pub image: String,
    pub resolv_conf_path: String,
    pub hostname_path: String,
    pub hosts_path: String,
    pub log_path: String,
    pub name: String,
    pub restart_count: u32,
    pub driver: String,
    pub platform: String,
    pub mount_label: String,
    pub process_label: String,
    pub app_armor_profile: String,
    #[serde(rename = "ExecIDs")]
    pub exec_ids: Option<Vec<String>>,
    pub host_config: InspectHostConfig,
    pub graph_driver: GraphDriverData,
    pub mounts: Vec<serde_json::Value>,
    pub config: InspectConfig,
    pub network_settings: InspectNetworkSettings,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectState {
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: u32,
    pub exit_code: i32,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<InspectHealth>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectHealth {
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<serde_json::Value>,
}

/// A published port as `HostConfig.PortBindings` and `NetworkSettings.Ports` show it.
#[derive(Debug, Serialize, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    pub name: String,
    pub maximum_retry_count: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectHostConfig {
    pub binds: Vec<String>,
    pub network_mode: String,
    pub port_bindings: BTreeMap<String, Vec<PortBinding>>,
    pub restart_policy: RestartPolicy,
    pub auto_remove: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub memory: u64,
    pub nano_cpus: u64,
    pub pids_limit: u64,
    pub readonly_rootfs: bool,
    pub init: bool,
    pub privileged: bool,
    pub tmpfs: BTreeMap<String, String>,
    pub log_config: LogConfig,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriverData {
    pub name: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectConfig {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub image: String,
    pub volumes: BTreeMap<String, serde_json::Value>,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: String,
    pub stop_timeout: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectNetworkSettings {
    pub bridge: String,
    #[serde(rename = "SandboxID")]
    pub sandbox_id: String,
    pub ports: BTreeMap<String, Vec<PortBinding>>,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u8,
    pub gateway: String,
    pub mac_address: String,
    pub networks: BTreeMap<String, EndpointSettings>,
}

impl ContainerInspect {
    pub fn of(c: &ContainerView) -> ContainerInspect {
        use berth_proto::api::ContainerState as S;
        let d = &c.details;
        let mut ports: BTreeMap<String, Vec<PortBinding>> = BTreeMap::new();
        for p in &c.ports {
            ports
                .entry(format!("{}/{}", p.private_port, p.protocol))
                .or_default()
                .push(PortBinding {
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                    host_port: p.host_port.map(|n| n.to_string()).unwrap_or_default(),
                });
        }
        let (restart_name, restart_max) = match d.restart.split_once(':') {
            Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(0)),
            None => (d.restart.clone(), 0),
        };
        let summary = ContainerSummary::of(c, 0);
        let zero_time = "0001-01-01T00:00:00Z".to_owned();
        ContainerInspect {
            id: c.id.clone(),
            created: crate::time::format_rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(c.created.max(0) as u64),
            ),
            path: c.command.first().cloned().unwrap_or_default(),
            args: c.command.iter().skip(1).cloned().collect(),
            state: InspectState {
                status: c.state.as_str().to_owned(),
                running: matches!(c.state, S::Running | S::Paused | S::Restarting),
                paused: c.state == S::Paused,
                restarting: c.state == S::Restarting,
                oom_killed: c.oom_killed,
                dead: c.state == S::Dead,
                pid: c.pid.unwrap_or(0),
                exit_code: c.exit_code.unwrap_or(0),
                error: d.error.clone(),
                started_at: c.started_at.clone().unwrap_or_else(|| zero_time.clone()),
                finished_at: c.finished_at.clone().unwrap_or_else(|| zero_time.clone()),
                health: c.health.as_ref().map(|h| InspectHealth {
                    status: h.clone(),
                    failing_streak: 0,
                    log: Vec::new(),
                }),
            },
            image: c.image_id.clone().unwrap_or_else(|| c.image.clone()),
            resolv_conf_path: String::new(),
            hostname_path: String::new(),
            hosts_path: String::new(),
            log_path: d.log_path.clone(),
            name: format!("/{}", c.name),
            restart_count: c.restart_count,
            driver: "overlay2".to_owned(),
            platform: "linux".to_owned(),
            mount_label: String::new(),
            process_label: String::new(),
            app_armor_profile: String::new(),
            exec_ids: None,
            host_config: InspectHostConfig {
                binds: d.binds.clone(),
                network_mode: c.network_mode.clone(),
                port_bindings: ports.clone(),
                restart_policy: RestartPolicy {
                    name: restart_name,
                    maximum_retry_count: restart_max,
                },
                auto_remove: d.auto_remove,
                cap_add: d.cap_add.clone(),
                cap_drop: d.cap_drop.clone(),
                memory: d.memory_bytes,
                nano_cpus: d.nano_cpus,
                pids_limit: d.pids_limit,
                readonly_rootfs: d.read_only,
                init: d.init,
                privileged: false,
                tmpfs: d.tmpfs.iter().map(|t| (t.clone(), String::new())).collect(),
                log_config: LogConfig {
                    kind: "json-file".to_owned(),
                    config: BTreeMap::new(),
                },
            },
            graph_driver: GraphDriverData {
                name: "overlay2".to_owned(),
                data: BTreeMap::new(),
            },
            mounts: Vec::new(),
            config: InspectConfig {
                hostname: d.hostname.clone(),
                domainname: String::new(),
                user: d.user.clone(),
                attach_stdin: false,
                attach_stdout: !d.tty,
                attach_stderr: !d.tty,
                exposed_ports: ports
                    .keys()
                    .map(|k| (k.clone(), serde_json::json!({})))
                    .collect(),
                tty: d.tty,
                open_stdin: d.open_stdin,
                stdin_once: false,
                env: d.env.clone(),
                cmd: c.command.clone(),
                image: c.image.clone(),
                volumes: BTreeMap::new(),
                working_dir: d.working_dir.clone(),
                entrypoint: None,
                labels: c.labels.clone(),
                stop_signal: d.stop_signal.clone(),
                stop_timeout: d.stop_timeout_secs,
            },
            network_settings: InspectNetworkSettings {
                bridge: String::new(),
                sandbox_id: String::new(),
                ports,
                ip_address: c.ip_address.clone().unwrap_or_default(),
                ip_prefix_len: if c.ip_address.is_some() { 16 } else { 0 },
                gateway: String::new(),
                mac_address: String::new(),
                networks: summary.network_settings.networks,
            },
        }
    }
}

/// `docker ps`'s STATUS column, as dockerd words it.
pub fn human_status(c: &ContainerView, now: i64) -> String {
    use berth_proto::api::ContainerState as S;
    let since = |t: &Option<String>| {
        t.as_deref()
            .and_then(crate::time::parse_rfc3339)
            .map(|t| human_duration(now.saturating_sub(t)))
    };
    match c.state {
        S::Created => "Created".to_owned(),
        S::Running | S::Paused => {
            let up = since(&c.started_at).unwrap_or_else(|| "Less than a second".to_owned());
            let health = match c.health.as_deref() {
                Some("starting") => " (health: starting)".to_owned(),
                Some(h) => format!(" ({h})"),
                None => String::new(),
            };
            let paused = if c.state == S::Paused {
                " (Paused)"
            } else {
                ""
            };
            format!("Up {up}{paused}{health}")
        }
        S::Restarting => format!(
            "Restarting ({}) {} ago",
            c.exit_code.unwrap_or(0),
            since(&c.finished_at).unwrap_or_else(|| "Less than a second".to_owned())
        ),
        S::Exited => format!(
            "Exited ({}) {} ago",
            c.exit_code.unwrap_or(0),
            since(&c.finished_at).unwrap_or_else(|| "Less than a second".to_owned())
        ),
        S::Dead => "Dead".to_owned(),
    }
}

/// Go's `units.HumanDuration`, as `docker ps` prints ages.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".to_owned(),
        120..=2699 => format!("{} minutes", s / 60),
        2700..=5399 => "About an hour".to_owned(),
        _ if s < 48 * 3600 => format!("{} hours", (s + 1800) / 3600),
        _ if s < 7 * 24 * 3600 * 2 => format!("{} days", s / 86400),
        _ if s < 30 * 24 * 3600 * 3 => format!("{} weeks", s / (7 * 86400)),
        _ if s < 365 * 24 * 3600 * 2 => format!("{} months", s / (30 * 86400)),
        _ => format!("{} years", s / (365 * 86400)),
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::api::{ContainerState, PortView};

    use super::*;

    fn view() -> ContainerView {
        ContainerView {
            id: "a".repeat(64),
            name: "web".into(),
            image: "busybox:latest".into(),
            image_id: None,
            command: vec!["httpd".into(), "-f".into()],
            labels: BTreeMap::new(),
            state: ContainerState::Running,
            created: 1_700_000_000,
            started_at: Some("2023-11-14T22:13:20Z".into()),
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            pid: Some(42),
            restart_count: 0,
            health: Some("healthy".into()),
            ports: vec![PortView {
                private_port: 80,
                protocol: "tcp".into(),
                host_ip: Some("0.0.0.0".into()),
                host_port: Some(8080),
            }],
            network_mode: "bridge".into(),
            ip_address: Some("10.88.0.2".into()),
            details: Default::default(),
        }
    }

    #[test]
    fn summary_has_every_key_and_dockers_names() {
        let json =
            serde_json::to_value(ContainerSummary::of(&view(), 1_700_000_000 + 300)).unwrap();
        for key in [
            "Id",
            "Names",
            "Image",
            "ImageID",
            "Command",
            "Created",
            "Ports",
            "Labels",
            "State",
            "Status",
            "HostConfig",
            "NetworkSettings",
            "Mounts",
        ] {
            assert!(json.get(key).is_some(), "{key} missing: {json}");
        }
        assert_eq!(json["Names"][0], "/web");
        assert_eq!(json["Labels"], serde_json::json!({}));
        assert_eq!(json["Mounts"], serde_json::json!([]));
        assert_eq!(json["Status"], "Up 5 minutes (healthy)");
        assert_eq!(json["Ports"][0]["PublicPort"], 8080);
        assert_eq!(json["Ports"][0]["Type"], "tcp");
        assert_eq!(
            json["NetworkSettings"]["Networks"]["bridge"]["IPAddress"],
            "10.88.0.2"
        );
    }

    #[test]
    fn statuses_read_as_dockers() {
        let mut c = view();
        c.state = ContainerState::Exited;
        c.exit_code = Some(137);
        c.finished_at = Some("2023-11-14T22:13:20Z".into());
        assert_eq!(
            human_status(&c, 1_700_000_000 + 7200),
            "Exited (137) 2 hours ago"
        );
        c.state = ContainerState::Created;
        assert_eq!(human_status(&c, 0), "Created");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }

    #[test]
    fn version_names_its_api_range() {
        let info = SystemInfo {
            hostname: "h".into(),
            kernel_version: "6.1.0".into(),
            ncpu: 2,
            mem_total_bytes: 1 << 30,
            images: 1,
            cgroup_version: 2,
            state_in_ram: true,
            berth_version: "0.1.0".into(),
        };
        let v = serde_json::to_value(Version::of(&info)).unwrap();
        assert_eq!(v["ApiVersion"], "1.47");
        assert_eq!(v["MinAPIVersion"], "1.24");
        let i = serde_json::to_value(Info::of(&info, &[view()], "t".into())).unwrap();
        assert_eq!(i["ContainersRunning"], 1);
        assert_eq!(i["NCPU"], 2);
        assert_eq!(i["Swarm"]["LocalNodeState"], "inactive");
        assert!(i["Warnings"][0].as_str().unwrap().contains("in RAM"));
    }
}
