//! Reading the guest's serial console as it passes through `berth boot`: the bytes are
//! copied out unchanged and at once (a shell prompt has no newline), and complete lines
//! are scanned for the few that `berth boot` acts on.

/// The start of the kernel's panic line (`panic()` in kernel/panic.c), printed at
/// `KERN_EMERG`: shown whatever the console log level, `quiet` included.
const PANIC: &str = "Kernel panic - not syncing";

/// The last line of the kernel's panic report when it halts (`panic=0`).
const PANIC_END: &str = "---[ end Kernel panic - not syncing";

/// The last line of the kernel's panic report when it resets (`panic=N`), printed just
/// before it waits N seconds.
const PANIC_RESET: &str = "Rebooting in ";

/// PID 1's line once the machine is up.
const READY: &str = "berth: ready";

/// The longest line kept for scanning; the rest of a longer line is not scanned.
const MAX_LINE: usize = 4096;

/// A console line `berth boot` acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The kernel panicked; the line, without its timestamp.
    Panic(String),
    /// The kernel's panic report is complete (meaningful only after [`Event::Panic`]).
    PanicEnd,
    /// PID 1 is up.
    Ready,
}

/// Splits the console into lines and recognises [`Event`]s.
#[derive(Debug, Default)]
pub struct Scanner {
    line: Vec<u8>,
}

impl Scanner {
    /// Feeds console bytes; returns the events of the lines they complete, in order, each
    /// with the offset in `bytes` just after its line's newline.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<(usize, Event)> {
        let mut events = Vec::new();
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                if let Some(event) = classify(&String::from_utf8_lossy(&self.line)) {
                    events.push((i + 1, event));
                }
                self.line.clear();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        events
    }
}

/// The event a console line stands for. Kernel lines may carry a `[  1.234567]`
/// timestamp; PID 1's and the containers' lines are recognised only at the start, so
/// that a container printing "Kernel panic" in the middle of its own line is not taken
/// for the kernel.
pub fn classify(line: &str) -> Option<Event> {
    let line = line.trim_end_matches(['\r', '\n']);
    let text = strip_timestamp(line).trim_start();
    let stamped = text.len() < line.len();
    if text.starts_with(PANIC_END) || (stamped && text.starts_with(PANIC_RESET)) {
        Some(Event::PanicEnd)
    } else if text.starts_with(PANIC) {
        Some(Event::Panic(text.to_owned()))
    } else if line.starts_with(READY) || line.contains(&format!("] {READY}")) {
        Some(Event::Ready)
    } else {
        None
    }
}

/// `line` without a leading kernel timestamp `[ seconds.micros]`.
fn strip_timestamp(line: &str) -> &str {
    let Some(rest) = line.strip_prefix('[') else {
        return line;
    };
    match rest.split_once(']') {
        Some((stamp, after))
            if !stamp.trim().is_empty()
                && stamp
                    .trim()
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            after
        }
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_panic_lines_are_found_with_or_without_timestamps() {
        let line = "[    2.071424] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r";
        assert_eq!(
            classify(line),
            Some(Event::Panic(
                "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
                    .into()
            ))
        );
        assert_eq!(
            classify("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"),
            Some(Event::Panic(
                "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100".into()
            ))
        );
        assert_eq!(
            classify(
                "[    2.09] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs ]---"
            ),
            Some(Event::PanicEnd)
        );
        assert_eq!(
            classify("[    4.352950] Rebooting in 1 seconds.."),
            Some(Event::PanicEnd)
        );
        // Only the kernel's line (with its timestamp).
        assert_eq!(classify("Rebooting in 1 seconds.."), None);
    }

    #[test]
    fn other_lines_are_not_panics() {
        for line in [
            "",
            "[   1523.4 ms] web | Kernel panic - not syncing: just a test string",
            "[2026-12-02T17:00:00Z] web: Kernel panic - not syncing",
            "[ not a stamp] Kernel panic - not syncing: x",
            "berth: container web exited 1",
            "[    0.000000] Linux version 6.1.0",
        ] {
            assert_eq!(classify(line), None, "{line}");
        }
    }

    #[test]
    fn ready_is_pid_1s_line() {
        assert_eq!(classify("berth: ready\r"), Some(Event::Ready));
        assert_eq!(
            classify("[   1523.4 ms] berth: ready in 12.0 ms (exec at 1.0 ms)"),
            Some(Event::Ready)
        );
        assert_eq!(classify("[   1523.4 ms] web | berth: ready"), None);
    }

    #[test]
    fn scanner_joins_chunks_into_lines() {
        let mut s = Scanner::default();
        assert!(s.feed(b"[    1.5] Kernel pa").is_empty());
        assert!(s.feed(b"nic - not syncing: No working init").is_empty());
        let events = s.feed(b" found\r\nberth: re");
        assert_eq!(
            events,
            [(
                8,
                Event::Panic("Kernel panic - not syncing: No working init found".into())
            )]
        );
        assert_eq!(s.feed(b"ady\nmore"), [(4, Event::Ready)]);
        // An endless line is cut for scanning, never kept whole.
        s.feed(&vec![b'x'; 100_000]);
        assert!(s.line.len() <= MAX_LINE);
        assert!(s.feed(b"\n").is_empty());
    }
}
