//! The `[[image]]` and `[[container]]` tables of the host config: what the machine
//! runs. Every value is validated while it is parsed (so an error names its key and
//! line), then [`check_containers`] checks what spans tables: unique names and a
//! `depends_on` graph without unknown names or cycles.

use std::collections::BTreeMap;
use std::fmt;

use berth_runtime::spec::{self, ContainerSpec, Network, Volume};
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::config::{DurationSpec, Hostname};

/// An image baked into the build and imported into the store at boot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// An OCI layout (directory or tar) or docker-archive tar on the build host,
    /// relative to the config file.
    pub path: String,
    /// The name it gets in the store.
    pub name: ImageName,
    /// Which image of a layout holding several: its `org.opencontainers.image.ref.name`
    /// (the tag an OCI layout gives it, e.g. `"latest"`) or, in a docker-archive, its
    /// repo tag (`"busybox:latest"`). Without it, such a layout is refused.
    pub select: Option<String>,
}

/// Image names baked once each: two `[[image]]`s with one name would import one over
/// the other at boot. Names are compared as the store writes them (`busybox` is
/// `busybox:latest`).
pub fn check_images(images: &[ImageEntry]) -> Result<(), CrossCheckError> {
    let mut seen = BTreeMap::new();
    for (i, image) in images.iter().enumerate() {
        let name = image.name.0.to_string();
        if let Some(first) = seen.insert(name.clone(), i) {
            return Err(CrossCheckError {
                key: format!("image[{i}].name"),
                message: format!("image name {name:?} is already baked by image[{first}]"),
            });
        }
        if let Some(select) = &image.select {
            if select.is_empty() || select.contains('\0') {
                return Err(CrossCheckError {
                    key: format!("image[{i}].select"),
                    message: "must name an image of the layout (its ref name or repo tag)".into(),
                });
            }
        }
    }
    Ok(())
}

/// `name[:tag]` as the image store parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName(pub berth_imagefs::Reference);

impl<'de> Deserialize<'de> for ImageName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        berth_imagefs::Reference::parse(&s)
            .map(ImageName)
            .map_err(de::Error::custom)
    }
}

/// What happens when a container's program exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max` times if given.
    OnFailure { max: Option<u32> },
    /// Always restart.
    Always,
    /// As `always` here: berth has no API to stop a container by hand yet.
    UnlessStopped,
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Result<RestartPolicy, String> {
        match s {
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure { max: None }),
            _ => match s.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(n)) if n > 0 => Ok(RestartPolicy::OnFailure { max: Some(n) }),
                _ => Err(format!(
                    "restart policy {s:?}: expected \"no\", \"on-failure\", \"on-failure:N\" (N ≥ 1), \"always\" or \"unless-stopped\""
                )),
            },
        }
    }

    /// Whether a container that ended with `code`, after `restarts` restarts,
    /// starts again.
    pub fn restarts(&self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max } => code != 0 && max.is_none_or(|m| restarts < m),
        }
    }
}

/// The config's own spelling, which [`RestartPolicy::parse`] reads back.
impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max: Some(n) } => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RestartPolicy::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// Wraps a runtime validator as a serde type, so the error carries key and line.
macro_rules! validated {
    ($(#[$doc:meta])* $name:ident($inner:ty) from $src:ty => $parse:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <$src>::deserialize(d)?;
                let parse: fn(&$src) -> Result<$inner, spec::SpecError> = $parse;
                parse(&raw).map($name).map_err(de::Error::custom)
            }
        }
    };
}

