//! `berth boot`: run a built image in QEMU with the serial console on this terminal, as a
//! well-behaved process of a test pipeline.
//!
//! The work is divided as follows:
//! - [`image`]: the files are checked against `manifest.json` before anything starts,
//!   and the memory the build says the image needs is read from it;
//! - [`memory`]: `--memory` values and the default;
//! - [`command`]: the QEMU command line, a pure function of the options;
//! - [`terminal`]: whether QEMU gets the terminal (only in its foreground process group);
//! - [`supervise`]: QEMU runs as a child that dies with `berth boot`, its console passes
//!   through a pipe and is scanned ([`console`]), and signals stop it in order;
//! - [`qmp`]: the power button, pressed over berth's private QMP socket.
//!
//! Exit status:
//! - the guest powers off → QEMU exits 0 → 0;
//! - the guest kernel panics → 1 with the panic line. `panic=1` on the kernel command
//!   line makes the kernel reset the machine one second after a panic instead of halting
//!   forever, and `berth boot` stops QEMU as soon as it has read the panic report from the
//!   console, so this holds before PID 1 runs (a corrupt initramfs, a missing `/init`).
//!   Once PID 1 has loaded the pvpanic driver, QEMU's `-action panic=exit-failure` also
//!   ends QEMU by itself;
//! - `berth boot` got SIGTERM, SIGINT or SIGHUP, or its output was closed → QEMU is
//!   stopped, and 128 + the signal's number (143, 130, 129, 141 for SIGPIPE);
//! - QEMU failed → 1.
//!
//! A guest reboot (ctrl-alt-del, `reboot` in the guest) restarts the guest inside the same
//! QEMU, as on a real machine: `berth boot` keeps running, with the same forwarded ports
//! and QMP sockets.
//!
//! TCG is the default accelerator: KVM is faster but not available (or not reliable) on
//! every build machine; `--accel kvm` asks for it.

pub mod command;
pub mod console;
pub mod image;
pub mod memory;
pub mod qmp;
pub mod supervise;
mod sys;
pub mod terminal;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

pub use command::{qemu_command, Accel, Publish};
pub use memory::MemoryMib;

use crate::exec::ExecError;
use image::ImageError;
use supervise::SuperviseError;
use terminal::Mode;

/// The default QEMU binary.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// The default time between the power button and stopping QEMU, on SIGTERM.
pub const DEFAULT_STOP_TIMEOUT_SECS: u64 = 3;

/// What `berth boot` was asked to do.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The `berth build` output directory.
    pub dir: PathBuf,
    /// Guest memory; `None`: the default, raised to what the build needs.
    pub memory: Option<MemoryMib>,
    pub accel: Accel,
    /// Extra kernel command-line parameters.
    pub append: Option<String>,
    pub qemu: PathBuf,
    /// Ports forwarded from this machine into the guest (QEMU user network).
    pub publish: Vec<Publish>,
    /// No network device at all (`-nic none`).
    pub no_network: bool,
    /// A QMP socket for the user, beside berth's own.
    pub qmp: Option<PathBuf>,
    /// Show the kernel's boot messages (no `quiet`).
    pub kernel_chatter: bool,
    /// On SIGTERM, how long the guest has to power off before QEMU is stopped.
    pub stop_timeout: Duration,
    /// Extra QEMU arguments, appended last.
    pub extra: Vec<OsString>,
}

/// The guest port `berth boot --api-port` forwards to: Docker's own, which an `[api]`
/// listener such as `tcp://0.0.0.0:2375` serves.
pub const GUEST_API_PORT: u16 = 2375;

/// Why a boot failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(
        "guest memory {asked} MiB is more than this machine's {host} MiB: give a smaller --memory"
    )]
    MemoryAboveHost { asked: u64, host: u64 },
    #[error("cannot create a directory for berth's QMP socket: {0}")]
    ControlDir(std::io::Error),
    #[error("{qemu} is not installed: run `make deps` or `apt-get install qemu-system-x86`")]
    QemuMissing { qemu: String, source: ExecError },
    #[error(transparent)]
    Run(SuperviseError),
    #[error("the guest kernel panicked: {line}")]
    GuestPanicked { line: String },
    #[error("qemu exited with {status}: qemu itself failed, or the guest kernel panicked (reported by pvpanic); see the output above")]
    GuestFailed { status: ExitStatus },
}

