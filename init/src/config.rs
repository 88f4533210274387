//! The host configuration, `/etc/berth/host.toml`.
//!
//! ```toml
//! version = 1                 # required, first: the schema version this file is written for
//! hostname = "web-1"          # optional, default "berth"
//!
//! [kernel]
//! modules = ["dummy", "veth"] # optional: modules loaded at boot, with their dependencies
//!
//! [shutdown]
//! timeout = "10s"             # optional: SIGTERM → SIGKILL grace at power-off
//!
//! [[image]]                   # optional, repeatable: baked in by `berth build`
//! path = "busybox.oci"
//! name = "busybox:latest"
//!
//! [[container]]               # optional, repeatable: see `workload` and docs/config.md
//! name = "web"
//! image = "busybox:latest"
//! ```
//!
//! Parsing is strict: an unknown key (a typo), a wrong type or a syntax error is an error
//! that names the key path and the line, never a silent default. `docs/config.md` documents
//! every key. The same code validates the file on the build host (`berth build`) and at
//! boot, in the helper that reads it for PID 1 ([`crate::boot_config`]), so a file that
//! passes the build boots.
//!
//! A few keys can be overridden on the kernel command line; see [`CmdlineOverrides`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;

pub use crate::workload::{check_containers, check_images, ContainerConfig, ImageEntry};

/// Where the host's configuration is: read and checked for PID 1 by the helper
/// ([`crate::boot_config`]), and read by netd and the importer.
pub const CONFIG_PATH: &str = "/etc/berth/host.toml";

/// The schema versions this build understands.
pub const SUPPORTED_VERSION: u32 = 1;

/// The largest config file accepted; a host config is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A hostname used when the config names none.
pub const DEFAULT_HOSTNAME: &str = "berth";

/// The whole host configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Schema version; must be [`SUPPORTED_VERSION`].
    pub version: u32,
    /// The machine's hostname.
    #[serde(default = "default_hostname")]
    pub hostname: Hostname,
    /// Kernel settings.
    #[serde(default)]
    pub kernel: KernelConfig,
    /// How the machine shuts down.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Images baked into the build (`[[image]]`).
    #[serde(default, rename = "image")]
    pub images: Vec<ImageEntry>,
    /// Containers PID 1 runs (`[[container]]`).
    #[serde(default, rename = "container")]
    pub containers: Vec<ContainerConfig>,
    /// The host's interfaces and the container bridge (`[network]`).
    #[serde(default)]
    pub network: berth_netd::config::NetworkConfig,
    /// The Docker Engine API (`[api]`).
    #[serde(default)]
    pub api: crate::api::ApiConfig,
}

/// The `[shutdown]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long processes get between SIGTERM and SIGKILL at power-off or reboot.
    #[serde(default = "default_shutdown_timeout")]
    pub timeout: DurationSpec,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout: default_shutdown_timeout(),
        }
    }
}

fn default_shutdown_timeout() -> DurationSpec {
    DurationSpec(std::time::Duration::from_secs(10))
}

/// A duration written as a whole number and a unit: `500ms`, `10s`, `2m`, `1h`; at most
/// one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec(pub std::time::Duration);

impl DurationSpec {
    pub fn parse(text: &str) -> Result<DurationSpec, String> {
        use std::time::Duration;
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let bad = || {
            format!("duration {text:?} is not valid: write a whole number and a unit, as in \"500ms\", \"10s\", \"2m\" or \"1h\"")
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        if d > Duration::from_secs(86_400) {
            return Err(format!("duration {text:?} is longer than a day"));
        }
        Ok(DurationSpec(d))
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DurationSpec::parse(&s).map_err(de::Error::custom)
    }
}

/// The `[kernel]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// Modules to load at boot, besides those matching the hardware.
    #[serde(default)]
    pub modules: Vec<ModuleName>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            version: SUPPORTED_VERSION,
            hostname: default_hostname(),
            kernel: KernelConfig::default(),
            shutdown: ShutdownConfig::default(),
            images: Vec::new(),
            containers: Vec::new(),
            network: Default::default(),
            api: Default::default(),
        }
    }
}

fn default_hostname() -> Hostname {
    Hostname(DEFAULT_HOSTNAME.to_owned())
}

/// A hostname: 1 to 64 bytes of letters, digits, `-` and `.`, in labels that neither start
/// nor end with `-` (RFC 1123; 64 is the kernel's `HOST_NAME_MAX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(String);

