//! Container output: one pipe per container run (stdout and stderr share it, so lines
//! keep the order the container wrote them), drained by PID 1 whenever it is
//! readable, so a container never blocks on output while PID 1 runs.
//!
//! Each complete line goes to `<state>/containers/<name>/log` as Docker's `json-file`
//! driver writes it (see [`json_entry`]), which `docker logs` reads back; the file is
//! rotated to `log.1` at [`ROTATE_BYTES`], so a container
//! holds at most twice that. Lines are also mirrored to the console as
//! `name | line`, each container within its own share of one console budget
//! ([`crate::klog::console_share`]): a serial console is slow, and PID 1 writes it
//! synchronously, so container output must not be able to stall PID 1 however many
//! containers there are; and the share is each container's own, so one container
//! printing without pause cannot hide the others' lines. What is dropped from the
//! console is counted and said, and is still in the file.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::klog::{container_line, ConsoleBudget};

/// Size at which the log file is rotated.
pub const ROTATE_BYTES: u64 = 1 << 20;
/// A line longer than this is cut and written in pieces.
const MAX_LINE: usize = 16 << 10;
/// Most bytes [`LogSink::drain`] takes from a pipe in one call.
pub const DRAIN_BUDGET: usize = 256 << 10;

/// Where one container's output goes.
pub struct LogSink {
    name: String,
    path: PathBuf,
    file: Option<File>,
    size: u64,
    partial: Vec<u8>,
    /// The container's console budget, when its output is mirrored there.
    console: Option<ConsoleBudget>,
    /// Lines the console budget turned away since the last mirrored one.
    dropped_lines: u64,
}

impl LogSink {
    /// The log file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// A sink writing to `path`, mirroring to the console within `console_share` bytes
    /// per second when there is one (see [`crate::klog::console_share`]).
    pub fn new(name: &str, path: PathBuf, console_share: Option<usize>) -> LogSink {
        let file = File::options().create(true).append(true).open(&path);
        let size = file
            .as_ref()
            .ok()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        if let Err(e) = &file {
            log::warn!("container {name}: cannot open log {}: {e}", path.display());
        }
        LogSink {
            name: name.to_string(),
            path,
            file: file.ok(),
            size,
            partial: Vec::new(),
            console: console_share.map(ConsoleBudget::new),
            dropped_lines: 0,
        }
    }

    /// Reads what `pipe` holds, up to [`DRAIN_BUDGET`] bytes: a container that
    /// writes without pause must not keep PID 1 from signals and other containers
    /// (the pipe stays readable, so the event loop comes back). Returns false at end
    /// of file.
    pub fn drain(&mut self, pipe: BorrowedFd<'_>) -> bool {
        let mut buf = [0u8; 16 << 10];
        let mut taken = 0;
        while taken < DRAIN_BUDGET {
            match nix::unistd::read(pipe.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    self.flush_partial();
                    return false;
                }
                Ok(n) => {
                    taken += n;
                    self.feed(buf.get(..n).unwrap_or_default());
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return true,
                Err(e) => {
                    log::warn!("container {}: reading output: {e}", self.name);
                    return false;
                }
            }
        }
        true
    }

    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            let (line, rest) = bytes.split_at(end);
            self.extend_partial(line);
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
            bytes = rest.get(1..).unwrap_or_default();
        }
        self.extend_partial(bytes);
    }

    /// Adds to the unfinished line, cutting it at [`MAX_LINE`].
    fn extend_partial(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_LINE.saturating_sub(self.partial.len()).min(bytes.len());
            let (now, later) = bytes.split_at(room);
            self.partial.extend_from_slice(now);
            bytes = later;
            if self.partial.len() >= MAX_LINE {
                let line = std::mem::take(&mut self.partial);
                self.line(&line);
            }
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
    }

    /// A line the supervisor itself adds (start, exit), in the file only, on the stream
    /// `berth`, which `docker logs` does not show.
    pub fn note(&mut self, text: &str) {
        let entry = json_entry(text, NOTE_STREAM);
        self.write_file(&entry);
    }

    fn line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let entry = json_entry(text, "stdout");
        self.write_file(&entry);
        self.mirror(text);
    }

    /// Changes the console share (when the number of mirroring containers changes).
    pub fn set_console_share(&mut self, share: usize) {
        if let Some(budget) = &mut self.console {
            budget.set_share(share);
        }
    }

    /// Lines the console budget turned away since the last one mirrored.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines
    }

    fn mirror(&mut self, text: &str) {
        let Some(budget) = &mut self.console else {
            return;
        };
        if self.dropped_lines > 0 {
            let notice = format!(
                "({} lines not mirrored to the console; all are in {})",
                self.dropped_lines,
                self.path.display()
            );
            if !container_line(&self.name, &notice, budget) {
                self.dropped_lines += 1;
                return;
            }
            self.dropped_lines = 0;
        }
        if !container_line(&self.name, text, budget) {
            self.dropped_lines += 1;
        }
    }

    fn write_file(&mut self, bytes: &[u8]) {
        if self.size + bytes.len() as u64 > ROTATE_BYTES {
            self.rotate();
        }
        if self.file.is_none() {
            // A file that could not be opened before (say a full state directory) is
            // tried again with each write.
            self.file = File::options()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
        }
        if let Some(f) = &mut self.file {
            if f.write_all(bytes).is_ok() {
                self.size += bytes.len() as u64;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let old = self.path.with_extension("1");
        let rotated = match std::fs::rename(&self.path, &old) {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "container {}: rotating {}: {e}; appending to it instead",
                    self.name,
                    self.path.display()
                );
                false
            }
        };
        // Truncate only a file that was moved aside: never the lines still in it.
        self.file = File::options()
            .create(true)
            .write(true)
            .truncate(rotated)
            .append(!rotated)
            .open(&self.path)
            .ok();
        self.size = 0;
    }
}

