//! What a container is asked to be, already validated: the one type that PID 1's
//! `[[container]]` tables and `berth run`'s flags both turn into.
//!
//! The parsers here are the single place where names, sizes, CPU counts, volumes and
//! capability names are checked, so the config file and the command line reject the
//! same things with the same words.

use std::path::PathBuf;
use std::str::FromStr;

use caps::Capability;

/// Why a container setting was rejected. Each variant carries the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("container name {0:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]{{0,62}}")]
    Name(String),
    #[error("memory size {0:?}: expected a number with an optional unit b, k, m or g (e.g. 256M)")]
    Memory(String),
    #[error("memory size {0:?} is below the 6 MiB a container needs to start")]
    MemoryTooSmall(String),
    #[error("cpus {0}: expected a number above 0 and at most 1024")]
    Cpus(String),
    #[error("pids {0}: expected at least 1")]
    Pids(u64),
    #[error("volume {0:?}: expected SOURCE:/ABSOLUTE/DEST[:ro|:rw], SOURCE a volume name or an absolute host path")]
    Volume(String),
    #[error("path {0:?} inside the container must be absolute and without `..`")]
    ContainerPath(String),
    #[error("unknown capability {0:?} (use names like NET_ADMIN or CAP_NET_ADMIN, or ALL)")]
    Capability(String),
    #[error("environment variable name {0:?} must be non-empty and contain neither '=' nor NUL")]
    EnvName(String),
    #[error("{what} {value:?} contains a NUL byte")]
    Nul { what: &'static str, value: String },
    #[error("user {0:?}: expected NAME, UID, NAME:GROUP or UID:GID")]
    User(String),
    #[error("signal {0:?}: expected a name such as SIGTERM or TERM, or a number from 1 to 64")]
    Signal(String),
    #[error("{0} cannot be empty")]
    Empty(&'static str),
}

/// The container's network: a private namespace with only loopback, the host's
/// namespace, or a private namespace joined to a bridge (`eth0`, an address, a default
/// route through the bridge).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    #[default]
    None,
    Host,
    Bridge(berth_netd::container::Attachment),
}

/// Resource limits, written to the container's cgroup before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// `memory.max` in bytes (swap is disabled for the container).
    pub memory: Option<u64>,
    /// CPU bandwidth as a number of CPUs (`cpu.max`).
    pub cpus: Option<f64>,
    /// `pids.max`.
    pub pids: Option<u64>,
}

/// Where a volume comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A named volume under the state directory, created on first use.
    Named(String),
    /// An absolute host path, bind-mounted.
    Host(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub source: VolumeSource,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// A fully validated container description.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    /// A reference resolved in the image store (`name:tag`, a digest or its prefix).
    pub image: String,
    /// Replaces the image's Entrypoint (and then the image's Cmd is not used).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    pub command: Option<Vec<String>>,
    /// Set on top of the image's Env, in order.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// Defaults to the container name.
    pub hostname: Option<String>,
    pub network: Network,
    pub read_only: bool,
    pub volumes: Vec<Volume>,
    pub tmpfs: Vec<String>,
    /// Run a tiny reaper as the container's PID 1, with the command as its child.
    pub init: bool,
    pub cap_add: Vec<Capability>,
    pub cap_drop: Vec<Capability>,
    /// Drop every capability not in `cap_add` (`cap_drop = ["ALL"]`).
    pub cap_drop_all: bool,
    pub limits: Limits,
    /// The writable layer is thrown away when the container ends (`berth run --rm`):
    /// it is mounted with overlayfs' `volatile` option, so nothing is ever synced to
    /// disk for it, not even when the overlay goes away at exit.
    pub throwaway: bool,
}

impl ContainerSpec {
    /// A spec with Docker's defaults for everything but the name and image.
    pub fn new(name: &str, image: &str) -> Result<ContainerSpec, SpecError> {
        Ok(ContainerSpec {
            name: validate_name(name)?,
            image: non_empty(image, "image")?.to_string(),
            entrypoint: None,
            command: None,
            env: Vec::new(),
            workdir: None,
            user: None,
            hostname: None,
            network: Network::None,
            read_only: false,
            volumes: Vec::new(),
            tmpfs: Vec::new(),
            init: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            cap_drop_all: false,
            limits: Limits::default(),
            throwaway: false,
        })
    }

    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.name)
    }
}