impl Hostname {
    /// Validates `name` as a hostname.
    pub fn parse(name: &str) -> Result<Hostname, String> {
        if name.is_empty() || name.len() > 64 {
            return Err(format!("hostname {name:?} must be 1 to 64 characters long"));
        }
        for label in name.split('.') {
            let valid_chars = label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if label.is_empty() || !valid_chars || label.starts_with('-') || label.ends_with('-') {
                return Err(format!(
                    "hostname {name:?} is not valid: use letters, digits and '-' in dot-separated labels that do not start or end with '-'"
                ));
            }
        }
        Ok(Hostname(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Hostname {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hostname::parse(&s).map_err(de::Error::custom)
    }
}

/// A kernel module name as `modprobe` takes it. Dashes and underscores are the same to the
/// kernel; the name is kept with underscores, as `/proc/modules` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleName(String);

impl ModuleName {
    /// The kernel's `MODULE_NAME_LEN` (64) less the terminating NUL and padding: 55 bytes.
    const MAX_LEN: usize = 55;

    /// Validates and normalises a module name.
    pub fn parse(name: &str) -> Result<ModuleName, String> {
        let valid = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(format!(
                "module name {name:?} is not valid: use 1 to {} letters, digits, '_' or '-'",
                Self::MAX_LEN
            ));
        }
        Ok(ModuleName(name.replace('-', "_")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ModuleName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ModuleName::parse(&s).map_err(de::Error::custom)
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: file is {size} bytes, larger than the {MAX_CONFIG_BYTES}-byte limit")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: not UTF-8 text")]
    NotUtf8 { path: PathBuf },
    #[error("{path}{}: {message}", location(*line, key))]
    Invalid {
        path: PathBuf,
        /// 1-based line of the fault, when the parser could place it.
        line: Option<usize>,
        /// Dotted key path of the fault, e.g. `kernel.modules[1]`; empty for the whole file.
        key: String,
        message: String,
    },
    #[error(
        "{path}: version {found} is not supported (this berth reads version {SUPPORTED_VERSION})"
    )]
    UnsupportedVersion { path: PathBuf, found: i64 },
    #[error(
        "{path}: the `version` key is missing; start the file with `version = {SUPPORTED_VERSION}`"
    )]
    MissingVersion { path: PathBuf },
}

fn location(line: Option<usize>, key: &str) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!(": line {line}"));
    }
    if !key.is_empty() {
        out.push_str(&format!(": key `{key}`"));
    }
    out
}

impl HostConfig {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        HostConfig::from_bytes(&HostConfig::read_bytes(path)?, path)
    }

    /// Reads the file at `path`, refusing one over [`MAX_CONFIG_BYTES`]. `berth build`
    /// validates these bytes with [`HostConfig::from_bytes`] and puts the same bytes into
    /// the image, so what boots is exactly what was checked.
    pub fn read_bytes(path: &Path) -> Result<Vec<u8>, ConfigError> {
        use std::io::Read;
        let read_error = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Validates config file bytes; `path` only names the file in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<HostConfig, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 {
            path: path.to_owned(),
        })?;
        HostConfig::parse(text, path)
    }

    /// Parses and validates config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<HostConfig, ConfigError> {
        let config: HostConfig = match toml::from_str(text) {
            Ok(config) => config,
            // `version` decides first, so that a file written for a newer schema says so
            // instead of failing on the first key this build does not know. Only a file
            // that does not parse needs the second, schema-less read that tells.
            Err(e) => return Err(HostConfig::explain(text, path, &e)),
        };
        if config.version != SUPPORTED_VERSION {
            return Err(ConfigError::UnsupportedVersion {
                path: path.to_owned(),
                found: i64::from(config.version),
            });
        }
        for (i, interface) in config.network.interfaces.iter().enumerate() {
            interface
                .validate()
                .map_err(|message| ConfigError::Invalid {
                    path: path.to_owned(),
                    line: crate::tomlpath::header_line(text, &format!("network.interface[{i}]")),
                    key: format!("network.interface[{i}]"),
                    message,
                })?;
        }
        check_images(&config.images)
            .and_then(|()| check_containers(&config.containers))
            .map_err(|e| {
                // The line of the table's header: `container[1]` of `container[1].memory`.
                let table = e
                    .key
                    .find(']')
                    .and_then(|end| e.key.get(..=end))
                    .and_then(|table| crate::tomlpath::header_line(text, table));
                ConfigError::Invalid {
                    path: path.to_owned(),
                    line: table,
                    key: e.key,
                    message: e.message,
                }
            })?;
        Ok(config)
    }

    /// The error for text that did not deserialize into a [`HostConfig`]: a missing,
    /// newer or mistyped `version` if that is the cause, else `err` placed at its line
    /// and key (the key read back from the text at the fault, see `tomlpath`).
    fn explain(text: &str, path: &Path, err: &toml::de::Error) -> ConfigError {
        let version = match toml::from_str::<toml::Table>(text) {
            Ok(table) => table.get("version").cloned(),
            // Not even TOML: the syntax error is the answer.
            Err(syntax) => return invalid(path, text, "", &syntax),
        };
        match version {
            None => ConfigError::MissingVersion {
                path: path.to_owned(),
            },
            Some(toml::Value::Integer(v)) if v != i64::from(SUPPORTED_VERSION) => {
                ConfigError::UnsupportedVersion {
                    path: path.to_owned(),
                    found: v,
                }
            }
            Some(toml::Value::Integer(_)) => {
                let key = err
                    .span()
                    .map(|span| crate::tomlpath::fault_path(text, span, err.message()))
                    .unwrap_or_default();
                invalid(path, text, &key, err)
            }
            Some(_) => ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of_key(text, "version"),
                key: "version".to_owned(),
                message: "must be an integer".to_owned(),
            },
        }
    }
}

