//! Reading a container's log for `docker logs`.
//!
//! PID 1 writes each container's output as Docker's `json-file` driver does, one JSON
//! object a line, into `log` (rotated to `log.1`):
//!
//! ```json
//! {"log":"hello\n","stream":"stdout","time":"2024-05-01T12:00:00.123456789Z"}
//! ```
//!
//! This module parses those lines (a line that does not parse, as a torn last line after
//! a power cut, is skipped, never fatal), selects them (`stdout`, `stderr`, `since`,
//! `until`, `tail`) and renders them: stdcopy frames without a TTY, raw bytes with one,
//! each optionally prefixed with its time (`timestamps`).

use std::io::{BufRead, BufReader, Read};

use bytes::Bytes;
use serde::Deserialize;

use crate::stdcopy::{frame, Stream};

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// The longest log line read; longer ones (which PID 1 never writes) are skipped.
const MAX_LINE: u64 = 256 * 1024;

/// What `docker logs` asked for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub stdout: bool,
    pub stderr: bool,
    /// Unix nanoseconds, inclusive.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// The last `n` entries only.
    pub tail: Option<usize>,
    pub timestamps: bool,
    /// The container has a TTY: raw output, no stdcopy frames.
    pub tty: bool,
}

impl Selection {
    /// Whether `e` is among what was asked for (streams, `since`, `until`).
    pub fn wants(&self, e: &Entry) -> bool {
        let stream_ok = match e.stream.as_str() {
            "stdout" => self.stdout,
            "stderr" => self.stderr,
            _ => false,
        };
        if !stream_ok {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(t) = time_nano(&e.time) else {
            return false;
        };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    /// One entry, as the client gets it.
    pub fn render(&self, e: &Entry) -> Bytes {
        let mut payload = Vec::with_capacity(e.log.len() + 32);
        if self.timestamps {
            payload.extend_from_slice(e.time.as_bytes());
            payload.push(b' ');
        }
        payload.extend_from_slice(e.log.as_bytes());
        if self.tty {
            Bytes::from(payload)
        } else {
            let stream = if e.stream == "stderr" {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            frame(stream, &payload)
        }
    }
}

/// `2024-05-01T12:00:00.123456789Z` in unix nanoseconds.
pub fn time_nano(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_nanos()).ok()
}

/// Parses every complete line of `reader`; returns the entries and how many bytes of
/// complete lines were consumed (a trailing partial line is left for a later read).
pub fn parse(reader: impl Read) -> std::io::Result<(Vec<Entry>, u64)> {
    let mut entries = Vec::new();
    let mut consumed = 0u64;
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            if n as u64 >= MAX_LINE {
                // A line past the bound: skip to its end.
                consumed += n as u64;
                let mut rest = Vec::new();
                let m = reader.read_until(b'\n', &mut rest)?;
                consumed += m as u64;
                if m > 0 {
                    continue;
                }
            }
            return Ok((entries, consumed));
        }
        consumed += n as u64;
        if let Ok(e) = serde_json::from_slice::<Entry>(&line) {
            entries.push(e);
        }
    }
}

/// The selected entries of the rotated and current files, oldest first.
pub fn select(files: &[&[u8]], sel: &Selection) -> Vec<Entry> {
    let mut all: Vec<Entry> = files
        .iter()
        .filter_map(|f| parse(*f).ok())
        .flat_map(|(entries, _)| entries)
        .filter(|e| sel.wants(e))
        .collect();
    if let Some(n) = sel.tail {
        let skip = all.len().saturating_sub(n);
        all.drain(..skip);
    }
    all
}

/// Reads a growing log file from where the last read stopped, across its rotation to
/// `log.1` (told by the inode changing under the name).
pub struct Follower {
    path: std::path::PathBuf,
    inode: Option<u64>,
    offset: u64,
}

impl Follower {
    /// Starts at the current end of `path`: what is there was sent already.
    pub fn at_end(path: &std::path::Path) -> Follower {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok();
        Follower {
            path: path.to_owned(),
            inode: meta.as_ref().map(|m| m.ino()),
            offset: meta.map_or(0, |m| m.len()),
        }
    }