fn non_empty<'a>(s: &'a str, what: &'static str) -> Result<&'a str, SpecError> {
    if s.is_empty() {
        Err(SpecError::Empty(what))
    } else {
        Ok(s)
    }
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}`: safe as a directory and cgroup name.
pub fn validate_name(name: &str) -> Result<String, SpecError> {
    let bytes = name.as_bytes();
    let ok = matches!(bytes.first(), Some(c) if c.is_ascii_alphanumeric())
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(SpecError::Name(name.to_string()))
    }
}

/// `256M`, `1g`, `1048576`, `512k`, `100b` (units are powers of 1024, as Docker's).
pub fn parse_memory(s: &str) -> Result<u64, SpecError> {
    let err = || SpecError::Memory(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| err())?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(err()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(err)?;
    if bytes < 6 << 20 {
        return Err(SpecError::MemoryTooSmall(s.to_string()));
    }
    Ok(bytes)
}

pub fn validate_cpus(cpus: f64) -> Result<f64, SpecError> {
    if cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0 {
        Ok(cpus)
    } else {
        Err(SpecError::Cpus(cpus.to_string()))
    }
}

pub fn validate_pids(pids: u64) -> Result<u64, SpecError> {
    if pids >= 1 {
        Ok(pids)
    } else {
        Err(SpecError::Pids(pids))
    }
}

/// An absolute path inside the container, normalised, with no `..` component.
pub fn container_path(s: &str) -> Result<String, SpecError> {
    let err = || SpecError::ContainerPath(s.to_string());
    if !s.starts_with('/') || s.contains('\0') {
        return Err(err());
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(err()),
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// `NAME:/dst`, `/host/path:/dst`, either with `:ro` or `:rw`.
pub fn parse_volume(s: &str) -> Result<Volume, SpecError> {
    let err = || SpecError::Volume(s.to_string());
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, read_only) = match parts.as_slice() {
        [src, dst] => (*src, *dst, false),
        [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        _ => return Err(err()),
    };
    let target = container_path(target).map_err(|_| err())?;
    let source = if source.starts_with('/') {
        if source.contains('\0') || source.split('/').any(|c| c == "..") {
            return Err(err());
        }
        VolumeSource::Host(PathBuf::from(source))
    } else {
        VolumeSource::Named(validate_name(source).map_err(|_| err())?)
    };
    Ok(Volume {
        source,
        target,
        read_only,
    })
}

/// `NET_ADMIN`, `cap_net_admin`, `CAP_NET_ADMIN`; `None` for `ALL`.
pub fn parse_capability(s: &str) -> Result<Option<Capability>, SpecError> {
    let upper = s.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    Capability::from_str(&full)
        .map(Some)
        .map_err(|_| SpecError::Capability(s.to_string()))
}

/// Environment variable names: anything but empty, `=` or NUL (as the kernel allows).
pub fn validate_env(name: &str, value: &str) -> Result<(String, String), SpecError> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(SpecError::EnvName(name.to_string()));
    }
    if value.contains('\0') {
        return Err(SpecError::Nul {
            what: "environment value",
            value: value.to_string(),
        });
    }
    Ok((name.to_string(), value.to_string()))
}

/// Arguments cannot carry NUL bytes through `execve`.
pub fn validate_argv(what: &'static str, argv: &[String]) -> Result<(), SpecError> {
    match argv.iter().find(|a| a.contains('\0')) {
        Some(a) => Err(SpecError::Nul {
            what,
            value: a.clone(),
        }),
        None => Ok(()),
    }
}

/// `NAME`, `UID`, `NAME:GROUP`, `UID:GID` — resolved later against the image's files.
pub fn validate_user(s: &str) -> Result<String, SpecError> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    };
    let mut it = s.splitn(2, ':');
    let user = it.next().unwrap_or("");
    let group_ok = it.next().is_none_or(ok_part);
    if ok_part(user) && group_ok {
        Ok(s.to_string())
    } else {
        Err(SpecError::User(s.to_string()))
    }
}

/// `SIGTERM`, `TERM`, `15`.
pub fn parse_signal(s: &str) -> Result<i32, SpecError> {
    let err = || SpecError::Signal(s.to_string());
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(err())
        };
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|s| s as i32)
        .map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("web").is_ok());
        assert!(validate_name("a.b-c_1").is_ok());
        assert!(validate_name(&"a".repeat(63)).is_ok());
        for bad in ["", "-a", ".a", "a/b", "../x", "a b", &"a".repeat(64), "é"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256M"), Ok(256 << 20));
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("8388608"), Ok(8 << 20));
        assert_eq!(parse_memory("10240k"), Ok(10 << 20));
        assert!(matches!(
            parse_memory("1k"),
            Err(SpecError::MemoryTooSmall(_))
        ));
        for bad in ["", "M", "12Q", "-5M", "99999999999999999999G", "1.5G"] {
            assert!(parse_memory(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn volumes() {
        assert_eq!(
            parse_volume("data:/var/lib/data"),
            Ok(Volume {
                source: VolumeSource::Named("data".into()),
                target: "/var/lib/data".into(),
                read_only: false
            })
        );
        assert_eq!(
            parse_volume("/host/path:/mnt//x/:ro"),
            Ok(Volume {
                source: VolumeSource::Host("/host/path".into()),
                target: "/mnt/x".into(),
                read_only: true
            })
        );
        for bad in [
            "data",
            "data:rel",
            "data:/a:rx",
            "../x:/a",
            "/h/../etc:/a",
            "data:/a/../..",
            "a:b:c:d",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capabilities_and_signals() {
        assert_eq!(
            parse_capability("net_admin"),
            Ok(Some(Capability::CAP_NET_ADMIN))
        );
        assert_eq!(
            parse_capability("CAP_SYS_ADMIN"),
            Ok(Some(Capability::CAP_SYS_ADMIN))
        );
        assert_eq!(parse_capability("all"), Ok(None));
        assert!(parse_capability("CAP_FLY").is_err());
        assert_eq!(parse_signal("SIGTERM"), Ok(15));
        assert_eq!(parse_signal("kill"), Ok(9));
        assert_eq!(parse_signal("10"), Ok(10));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("SIGNOPE").is_err());
    }

    #[test]
    fn users_env_paths() {
        assert!(validate_user("1000:1000").is_ok());
        assert!(validate_user("nobody").is_ok());
        for bad in ["", ":1", "a:", "a b", "a:b:c", "x/y"] {
            assert!(validate_user(bad).is_err(), "{bad:?}");
        }
        assert!(validate_env("A", "b=c").is_ok());
        assert!(validate_env("A=B", "c").is_err());
        assert!(validate_env("", "c").is_err());
        assert_eq!(container_path("/a/./b//"), Ok("/a/b".into()));
        assert!(container_path("a").is_err());
        assert!(container_path("/a/../b").is_err());
        assert!(validate_cpus(0.5).is_ok());
        assert!(validate_cpus(0.0).is_err());
        assert!(validate_cpus(f64::NAN).is_err());
    }
}
