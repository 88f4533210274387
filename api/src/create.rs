//! `POST /containers/create`: Docker's body, translated into berth's [`CreateSpec`].
//!
//! The translation is thin and strict. Fields clients always send with neutral values
//! (`"Hostname": ""`, `"Entrypoint": null`, `"Memory": 0`) mean "not set"; unknown fields
//! are ignored, as dockerd ignores them. A field berth cannot honour and whose loss would
//! change what the container may do (`Privileged`, devices, the host's PID or IPC
//! namespace, a custom network) is refused with a message naming it, never dropped in
//! silence. Every error names the field at fault (`HostConfig.Memory: …`).

use std::collections::BTreeMap;

use berth_proto::api::{CreateSpec, HealthSpec, MountKind, MountSpec, PublishSpec};
use berth_runtime::spec;
use serde::Deserialize;

/// Why a create body was refused: a 400 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("invalid JSON at {path}: {message}")]
    Json { path: String, message: String },
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

fn field(field: &str, message: impl Into<String>) -> CreateError {
    CreateError::Field {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// The body, with the fields berth reads. Go's zero values and JSON `null` both mean
/// "not set".
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Body {
    hostname: Option<String>,
    user: Option<String>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    tty: Option<bool>,
    open_stdin: Option<bool>,
    stdin_once: Option<bool>,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    healthcheck: Option<Healthcheck>,
    image: Option<String>,
    volumes: Option<BTreeMap<String, serde_json::Value>>,
    working_dir: Option<String>,
    entrypoint: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    stop_signal: Option<String>,
    stop_timeout: Option<i64>,
    host_config: Option<HostConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Healthcheck {
    test: Option<Vec<String>>,
    interval: Option<i64>,
    timeout: Option<i64>,
    retries: Option<i64>,
    start_period: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct HostConfig {
    binds: Option<Vec<String>>,
    network_mode: Option<String>,
    port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    restart_policy: Option<RestartPolicy>,
    auto_remove: Option<bool>,
    mounts: Option<Vec<Mount>>,
    publish_all_ports: Option<bool>,
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    pids_limit: Option<i64>,
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    readonly_rootfs: Option<bool>,
    init: Option<bool>,
    privileged: Option<bool>,
    tmpfs: Option<BTreeMap<String, String>>,
    devices: Option<Vec<serde_json::Value>>,
    pid_mode: Option<String>,
    ipc_mode: Option<String>,
    userns_mode: Option<String>,
    security_opt: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortBinding {
    host_ip: Option<String>,
    host_port: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RestartPolicy {
    name: Option<String>,
    maximum_retry_count: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Mount {
    #[serde(rename = "Type")]
    kind: Option<String>,
    source: Option<String>,
    target: Option<String>,
    read_only: Option<bool>,
}

/// What the host allows beyond Docker's defaults (`[api]` in `host.toml`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub allow_privileged: bool,
}

/// Translates a create body into berth's spec.
pub fn translate(body: &[u8], policy: Policy) -> Result<CreateSpec, CreateError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let b: Body = serde_path_to_error::deserialize(de).map_err(|e| CreateError::Json {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    let hc = b.host_config.unwrap_or_default();
    refuse_unsupported(&hc, policy)?;

    let image = non_empty(b.image).ok_or_else(|| field("Image", "an image is required"))?;
    let env = b.env.unwrap_or_default();
    for (i, kv) in env.iter().enumerate() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        spec::validate_env(k, v).map_err(|e| field(&format!("Env[{i}]"), e.to_string()))?;
    }
    let command = b.cmd.filter(|c| !c.is_empty());
    if let Some(c) = &command {
        spec::validate_argv("Cmd", c).map_err(|e| field("Cmd", e.to_string()))?;
    }
    // `null` keeps the image's entrypoint; `[]` or `[""]` resets it (`--entrypoint ''`).
    let entrypoint = b
        .entrypoint
        .map(|e| e.into_iter().filter(|a| !a.is_empty()).collect::<Vec<_>>());
    if let Some(e) = &entrypoint {
        spec::validate_argv("Entrypoint", e).map_err(|e| field("Entrypoint", e.to_string()))?;
    }
    let workdir = non_empty(b.working_dir)
        .map(|w| spec::container_path(&w).map_err(|e| field("WorkingDir", e.to_string())))
        .transpose()?;
    let user = non_empty(b.user)
        .map(|u| spec::validate_user(&u).map_err(|e| field("User", e.to_string())))
        .transpose()?;
    let hostname = non_empty(b.hostname)
        .map(|h| {
            spec::validate_name(&h)
                .map(|_| h)
                .map_err(|e| field("Hostname", e.to_string()))
        })
        .transpose()?;
    let stop_signal = non_empty(b.stop_signal)
        .map(|s| {
            spec::parse_signal(&s)
                .map(|_| s)
                .map_err(|e| field("StopSignal", e.to_string()))
        })
        .transpose()?;
    let stop_timeout_secs = match b.stop_timeout {
        None => None,
        Some(t) if (0..=86_400).contains(&t) => Some(t as u32),
        // -1 (wait forever) is not offered: a stop always ends.
        Some(t) => {
            return Err(field(
                "StopTimeout",
                format!("{t} is not between 0 and 86400 seconds"),
            ))
        }
    };

    let mut exposed: Vec<String> = Vec::new();
    for key in b.exposed_ports.unwrap_or_default().keys() {
        let (port, proto) = port_key("ExposedPorts", key)?;
        exposed.push(format!("{port}/{proto}"));
    }
    let mut ports = Vec::new();
    for (key, bindings) in hc.port_bindings.unwrap_or_default() {
        let (port, proto) = port_key("HostConfig.PortBindings", &key)?;
        let proto_s = format!("{port}/{proto}");
        if !exposed.contains(&proto_s) {
            exposed.push(proto_s);
        }
        for binding in bindings.unwrap_or_default() {
            let host_port = match binding.host_port.as_deref().map(str::trim) {
                None | Some("") | Some("0") => None,
                Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    field(
                        &format!("HostConfig.PortBindings[{key}].HostPort"),
                        format!("{p:?} is not a port number"),
                    )
                })?),
            };
            let host_ip = non_empty(binding.host_ip)
                .map(|ip| {
                    ip.parse::<std::net::IpAddr>()
                        .map(|_| ip.clone())
                        .map_err(|_| {
                            field(
                                &format!("HostConfig.PortBindings[{key}].HostIp"),
                                format!("{ip:?} is not an IP address"),
                            )
                        })
                })
                .transpose()?;
            ports.push(PublishSpec {
                container_port: port,
                protocol: proto.to_owned(),
                host_ip,
                host_port,
            });
        }
    }

    let mut mounts = Vec::new();
    for (i, bind) in hc.binds.unwrap_or_default().iter().enumerate() {
        mounts.push(bind_mount(&format!("HostConfig.Binds[{i}]"), bind)?);
    }
    for (i, m) in hc.mounts.unwrap_or_default().into_iter().enumerate() {
        mounts.push(api_mount(&format!("HostConfig.Mounts[{i}]"), m)?);
    }
    for (target, _) in hc.tmpfs.unwrap_or_default() {
        let target =
            spec::container_path(&target).map_err(|e| field("HostConfig.Tmpfs", e.to_string()))?;
        mounts.push(MountSpec {
            kind: MountKind::Tmpfs,
            source: None,
            target,
            read_only: false,
        });
    }
    for target in b.volumes.unwrap_or_default().keys() {
        let target = spec::container_path(target).map_err(|e| field("Volumes", e.to_string()))?;
        if !mounts.iter().any(|m| m.target == target) {
            mounts.push(MountSpec {
                kind: MountKind::Volume,
                source: None,
                target,
                read_only: false,
            });
        }
    }

    let network = match non_empty(hc.network_mode).as_deref() {
        None | Some("default") | Some("bridge") => "bridge",
        Some("host") => "host",
        Some("none") => "none",
        Some(other) => {
            return Err(field(
                "HostConfig.NetworkMode",
                format!("berth has the networks bridge, host and none; not {other:?}"),
            ))
        }
    };
    if network != "bridge" && !ports.is_empty() {
        return Err(field(
            "HostConfig.PortBindings",
            format!("ports are published on the bridge network, not with NetworkMode {network}"),
        ));
    }

    let restart = restart_policy(hc.restart_policy.unwrap_or_default())?;
    let auto_remove = hc.auto_remove.unwrap_or(false);
    if auto_remove && restart != "no" {
        return Err(field(
            "HostConfig.AutoRemove",
            "conflicting options: AutoRemove and a RestartPolicy other than no",
        ));
    }

    let positive = |name: &str, v: Option<i64>| -> Result<Option<u64>, CreateError> {
        match v {
            None | Some(0) => Ok(None),
            Some(n) if n > 0 => Ok(Some(n as u64)),
            Some(n) => Err(field(name, format!("{n} must not be negative"))),
        }
    };
    let memory_bytes = positive("HostConfig.Memory", hc.memory)?;
    if memory_bytes.is_some_and(|m| m < 6 * 1024 * 1024) {
        return Err(field(
            "HostConfig.Memory",
            "Minimum memory limit allowed is 6MB",
        ));
    }
    let nano_cpus = positive("HostConfig.NanoCpus", hc.nano_cpus)?;
    // -1 and 0 both mean unlimited, as Docker's.
    let pids_limit = match hc.pids_limit {
        None | Some(0) | Some(-1) => None,
        Some(n) if n > 0 => Some(n as u64),
        Some(n) => {
            return Err(field(
                "HostConfig.PidsLimit",
                format!("{n} is not a process count"),
            ))
        }
    };
    let caps = |name: &str, list: Option<Vec<String>>| -> Result<Vec<String>, CreateError> {
        let list = list.unwrap_or_default();
        for (i, c) in list.iter().enumerate() {
            spec::parse_capability(c).map_err(|e| field(&format!("{name}[{i}]"), e.to_string()))?;
        }
        Ok(list)
    };

    Ok(CreateSpec {
        image,
        entrypoint,
        command,
        env,
        workdir,
        user,
        hostname,
        labels: b.labels.unwrap_or_default(),
        tty: b.tty.unwrap_or(false),
        open_stdin: b.open_stdin.unwrap_or(false),
        stdin_once: b.stdin_once.unwrap_or(false),
        exposed_ports: exposed,
        healthcheck: health(b.healthcheck)?,
        stop_signal,
        stop_timeout_secs,
        auto_remove,
        mounts,
        ports,
        publish_all: hc.publish_all_ports.unwrap_or(false),
        network: network.to_owned(),
        restart,
        memory_bytes,
        nano_cpus,
        pids_limit,
        cap_add: caps("HostConfig.CapAdd", hc.cap_add)?,
        cap_drop: caps("HostConfig.CapDrop", hc.cap_drop)?,
        read_only: hc.readonly_rootfs.unwrap_or(false),
        init: hc.init.unwrap_or(false),
    })
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Fields whose loss would widen or change what the container may do.
fn refuse_unsupported(hc: &HostConfig, policy: Policy) -> Result<(), CreateError> {
    if hc.privileged == Some(true) && !policy.allow_privileged {
        return Err(field(
            "HostConfig.Privileged",
            "privileged containers are refused on this host (set allow_privileged = true in [api] of host.toml to allow them)",
        ));
    }
    if hc.privileged == Some(true) {
        return Err(field(
            "HostConfig.Privileged",
            "berth does not run privileged containers yet",
        ));
    }
    if hc.devices.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(field(
            "HostConfig.Devices",
            "berth does not pass host devices into containers",
        ));
    }
    for (name, mode) in [
        ("HostConfig.PidMode", &hc.pid_mode),
        ("HostConfig.IpcMode", &hc.ipc_mode),
        ("HostConfig.UsernsMode", &hc.userns_mode),
    ] {
        match mode.as_deref() {
            None | Some("") | Some("private") | Some("shareable") => {}
            Some(other) => return Err(field(name, format!("berth does not support {other:?}"))),
        }
    }
    for opt in hc.security_opt.iter().flatten() {
        if opt != "no-new-privileges" && opt != "no-new-privileges:true" {
            return Err(field(
                "HostConfig.SecurityOpt",
                format!(
                    "berth keeps its own seccomp filter and no_new_privs; {opt:?} is not supported"
                ),
            ));
        }
    }
    Ok(())
}

/// `80`, `80/tcp`, `53/udp`.
fn port_key(name: &str, key: &str) -> Result<(u16, &'static str), CreateError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto {
        "tcp" => "tcp",
        "udp" => "udp",
        other => {
            return Err(field(
                &format!("{name}[{key}]"),
                format!("protocol {other:?} is not tcp or udp"),
            ))
        }
    };
    let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
        field(
            &format!("{name}[{key}]"),
            format!("{port:?} is not a port number (ranges are not supported)"),
        )
    })?;
    Ok((port, proto))
}

