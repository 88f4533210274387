//! The host-side `berth` tool: builds a bootable image (kernel + initramfs) from a host
//! config, and boots it in QEMU.
//!
//! `berth build` ([`build`]) is the pipeline; the files divide it as follows:
//! - [`kernel`]: the pinned Debian kernel package, its cache, fetching and unpacking;
//! - [`modules`]: `.modinfo` parsing, module selection and the depmod-format index;
//! - [`initbin`]: finding the init binary and checking that it is static;
//! - [`initramfs`] and [`cpio`]: the image layout and the newc archive writer;
//! - [`manifest`]: the record of inputs and outputs;
//! - [`memory`]: how much memory the image needs (`memory_mib`);
//! - [`imagecheck`]: each container's program and user, checked in its baked image;
//! - [`exec`]: the one runner of external tools (`apt-get`, `dpkg-deb`, QEMU);
//! - [`hash`]: SHA-256 helpers.
//!
//! `berth boot` ([`boot`]) runs the result under QEMU. `berth run` ([`run`]) runs a
//! container with the runtime PID 1 uses, in the foreground or detached, and `berth ps`,
//! `stop`, `logs` and `rm` manage the containers it started. [`logger`] is the CLI's stderr log.
//!
//! A build is reproducible: the same config, init binary and kernel package give
//! byte-identical `vmlinuz`, `initramfs.img` and `manifest.json`, whatever the output
//! directory, clock, time zone, umask or machine.

pub mod boot;
pub mod build;
pub mod cpio;
pub mod exec;
pub mod hash;
pub mod imagecheck;
pub mod initbin;
pub mod initramfs;
pub mod kernel;
pub mod logger;
pub mod manifest;
pub mod memory;
pub mod modules;
pub mod run;
