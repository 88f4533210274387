//! Boots berth kernels and images under QEMU for integration tests.
//!
//! - [`qemu`]: the [`Qemu`] builder; [`Qemu::argv`] is a pure function of
//!   the builder, so the command line is unit-tested without QEMU.
//! - [`vm`]: [`Vm`], a running guest. Threads record the serial console
//!   (also teed to `target/qemu-logs/<test>.log`), reap QEMU, and kill it
//!   when the VM's deadline passes, so a hung guest cannot hang the suite.
//!   Dropping a `Vm` kills and reaps QEMU; dropping it while panicking (a
//!   failed test) prints the whole console to stderr first.
//! - [`console`]: the shared console buffer and expect-style waits.
//! - [`qmp`]: a small synchronous QMP client.
//! - [`env`]: [`require_qemu`], [`workspace_root`]. (The kernel cache is
//!   `berth_buildroot::kernel::cache_dir`.)
//!
//! A test:
//!
//! ```no_run
//! use std::time::Duration;
//! use berth_qemu_tests::{require_qemu, Qemu};
//!
//! if !require_qemu() {
//!     return;
//! }
//! let vm = Qemu::new("vmlinuz").initrd("initrd.img").spawn().unwrap();
//! vm.wait_for("berth: ready", Duration::from_secs(60)).unwrap();
//! vm.send_ctrl_alt_del().unwrap();
//! vm.wait_for("berth: ready", Duration::from_secs(60)).unwrap(); // after the reboot
//! assert_eq!(vm.status().unwrap(), "running");
//! ```
//!
//! Environment: `BERTH_QEMU` (binary), `BERTH_QEMU_ACCEL=kvm` (opt in to
//! KVM; TCG otherwise), `BERTH_REQUIRE_QEMU=1` (missing QEMU fails instead
//! of skipping), `BERTH_QEMU_LOG_DIR` (where console logs go).

pub mod console;
pub mod env;
pub mod qemu;
pub mod qmp;
pub mod vm;

pub use console::WaitError;
pub use env::{
    build_busybox_test_image, build_test_image, find_qemu, log_dir, require_qemu, require_root,
    static_init, static_target_dir, workspace_root,
};
pub use qemu::{Accel, ConfigError, Net, Qemu};
pub use qmp::QmpError;
pub use vm::{Vm, VmError};
