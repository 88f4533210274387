//! PID 1's logger: every record goes to the console with a boot-relative timestamp in
//! milliseconds, and to the kernel log (`/dev/kmsg`) so that `dmesg` keeps it. The
//! `berth-helper` processes log through the same logger ([`init_helper`]), so their lines
//! carry the same stamp; container output mirrored to the console does too, within each
//! container's [`ConsoleBudget`].
//!
//! The kmsg copy is written at debug priority (`<31>` = daemon.debug): the kernel echoes
//! kmsg lines at or below the console log level to the console itself, and PID 1 already
//! wrote the line there, so a higher priority would print every line twice. The severity is
//! kept in the text instead.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use log::{Level, LevelFilter, Log, Metadata, Record};
use nix::time::{clock_gettime, ClockId};

/// Milliseconds since the kernel started (CLOCK_BOOTTIME), the clock `dmesg` uses.
pub fn boot_ms() -> f64 {
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => ts.tv_sec() as f64 * 1000.0 + ts.tv_nsec() as f64 / 1_000_000.0,
        Err(_) => 0.0,
    }
}

struct Sinks {
    console: Option<File>,
    kmsg: Option<File>,
}

/// The logger; install it once with [`init`].
pub struct KernelLogger {
    sinks: Mutex<Sinks>,
}

static LOGGER: KernelLogger = KernelLogger {
    sinks: Mutex::new(Sinks {
        console: None,
        kmsg: None,
    }),
};

impl KernelLogger {
    /// The sinks, locked. A panic while logging must not silence PID 1 for the rest of its
    /// life (its shutdown messages included): a poisoned lock is taken over, not given up.
    fn sinks(&self) -> MutexGuard<'_, Sinks> {
        self.sinks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Installs the logger. Until [`attach_kmsg`] is called, records go to the console only.
pub fn init(level: LevelFilter) {
    // PID 1's stdout is the console the kernel opened for it; a duplicate keeps it
    // independent of what later code does with fd 1.
    use std::os::fd::AsFd;
    install(std::io::stdout().as_fd(), level);
}

/// Installs the logger in a `berth-helper` process, whose stderr is PID 1's console
/// (its stdout may be a report pipe to PID 1): its lines then look as PID 1's do, with
/// the same stamp. A panic is logged as a line too, not in Rust's own format.
pub fn init_helper(level: LevelFilter) {
    use std::os::fd::AsFd;
    install(std::io::stderr().as_fd(), level);
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
}

fn install(console: std::os::fd::BorrowedFd<'_>, level: LevelFilter) {
    LOGGER.sinks().console = console.try_clone_to_owned().ok().map(File::from);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// The inode of the initial PID namespace's `/proc/self/ns/pid` (`PROC_PID_INIT_INO`,
/// include/linux/proc_ns.h): fixed, so it tells the machine's init from the init of a
/// PID namespace (a container, or berth's own host tests).
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

/// Whether this process lives in the initial PID namespace.
pub fn in_initial_pid_namespace() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == PROC_PID_INIT_INO)
}

/// Starts copying records to `/dev/kmsg`, once devtmpfs and /proc are mounted. Only the
/// machine's own init does: the kernel log and its sysctl are not namespaced, and the init
/// of a PID namespace must not write into its host's.
pub fn attach_kmsg() {
    if !in_initial_pid_namespace() {
        log::info!("not the initial PID namespace: logging to the console only");
        return;
    }
    // Userspace writes to kmsg are rate limited (10 lines per 5 s) unless this is "on";
    // PID 1's boot log is worth keeping whole.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    LOGGER.sinks().kmsg = kmsg;
}

/// The console log level PID 1 sets: the kernel's warnings and worse still reach the
/// console; its notices and info lines (a bridge port changing state, a link coming up,
/// one line per container start) only the kernel log, `dmesg`.
pub const CONSOLE_LOGLEVEL: u8 = 5;

/// Lowers the kernel's console log level to [`CONSOLE_LOGLEVEL`], unless the kernel
/// command line chose one (`loglevel=`, `debug`, `quiet`). A serial console at 115200
/// baud is slow, and a kernel line printed while PID 1 writes one splits it.
pub fn quiet_kernel_console(cmdline: &str) {
    if !in_initial_pid_namespace() {
        return;
    }
    let chosen = cmdline
        .split_whitespace()
        .any(|w| w.starts_with("loglevel=") || w == "debug" || w == "quiet");
    if chosen {
        return;
    }
    match std::fs::write("/proc/sys/kernel/printk", format!("{CONSOLE_LOGLEVEL}\n")) {
        Ok(()) => log::info!(
            "kernel console log level {CONSOLE_LOGLEVEL}: kernel info lines go to dmesg only (loglevel=7 keeps them)"
        ),
        Err(e) => log::warn!("cannot set the kernel console log level: {e}"),
    }
}

/// The stamp that opens every console line, PID 1's and its helper's alike:
/// `[  1523.4 ms]`, milliseconds since the kernel started.
pub fn stamp(ms: f64) -> String {
    format!("[{ms:9.1} ms]")
}

/// Formats one console line: `[  1523.4 ms] berth: message` (warnings and errors say so).
pub fn format_line(ms: f64, level: Level, message: &str) -> String {
    let tag = match level {
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        _ => "",
    };
    format!("{} berth: {tag}{message}\n", stamp(ms))
}

