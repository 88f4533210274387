//! The floor for `make bench`: the smallest useful `/init`. It prints when the kernel
//! exec'd it (CLOCK_BOOTTIME, the clock of the kernel's own timestamps) and powers off.
//! Booting it on the same kernel as berth shows what the kernel alone costs.

use nix::sys::reboot::{reboot, RebootMode};
use nix::time::{clock_gettime, ClockId};

fn main() {
    let ms = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 * 1000.0 + t.tv_nsec() as f64 / 1e6)
        .unwrap_or(0.0);
    println!("floor-init: exec at {ms:.1} ms");
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // reboot(2) does not return on success; PID 1 must not exit either way.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