/// Boots the image in `opts.dir` and returns `berth boot`'s exit code once QEMU has
/// exited: 0 after a power-off, 128 + N when signal N stopped it.
pub fn boot(opts: &BootOptions) -> Result<u8, BootError> {
    let built = image::check(&opts.dir)?;
    let needed = built.as_ref().and_then(|b| b.memory_mib);
    let (memory_mib, short) = memory::choose(opts.memory, needed);
    if let Some(need) = short {
        log::warn!(
            "--memory {memory_mib} MiB is below the {need} MiB this image needs (memory_mib in manifest.json): \
             its initramfs may not unpack or its baked images may not import"
        );
    }
    if let Some(host) = memory::host_mib().filter(|&host| memory_mib > host) {
        return Err(BootError::MemoryAboveHost {
            asked: memory_mib,
            host,
        });
    }
    let control_dir = tempfile::Builder::new()
        .prefix("berth-boot-")
        .tempdir()
        .map_err(BootError::ControlDir)?;
    let control = control_dir.path().join("qmp.sock");
    let exec = qemu_command(opts, memory_mib, &control);
    let mode = terminal::current_mode();
    match mode {
        Mode::Interactive => log::info!("console on this terminal; ctrl-a x quits QEMU"),
        Mode::Background => log::info!(
            "not in the terminal's foreground process group: the console is printed here \
             but input is not read; stop the guest with SIGTERM (power button) or SIGINT"
        ),
        Mode::NotATerminal => {}
    }
    // QEMU restores the terminal when it exits normally, not when it is killed.
    let restore = (mode == Mode::Interactive).then(terminal::Restore::save);
    let outcome = supervise::run(&exec, mode, &control, opts.stop_timeout);
    drop(restore);
    let outcome = outcome.map_err(|e| match e {
        SuperviseError::Spawn(e @ ExecError::NotFound { .. }) => BootError::QemuMissing {
            qemu: opts.qemu.display().to_string(),
            source: e,
        },
        other => BootError::Run(other),
    })?;
    if let Some(line) = outcome.panic {
        return Err(BootError::GuestPanicked { line });
    }
    if let Some(sig) = outcome.signal {
        log::info!("stopped by {sig}; qemu exited with {}", outcome.status);
        return Ok(128u8.saturating_add(sig as i32 as u8));
    }
    if outcome.status.success() {
        Ok(0)
    } else {
        Err(BootError::GuestFailed {
            status: outcome.status,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn opts() -> BootOptions {
        BootOptions {
            dir: PathBuf::from("out"),
            memory: None,
            accel: Accel::default(),
            append: None,
            qemu: PathBuf::from(DEFAULT_QEMU),
            publish: Vec::new(),
            no_network: false,
            qmp: None,
            kernel_chatter: false,
            stop_timeout: Duration::from_secs(DEFAULT_STOP_TIMEOUT_SECS),
            extra: Vec::new(),
        }
    }

    #[test]
    fn missing_image_and_missing_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let o = BootOptions {
            dir: dir.path().to_owned(),
            ..opts()
        };
        assert!(matches!(
            boot(&o),
            Err(BootError::Image(ImageError::Missing { .. }))
        ));
        std::fs::write(dir.path().join("vmlinuz"), b"").unwrap();
        std::fs::write(dir.path().join("initramfs.img"), b"").unwrap();
        let o = BootOptions {
            qemu: PathBuf::from("berth-no-such-qemu"),
            ..o
        };
        let err = boot(&o).unwrap_err();
        assert!(matches!(err, BootError::QemuMissing { .. }), "{err:?}");
        assert!(
            err.to_string().contains("apt-get install qemu-system-x86"),
            "{err}"
        );
    }

    #[test]
    fn memory_above_the_host_is_refused_before_qemu() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinuz"), b"").unwrap();
        std::fs::write(dir.path().join("initramfs.img"), b"").unwrap();
        let host = memory::host_mib().unwrap();
        let o = BootOptions {
            dir: dir.path().to_owned(),
            memory: Some(MemoryMib(host + 1)),
            qemu: PathBuf::from("berth-no-such-qemu"),
            ..opts()
        };
        let err = boot(&o).unwrap_err();
        assert!(matches!(err, BootError::MemoryAboveHost { .. }), "{err:?}");
        assert!(
            err.to_string().contains("more than this machine's"),
            "{err}"
        );
    }
}
