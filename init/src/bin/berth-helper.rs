//! `berth-helper`, the processes PID 1 supervises: netd and the image importer. See
//! [`berth_init::helper`].

fn main() {
    std::process::exit(berth_init::helper::main())
}
