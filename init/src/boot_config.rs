//! How PID 1 gets its config at boot: `berth-helper read-config` reads and checks
//! `/etc/berth/host.toml`, and PID 1 reads the helper's answer. PID 1 holds no TOML parser.
//!
//! Why a child process: the TOML parser and the code that places a fault at its line and
//! key are about 280 KB of machine code, and PID 1's resident memory is mostly the text of
//! its binary (see [`crate::helper`]). A parser fault in the helper is an error line, never
//! a kernel panic.
//!
//! The answer is one JSON document on the helper's stdout, a [`Report`]. A good file comes
//! back as its own tables converted to JSON, key for key, so PID 1 deserializes it with the
//! same `Deserialize` impls as the TOML: the helper has already run every check of
//! [`HostConfig::load`] on it (the checks `berth build` runs too), and a file that passes
//! there means the same thing here. A bad file comes back as the error text, naming the
//! file, the line and the key.
//!
//! PID 1 waits at most [`REPORT_TIMEOUT`] (a config that is a FIFO would block a read
//! forever), reads at most [`MAX_REPORT_BYTES`], and trusts a report only from a helper
//! that exited 0.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, HostConfig, CONFIG_PATH, MAX_CONFIG_BYTES};

/// How long PID 1 waits for the helper's report before it kills the helper.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest report PID 1 reads: a config is at most [`MAX_CONFIG_BYTES`] of TOML, and
/// JSON escaping can at most double a string's length.
pub const MAX_REPORT_BYTES: u64 = 4 * MAX_CONFIG_BYTES;

/// The helper's answer. `C` is [`toml::Table`] where the helper writes it and
/// [`HostConfig`] where PID 1 reads it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Report<C> {
    /// The file passed every check; its tables.
    Config(C),
    /// There is no file: the defaults apply.
    Missing,
    /// Why the file cannot be used (a [`ConfigError`]'s text).
    Invalid(String),
}

/// Why PID 1 has no config from the helper. Every variant but [`LoadError::Invalid`] is
/// a fault of the reader, not of the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is unusable; the helper's text names the file, line and key.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot start the config reader ({}): {source}", reader())]
    Spawn { source: std::io::Error },
    #[error("reading the report of the config reader ({}): {source}", reader())]
    Read { source: std::io::Error },
    #[error(
        "the config reader ({}) gave no report within {} s and was killed",
        reader(),
        REPORT_TIMEOUT.as_secs()
    )]
    Timeout,
    #[error(
        "the config reader ({}) did not exit within {} s of its report and was killed",
        reader(),
        REPORT_TIMEOUT.as_secs()
    )]
    Hung,
    #[error(
        "the report of the config reader ({}) is larger than {MAX_REPORT_BYTES} bytes",
        reader()
    )]
    TooLarge,
    #[error("the config reader ({}) failed: {status}", reader())]
    Failed { status: ExitStatus },
    #[error(
        "the report of the config reader ({}) does not decode: {source}",
        reader()
    )]
    Decode { source: serde_json::Error },
}

impl LoadError {
    /// True when the file itself is at fault (and fixing it is the cure).
    pub fn is_invalid_file(&self) -> bool {
        matches!(self, LoadError::Invalid(_))
    }
}

/// The reader's command line, for errors.
fn reader() -> String {
    format!(
        "{} {}",
        crate::helper::HELPER_PATH,
        crate::helper::READ_CONFIG_ARG
    )
}

/// PID 1's side: the config at [`CONFIG_PATH`], `None` if there is no file.
pub fn load() -> Result<Option<HostConfig>, LoadError> {
    load_from(
        crate::helper::command(crate::helper::READ_CONFIG_ARG),
        REPORT_TIMEOUT,
    )
}

/// Runs `command` as the config reader and decodes its report, killing it after `timeout`.
pub fn load_from(mut command: Command, timeout: Duration) -> Result<Option<HostConfig>, LoadError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| LoadError::Spawn { source })?;
    let deadline = Instant::now() + timeout;
    let report = match child.stdout.take() {
        Some(stdout) => read_until(stdout, deadline),
        None => Err(LoadError::Read {
            source: std::io::Error::other("no stdout pipe"),
        }),
    };
    let report = match report {
        Ok(bytes) => bytes,
        Err(e) => {
            stop(&mut child);
            return Err(e);
        }
    };
    let status = wait_until(&mut child, deadline)?;
    if !status.success() {
        return Err(LoadError::Failed { status });
    }
    decode(&report)
}