/// Formats one line of a container's output for the console: `[  1523.4 ms] web | text`.
pub fn format_container_line(ms: f64, name: &str, text: &str) -> String {
    format!("{} {name} | {text}\n", stamp(ms))
}

/// Console bytes per second for the output of all containers together: under a
/// 115200-baud serial console's ~11 KiB/s, so that PID 1's synchronous console writes
/// never wait long and its own lines still get through. It is divided evenly among the
/// containers that mirror their output ([`console_share`]), so that one container
/// printing without pause cannot take the console from the others.
pub const CONTAINER_CONSOLE_BYTES_PER_SEC: usize = 8 << 10;

/// Each container's console budget, in bytes per second, when `mirroring` containers
/// mirror their output to the console.
pub fn console_share(mirroring: usize) -> usize {
    CONTAINER_CONSOLE_BYTES_PER_SEC / mirroring.max(1)
}

/// One container's console budget: at most `share` bytes in each one-second window. A
/// few words per container, whatever the container writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleBudget {
    share: usize,
    window: Option<Instant>,
    used: usize,
}

impl ConsoleBudget {
    pub fn new(share: usize) -> ConsoleBudget {
        ConsoleBudget {
            share,
            window: None,
            used: 0,
        }
    }

    /// Changes the share (when the number of mirroring containers changes).
    pub fn set_share(&mut self, share: usize) {
        self.share = share;
    }

    /// Whether `len` more bytes fit in the window that holds `now`; they are counted if so.
    pub fn admit(&mut self, now: Instant, len: usize) -> bool {
        if self
            .window
            .is_none_or(|start| now.saturating_duration_since(start).as_secs() >= 1)
        {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used.saturating_add(len) > self.share {
            return false;
        }
        self.used += len;
        true
    }
}

/// Writes one line of a container's output to the console, `[  1523.4 ms] web | text`,
/// if that container's `budget` allows; false when it was dropped. Not copied to the
/// kernel log: container output has its own files.
pub fn container_line(name: &str, text: &str, budget: &mut ConsoleBudget) -> bool {
    let line = format_container_line(boot_ms(), name, text);
    if !budget.admit(Instant::now(), line.len()) {
        return false;
    }
    if let Some(console) = LOGGER.sinks().console.as_mut() {
        let _ = console.write_all(line.as_bytes());
    }
    true
}

impl Log for KernelLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let line = format_line(boot_ms(), record.level(), &message);
        let mut sinks = self.sinks();
        // Errors writing the log are ignored: there is nowhere left to report them.
        if let Some(console) = sinks.console.as_mut() {
            let _ = console.write_all(line.as_bytes());
        }
        if let Some(kmsg) = sinks.kmsg.as_mut() {
            // One write is one kmsg record; the kernel stamps its own time.
            let tag = match record.level() {
                Level::Error => "error: ",
                Level::Warn => "warning: ",
                _ => "",
            };
            let _ = kmsg.write_all(format!("<31>berth: {tag}{message}\n").as_bytes());
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_carry_time_and_severity() {
        assert_eq!(
            format_line(1523.44, Level::Info, "ready"),
            "[   1523.4 ms] berth: ready\n"
        );
        assert!(format_line(1.0, Level::Warn, "x").contains("berth: warning: x"));
    }

    #[test]
    fn a_poisoned_logger_keeps_writing() {
        let path = std::env::temp_dir().join(format!("berth-klog-{}", std::process::id()));
        let logger = KernelLogger {
            sinks: Mutex::new(Sinks {
                console: Some(File::create(&path).unwrap()),
                kmsg: None,
            }),
        };
        // A thread that panics while holding the lock poisons it.
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = logger.sinks.lock();
                panic!("poison the logger");
            })
            .join()
        });
        assert!(logger.sinks.is_poisoned());
        log::set_max_level(LevelFilter::Info);
        logger.log(
            &Record::builder()
                .args(format_args!("still here"))
                .level(Level::Info)
                .build(),
        );
        let written = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(written.contains("berth: still here"), "{written:?}");
    }

    #[test]
    fn each_container_has_its_own_console_budget() {
        let share = console_share(2);
        assert_eq!(share, CONTAINER_CONSOLE_BYTES_PER_SEC / 2);
        let (mut flood, mut quiet) = (ConsoleBudget::new(share), ConsoleBudget::new(share));
        let start = Instant::now();
        // One container fills its share within the window; the other still gets its line.
        let admitted = (0..100).filter(|_| flood.admit(start, 100)).count();
        assert_eq!(admitted, share / 100);
        assert!(quiet.admit(start + Duration::from_millis(500), 100));
        assert!(!flood.admit(start + Duration::from_millis(999), 100));
        // A new window, a new share.
        assert!(flood.admit(start + Duration::from_secs(1), 100));
    }

    #[test]
    fn the_shares_stay_within_the_console_budget() {
        for n in [1, 2, 3, 7, 100] {
            assert!(
                console_share(n) * n <= CONTAINER_CONSOLE_BYTES_PER_SEC,
                "{n}"
            );
        }
        assert_eq!(console_share(0), CONTAINER_CONSOLE_BYTES_PER_SEC);
    }

    #[test]
    fn container_lines_carry_the_same_stamp() {
        assert_eq!(
            format_container_line(1523.44, "web", "hello"),
            "[   1523.4 ms] web | hello\n"
        );
    }

    #[test]
    fn boot_clock_advances() {
        let a = boot_ms();
        let b = boot_ms();
        assert!(a > 0.0 && b >= a);
    }
}
