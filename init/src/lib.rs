//! berth's PID 1, as a library so that its logic can be tested off PID 1.
//!
//! One module per boot phase: [`mounts`], [`klog`] (console and kernel log), [`config`],
//! [`modules`] (with the pure [`modindex`]), [`signals`], [`reaper`], [`power_button`],
//! [`shutdown`]; [`boot`] runs them in order and then the event loop. Raw system calls
//! that nix does not wrap live in [`sys`].
pub mod boot;
pub mod config;
pub mod klog;
pub mod modindex;
pub mod modules;
pub mod mounts;
pub mod power_button;
pub mod reaper;
pub mod shutdown;
pub mod signals;
pub mod sys;