/// A pipe for a container's stdout and stderr: PID 1 keeps the read end,
/// non-blocking and enlarged to 1 MiB so bursts fit while PID 1 is busy.
pub fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(read.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    // Best effort: the default 64 KiB pipe works too.
    let _ = fcntl(read.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(1 << 20));
    Ok((read, write))
}

/// The stream of the supervisor's own notes in a log.
pub const NOTE_STREAM: &str = "berth";

/// One line of the log as Docker's `json-file` driver writes it:
/// `{"log":"text\n","stream":"stdout","time":"2026-11-23T15:04:05.123Z"}`. Output and
/// errors share one pipe (so that their order is kept), so every line is `stdout`.
fn json_entry(text: &str, stream: &str) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        log: String,
        stream: &'a str,
        time: String,
    }
    let entry = Entry {
        log: format!("{text}\n"),
        stream,
        time: rfc3339_now(),
    };
    let mut bytes = serde_json::to_vec(&entry).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The current UTC time as `2026-11-23T15:04:05.123Z`.
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_millis())
}

/// Formats Unix seconds (days-from-civil inverse, Howard Hinnant's algorithm).
pub fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_446_245, 123), "2026-11-23T15:04:05.123Z");
    }

    #[test]
    fn lines_go_to_the_file_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut sink = LogSink::new("t", path.clone(), None);
        sink.feed(b"one\ntw");
        sink.feed(b"o\n");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let logs: Vec<&str> = lines.iter().map(|l| l["log"].as_str().unwrap()).collect();
        assert_eq!(logs, ["one\n", "two\n"]);
        assert!(lines.iter().all(|l| l["stream"] == "stdout"));
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        sink.note("started (pid 7)");
        let note = std::fs::read_to_string(&path).unwrap();
        let note: serde_json::Value = serde_json::from_str(note.lines().last().unwrap()).unwrap();
        assert_eq!(note["stream"], NOTE_STREAM);
        // What a container prints is data, never markup: quotes and controls are escaped.
        sink.feed(b"a \"quoted\" \x1b[31mred\n");
        let last = std::fs::read_to_string(&path).unwrap();
        let last: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
        assert_eq!(last["log"], "a \"quoted\" \u{1b}[31mred\n");
        let long = vec![b'x'; 4096];
        for _ in 0..300 {
            sink.feed(&long);
            sink.feed(b"\n");
        }
        let size = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(dir.path().join("log.1")).unwrap().len();
        assert!(size <= ROTATE_BYTES && old <= ROTATE_BYTES && size + old > ROTATE_BYTES / 2);
    }

    #[test]
    fn one_drain_takes_at_most_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (r, w) = output_pipe().unwrap();
        let mut sink = LogSink::new("t", dir.path().join("log"), None);
        let line = [b'y', b'\n'].repeat(1024);
        let mut writer = File::from(w);
        let mut written = 0;
        while written < 3 * DRAIN_BUDGET {
            writer.write_all(&line).unwrap();
            written += line.len();
        }
        drop(writer);
        let mut rounds = 0;
        while sink.drain(r.as_fd()) {
            rounds += 1;
        }
        assert!(
            rounds >= 3,
            "one call read past its budget ({rounds} rounds)"
        );
        // Everything was read: the pipe reports end of file and the last line is in.
        assert!(!sink.drain(r.as_fd()));
        let text = std::fs::read_to_string(dir.path().join("log")).unwrap();
        let last: serde_json::Value =
            serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap();
        assert_eq!(last["log"], "y\n");
    }

    #[test]
    fn pipe_drains_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let (r, w) = output_pipe().unwrap();
        let mut sink = LogSink::new("t", dir.path().join("log"), None);
        File::from(w.try_clone().unwrap())
            .write_all(b"a\nb")
            .unwrap();
        assert!(sink.drain(r.as_fd()), "open pipe: not at EOF");
        drop(w);
        assert!(!sink.drain(r.as_fd()), "closed pipe: EOF");
        let text = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn a_flooding_container_does_not_hide_another() {
        let dir = tempfile::tempdir().unwrap();
        let share = crate::klog::console_share(2);
        let mut flood = LogSink::new("flood", dir.path().join("flood"), Some(share));
        let mut quiet = LogSink::new("quiet", dir.path().join("quiet"), Some(share));
        let line = format!("{}\n", "y".repeat(200));
        for round in 0..50 {
            for _ in 0..20 {
                flood.feed(line.as_bytes());
            }
            quiet.feed(format!("tick {round}\n").as_bytes());
            assert_eq!(quiet.dropped_lines(), 0, "round {round}");
        }
        assert!(
            flood.dropped_lines() > 0,
            "the flood stays within its share"
        );
    }
}