validated!(
    /// `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}`.
    ContainerName(String) from String => |s| spec::validate_name(s)
);
validated!(
    /// `256M`, `1g`, …
    MemorySize(u64) from String => |s| spec::parse_memory(s)
);
validated!(
    /// A process count, at least 1.
    PidsLimit(u64) from u64 => |n| spec::validate_pids(*n)
);
validated!(
    /// `NAME:/dst[:ro]` or `/host:/dst[:ro]`.
    VolumeSpec(Volume) from String => |s| spec::parse_volume(s)
);
validated!(
    /// An absolute path inside the container.
    ContainerPath(String) from String => |s| spec::container_path(s)
);
validated!(
    /// `NAME`, `UID`, `NAME:GROUP`, `UID:GID`.
    UserSpec(String) from String => |s| spec::validate_user(s)
);
validated!(
    /// `SIGTERM`, `TERM` or a number.
    SignalSpec(i32) from String => |s| spec::parse_signal(s)
);
validated!(
    /// A capability name; `ALL` only in `cap_drop`.
    CapName(Option<caps::Capability>) from String => |s| spec::parse_capability(s)
);

/// CPUs, kept in thousandths so that the config stays `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpus(pub u32);

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            F(f64),
            I(i64),
        }
        let v = match Num::deserialize(d)? {
            Num::F(f) => f,
            Num::I(i) => i as f64,
        };
        spec::validate_cpus(v)
            .map(|c| Cpus((c * 1000.0).round() as u32))
            .map_err(de::Error::custom)
    }
}

/// `"bridge"` (the default: `eth0` on the `[network.bridge]`), `"none"` (loopback only)
/// or `"host"` (the host's own network namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    #[default]
    Bridge,
    None,
    Host,
}

impl<'de> Deserialize<'de> for NetworkMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "bridge" => Ok(NetworkMode::Bridge),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            other => Err(de::Error::custom(format!(
                "network {other:?}: expected \"bridge\", \"none\" or \"host\""
            ))),
        }
    }
}

/// The pseudo-dependency satisfied once the host has an address (netd's first lease or
/// static address).
pub const NETWORK_ONLINE: &str = "network-online";

pub use berth_netd::config::PortSpec;

fn default_stop_timeout() -> DurationSpec {
    DurationSpec(std::time::Duration::from_secs(10))
}

fn yes() -> bool {
    true
}

/// One `[[container]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    pub name: ContainerName,
    /// A reference in the store: an `[[image]]` name or a digest. `berth build` refuses
    /// one that no `[[image]]` bakes (the store starts empty at every boot).
    pub image: String,
    /// Replaces the image's Cmd.
    pub command: Option<Vec<String>>,
    /// Replaces the image's Entrypoint (and drops its Cmd).
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub workdir: Option<ContainerPath>,
    pub user: Option<UserSpec>,
    pub hostname: Option<Hostname>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub depends_on: Vec<ContainerName>,
    pub memory: Option<MemorySize>,
    pub cpus: Option<Cpus>,
    pub pids: Option<PidsLimit>,
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    #[serde(default)]
    pub tmpfs: Vec<ContainerPath>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub init: bool,
    /// Default: the image's STOPSIGNAL, else SIGTERM.
    pub stop_signal: Option<SignalSpec>,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: DurationSpec,
    #[serde(default)]
    pub cap_add: Vec<CapName>,
    #[serde(default)]
    pub cap_drop: Vec<CapName>,
    #[serde(default)]
    pub network: NetworkMode,
    /// Published ports (bridge network only).
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// A command run inside the container to tell whether it is healthy.
    pub healthcheck: Option<crate::health::HealthConfig>,
    /// Mirror the container's output to the console.
    #[serde(default = "yes")]
    pub log_console: bool,
}