/// Builds an [`ConfigError::Invalid`] from a toml error, keeping only its first line of
/// message (toml's own text repeats the source snippet) and turning its byte span into a line.
fn invalid(path: &Path, text: &str, key: &str, err: &toml::de::Error) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        line: err
            .span()
            .map(|span| crate::tomlpath::line_of(text, span.start)),
        key: key.to_owned(),
        message: err.message().trim().to_owned(),
    }
}

/// The line of the first `key =` assignment (`version`, read without the schema).
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// Settings taken from the kernel command line, which win over the config file:
///
/// | parameter | effect |
/// |---|---|
/// | `berth.hostname=NAME` | sets the hostname |
/// | `berth.modules=a,b` | loads these modules too |
///
/// Unknown `berth.*` parameters are reported, not fatal: a typo on a boot loader line must
/// not stop the machine.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CmdlineOverrides {
    pub hostname: Option<Hostname>,
    pub modules: Vec<ModuleName>,
    /// Human-readable problems found while reading the command line.
    pub warnings: Vec<String>,
}

impl CmdlineOverrides {
    /// Parses `/proc/cmdline` text. Parameters are whitespace separated; a double-quoted
    /// value may contain spaces, as the kernel's own parser allows.
    pub fn parse(cmdline: &str) -> CmdlineOverrides {
        let mut out = CmdlineOverrides::default();
        for param in split_cmdline(cmdline) {
            let Some(rest) = param.strip_prefix("berth.") else {
                continue;
            };
            let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
            match key {
                "hostname" => match Hostname::parse(value) {
                    Ok(h) => out.hostname = Some(h),
                    Err(e) => out.warnings.push(format!("berth.hostname: {e}")),
                },
                "modules" => {
                    for name in value.split(',').filter(|n| !n.is_empty()) {
                        match ModuleName::parse(name) {
                            Ok(m) => out.modules.push(m),
                            Err(e) => out.warnings.push(format!("berth.modules: {e}")),
                        }
                    }
                }
                _ => out
                    .warnings
                    .push(format!("unknown kernel parameter berth.{key} ignored")),
            }
        }
        out
    }

    /// Applies the overrides to `config`.
    pub fn apply(&self, config: &mut HostConfig) {
        if let Some(h) = &self.hostname {
            config.hostname = h.clone();
        }
        for m in &self.modules {
            if !config.kernel.modules.contains(m) {
                config.kernel.modules.push(m.clone());
            }
        }
    }
}

