//! A small synchronous QMP client over a unix socket.
//!
//! QMP is line-delimited JSON: the server greets with `{"QMP": ...}`, the
//! client must send `qmp_capabilities` before anything else, and after that
//! replies (`return` or `error`, echoing our `id`) are interleaved with
//! asynchronous `event` messages. Events read while waiting for a reply are
//! queued, so [`Qmp::wait_event`] can still find them later.
//! Protocol: <https://www.qemu.org/docs/master/interop/qmp-spec.html>.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::console::deadline_after;

/// How long a command may take to be answered.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed QMP exchange.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Reading from or writing to the socket failed.
    #[error("qmp {what}: socket i/o failed: {source}")]
    Io {
        /// The command or event involved.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// No answer in time.
    #[error("qmp {what}: no answer within {timeout:?}")]
    Timeout {
        /// The command or event involved.
        what: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// QEMU closed the socket (usually: it exited).
    #[error("qmp {what}: qemu closed the socket")]
    Closed {
        /// The command or event involved.
        what: String,
    },
    /// A line that is not a JSON object.
    #[error("qmp {what}: bad message {line:?}: {source}")]
    Json {
        /// The command or event involved.
        what: String,
        /// The offending line.
        line: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The first message was not a QMP greeting.
    #[error("qmp: expected a greeting, got {got}")]
    Greeting {
        /// What came instead.
        got: String,
    },
    /// QEMU answered with an error.
    #[error("qmp {what}: {class}: {desc}")]
    Command {
        /// The command.
        what: String,
        /// QMP's error class, e.g. `GenericError`.
        class: String,
        /// QMP's description.
        desc: String,
    },
    /// A reply with neither `return` nor `error`.
    #[error("qmp {what}: unexpected reply {reply}")]
    Unexpected {
        /// The command.
        what: String,
        /// The reply.
        reply: Value,
    },
}

impl QmpError {
    /// The socket is gone, as it is after `quit` or when QEMU died.
    pub fn is_disconnect(&self) -> bool {
        match self {
            QmpError::Closed { .. } => true,
            QmpError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// A QMP connection that has completed capability negotiation.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Bytes of a line not yet complete (kept across timeouts).
    pending: Vec<u8>,
    next_id: u64,
    events: VecDeque<Value>,
}

impl Qmp {
    /// Reads the greeting and negotiates capabilities, within `timeout`.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Self, QmpError> {
        let what = "greeting";
        let writer = stream.try_clone().map_err(|source| QmpError::Io {
            what: what.into(),
            source,
        })?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            pending: Vec::new(),
            next_id: 1,
            events: VecDeque::new(),
        };
        let deadline = deadline_after(timeout);
        let greeting = qmp.read_message(what, deadline, timeout)?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Greeting {
                got: greeting.to_string(),
            });
        }
        qmp.execute_within("qmp_capabilities", None, timeout)?;
        Ok(qmp)
    }

    /// Runs `cmd` with optional `arguments` and returns its `return` value.
    pub fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value, QmpError> {
        self.execute_within(cmd, args, COMMAND_TIMEOUT)
    }

    fn execute_within(
        &mut self,
        cmd: &str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": cmd, "id": id });
        if let Some(args) = args {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| QmpError::Io {
                what: cmd.into(),
                source,
            })?;
        let deadline = deadline_after(timeout);
        loop {
            let msg = self.read_message(cmd, deadline, timeout)?;
            if msg.get("event").is_some() {
                self.events.push_back(msg);
                continue;
            }
            // A late reply to an earlier command that timed out.
            if msg.get("id") != Some(&json!(id)) {
                continue;
            }
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                let field = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("?").into();
                return Err(QmpError::Command {
                    what: cmd.into(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(QmpError::Unexpected {
                what: cmd.into(),
                reply: msg,
            });
        }
    }

    /// Waits for an event named `name` (e.g. `SHUTDOWN`, `RESET`,
    /// `GUEST_PANICKED`), including ones already queued, and returns it.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Value, QmpError> {
        let is_it = |m: &Value| m.get("event").and_then(Value::as_str) == Some(name);
        if let Some(pos) = self.events.iter().position(is_it) {
            return Ok(self.events.remove(pos).unwrap_or(Value::Null));
        }
        let what = format!("event {name}");
        let deadline = deadline_after(timeout);
        loop {
            let msg = self.read_message(&what, deadline, timeout)?;
            if is_it(&msg) {
                return Ok(msg);
            }
            if msg.get("event").is_some() {
                self.events.push_back(msg);
            }
        }
    }

    /// Takes every queued event.
    pub fn take_events(&mut self) -> Vec<Value> {
        self.events.drain(..).collect()
    }

    /// Reads one JSON message, giving up at `deadline`.
    fn read_message(
        &mut self,
        what: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let io_err = |source| QmpError::Io {
            what: what.into(),
            source,
        };
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(QmpError::Timeout {
                    what: what.into(),
                    timeout,
                });
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(deadline - now))
                .map_err(io_err)?;
            match self.reader.read_until(b'\n', &mut self.pending) {
                Ok(0) => return Err(QmpError::Closed { what: what.into() }),
                Ok(_) if self.pending.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.pending);
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    return serde_json::from_str(line).map_err(|source| QmpError::Json {
                        what: what.into(),
                        line: line.into(),
                        source,
                    });
                }
                // EOF in the middle of a line.
                Ok(_) => return Err(QmpError::Closed { what: what.into() }),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(io_err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// A scripted QMP server: for each received line, the closure returns
    /// the lines to send back.
    fn fake_server(
        script: impl Fn(&Value) -> Vec<String> + Send + 'static,
    ) -> (UnixStream, thread::JoinHandle<Vec<Value>>) {
        let (client, server) = UnixStream::pair().unwrap();
        let handle = thread::spawn(move || {
            let mut w = server.try_clone().unwrap();
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut seen = Vec::new();
            for line in BufReader::new(server).lines() {
                let Ok(line) = line else { break };
                let msg: Value = serde_json::from_str(&line).unwrap();
                for reply in script(&msg) {
                    // Split writes exercise partial-line reads.
                    let (a, b) = reply.split_at(reply.len() / 2);
                    w.write_all(a.as_bytes()).unwrap();
                    w.flush().unwrap();
                    w.write_all(b.as_bytes()).unwrap();
                    w.write_all(b"\r\n").unwrap();
                }
                seen.push(msg);
            }
            seen
        });
        (client, handle)
    }

    fn reply_ok(msg: &Value, ret: Value) -> String {
        json!({ "return": ret, "id": msg["id"] }).to_string()
    }

    #[test]
    fn negotiates_then_runs_commands_and_queues_events() {
        let (client, server) = fake_server(|msg| {
            match msg["execute"].as_str() {
            Some("query-status") => vec![
                r#"{"event": "RESET", "data": {}}"#.to_string(),
                json!({"return": {}, "id": 999}).to_string(),
                reply_ok(msg, json!({"status": "running", "running": true})),
            ],
            Some("bogus") => vec![json!({
                "error": {"class": "CommandNotFound", "desc": "The command bogus has not been found"},
                "id": msg["id"]
            })
            .to_string()],
            _ => vec![reply_ok(msg, json!({}))],
        }
        });
        let mut qmp = Qmp::handshake(client, Duration::from_secs(5)).unwrap();
        let status = qmp.execute("query-status", None).unwrap();
        assert_eq!(status["status"], "running");
        let err = qmp.execute("bogus", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "qmp bogus: CommandNotFound: The command bogus has not been found"
        );
        let keys = json!({"keys": [{"type": "qcode", "data": "ctrl"}]});
        qmp.execute("send-key", Some(keys.clone())).unwrap();
        assert_eq!(
            qmp.wait_event("RESET", Duration::ZERO).unwrap()["event"],
            "RESET"
        );
        assert!(qmp.take_events().is_empty());
        drop(qmp);
        let seen = server.join().unwrap();
        let cmds: Vec<&str> = seen
            .iter()
            .map(|m| m["execute"].as_str().unwrap())
            .collect();
        assert_eq!(
            cmds,
            ["qmp_capabilities", "query-status", "bogus", "send-key"]
        );
        assert_eq!(seen[3]["arguments"], keys);
        assert!(seen[1].get("arguments").is_none());
    }

    #[test]
    fn silence_times_out_and_close_is_a_disconnect() {
        let (client, server) = fake_server(|msg| match msg["execute"].as_str() {
            Some("qmp_capabilities") => vec![reply_ok(msg, json!({}))],
            _ => vec![],
        });
        let mut qmp = Qmp::handshake(client, Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        let err = qmp
            .execute_within("query-status", None, Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(err, QmpError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = qmp
            .wait_event("SHUTDOWN", Duration::from_millis(50))
            .unwrap_err();
        assert!(matches!(err, QmpError::Timeout { .. }), "{err}");
        // Closing our side ends the server, which closes its side.
        qmp.writer.shutdown(std::net::Shutdown::Write).unwrap();
        server.join().unwrap();
        let err = qmp.execute("quit", None).unwrap_err();
        assert!(err.is_disconnect(), "{err}");
    }

    #[test]
    fn rejects_a_non_qmp_peer() {
        let (client, mut server) = UnixStream::pair().unwrap();
        writeln!(server, r#"{{"hello": 1}}"#).unwrap();
        let err = Qmp::handshake(client, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, QmpError::Greeting { .. }), "{err}");
    }
}
