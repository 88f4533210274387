//! What the threads of one VM share: the serial console text, QEMU's
//! stderr and its exit status, behind one mutex and one condvar.
//!
//! The reader thread appends output and the reaper thread records the exit,
//! and both notify the condvar, so a waiter sleeps until something changes
//! and never polls. Waits search from a caller-held cursor, expect-style:
//! a match moves the cursor past it, so the same text can be waited for
//! again (e.g. a ready banner after a reboot). A wait ends early once QEMU
//! has exited and its output is drained, since nothing more can arrive.

use std::fmt::Write as _;
use std::process::ExitStatus;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How many console lines a wait error quotes.
pub const TAIL_LINES: usize = 80;

/// A console wait that did not see what it waited for. `Debug` prints the
/// `Display` text, so `.unwrap()` shows the console tail line by line.
#[derive(thiserror::Error)]
pub enum WaitError {
    /// The text did not appear in time.
    #[error(
        "timed out after {timeout:?} waiting for {wanted} on the console of vm `{vm}`\n{tail}"
    )]
    Timeout {
        /// The VM's name.
        vm: String,
        /// What was waited for, quoted.
        wanted: String,
        /// How long the wait lasted.
        timeout: Duration,
        /// The last console lines and QEMU's stderr.
        tail: String,
    },
    /// QEMU exited (or was killed) before the text appeared.
    #[error(
        "qemu exited ({status}) while waiting for {wanted} on the console of vm `{vm}`\n{tail}"
    )]
    Exited {
        /// The VM's name.
        vm: String,
        /// What was waited for, quoted.
        wanted: String,
        /// QEMU's exit status, described.
        status: String,
        /// The last console lines and QEMU's stderr.
        tail: String,
    },
}

impl std::fmt::Debug for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The state shared by a VM's threads. Lock with [`Shared::lock`].
#[derive(Debug, Default)]
pub(crate) struct State {
    /// All console output so far, with `\r` removed and invalid UTF-8 replaced.
    pub text: String,
    /// The bytes of a UTF-8 sequence split across two reads.
    partial: Vec<u8>,
    /// Everything QEMU wrote to its stderr.
    pub stderr: String,
    /// The serial reader saw end of file.
    pub eof: bool,
    /// The reaper has reaped QEMU; `status` is its status if `wait` worked.
    pub exited: bool,
    pub status: Option<ExitStatus>,
    /// The watchdog killed QEMU.
    pub watchdog_fired: bool,
    /// The VM is being dropped; the watchdog should stop.
    pub stopping: bool,
    /// The console log file, named at the end of tails.
    pub log_path: Option<std::path::PathBuf>,
}

impl State {
    /// Nothing more will arrive on the console.
    pub fn finished(&self) -> bool {
        self.eof && self.exited
    }

    /// Describes how QEMU ended, for errors.
    pub fn describe_exit(&self) -> String {
        let mut s = match (self.exited, self.status) {
            (false, _) => "still running".to_string(),
            (true, Some(status)) => status.to_string(),
            (true, None) => "status unknown".to_string(),
        };
        if self.watchdog_fired {
            s.push_str(", killed by the watchdog");
        }
        s
    }