/// Splits a kernel command line into parameters, honouring double quotes.
fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    for c in cmdline.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => {
                if !current.is_empty() {
                    params.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        params.push(current);
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostConfig, ConfigError> {
        HostConfig::parse(text, Path::new("host.toml"))
    }

    const CONTAINERS: &str = r#"version = 1

[[image]]
path = "bb.oci"
name = "busybox"

[[container]]
name = "db"
image = "busybox:latest"

[[container]]
name = "web"
image = "busybox:latest"
command = ["httpd", "-f"]
env = { GREETING = "hello" }
workdir = "/www"
user = "1000:1000"
restart = "on-failure:5"
depends_on = ["db"]
memory = "256M"
cpus = 0.5
pids = 256
volumes = ["data:/var/lib/data", "/host/path:/mnt:ro"]
tmpfs = ["/tmp"]
stop_signal = "SIGINT"
stop_timeout = "2s"
cap_add = ["NET_ADMIN"]
cap_drop = ["ALL"]
network = "host"
"#;

    #[test]
    fn containers_parse_into_specs() {
        let c = parse(CONTAINERS).unwrap();
        assert_eq!(c.images[0].name.0.to_string(), "busybox:latest");
        let web = &c.containers[1];
        assert_eq!(
            web.restart,
            crate::workload::RestartPolicy::OnFailure { max: Some(5) }
        );
        assert_eq!(web.stop_signal.as_ref().map(|s| s.0), Some(2));
        let spec = web.spec();
        assert_eq!(spec.limits.memory, Some(256 << 20));
        assert_eq!(spec.limits.cpus, Some(0.5));
        assert_eq!(spec.limits.pids, Some(256));
        assert!(spec.cap_drop_all);
        assert_eq!(spec.volumes.len(), 2);
        assert_eq!(spec.env, [("GREETING".to_string(), "hello".to_string())]);
        assert_eq!(spec.network, berth_runtime::Network::Host);
        assert_eq!(
            c.containers[0].stop_timeout.0,
            std::time::Duration::from_secs(10)
        );
    }

    #[test]
    fn container_errors_name_key_and_line() {
        let cases = [
            (
                "memory = \"256M\"",
                "memory = \"lots\"",
                "container[1].memory",
                "memory size \"lots\"",
            ),
            (
                "restart = \"on-failure:5\"",
                "restart = \"sometimes\"",
                "container[1].restart",
                "restart policy",
            ),
            ("cpus = 0.5", "cpus = 0", "container[1].cpus", "cpus 0"),
            (
                "cpus = 0.5",
                "cpus = 0.5\nhealthcheck = { command = [\"true\"], retries = 0 }",
                "container[1].healthcheck",
                "retries must be at least 1",
            ),
            (
                "cpus = 0.5",
                "cpus = 0.5\nhealthcheck = { command = [\"true\"], interval = \"5\" }",
                "container[1].healthcheck.interval",
                "duration",
            ),
            (
                "name = \"web\"",
                "name = \"../web\"",
                "container[1].name",
                "container name",
            ),
            (
                "tmpfs = [\"/tmp\"]",
                "tmpfs = [\"tmp\"]",
                "container[1].tmpfs[0]",
                "must be absolute",
            ),
            (
                "network = \"host\"",
                "network = \"overlay\"",
                "container[1].network",
                "expected \"bridge\", \"none\" or \"host\"",
            ),
            (
                "pids = 256",
                "pidz = 256",
                "container[1].pidz",
                "unknown field `pidz`",
            ),
            (
                "depends_on = [\"db\"]",
                "depends_on = [\"cache\"]",
                "container[1].depends_on",
                "not a [[container]]",
            ),
            (
                "depends_on = [\"db\"]",
                "depends_on = [\"web\"]",
                "container[1].depends_on",
                "depends on itself",
            ),
            (
                "name = \"web\"",
                "name = \"db\"",
                "container[1].name",
                "used twice",
            ),
            (
                "cap_add = [\"NET_ADMIN\"]",
                "cap_add = [\"ALL\"]",
                "container[1].cap_add",
                "cannot be added",
            ),
            (
                "name = \"busybox\"",
                "name = \"BusyBox\"",
                "image[0].name",
                "invalid image name",
            ),
            (
                "name = \"busybox\"",
                "name = \"busybox\"\n\n[[image]]\npath = \"other.oci\"\nname = \"busybox:latest\"",
                "image[1].name",
                "\"busybox:latest\" is already baked by image[0]",
            ),
            (
                "name = \"busybox\"",
                "name = \"busybox\"\nselect = \"\"",
                "image[0].select",
                "must name an image of the layout",
            ),
            // A fault in a table as a whole is placed at its header.
            (
                "image = \"busybox:latest\"\ncommand",
                "command",
                "container[1]",
                "missing field `image`",
            ),
        ];
        for (from, to, key, message) in cases {
            let text = CONTAINERS.replacen(from, to, 1);
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("key `{key}")), "{to}: {err}");
            assert!(err.contains(message), "{to}: {err}");
            assert!(err.contains(": line "), "{to}: {err}");
        }
        let cycle = CONTAINERS.replacen(
            "name = \"db\"\nimage = \"busybox:latest\"",
            "name = \"db\"\nimage = \"busybox:latest\"\ndepends_on = [\"web\"]",
            1,
        );
        let err = parse(&cycle).unwrap_err().to_string();
        assert!(
            err.contains("dependency cycle: db → web → db")
                || err.contains("dependency cycle: web → db → web"),
            "{err}"
        );
    }

    #[test]
    fn ports_clash_across_address_forms() {
        let two = |a: &str, b: &str| {
            format!(
                "version = 1\n[[container]]\nname = \"a\"\nimage = \"i\"\nports = [{a:?}]\n\
                 [[container]]\nname = \"b\"\nimage = \"i\"\nports = [{b:?}]\n"
            )
        };
        for (a, b) in [
            ("8080:80", "127.0.0.1:8080:81"),
            ("127.0.0.1:8080:81", "8080:80"),
            ("0.0.0.0:8080:80", "10.0.0.1:8080:80"),
            ("127.0.0.1:8080:80", "127.0.0.1:8080:81"),
            ("5353:53/udp", "5353:54/udp"),
        ] {
            let err = parse(&two(a, b)).unwrap_err().to_string();
            assert!(err.contains("key `container[1].ports`"), "{a} {b}: {err}");
            assert!(err.contains("line 6"), "{a} {b}: {err}");
            assert!(err.contains("published by container[0]"), "{a} {b}: {err}");
        }
        for (a, b) in [
            ("127.0.0.1:8080:80", "10.0.0.1:8080:80"),
            ("8080:80", "8080:80/udp"),
            ("8080:80", "8081:80"),
        ] {
            assert!(parse(&two(a, b)).is_ok(), "{a} {b} refused");
        }
    }

    #[test]
    fn container_checks_place_the_header_even_with_a_comment() {
        let text = "version = 1\n[[container]]\nname = \"a\"\nimage = \"i\"\n\n\
                    [[container]] # again\nname = \"a\"\nimage = \"i\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("container[1]"), "{err}");
        assert!(err.contains("line 6"), "{err}");
    }

    #[test]
    fn a_long_dependency_chain_is_checked_without_recursion() {
        let mut text = String::from("version = 1\n");
        for i in 0..5000 {
            text.push_str(&format!("[[container]]\nname = \"c{i}\"\nimage = \"i\"\n"));
            if i > 0 {
                text.push_str(&format!("depends_on = [\"c{}\"]\n", i - 1));
            }
        }
        assert_eq!(parse(&text).unwrap().containers.len(), 5000);
        let closed = text.replacen(
            "name = \"c0\"\n",
            "name = \"c0\"\ndepends_on = [\"c4999\"]\n",
            1,
        );
        let err = parse(&closed).unwrap_err().to_string();
        assert!(
            err.contains("dependency cycle: c0 → c4999 → c4998"),
            "{}",
            &err[..200.min(err.len())]
        );
    }

    #[test]
    fn full_config_parses() {
        let c = parse("version = 1\nhostname = \"web-1.example\"\n[kernel]\nmodules = [\"dummy\", \"nf-tables\"]\n")
            .unwrap();
        assert_eq!(c.hostname.as_str(), "web-1.example");
        let mods: Vec<_> = c.kernel.modules.iter().map(|m| m.as_str()).collect();
        assert_eq!(mods, ["dummy", "nf_tables"]);
    }

    #[test]
    fn defaults_apply_to_a_minimal_file() {
        assert_eq!(parse("version = 1\n").unwrap(), HostConfig::default());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err =
            parse("version = 1\nhostname = \"a\"\n[kernel]\nmodles = [\"dummy\"]\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("key `kernel.modles`"), "{msg}");
    }

    #[test]
    fn api_table_is_read_and_checked() {
        let c =
            parse("version = 1\n[api]\nlisten = [\"tcp://0.0.0.0:2375\"]\ninsecure_tcp = true\n")
                .unwrap();
        assert_eq!(c.api.listen, ["tcp://0.0.0.0:2375"]);
        assert_eq!(HostConfig::default().api.listen, crate::api::DEFAULT_LISTEN);
        let err = parse("version = 1\n\n[api]\nlisten = [\"tcp://0.0.0.0:2375\"]\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("insecure_tcp = true"), "{msg}");
        assert!(msg.contains("api"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = parse("version = 1\n\n[kernel]\nmodules = \"dummy\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("key `kernel.modules`"), "{msg}");
    }

    #[test]
    fn invalid_module_name_is_placed() {
        let err = parse("version = 1\n[kernel]\nmodules = [\"ok\", \"../evil\"]\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("kernel.modules[1]"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("../evil"), "{msg}");
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse("version = 1\nhostname = \"unterminated\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn bad_hostnames_are_rejected() {
        for bad in ["", "-a", "a-", "a..b", "a b", "x;reboot", &"a".repeat(65)] {
            assert!(Hostname::parse(bad).is_err(), "{bad:?} accepted");
        }
        let err = parse("version = 1\nhostname = \"bad_name\"\n").unwrap_err();
        assert!(err.to_string().contains("key `hostname`"), "{err}");
    }

    #[test]
    fn version_is_required_and_checked() {
        assert!(matches!(
            parse("hostname = \"a\"\n"),
            Err(ConfigError::MissingVersion { .. })
        ));
        // A newer file is named as such even though it has keys this build does not know.
        assert!(matches!(
            parse("version = 2\n[future]\nx = 1\n"),
            Err(ConfigError::UnsupportedVersion { found: 2, .. })
        ));
        let err = parse("version = \"1\"\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(
            DurationSpec::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            DurationSpec::parse("2m").unwrap().0,
            Duration::from_secs(120)
        );
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "2d", "25h"] {
            assert!(DurationSpec::parse(bad).is_err(), "{bad:?} accepted");
        }
        let c = parse("version = 1\n[shutdown]\ntimeout = \"3s\"\n").unwrap();
        assert_eq!(c.shutdown.timeout.0, Duration::from_secs(3));
        let err = parse("version = 1\n[shutdown]\ntimeout = \"3 s\"\n").unwrap_err();
        assert!(err.to_string().contains("shutdown.timeout"), "{err}");
    }

    #[test]
    fn cmdline_overrides_win() {
        let o = CmdlineOverrides::parse(
            "console=ttyS0 berth.hostname=from-cmdline quiet berth.modules=dummy,veth berth.nope=1",
        );
        assert_eq!(o.hostname.as_ref().unwrap().as_str(), "from-cmdline");
        assert_eq!(o.modules.len(), 2);
        assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
        let mut c = HostConfig::default();
        o.apply(&mut c);
        assert_eq!(c.hostname.as_str(), "from-cmdline");
        assert_eq!(c.kernel.modules.len(), 2);
    }

    #[test]
    fn cmdline_quotes_and_bad_values() {
        let o = CmdlineOverrides::parse("a=\"x y\" berth.hostname=\"bad name\"");
        assert!(o.hostname.is_none());
        assert_eq!(o.warnings.len(), 1);
    }

    /// Parsed on every boot (the config by the helper, its JSON report and the command
    /// line by PID 1): no input may panic a parser. A cheap, deterministic stand-in for a
    /// fuzzer: byte flips, insertions and truncations of valid inputs.
    #[test]
    fn mutated_inputs_never_panic() {
        let config = "version = 1\nhostname = \"a-b.c\"\n[kernel]\nmodules = [\"dummy\", \"veth\"]\n[shutdown]\ntimeout = \"10s\"\n";
        let cmdline = "console=ttyS0 berth.hostname=\"x y\" berth.modules=a,b,,c berth.z=1";
        let alphabet = b"\"'[]{}=.,\\\n #\0\xff0123456789abcdefghijklmnopqrstuvwxyz-_";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("host.toml"), config).unwrap();
        let report =
            serde_json::to_string(&crate::boot_config::report(&dir.path().join("host.toml")))
                .unwrap();
        for base in [config, cmdline, &report] {
            for _ in 0..10_000 {
                let mut bytes = base.as_bytes().to_vec();
                for _ in 0..(next() % 4 + 1) {
                    let at = (next() as usize) % (bytes.len() + 1);
                    let c = alphabet[(next() as usize) % alphabet.len()];
                    match next() % 3 {
                        0 if at < bytes.len() => bytes[at] = c,
                        1 => bytes.insert(at, c),
                        _ => bytes.truncate(at),
                    }
                }
                let text = String::from_utf8_lossy(&bytes);
                let _ = HostConfig::parse(&text, Path::new("fuzz.toml"));
                let _ = CmdlineOverrides::parse(&text);
                let _ = crate::boot_config::decode(&bytes);
            }
        }
    }
}
