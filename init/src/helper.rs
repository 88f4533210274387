//! `berth-helper`: the second binary of a berth host, for the work PID 1 hands to child
//! processes because it parses bytes — netd (DHCP replies), the importer of baked images
//! (image archives) and the config reader (`host.toml`, see [`crate::boot_config`]). A
//! crash there is a restart or an error line, never a kernel panic.
//!
//! It is a binary of its own, not `berth-init` started again, to keep PID 1 small: PID 1's
//! resident memory is mostly the text of its binary that it has touched (the kernel maps
//! a file's pages 64 KiB around each fault), and code PID 1 never runs still widens what
//! it touches. Moving netd's and the importer's code out took `berth-init` from
//! 4.0 MB to 3.0 MB, and the config reader's (the TOML parser) to 2.1 MB.
//!
//! `berth build` puts it at [`HELPER_PATH`] in the initramfs, which is part of the root
//! that PID 1 switches to.

use std::process::Command;

/// The helper binary's file name; builds put it beside `berth-init`.
pub const HELPER_NAME: &str = "berth-helper";
/// Where the helper binary is on a berth host: [`HELPER_NAME`] in `/usr/lib/berth`.
pub const HELPER_PATH: &str = "/usr/lib/berth/berth-helper";

/// [`HELPER_PATH`] relative to a root filesystem, for whatever builds one (the
/// initramfs, a test's chroot).
pub fn helper_path_in_root() -> &'static str {
    HELPER_PATH.trim_start_matches('/')
}

/// The argument that makes the helper netd.
pub const NETD_ARG: &str = "netd";
/// The argument that makes the helper import the baked images.
pub const IMPORT_ARG: &str = "import-images";
/// The argument that makes the helper read and check the config for PID 1.
pub const READ_CONFIG_ARG: &str = "read-config";
/// After [`NETD_ARG`]: ignore the config file and use the default network config.
pub const DEFAULTS_ARG: &str = "--defaults";

/// A command that runs the helper as `mode` ([`NETD_ARG`], [`IMPORT_ARG`] or
/// [`READ_CONFIG_ARG`]).
pub fn command(mode: &str) -> Command {
    let mut command = Command::new(HELPER_PATH);
    command.arg(mode);
    command
}

/// The helper's `main`: runs the mode its first argument names; the exit code.
pub fn main() -> i32 {
    // Every mode logs to the console (stderr) in PID 1's format; stdout is a report
    // pipe to PID 1 for netd, the importer and the config reader (the API server talks
    // to PID 1 over its berth_proto channel instead).
    crate::klog::init_helper(log::LevelFilter::Info);
    match std::env::args().nth(1).as_deref() {
        Some(NETD_ARG) => crate::network::netd_main(),
        Some(IMPORT_ARG) => crate::images::importer_main(),
        Some(READ_CONFIG_ARG) => crate::boot_config::helper_main(),
        Some(berth_api::helper::MODE) => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            berth_api::helper::main(&args)
        }
        _ => {
            eprintln!(
                "usage: berth-helper {NETD_ARG} [{DEFAULTS_ARG}]|{IMPORT_ARG}|{READ_CONFIG_ARG}|api --listen URL…\n\n\
                 berth-helper runs the work PID 1 (berth-init) keeps out of its own process:\n  \
                 {NETD_ARG:<15} configure the host's network (DHCP, static addresses) and report to PID 1 on stdout\n  \
                 {IMPORT_ARG:<15} import the images baked into the initramfs into {}\n  \
                 {READ_CONFIG_ARG:<15} check {} and write it to stdout as JSON for PID 1\n  \
                 {:<15} serve the Docker Engine API ([api] of the config) on PID 1's behalf\n\n\
                 PID 1 starts and supervises it; running it by hand is for debugging.",
                crate::images::STORE_DIR,
                crate::config::CONFIG_PATH,
                berth_api::helper::MODE,
            );
            2
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_path_ends_in_the_name() {
        assert!(super::HELPER_PATH.ends_with(&format!("/{}", super::HELPER_NAME)));
    }
}