/// A problem that spans tables; `index` is the `[[container]]` position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossCheckError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for CrossCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Unique names; `depends_on` naming known containers, not itself, without cycles;
/// `ALL` only in `cap_drop`; image and argv strings free of NUL.
pub fn check_containers(containers: &[ContainerConfig]) -> Result<(), CrossCheckError> {
    let err = |key: String, message: String| Err(CrossCheckError { key, message });
    let mut index = BTreeMap::new();
    for (i, c) in containers.iter().enumerate() {
        if index.insert(c.name.0.as_str(), i).is_some() {
            return err(
                format!("container[{i}].name"),
                format!("container name {:?} is used twice", c.name.0),
            );
        }
        if c.image.is_empty() || c.image.contains('\0') {
            return err(
                format!("container[{i}].image"),
                "must be a non-empty image reference".into(),
            );
        }
        for (what, argv) in [("command", &c.command), ("entrypoint", &c.entrypoint)] {
            if let Some(Err(e)) = argv.as_ref().map(|a| spec::validate_argv(what, a)) {
                return err(format!("container[{i}].{what}"), e.to_string());
            }
        }
        for (k, v) in &c.env {
            if let Err(e) = spec::validate_env(k, v) {
                return err(format!("container[{i}].env"), e.to_string());
            }
        }
        if !c.ports.is_empty() && c.network != NetworkMode::Bridge {
            return err(
                format!("container[{i}].ports"),
                "ports are published only from network = \"bridge\"".into(),
            );
        }
        if let Some(Err(e)) = c.healthcheck.as_ref().map(|h| h.validate()) {
            return err(format!("container[{i}].healthcheck"), e);
        }
        if c.name.0 == NETWORK_ONLINE {
            return err(
                format!("container[{i}].name"),
                format!("{NETWORK_ONLINE:?} is reserved for the depends_on pseudo-dependency"),
            );
        }
        if c.cap_add.iter().any(|cap| cap.0.is_none()) {
            return err(
                format!("container[{i}].cap_add"),
                "\"ALL\" cannot be added: name the capabilities".into(),
            );
        }
    }
    // A port published on every address (`"8080:80"`) also takes it on each single
    // address (`"127.0.0.1:8080:81"`): the second bind would fail at boot.
    let mut published: Vec<(&PortSpec, usize)> = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        for p in &c.ports {
            let clash = published.iter().find(|(q, _)| {
                q.host_port == p.host_port
                    && q.protocol == p.protocol
                    && (q.host_ip.is_none() || p.host_ip.is_none() || q.host_ip == p.host_ip)
            });
            if let Some((q, other)) = clash {
                return err(
                    format!("container[{i}].ports"),
                    format!(
                        "host port {} clashes with {} published by container[{other}]",
                        port_text(p),
                        port_text(q),
                    ),
                );
            }
            published.push((p, i));
        }
    }
    for (i, c) in containers.iter().enumerate() {
        for dep in &c.depends_on {
            if dep.0 == c.name.0 {
                return err(
                    format!("container[{i}].depends_on"),
                    format!("{:?} depends on itself", c.name.0),
                );
            }
            if dep.0 == NETWORK_ONLINE {
                continue;
            }
            if !index.contains_key(dep.0.as_str()) {
                return err(
                    format!("container[{i}].depends_on"),
                    format!(
                        "{:?} depends on {:?}, which is not a [[container]]",
                        c.name.0, dep.0
                    ),
                );
            }
        }
    }
    if let Some(cycle) = find_cycle(containers, &index) {
        return err(
            format!(
                "container[{}].depends_on",
                index.get(cycle[0].as_str()).copied().unwrap_or(0)
            ),
            format!("dependency cycle: {}", cycle.join(" → ")),
        );
    }
    Ok(())
}

/// `ADDRESS:PORT/PROTO`, or `PORT/PROTO` on every address.
fn port_text(p: &PortSpec) -> String {
    match p.host_ip {
        Some(ip) => format!("{ip}:{}/{}", p.host_port, p.protocol.as_str()),
        None => format!("{}/{} (every address)", p.host_port, p.protocol.as_str()),
    }
}