    /// Appends raw serial bytes, keeping an incomplete UTF-8 sequence for
    /// the next call.
    pub fn push_output(&mut self, bytes: &[u8]) {
        let mut buf = std::mem::take(&mut self.partial);
        buf.extend_from_slice(bytes);
        let mut rest = &buf[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    self.push_text(s);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    self.push_text(&String::from_utf8_lossy(good));
                    match e.error_len() {
                        Some(n) => {
                            self.push_text("\u{FFFD}");
                            rest = &bad[n..];
                        }
                        None => {
                            self.partial = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
    }

    fn push_text(&mut self, s: &str) {
        self.text.extend(s.chars().filter(|&c| c != '\r'));
    }

    /// Adds a line of the harness's own (e.g. the watchdog firing) to the
    /// console, so it shows in tails, dumps and the log.
    pub fn push_note(&mut self, note: &str) -> String {
        let mut line = String::new();
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            line.push('\n');
        }
        let _ = writeln!(line, "[berth-qemu-tests] {note}");
        self.text.push_str(&line);
        line
    }

    /// The last `n` console lines, then QEMU's stderr if it wrote any.
    pub fn tail(&self, vm: &str, n: usize) -> String {
        let lines: Vec<&str> = self.text.lines().collect();
        let start = lines.len().saturating_sub(n);
        let mut s = format!(
            "--- last {} console lines of vm `{vm}` ---\n",
            lines.len() - start
        );
        for line in &lines[start..] {
            s.push_str(line);
            s.push('\n');
        }
        if !self.stderr.is_empty() {
            s.push_str("--- qemu stderr ---\n");
            s.push_str(&self.stderr);
            if !self.stderr.ends_with('\n') {
                s.push('\n');
            }
        }
        s.push_str("--- end of console");
        if let Some(path) = &self.log_path {
            let _ = write!(s, "; full log: {}", path.display());
        }
        s.push_str(" ---");
        s
    }
}

/// [`State`] behind a mutex, with the condvar every change notifies.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    /// Locks the state. A panic elsewhere must not stop cleanup or dumps,
    /// so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every waiter; call after changing the state.
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Waits on the condvar until `deadline`; returns the guard and whether
    /// the deadline has passed.
    pub fn wait_until<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> (MutexGuard<'a, State>, bool) {
        let now = Instant::now();
        if now >= deadline {
            return (guard, true);
        }
        let (guard, _) = self
            .changed
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(PoisonError::into_inner);
        (guard, Instant::now() >= deadline)
    }

    /// Waits until one of `needles` appears at or after `*cursor`. Returns
    /// the index of the needle that matched first in the text (the earliest
    /// position; on a tie the earlier needle) and the line holding the match.
    /// Moves `*cursor` past the match.
    ///
    /// With `Until::Seen` the wait ends as soon as the text is there (what
    /// a prompt without a newline needs) and the line is returned as far as
    /// it has arrived; with `Until::LineEnds` only text on lines that are
    /// complete (or final, once QEMU has exited) is searched, so the whole
    /// line is returned.
    pub fn wait_for_any(
        &self,
        vm: &str,
        cursor: &mut usize,
        needles: &[&str],
        until: Until,
        timeout: Duration,
    ) -> Result<(usize, String), WaitError> {
        let deadline = deadline_after(timeout);
        let longest = needles.iter().map(|n| n.len()).max().unwrap_or(0);
        // Text before `searched` held no match, except possibly one that
        // straddles it, so rescans start `longest` bytes earlier.
        let mut searched = *cursor;
        let mut state = self.lock();
        let mut expired = false;
        loop {
            let text = &state.text;
            let limit = match until {
                Until::LineEnds if !state.finished() => {
                    text.rfind('\n').map_or(0, |i| i + 1).max(*cursor)
                }
                _ => text.len(),
            };
            let mut start = searched.saturating_sub(longest).max(*cursor);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            if let Some((index, at, len)) = earliest_match(&text[start..limit], needles) {
                let (at, end) = (start + at, start + at + len);
                *cursor = end;
                return Ok((index, line_around(text, at, end).to_string()));
            }
            searched = limit;
            if state.finished() {
                return Err(WaitError::Exited {
                    vm: vm.to_string(),
                    wanted: describe_wanted(needles),
                    status: state.describe_exit(),
                    tail: state.tail(vm, TAIL_LINES),
                });
            }
            // Checked after searching, so text that arrived during the last
            // wait still counts.
            if expired {
                return Err(WaitError::Timeout {
                    vm: vm.to_string(),
                    wanted: describe_wanted(needles),
                    timeout,
                    tail: state.tail(vm, TAIL_LINES),
                });
            }
            (state, expired) = self.wait_until(state, deadline);
        }
    }

    /// Waits until QEMU has been reaped; false if `timeout` passed first.
    pub fn wait_exited(&self, timeout: Duration) -> bool {
        let deadline = deadline_after(timeout);
        let mut state = self.lock();
        loop {
            if state.exited {
                return true;
            }
            let (guard, expired) = self.wait_until(state, deadline);
            state = guard;
            if expired {
                return state.exited;
            }
        }
    }
}

/// `timeout` from now, saturating instead of panicking on huge durations
/// (`Duration::MAX` means "practically never").
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX))))
        .unwrap_or(now)
}

/// When a console wait may end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// As soon as the text has arrived.
    Seen,
    /// Once the line holding the text has ended.
    LineEnds,
}

/// The first match of any needle in `hay`: (needle index, offset, length).
fn earliest_match(hay: &str, needles: &[&str]) -> Option<(usize, usize, usize)> {
    needles
        .iter()
        .enumerate()
        .filter_map(|(i, n)| hay.find(n).map(|at| (i, at, n.len())))
        .min_by_key(|&(i, at, _)| (at, i))
}