/// `src:dst[:opts]`: a host path when `src` is absolute, a named volume otherwise.
fn bind_mount(name: &str, bind: &str) -> Result<MountSpec, CreateError> {
    let parts: Vec<&str> = bind.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => {
            return Err(field(
                name,
                format!("{bind:?} is not SOURCE:TARGET[:OPTIONS]"),
            ))
        }
    };
    let mut read_only = false;
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => read_only = true,
            "rw" => read_only = false,
            // SELinux relabelling and propagation modes mean nothing on berth.
            "z" | "Z" | "rprivate" | "private" | "nocopy" => {}
            other => {
                return Err(field(
                    name,
                    format!("mount option {other:?} is not supported"),
                ))
            }
        }
    }
    let volume = spec::parse_volume(&format!("{source}:{target}"))
        .map_err(|e| field(name, e.to_string()))?;
    let kind = match volume.source {
        spec::VolumeSource::Host(_) => MountKind::Bind,
        spec::VolumeSource::Named(_) => MountKind::Volume,
    };
    Ok(MountSpec {
        kind,
        source: Some(source.to_owned()),
        target: volume.target,
        read_only,
    })
}

fn api_mount(name: &str, m: Mount) -> Result<MountSpec, CreateError> {
    let target = non_empty(m.target)
        .ok_or_else(|| field(&format!("{name}.Target"), "a target is required"))?;
    let target = spec::container_path(&target)
        .map_err(|e| field(&format!("{name}.Target"), e.to_string()))?;
    let read_only = m.read_only.unwrap_or(false);
    let source = non_empty(m.source);
    let kind = match m.kind.as_deref() {
        Some("bind") => {
            let src = source
                .as_deref()
                .ok_or_else(|| field(&format!("{name}.Source"), "a bind mount needs a source"))?;
            spec::parse_volume(&format!("{src}:{target}"))
                .ok()
                .filter(|v| matches!(v.source, spec::VolumeSource::Host(_)))
                .ok_or_else(|| {
                    field(
                        &format!("{name}.Source"),
                        format!("{src:?} is not an absolute host path"),
                    )
                })?;
            MountKind::Bind
        }
        Some("volume") => {
            if let Some(src) = &source {
                spec::validate_name(src)
                    .map_err(|e| field(&format!("{name}.Source"), e.to_string()))?;
            }
            MountKind::Volume
        }
        Some("tmpfs") => MountKind::Tmpfs,
        other => {
            return Err(field(
                &format!("{name}.Type"),
                format!("{:?} is not bind, volume or tmpfs", other.unwrap_or("")),
            ))
        }
    };
    Ok(MountSpec {
        kind,
        source: if kind == MountKind::Tmpfs {
            None
        } else {
            source
        },
        target,
        read_only,
    })
}

