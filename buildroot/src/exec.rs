//! The one place that runs external tools (`apt-get`, `dpkg-deb`, `qemu-system-x86_64`).
//!
//! Every failure records the full command line, so that the user can paste it into a shell
//! and see for themselves; a tool that ran and failed also records its exit status and
//! what it wrote to stderr.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// A command line, kept printable for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub program: OsString,
    pub args: Vec<OsString>,
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", shell_quote(&self.program.to_string_lossy()))?;
        for arg in &self.args {
            write!(f, " {}", shell_quote(&arg.to_string_lossy()))?;
        }
        Ok(())
    }
}

/// Quotes `word` for a POSIX shell when it needs it, so that printed commands can be pasted.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Why an external command failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run `{command}`: {program} is not installed or not on PATH")]
    NotFound {
        command: CommandLine,
        program: String,
        source: std::io::Error,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: CommandLine,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}){}", stderr_suffix(stderr))]
    Failed {
        command: CommandLine,
        status: ExitStatus,
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(": {trimmed}")
    }
}

impl ExecError {
    /// What the tool wrote to stderr, if it ran.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ExecError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// Builds and runs one external command.
#[derive(Debug, Clone)]
pub struct Exec {
    line: CommandLine,
    cwd: Option<PathBuf>,
}

impl Exec {
    pub fn new(program: impl Into<OsString>) -> Exec {
        Exec {
            line: CommandLine {
                program: program.into(),
                args: Vec::new(),
            },
            cwd: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Exec {
        self.line.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.line.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Exec {
        self.cwd = Some(dir.to_owned());
        self
    }

    pub fn command_line(&self) -> &CommandLine {
        &self.line
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.line.program);
        cmd.args(&self.line.args);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    fn spawn_error(&self, source: std::io::Error) -> ExecError {
        if source.kind() == std::io::ErrorKind::NotFound {
            ExecError::NotFound {
                command: self.line.clone(),
                program: self.line.program.to_string_lossy().into_owned(),
                source,
            }
        } else {
            ExecError::Spawn {
                command: self.line.clone(),
                source,
            }
        }
    }

    /// Runs the command to completion with stdout and stderr captured; returns stdout.
    /// stderr is logged at debug level on success (tools print warnings there).
    pub fn output(&self) -> Result<Vec<u8>, ExecError> {
        log::debug!("running {}", self.line);
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(ExecError::Failed {
                command: self.line.clone(),
                status: out.status,
                stderr,
            });
        }
        if !stderr.trim().is_empty() {
            log::debug!("{}: {}", self.line.program.to_string_lossy(), stderr.trim());
        }
        Ok(out.stdout)
    }

    /// Starts the command after `configure` has set its stdio and hooks, and returns it
    /// running: the caller waits for it.
    pub fn spawn(
        &self,
        configure: impl FnOnce(&mut Command),
    ) -> Result<std::process::Child, ExecError> {
        log::info!("running {}", self.line);
        let mut cmd = self.command();
        configure(&mut cmd);
        cmd.spawn().map_err(|e| self.spawn_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_pasteable() {
        let e = Exec::new("qemu")
            .arg("-append")
            .arg("console=ttyS0 quiet")
            .arg("it's");
        assert_eq!(
            e.command_line().to_string(),
            r"qemu -append 'console=ttyS0 quiet' 'it'\''s'"
        );
    }

    #[test]
    fn failure_records_command_status_and_stderr() {
        let err = Exec::new("sh")
            .args(["-c", "echo boom >&2; exit 3"])
            .output()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
        assert_eq!(err.stderr().map(str::trim), Some("boom"));
    }

    #[test]
    fn missing_program_is_named() {
        let err = Exec::new("berth-no-such-tool").output().unwrap_err();
        assert!(matches!(err, ExecError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("not installed"), "{err}");
    }

    #[test]
    fn output_returns_stdout() {
        let out = Exec::new("sh").args(["-c", "printf hi"]).output().unwrap();
        assert_eq!(out, b"hi");
    }
}
