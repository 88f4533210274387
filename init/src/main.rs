//! `berth-init`, the PID 1 of a berth host. A thin shell: the work is in the library.

use berth_init::{boot, klog, shutdown};

fn main() {
    let exec_ms = klog::boot_ms();
    // Only the kernel starts this binary (or a test, as PID 1 of a new PID namespace).
    // netd and the importer are `berth-helper`, a binary of its own (see `helper`).
    if nix::unistd::getpid().as_raw() != 1 {
        eprintln!(
            "berth-init is the PID 1 of a berth host: the kernel starts it (or run it as PID 1 of a new PID namespace)"
        );
        std::process::exit(2);
    }
    klog::init(log::LevelFilter::Info);
    // A panic is a bug, but PID 1 must not die of it: log it, then reboot in order.
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
    let reason = match std::panic::catch_unwind(|| boot::run(exec_ms)) {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => e.to_string(),
        Err(_) => "PID 1 panicked".to_owned(),
    };
    shutdown::emergency(&reason)
}