/// Decodes a report's bytes.
pub fn decode(report: &[u8]) -> Result<Option<HostConfig>, LoadError> {
    match serde_json::from_slice(report).map_err(|source| LoadError::Decode { source })? {
        Report::Config(config) => Ok(Some(config)),
        Report::Missing => Ok(None),
        Report::Invalid(message) => Err(LoadError::Invalid(message)),
    }
}

/// Reads `stdout` to its end, by `deadline` and up to [`MAX_REPORT_BYTES`].
fn read_until(mut stdout: ChildStdout, deadline: Instant) -> Result<Vec<u8>, LoadError> {
    let mut report = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LoadError::Timeout);
        }
        // Rounded up, so that the last wait does not spin at 0 ms before the deadline.
        let wait_ms = u16::try_from(left.as_millis() + 1).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(wait_ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(LoadError::Read { source: e.into() }),
        }
        match stdout.read(&mut chunk) {
            Ok(0) => return Ok(report),
            Ok(n) => {
                report.extend_from_slice(chunk.get(..n).unwrap_or_default());
                if report.len() as u64 > MAX_REPORT_BYTES {
                    return Err(LoadError::TooLarge);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(LoadError::Read { source }),
        }
    }
}

/// Reaps a reader that has closed its stdout, by `deadline` (it exits right after).
fn wait_until(child: &mut Child, deadline: Instant) -> Result<ExitStatus, LoadError> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(None) => {
                stop(child);
                return Err(LoadError::Hung);
            }
            Err(source) => {
                stop(child);
                return Err(LoadError::Read { source });
            }
        }
    }
}

/// How long PID 1 waits for a killed reader to be gone before leaving it to the event
/// loop's reaper (a process stuck in the kernel, on a hung filesystem say, outlives
/// SIGKILL for as long as it is stuck).
const KILLED_REAP_WAIT: Duration = Duration::from_secs(1);

/// Kills a reader whose report PID 1 gave up on, and reaps it if it goes within
/// [`KILLED_REAP_WAIT`].
fn stop(child: &mut Child) {
    if let Err(e) = child.kill() {
        log::warn!("cannot kill the config reader: {e}");
    }
    let deadline = Instant::now() + KILLED_REAP_WAIT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Ok(Some(_)) => return,
            Err(e) => {
                log::warn!("cannot reap the config reader: {e}");
                return;
            }
        }
    }
    log::warn!(
        "the killed config reader (pid {}) is still there; it is reaped when it ends",
        child.id()
    );
}

/// The helper's side, for the file at `path`: what it reports.
pub fn report(path: &Path) -> Report<toml::Table> {
    let checked = HostConfig::read_bytes(path)
        .and_then(|bytes| HostConfig::from_bytes(&bytes, path).map(|_| bytes));
    match checked {
        Ok(bytes) => {
            // `from_bytes` has parsed these bytes as UTF-8 TOML already.
            let tables = std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|text| toml::from_str(text).map_err(|e| e.to_string()));
            match tables {
                Ok(tables) => Report::Config(tables),
                Err(e) => Report::Invalid(format!("{}: {e}", path.display())),
            }
        }
        Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Report::Missing
        }
        Err(e) => Report::Invalid(e.to_string()),
    }
}