fn restart_policy(p: RestartPolicy) -> Result<String, CreateError> {
    let max = p.maximum_retry_count.unwrap_or(0);
    let name = p.name.unwrap_or_default();
    match name.as_str() {
        "" | "no" => Ok("no".to_owned()),
        "always" | "unless-stopped" => Ok(name),
        "on-failure" if max > 0 => Ok(format!("on-failure:{max}")),
        "on-failure" if max == 0 => Ok("on-failure".to_owned()),
        "on-failure" => Err(field(
            "HostConfig.RestartPolicy.MaximumRetryCount",
            format!("{max} must not be negative"),
        )),
        other => Err(field(
            "HostConfig.RestartPolicy.Name",
            format!("invalid restart policy {other:?}: no, always, unless-stopped or on-failure"),
        )),
    }
}

/// Docker's `Healthcheck`: `["NONE"]` disables, `["CMD", …]` runs a program,
/// `["CMD-SHELL", "…"]` a shell command; durations in nanoseconds, 0 for the default.
fn health(h: Option<Healthcheck>) -> Result<Option<HealthSpec>, CreateError> {
    let Some(h) = h else { return Ok(None) };
    let test = h.test.unwrap_or_default();
    let command = match test.split_first() {
        None => return Ok(None),
        Some((kind, _)) if kind == "NONE" => return Ok(None),
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
        Some((kind, rest)) if kind == "CMD-SHELL" && rest.len() == 1 => {
            vec!["/bin/sh".to_owned(), "-c".to_owned(), rest[0].clone()]
        }
        Some(_) => {
            return Err(field(
                "Healthcheck.Test",
                "expected [\"NONE\"], [\"CMD\", program, args…] or [\"CMD-SHELL\", command]",
            ))
        }
    };
    let ms = |name: &str, ns: Option<i64>, default_ms: u64| -> Result<u64, CreateError> {
        match ns {
            None | Some(0) => Ok(default_ms),
            Some(n) if n >= 1_000_000 => Ok(n as u64 / 1_000_000),
            Some(n) => Err(field(
                &format!("Healthcheck.{name}"),
                format!("{n} ns is under a millisecond"),
            )),
        }
    };
    let retries = match h.retries {
        None | Some(0) => 3,
        Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
        Some(n) => {
            return Err(field(
                "Healthcheck.Retries",
                format!("{n} must not be negative"),
            ))
        }
    };
    Ok(Some(HealthSpec {
        command,
        interval_ms: ms("Interval", h.interval, 30_000)?,
        timeout_ms: ms("Timeout", h.timeout, 30_000)?,
        retries,
        start_period_ms: ms("StartPeriod", h.start_period, 0)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(json: &str) -> CreateSpec {
        translate(json.as_bytes(), Policy::default()).unwrap()
    }

    fn err(json: &str) -> String {
        translate(json.as_bytes(), Policy::default())
            .unwrap_err()
            .to_string()
    }

    /// What the docker CLI 28 sends for `docker run -d -p 8080:80 --name web busybox httpd -f`.
    const CLI_RUN: &str = r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":false,
        "AttachStdout":false,"AttachStderr":false,"ExposedPorts":{"80/tcp":{}},"Tty":false,
        "OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["httpd","-f"],"Image":"busybox",
        "Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{},
        "HostConfig":{"Binds":null,"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},
        "NetworkMode":"default","PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]},
        "RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,
        "VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[50,200],"CapAdd":null,"CapDrop":null,
        "CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,
        "IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,
        "PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"","UsernsMode":"",
        "ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"",
        "BlkioWeight":0,"Devices":[],"PidsLimit":null,"Mounts":null,"Init":null},
        "NetworkingConfig":{"EndpointsConfig":{}}}"#;

    #[test]
    fn the_clis_run_body_translates() {
        let s = ok(CLI_RUN);
        assert_eq!(s.image, "busybox");
        assert_eq!(s.command, Some(vec!["httpd".to_owned(), "-f".to_owned()]));
        assert_eq!(s.entrypoint, None);
        assert_eq!(s.network, "bridge");
        assert_eq!(s.restart, "no");
        assert_eq!(
            s.ports,
            vec![PublishSpec {
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: None,
                host_port: Some(8080)
            }]
        );
        assert_eq!(s.exposed_ports, ["80/tcp"]);
        assert_eq!(
            (s.memory_bytes, s.nano_cpus, s.pids_limit),
            (None, None, None)
        );
    }

    #[test]
    fn ephemeral_ports_mounts_and_limits() {
        let s = ok(r#"{"Image":"app","Entrypoint":[""],"HostConfig":{
            "PortBindings":{"53/udp":[{"HostPort":""}],"80":[{"HostIp":"127.0.0.1","HostPort":"0"}]},
            "Binds":["/srv/data:/data:ro,z","cache:/cache"],
            "Mounts":[{"Type":"tmpfs","Target":"/run"},{"Type":"volume","Source":"v1","Target":"/v"}],
            "Memory":67108864,"NanoCpus":1500000000,"PidsLimit":-1,
            "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3},"CapDrop":["ALL"],"CapAdd":["NET_BIND_SERVICE"]}}"#);
        assert_eq!(s.entrypoint, Some(vec![]), "--entrypoint '' resets");
        assert!(s.ports.iter().all(|p| p.host_port.is_none()));
        assert_eq!(s.ports.len(), 2);
        let kinds: Vec<(MountKind, Option<&str>, &str, bool)> = s
            .mounts
            .iter()
            .map(|m| (m.kind, m.source.as_deref(), m.target.as_str(), m.read_only))
            .collect();
        assert_eq!(
            kinds,
            [
                (MountKind::Bind, Some("/srv/data"), "/data", true),
                (MountKind::Volume, Some("cache"), "/cache", false),
                (MountKind::Tmpfs, None, "/run", false),
                (MountKind::Volume, Some("v1"), "/v", false),
            ]
        );
        assert_eq!(s.memory_bytes, Some(64 << 20));
        assert_eq!(s.nano_cpus, Some(1_500_000_000));
        assert_eq!(s.pids_limit, None);
        assert_eq!(s.restart, "on-failure:3");
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(r#"{"Image":"a","HostConfig":{"Memory":"lots"}}"#);
        assert!(
            e.starts_with("invalid JSON at HostConfig.Memory: invalid type: string \"lots\""),
            "{e}"
        );
        assert!(err(r#"{"Cmd":["x"]}"#).starts_with("Image: "));
        assert!(err(r#"{"Image":"a","Env":["=x"]}"#).starts_with("Env[0]: "));
        assert!(err(r#"{"Image":"a","WorkingDir":"rel"}"#).starts_with("WorkingDir: "));
        assert!(
            err(r#"{"Image":"a","HostConfig":{"Binds":["../../etc:/x"]}}"#)
                .starts_with("HostConfig.Binds[0]: ")
        );
        assert!(err(r#"{"Image":"a","HostConfig":{"Binds":["/etc:rel"]}}"#)
            .starts_with("HostConfig.Binds[0]: "));
        assert!(
            err(r#"{"Image":"a","HostConfig":{"PortBindings":{"80/sctp":[]}}}"#)
                .contains("PortBindings[80/sctp]")
        );
        assert!(err(
            r#"{"Image":"a","HostConfig":{"PortBindings":{"80":[{"HostPort":"99999"}]}}}"#
        )
        .contains("HostPort"));
        assert!(err(r#"{"Image":"a","HostConfig":{"NetworkMode":"mynet"}}"#)
            .starts_with("HostConfig.NetworkMode: "));
        assert!(
            err(r#"{"Image":"a","HostConfig":{"RestartPolicy":{"Name":"sometimes"}}}"#)
                .contains("RestartPolicy.Name")
        );
        assert!(
            err(r#"{"Image":"a","HostConfig":{"CapAdd":["NET_MAGIC"]}}"#)
                .starts_with("HostConfig.CapAdd[0]: ")
        );
        assert!(err(
            r#"{"Image":"a","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#
        )
        .contains("AutoRemove"));
        assert!(err(r#"{"Image":"a","Healthcheck":{"Test":["CMD"]}}"#)
            .starts_with("Healthcheck.Test: "));
        assert!(err("[1,2]").starts_with("invalid JSON"));
        assert!(err("{\"Image\":").starts_with("invalid JSON"));
    }

    #[test]
    fn what_would_widen_the_container_is_refused() {
        let e = err(r#"{"Image":"a","HostConfig":{"Privileged":true}}"#);
        assert!(e.contains("allow_privileged"), "{e}");
        assert!(err(r#"{"Image":"a","HostConfig":{"PidMode":"host"}}"#)
            .starts_with("HostConfig.PidMode"));
        assert!(
            err(r#"{"Image":"a","HostConfig":{"Devices":[{"PathOnHost":"/dev/sda"}]}}"#)
                .starts_with("HostConfig.Devices")
        );
        assert!(
            err(r#"{"Image":"a","HostConfig":{"SecurityOpt":["seccomp=unconfined"]}}"#)
                .starts_with("HostConfig.SecurityOpt")
        );
        // Port publishing needs the bridge.
        assert!(err(r#"{"Image":"a","HostConfig":{"NetworkMode":"host","PortBindings":{"80":[{"HostPort":"80"}]}}}"#).contains("bridge"));
    }

    #[test]
    fn health_checks_in_dockers_forms() {
        let s = ok(
            r#"{"Image":"a","Healthcheck":{"Test":["CMD-SHELL","wget -q localhost"],"Interval":2000000000,"Retries":0}}"#,
        );
        let h = s.healthcheck.unwrap();
        assert_eq!(h.command, ["/bin/sh", "-c", "wget -q localhost"]);
        assert_eq!(
            (h.interval_ms, h.timeout_ms, h.retries, h.start_period_ms),
            (2000, 30_000, 3, 0)
        );
        assert!(ok(r#"{"Image":"a","Healthcheck":{"Test":["NONE"]}}"#)
            .healthcheck
            .is_none());
        let s = ok(r#"{"Image":"a","Healthcheck":{"Test":["CMD","true"]}}"#);
        assert_eq!(s.healthcheck.unwrap().command, ["true"]);
    }
}