    /// The entries written since the last call.
    pub fn read_new(&mut self) -> Vec<Entry> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        let now = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        if now.is_some() && now != self.inode {
            // Rotated: finish the old file (now log.1), then start the new one.
            if self.inode.is_some() {
                let rotated = self.path.with_extension("1");
                out.extend(self.read_from(&rotated));
            }
            self.inode = now;
            self.offset = 0;
        }
        let path = self.path.clone();
        out.extend(self.read_from(&path));
        out
    }

    fn read_from(&mut self, path: &std::path::Path) -> Vec<Entry> {
        use std::io::{Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        match parse(f) {
            Ok((entries, consumed)) => {
                self.offset += consumed;
                entries
            }
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = concat!(
        r#"{"log":"one\n","stream":"stdout","time":"2024-05-01T12:00:00.000000001Z"}"#,
        "\n",
        r#"{"log":"oops\n","stream":"stderr","time":"2024-05-01T12:00:01Z"}"#,
        "\n",
        "not json at all\n",
        r#"{"log":"two\n","stream":"stdout","time":"2024-05-01T12:00:02Z"}"#,
        "\n",
        r#"{"log":"torn"#,
    );

    fn sel() -> Selection {
        Selection {
            stdout: true,
            stderr: true,
            ..Default::default()
        }
    }

    #[test]
    fn complete_lines_parse_and_damage_is_skipped() {
        let (entries, consumed) = parse(LOG.as_bytes()).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            consumed as usize,
            LOG.rfind('\n').unwrap() + 1,
            "the torn line waits"
        );
    }

    #[test]
    fn selection_by_stream_time_and_tail() {
        let stdout_only = Selection {
            stderr: false,
            ..sel()
        };
        let logs: Vec<String> = select(&[LOG.as_bytes()], &stdout_only)
            .into_iter()
            .map(|e| e.log)
            .collect();
        assert_eq!(logs, ["one\n", "two\n"]);
        let since = time_nano("2024-05-01T12:00:01Z");
        let recent = select(&[LOG.as_bytes()], &Selection { since, ..sel() });
        assert_eq!(recent.len(), 2);
        let last = select(
            &[b"", LOG.as_bytes()],
            &Selection {
                tail: Some(1),
                ..sel()
            },
        );
        assert_eq!(last[0].log, "two\n");
    }

    #[test]
    fn following_across_a_rotation() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let line = |t: &str| {
            format!(
                "{{\"log\":\"{t}\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-01T12:00:00Z\"}}\n"
            )
        };
        std::fs::write(&log, line("old")).unwrap();
        let mut f = Follower::at_end(&log);
        assert!(f.read_new().is_empty(), "what was there is not repeated");
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(line("one").as_bytes()).unwrap();
        file.write_all(b"{\"log\":\"ha").unwrap();
        assert_eq!(
            f.read_new()
                .iter()
                .map(|e| e.log.as_str())
                .collect::<Vec<_>>(),
            ["one\n"]
        );
        file.write_all(b"lf\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-01T12:00:00Z\"}\n")
            .unwrap();
        // Rotation: the rest of the old file, then the new one.
        std::fs::rename(&log, dir.path().join("log.1")).unwrap();
        std::fs::write(&log, line("two")).unwrap();
        let got: Vec<String> = f.read_new().into_iter().map(|e| e.log).collect();
        assert_eq!(got, ["half\n", "two\n"]);
    }

    #[test]
    fn rendering_frames_or_raw_with_timestamps() {
        let (entries, _) = parse(LOG.as_bytes()).unwrap();
        let framed = sel().render(&entries[1]);
        assert_eq!(&framed[..], b"\x02\0\0\0\0\0\0\x05oops\n");
        let raw = Selection {
            tty: true,
            timestamps: true,
            ..sel()
        }
        .render(&entries[0]);
        assert_eq!(&raw[..], b"2024-05-01T12:00:00.000000001Z one\n");
    }
}