/// `berth-helper read-config`: writes the report on [`CONFIG_PATH`] to stdout; the exit code.
pub fn helper_main() -> i32 {
    let report = report(Path::new(CONFIG_PATH));
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut stdout, &report)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => 0,
        Err(e) => {
            log::error!("read-config: cannot write the report: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of the config, with values away from their defaults.
    const EVERY_KEY: &str = r#"version = 1
hostname = "web-1.example"

[kernel]
modules = ["dummy", "nf-tables"]

[shutdown]
timeout = "2m"

[[image]]
path = "bb.oci"
name = "busybox"

[[container]]
name = "db"
image = "busybox:latest"
entrypoint = ["/bin/sh", "-c"]
read_only = true
init = true
network = "none"
log_console = false
healthcheck = { command = ["true"], interval = "5s", timeout = "2s", retries = 4, start_period = "10s" }

[[container]]
name = "web"
image = "busybox:latest"
hostname = "www"
command = ["httpd", "-f"]
env = { GREETING = "hello", "QUOTED \" KEY" = "\u00e9\n" }
workdir = "/www"
user = "1000:1000"
restart = "on-failure:5"
depends_on = ["db", "network-online"]
memory = "256M"
cpus = 0.25
pids = 256
volumes = ["data:/var/lib/data", "/host/path:/mnt:ro"]
tmpfs = ["/tmp"]
stop_signal = "SIGINT"
stop_timeout = "2s"
cap_add = ["NET_ADMIN"]
cap_drop = ["ALL"]
ports = ["8080:80", "5353:53/udp", "127.0.0.1:9000:9000"]

[[container]]
name = "counter"
image = "busybox"
cpus = 2
restart = "unless-stopped"
network = "host"

[[network.interface]]
match = { name = "eth0" }
dhcp = false
addresses = ["192.168.1.10/24"]
gateway = "192.168.1.1"
dns = ["1.1.1.1"]
mtu = 1400

[[network.interface]]
match = { mac = "52:54:00:12:34:56" }

[network.bridge]
name = "br-c"
subnet = "10.99.0.0/24"
"#;

    fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// What PID 1 gets from the helper's report on `path`.
    fn through_report(path: &Path) -> Result<Option<HostConfig>, LoadError> {
        decode(&serde_json::to_vec(&report(path)).unwrap())
    }

    #[test]
    fn the_report_carries_every_key_unchanged() {
        let (_dir, path) = write_config(EVERY_KEY);
        let parsed = HostConfig::load(&path).unwrap();
        assert_ne!(parsed, HostConfig::default());
        assert_eq!(through_report(&path).unwrap(), Some(parsed));
    }

    #[test]
    fn a_missing_file_reports_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(through_report(&dir.path().join("host.toml")).unwrap(), None);
    }

    #[test]
    fn a_bad_file_reports_its_line_and_key() {
        let (_dir, path) = write_config("version = 1\n[kernel]\nmodles = []\n");
        let err = through_report(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("kernel.modles") && err.contains("host.toml"),
            "{err}"
        );
        let (_dir, path) = write_config(
            "version = 1\n[[container]]\nname = \"a\"\nimage = \"b\"\nmemory = \"1k\"\n",
        );
        let err = through_report(&path).unwrap_err().to_string();
        assert!(err.contains("container[0].memory"), "{err}");
    }

    fn run_reader(script: &str, timeout: Duration) -> Result<Option<HostConfig>, LoadError> {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        load_from(command, timeout)
    }

    #[test]
    fn a_reader_that_says_nothing_is_killed_at_the_deadline() {
        // Silent, and silent after closing its stdout with a report written.
        for (script, hung) in [
            ("sleep 30", false),
            ("printf '\"missing\"'; exec >&-; sleep 30", true),
        ] {
            let started = Instant::now();
            let err = run_reader(script, Duration::from_millis(200)).unwrap_err();
            if hung {
                assert!(matches!(err, LoadError::Hung), "{script}: {err}");
            } else {
                assert!(matches!(err, LoadError::Timeout), "{script}: {err}");
            }
            assert!(
                err.to_string().contains("berth-helper read-config"),
                "{err}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn only_a_whole_report_from_a_clean_exit_counts() {
        let long = Duration::from_secs(20);
        assert!(matches!(run_reader("printf '\"missing\"'", long), Ok(None)));
        let err = run_reader("printf '\"missing\"'; exit 3", long).unwrap_err();
        assert!(matches!(err, LoadError::Failed { .. }), "{err}");
        let err = run_reader(
            "printf '{\"config\": {\"version\": 1, \"bogus\": 2}}'",
            long,
        )
        .unwrap_err();
        assert!(
            matches!(err, LoadError::Decode { .. }) && err.to_string().contains("bogus"),
            "{err}"
        );
        let err = run_reader("printf 'not json'", long).unwrap_err();
        assert!(matches!(err, LoadError::Decode { .. }), "{err}");
        let err = run_reader("head -c 5000000 /dev/zero", long).unwrap_err();
        assert!(matches!(err, LoadError::TooLarge), "{err}");
        let err = load_from(Command::new("/nonexistent/reader"), long).unwrap_err();
        assert!(matches!(err, LoadError::Spawn { .. }), "{err}");
    }
}
