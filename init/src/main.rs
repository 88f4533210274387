//! `berth-init`, the PID 1 of a berth host. A thin shell: the work is in the library.

use berth_init::{boot, images, klog, network, shutdown};

fn main() {
    let exec_ms = klog::boot_ms();
    // PID 1 starts this binary again to run netd, which parses DHCP replies, outside
    // PID 1; netd's stdout is its status pipe, so it sets up its own logging.
    if std::env::args().nth(1).as_deref() == Some(network::NETD_ARG) {
        std::process::exit(network::netd_main());
    }
    klog::init(log::LevelFilter::Info);
    // PID 1 starts this binary again to import baked images outside PID 1.
    if std::env::args().nth(1).as_deref() == Some(images::IMPORT_ARG) {
        std::process::exit(images::importer_main());
    }
    if nix::unistd::getpid().as_raw() != 1 {
        eprintln!(
            "berth-init is the PID 1 of a berth host: the kernel starts it (or run it as PID 1 of a new PID namespace)"
        );
        std::process::exit(2);
    }
    // A panic is a bug, but PID 1 must not die of it: log it, then reboot in order.
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
    let reason = match std::panic::catch_unwind(|| boot::run(exec_ms)) {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => e.to_string(),
        Err(_) => "PID 1 panicked".to_owned(),
    };
    shutdown::emergency(&reason)
}
