//! berth's PID 1, as a library so that its logic can be tested off PID 1.
//!
//! One module per boot phase: [`mounts`], [`klog`] (console and kernel log), [`config`]
//! (with [`tomlpath`], which names the key at a config fault, and [`boot_config`], PID 1
//! reading it through the helper),
//! [`modules`] (with the pure [`modindex`]), [`signals`], [`reaper`], [`power_button`],
//! [`shutdown`], [`switch_root`] (leaving the initramfs) and [`unpack_check`] (whether the kernel unpacked all of it); [`boot`] runs them in order and then the event loop. The workloads:
//! [`workload`] (the `[[image]]` and `[[container]]` config), [`images`] (importing baked
//! images in a child process), [`helper`] (`berth-helper`, the binary of those child processes), [`supervisor`] (starting, restarting and stopping
//! containers with `berth_runtime`; [`waiting`] says what a held-back one waits for), [`health`] (health checks), [`logs`] (their output) and [`network`] (the netd
//! child process and the container bridge). Containers as data: [`registry`] (ids, names,
//! lookup) and [`state_dir`] (every path under `/var/lib/berth`, and records written
//! atomically). The Docker Engine API: [`api`] (the API server child, PID 1's answers),
//! [`api_host`], and [`helper_child`] (one supervised child on a `berth_proto` channel).
//! PID 1 has no `unsafe`
//! code of its own: the few raw system calls live in `berth_runtime`'s `sys` module.
pub mod api;
pub mod api_host;
pub mod boot;
pub mod boot_config;
pub mod config;
pub mod health;
pub mod helper;
pub mod helper_child;
pub mod images;
pub mod klog;
pub mod logs;
pub mod modindex;
pub mod modules;
pub mod mounts;
pub mod network;
pub mod power_button;
pub mod reaper;
pub mod registry;
pub mod shutdown;
pub mod signals;
pub mod state_dir;
pub mod supervisor;
pub mod switch_root;
pub mod tomlpath;
pub mod unpack_check;
pub mod waiting;
pub mod workload;