/// The whole line around `text[at..end]`, without its newline.
fn line_around(text: &str, at: usize, end: usize) -> &str {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i);
    &text[line_start..line_end]
}

fn describe_wanted(needles: &[&str]) -> String {
    match needles {
        [one] => format!("{one:?}"),
        many => format!("any of {many:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::Arc;
    use std::thread;

    fn feed(shared: &Shared, bytes: &[u8]) {
        shared.lock().push_output(bytes);
        shared.notify();
    }

    #[test]
    fn finds_text_already_there_and_returns_the_line() {
        let s = Shared::default();
        feed(&s, b"one\r\nberth: ready ip=10.0.2.15\r\ntwo\r\n");
        let mut cursor = 0;
        let (i, line) = s
            .wait_for_any(
                "t",
                &mut cursor,
                &["ready"],
                Until::Seen,
                Duration::from_secs(1),
            )
            .unwrap();
        assert_eq!((i, line.as_str()), (0, "berth: ready ip=10.0.2.15"));
        assert_eq!(cursor, "one\nberth: ready".len());
    }

    #[test]
    fn cursor_lets_the_same_text_match_twice() {
        let s = Shared::default();
        feed(&s, b"boot\nberth: ready\n");
        let mut cursor = 0;
        let t = Duration::from_millis(50);
        s.wait_for_any("t", &mut cursor, &["berth: ready"], Until::Seen, t)
            .unwrap();
        // Not again until it is printed again.
        let err = s
            .wait_for_any("t", &mut cursor, &["berth: ready"], Until::Seen, t)
            .unwrap_err();
        assert!(matches!(err, WaitError::Timeout { .. }), "{err}");
        feed(&s, b"reboot\nberth: ready\n");
        s.wait_for_any("t", &mut cursor, &["berth: ready"], Until::Seen, t)
            .unwrap();
    }

    #[test]
    fn wakes_on_output_from_another_thread() {
        let s = Arc::new(Shared::default());
        let writer = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                for chunk in [&b"Linux ver"[..], b"sion 6.1", b" (x)\n", b"VFS: Unable"] {
                    feed(&s, chunk);
                    thread::yield_now();
                }
            })
        };
        let mut cursor = 0;
        let (_, line) = s
            .wait_for_any(
                "t",
                &mut cursor,
                &["Linux version"],
                Until::Seen,
                Duration::from_secs(10),
            )
            .unwrap();
        assert!(line.starts_with("Linux version"), "{line:?}");
        let (i, _) = s
            .wait_for_any(
                "t",
                &mut cursor,
                &["Kernel panic", "VFS: Unable"],
                Until::Seen,
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(i, 1);
        writer.join().unwrap();
    }

    #[test]
    fn earliest_position_wins_then_needle_order() {
        let s = Shared::default();
        feed(&s, b"b a\n");
        let mut cursor = 0;
        let t = Duration::from_millis(10);
        assert_eq!(
            s.wait_for_any("t", &mut cursor, &["a", "b"], Until::Seen, t)
                .unwrap()
                .0,
            1
        );
        assert_eq!(
            s.wait_for_any("t", &mut cursor, &["a", "b"], Until::Seen, t)
                .unwrap()
                .0,
            0
        );
        let s = Shared::default();
        feed(&s, b"xy\n");
        let mut cursor = 0;
        assert_eq!(
            s.wait_for_any("t", &mut cursor, &["xy", "x"], Until::Seen, t)
                .unwrap()
                .0,
            0
        );
    }

    #[test]
    fn timeout_takes_about_its_duration_and_quotes_the_tail() {
        let s = Shared::default();
        for i in 0..200 {
            feed(&s, format!("line {i}\n").as_bytes());
        }
        let mut cursor = 0;
        let started = Instant::now();
        let err = s
            .wait_for_any(
                "demo",
                &mut cursor,
                &["never"],
                Until::Seen,
                Duration::from_millis(200),
            )
            .unwrap_err();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2));
        let msg = err.to_string();
        assert!(
            msg.contains("timed out after 200ms waiting for \"never\""),
            "{msg}"
        );
        assert!(msg.contains("vm `demo`"), "{msg}");
        assert!(msg.contains("--- last 80 console lines"), "{msg}");
        assert!(
            msg.contains("line 199\n") && msg.contains("line 120\n"),
            "{msg}"
        );
        assert!(!msg.contains("line 119\n"), "{msg}");
        assert_eq!(cursor, 0, "a failed wait leaves the cursor alone");
    }

    #[test]
    fn exit_ends_the_wait_early() {
        let s = Arc::new(Shared::default());
        feed(&s, b"Kernel panic - not syncing\n");
        let reaper = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                let mut st = s.lock();
                st.eof = true;
                st.exited = true;
                st.status = Some(ExitStatus::from_raw(9));
                st.watchdog_fired = true;
                st.stderr.push_str("qemu: terminating on signal\n");
                drop(st);
                s.notify();
            })
        };
        let mut cursor = 0;
        let started = Instant::now();
        let err = s
            .wait_for_any(
                "t",
                &mut cursor,
                &["login:"],
                Until::Seen,
                Duration::from_secs(30),
            )
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        let msg = err.to_string();
        assert!(matches!(err, WaitError::Exited { .. }), "{msg}");
        assert!(
            msg.contains("signal: 9") && msg.contains("watchdog"),
            "{msg}"
        );
        assert!(
            msg.contains("Kernel panic") && msg.contains("--- qemu stderr ---"),
            "{msg}"
        );
        reaper.join().unwrap();
    }

    #[test]
    fn output_present_at_exit_still_matches() {
        let s = Shared::default();
        feed(&s, b"reboot: Restarting system\n");
        {
            let mut st = s.lock();
            st.eof = true;
            st.exited = true;
        }
        let mut cursor = 0;
        s.wait_for_any(
            "t",
            &mut cursor,
            &["Restarting"],
            Until::Seen,
            Duration::ZERO,
        )
        .unwrap();
    }

    #[test]
    fn split_utf8_and_carriage_returns() {
        let mut st = State::default();
        let bytes = "héllo\r\n".as_bytes();
        st.push_output(&bytes[..2]); // 'h' and half of 'é'
        assert_eq!(st.text, "h");
        st.push_output(&bytes[2..]);
        assert_eq!(st.text, "héllo\n");
        st.push_output(b"\xffok\n");
        assert_eq!(st.text, "héllo\n\u{FFFD}ok\n");
    }

    #[test]
    fn match_straddling_reads_is_found() {
        let s = Arc::new(Shared::default());
        feed(&s, "é".repeat(100).as_bytes());
        let writer = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                for chunk in ["berth", ": rea", "dy\n"] {
                    feed(&s, chunk.as_bytes());
                }
            })
        };
        let mut cursor = 0;
        let (_, line) = s
            .wait_for_any(
                "t",
                &mut cursor,
                &["berth: ready"],
                Until::Seen,
                Duration::from_secs(10),
            )
            .unwrap();
        assert!(line.ends_with("berth: ready"), "{line:?}");
        writer.join().unwrap();
    }

    #[test]
    fn line_ends_waits_for_the_whole_line() {
        let s = Arc::new(Shared::default());
        feed(&s, b"boot\nberth: ip=10.0");
        let mut cursor = 0;
        let t = Duration::from_millis(20);
        let (_, partial) = s
            .wait_for_any("t", &mut cursor.clone(), &["ip="], Until::Seen, t)
            .unwrap();
        assert_eq!(partial, "berth: ip=10.0");
        let err = s
            .wait_for_any("t", &mut cursor, &["ip="], Until::LineEnds, t)
            .unwrap_err();
        assert!(matches!(err, WaitError::Timeout { .. }), "{err}");
        let writer = {
            let s = Arc::clone(&s);
            thread::spawn(move || feed(&s, b".2.15/24\nnext"))
        };
        let (_, line) = s
            .wait_for_any(
                "t",
                &mut cursor,
                &["ip="],
                Until::LineEnds,
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(line, "berth: ip=10.0.2.15/24");
        writer.join().unwrap();
        // Once QEMU is gone, an unterminated last line counts as whole.
        {
            let mut st = s.lock();
            st.eof = true;
            st.exited = true;
        }
        let (_, line) = s
            .wait_for_any("t", &mut cursor, &["nex"], Until::LineEnds, t)
            .unwrap();
        assert_eq!(line, "next");
    }

    #[test]
    fn huge_timeouts_do_not_overflow() {
        assert!(deadline_after(Duration::MAX) > Instant::now() + Duration::from_secs(3600));
        let s = Shared::default();
        feed(&s, b"ok\n");
        let mut cursor = 0;
        s.wait_for_any("t", &mut cursor, &["ok"], Until::Seen, Duration::MAX)
            .unwrap();
    }

    #[test]
    fn notes_start_on_their_own_line() {
        let mut st = State::default();
        st.push_output(b"partial");
        st.push_note("watchdog fired");
        assert_eq!(st.text, "partial\n[berth-qemu-tests] watchdog fired\n");
    }
}
