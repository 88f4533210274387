//! `berth-init`, the PID 1 of a berth host. A thin shell: the work is in the library.

use berth_init::{boot, images, klog, network, shutdown};

fn main() {
    let exec_ms = klog::boot_ms();
    // PID 1 starts this binary again to run netd (which parses DHCP replies) and the
    // image importer outside PID 1. Those arguments count only when this is not PID 1:
    // the kernel hands bare words of its command line to init as arguments, and PID 1
    // running netd and then exiting would panic the kernel.
    if nix::unistd::getpid().as_raw() != 1 {
        match std::env::args().nth(1).as_deref() {
            // netd's stdout is its status pipe, so it sets up its own logging.
            Some(network::NETD_ARG) => std::process::exit(network::netd_main()),
            Some(images::IMPORT_ARG) => {
                klog::init(log::LevelFilter::Info);
                std::process::exit(images::importer_main())
            }
            _ => {
                eprintln!(
                    "berth-init is the PID 1 of a berth host: the kernel starts it (or run it as PID 1 of a new PID namespace)"
                );
                std::process::exit(2);
            }
        }
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
