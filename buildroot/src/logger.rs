//! A minimal `log` backend for the CLI: `berth: message` lines on stderr, so that stdout
//! stays free for results (`berth kernel fetch` prints a path there).

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The level filter lives in `log::max_level()`, so the logger itself is stateless.
struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info => "",
            Level::Debug | Level::Trace => "debug: ",
        };
        eprintln!("berth: {prefix}{}", record.args());
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`. A second call is a no-op.
pub fn init(level: LevelFilter) {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