/// A dependency cycle, as names from its first member back to it.
///
/// Iterative depth-first search over names: PID 1 runs this on every boot, so it
/// neither recurses (a long `depends_on` chain cannot exhaust the stack) nor indexes.
fn find_cycle(
    containers: &[ContainerConfig],
    index: &BTreeMap<&str, usize>,
) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mark {
        OnPath,
        Done,
    }
    let deps = |name: &str| -> Vec<&str> {
        index
            .get(name)
            .and_then(|i| containers.get(*i))
            .map(|c| c.depends_on.iter().map(|d| d.0.as_str()).collect())
            .unwrap_or_default()
    };
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    for root in containers.iter().map(|c| c.name.0.as_str()) {
        if marks.contains_key(root) {
            continue;
        }
        // The current path, each with the dependencies still to visit.
        let mut path: Vec<(&str, Vec<&str>)> = vec![(root, deps(root))];
        marks.insert(root, Mark::OnPath);
        while let Some((name, pending)) = path.last_mut() {
            let Some(next) = pending.pop() else {
                marks.insert(*name, Mark::Done);
                path.pop();
                continue;
            };
            if !index.contains_key(next) {
                continue; // reported separately as an unknown dependency
            }
            match marks.get(next) {
                Some(Mark::Done) => {}
                Some(Mark::OnPath) => {
                    let start = path.iter().position(|(n, _)| *n == next).unwrap_or(0);
                    let mut cycle: Vec<String> = path
                        .iter()
                        .skip(start)
                        .map(|(n, _)| n.to_string())
                        .collect();
                    cycle.push(next.to_string());
                    return Some(cycle);
                }
                None => {
                    marks.insert(next, Mark::OnPath);
                    path.push((next, deps(next)));
                }
            }
        }
    }
    None
}

impl ContainerConfig {
    /// The runtime's description of this container.
    pub fn spec(&self) -> ContainerSpec {
        ContainerSpec {
            name: self.name.0.clone(),
            image: self.image.clone(),
            entrypoint: self.entrypoint.clone(),
            command: self.command.clone(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            workdir: self.workdir.as_ref().map(|w| w.0.clone()),
            user: self.user.as_ref().map(|u| u.0.clone()),
            hostname: self.hostname.as_ref().map(|h| h.as_str().to_string()),
            // The bridge attachment (address, peers) is the supervisor's to fill in.
            network: match self.network {
                NetworkMode::Host => Network::Host,
                NetworkMode::None | NetworkMode::Bridge => Network::None,
            },
            read_only: self.read_only,
            volumes: self.volumes.iter().map(|v| v.0.clone()).collect(),
            tmpfs: self.tmpfs.iter().map(|t| t.0.clone()).collect(),
            init: self.init,
            cap_add: self.cap_add.iter().filter_map(|c| c.0).collect(),
            cap_drop: self.cap_drop.iter().filter_map(|c| c.0).collect(),
            cap_drop_all: self.cap_drop.iter().any(|c| c.0.is_none()),
            limits: spec::Limits {
                memory: self.memory.as_ref().map(|m| m.0),
                cpus: self.cpus.map(|c| f64::from(c.0) / 1000.0),
                pids: self.pids.as_ref().map(|p| p.0),
            },
            // Kept across restarts (the state directory is memory-backed for now,
            // but the writable layer is the container's, not throwaway).
            throwaway: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert_eq!(RestartPolicy::parse("no"), Ok(RestartPolicy::No));
        assert_eq!(
            RestartPolicy::parse("on-failure:5"),
            Ok(RestartPolicy::OnFailure { max: Some(5) })
        );
        for bad in [
            "",
            "sometimes",
            "on-failure:0",
            "on-failure:x",
            "on-failure:",
        ] {
            assert!(RestartPolicy::parse(bad).is_err(), "{bad}");
        }
        let p = RestartPolicy::OnFailure { max: Some(2) };
        assert!(p.restarts(1, 0) && p.restarts(1, 1) && !p.restarts(1, 2) && !p.restarts(0, 0));
        assert!(RestartPolicy::Always.restarts(0, 1000));
        assert!(!RestartPolicy::No.restarts(1, 0));
    }

    #[test]
    fn restart_policies_display_as_written_in_the_config() {
        for (text, policy) in [
            ("no", RestartPolicy::No),
            ("on-failure", RestartPolicy::OnFailure { max: None }),
            ("on-failure:3", RestartPolicy::OnFailure { max: Some(3) }),
            ("always", RestartPolicy::Always),
            ("unless-stopped", RestartPolicy::UnlessStopped),
        ] {
            assert_eq!(policy.to_string(), text);
            assert_eq!(RestartPolicy::parse(text), Ok(policy));
        }
    }
}
