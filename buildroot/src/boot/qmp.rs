//! Just enough QMP for `berth boot` to press the guest's power button on its private
//! control socket: the greeting, `qmp_capabilities`, then one command, each reply read
//! with a timeout so that a stuck QEMU cannot hold `berth boot` up.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a QMP command failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to the QMP socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP socket {path} closed before {command} returned")]
    Closed { path: PathBuf, command: String },
    #[error("QMP {command} failed: {reply}")]
    Refused { command: String, reply: String },
}

/// Runs `command` (without arguments) on the QMP socket at `path`, waiting at most
/// `timeout` for each reply.
pub fn execute(path: &Path, command: &str, timeout: Duration) -> Result<(), QmpError> {
    let io = |source| QmpError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(|source| QmpError::Connect {
        path: path.to_owned(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut writer = stream.try_clone().map_err(io)?;
    let mut replies = BufReader::new(stream);
    for step in ["qmp_capabilities", command] {
        writeln!(writer, "{{\"execute\":\"{step}\"}}").map_err(io)?;
        // The greeting and events come before the reply; the reply has "return" or
        // "error".
        loop {
            let mut line = String::new();
            if replies.read_line(&mut line).map_err(io)? == 0 {
                return Err(QmpError::Closed {
                    path: path.to_owned(),
                    command: step.to_owned(),
                });
            }
            if line.contains("\"return\"") {
                break;
            }
            if line.contains("\"error\"") {
                return Err(QmpError::Refused {
                    command: step.to_owned(),
                    reply: line.trim().to_owned(),
                });
            }
        }
    }
    Ok(())
}
